"""A single self-contained HTML report: model summary, evaluation, plots, latent tests.

The page embeds its images as base64 PNG data URLs and its style sheet inline. It has no
scripts and no links to fetch, so it opens offline and can be mailed or archived as one
file.
"""

from __future__ import annotations

__all__ = ["build_report", "model_summary", "write_report"]

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from flowfit import __version__
from flowfit.diagnostics._data import (
    check_rows,
    column_names,
    model_input,
    modelled_columns,
    modelled_index,
)
from flowfit.diagnostics.evaluation import Evaluation, evaluate
from flowfit.diagnostics.latent import LatentDiagnostics, latent_diagnostics
from flowfit.diagnostics.plots import (
    figure_to_png,
    plot_fit,
    plot_latent,
    plot_training_curves,
)
from flowfit.estimators import FlowDensity
from flowfit.io.model_file import atomic_write
from flowfit.preprocessing import outside_support

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
p.pass { color: #17692c; font-weight: bold; } p.fail { color: #a11; font-weight: bold; }
"""


def model_summary(model: FlowDensity) -> dict[str, str]:
    """Return the model's settings and training outcome as display strings, in report order."""
    history = model.history_
    parameters = sum(p.numel() for p in model.flow_.parameters())
    modelled = modelled_columns(model)
    dropped = [column.name for column in model.columns_ if column.dropped]
    summary = {
        "flow": f"{model.preset_} ({model.flow} requested)" if model.flow != model.preset_
        else str(model.preset_),
        "flow options": ", ".join(f"{k}={v}" for k, v in model.flow_options_.items())
        or "preset defaults",
        "modelled columns": ", ".join(column.name for column in modelled),
        "dropped constant columns": ", ".join(dropped) if dropped else "none",
        "trainable parameters": f"{parameters:,}",
        "dtype": str(model.dtype),
        "epochs run": f"{len(history.train)} of at most {model.max_epochs}",
    }
    if history.best_epoch >= 0:
        summary["best epoch"] = str(history.best_epoch + 1)
    if history.val and history.best_epoch >= 0:
        summary["best validation NLL"] = f"{history.val[history.best_epoch]:.4f} nats/row"
    summary["stopped early"] = "yes" if history.stopped_early else "no"
    summary["training time"] = f"{history.seconds:.1f} s"
    summary["batch size, learning rate"] = f"{model.batch_size}, {model.learning_rate:g}"
    return summary


def build_report(
    model: FlowDensity,
    test: Any,
    *,
    train: Any,
    title: str = "flowfit report",
    evaluation: Evaluation | None = None,
    diagnostics: LatentDiagnostics | None = None,
    random_state: int = 0,
) -> str:
    """Return the HTML text of a report on ``model``, scored on the held-out rows ``test``.

    Arguments:
        model: A fitted :class:`~flowfit.FlowDensity`.
        test: Held-out rows of shape (n_test, n_features).
        train: The rows the baselines are fitted on, normally the flow's training rows.
            The fit plot shows training and held-out rows together.
        title: The page title and heading.
        evaluation: A result of :func:`~flowfit.diagnostics.evaluate` to reuse. When
            None, it is computed with default settings.
        diagnostics: A result of :func:`~flowfit.diagnostics.latent_diagnostics` on
            ``test`` to reuse. When None, it is computed on the rows of ``test`` inside
            the model's support.
        random_state: Seeds everything computed here.
    """
    test_values = check_rows(model, test)
    if evaluation is None:
        evaluation = evaluate(model, test, train=train, random_state=random_state)
    # The latent is undefined for rows of zero density, so they are left out of the
    # latent tests and counted in the report instead.
    outside = outside_support(test_values[:, modelled_index(model)], modelled_columns(model))
    if diagnostics is None:
        inside = model_input(model, test_values[~outside])
        diagnostics = latent_diagnostics(model, inside, random_state=random_state)
    all_rows = pd.DataFrame(
        np.vstack([check_rows(model, train), check_rows(model, test)]),
        columns=column_names(model),
    )

    sections = [
        f"<h1>{_text(title)}</h1>",
        f"<p>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by flowfit "
        f"{_text(__version__)}.</p>",
        "<h2>Model</h2>",
        _key_value_table(model_summary(model)),
        _columns_table(model),
        "<h2>Held-out log-likelihood</h2>",
        _evaluation_table(evaluation),
        "<h2>Fit</h2>",
        _figure(
            plot_fit(model, all_rows, random_state=random_state),
            f"The model against all {len(all_rows)} rows (training and held-out).",
        ),
        _figure(plot_training_curves(model), "Mean negative log-likelihood per epoch."),
        "<h2>Latent diagnostics</h2>",
        _outside_note(int(outside.sum())),
        _latent_section(diagnostics),
    ]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_text(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def write_report(path: str | Path, report: str, *, overwrite: bool = False) -> None:
    """Write the HTML text ``report`` to ``path`` as UTF-8. The file appears only complete.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    atomic_write(
        path, lambda temporary: temporary.write_text(report, encoding="utf-8"),
        overwrite=overwrite,
    )


def _text(value: Any) -> str:
    return html.escape(str(value))


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _key_value_table(rows: dict[str, str]) -> str:
    cells = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _columns_table(model: FlowDensity) -> str:
    header = (
        "<tr><th>column</th><th>kind</th><th>map to the real line</th><th>grid step</th>"
        "<th>reason</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{_text(c.name)}</td><td>{_text(c.kind)}</td><td>{_text(c.transform)}</td>"
        f"<td class=\"number\">{c.step:g}</td><td>{_text(c.reason)}</td></tr>"
        for c in model.columns_
    )
    return f"<table>{header}{rows}</table>"


def _evaluation_table(evaluation: Evaluation) -> str:
    header = (
        "<tr><th>model</th><th>log-likelihood (nats/row)</th><th>NLL (bits/dim)</th>"
        "<th>minus flow (nats/row)</th></tr>"
    )
    rows = []
    for score in evaluation.scores:
        difference = ""
        if score is not evaluation.flow:
            delta, error = score.difference(evaluation.flow)
            difference = f"{_number(delta)} &plusmn; {_number(error)}"
        rows.append(
            f"<tr><td>{_text(score.description)}</td>"
            f"<td class=\"number\">{_number(score.mean)} &plusmn; "
            f"{_number(score.standard_error)}</td>"
            f"<td class=\"number\">{_number(score.bits_per_dim)} &plusmn; "
            f"{_number(score.bits_per_dim_error)}</td>"
            f"<td class=\"number\">{difference}</td></tr>"
        )
    caption = (
        f"<p>{evaluation.n_test} held-out rows, baselines fitted on {evaluation.n_train} "
        "training rows. &plusmn; is one standard error over held-out rows, paired for "
        "the difference from the flow. Higher log-likelihood and lower bits per "
        "dimension are better.</p>"
    )
    return f"<table>{header}{''.join(rows)}</table>\n{caption}"


def _outside_note(count: int) -> str:
    if count == 0:
        return ""
    return (
        f"<p>{count} held-out row(s) lie outside the model's support (log-likelihood "
        "minus infinity) and are left out of the latent tests.</p>"
    )


def _latent_section(diagnostics: LatentDiagnostics) -> str:
    verdict = "pass" if diagnostics.passed else "fail"
    header = (
        "<tr><th>dimension</th><th>mean</th><th>std</th><th>KS statistic</th>"
        "<th>KS p</th><th>AD statistic</th><th>AD p</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{_text(d.name)}</td><td class=\"number\">{d.mean:.3f}</td>"
        f"<td class=\"number\">{d.std:.3f}</td><td class=\"number\">{d.ks_statistic:.4f}</td>"
        f"<td class=\"number\">{d.ks_pvalue:.3g}</td>"
        f"<td class=\"number\">{d.ad_statistic:.3f}</td>"
        f"<td class=\"number\">{d.ad_pvalue:.3g}</td></tr>"
        for d in diagnostics.dimensions
    )
    radius = ""
    if diagnostics.radius_ks_statistic is not None:
        radius = (
            f"<p>Squared radius against chi-squared with {len(diagnostics.dimensions)} "
            f"degrees of freedom: KS {diagnostics.radius_ks_statistic:.4f}, "
            f"p {diagnostics.radius_ks_pvalue:.3g}.</p>"
        )
    return "\n".join([
        f"<p class=\"{verdict}\">{_text(diagnostics.summary())}</p>",
        f"<table>{header}{rows}</table>",
        radius,
        _figure(
            plot_latent(diagnostics),
            "Held-out rows mapped through the inverse flow. Left: Q-Q plots against "
            "N(0, 1). Right: histograms of the probability integral transform, uniform "
            "for a fitted flow.",
        ),
    ])


def _figure(figure: Figure, caption: str) -> str:
    encoded = base64.b64encode(figure_to_png(figure)).decode("ascii")
    return (
        f"<figure><img alt=\"{_text(caption)}\" src=\"data:image/png;base64,{encoded}\">"
        f"<figcaption>{_text(caption)}</figcaption></figure>"
    )
