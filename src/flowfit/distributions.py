r"""Base densities and the normalizing flow as a :class:`torch.distributions.Distribution`.

A flow pairs a base density :math:`p_Z` with a bijection :math:`g` (base to data) and
evaluates the change of variables

.. math:: \log p_X(x) = \log p_Z(g^{-1}(x)) + \log |\det J_{g^{-1}}(x)|.
"""

from __future__ import annotations

__all__ = ["StandardNormal", "DiagonalNormal", "StudentT", "Flow", "base_from_spec"]

import math
from typing import Any

import torch
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints

from flowfit.bijections.base import Bijection
from flowfit.bijections.elementwise import FixedAffine

HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

# Quasi-Monte Carlo points per row that Flow.log_prob uses to integrate the density over
# a grid cell when no closed form applies. The estimate of the cell's mass is unbiased;
# its log carries a small downward bias that shrinks as this number grows.
CELL_POINTS = 256


def _log_normal_interval(lo: Tensor, hi: Tensor) -> Tensor:
    r"""Return :math:`\log(\Phi(hi) - \Phi(lo))` for :math:`lo \le hi`, stable in the tails."""
    # Reflect intervals in the right half so that both ends sit in the left tail, where
    # log_ndtr keeps full precision; then log(a - b) = log a + log1p(-b/a).
    flip = lo > 0
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


class StandardNormal(nn.Module):
    r"""The standard normal base :math:`N(0, I_D)`.

    Arguments:
        features: The dimension :math:`D`.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        # A buffer carries dtype and device, so sample() follows .double() and .to().
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """Return the log-density of ``z`` of shape :math:`(*, D)`, of shape :math:`(*)`."""
        return -0.5 * z.square().sum(-1) - self.features * HALF_LOG_TWO_PI

    def rsample(self, shape: Size, generator: torch.Generator | None = None) -> Tensor:
        """Draw samples of shape ``shape + (D,)``."""
        anchor = self._anchor
        return torch.randn(
            (*shape, self.features), dtype=anchor.dtype, device=anchor.device, generator=generator
        )

    def log_interval_prob(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Return the element-wise log-probability of the intervals ``[lo, hi]``."""
        return _log_normal_interval(lo, hi)

    def spec(self) -> dict[str, Any]:
        return {"type": "StandardNormal", "config": {"features": self.features}}


class DiagonalNormal(StandardNormal):
    r"""A normal base :math:`N(\mu, \mathrm{diag}(\sigma^2))` with learnable
    :math:`\mu` and :math:`\log \sigma`, initialised at the standard normal.

    Arguments:
        features: The dimension :math:`D`.
    """

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return super().log_prob(u) - self.log_scale.sum()

    def rsample(self, shape: Size, generator: torch.Generator | None = None) -> Tensor:
        return self.loc + torch.exp(self.log_scale) * super().rsample(shape, generator)

    def log_interval_prob(self, lo: Tensor, hi: Tensor) -> Tensor:
        inv_scale = torch.exp(-self.log_scale)
        return _log_normal_interval((lo - self.loc) * inv_scale, (hi - self.loc) * inv_scale)

    def spec(self) -> dict[str, Any]:
        return {"type": "DiagonalNormal", "config": {"features": self.features}}


class StudentT(StandardNormal):
    r"""Independent Student's t base with a learnable degrees of freedom per feature.

    .. math:: \log p(z) = \sum_i \log \Gamma(\tfrac{\nu_i + 1}{2})
        - \log \Gamma(\tfrac{\nu_i}{2}) - \tfrac12 \log(\nu_i \pi)
        - \tfrac{\nu_i + 1}{2} \log(1 + z_i^2 / \nu_i)

    Bijections with linear tails (affine maps, splines) keep the power-law tails of this
    base, so the fitted :math:`\nu_i` is the tail index of feature :math:`i`, which a
    normal base cannot express. :math:`\nu_i = 1 + e^{\eta_i}` stays above 1, so every
    feature keeps a finite mean; it starts at ``df``.

    Arguments:
        features: The dimension :math:`D`.
        df: The initial degrees of freedom, greater than 1.
    """

    def __init__(self, features: int, df: float = 30.0) -> None:
        super().__init__(features)
        if not df > 1:
            raise ValueError(f"df must be greater than 1; got {df}.")
        self.log_df_excess = nn.Parameter(torch.full((features,), math.log(df - 1.0)))

    @property
    def df(self) -> Tensor:
        """The degrees of freedom :math:`\nu`, of shape :math:`(D,)`."""
        return 1.0 + torch.exp(self.log_df_excess)

    def log_prob(self, z: Tensor) -> Tensor:
        df = self.df
        log_norm = (torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2)
                    - 0.5 * torch.log(df * math.pi))
        return (log_norm - (df + 1) / 2 * torch.log1p(z.square() / df)).sum(-1)

    def rsample(self, shape: Size, generator: torch.Generator | None = None) -> Tensor:
        # t = n / sqrt(g / df) with n ~ N(0, 1) and g ~ chi2(df); torch's chi-squared
        # sampler is reparameterised in df but takes no generator.
        # NOTE: so with a generator, only the normal part of each draw is reproducible.
        normal = super().rsample(shape, generator)
        chi2 = torch.distributions.Chi2(self.df).rsample(shape)
        return normal * torch.rsqrt(chi2 / self.df)

    def spec(self) -> dict[str, Any]:
        return {"type": "StudentT", "config": {"features": self.features}}


# The classes a model file may name as its base, by name only.
BASES: dict[str, type[StandardNormal]] = {
    "StandardNormal": StandardNormal,
    "DiagonalNormal": DiagonalNormal,
    "StudentT": StudentT,
}


def base_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a base density from its ``spec()``, by registered name only."""
    cls = BASES.get(spec.get("type")) if isinstance(spec, dict) else None
    if cls is None:
        raise ValueError(
            f"Unknown base distribution {spec!r}; known types: {', '.join(sorted(BASES))}."
        )
    return cls(**spec["config"])


class Flow(nn.Module, Distribution):
    r"""A normalizing flow: base density, bijection, and optional data conventions.

    The flow is both an :class:`~torch.nn.Module` (its parameters train with any torch
    optimizer) and a :class:`~torch.distributions.Distribution` with event shape
    :math:`(D,)`.

    Arguments:
        bijection: The map :math:`g` from base samples to data.
        base: The base density, :class:`StandardNormal` by default.
        context_scaler: A fixed affine map whose inverse standardises the context before
            it reaches the bijection. None leaves the context as given.
        grid: Per-feature steps of a grid the data were rounded to, of shape
            :math:`(D,)`, with 0 for continuous features; None if all are continuous.
            With a grid, :meth:`log_prob` returns the log of the probability of each
            rounded value's cell divided by the cell's volume, which is the probability
            mass itself for integer data, and :meth:`sample` rounds to the grid.

    Example:
        >>> from flowfit.bijections import Shift
        >>> flow = Flow(Shift(1))
        >>> flow.log_prob(torch.zeros(1))
        tensor(-0.9189, grad_fn=<AddBackward0>)
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        bijection: Bijection,
        base: StandardNormal | None = None,
        *,
        context_scaler: FixedAffine | None = None,
        grid: Tensor | None = None,
    ) -> None:
        nn.Module.__init__(self)
        features = bijection.features
        Distribution.__init__(self, Size(), Size((features,)), validate_args=False)
        base = StandardNormal(features) if base is None else base
        if base.features != features:
            raise ValueError(
                f"The base has {base.features} features but the bijection has {features}."
            )
        if context_scaler is not None and context_scaler.features != bijection.context:
            raise ValueError(
                f"The context scaler has {context_scaler.features} features but the "
                f"bijection takes a context of {bijection.context}."
            )
        self.bijection = bijection
        self.base = base
        self.context_scaler = context_scaler
        if grid is not None:
            grid = torch.as_tensor(grid, dtype=torch.get_default_dtype()).detach().clone()
            if grid.shape != (features,) or bool(torch.any(grid < 0)):
                raise ValueError(
                    f"grid must hold {features} non-negative steps; got {grid.tolist()}."
                )
            if not bool(torch.any(grid > 0)):
                grid = None
        self.register_buffer("grid", grid)

    @property
    def features(self) -> int:
        """The dimension :math:`D` of the data."""
        return self.bijection.features

    @property
    def context_features(self) -> int:
        """The dimension :math:`C` of the context, 0 if the flow is unconditional."""
        return self.bijection.context

    def _prepare_context(self, x: Tensor, context: Tensor | None) -> Tensor | None:
        if self.context_features == 0:
            if context is not None:
                raise ValueError("This flow is unconditional but was given a context.")
            return None
        if context is None:
            raise ValueError(
                f"This flow is conditional: pass a context of shape (*, {self.context_features})."
            )
        context = torch.as_tensor(context, dtype=x.dtype, device=x.device)
        if context.ndim == 0 or context.shape[-1] != self.context_features:
            raise ValueError(
                f"Expected a context of shape (*, {self.context_features}); "
                f"got {tuple(context.shape)}."
            )
        batch_shape = x.shape[:-1]
        try:
            broadcast = torch.broadcast_shapes(context.shape[:-1], batch_shape)
        except RuntimeError:
            broadcast = None
        if broadcast != batch_shape:
            raise ValueError(
                f"Expected a context of shape (*, {self.context_features}) whose batch shape "
                f"broadcasts to the data's {tuple(batch_shape)}; got {tuple(context.shape)}."
            )
        if self.context_scaler is not None:
            context = self.context_scaler.inverse(context)[0]
        return context.expand(*batch_shape, self.context_features)

    def log_density(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Return the continuous log-density :math:`\log p_X(x)`, ignoring any grid.

        Arguments:
            x: Data of shape :math:`(*, D)`.
            context: Context of shape :math:`(*, C)`, for a conditional flow.

        Returns:
            The log-densities, of shape :math:`(*)`.
        """
        context = self._prepare_context(x, context)
        z, log_det = self.bijection.inverse(x, context)
        return self.base.log_prob(z) + log_det

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Return :math:`\log p(x)` of data of shape :math:`(*, D)`, of shape :math:`(*)`.

        Without a grid this is :meth:`log_density`. With one, the density is integrated
        over each value's grid cell: exactly through the base's distribution function
        for one feature, and with :data:`CELL_POINTS` quasi-Monte Carlo points otherwise.
        """
        if self.grid is None:
            return self.log_density(x, context)
        step = self.grid.to(x.dtype)
        if self.features == 1 and hasattr(self.base, "log_interval_prob"):
            context = self._prepare_context(x, context)
            z_lo, _ = self.bijection.inverse(x - step / 2, context)
            z_hi, _ = self.bijection.inverse(x + step / 2, context)
            lo, hi = torch.minimum(z_lo, z_hi), torch.maximum(z_lo, z_hi)
            return self.base.log_interval_prob(lo, hi).squeeze(-1) - torch.log(step).sum()
        return self._log_prob_cells(x, context, step)

    def _log_prob_cells(self, x: Tensor, context: Tensor | None, step: Tensor) -> Tensor:
        engine = torch.quasirandom.SobolEngine(self.features, scramble=True, seed=0)
        offsets = (engine.draw(CELL_POINTS, dtype=x.dtype).to(x.device) - 0.5) * step
        points = x.unsqueeze(-2) + offsets  # (*, K, D)
        if context is not None:
            context = torch.as_tensor(context, dtype=x.dtype, device=x.device)
            context = context.expand(*x.shape[:-1], context.shape[-1]).unsqueeze(-2)
            context = context.expand(*points.shape[:-1], context.shape[-1])
        log_density = self.log_density(points, context)
        return torch.logsumexp(log_density, dim=-1) - math.log(CELL_POINTS)

    def rsample(
        self, sample_shape: Size | tuple[int, ...] | int = Size(), context: Tensor | None = None
    ) -> Tensor:
        r"""Draw reparameterised samples.

        Arguments:
            sample_shape: The leading shape :math:`S` of the samples; an integer
                :math:`n` means :math:`(n,)`.
            context: None, or a context of shape :math:`(M, C)` or :math:`(C,)`.

        Returns:
            Samples of shape :math:`(*S, D)`, or :math:`(*S, M, D)` for a batch of
            :math:`M` contexts: every context gets :math:`S` samples, in one batched call.
        """
        shape = Size([sample_shape]) if isinstance(sample_shape, int) else Size(sample_shape)
        if context is not None:
            context = torch.as_tensor(context, dtype=self.base._anchor.dtype)
            shape = shape + context.shape[:-1]
        z = self.base.rsample(shape)
        context = self._prepare_context(z, context)
        x, _ = self.bijection(z, context)
        if self.grid is not None:
            x = self._round_to_grid(x)
        return x

    def sample(
        self, sample_shape: Size | tuple[int, ...] | int = Size(), context: Tensor | None = None
    ) -> Tensor:
        """Draw samples without gradients; see :meth:`rsample` for the shapes."""
        with torch.no_grad():
            return self.rsample(sample_shape, context)

    def _round_to_grid(self, x: Tensor) -> Tensor:
        step = self.grid.to(x.dtype)
        rounded = torch.round(x / torch.where(step > 0, step, 1.0)) * step
        return torch.where(step > 0, rounded, x)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Return :meth:`log_prob`, so that ``flow(x)`` works like other modules."""
        return self.log_prob(x, context)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)
