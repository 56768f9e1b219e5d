"""Training checkpoints: a file that lets :func:`flowfit.fit` continue a run exactly.

A checkpoint uses the model file's container (see :mod:`flowfit.io.model_file`). Its
tensors are the run's tensors (parameters, optimizer moments, generator states), and its
JSON header contains everything else (epoch, history, learning rate schedule, run
settings), with a checksum over each part. Nothing is pickled, so
loading a checkpoint executes nothing from the file.

The training loop decides what a checkpoint contains. This module stores any nested
structure of dicts, lists, tuples, tensors, strings, numbers, booleans and None, and
restores it with the same types.
"""

from __future__ import annotations

__all__ = ["FORMAT", "FORMAT_VERSION", "load_checkpoint", "save_checkpoint"]

import math
from pathlib import Path
from typing import Any

from torch import Tensor

from flowfit.errors import CheckpointError
from flowfit.io.model_file import read_container, write_container

FORMAT = "flowfit-checkpoint"
FORMAT_VERSION = 1

# Markers of encoded values. A dict whose keys are all strings without a leading "__"
# is stored as a JSON object. Any other dict is stored as a list of key-value pairs.
TENSOR = "__tensor__"
TUPLE = "__tuple__"
ITEMS = "__items__"
FLOAT = "__float__"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, replacing an older checkpoint there.

    Raises:
        TypeError: ``state`` contains a value that is not a dict, list, tuple,
            tensor, string, number, boolean or None.
    """
    tensors: dict[str, Tensor] = {}
    encoded = _encode(state, tensors, "state")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "state": encoded}
    write_container(path, tensors, header, overwrite=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and return its state.

    Raises:
        CheckpointError: The file is missing, truncated, altered, not a checkpoint, or
            of a newer format version.
    """
    header, tensors = read_container(
        path, format_name=FORMAT, version=FORMAT_VERSION, error=CheckpointError
    )
    try:
        return _decode(header["state"], tensors)
    except (KeyError, TypeError, ValueError, IndexError, RecursionError) as error:
        raise CheckpointError(
            f"{path} is corrupt: its header does not describe a training state ({error})."
        ) from None


def _encode(value: Any, tensors: dict[str, Tensor], name: str) -> Any:
    if isinstance(value, Tensor):
        tensors[name] = value
        return {TENSOR: name}
    if isinstance(value, float) and not math.isfinite(value):
        return {FLOAT: repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {TUPLE: [_encode(v, tensors, f"{name}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{name}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{name}.{k}") for k, v in value.items()}
        return {ITEMS: [
            [_encode(k, tensors, f"{name}.{i}.key"), _encode(v, tensors, f"{name}.{i}")]
            for i, (k, v) in enumerate(value.items())
        ]}
    raise TypeError(f"Cannot store a value of type {type(value).__name__} in a checkpoint.")


def _decode(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (marker, content), = value.items()
        if marker == TENSOR:
            return tensors[content]
        if marker == FLOAT:
            return float(content)
        if marker == TUPLE:
            return tuple(_decode(v, tensors) for v in content)
        if marker == ITEMS:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in content}
    return {k: _decode(v, tensors) for k, v in value.items()}
