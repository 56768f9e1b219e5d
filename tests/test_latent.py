"""Latent diagnostics: a well-fitted flow passes, an underfitted or misspecified one fails."""

import json

import numpy as np
import pandas as pd
import pytest

from flowfit import DataError, FlowDensity
from flowfit.diagnostics import latent_diagnostics, to_latent

ALPHA = 0.01


def bimodal(n: int, seed: int) -> np.ndarray:
    """Draw from 0.5 N(-2, 0.6^2) + 0.5 N(2, 0.6^2), shape (n, 1)."""
    rng = np.random.default_rng(seed)
    left = rng.random(n) < 0.5
    return np.where(left, rng.normal(-2.0, 0.6, n), rng.normal(2.0, 0.6, n))[:, None]


@pytest.fixture(scope="module")
def bimodal_split():
    return bimodal(1000, seed=3), bimodal(300, seed=103)


@pytest.fixture(scope="module")
def well_fitted(bimodal_split):
    train, _ = bimodal_split
    return FlowDensity(
        flow="spline", flow_options={"bins": 16}, max_epochs=150, patience=40,
        batch_size=250, learning_rate=1e-2, random_state=3,
    ).fit(train)


def test_well_fitted_spline_passes(well_fitted, bimodal_split):
    _, test = bimodal_split
    result = latent_diagnostics(well_fitted, test, alpha=ALPHA)

    assert result.passed, result.summary()
    assert result.dimensions[0].ks_statistic < 0.08
    assert "consistent with N(0, I)" in result.summary()


def test_samples_of_known_target_pass(well_fitted):
    # The fitted flow is a known density; its own samples are exact draws from it.
    samples = well_fitted.sample(400, random_state=11)
    result = latent_diagnostics(well_fitted, samples, alpha=ALPHA)

    assert result.passed, result.summary()


def test_underfitted_spline_fails(bimodal_split):
    train, test = bimodal_split
    model = FlowDensity(flow="spline", max_epochs=1, random_state=3).fit(train)
    result = latent_diagnostics(model, test, alpha=ALPHA)

    assert not result.passed, result.summary()
    assert result.dimensions[0].ks_statistic > 0.1
    assert "departs from N(0, I)" in result.summary()


def test_gaussian_flow_fails_on_bimodal_target(bimodal_split):
    train, test = bimodal_split
    model = FlowDensity(flow="affine", max_epochs=30, random_state=0).fit(train)
    result = latent_diagnostics(model, test, alpha=ALPHA)

    assert not result.passed, result.summary()
    assert result.dimensions[0].ad_pvalue < ALPHA


def test_gaussian_flow_passes_on_gaussian_target():
    rng = np.random.default_rng(0)
    train, test = rng.normal(3.0, 2.0, (800, 1)), rng.normal(3.0, 2.0, (400, 1))
    model = FlowDensity(flow="affine", max_epochs=20, random_state=0).fit(train)
    result = latent_diagnostics(model, test, alpha=ALPHA)

    assert result.passed, result.summary()
    assert abs(result.dimensions[0].mean) < 0.15
    assert abs(result.dimensions[0].std - 1.0) < 0.1


def test_radius_test_detects_dependence():
    # Each column is Gaussian, so a column-by-column flow fits every marginal, but the
    # latent stays correlated and its squared radius is not chi-squared with 2 dof.
    rng = np.random.default_rng(1)
    cov = [[1.0, 0.9], [0.9, 1.0]]
    train = rng.multivariate_normal([0.0, 0.0], cov, 800)
    test = rng.multivariate_normal([0.0, 0.0], cov, 400)
    model = FlowDensity(flow="affine", max_epochs=20, random_state=0).fit(train)
    result = latent_diagnostics(model, test, alpha=ALPHA)

    assert all(d.ks_pvalue > ALPHA for d in result.dimensions)
    assert result.radius_ks_pvalue < 1e-6
    assert not result.passed, result.summary()
    assert result.n_tests == 5


def test_to_latent_standardises_gaussian_data():
    rng = np.random.default_rng(2)
    train = rng.normal(3.0, 2.0, (800, 1))
    model = FlowDensity(flow="affine", max_epochs=20, random_state=0).fit(train)
    latent = to_latent(model, train[:50])

    assert latent.shape == (50, 1)
    expected = (train[:50] - train.mean()) / train.std()
    np.testing.assert_allclose(latent, expected, atol=0.05)


def test_to_latent_dequantises_rounded_columns():
    rng = np.random.default_rng(3)
    counts = rng.poisson(6.0, (600, 1)).astype(float)
    model = FlowDensity(flow="spline", max_epochs=10, random_state=0).fit(counts)
    latent = to_latent(model, counts[:200], random_state=0)

    assert model.grid_[0] == 1.0
    assert np.unique(latent).size == 200
    np.testing.assert_array_equal(latent, to_latent(model, counts[:200], random_state=0))


def test_to_latent_leaves_out_dropped_columns():
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": 5.0, "c": rng.normal(size=300)})
    model = FlowDensity(flow="affine", max_epochs=5, constant_columns="drop").fit(frame)
    result = latent_diagnostics(model, frame.iloc[:100])

    assert to_latent(model, frame.iloc[:100]).shape == (100, 2)
    assert [d.name for d in result.dimensions] == ["a", "c"]


def test_to_latent_rejects_rows_outside_support():
    rng = np.random.default_rng(5)
    train = rng.gamma(2.0, 1.0, (400, 1))
    model = FlowDensity(flow="affine", support="positive", max_epochs=5).fit(train)
    rows = np.array([[1.0], [-1.0], [2.0]])

    with pytest.raises(DataError, match="outside the model's support"):
        to_latent(model, rows)


def test_to_latent_rejects_other_columns():
    frame = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) ** 0.5})
    model = FlowDensity(flow="affine", max_epochs=2).fit(frame)

    with pytest.raises(DataError, match="differ from the model's"):
        to_latent(model, frame[["b", "a"]])


def test_diagnostics_to_dict_is_json(well_fitted, bimodal_split):
    _, test = bimodal_split
    record = latent_diagnostics(well_fitted, test).to_dict()
    text = json.dumps(record, allow_nan=False)

    assert json.loads(text)["n_rows"] == 300
    assert record["passed"] is True
    assert record["dimensions"][0]["name"] == "x0"
    assert record["summary"].startswith("latent of 300 rows")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": 0.0}, "alpha must be in"),
        ({"alpha": 1.0}, "alpha must be in"),
        ({"ad_samples": 10}, "ad_samples must be at least 99"),
    ],
)
def test_latent_diagnostics_rejects_invalid_options(well_fitted, bimodal_split, options, message):
    _, test = bimodal_split
    with pytest.raises(ValueError, match=message):
        latent_diagnostics(well_fitted, test, **options)


def test_latent_diagnostics_needs_eight_rows(well_fitted, bimodal_split):
    _, test = bimodal_split
    with pytest.raises(DataError, match="at least 8"):
        latent_diagnostics(well_fitted, test[:5])
