r"""Held-out log-likelihood of a flow next to classical density estimators.

Three baselines from scikit-learn are fitted on training rows and scored, with the flow,
on the same held-out rows:

- a full-covariance Gaussian, by maximum likelihood
  (:class:`~sklearn.covariance.EmpiricalCovariance`);
- :class:`~sklearn.mixture.GaussianMixture` with full covariances, the number of
  components chosen by BIC;
- :class:`~sklearn.neighbors.KernelDensity` with a Gaussian kernel, the bandwidth chosen
  by K-fold cross-validated log-likelihood (:class:`~sklearn.model_selection.GridSearchCV`).

The baselines see the training rows standardised by their own mean and standard
deviation :math:`s_j`, because KernelDensity has one bandwidth for all columns. Their
log-densities are converted back to the data's units by subtracting
:math:`\sum_j \log s_j`, so every number is a log-density of the data as given and
comparable across models.

Rounded columns (those with a grid step in the model) are treated as the flow treats
them. The baselines are fitted on training rows with uniform noise over each grid cell.
Each held-out row is scored by the log of the model's probability of the row's cell
divided by the cell's volume, integrated with the same quasi-Monte Carlo points that
:meth:`flowfit.Flow.log_prob` uses.
"""

from __future__ import annotations

__all__ = ["Evaluation", "ModelScore", "evaluate", "split_rows"]

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity
from threadpoolctl import threadpool_limits

from flowfit.diagnostics._data import (
    check_rows,
    model_input,
    modelled_columns,
    modelled_index,
)
from flowfit.distributions import CELL_POINTS
from flowfit.errors import DataError
from flowfit.estimators import FlowDensity

LOG_2 = math.log(2.0)

# KernelDensity's tree may stop summing kernels once each density is known to this
# relative accuracy, so log-densities are within about 1e-8 nats of the exact sum.
# Scoring 1,500 ccpp rows against 5,700 (5 columns) took a third of the time of exact
# summation (rtol=0) in one run on a 2-core x86 CPU.
KDE_RTOL = 1e-8


def split_rows(
    data: pd.DataFrame, *, test_fraction: float = 0.25, random_state: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle the rows of ``data`` and split them into ``(train, test)``.

    ``test`` gets ``round(len(data) * test_fraction)`` rows. The shuffle uses
    ``numpy.random.default_rng(random_state).permutation``, so the same seed gives the
    same split on the same table. Both parts keep the original row order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}.")
    n_test = int(round(len(data) * test_fraction))
    if n_test < 1 or n_test >= len(data):
        raise DataError(
            f"test_fraction={test_fraction} of {len(data)} rows leaves an empty training "
            "or test part. Use a different fraction or more rows."
        )
    order = np.random.default_rng(random_state).permutation(len(data))
    test = data.iloc[np.sort(order[:n_test])].reset_index(drop=True)
    train = data.iloc[np.sort(order[n_test:])].reset_index(drop=True)
    return train, test


@dataclass(frozen=True)
class ModelScore:
    """The held-out log-likelihoods of one model, in nats, one per row of shape (n_test,)."""

    name: str
    description: str
    log_likelihoods: np.ndarray = field(repr=False)
    n_features: int

    @property
    def mean(self) -> float:
        """Mean held-out log-likelihood in nats per row. Higher is better."""
        return float(np.mean(self.log_likelihoods))

    @property
    def standard_error(self) -> float:
        """Standard error of :attr:`mean`: sample standard deviation over sqrt(rows).

        NaN for fewer than two rows or when a row has log-likelihood minus infinity.
        """
        return _standard_error(self.log_likelihoods)

    @property
    def bits_per_dim(self) -> float:
        """Mean negative log-likelihood in bits per dimension, ``-mean / (D ln 2)``.

        Lower is better.
        """
        return -self.mean / (self.n_features * LOG_2)

    @property
    def bits_per_dim_error(self) -> float:
        """Standard error of :attr:`bits_per_dim`."""
        return self.standard_error / (self.n_features * LOG_2)

    def difference(self, other: ModelScore) -> tuple[float, float]:
        """Return the mean of ``self - other`` per row and its paired standard error, nats."""
        delta = self.log_likelihoods - other.log_likelihoods
        return float(np.mean(delta)), _standard_error(delta)

    def to_dict(self) -> dict[str, Any]:
        """Return the summary numbers as JSON-serialisable values (NaN and infinities as None)."""
        return {
            "name": self.name,
            "description": self.description,
            "mean_log_likelihood": _finite_or_none(self.mean),
            "standard_error": _finite_or_none(self.standard_error),
            "bits_per_dim": _finite_or_none(self.bits_per_dim),
            "bits_per_dim_standard_error": _finite_or_none(self.bits_per_dim_error),
        }


@dataclass(frozen=True)
class Evaluation:
    """Held-out scores of the flow (first) and the baselines, on the same rows."""

    scores: list[ModelScore]
    columns: list[str]
    n_train: int
    n_test: int

    @property
    def flow(self) -> ModelScore:
        """The flow's score."""
        return self.scores[0]

    def __getitem__(self, name: str) -> ModelScore:
        for score in self.scores:
            if score.name == name:
                return score
        names = [s.name for s in self.scores]
        raise KeyError(f"No model named {name!r} in this evaluation. Models: {names}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the table as JSON-serialisable values.

        Each baseline's ``minus_flow`` is its mean per-row difference from the flow, with
        the paired standard error in ``minus_flow_standard_error``.
        """
        rows = []
        for score in self.scores:
            row = score.to_dict()
            if score is not self.flow:
                delta, error = score.difference(self.flow)
                row["minus_flow"] = _finite_or_none(delta)
                row["minus_flow_standard_error"] = _finite_or_none(error)
            rows.append(row)
        return {
            "columns": self.columns,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "units": {
                "mean_log_likelihood": "nats per row",
                "bits_per_dim": "negative log-likelihood, bits per dimension",
            },
            "models": rows,
        }

    def to_frame(self) -> pd.DataFrame:
        """Return one row per model with the numbers of :meth:`to_dict`."""
        return pd.DataFrame(self.to_dict()["models"]).set_index("name")

    def format_table(self) -> str:
        """Return the table as aligned plain text for a terminal."""
        header = ["model", "log-lik (nats/row)", "NLL (bits/dim)", "minus flow (nats/row)"]
        lines = [header]
        for score in self.scores:
            difference = ""
            if score is not self.flow:
                difference = _plus_minus(*score.difference(self.flow))
            lines.append([
                score.description,
                _plus_minus(score.mean, score.standard_error),
                _plus_minus(score.bits_per_dim, score.bits_per_dim_error),
                difference,
            ])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = [
            f"held-out rows: {self.n_test}, baseline training rows: {self.n_train}, "
            f"columns: {', '.join(self.columns)}"
        ]
        for line in lines:
            text.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        text.append(
            "+/- is one standard error over held-out rows (paired for 'minus flow'). "
            "Higher log-lik and lower bits/dim are better."
        )
        return "\n".join(text)


def evaluate(
    model: FlowDensity,
    test: Any,
    *,
    train: Any,
    max_components: int = 10,
    bandwidths: np.ndarray | None = None,
    cv: int = 5,
    random_state: int = 0,
) -> Evaluation:
    """Score ``model`` and three baselines fitted on ``train`` on the held-out rows ``test``.

    Arguments:
        model: A fitted :class:`~flowfit.FlowDensity`. Its score is held-out only if it
            was not fitted on any row of ``test``.
        test: Held-out rows of shape (n_test, n_features), with the model's columns.
        train: Rows of shape (n_train, n_features) to fit the baselines on, normally
            the rows the flow was fitted on.
        max_components: The largest GaussianMixture tried. Fewer are tried when the
            mixture would have as many free parameters as training rows.
        bandwidths: KernelDensity bandwidths to cross-validate, in standardised units.
            Default: Scott's rule :math:`n^{-1/(D+4)}` times 16 factors from 0.05 to 2.
        cv: Folds for the bandwidth search.
        random_state: Seeds the dequantisation noise, the mixtures and the folds.

    Returns:
        An :class:`Evaluation` with the scores of "flow", "gaussian",
        "gaussian_mixture" and "kernel_density", in that order. Columns that the model
        dropped as constant are left out of every score, as the flow leaves them out.

    Raises:
        DataError: Columns differ from the model's, values are not finite, too few
            training rows, or constant or collinear training columns.
    """
    if max_components < 1:
        raise ValueError(f"max_components must be at least 1; got {max_components}.")
    if cv < 2:
        raise ValueError(f"cv must be at least 2; got {cv}.")
    test_values = check_rows(model, test)
    index = modelled_index(model)
    columns = [column.name for column in modelled_columns(model)]
    x_test = test_values[:, index]
    x_train = check_rows(model, train)[:, index]
    n_train, features = x_train.shape
    if n_train < max(2 * cv, features + 2):
        raise DataError(
            f"The baselines need at least {max(2 * cv, features + 2)} training rows "
            f"for {features} column(s) and {cv}-fold cross-validation; got {n_train}."
        )

    grid = np.array([column.step for column in modelled_columns(model)], dtype=np.float64)
    if np.any(grid > 0):
        rng = np.random.default_rng(random_state)
        x_train = x_train + (rng.random(x_train.shape) - 0.5) * grid
    loc = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    if not np.all(scale > 0):
        constant = [columns[j] for j in np.flatnonzero(~(scale > 0))]
        raise DataError(
            f"Training column(s) {constant} are constant, so the baselines cannot be "
            "fitted. Pass training rows in which every modelled column varies."
        )
    u_train = (x_train - loc) / scale
    log_jacobian = float(np.sum(np.log(scale)))

    def score_rows(log_density) -> np.ndarray:
        return _cell_log_prob(log_density, (x_test - loc) / scale, grid / scale) - log_jacobian

    flow_values = model.score_samples(model_input(model, test_values))
    scores = [ModelScore("flow", f"flow ({model.preset_})", flow_values, features)]

    gaussian = _fit_gaussian(u_train)
    scores.append(ModelScore(
        "gaussian", "full-covariance Gaussian", score_rows(gaussian.logpdf), features
    ))

    mixture = _fit_mixture(u_train, max_components, random_state)
    components = "1 component" if mixture.n_components == 1 else (
        f"{mixture.n_components} components"
    )
    scores.append(ModelScore(
        "gaussian_mixture",
        f"GaussianMixture, {components} by BIC",
        score_rows(mixture.score_samples),
        features,
    ))

    kde, edge = _fit_kernel_density(u_train, bandwidths, cv, random_state)
    note = ", at the edge of the searched range" if edge else ""
    scores.append(ModelScore(
        "kernel_density",
        f"KernelDensity, bandwidth {kde.bandwidth:.3g} by {cv}-fold CV{note}",
        score_rows(kde.score_samples),
        features,
    ))
    return Evaluation(scores, columns, n_train=n_train, n_test=x_test.shape[0])


def _fit_gaussian(u: np.ndarray) -> Any:
    estimator = EmpiricalCovariance().fit(u)
    try:
        return stats.multivariate_normal(estimator.location_, estimator.covariance_)
    except np.linalg.LinAlgError:
        raise DataError(
            "The training columns are collinear (their covariance matrix is singular). "
            "Drop a column that is a linear combination of others."
        ) from None


def _fit_mixture(u: np.ndarray, max_components: int, random_state: int) -> GaussianMixture:
    n, d = u.shape
    per_component = d + d * (d + 1) // 2 + 1
    best, best_bic = None, math.inf
    # EM solves many D x D triangular systems. Threaded BLAS gains nothing on matrices
    # that small, and on a loaded 2-core machine it made these fits 20 times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        for k in range(1, max_components + 1):
            # More free parameters than rows make the likelihood unbounded.
            if k * per_component - 1 >= n:
                break
            mixture = GaussianMixture(k, covariance_type="full", random_state=random_state)
            mixture.fit(u)
            bic = mixture.bic(u)
            if bic < best_bic:
                best, best_bic = mixture, bic
    return best


def _fit_kernel_density(
    u: np.ndarray, bandwidths: np.ndarray | None, cv: int, random_state: int
) -> tuple[KernelDensity, bool]:
    """Return the KernelDensity refitted at the best bandwidth, and whether it is a grid end."""
    n, d = u.shape
    if bandwidths is None:
        bandwidths = n ** (-1.0 / (d + 4)) * np.geomspace(0.05, 2.0, 16)
    bandwidths = np.sort(np.asarray(bandwidths, dtype=np.float64))
    if bandwidths.size == 0 or not np.all(bandwidths > 0):
        raise ValueError(f"bandwidths must be positive; got {bandwidths.tolist()}.")
    search = GridSearchCV(
        KernelDensity(kernel="gaussian", rtol=KDE_RTOL),
        {"bandwidth": bandwidths},
        cv=KFold(cv, shuffle=True, random_state=random_state),
    ).fit(u)
    best = search.best_estimator_
    edge = bandwidths.size > 1 and best.bandwidth in (bandwidths[0], bandwidths[-1])
    return best, bool(edge)


def _cell_log_prob(log_density, u: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Return the log of each row's density averaged over its grid cell, shape (n,).

    ``log_density`` maps points of shape (m, d) to log-densities of shape (m,). Columns
    with step 0 are not averaged, and without any step this is ``log_density(u)``. The
    average uses the scrambled Sobol points of :class:`~flowfit.Flow`, so baselines and
    flow integrate over the same offsets.
    """
    if not np.any(step > 0):
        return log_density(u)
    n, d = u.shape
    engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=0)
    offsets = (engine.draw(CELL_POINTS, dtype=torch.float64).numpy() - 0.5) * step
    points = (u[:, None, :] + offsets[None, :, :]).reshape(-1, d)
    values = np.asarray(log_density(points), dtype=np.float64).reshape(n, CELL_POINTS)
    return logsumexp(values, axis=1) - math.log(CELL_POINTS)


def _standard_error(values: np.ndarray) -> float:
    if values.size < 2 or not np.all(np.isfinite(values)):
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(values.size))


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _plus_minus(value: float, error: float) -> str:
    if not math.isfinite(error):
        return f"{value:.4f}"
    return f"{value:.4f} +/- {error:.4f}"
