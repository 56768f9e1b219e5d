"""``flowfit plot``: draw a fitted model against data, its training curves or its latent."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from matplotlib.figure import Figure

from flowfit.cli.common import check_output, reports_errors
from flowfit.cli.score import load_model_and_rows
from flowfit.diagnostics import (
    latent_diagnostics,
    plot_corner,
    plot_density_1d,
    plot_density_2d,
    plot_fit,
    plot_latent,
    plot_training_curves,
    save_png,
)
from flowfit.estimators import FlowDensity


class PlotKind(str, Enum):
    """The plots that ``flowfit plot`` draws."""

    auto = "auto"
    density = "density"
    heatmap = "heatmap"
    corner = "corner"
    training = "training"
    latent = "latent"


@reports_errors
def plot_command(
    model_path: Annotated[
        Path, typer.Argument(metavar="MODEL", help="Model file from flowfit fit.")
    ],
    data: Annotated[
        Path | None,
        typer.Argument(
            metavar="DATA", help="Table with the model's columns; not needed for --kind training."
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = ...,
    kind: Annotated[
        PlotKind,
        typer.Option(
            help="auto: density for 1 or 2 columns, corner for more. density: histogram "
            "(1 column) or contours (2). heatmap: 2 columns. corner: data against samples. "
            "training: NLL per epoch. latent: Q-Q and PIT per latent dimension."
        ),
    ] = PlotKind.auto,
    samples: Annotated[
        int | None,
        typer.Option(min=1, help="Model samples in a corner plot; default: as many as DATA rows."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for samples, subsets and noise.")] = 0,
    dpi: Annotated[int, typer.Option(min=20, max=600, help="Resolution, dots per inch.")] = 100,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Draw MODEL against the rows of DATA and write the figure as PNG.

    For --kind latent, pass rows the model was not fitted on. The plot shows
    how far their latent values are from N(0, 1), and the command prints the
    test summary.
    """
    check_output(output, force=force)
    if kind is PlotKind.training:
        model = FlowDensity.load(model_path)
        figure = plot_training_curves(model)
    else:
        if data is None:
            raise ValueError(f"--kind {kind.value} needs DATA, a table with the model's columns.")
        model, frame = load_model_and_rows(model_path, data)
        figure = _data_figure(model, frame, kind, samples, seed)
    save_png(figure, output, overwrite=force, dpi=dpi)
    typer.echo(f"wrote {output}")


def _data_figure(
    model: FlowDensity, frame: pd.DataFrame, kind: PlotKind, samples: int | None, seed: int
) -> Figure:
    features = sum(not column.dropped for column in model.columns_)
    if kind is PlotKind.latent:
        diagnostics = latent_diagnostics(model, frame, random_state=seed)
        typer.echo(diagnostics.summary())
        return plot_latent(diagnostics)
    if kind is PlotKind.corner:
        return plot_corner(model, frame, n_samples=samples, random_state=seed)
    if kind is PlotKind.heatmap:
        return plot_density_2d(model, frame, style="heatmap", random_state=seed)
    if kind is PlotKind.density:
        if features == 1:
            return plot_density_1d(model, frame)
        if features == 2:
            return plot_density_2d(model, frame, random_state=seed)
        raise ValueError(
            f"--kind density draws 1 or 2 columns, but the model has {features}. "
            "Use --kind corner."
        )
    if features > 2:
        return plot_corner(model, frame, n_samples=samples, random_state=seed)
    return plot_fit(model, frame, random_state=seed)
