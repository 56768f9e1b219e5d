"""``flowfit inspect``: print what a model file holds, column by column."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from flowfit.cli.common import reports_errors
from flowfit.io.model_file import load_flow
from flowfit.preprocessing import Column


def describe_model(path: Path) -> dict[str, Any]:
    """Return the facts ``flowfit inspect`` prints, as JSON-safe values."""
    flow, metadata = load_flow(path)
    history = metadata.get("history", {})
    records = metadata.get("preprocessing")
    if records is None:
        names = metadata.get("columns") or [f"x{i}" for i in range(flow.features)]
        steps = [0.0] * flow.features if flow.grid is None else flow.grid.tolist()
        records = [
            Column(str(n), "real", step=float(s), reason="model file without records")
            .to_dict()
            for n, s in zip(names, steps)
        ]
    params = metadata.get("params", {})
    return {
        "path": str(path),
        "estimator": metadata.get("estimator", "FlowDensity"),
        "preset": metadata.get("preset", params.get("flow")),
        "flow_options": metadata.get("flow_options", params.get("flow_options")),
        "parameters": sum(p.numel() for p in flow.parameters()),
        "dtype": str(next(flow.parameters()).dtype).removeprefix("torch."),
        "base": type(flow.base).__name__,
        "features": metadata.get("feature_names") if metadata.get("target_names") else None,
        "columns": records,
        "history": {
            "epochs": len(history.get("train", [])),
            "best_epoch": history.get("best_epoch"),
            "best_val_nll": min(history["val"]) if history.get("val") else None,
            "stopped_early": history.get("stopped_early"),
        },
        "size_search": metadata.get("size_search", []),
    }


def _bound(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:g}"


def _column_rows(columns: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["column", "kind", "map to real line", "low", "high", "grid step",
             "loc", "scale", "reason"]]
    for record in columns:
        column = Column.from_dict(record)
        rows.append([
            column.name, column.kind, column.transform, _bound(record.get("low")),
            _bound(record.get("high")), f"{column.step:g}" if column.step else "-",
            f"{column.loc:.6g}", f"{column.scale:.6g}", column.reason or "-",
        ])
    return rows


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    return "\n".join(lines)


def format_description(facts: dict[str, Any]) -> str:
    """Return the plain-text report of :func:`describe_model`'s facts."""
    options = ", ".join(f"{k}={v}" for k, v in (facts["flow_options"] or {}).items())
    history = facts["history"]
    lines = [
        f"model file: {facts['path']}",
        f"estimator: {facts['estimator']}",
        f"flow: {facts['preset']} ({options or 'preset defaults'}), "
        f"{facts['parameters']:,} parameters, {facts['dtype']}, base {facts['base']}",
    ]
    if history["epochs"]:
        val = history["best_val_nll"]
        lines.append(
            f"training: {history['epochs']} epochs, best epoch {history['best_epoch'] + 1}, "
            + (f"validation NLL {val:.4f} nats/row" if val is not None else "no validation rows")
            + (", stopped early" if history["stopped_early"] else "")
        )
    if facts["features"]:
        lines.append(f"features (context): {', '.join(facts['features'])}")
    for candidate in facts["size_search"]:
        size = ", ".join(f"{k}={v}" for k, v in candidate["options"].items())
        lines.append(f"size candidate: {size}: validation log-likelihood "
                     f"{candidate['val_log_likelihood']:.4f} nats/row")
    lines.append("columns:" if facts["estimator"] != "ConditionalFlowDensity" else "targets:")
    lines.append(_table(_column_rows(facts["columns"])))
    return "\n".join(lines)


@reports_errors
def inspect_command(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file to describe.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the description as one JSON document.")
    ] = False,
) -> None:
    """Print MODEL's flow, size, training summary and the preprocessing of each column."""
    facts = describe_model(model_path)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    typer.echo(format_description(facts))
