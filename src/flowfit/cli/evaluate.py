"""``flowfit evaluate``: held-out log-likelihood of a model next to classical baselines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from flowfit.cli.common import check_output, reports_errors
from flowfit.cli.score import load_model_and_rows
from flowfit.diagnostics import evaluate, split_rows
from flowfit.estimators import FlowDensity
from flowfit.io.model_file import atomic_write
from flowfit.io.tables import read_table

DEFAULT_TEST_FRACTION = 0.25

TrainOption = Annotated[
    Path | None,
    typer.Option(
        "--train",
        help="Table of training rows to fit the baselines on, normally the table MODEL "
        "was fitted on. Every row of DATA is then held out.",
    ),
]
TestFractionOption = Annotated[
    float | None,
    typer.Option(
        min=0.0, max=1.0,
        help="Without --train: share of DATA's rows to hold out. The rest trains the "
        f"baselines. Default {DEFAULT_TEST_FRACTION}.",
    ),
]
SeedOption = Annotated[int, typer.Option(help="Random seed for the split and the baselines.")]


def held_out_rows(
    model_path: Path, data: Path, train: Path | None, test_fraction: float | None, seed: int
) -> tuple[FlowDensity, pd.DataFrame, pd.DataFrame]:
    """Load MODEL and return it with ``(train, test)`` rows by the rules in the help text."""
    model, frame = load_model_and_rows(model_path, data)
    if train is not None:
        if test_fraction is not None:
            raise ValueError(
                "--train and --test-fraction exclude each other: with --train every row of "
                "DATA is held out. Drop one of them."
            )
        columns = getattr(model, "feature_names_in_", None)
        train_rows = read_table(train, None if columns is None else list(columns))
        return model, train_rows, frame
    fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    if not 0 < fraction < 1:
        raise typer.BadParameter(
            f"expected a share strictly between 0 and 1; got {fraction}.",
            param_hint="--test-fraction",
        )
    train_rows, test_rows = split_rows(frame, test_fraction=fraction, random_state=seed)
    typer.echo(
        f"note: held out {len(test_rows)} of {len(frame)} rows of {data} (seed {seed}). The "
        "flow's score is a held-out score only if MODEL was not fitted on those rows.",
        err=True,
    )
    return model, train_rows, test_rows


@reports_errors
def evaluate_command(
    model_path: Annotated[
        Path, typer.Argument(metavar="MODEL", help="Model file from flowfit fit.")
    ],
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Table with the model's columns.")
    ],
    train: TrainOption = None,
    test_fraction: TestFractionOption = None,
    seed: SeedOption = 0,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the table as JSON to this file; '-' for stdout."),
    ] = None,
    max_components: Annotated[
        int, typer.Option(min=1, help="Largest GaussianMixture tried when choosing by BIC.")
    ] = 10,
    cv_folds: Annotated[
        int, typer.Option(min=2, help="Cross-validation folds for the KernelDensity bandwidth.")
    ] = 5,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the JSON file if it exists.")
    ] = False,
) -> None:
    """Compare MODEL's held-out log-likelihood with a Gaussian, a mixture, a KDE.

    There are two ways to choose held-out rows. With --train TRAIN, the
    baselines are fitted on TRAIN and all models are scored on every row of
    DATA. Fit MODEL on TRAIN too, and pass rows it never saw as DATA. Without
    --train, DATA is shuffled with --seed and split: --test-fraction of it is
    held out and the rest fits the baselines. The model file does not record
    its training rows, so the flow's number is a held-out score only if MODEL
    was fitted without the held-out part.

    Scores are in nats per row (higher is better) and as negative
    log-likelihood in bits per dimension (lower is better), each with one
    standard error.
    """
    to_stdout = json_path is not None and str(json_path) == "-"
    if not to_stdout:
        check_output(json_path, force=force)
    model, train_rows, test_rows = held_out_rows(model_path, data, train, test_fraction, seed)
    result = evaluate(
        model, test_rows, train=train_rows, max_components=max_components, cv=cv_folds,
        random_state=seed,
    )
    document = {
        "model": str(model_path),
        "data": str(data),
        "train": None if train is None else str(train),
        "test_fraction": None if train is not None else (test_fraction or DEFAULT_TEST_FRACTION),
        "seed": seed,
        **result.to_dict(),
    }
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    if to_stdout:
        sys.stdout.write(text)
        return
    typer.echo(result.format_table())
    if json_path is not None:
        atomic_write(
            json_path, lambda temporary: temporary.write_text(text, encoding="utf-8"),
            overwrite=force,
        )
        typer.echo(f"wrote {json_path}")
