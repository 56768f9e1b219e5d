"""Model files: round trips, and rejection of every kind of damaged or foreign file.

Crafted files are written through ``write_container``, so their checksums are valid.
Each such test shows that a well-formed but wrong header is still rejected by the steps
after the checksums.
"""

import copy
import hashlib
import io
import json
import os
import pickle
import struct
import zipfile

import pytest
import safetensors.torch
import torch

from flowfit import make_flow
from flowfit.bijections import Affine, Chain, RandomPermutation
from flowfit.distributions import Flow
from flowfit.errors import ModelFileError
from flowfit.io.model_file import (
    FORMAT,
    FORMAT_VERSION,
    load_flow,
    read_container,
    read_header,
    save_flow,
    tensors_sha256,
    write_container,
)


@pytest.fixture
def flow():
    torch.manual_seed(0)
    x = torch.randn(64, 2) * torch.tensor([1.0, 30.0]) + 5.0
    return make_flow(x, flow="spline", grid=None)


@pytest.fixture
def model_path(flow, tmp_path):
    path = tmp_path / "model.flowfit"
    save_flow(path, flow, metadata={"columns": ["a", "b"]})
    return path


def parts(path):
    """Return the header (without its tensor checksum) and tensors of a model file."""
    header, tensors = read_container(
        path, format_name=FORMAT, version=FORMAT_VERSION, error=ModelFileError
    )
    header = copy.deepcopy(header)
    header.pop("tensors_sha256")
    return header, dict(tensors)


def header_length(path):
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_round_trip_keeps_log_prob(flow, model_path):
    loaded, metadata = load_flow(model_path)
    x = torch.randn(10, 2) * 10

    assert metadata == {"columns": ["a", "b"]}
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))


def test_integer_buffers_load(tmp_path):
    # A permutation stores int64 indices next to float weights; the flow's dtype comes
    # from the float tensors only.
    flow = Flow(Chain([RandomPermutation(3, seed=1), Affine(3)])).double()
    path = tmp_path / "perm.flowfit"
    save_flow(path, flow)
    loaded, _ = load_flow(path)
    x = torch.randn(4, 3, dtype=torch.float64)

    assert loaded.bijection.bijections[1].shift.dtype == torch.float64
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))


def test_header_length_starting_like_pickle_loads(flow, tmp_path):
    # A header length of 128 mod 256 makes the file's first byte 0x80, the opcode that
    # starts a pickle.
    for padding in range(300):
        path = tmp_path / f"pad{padding}.flowfit"
        save_flow(path, flow, metadata={"pad": "x" * padding})
        if header_length(path) % 256 == 128:
            break
    else:
        pytest.fail("no padding gave a header length of 128 mod 256")

    assert path.read_bytes()[:1] == b"\x80"
    assert load_flow(path)[1]["pad"] == "x" * padding


def test_new_file_permissions_follow_umask(model_path):
    umask = os.umask(0)
    os.umask(umask)

    assert model_path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_leaves_no_file(flow, tmp_path):
    path = tmp_path / "model.flowfit"
    with pytest.raises(TypeError):
        save_flow(path, flow, metadata={"bad": object()})

    assert list(tmp_path.iterdir()) == []


def test_existing_file_kept_without_overwrite(flow, model_path):
    before = model_path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        save_flow(model_path, flow)

    assert model_path.read_bytes() == before


# -- rejected files -------------------------------------------------------------------


def test_newer_format_version_rejected(model_path, tmp_path):
    header, tensors = parts(model_path)
    header["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "newer.flowfit"
    write_container(path, tensors, header, overwrite=False)

    with pytest.raises(ModelFileError, match="format version 2, newer than this flowfit reads"):
        load_flow(path)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
def test_invalid_format_version_rejected(model_path, tmp_path, version):
    header, tensors = parts(model_path)
    header["format_version"] = version
    path = tmp_path / "bad.flowfit"
    write_container(path, tensors, header, overwrite=False)

    with pytest.raises(ModelFileError, match="invalid format version"):
        load_flow(path)


@pytest.mark.parametrize("keep", [0, 3, 8, 9, 100, -1000, -1])
def test_truncated_file_rejected(model_path, tmp_path, keep):
    data = model_path.read_bytes()
    path = tmp_path / "cut.flowfit"
    path.write_bytes(data[:keep])

    with pytest.raises(ModelFileError, match="truncated|corrupt|not a flowfit"):
        load_flow(path)


def test_every_single_bit_flip_in_header_rejected(model_path, tmp_path):
    data = model_path.read_bytes()
    end = 8 + header_length(model_path)
    path = tmp_path / "flipped.flowfit"
    accepted = []
    for position in range(0, end, 3):
        damaged = bytearray(data)
        damaged[position] ^= 1 << (position % 8)
        path.write_bytes(bytes(damaged))
        try:
            load_flow(path)
        except ModelFileError:
            continue
        accepted.append(position)

    assert accepted == []


def test_bit_flip_in_weights_rejected(model_path, tmp_path):
    data = bytearray(model_path.read_bytes())
    data[-5] ^= 0x10
    path = tmp_path / "flipped.flowfit"
    path.write_bytes(bytes(data))

    with pytest.raises(ModelFileError, match="tensors do not match the checksum"):
        load_flow(path)


def test_edited_metadata_rejected(model_path, tmp_path):
    # Same length, valid JSON, valid tensors: only the header checksum catches it.
    data = model_path.read_bytes().replace(b'\\"a\\"', b'\\"z\\"')
    path = tmp_path / "edited.flowfit"
    path.write_bytes(data)

    assert data != model_path.read_bytes()
    with pytest.raises(ModelFileError, match="header does not match the header's checksum"):
        load_flow(path)


def find_spec(spec, type_name):
    """Return the first spec of ``type_name`` in a nested bijection spec."""
    if spec["type"] == type_name:
        return spec
    inner = spec["config"].get("bijections") or [spec["config"].get("bijection")]
    for child in filter(None, inner):
        found = find_spec(child, type_name)
        if found is not None:
            return found
    return None


def mutate(header, tensors, case):
    """Apply one header/tensor mismatch; the checksums are rewritten afterwards."""
    spline_spec = find_spec(header["flow"]["bijection"], "RationalQuadraticSpline")
    spline = spline_spec["config"]
    if case == "more bins":
        spline["bins"] += 1
    elif case == "more features":
        spline["features"] = 3
    elif case == "huge features":
        spline["features"] = 10**12
    elif case == "unknown bijection":
        spline_spec["type"] = "builtins.eval"
    elif case == "unknown base":
        header["flow"]["base"]["type"] = "os.system"
    elif case == "config of wrong type":
        spline["bins"] = "sixteen"
    elif case == "flow not a dict":
        header["flow"] = ["Chain"]
    elif case == "metadata not a dict":
        header["metadata"] = [1, 2]
    elif case == "missing tensor":
        tensors.pop(sorted(tensors)[0])
    elif case == "extra tensor":
        tensors["bijection.extra"] = torch.zeros(2)
    elif case == "mixed dtypes":
        name = sorted(tensors)[0]
        tensors[name] = tensors[name].double()
    elif case == "nan weight":
        name = next(n for n in sorted(tensors) if "widths" in n)
        tensors[name] = tensors[name].clone()
        tensors[name][0, 0] = float("nan")
    elif case == "grid without tensor":
        header["flow"]["grid"] = True
    elif case == "not a model":
        header["format"] = "flowfit-checkpoint"


MISMATCHES = {
    "more bins": "does not match its tensors",
    "more features": "does not match its tensors",
    "huge features": "more than the 4096 values the file stores",
    "unknown bijection": "Unknown bijection type 'builtins.eval'",
    "unknown base": "Unknown base distribution",
    "config of wrong type": "does not match its tensors",
    "flow not a dict": "without a valid 'flow'",
    "metadata not a dict": "without a valid 'flow' or 'metadata'",
    "missing tensor": "does not match its tensors",
    "extra tensor": "does not match its tensors",
    "mixed dtypes": "mixes weight dtypes",
    "nan weight": "NaN or infinite values",
    "grid without tensor": "does not match its tensors",
    "not a model": "is a flowfit training checkpoint, not a flowfit model file",
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_header_not_matching_tensors_rejected(model_path, tmp_path, case):
    header, tensors = parts(model_path)
    mutate(header, tensors, case)
    path = tmp_path / "crafted.flowfit"
    write_container(path, tensors, header, overwrite=False)

    with pytest.raises(ModelFileError, match=MISMATCHES[case]):
        load_flow(path)


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deeply_nested_header_rejected(model_path, tmp_path, depth):
    # json.dumps cannot write such a header, so its text is assembled by hand.
    header, tensors = parts(model_path)
    header["tensors_sha256"] = tensors_sha256(tensors)
    nested = '{"type": "Inverse", "config": {"bijection": ' * depth
    nested += '{"type": "Affine", "config": {"features": 2}}' + "}}" * depth
    text = json.dumps(header).replace(
        json.dumps(header["flow"]["bijection"]), nested, 1
    )
    metadata = {"flowfit": text, "flowfit_sha256": hashlib.sha256(text.encode()).hexdigest()}
    path = tmp_path / "nested.flowfit"
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))

    with pytest.raises(ModelFileError, match="nested too deeply|no valid flowfit header|does "
                       "not match its tensors") as raised:
        load_flow(path)
    assert len(str(raised.value)) < 1000


def test_missing_file_and_folder_rejected(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_flow(tmp_path / "absent.flowfit")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_flow(tmp_path)


def test_data_file_given_as_model_rejected(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("x,y\n1.0,2.0\n3.0,4.0\n")

    with pytest.raises(ModelFileError, match="does not start with a safetensors header"):
        load_flow(path)


def test_foreign_safetensors_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path))

    with pytest.raises(ModelFileError, match="no valid flowfit header"):
        load_flow(path)


def test_read_header_checks_container(model_path, tmp_path):
    header = read_header(model_path)
    path = tmp_path / "cut.flowfit"
    path.write_bytes(model_path.read_bytes()[:50])

    assert header["format"] == FORMAT
    assert header["flow"]["bijection"]["type"] == "Chain"
    with pytest.raises(ModelFileError):
        read_header(path)


# -- pickles are never run --------------------------------------------------------------


class CreateFile:
    """A pickle payload: unpickling it opens ``path`` for writing, creating the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def payloads(marker):
    """Yield (name, bytes) of pickle files whose loading would create ``marker``."""
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        yield f"protocol-{protocol}", pickle.dumps(CreateFile(marker), protocol=protocol)
    buffer = io.BytesIO()
    torch.save({"weights": CreateFile(marker)}, buffer)
    yield "torch-save", buffer.getvalue()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(CreateFile(marker), protocol=2))
    yield "zip", buffer.getvalue()


def test_pickle_payload_is_live(tmp_path):
    # The payload used below does create its file when unpickled, so its absence there
    # shows that nothing unpickled it.
    marker = tmp_path / "created-by-pickle"
    pickle.loads(pickle.dumps(CreateFile(marker))).close()

    assert marker.exists()


@pytest.mark.parametrize("name", [name for name, _ in payloads("unused")])
def test_pickle_model_file_not_executed(tmp_path, name):
    marker = tmp_path / "created-by-pickle"
    payload = dict(payloads(marker))[name]
    path = tmp_path / "model.flowfit"
    path.write_bytes(payload)

    with pytest.raises(ModelFileError, match="pickle|not a flowfit model file"):
        load_flow(path)
    assert not marker.exists()


def test_cli_rejects_pickle_without_running(tmp_path):
    from typer.testing import CliRunner

    from flowfit.cli.app import app

    marker = tmp_path / "created-by-pickle"
    model = tmp_path / "model.flowfit"
    model.write_bytes(pickle.dumps(CreateFile(marker), protocol=4))
    data = tmp_path / "data.csv"
    data.write_text("x\n1.0\n2.0\n")
    runner = CliRunner()
    score = runner.invoke(app, ["score", str(model), str(data)])
    sample = runner.invoke(app, ["sample", str(model)])

    assert score.exit_code == 1
    assert "is a Python pickle or torch.save archive" in score.stderr
    assert sample.exit_code == 1
    assert not marker.exists()


def test_header_is_json_only(model_path):
    # Everything loading reads besides the tensors is plain JSON text.
    length = header_length(model_path)
    container = json.loads(model_path.read_bytes()[8 : 8 + length])
    header = json.loads(container["__metadata__"]["flowfit"])

    assert set(container["__metadata__"]) == {"flowfit", "flowfit_sha256"}
    assert header["format"] == FORMAT
    assert header["format_version"] == FORMAT_VERSION
    assert len(header["tensors_sha256"]) == 64
