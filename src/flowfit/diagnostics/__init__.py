"""Diagnostics of a fitted flow: evaluation against baselines, latent tests, plots, report.

Every function takes a fitted :class:`~flowfit.FlowDensity` and returns a value (a data
structure, a matplotlib figure or HTML text), so notebooks and the command line share
one path.
"""

from flowfit.diagnostics.evaluation import Evaluation, ModelScore, evaluate, split_rows
from flowfit.diagnostics.latent import (
    DimensionTest,
    LatentDiagnostics,
    latent_diagnostics,
    to_latent,
)
from flowfit.diagnostics.plots import (
    figure_to_png,
    plot_corner,
    plot_density_1d,
    plot_density_2d,
    plot_fit,
    plot_latent,
    plot_training_curves,
    save_png,
)
from flowfit.diagnostics.report import build_report, model_summary, write_report

__all__ = [
    "DimensionTest",
    "Evaluation",
    "LatentDiagnostics",
    "ModelScore",
    "build_report",
    "evaluate",
    "figure_to_png",
    "latent_diagnostics",
    "model_summary",
    "plot_corner",
    "plot_density_1d",
    "plot_density_2d",
    "plot_fit",
    "plot_latent",
    "plot_training_curves",
    "save_png",
    "split_rows",
    "to_latent",
    "write_report",
]
