r"""Latent diagnostics: map data through the inverse flow and test the result against N(0, I).

If a flow :math:`x = g(z)` with base :math:`N(0, I)` fits, the latent values
:math:`z = g^{-1}(x)` of held-out rows are independent standard normal draws. Each latent
dimension is tested with the Kolmogorov-Smirnov and Anderson-Darling tests against the
fully specified N(0, 1), and, with two or more dimensions, the squared radius
:math:`\lVert z \rVert^2` against :math:`\chi^2_D`, which also reacts to dependence
between dimensions. The smallest p-value, Bonferroni-adjusted for the number of tests,
decides whether the latent is consistent with N(0, I).

Warning:
    These are significance tests, so with thousands of rows they detect departures too
    small to matter for most uses. Read the statistics (the KS distance is the largest
    gap between distribution functions) together with the verdict.
"""

from __future__ import annotations

__all__ = ["DimensionTest", "LatentDiagnostics", "latent_diagnostics", "to_latent"]

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats

from flowfit.diagnostics._data import check_rows, modelled_columns, modelled_index
from flowfit.distributions import DiagonalNormal
from flowfit.errors import DataError
from flowfit.estimators import DTYPES, FlowDensity
from flowfit.preprocessing import outside_support


def to_latent(model: FlowDensity, data: Any, *, random_state: int = 0) -> np.ndarray:
    """Map rows of ``data`` to the flow's latent space, where a fitted flow gives N(0, I).

    Arguments:
        model: A fitted :class:`~flowfit.FlowDensity`.
        data: Rows of shape (n_samples, n_features) with the model's columns.
        random_state: Seeds the dequantisation noise.

    Returns:
        An array of shape (n_samples, n_modelled): one latent dimension per modelled
        column, dropped constant columns left out. Rounded columns get uniform noise
        over each value's grid cell first, as in training, so that they give a
        continuous latent.

    Raises:
        DataError: The data have other columns or non-finite values, or some rows lie
            outside the model's support, where the latent is undefined.
    """
    x = check_rows(model, data)[:, modelled_index(model)]
    outside = outside_support(x, modelled_columns(model))
    if outside.any():
        rows = np.flatnonzero(outside)[:5].tolist()
        raise DataError(
            f"{int(outside.sum())} row(s) lie outside the model's support (a bound, or "
            f"off a rounded column's grid), first rows {rows} (counted from 0). The "
            "latent is undefined there, so remove those rows."
        )
    flow = model.flow_
    dtype = DTYPES[model.dtype]
    x_t = torch.as_tensor(x, dtype=dtype)
    if flow.grid is not None:
        generator = torch.Generator().manual_seed(random_state)
        noise = torch.rand(x_t.shape, generator=generator, dtype=dtype) - 0.5
        x_t = x_t + noise * flow.grid.to(dtype)
    with torch.no_grad():
        z, _ = flow.bijection.inverse(x_t)
        base = flow.base
        if isinstance(base, DiagonalNormal):
            # A learned diagonal-normal base is standardised, so the target stays N(0, I).
            z = (z - base.loc) * torch.exp(-base.log_scale)
    latent = z.cpu().numpy().astype(np.float64)
    bad = ~np.isfinite(latent).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise DataError(
            f"{int(bad.sum())} row(s) map to an infinite latent value, first rows {rows} "
            f"(counted from 0). In {model.dtype} their values sit on the edge of the "
            "model's support. Remove them, or refit with dtype='float64'."
        )
    return latent


@dataclass(frozen=True)
class DimensionTest:
    """Tests of one latent dimension against N(0, 1)."""

    name: str
    mean: float
    std: float
    ks_statistic: float
    ks_pvalue: float
    ad_statistic: float
    ad_pvalue: float


@dataclass(frozen=True)
class LatentDiagnostics:
    """The latent values of held-out rows and their tests against N(0, I).

    ``latent`` has shape (n_samples, n_modelled), one dimension per modelled column
    (dropped constant columns have none). ``radius_ks_statistic`` and
    ``radius_ks_pvalue`` test the squared radius against chi-squared with D degrees of
    freedom, and are None for one dimension.
    """

    latent: np.ndarray = field(repr=False)
    dimensions: list[DimensionTest]
    radius_ks_statistic: float | None
    radius_ks_pvalue: float | None
    alpha: float

    @property
    def n_tests(self) -> int:
        """The number of p-values that the verdict adjusts for."""
        return 2 * len(self.dimensions) + (self.radius_ks_pvalue is not None)

    @property
    def adjusted_pvalue(self) -> float:
        """The smallest p-value times the number of tests (Bonferroni), at most 1."""
        pvalues = [p for d in self.dimensions for p in (d.ks_pvalue, d.ad_pvalue)]
        if self.radius_ks_pvalue is not None:
            pvalues.append(self.radius_ks_pvalue)
        return min(1.0, min(pvalues) * self.n_tests)

    @property
    def passed(self) -> bool:
        """Whether no test rejects N(0, I) at level ``alpha`` after adjustment."""
        return self.adjusted_pvalue >= self.alpha

    def summary(self) -> str:
        """Return one line: the verdict, the largest KS and AD statistics, the adjusted p."""
        worst_ks = max(self.dimensions, key=lambda d: d.ks_statistic)
        worst_ad = max(self.dimensions, key=lambda d: d.ad_statistic)
        verdict = "consistent with" if self.passed else "departs from"
        radius = ""
        if self.radius_ks_statistic is not None:
            radius = f", radius KS {self.radius_ks_statistic:.3f}"
        return (
            f"latent of {self.latent.shape[0]} rows {verdict} N(0, I): "
            f"max KS distance {worst_ks.ks_statistic:.3f} ({worst_ks.name}), "
            f"max AD {worst_ad.ad_statistic:.2f} ({worst_ad.name}){radius}. "
            f"Bonferroni-adjusted p = {self.adjusted_pvalue:.3g} over {self.n_tests} tests, "
            f"level {self.alpha:g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics as JSON-serialisable values, without the latent itself."""
        return {
            "n_rows": int(self.latent.shape[0]),
            "dimensions": [asdict(d) for d in self.dimensions],
            "radius_ks_statistic": self.radius_ks_statistic,
            "radius_ks_pvalue": self.radius_ks_pvalue,
            "n_tests": self.n_tests,
            "adjusted_pvalue": self.adjusted_pvalue,
            "alpha": self.alpha,
            "passed": self.passed,
            "summary": self.summary(),
        }


def latent_diagnostics(
    model: FlowDensity,
    data: Any,
    *,
    alpha: float = 0.01,
    ad_samples: int = 999,
    random_state: int = 0,
) -> LatentDiagnostics:
    """Map held-out ``data`` through the inverse flow and test the latent against N(0, I).

    Arguments:
        model: A fitted :class:`~flowfit.FlowDensity`.
        data: Rows the model was not fitted on, of shape (n_samples, n_features).
        alpha: The significance level of the overall verdict.
        ad_samples: Monte Carlo draws for the Anderson-Darling p-values. SciPy's
            tabulated p-values assume estimated mean and variance, but here both are
            fixed, so the null distribution is simulated. P-values are multiples of
            ``1 / (ad_samples + 1)``.
        random_state: Seeds the dequantisation noise and the Monte Carlo draws.

    Raises:
        DataError: The cases of :func:`to_latent`, and fewer than 8 rows.
        ValueError: ``alpha`` is not in (0, 1) or ``ad_samples`` is below 99.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}.")
    if ad_samples < 99:
        raise ValueError(f"ad_samples must be at least 99; got {ad_samples}.")
    latent = to_latent(model, data, random_state=random_state)
    if latent.shape[0] < 8:
        raise DataError(
            f"Latent tests need at least 8 held-out rows; got {latent.shape[0]}."
        )
    names = [column.name for column in modelled_columns(model)]
    rng = np.random.default_rng(random_state)
    dimensions = [
        _test_dimension(name, latent[:, i], ad_samples, rng) for i, name in enumerate(names)
    ]

    radius_statistic = radius_pvalue = None
    if latent.shape[1] > 1:
        squared_radius = np.sum(latent**2, axis=1)
        result = stats.kstest(squared_radius, stats.chi2(df=latent.shape[1]).cdf)
        radius_statistic, radius_pvalue = float(result.statistic), float(result.pvalue)
    return LatentDiagnostics(latent, dimensions, radius_statistic, radius_pvalue, alpha)


def _test_dimension(
    name: str, values: np.ndarray, ad_samples: int, rng: np.random.Generator
) -> DimensionTest:
    ks = stats.kstest(values, "norm")
    ad = stats.goodness_of_fit(
        stats.norm, values, known_params={"loc": 0.0, "scale": 1.0}, statistic="ad",
        n_mc_samples=ad_samples, rng=rng,
    )
    return DimensionTest(
        name=name,
        mean=float(values.mean()),
        std=float(values.std(ddof=1)),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        ad_statistic=float(ad.statistic),
        ad_pvalue=float(ad.pvalue),
    )
