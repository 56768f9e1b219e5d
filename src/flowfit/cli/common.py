"""Helpers shared by the commands: error reporting, option parsing, writing outputs."""

from __future__ import annotations

import functools
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import typer

from flowfit.errors import FlowfitError
from flowfit.estimators import ConditionalFlowDensity, FlowDensity
from flowfit.io.model_file import atomic_write, read_header

F = TypeVar("F", bound=Callable[..., Any])

# Errors whose message is written for the user; anything else is a bug and keeps its
# traceback.
USER_ERRORS = (FlowfitError, FileExistsError, FileNotFoundError, IsADirectoryError,
               PermissionError, ValueError)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` to standard error and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def reports_errors(command: F) -> F:
    """Turn a user error raised by ``command`` into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            raise fail(str(error)) from None

    return wrapper  # type: ignore[return-value]


def parse_columns(text: str | None) -> list[str] | None:
    """Split a comma-separated column list; None or empty means all columns."""
    if text is None or not text.strip():
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_support(text: str) -> str | tuple[float, float]:
    """Parse ``auto``, ``real``, ``positive`` or ``LOW,HIGH``."""
    if text in ("auto", "real", "positive"):
        return text
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(
            f"expected 'auto', 'real', 'positive' or 'LOW,HIGH' such as '0,1'; got {text!r}.",
            param_hint="--support",
        ) from None
    if not low < high:
        raise typer.BadParameter(
            f"LOW must be less than HIGH; got {text!r}.", param_hint="--support"
        )
    return low, high


def parse_grid(text: str) -> str | float | None:
    """Parse ``auto``, ``none`` or a positive step."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        step = float(text)
    except ValueError:
        step = -1.0
    if not step > 0:
        raise typer.BadParameter(
            f"expected 'auto', 'none' or a positive step; got {text!r}.", param_hint="--grid"
        )
    return step


def load_model(path: Path) -> FlowDensity | ConditionalFlowDensity:
    """Load a model file as the estimator that wrote it."""
    metadata = read_header(path).get("metadata", {})
    if metadata.get("estimator") == "ConditionalFlowDensity":
        return ConditionalFlowDensity.load(path)
    return FlowDensity.load(path)


def check_output(output: Path | None, *, force: bool) -> None:
    """Stop before any work if ``output`` cannot be written or may not be replaced."""
    if output is None:
        return
    if output.exists() and not force:
        raise FileExistsError(
            f"{output} already exists; choose another name or pass --force to replace it."
        )
    folder = output.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The folder {folder} of {output} does not exist; create it or choose another path."
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"The folder {folder} of {output} is not writable; choose another path."
        )


def write_table(frame: pd.DataFrame, output: Path | None, *, overwrite: bool) -> None:
    """Write ``frame`` as CSV to ``output`` atomically, or to standard output if None."""
    if output is None:
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, float_format="%.10g")
        sys.stdout.write(buffer.getvalue())
        return
    atomic_write(
        output,
        lambda tmp: frame.to_csv(tmp, index=False, float_format="%.10g"),
        overwrite=overwrite,
    )
