"""Plots of a fitted flow against data, its training curves and its latent diagnostics.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so
nothing depends on a display or on pyplot's global state. Show one in a notebook by
leaving it as the cell's value, or write it with :func:`save_png`.

Density curves and contours show the flow's continuous density
(:meth:`flowfit.Flow.log_density`). For rounded columns that is the density of the
dequantised data, which a histogram of the rounded values approximates.
"""

from __future__ import annotations

__all__ = [
    "figure_to_png",
    "plot_corner",
    "plot_density_1d",
    "plot_density_2d",
    "plot_fit",
    "plot_latent",
    "plot_training_curves",
    "save_png",
]

import io
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

from flowfit.diagnostics._data import check_rows, modelled_columns, modelled_index
from flowfit.diagnostics.latent import LatentDiagnostics
from flowfit.estimators import DTYPES, FlowDensity
from flowfit.io.model_file import atomic_write
from flowfit.training import History

DATA_COLOR = "#1f77b4"
MODEL_COLOR = "#d62728"
REFERENCE_COLOR = "#7f7f7f"


def plot_density_1d(model: FlowDensity, data: Any, *, bins: int | str | None = None) -> Figure:
    """Plot a histogram of one-column ``data`` with the fitted density and a Gaussian KDE.

    Arguments:
        model: A fitted one-column :class:`~flowfit.FlowDensity`.
        data: Rows of shape (n_samples, 1).
        bins: Histogram bins, as :func:`numpy.histogram_bin_edges` takes them. The
            default is the square root of the row count, between 10 and 60.
    """
    _require_features(model, 1, "plot_density_1d")
    values = _modelled_rows(model, data)[:, 0]
    if bins is None:
        bins = int(np.clip(round(np.sqrt(values.size)), 10, 60))
    name = modelled_columns(model)[0].name
    low, high = _plot_range(model, values[:, None])
    points = np.linspace(low[0], high[0], 400)
    density = np.exp(_log_density(model, points[:, None]))

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.add_subplot()
    ax.hist(values, bins=bins, density=True, color=DATA_COLOR, alpha=0.35,
            label=f"data ({values.size} rows)")
    if values.size > 1 and np.ptp(values) > 0:
        kde = stats.gaussian_kde(values)
        ax.plot(points, kde(points), color=REFERENCE_COLOR, linestyle="--",
                label="Gaussian KDE (Scott's rule)")
    ax.plot(points, density, color=MODEL_COLOR, linewidth=2, label=f"flow ({model.preset_})")
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.set_title(f"Fitted density of {name}")
    ax.legend()
    return figure


def plot_density_2d(
    model: FlowDensity,
    data: Any,
    *,
    style: Literal["contour", "heatmap"] = "contour",
    resolution: int = 150,
    max_points: int = 5000,
    random_state: int = 0,
) -> Figure:
    """Plot the fitted density of a two-column model as contours or a heat map over the data.

    Arguments:
        model: A fitted two-column :class:`~flowfit.FlowDensity`.
        data: Rows of shape (n_samples, 2), drawn as a scatter.
        style: "contour" (filled contour levels) or "heatmap" (a colour per grid cell).
        resolution: Grid points along each axis.
        max_points: The maximum number of rows in the scatter. Beyond it, a random
            subset is drawn.
        random_state: Seeds the choice of the subset.
    """
    _require_features(model, 2, "plot_density_2d")
    if style not in ("contour", "heatmap"):
        raise ValueError(f"style must be 'contour' or 'heatmap'; got {style!r}.")
    rows = _modelled_rows(model, data)
    names = [column.name for column in modelled_columns(model)]
    low, high = _plot_range(model, rows)
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = np.column_stack([grid_x.ravel(), grid_y.ravel()])
    density = np.exp(_log_density(model, points)).reshape(grid_x.shape)

    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = figure.add_subplot()
    if style == "contour":
        image = ax.contourf(grid_x, grid_y, density, levels=14, cmap="viridis")
    else:
        image = ax.pcolormesh(grid_x, grid_y, density, cmap="viridis", shading="auto")
    figure.colorbar(image, ax=ax, label="fitted density")
    scatter_rows = _subset(rows, max_points, random_state)
    ax.scatter(scatter_rows[:, 0], scatter_rows[:, 1], s=6, color="white", edgecolors="black",
               linewidths=0.3, label=f"data ({scatter_rows.shape[0]} of {rows.shape[0]} rows)")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"Fitted density of {names[0]} and {names[1]}")
    ax.legend(loc="upper left")
    return figure


def plot_corner(
    model: FlowDensity,
    data: Any,
    *,
    n_samples: int | None = None,
    max_points: int = 2000,
    bins: int = 30,
    random_state: int = 0,
) -> Figure:
    """Plot a corner (pair) plot of data against samples from the model.

    The diagonal shows the one-dimensional marginals as histograms. Each panel below it
    shows a scatter of two columns, with data and model samples in different colours.

    Arguments:
        model: A fitted :class:`~flowfit.FlowDensity` with two or more columns.
        data: Rows of shape (n_samples, n_features).
        n_samples: Samples to draw from the model, by default as many as data rows.
        max_points: The maximum number of data rows and of samples per scatter panel.
            Beyond it, random subsets are drawn.
        bins: Histogram bins on the diagonal, shared by data and samples.
        random_state: Seeds the samples and the subsets.
    """
    columns = modelled_columns(model)
    if len(columns) < 2:
        raise ValueError(
            "plot_corner needs a model of two or more modelled columns, but this one has "
            f"{len(columns)}. Use plot_density_1d."
        )
    rows = _modelled_rows(model, data)
    n_samples = rows.shape[0] if n_samples is None else n_samples
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1; got {n_samples}.")
    samples = np.asarray(model.sample(n_samples, random_state=random_state), dtype=np.float64)
    samples = samples[:, modelled_index(model)]
    names = [column.name for column in columns]
    features = len(names)
    shown_data = _subset(rows, max_points, random_state)
    shown_samples = _subset(samples, max_points, random_state + 1)

    size = max(2.0, min(3.0, 12.0 / features))
    figure = Figure(figsize=(size * features + 0.5, size * features), layout="constrained")
    axes = figure.subplots(features, features, squeeze=False)
    for i in range(features):
        for j in range(features):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                edges = np.histogram_bin_edges(np.concatenate([rows[:, i], samples[:, i]]), bins)
                ax.hist(rows[:, i], bins=edges, density=True, color=DATA_COLOR, alpha=0.4)
                ax.hist(samples[:, i], bins=edges, density=True, color=MODEL_COLOR,
                        histtype="step", linewidth=1.5)
                ax.set_yticks([])
            else:
                ax.scatter(shown_samples[:, j], shown_samples[:, i], s=3, color=MODEL_COLOR,
                           alpha=0.3, linewidths=0)
                ax.scatter(shown_data[:, j], shown_data[:, i], s=3, color=DATA_COLOR,
                           alpha=0.5, linewidths=0)
                ax.set_ylabel(names[i] if j == 0 else "")
            if i == features - 1:
                ax.set_xlabel(names[j])
            else:
                ax.set_xticklabels([])
            if 0 < j < i:
                ax.set_yticklabels([])
    handles = [
        Patch(color=DATA_COLOR, alpha=0.6, label=f"data ({rows.shape[0]} rows)"),
        Patch(color=MODEL_COLOR, alpha=0.6, label=f"flow samples ({n_samples})"),
    ]
    figure.legend(handles=handles, loc="upper right")
    figure.suptitle(f"Data against samples from the {model.preset_} flow")
    return figure


def plot_training_curves(history: History | FlowDensity) -> Figure:
    """Plot the training and validation NLL per epoch, with the best epoch marked.

    Arguments:
        history: A fitted model's ``history_``, or the model itself.
    """
    if isinstance(history, FlowDensity):
        history = history.history_
    if not history.train:
        raise ValueError("The history is empty: the model has no recorded epochs to plot.")
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.add_subplot()
    epochs = np.arange(1, len(history.train) + 1)
    ax.plot(epochs, history.train, color=DATA_COLOR, label="training NLL")
    if history.val:
        ax.plot(np.arange(1, len(history.val) + 1), history.val, color=MODEL_COLOR,
                label="validation NLL")
    if history.best_epoch >= 0:
        ax.axvline(history.best_epoch + 1, color=REFERENCE_COLOR, linestyle=":",
                   label=f"best epoch ({history.best_epoch + 1})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative log-likelihood (nats/row)")
    ax.set_title("Training curves")
    ax.legend()
    return figure


def plot_latent(diagnostics: LatentDiagnostics) -> Figure:
    """Plot, per latent dimension, a Q-Q plot against N(0, 1) and a PIT histogram.

    The Q-Q panel shades the 95% Kolmogorov-Smirnov band: a fitted flow stays inside it
    over the whole range in 95% of held-out samples. The PIT panel shows
    :math:`\\Phi(z)`, uniform for a fitted flow, with a pointwise 95% band per bin.
    """
    latent = diagnostics.latent
    n, features = latent.shape
    figure = Figure(figsize=(9.0, 2.8 * features + 0.6), layout="constrained")
    axes = figure.subplots(features, 2, squeeze=False)
    probabilities = (np.arange(1, n + 1) - 0.5) / n
    theoretical = stats.norm.ppf(probabilities)
    band = stats.kstwo.ppf(0.95, n)
    bins = int(np.clip(n // 20, 5, 20))
    expected_share = 1.0 / bins
    pit_band = 1.96 * np.sqrt(expected_share * (1 - expected_share) / n) * bins

    for i, test in enumerate(diagnostics.dimensions):
        values = np.sort(latent[:, i])
        qq = axes[i, 0]
        qq.fill_between(
            theoretical,
            stats.norm.ppf(np.clip(probabilities - band, 1e-12, 1)),
            stats.norm.ppf(np.clip(probabilities + band, 0, 1 - 1e-12)),
            color=REFERENCE_COLOR, alpha=0.2, linewidth=0, label="95% KS band",
        )
        qq.plot(theoretical, theoretical, color=REFERENCE_COLOR, linewidth=1)
        qq.scatter(theoretical, values, s=6, color=DATA_COLOR)
        limit = max(float(np.max(np.abs(theoretical))), float(np.max(np.abs(values)))) + 0.5
        qq.set_xlim(-limit, limit)
        qq.set_ylim(-limit, limit)
        qq.set_xlabel("N(0, 1) quantile")
        qq.set_ylabel(f"latent {test.name}")
        qq.set_title(f"Q-Q {test.name}: KS {test.ks_statistic:.3f} (p {test.ks_pvalue:.2g})")
        qq.legend(loc="upper left")

        pit = axes[i, 1]
        pit.axhspan(1 - pit_band, 1 + pit_band, color=REFERENCE_COLOR, alpha=0.25, linewidth=0,
                    label="95% band per bin")
        heights, _, _ = pit.hist(stats.norm.cdf(latent[:, i]), bins=bins, range=(0, 1),
                                 density=True, color=DATA_COLOR, alpha=0.6)
        # Headroom above the tallest bar keeps the legend off the bars.
        pit.set_ylim(0, 1.35 * max(float(np.max(heights)), 1 + pit_band))
        pit.axhline(1.0, color=REFERENCE_COLOR, linewidth=1)
        pit.set_xlim(0, 1)
        pit.set_xlabel("PIT value")
        pit.set_ylabel("density")
        pit.set_title(f"PIT {test.name}: AD {test.ad_statistic:.2f} (p {test.ad_pvalue:.2g})")
        pit.legend(loc="upper right")
    verdict = "PASS" if diagnostics.passed else "FAIL"
    figure.suptitle(f"Latent diagnostics ({verdict}), {n} held-out rows")
    return figure


def plot_fit(model: FlowDensity, data: Any, *, random_state: int = 0) -> Figure:
    """Plot the model against data in the form that suits its number of columns.

    One column: :func:`plot_density_1d`. Two: :func:`plot_density_2d` with contours.
    More: :func:`plot_corner`.
    """
    features = len(modelled_columns(model))
    if features == 1:
        return plot_density_1d(model, data)
    if features == 2:
        return plot_density_2d(model, data, random_state=random_state)
    return plot_corner(model, data, random_state=random_state)


def figure_to_png(figure: Figure, *, dpi: int = 100) -> bytes:
    """Render ``figure`` to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(figure: Figure, path: str | Path, *, overwrite: bool = False, dpi: int = 100) -> None:
    """Write ``figure`` to ``path`` as PNG. The file appears only once complete.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    atomic_write(
        path, lambda temporary: figure.savefig(temporary, format="png", dpi=dpi),
        overwrite=overwrite,
    )


def _require_features(model: FlowDensity, features: int, function: str) -> None:
    modelled = len(modelled_columns(model))
    if modelled != features:
        raise ValueError(
            f"{function} needs a model of {features} modelled column(s), but this one has "
            f"{modelled}. Use plot_fit to choose the plot by column count."
        )


def _modelled_rows(model: FlowDensity, data: Any) -> np.ndarray:
    return check_rows(model, data)[:, modelled_index(model)]


def _log_density(model: FlowDensity, points: np.ndarray) -> np.ndarray:
    """Return the flow's continuous log-density at ``points`` of shape (n, D), shape (n,).

    Points outside the support, where the support map gives NaN, get -inf.
    """
    with torch.no_grad():
        values = model.flow_.log_density(torch.as_tensor(points, dtype=DTYPES[model.dtype]))
    values = values.cpu().numpy().astype(np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def _plot_range(model: FlowDensity, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return per-column plot limits: the data range plus 10% each side, inside the support."""
    low, high = rows.min(axis=0), rows.max(axis=0)
    margin = 0.1 * np.where(high > low, high - low, np.maximum(np.abs(low), 1.0))
    low, high = low - margin, high + margin
    for j, column in enumerate(modelled_columns(model)):
        # The log and logit maps are undefined on the bounds themselves.
        width = high[j] - low[j]
        if np.isfinite(column.low):
            low[j] = max(low[j], column.low + 1e-6 * width)
        if np.isfinite(column.high):
            high[j] = min(high[j], column.high - 1e-6 * width)
    return low, high


def _subset(rows: np.ndarray, max_rows: int, random_state: int) -> np.ndarray:
    if rows.shape[0] <= max_rows:
        return rows
    keep = np.random.default_rng(random_state).choice(rows.shape[0], max_rows, replace=False)
    return rows[np.sort(keep)]
