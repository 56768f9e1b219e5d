"""Property-based tests: the bijection contract over random shapes, dtypes and values,
and fuzzing of the table reader and the model loader.

Every registry case in ``bijection_cases.CASES`` gets the contract tests, so a new layer
is covered once it has an entry there. Example counts are kept small so that the file
runs in well under a minute.
"""

import copy
import io
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from bijection_cases import CASES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flowfit import make_flow
from flowfit.errors import DataError, ModelFileError
from flowfit.io.model_file import (
    FORMAT,
    FORMAT_VERSION,
    load_flow,
    read_container,
    save_flow,
    write_container,
)
from flowfit.io.tables import read_table

# No example database: runs stay independent of earlier ones and write no files.
CONTRACT = settings(max_examples=12, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

IDS = sorted(CASES)
DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Batch shapes from unbatched () to (3, 2), including empty batches.
batch_shapes = hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)


def build(name, dtype):
    bijection = CASES[name].build().to(dtype)
    return bijection.train(False)


def draw_inputs(data, bijection, dtype, magnitude):
    """Draw inputs and a context (or None) of a random batch shape, in ``dtype``."""
    shape = data.draw(batch_shapes, label="batch shape")
    elements = st.floats(-magnitude, magnitude, allow_nan=False, width=32)
    x = data.draw(hnp.arrays(np.float64, (*shape, bijection.features), elements=elements),
                  label="x")
    context = None
    if bijection.context:
        context = data.draw(hnp.arrays(np.float64, (*shape, bijection.context),
                                       elements=st.floats(-3, 3, width=32)), label="context")
        context = torch.as_tensor(context, dtype=dtype)
    return torch.as_tensor(x, dtype=dtype), context


@pytest.mark.parametrize("name", IDS)
@CONTRACT
@given(data=st.data(), dtype=st.sampled_from(sorted(DTYPES)))
def test_contract_shapes_and_finiteness(name, data, dtype):
    dtype = DTYPES[dtype]
    bijection = build(name, dtype)
    x, context = draw_inputs(data, bijection, dtype, magnitude=100.0)
    with torch.no_grad():
        y, log_det = bijection(x, context)
        # The inverse gets forward outputs, which lie in its domain (an interval for a
        # sigmoid, the positive numbers for exp), possibly at its saturated ends.
        z, log_det_inverse = bijection.inverse(y, context)

    for out, log in ((y, log_det), (z, log_det_inverse)):
        assert out.shape == x.shape
        assert log.shape == x.shape[:-1]
        assert out.dtype == dtype
        assert log.dtype == dtype
        assert not bool(torch.any(torch.isnan(out)))
        assert not bool(torch.any(torch.isnan(log)))


@pytest.mark.parametrize("name", IDS)
@CONTRACT
@given(data=st.data(), dtype=st.sampled_from(sorted(DTYPES)))
def test_contract_round_trip(name, data, dtype):
    dtype = DTYPES[dtype]
    bijection = build(name, dtype)
    x, context = draw_inputs(data, bijection, dtype, magnitude=3.0)
    with torch.no_grad():
        y, log_det = bijection(x, context)
        x_back, log_det_back = bijection.inverse(y, context)

    if dtype == torch.float64:
        torch.testing.assert_close(x_back, x, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(log_det_back, -log_det, rtol=1e-8, atol=1e-8)
        return

    # In float32, a steep layer (an autoregressive spline can have a Jacobian above 1e4)
    # turns the rounding of y alone into errors of 1e-3 and more. The float64 inverse of
    # the same float32 y measures that part, and float32 may be 10 times worse.
    exact = build(name, torch.float64)
    context64 = None if context is None else context.double()
    with torch.no_grad():
        x_exact, log_det_exact = exact.inverse(y.double(), context64)
        _, log_det_forward = exact(x.double(), context64)
    x_error = (x_back.double() - x.double()).abs()
    x_allowed = 10 * (x_exact - x.double()).abs() + 1e-3
    log_det_error = (log_det_back.double() + log_det_forward).abs()
    log_det_allowed = 10 * (log_det_exact + log_det_forward).abs() + 1e-3

    assert bool(torch.all(x_error <= x_allowed)), x_error - x_allowed
    assert bool(torch.all(log_det_error <= log_det_allowed)), log_det_error - log_det_allowed


@pytest.mark.parametrize("name", IDS)
@CONTRACT
@given(data=st.data())
def test_contract_rows_are_independent(name, data):
    bijection = build(name, torch.float64)
    x, context = draw_inputs(data, bijection, torch.float64, magnitude=3.0)
    x = x.reshape(-1, bijection.features)
    if context is not None:
        context = context.reshape(-1, bijection.context)
    with torch.no_grad():
        y, log_det = bijection(x, context)
        for i in range(x.shape[0]):
            row_context = None if context is None else context[i]
            y_row, log_det_row = bijection(x[i], row_context)

            torch.testing.assert_close(y_row, y[i], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(log_det_row, log_det[i], rtol=1e-10, atol=1e-10)


# -- fuzzing the table reader --------------------------------------------------------------

TOKENS = ["1", "2.5", "-3e2", "1e30", "1e999", "x", "a b", "nan", "inf", "-inf", "NA", "",
          " ", ",", "\t", "\n", "\r\n", "\r", '"', "'", "#", ";", "\ufeff", "\x00", "\x0b",
          "\u2028", "é", "rownames", "Unnamed: 0", "0x1F", "1_000"]


def check_table(frame):
    """The reader's contract for what it returns."""
    assert frame.shape[0] >= 1
    assert frame.shape[1] >= 1
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert np.all(np.isfinite(frame.to_numpy()))


@FUZZ
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=30),
       suffix=st.sampled_from([".csv", ".tsv", ".txt"]))
def test_fuzz_text_table_reader(tmp_path, parts, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_text("".join(parts), encoding="utf-8", newline="")
    try:
        frame = read_table(path)
    except DataError:
        return
    check_table(frame)


def valid_files():
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6.0).reshape(3, 2))
    parquet = io.BytesIO()
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}).to_parquet(parquet)
    return {".npy": buffer.getvalue(), ".parquet": parquet.getvalue(),
            ".csv": b"a,b\n1,2\n3,4\n"}


VALID_FILES = valid_files()


def damage(data, content):
    """Draw a damaged version of ``content``: a bit flip, a cut, or random bytes."""
    mode = data.draw(st.sampled_from(["flip", "cut", "random"]), label="damage")
    if mode == "random":
        return data.draw(st.binary(max_size=300), label="bytes")
    if mode == "cut":
        return content[: data.draw(st.integers(0, len(content) - 1), label="length")]
    damaged = bytearray(content)
    position = data.draw(st.integers(0, len(damaged) - 1), label="position")
    damaged[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    return bytes(damaged)


@FUZZ
@given(data=st.data(), suffix=st.sampled_from(sorted(VALID_FILES)))
def test_fuzz_binary_table_reader(tmp_path, data, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(damage(data, VALID_FILES[suffix]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyarrow and NumPy may warn on odd files
            frame = read_table(path)
    except DataError:
        return
    check_table(frame)


# -- fuzzing the model loader -----------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.flowfit"
    flow = make_flow(torch.randn(50, 2) * 3, flow="spline", grid=None)
    save_flow(path, flow, metadata={"columns": ["a", "b"]})
    header, tensors = read_container(
        path, format_name=FORMAT, version=FORMAT_VERSION, error=ModelFileError
    )
    return path.read_bytes(), header, dict(tensors), flow


def json_paths(value, prefix=()):
    """Yield the path of every entry of a nested JSON value."""
    if prefix:
        yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()
    for key, child in items:
        yield from json_paths(child, (*prefix, key))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**13) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_model_file(tmp_path, model_file, data):
    content, _, _, flow = model_file
    path = tmp_path / "model.flowfit"
    damaged = damage(data, content)
    path.write_bytes(damaged)
    try:
        loaded, _ = load_flow(path)
    except ModelFileError:
        return
    # Damage that still loads must have changed nothing that loading uses.
    for name, tensor in flow.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


@FUZZ
@given(data=st.data())
def test_fuzz_crafted_model_header(tmp_path, model_file, data):
    # The checksums are rewritten, so every edit reaches the steps after them.
    _, header, tensors, _ = model_file
    header = copy.deepcopy(header)
    header.pop("tensors_sha256")
    paths = sorted(json_paths(header), key=str)
    path_in_header = data.draw(st.sampled_from(paths), label="path")
    target = header
    for key in path_in_header[:-1]:
        target = target[key]
    target[path_in_header[-1]] = data.draw(json_values, label="value")
    path = tmp_path / "model.flowfit"
    write_container(path, tensors, header, overwrite=True)
    try:
        loaded, metadata = load_flow(path)
    except ModelFileError:
        return
    # An edit that loads (a new bound, other metadata) must give a usable flow.
    dtype = next(loaded.parameters()).dtype
    with torch.no_grad():
        log_prob = loaded.log_prob(torch.zeros(3, loaded.features, dtype=dtype))

    assert isinstance(metadata, dict)
    assert log_prob.shape == (3,)
