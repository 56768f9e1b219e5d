"""``flowfit sample``: draw rows from a fitted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from flowfit.cli.common import check_output, reports_errors, write_table
from flowfit.estimators import FlowDensity


@reports_errors
def sample_command(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file from flowfit fit.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of rows to draw.")] = 1000,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="CSV file to write; default: stdout.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Draw N rows from MODEL and write them as CSV with the model's column names."""
    check_output(output, force=force)
    model = FlowDensity.load(model_path)
    samples = model.sample(n, random_state=seed)
    if not isinstance(samples, pd.DataFrame):
        samples = pd.DataFrame(samples, columns=[f"x{i}" for i in range(samples.shape[1])])
    write_table(samples, output, overwrite=force)
