"""Automatic column choices, their overrides and errors, and the automatic model size."""

import math

import numpy as np
import pytest
import torch

from flowfit.errors import DataError
from flowfit.flows import PRESETS
from flowfit.preprocessing import (
    MIN_LOG_SKEWNESS,
    Column,
    build_flow,
    choose_columns,
    clip_to_support,
    default_flow,
    default_flow_options,
    detect_grid,
    make_flow,
    outside_support,
    size_candidates,
)

RNG = np.random.default_rng(0)


def choose_one(values, **options):
    return choose_columns(np.asarray(values, dtype=float)[:, None], ["v"], **options)[0]


# ---------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "step"),
    [
        (RNG.poisson(3.0, 500), 1.0),
        (np.round(RNG.normal(0.0, 1.0, 500), 1), 0.1),
        (np.arange(10.0).repeat(3) * 0.25, 0.25),
        (RNG.normal(0.0, 1.0, 500), 0.0),
        (np.arange(100.0), 0.0),  # no repeats, so nothing shows it is rounded
        (np.array([0.5, 1.5, 2.5] * 10), 0.0),  # a grid of step 1 not through 0
    ],
)
def test_detect_grid(values, step):
    assert detect_grid(values) == step


def test_fine_grid_treated_as_continuous():
    values = np.round(RNG.normal(0.0, 1.0, 5000) / 0.005) * 0.005  # step 0.005 std
    column = choose_one(values)

    assert detect_grid(values) == 0.005
    assert column.step == 0.0
    assert "treated as continuous" in column.reason


def test_grid_override_by_name_and_index():
    values = np.column_stack([RNG.poisson(3.0, 300), RNG.poisson(5.0, 300)]).astype(float)
    by_name = choose_columns(values, ["a", "b"], grid={"a": None})
    by_index = choose_columns(values, ["a", "b"], grid={1: 0.5})

    assert [c.step for c in by_name] == [0.0, 1.0]
    assert [c.step for c in by_index] == [1.0, 0.5]


# ---------------------------------------------------------------------------------
# Supports
# ---------------------------------------------------------------------------------


def test_skewed_positive_column_gets_log_map():
    column = choose_one(RNG.lognormal(0.0, 1.0, 1000))

    assert column.kind == "positive"
    assert column.low == 0.0
    assert math.copysign(1.0, column.low) == 1.0  # +0.0, so records never print -0
    assert column.transform == "log(x - low)"


@pytest.mark.parametrize(
    "values",
    [
        RNG.normal(1000.0, 50.0, 1000),  # positive but symmetric
        RNG.normal(5.0, 1.0, 1000),
        -RNG.lognormal(0.0, 1.0, 1000),  # skewed, but not positive
        np.append(RNG.lognormal(0.0, 1.0, 999), 0.0),  # a continuous 0 rules out log(x)
    ],
)
def test_unskewed_or_signed_column_stays_real(values):
    column = choose_one(values)

    assert column.kind == "real"
    assert column.transform == "x"


def test_count_near_zero_gets_half_step_bound():
    column = choose_one(RNG.poisson(3.0, 1000))

    assert column.kind == "positive"
    assert column.step == 1.0
    assert column.low == -0.5


def test_count_far_from_zero_stays_real():
    column = choose_one(RNG.poisson(50.0, 1000))

    assert column.step == 1.0
    assert column.kind == "real"


def test_values_in_unit_interval_stay_unbounded():
    # Bounds are never guessed from the range of a sample.
    column = choose_one(RNG.uniform(0.0, 1.0, 1000))

    assert column.kind == "real"
    assert column.high == math.inf


def test_requested_supports():
    values = np.column_stack([RNG.beta(2, 5, 200), RNG.uniform(1, 2, 200),
                              RNG.uniform(-3, -1, 200), RNG.poisson(3.0, 200)])
    columns = choose_columns(
        values, ["share", "above", "below", "count"],
        support=[(0.0, 1.0), (0.5, None), (None, 0.0), (0.0, 20.0)],
    )

    assert [c.kind for c in columns] == ["bounded", "lower-bounded", "upper-bounded",
                                         "bounded"]
    assert (columns[3].low, columns[3].high) == (-0.5, 20.5)
    assert columns[0].transform == "logit((x - low) / (high - low))"
    assert columns[2].transform == "-log(high - x)"


def test_real_override_beats_rule():
    column = choose_one(RNG.lognormal(0.0, 1.0, 500), support={"v": "real"})

    assert column.kind == "real"


def test_data_outside_requested_support_rejected():
    values = np.append(RNG.uniform(0.1, 0.9, 99), 1.0)
    with pytest.raises(DataError, match=r"Column 'v' has values outside its support "
                                        r"\(0, 1\), first in rows \[99\]"):
        choose_one(values, support=(0.0, 1.0))


@pytest.mark.parametrize(
    ("support", "message"),
    [("bounded", "must be 'auto'"), ((1.0, 0.0), "low < high"), ((0.0,), "must be 'auto'")],
)
def test_invalid_support_rejected(support, message):
    with pytest.raises(ValueError, match=message):
        choose_one(RNG.normal(size=50), support=support)


def test_unknown_override_column_rejected():
    with pytest.raises(ValueError, match="names column 'w', which is not in the data"):
        choose_one(RNG.normal(size=50), support={"w": "real"})


# ---------------------------------------------------------------------------------
# Constant columns
# ---------------------------------------------------------------------------------


def test_constant_column_error_names_it():
    values = np.column_stack([RNG.normal(size=50), np.full(50, 7.0)])
    with pytest.raises(DataError, match=r"Column 'flag' is constant \(every value is 7\)"):
        choose_columns(values, ["x", "flag"])


def test_near_constant_column_error_names_it():
    values = 1000.0 + 1e-12 * RNG.normal(size=50)  # distinct float64 values, 1e-15 relative
    with pytest.raises(DataError, match="Column 'v' is nearly constant"):
        choose_one(values, dtype=torch.float64)


def test_constant_after_float32_rounding():
    values = 1000.0 + 1e-9 * RNG.normal(size=50)
    with pytest.raises(DataError, match=r"Column 'v' is constant \(every value is 1000\)"):
        choose_one(values, dtype=torch.float32)


def test_near_constant_depends_on_dtype():
    values = 1000.0 + 1e-3 * RNG.normal(size=50)  # 1e-6 relative: fine only in float64

    assert choose_one(values, dtype=torch.float64).kind == "real"
    with pytest.raises(DataError, match="nearly constant"):
        choose_one(values, dtype=torch.float32)


def test_constant_column_dropped_on_request():
    values = np.column_stack([RNG.normal(size=50), np.full(50, 7.0)])
    columns = choose_columns(values, ["x", "flag"], constant_columns="drop")

    assert columns[1].dropped
    assert columns[1].reference == 7.0
    assert not columns[0].dropped


# ---------------------------------------------------------------------------------
# Records, support checks and the built flow
# ---------------------------------------------------------------------------------


def test_record_round_trips_through_dict():
    column = choose_one(RNG.poisson(3.0, 300), support=(0.0, None))
    record = column.to_dict()

    assert record["high"] is None
    assert record["transform"] == "log(x - low)"
    assert Column.from_dict(record) == column


def test_outside_support_rows():
    columns = [Column("a", "positive", low=0.0), Column("n", "positive", low=-0.5, step=1.0)]
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0], [1.0, 1.5], [2.0, 3.0]])

    assert outside_support(x, columns).tolist() == [False, True, True, True, False]


def test_clip_to_support_keeps_samples_inside():
    columns = [Column("p", "bounded", low=0.0, high=1.0),
               Column("n", "bounded", low=-0.5, high=5.5, step=1.0)]
    samples = np.array([[1.0, 5.5], [0.0, -0.4], [0.5, 2.2]])
    clipped = clip_to_support(samples, columns)

    assert 0.0 < clipped[:, 0].min()
    assert clipped[:, 0].max() < 1.0
    assert clipped[:, 1].tolist() == [5.0, 0.0, 2.0]
    assert math.copysign(1.0, clipped[1, 1]) == 1.0  # 0.0, not -0.0


def test_build_flow_maps_back_to_data_units(float64):
    values = np.column_stack([RNG.lognormal(1.0, 0.5, 400), RNG.normal(10.0, 3.0, 400)])
    columns = choose_columns(values, ["a", "b"], dtype=torch.float64)
    flow = build_flow(columns, flow="affine", dtype=torch.float64)
    z = flow.bijection.inverse(torch.as_tensor(values))[0]

    # The untrained affine layer is the identity, so the data map to standardised values.
    assert torch.allclose(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(z.std(0, correction=0), torch.ones(2, dtype=torch.float64))


def test_make_flow_rejects_constant_column():
    x = torch.stack([torch.randn(30), torch.ones(30)], dim=1)
    with pytest.raises(DataError, match="Column 'x1' is constant"):
        make_flow(x)


# ---------------------------------------------------------------------------------
# Automatic model size
# ---------------------------------------------------------------------------------


def test_default_flow_by_column_count():
    multivariate = [name for name in ("nsf", "maf", "nsf-coupling", "realnvp") if name in PRESETS]

    assert default_flow(1) == "spline"
    assert default_flow(3) == multivariate[0]
    assert default_flow(1, n_context=2) == multivariate[0]


@pytest.mark.parametrize(
    ("n_samples", "n_features", "width", "layers", "bins"),
    [(82, 2, 16, 3, 4), (272, 2, 32, 3, 6), (2000, 4, 64, 5, 13), (50_000, 9, 128, 5, 16)],
)
def test_size_rule(n_samples, n_features, width, layers, bins):
    options = default_flow_options("nsf", n_samples, n_features)

    assert options == {"layers": layers, "hidden": [width, width], "bins": bins}


def test_size_rule_keeps_accepted_options():
    assert set(default_flow_options("spline", 1000, 1)) == {"layers", "bins"}
    assert default_flow_options("affine", 1000, 1) == {}


def test_size_candidates_bracket_rule():
    rule = default_flow_options("nsf", 2000, 4)
    candidates = size_candidates("nsf", 2000, 4)

    assert candidates[1] == rule
    assert candidates[0]["hidden"] == [32, 32]
    assert candidates[2]["hidden"] == [128, 128]
    assert [c["layers"] for c in candidates] == [4, 5, 6]
    assert size_candidates("affine", 2000, 1) == [{}]


def test_small_skewness_threshold_documented():
    # The threshold that the measurements in the module comments support.
    assert MIN_LOG_SKEWNESS == 0.5
