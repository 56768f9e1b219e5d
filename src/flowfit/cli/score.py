"""``flowfit score``: write the log-density of each row of a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from flowfit.cli.common import check_output, load_model, reports_errors, write_table
from flowfit.estimators import ConditionalFlowDensity, FlowDensity
from flowfit.io.tables import read_table


def load_model_and_rows(model_path: Path, data: Path) -> tuple[FlowDensity, pd.DataFrame]:
    """Load an unconditional model and the columns it was fitted on from ``data``, by name."""
    model = FlowDensity.load(model_path)
    columns = getattr(model, "feature_names_in_", None)
    frame = read_table(data, None if columns is None else list(columns))
    return model, frame


def conditional_columns(model: ConditionalFlowDensity) -> tuple[list[str], list[str]]:
    """Return the context (feature) and target column names of a conditional model."""
    features = getattr(model, "feature_names_in_", None)
    if features is None:
        features = [f"x{i}" for i in range(model.n_features_in_)]
    return [str(name) for name in features], list(model.target_names_)


@reports_errors
def score_command(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file from flowfit fit.")],
    data: Annotated[Path, typer.Argument(help="Table with the model's columns.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="CSV file to write; default: stdout.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Write log p(x) of every row of DATA, in the data's units, one per line (column log_prob).

    For a conditional model, DATA needs the context and the target columns, and the
    scores are log p(targets | context).
    """
    check_output(output, force=force)
    model = load_model(model_path)
    if isinstance(model, ConditionalFlowDensity):
        features, targets = conditional_columns(model)
        frame = read_table(data, features + targets)
        scores = model.score_samples(frame[features], frame[targets])
    else:
        columns = getattr(model, "feature_names_in_", None)
        frame = read_table(data, None if columns is None else list(columns))
        scores = model.score_samples(frame)
    write_table(pd.DataFrame({"log_prob": scores}), output, overwrite=force)
