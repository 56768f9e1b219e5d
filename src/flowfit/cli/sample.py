"""``flowfit sample``: draw rows from a fitted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

import numpy as np

from flowfit.cli.common import check_output, load_model, reports_errors, write_table
from flowfit.cli.score import conditional_columns
from flowfit.estimators import ConditionalFlowDensity
from flowfit.errors import DataError
from flowfit.io.tables import read_table


@reports_errors
def sample_command(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file from flowfit fit.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of rows to draw.")] = 1000,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="CSV file to write; default: stdout.")
    ] = None,
    context: Annotated[
        Path | None,
        typer.Option(help="Table of context rows, for a conditional model: N rows are "
                     "drawn for each, written after its context values."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Draw N rows from MODEL and write them as CSV with the model's column names."""
    check_output(output, force=force)
    model = load_model(model_path)
    if isinstance(model, ConditionalFlowDensity):
        if context is None:
            raise DataError(
                f"{model_path} is a conditional model; pass --context with a table of its "
                "context columns."
            )
        write_table(_conditional_samples(model, context, n, seed), output, overwrite=force)
        return
    if context is not None:
        raise DataError(f"{model_path} is not a conditional model; leave out --context.")
    samples = model.sample(n, random_state=seed)
    if not isinstance(samples, pd.DataFrame):
        samples = pd.DataFrame(samples, columns=[f"x{i}" for i in range(samples.shape[1])])
    write_table(samples, output, overwrite=force)


def _conditional_samples(model: ConditionalFlowDensity, context: Path, n: int,
                         seed: int) -> pd.DataFrame:
    """Draw ``n`` target rows per context row; return them beside their context values."""
    features, targets = conditional_columns(model)
    rows = read_table(context, features)
    draws = model.sample(rows, n_samples=n, random_state=seed)
    draws = draws.reshape(len(rows) * n, len(targets))
    frame = rows.loc[np.repeat(np.arange(len(rows)), n)].reset_index(drop=True)
    for j, name in enumerate(targets):
        frame[name] = draws[:, j]
    return frame
