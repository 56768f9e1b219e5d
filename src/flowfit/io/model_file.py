"""The model file: one safetensors file with the weights and a JSON header.

Layout: the standard safetensors container, whose ``__metadata__`` entry ``flowfit``
holds a JSON document with the format name and version, the flowfit version, the flow's
architecture as bijection and base specs, a SHA-256 checksum of the tensors, and
free-form metadata (column names, preprocessing, training history).

Loading reads the file's bytes once, checks the container, the header and the checksum,
and rebuilds the flow from registered class names only. Nothing is unpickled, imported
or executed. Writing goes to a temporary file in the target folder that replaces the
target only when complete.
"""

from __future__ import annotations

__all__ = ["FORMAT", "FORMAT_VERSION", "save_flow", "load_flow", "read_header", "atomic_write"]

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from flowfit.bijections import FixedAffine, bijection_from_spec
from flowfit.distributions import Flow, base_from_spec
from flowfit.errors import ModelFileError

FORMAT = "flowfit-model"
FORMAT_VERSION = 1

# A safetensors file starts with the header's length as a little-endian u64. Headers of
# real models are kilobytes; a larger value means the file is something else.
MAX_HEADER_BYTES = 16 * 2**20

PICKLE_PREFIXES = (b"\x80", b"PK\x03\x04")  # raw pickle protocol 2+, torch.save zip


def atomic_write(path: str | Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Create ``path`` through ``write(temporary_path)`` so that it appears only complete.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; choose another name or pass --force to replace it."
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {folder} does not exist; create it first.")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        write(temporary_path)
        with temporary_path.open("rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_flow(
    path: str | Path,
    flow: Flow,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``flow`` and JSON-serialisable ``metadata`` to ``path`` atomically."""
    from flowfit import __version__

    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in flow.state_dict().items()}
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
        "tensors_sha256": _tensors_digest(tensors),
        "metadata": metadata or {},
    }
    text = json.dumps(header, allow_nan=False)
    atomic_write(
        path,
        lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata={"flowfit": text}),
        overwrite=overwrite,
    )


def _parse_container(data: bytes, path: Path) -> dict[str, Any]:
    if data.startswith(PICKLE_PREFIXES):
        raise ModelFileError(
            f"{path} is a Python pickle or torch.save archive, not a flowfit model file. "
            "flowfit never loads pickles; save models with flowfit."
        )
    if len(data) < 8:
        raise ModelFileError(f"{path} is truncated ({len(data)} bytes); it is not a model file.")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise ModelFileError(
            f"{path} is not a flowfit model file, or it is truncated (its header claims "
            f"{length} bytes and the file has {len(data)})."
        )
    try:
        container = json.loads(data[8 : 8 + length])
        text = container["__metadata__"]["flowfit"]
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ModelFileError(
            f"{path} is a safetensors file without a valid flowfit header; it was not "
            "written by flowfit, or its header is corrupt."
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a flowfit model file (format {header.get('format')!r}).")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model format version {version!r}, newer than this flowfit reads "
            f"({FORMAT_VERSION}). Upgrade flowfit to load it."
        )
    return header


def read_header(path: str | Path) -> dict[str, Any]:
    """Return the JSON header of a model file after checking the container."""
    path = Path(path)
    return _load(path)[0]


def _load(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.exists():
        raise ModelFileError(f"Model file not found: {path}. Check the path.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; pass a model file written by flowfit fit.")
    data = path.read_bytes()
    header = _parse_container(data, path)
    try:
        tensors = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"{path} is corrupt: its tensors cannot be read ({error}).") from None
    if _tensors_digest(tensors) != header.get("tensors_sha256"):
        raise ModelFileError(
            f"{path} is corrupt: its weights do not match the checksum in its header."
        )
    return header, tensors


def load_flow(path: str | Path) -> tuple[Flow, dict[str, Any]]:
    """Load a model file; return the flow (in eval mode) and the header's metadata.

    Raises:
        ModelFileError: The file is missing, truncated, altered, a pickle, of a newer
            format version, or its header does not match its tensors.
    """
    path = Path(path)
    header, tensors = _load(path)
    spec = header.get("flow", {})
    try:
        bijection = bijection_from_spec(spec["bijection"])
        base = base_from_spec(spec["base"])
        scaler = FixedAffine(bijection.context) if spec.get("context_scaler") else None
        grid = tensors.get("grid") if spec.get("grid") else None
        flow = Flow(bijection, base, context_scaler=scaler, grid=grid)
        dtype = next(iter(tensors.values())).dtype if tensors else torch.float32
        flow = flow.to(dtype)
        flow.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelFileError(
            f"{path} has a header that does not match its tensors ({error})."
        ) from None
    flow.eval()
    return flow, header.get("metadata", {})
