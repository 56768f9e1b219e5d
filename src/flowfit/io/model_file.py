"""The model file: one safetensors file with the weights and a JSON header.

Layout: the standard safetensors container. Its ``__metadata__`` map contains two
strings. ``flowfit`` is a JSON document with the format name and version, the flowfit
version, the flow's architecture as bijection and base specs, a SHA-256 checksum of the
tensors and free-form metadata (column names, preprocessing, training history).
``flowfit_sha256`` is the SHA-256 of that JSON text. Together the two checksums cover every
byte that loading uses, so a flipped bit anywhere is either rejected or lands in bytes
that safetensors' own checks reject.

Loading checks the container, the header and both checksums before it builds anything,
and rebuilds the flow from registered class names only. Nothing is unpickled, imported
or executed. Writing goes to a temporary file in the target folder that replaces the
target only when complete. Training checkpoints use the same container with another
format name (see :mod:`flowfit.training.checkpoint`).
"""

from __future__ import annotations

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_write",
    "load_flow",
    "read_container",
    "read_header",
    "save_flow",
    "tensors_sha256",
    "write_container",
]

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from flowfit.bijections import FixedAffine, bijection_from_spec
from flowfit.distributions import Flow, base_from_spec
from flowfit.errors import FlowfitError, ModelFileError

FORMAT = "flowfit-model"
FORMAT_VERSION = 1

# Format names of the files flowfit writes, for messages when one is passed for another.
KNOWN_FORMATS = {"flowfit-model": "model file", "flowfit-checkpoint": "training checkpoint"}

HEADER_KEY = "flowfit"
HEADER_SHA_KEY = "flowfit_sha256"

# A safetensors file starts with the header's length as a little-endian u64. Headers of
# real models are kilobytes; a larger value means the file is something else.
MAX_HEADER_BYTES = 16 * 2**20

PICKLE_PREFIXES = (b"\x80", b"PK\x03\x04")  # raw pickle protocol 2+, torch.save zip

# A header may declare sizes (features, bins, hidden widths) up to the number of stored
# tensor elements, or this many for files that store few or no tensors.
MIN_SIZE_LIMIT = 4096

# Characters of an underlying exception's message kept in a ModelFileError; a state
# dict mismatch lists every key and can run to many kilobytes.
MAX_DETAIL_CHARS = 300


def atomic_write(path: str | Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Create ``path`` through ``write(temporary_path)`` so that it appears only complete.

    The temporary file sits in the target's folder and replaces the target with
    :func:`os.replace` after an fsync. If ``write`` raises, or the process is
    interrupted with an exception, the temporary file is removed. A process killed
    outright can leave a ``.NAME.*.tmp`` file behind, but never a partial ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: The folder of ``path`` does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; choose another name or pass --force to replace it."
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {folder} does not exist; create it first.")
    temporary_path = folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # os.open with mode 0o666 lets the umask set the permissions, as for any new file;
    # tempfile.mkstemp would make the result readable by its owner only.
    os.close(os.open(temporary_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(temporary_path)
        with temporary_path.open("rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Return the SHA-256 of the names, dtypes, shapes and bytes of ``tensors``, as hex."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_container(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    header: dict[str, Any],
    *,
    overwrite: bool,
) -> None:
    """Write ``tensors`` and the JSON ``header`` to ``path`` atomically, with checksums.

    ``header`` gets a ``tensors_sha256`` entry; the JSON text gets its own checksum.
    """
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    header = {**header, "tensors_sha256": tensors_sha256(tensors)}
    text = json.dumps(header, allow_nan=False)
    metadata = {HEADER_KEY: text, HEADER_SHA_KEY: hashlib.sha256(text.encode()).hexdigest()}
    # safetensors.torch.save_file would replace the temporary file with one readable by
    # its owner only, so the bytes are written here instead.
    data = safetensors.torch.save(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


def read_container(
    path: str | Path,
    *,
    format_name: str,
    version: int,
    error: type[FlowfitError],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a file written by :func:`write_container`; return its header and tensors.

    Arguments:
        path: The file to read.
        format_name: The format name the header must carry, such as ``"flowfit-model"``.
        version: The newest format version this reader understands.
        error: The exception class to raise, a subclass of FlowfitError.

    Raises:
        error: The file is missing, a folder, a pickle, not a safetensors file,
            truncated, altered (either checksum fails), of another format, or of a newer
            format version.
    """
    path = Path(path)
    kind = KNOWN_FORMATS.get(format_name, format_name)
    if not path.exists():
        raise error(f"{kind.capitalize()} not found: {path}. Check the path.")
    if path.is_dir():
        raise error(f"{path} is a folder; pass a {kind} written by flowfit.")
    with path.open("rb") as stream:
        prefix = stream.read(8)
        header_text = _read_header_text(stream, prefix, path, kind, error)
        data = prefix + header_text + stream.read()
    header = _parse_header(header_text, path, kind, error)
    _check_format(header, path, format_name=format_name, version=version, error=error)
    try:
        tensors = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError, TypeError) as failure:
        raise error(
            f"{path} is corrupt: its tensors cannot be read, so it is truncated or damaged. "
            "Copy the file again, or refit the model."
        ) from None
    if tensors_sha256(tensors) != header.get("tensors_sha256"):
        raise error(
            f"{path} is corrupt: its tensors do not match the checksum in its header. Copy "
            "the file again, or refit the model."
        )
    return header, tensors


def _read_header_text(stream, prefix: bytes, path: Path, kind: str, error) -> bytes:
    length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
    text = stream.read(length) if length is not None and length <= MAX_HEADER_BYTES else b""
    # A header length such as 0x280 starts with the byte 0x80 of a pickle, so the
    # container is recognised by its "{" first and a pickle only otherwise.
    if not text.startswith(b"{"):
        if prefix.startswith(PICKLE_PREFIXES):
            raise error(
                f"{path} is a Python pickle or torch.save archive, not a flowfit {kind}. "
                "flowfit never loads pickles; write the file with flowfit."
            )
        if len(prefix) < 8:
            raise error(f"{path} is truncated ({len(prefix)} bytes); it is not a flowfit {kind}.")
        if length > MAX_HEADER_BYTES or text:
            raise error(
                f"{path} is not a flowfit {kind}: it does not start with a safetensors "
                "header. Pass a file written by flowfit."
            )
    if len(text) < length:
        raise error(
            f"{path} is truncated: its header claims {length} bytes and the file has "
            f"{8 + len(text)} in all."
        )
    return text


def _parse_header(text: bytes, path: Path, kind: str, error) -> dict[str, Any]:
    try:
        container = json.loads(text)
        metadata = container["__metadata__"]
        header_json = metadata[HEADER_KEY]
        expected_sha = metadata[HEADER_SHA_KEY]
        header = json.loads(header_json)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError):
        raise error(
            f"{path} is not a flowfit {kind}: it has no valid flowfit header, so it was "
            "not written by flowfit, or its header is corrupt."
        ) from None
    if not isinstance(header_json, str) or not isinstance(header, dict):
        raise error(f"{path} has a malformed flowfit header; it is not a flowfit {kind}.")
    if hashlib.sha256(header_json.encode()).hexdigest() != expected_sha:
        raise error(
            f"{path} is corrupt: its header does not match the header's checksum. Copy the "
            "file again, or refit the model."
        )
    return header


def _check_format(header: dict[str, Any], path: Path, *, format_name: str, version: int,
                  error) -> None:
    found = header.get("format")
    if found != format_name:
        found_kind = KNOWN_FORMATS.get(found) if isinstance(found, str) else None
        description = f"a flowfit {found_kind}" if found_kind else f"of format {found!r}"
        expected = KNOWN_FORMATS.get(format_name, format_name)
        raise error(f"{path} is {description}, not a flowfit {expected}.")
    found_version = header.get("format_version")
    if type(found_version) is not int or found_version < 1:
        raise error(f"{path} has an invalid format version {found_version!r}.")
    if found_version > version:
        raise error(
            f"{path} uses {format_name} format version {found_version}, newer than this flowfit "
            f"reads ({version}). Upgrade flowfit to load it."
        )


def save_flow(
    path: str | Path,
    flow: Flow,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``flow`` and JSON-serialisable ``metadata`` to ``path`` atomically."""
    from flowfit import __version__

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flowfit_version": __version__,
        "flow": {
            "bijection": flow.bijection.spec(),
            "base": flow.base.spec(),
            "context_scaler": flow.context_scaler is not None,
            "grid": flow.grid is not None,
        },
        "metadata": metadata or {},
    }
    write_container(path, flow.state_dict(), header, overwrite=overwrite)


def read_header(path: str | Path) -> dict[str, Any]:
    """Return the JSON header of a model file after checking the container and checksums."""
    return read_container(
        path, format_name=FORMAT, version=FORMAT_VERSION, error=ModelFileError
    )[0]


def load_flow(path: str | Path) -> tuple[Flow, dict[str, Any]]:
    """Load a model file; return the flow (in eval mode) and the header's metadata.

    Raises:
        ModelFileError: The file is missing, truncated, altered, a pickle, of a newer
            format version, or its header does not match its tensors.
    """
    path = Path(path)
    header, tensors = read_container(
        path, format_name=FORMAT, version=FORMAT_VERSION, error=ModelFileError
    )
    spec = header.get("flow")
    metadata = header.get("metadata", {})
    if not isinstance(spec, dict) or not isinstance(metadata, dict):
        raise ModelFileError(f"{path} has a header without a valid 'flow' or 'metadata' entry.")
    dtype = _weights_dtype(tensors, path)
    limit = max(MIN_SIZE_LIMIT, sum(t.numel() for t in tensors.values()))
    # NOTE: this bounds each declared size, not their product, so a crafted header can
    # still make the constructors below allocate up to about limit**2 elements.
    try:
        _check_sizes(spec, limit, path)
    except RecursionError:
        raise ModelFileError(f"{path} has a header nested too deeply to be a flow.") from None
    try:
        bijection = bijection_from_spec(spec["bijection"])
        base = base_from_spec(spec["base"])
        scaler = FixedAffine(bijection.context) if spec.get("context_scaler") else None
        grid = tensors["grid"] if spec.get("grid") else None
        flow = Flow(bijection, base, context_scaler=scaler, grid=grid).to(dtype)
        flow.load_state_dict(tensors, strict=True)
    except Exception as failure:  # noqa: BLE001
        # The registered constructors check their configs with assorted exception types
        # (ValueError, TypeError, KeyError and others). Any failure here means that the
        # header does not describe the stored tensors.
        detail = " ".join(str(failure).split())
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[:MAX_DETAIL_CHARS] + " ..."
        raise ModelFileError(
            f"{path} has a header that does not match its tensors "
            f"({type(failure).__name__}: {detail})."
        ) from None
    flow.eval()
    return flow, metadata


def _weights_dtype(tensors: dict[str, torch.Tensor], path: Path) -> torch.dtype:
    """Return the one floating dtype of the stored weights; reject mixtures and NaN."""
    floating = {name: t for name, t in tensors.items() if t.is_floating_point()}
    dtypes = {t.dtype for t in floating.values()}
    if len(dtypes) > 1:
        names = ", ".join(sorted(str(d) for d in dtypes))
        raise ModelFileError(f"{path} mixes weight dtypes ({names}); expected one.")
    for name, tensor in floating.items():
        if not bool(torch.all(torch.isfinite(tensor))):
            raise ModelFileError(
                f"{path} contains NaN or infinite values in {name!r}; the model is unusable. "
                "Refit it."
            )
    return dtypes.pop() if dtypes else torch.float32


def _check_sizes(spec: Any, limit: int, path: Path, key: str = "") -> None:
    # Sizes declared in the header allocate tensors before load_state_dict can compare
    # them with the file, so a size larger than everything stored is rejected first.
    # Seeds are the one integer config entry that is not a size.
    if isinstance(spec, dict):
        for name, value in spec.items():
            if name != "seed":
                _check_sizes(value, limit, path, name)
    elif isinstance(spec, list):
        for value in spec:
            _check_sizes(value, limit, path, key)
    elif isinstance(spec, int) and not isinstance(spec, bool) and abs(spec) > limit:
        raise ModelFileError(
            f"{path} has a header that does not match its tensors: {key!r} is {spec}, "
            f"more than the {limit} values the file stores."
        )
