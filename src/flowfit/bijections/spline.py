r"""Monotone rational-quadratic splines with linear tails.

The spline maps the interval :math:`[-B, B]` onto itself through :math:`K` bins, each a
ratio of two quadratics, and is the identity outside it, so its log-determinant is 0
there. Its inverse is exact: inside a bin it is the root of a quadratic.

References:
    Neural Spline Flows (Durkan et al., 2019), https://arxiv.org/abs/1906.04032
    Monotone rational-quadratic interpolation (Gregory and Delbourgo, 1982),
    IMA Journal of Numerical Analysis 2(2).
"""

from __future__ import annotations

__all__ = ["RationalQuadraticSpline", "rational_quadratic_spline"]

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfit.bijections.base import Bijection, register

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3

# softplus(DERIVATIVE_OFFSET) + MIN_DERIVATIVE == 1, so zero parameters give unit
# slopes at every knot and the spline starts as the identity.
DERIVATIVE_OFFSET = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _softmax(logits: Tensor) -> Tensor:
    # On CPU, torch.softmax over a last dimension as short as a spline's bins took about
    # 2.5 times as long, forward and backward, as these three operations. That was
    # measured with torch 2.13 on inputs of shape (512, 32, 8). Subtracting the maximum
    # keeps exp() finite, and since softmax does not depend on that shift, the maximum
    # needs no gradient.
    exp = torch.exp(logits - logits.detach().amax(dim=-1, keepdim=True))
    return exp / exp.sum(dim=-1, keepdim=True)


def _knot_positions(unnormalized: Tensor, bound: float, min_size: float) -> Tensor:
    """Return the :math:`K + 1` knot positions spanning ``[-bound, bound]``."""
    bins = unnormalized.shape[-1]
    sizes = min_size + (1.0 - min_size * bins) * _softmax(unnormalized)
    inner = 2.0 * bound * torch.cumsum(sizes[..., :-1], dim=-1) - bound
    # The ends are set exactly, because rounding in the cumulative sum can move them by
    # an ulp or two.
    return torch.cat([inner.new_full(inner.shape[:-1] + (1,), -bound),
                      inner,
                      inner.new_full(inner.shape[:-1] + (1,), bound)], dim=-1)


def _knots(unnormalized: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Return bin sizes and knot positions spanning ``[-bound, bound]``."""
    knots = _knot_positions(unnormalized, bound, min_size)
    return knots[..., 1:] - knots[..., :-1], knots


def _gather(values: Tensor, index: Tensor) -> Tensor:
    values = values.expand(index.shape[:-1] + values.shape[-1:])
    return values.gather(-1, index).squeeze(-1)


def _bin_slopes(derivatives: Tensor, index: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Return the slopes at the left and right knots of each value's bin, of shape (*)."""
    # The slope is 1 at both ends. The inner slopes are gathered unconstrained and
    # constrained afterwards, one value per element instead of K - 1.
    last_inner = derivatives.shape[-1] - 1
    raw_left = _gather(derivatives, (index - 1).clamp(min=0))
    raw_right = _gather(derivatives, index.clamp(max=last_inner))
    slope_left = MIN_DERIVATIVE + F.softplus(raw_left + DERIVATIVE_OFFSET)
    slope_right = MIN_DERIVATIVE + F.softplus(raw_right + DERIVATIVE_OFFSET)
    index = index.squeeze(-1)
    ones = torch.ones_like(slope_left)
    return (torch.where(index == 0, ones, slope_left),
            torch.where(index == bins - 1, ones, slope_right))


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    *,
    bound: float,
    inverse: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Apply a monotone rational-quadratic spline element-wise.

    Arguments:
        x: The inputs, of shape :math:`(*)`.
        widths: Unnormalised bin widths, of shape :math:`(*, K)` or broadcastable to it.
        heights: Unnormalised bin heights, of shape :math:`(*, K)`.
        derivatives: Unconstrained slopes at the :math:`K - 1` inner knots, of shape
            :math:`(*, K - 1)`; the slope at both ends is 1 to join the linear tails.
        bound: The half-width :math:`B` of the interval the spline acts on.
        inverse: Whether to apply the inverse map.

    Returns:
        The outputs, of shape :math:`(*)`, and the element-wise
        :math:`\log |\partial y / \partial x|` of the map applied, of shape :math:`(*)`.
    """
    inside = (x >= -bound) & (x <= bound)
    # Outside values take the identity branch. Replacing them by 0 before the spline
    # branch keeps that branch, and so the gradients of torch.where, finite.
    x_in = torch.where(inside, x, torch.zeros_like(x))

    knots_x = _knot_positions(widths, bound, MIN_BIN_WIDTH)
    knots_y = _knot_positions(heights, bound, MIN_BIN_HEIGHT)

    # Bin search by counting inner knots at or below each value: one broadcast
    # comparison, with no Python loop and no sort.
    search_knots = knots_y if inverse else knots_x
    index = (x_in[..., None] >= search_knots[..., 1:-1]).sum(-1, keepdim=True)

    # Everything else is gathered, or computed from what is gathered, so that only the
    # softmax and the cumulative sum work on K values per element. Each slice of a
    # (*, K) tensor would instead fill a zero tensor of that shape in the backward pass.
    x_k = _gather(knots_x, index)
    x_k1 = _gather(knots_x, index + 1)
    y_k = _gather(knots_y, index)
    y_k1 = _gather(knots_y, index + 1)
    w_k = x_k1 - x_k
    h_k = y_k1 - y_k
    d_k, d_k1 = _bin_slopes(derivatives, index, widths.shape[-1])
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2.0 * s_k

    # xi is the position in the bin, from 0 at the left knot to 1 at the right one, and
    # eta = 1 - xi. Both are computed from the nearer knot, because the log-det of a
    # steep bin depends on the smaller of the two with a large factor, and 1 - xi
    # computed by subtraction keeps only the absolute precision of xi.
    if inverse:
        # The bin maps xi to y - y_k = h (s xi^2 + d_k xi eta) / (s + c xi eta), with
        # c = d_k + d_k1 - 2 s, and by symmetry eta to y_k1 - y with d_k and d_k1
        # swapped. The root from the nearer knot uses 2c / (-b - sqrt(b^2 - 4ac)), which
        # avoids the cancellation of the textbook formula (Durkan et al., 2019, eq. 6-8).
        upper = 2.0 * (x_in - y_k) > h_k
        offset = torch.where(upper, y_k1 - x_in, x_in - y_k)
        near_slope = torch.where(upper, d_k1, d_k)
        a = h_k * (s_k - near_slope) + offset * curvature
        b = h_k * near_slope - offset * curvature
        c = -s_k * offset
        # The discriminant is positive in exact arithmetic, but rounding can make it
        # slightly negative. Clamping to the smallest normal number rather than 0 keeps
        # the gradient of the square root finite, so the clamp's zero gradient does not
        # meet an infinite one and give NaN.
        tiny = torch.finfo(offset.dtype).tiny
        discriminant = torch.clamp(b.square() - 4.0 * a * c, min=tiny)
        root = torch.clamp((2.0 * c) / (-b - torch.sqrt(discriminant)), 0.0, 1.0)
        xi = torch.where(upper, 1.0 - root, root)
        eta = torch.where(upper, root, 1.0 - root)
        out = torch.where(upper, x_k1 - root * w_k, x_k + root * w_k)
    else:
        xi = torch.clamp((x_in - x_k) / w_k, 0.0, 1.0)
        eta = torch.clamp((x_k1 - x_in) / w_k, 0.0, 1.0)
        numerator = h_k * (s_k * xi.square() + d_k * xi * eta)
        out = y_k + numerator / (s_k + curvature * xi * eta)

    # dy/dx = s^2 (d_k1 xi^2 + 2 s xi eta + d_k eta^2) / (s + c xi eta)^2. Taking the
    # log as log(...) + 2 (log s - log(s + c xi eta)) makes it exactly log(d_k) or
    # log(d_k1) at the knots, and so exactly 0 at both ends of the interval.
    xi_eta = xi * eta
    denominator = s_k + curvature * xi_eta
    slope_terms = d_k1 * xi.square() + 2.0 * s_k * xi_eta + d_k * eta.square()
    log_det = torch.log(slope_terms) + 2.0 * (torch.log(s_k) - torch.log(denominator))
    if inverse:
        log_det = -log_det

    out = torch.where(inside, out, x)
    log_det = torch.where(inside, log_det, torch.zeros_like(log_det))
    return out, log_det


@register
class RationalQuadraticSpline(Bijection):
    r"""Learnable element-wise monotone rational-quadratic spline with linear tails.

    Each feature has its own spline on :math:`[-B, B]` with :math:`K` bins, and the
    identity outside. At initialisation every spline is the identity.

    Arguments:
        features: The number of features :math:`D`.
        bins: The number of bins :math:`K`.
        bound: The half-width :math:`B` of the interval; values outside pass unchanged.
    """

    def __init__(self, features: int = 1, bins: int = 8, bound: float = 5.0) -> None:
        super().__init__(features)
        if bins < 2:
            raise ValueError(f"bins must be at least 2; got {bins}.")
        if not bound > 0:
            raise ValueError(f"bound must be positive; got {bound}.")
        self.bins = bins
        self.bound = float(bound)
        self.widths = nn.Parameter(torch.zeros(features, bins))
        self.heights = nn.Parameter(torch.zeros(features, bins))
        self.derivatives = nn.Parameter(torch.zeros(features, bins - 1))

    def _apply_spline(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        y, log_det = rational_quadratic_spline(
            x, self.widths, self.heights, self.derivatives, bound=self.bound, inverse=inverse
        )
        return y, log_det.sum(-1)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._apply_spline(x, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._apply_spline(y, inverse=True)

    def config(self) -> dict[str, Any]:
        return {"features": self.features, "bins": self.bins, "bound": self.bound}
