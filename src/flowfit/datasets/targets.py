r"""Target densities with exact log-densities and samplers, for tests and benchmarks.

Each target has ``features`` (its dimension :math:`D`), ``log_prob(x)`` for ``x`` of
shape :math:`(*, D)` returning the exact normalised log-density of shape :math:`(*)`,
and ``sample(n, generator=None)`` returning :math:`n` independent draws of shape
:math:`(n, D)` in the default dtype. ``log_prob`` returns :math:`-\infty` outside the
support. With a known :math:`\log p`, the fit of a model :math:`q` can be scored by the
Monte Carlo estimate of :math:`\mathrm{KL}(p \,\|\, q) = E_p[\log p - \log q]`.

:data:`TARGETS` builds each target with its default parameters by name.
"""

from __future__ import annotations

__all__ = [
    "TARGETS",
    "BananaTarget",
    "BimodalTarget",
    "CheckerboardTarget",
    "FunnelTarget",
    "GaussianMixtureTarget",
    "LogNormalTarget",
    "NormalTarget",
    "RingTarget",
    "StudentTTarget",
    "Target",
]

import functools
import math
from collections.abc import Callable

import scipy.special
import torch
from torch import Tensor

HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _normal_log_prob(x: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    scale = torch.as_tensor(scale, dtype=x.dtype)
    return -0.5 * ((x - loc) / scale).square() - torch.log(scale) - HALF_LOG_TWO_PI


def _randn(n: int, d: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, d, generator=generator, dtype=torch.get_default_dtype())


def _rand(n: int, d: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, d, generator=generator, dtype=torch.get_default_dtype())


class Target:
    """Base class of the targets: a dimension, an exact log-density and a sampler."""

    features: int = 1

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Return the exact log-density of ``x`` of shape :math:`(*, D)`, of shape :math:`(*)`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement log_prob.")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` independent samples, of shape :math:`(n, D)`, in the default dtype."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample.")

    def _check(self, x: Tensor) -> None:
        if x.ndim == 0 or x.shape[-1] != self.features:
            raise ValueError(
                f"Expected input of shape (*, {self.features}); got {tuple(x.shape)}."
            )


class NormalTarget(Target):
    r"""The normal density :math:`N(\mu, \sigma^2)` in one dimension.

    By default :math:`\mu = 2` and :math:`\sigma = 1`.
    """

    def __init__(self, loc: float = 2.0, scale: float = 1.0) -> None:
        self.loc = loc
        self.scale = scale

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        return _normal_log_prob(x[..., 0], self.loc, self.scale)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.loc + self.scale * _randn(n, 1, generator)


class BimodalTarget(Target):
    r"""A two-component normal mixture in one dimension.

    By default :math:`0.4\,N(-2, 0.5^2) + 0.6\,N(1.5, 1)`: two modes of unequal weight and
    width.
    """

    def __init__(
        self,
        weights: tuple[float, float] = (0.4, 0.6),
        locs: tuple[float, float] = (-2.0, 1.5),
        scales: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        if not math.isclose(sum(weights), 1.0) or min(weights) <= 0:
            raise ValueError(f"weights must be positive and sum to 1; got {weights}.")
        self.weights = weights
        self.locs = locs
        self.scales = scales

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        parts = [
            math.log(w) + _normal_log_prob(x[..., 0], m, s)
            for w, m, s in zip(self.weights, self.locs, self.scales)
        ]
        return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        second = _rand(n, 1, generator) >= self.weights[0]
        noise = _randn(n, 1, generator)
        loc = torch.where(second, self.locs[1], self.locs[0])
        scale = torch.where(second, self.scales[1], self.scales[0])
        return loc + scale * noise


class LogNormalTarget(Target):
    r"""The log-normal density: :math:`\log x \sim N(\mu, \sigma^2)`.

    By default :math:`\mu = 0` and :math:`\sigma = 1`.
    """

    def __init__(self, mu: float = 0.0, sigma: float = 1.0) -> None:
        self.mu = mu
        self.sigma = sigma

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        x = x[..., 0]
        positive = x > 0
        safe = torch.where(positive, x, torch.ones_like(x))
        log_x = torch.log(safe)
        log_p = _normal_log_prob(log_x, self.mu, self.sigma) - log_x
        return torch.where(positive, log_p, torch.full_like(log_p, -math.inf))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.exp(self.mu + self.sigma * _randn(n, 1, generator))


class StudentTTarget(Target):
    r"""Student's t density with :math:`\nu` degrees of freedom, centred and unscaled.

    By default :math:`\nu = 3`.
    """

    def __init__(self, df: float = 3.0) -> None:
        if not df > 0:
            raise ValueError(f"df must be positive; got {df}.")
        self.df = df

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        nu = self.df
        log_norm = (
            math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        )
        return log_norm - (nu + 1) / 2 * torch.log1p(x[..., 0].square() / nu)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        # Inverse-CDF sampling. The quantile is taken of the lower-tail probability of
        # -|z| and the sign restored, because ndtr(z) rounds to 1 for z above about 8.
        z = _randn(n, 1, generator)
        lower = torch.special.ndtr(-z.abs()).double().numpy()
        magnitude = -torch.from_numpy(scipy.special.stdtrit(self.df, lower))
        return (torch.sign(z) * magnitude.to(z.dtype)).reshape(n, 1)


class FunnelTarget(Target):
    r"""Neal's funnel in :math:`D` dimensions.

    :math:`v \sim N(0, \sigma^2)` is the first coordinate and the other :math:`D - 1` are
    independent given it, :math:`x_i \mid v \sim N(0, e^{v})`. By default :math:`D = 2`
    and :math:`\sigma = 3`, as in Neal (2003), "Slice sampling", Annals of Statistics
    31(3).
    """

    def __init__(self, features: int = 2, scale: float = 3.0) -> None:
        if features < 2:
            raise ValueError(f"The funnel needs at least 2 features; got {features}.")
        self.features = features
        self.scale = scale

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        v = x[..., :1]
        log_p_v = _normal_log_prob(v[..., 0], 0.0, self.scale)
        log_p_rest = -0.5 * x[..., 1:].square() * torch.exp(-v) - 0.5 * v - HALF_LOG_TWO_PI
        return log_p_v + log_p_rest.sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        v = self.scale * _randn(n, 1, generator)
        rest = torch.exp(0.5 * v) * _randn(n, self.features - 1, generator)
        return torch.cat([v, rest], dim=-1)


class RingTarget(Target):
    r"""A ring of equal-weight isotropic normals in two dimensions.

    Component :math:`k` of :math:`K` has mean :math:`r(\cos 2\pi k / K, \sin 2\pi k / K)`
    and covariance :math:`s^2 I`. By default :math:`K = 8`, :math:`r = 2` and
    :math:`s = 0.2`.
    """

    features = 2

    def __init__(self, components: int = 8, radius: float = 2.0, std: float = 0.2) -> None:
        self.components = components
        self.radius = radius
        self.std = std

    def _means(self, dtype: torch.dtype) -> Tensor:
        angles = 2.0 * math.pi * torch.arange(self.components, dtype=dtype) / self.components
        return self.radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        means = self._means(x.dtype)
        per_component = _normal_log_prob(x[..., None, :], means, self.std).sum(-1)
        return torch.logsumexp(per_component, dim=-1) - math.log(self.components)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        dtype = torch.get_default_dtype()
        index = torch.randint(self.components, (n,), generator=generator)
        return self._means(dtype)[index] + self.std * _randn(n, 2, generator)


class CheckerboardTarget(Target):
    r"""The uniform density on the dark squares of a 4 by 4 checkerboard on :math:`[-2, 2]^2`.

    The squares have unit side, and square :math:`(i, j) = (\lfloor x_1 \rfloor,
    \lfloor x_2 \rfloor)` is dark when :math:`i + j` is even. The 8 dark squares have
    total area 8, so the density is :math:`1/8` on them and 0 elsewhere.
    """

    features = 2

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        inside = torch.all((x >= -2.0) & (x < 2.0), dim=-1)
        cells = torch.floor(x).long().sum(-1)
        dark = inside & (cells % 2 == 0)
        log_p = torch.full(x.shape[:-1], -math.log(8.0), dtype=x.dtype)
        return torch.where(dark, log_p, torch.full_like(log_p, -math.inf))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = _rand(n, 2, generator)
        column = torch.randint(4, (n,), generator=generator) - 2
        # Of the 4 rows, the 2 dark ones in this column have the column's parity.
        row = 2 * torch.randint(2, (n,), generator=generator) - 2 + (column % 2)
        corner = torch.stack([column, row], dim=-1).to(u.dtype)
        return corner + u


class BananaTarget(Target):
    r"""A curved two-dimensional density.

    :math:`x_1 \sim N(0, 1)` and :math:`x_2 \mid x_1 \sim N(b (x_1^2 - 1), s^2)`, so both
    coordinates have mean 0. By default the curvature is :math:`b = 1` and :math:`s = 0.5`.
    """

    features = 2

    def __init__(self, curvature: float = 1.0, std: float = 0.5) -> None:
        self.curvature = curvature
        self.std = std

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        x1, x2 = x[..., 0], x[..., 1]
        centre = self.curvature * (x1.square() - 1.0)
        return _normal_log_prob(x1, 0.0, 1.0) + _normal_log_prob(x2, centre, self.std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        noise = _randn(n, 2, generator)
        x1 = noise[:, 0]
        x2 = self.curvature * (x1.square() - 1.0) + self.std * noise[:, 1]
        return torch.stack([x1, x2], dim=-1)


class GaussianMixtureTarget(Target):
    r"""An equal-weight mixture of :math:`K` normals with full covariances in :math:`D` dimensions.

    The parameters are drawn once from a generator seeded with ``seed``: component means
    :math:`\mu_k \sim N(0, s^2 I)` with :math:`s` = ``spread``, and covariances
    :math:`\Sigma_k = A_k A_k^\top / D + 0.1 I` with standard normal entries in
    :math:`A_k`, so every component is correlated and none is degenerate. By default
    :math:`D = 10`, :math:`K = 5`, :math:`s = 2` and seed 0.
    """

    def __init__(
        self, features: int = 10, components: int = 5, spread: float = 2.0, seed: int = 0
    ) -> None:
        if features < 1 or components < 1:
            raise ValueError(
                f"features and components must be positive; got {features} and {components}."
            )
        self.features = features
        self.components = components
        self.spread = spread
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        shape = (components, features)
        self.means = spread * torch.randn(shape, generator=generator, dtype=torch.float64)
        factors = torch.randn(
            (components, features, features), generator=generator, dtype=torch.float64
        )
        identity = torch.eye(features, dtype=torch.float64)
        covariances = factors @ factors.transpose(-1, -2) / features + 0.1 * identity
        self.cholesky = torch.linalg.cholesky(covariances)

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        # The density is evaluated in float64 and returned in the input's dtype.
        diff = x.double()[..., None, :] - self.means  # (*, K, D)
        solved = torch.linalg.solve_triangular(
            self.cholesky, diff.unsqueeze(-1), upper=False
        ).squeeze(-1)
        log_det = torch.log(torch.diagonal(self.cholesky, dim1=-2, dim2=-1)).sum(-1)
        per_component = (
            -0.5 * solved.square().sum(-1) - log_det - self.features * HALF_LOG_TWO_PI
        )
        log_p = torch.logsumexp(per_component, dim=-1) - math.log(self.components)
        return log_p.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        index = torch.randint(self.components, (n,), generator=generator)
        noise = torch.randn(n, self.features, generator=generator, dtype=torch.float64)
        draws = self.means[index] + (self.cholesky[index] @ noise.unsqueeze(-1)).squeeze(-1)
        return draws.to(torch.get_default_dtype())


TARGETS: dict[str, Callable[[], Target]] = {
    "normal": NormalTarget,
    "bimodal": BimodalTarget,
    "lognormal": LogNormalTarget,
    "student-t": StudentTTarget,
    "funnel": FunnelTarget,
    "ring": RingTarget,
    "checkerboard": CheckerboardTarget,
    "banana": BananaTarget,
    "mixture-10d": GaussianMixtureTarget,
    "funnel-16d": functools.partial(FunnelTarget, features=16),
}
