"""``flowfit fit``: fit a flow to columns of a table and write a model file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowfit.cli.common import (
    check_output,
    parse_columns,
    parse_grid,
    parse_support,
    reports_errors,
)
from flowfit.estimators import FlowDensity
from flowfit.io.tables import read_table


@reports_errors
def fit_command(
    data: Annotated[Path, typer.Argument(help="Table to fit: .csv, .tsv, .txt, .npy or .parquet.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write.")],
    columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns to model; default: all.")
    ] = None,
    flow: Annotated[str, typer.Option(help="Flow preset: spline, affine, shift.")] = "spline",
    support: Annotated[
        str, typer.Option(help="Support of every column: real, positive, or LOW,HIGH.")
    ] = "real",
    grid: Annotated[
        str,
        typer.Option(help="Rounding grid: auto (detect), none, or a step such as 1."),
    ] = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum passes over the data.")] = 200,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per optimizer step.")] = 256,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 5e-3,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of rows held out for early stopping.")
    ] = 0.1,
    patience: Annotated[
        int, typer.Option(min=1, help="Epochs without validation gain before stopping.")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Random seed for initialisation and splits.")] = 0,
    float64: Annotated[bool, typer.Option("--float64", help="Train in float64.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Fit a normalizing flow to DATA by maximum likelihood and save it to OUTPUT."""
    check_output(output, force=force)
    frame = read_table(data, parse_columns(columns))
    model = FlowDensity(
        flow=flow, support=parse_support(support), grid=parse_grid(grid), max_epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, val_fraction=val_fraction,
        patience=patience, dtype="float64" if float64 else "float32", random_state=seed,
        show_progress=not quiet,
    )
    model.fit(frame)
    model.save(output, overwrite=force)
    if quiet:
        return
    history = model.history_
    mean_log_lik = model.score(frame) / len(frame)
    rounded = [name for name, step in zip(frame.columns, model.grid_) if step > 0]
    typer.echo(f"fitted {flow} flow to {len(frame)} rows x {frame.shape[1]} columns "
               f"({', '.join(frame.columns)})")
    if rounded:
        typer.echo(f"dequantised rounded columns: {', '.join(rounded)}")
    best = history.val[history.best_epoch] if history.val else history.train[-1]
    typer.echo(f"epochs: {len(history.train)}, best epoch: {history.best_epoch + 1}, "
               f"validation NLL: {best:.4f} nats/row")
    typer.echo(f"mean log-likelihood on all rows: {mean_log_lik:.4f} nats/row")
    typer.echo(f"wrote {output}")
