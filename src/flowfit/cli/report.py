"""``flowfit report``: one self-contained HTML page about a fitted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowfit.cli.common import check_output, reports_errors
from flowfit.cli.evaluate import SeedOption, TestFractionOption, TrainOption, held_out_rows
from flowfit.diagnostics import build_report, write_report


@reports_errors
def report_command(
    model_path: Annotated[
        Path, typer.Argument(metavar="MODEL", help="Model file from flowfit fit.")
    ],
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Table with the model's columns.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")],
    train: TrainOption = None,
    test_fraction: TestFractionOption = None,
    seed: SeedOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Write an HTML report on MODEL: summary, evaluation, plots, latent tests.

    Held-out rows are chosen as in flowfit evaluate: every row of DATA with
    --train, otherwise a --test-fraction of DATA split off with --seed. The
    page embeds its images and needs no network access to view.
    """
    check_output(output, force=force)
    model, train_rows, test_rows = held_out_rows(model_path, data, train, test_fraction, seed)
    html = build_report(
        model, test_rows, train=train_rows, title=f"flowfit report: {model_path.name}",
        random_state=seed,
    )
    write_report(output, html, overwrite=force)
    typer.echo(f"wrote {output}")
