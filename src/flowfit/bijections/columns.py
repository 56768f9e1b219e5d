r"""A per-column map from the real line onto each column's support.

:class:`ColumnwiseSupport` is the last step of the generative chain that
:mod:`flowfit.preprocessing` builds, so a flow can model columns of different kinds at
once: unbounded, bounded below, bounded above or on an interval. For column :math:`i`
with bounds :math:`a_i` and :math:`b_i` (either may be infinite):

.. math::

    x_i = \begin{cases}
        z_i & a_i = -\infty,\ b_i = \infty \\
        a_i + e^{z_i} & a_i > -\infty,\ b_i = \infty \\
        b_i - e^{-z_i} & a_i = -\infty,\ b_i < \infty \\
        a_i + (b_i - a_i)\,\sigma(z_i) & \text{both finite,}
    \end{cases}

so the inverse is the identity, :math:`\log(x - a)`, :math:`-\log(b - x)` or the
logit of :math:`(x - a) / (b - a)`, and the log-determinant is the sum of the
element-wise log-derivatives.
"""

from __future__ import annotations

__all__ = ["ColumnwiseSupport"]

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flowfit.bijections.base import Bijection, register


def _bounds_tensor(values: float | Sequence[float | None] | None, features: int,
                   default: float, name: str) -> Tensor:
    """Return one bound per feature as a tensor; None entries mean ``default`` (an infinity)."""
    if values is None:
        values = [default] * features
    elif isinstance(values, int | float):
        values = [float(values)] * features
    values = [default if v is None else float(v) for v in values]
    if len(values) != features:
        raise ValueError(f"{name} needs {features} entries, one per feature; got {values}.")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{name} must not contain NaN; got {values}.")
    return torch.tensor(values, dtype=torch.get_default_dtype())


@register
class ColumnwiseSupport(Bijection):
    r"""Map each feature from the real line onto its own support :math:`(a_i, b_i)`.

    An infinite bound leaves that side open, so ``low=[-inf, 0.0]`` and
    ``high=[inf, inf]`` keep the first feature on the real line and send the second
    through :math:`x = e^{z}`. The module docstring lists the four maps.

    :meth:`inverse` of a value outside its open interval returns NaN, because the
    logarithm of a negative distance is undefined. A value exactly on a finite bound
    is treated as lying the smallest positive normal number inside it, so that a
    dequantised cell that touches the bound gives a finite, very negative
    :math:`z_i`. The bounds are buffers that follow ``.to()``, and :meth:`config`
    stores them.

    Arguments:
        features: The number of features :math:`D`.
        low: The lower bounds :math:`a_i`, a float for all features or one entry per
            feature. None or ``-inf`` means no lower bound; None everywhere by default.
        high: The upper bounds :math:`b_i`, in the same forms. Each finite pair needs
            :math:`a_i < b_i`.

    Example:
        >>> bijection = ColumnwiseSupport(3, low=[None, 0.0, 0.0], high=[None, None, 1.0])
        >>> x, log_det = bijection(torch.zeros(1, 3))
        >>> x
        tensor([[0.0000, 1.0000, 0.5000]])
    """

    def __init__(
        self,
        features: int,
        low: float | Sequence[float | None] | None = None,
        high: float | Sequence[float | None] | None = None,
    ) -> None:
        super().__init__(features)
        low_t = _bounds_tensor(low, features, -math.inf, "low")
        high_t = _bounds_tensor(high, features, math.inf, "high")
        if bool(torch.any(low_t == math.inf)) or bool(torch.any(high_t == -math.inf)):
            raise ValueError(
                f"A lower bound cannot be +inf nor an upper bound -inf; got "
                f"low={low_t.tolist()}, high={high_t.tolist()}."
            )
        if not bool(torch.all(high_t > low_t)):
            raise ValueError(
                f"Each upper bound must exceed its lower bound; got low={low_t.tolist()}, "
                f"high={high_t.tolist()}."
            )
        # The bounds travel in config(), where None stands for an infinite bound, and
        # not in the state dict, because model files reject non-finite tensors.
        self.register_buffer("low", low_t, persistent=False)
        self.register_buffer("high", high_t, persistent=False)

    def _masks(self) -> tuple[Tensor, Tensor, Tensor]:
        has_low = torch.isfinite(self.low)
        has_high = torch.isfinite(self.high)
        return has_low & ~has_high, ~has_low & has_high, has_low & has_high

    def _safe_bounds(self) -> tuple[Tensor, Tensor]:
        # Infinite bounds are replaced by finite stand-ins, so the branches that
        # torch.where discards still compute finite values and finite gradients.
        low = torch.where(torch.isfinite(self.low), self.low, torch.zeros_like(self.low))
        high = torch.where(torch.isfinite(self.high), self.high, torch.ones_like(self.high))
        return low, high

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        lower, upper, interval = self._masks()
        low, high = self._safe_bounds()
        width = torch.where(interval, high - low, torch.ones_like(high))

        # Each branch gets the input only where it applies, and 0 elsewhere.
        z_lower = torch.where(lower, x, torch.zeros_like(x))
        z_upper = torch.where(upper, x, torch.zeros_like(x))
        z_interval = torch.where(interval, x, torch.zeros_like(x))

        y = x
        y = torch.where(lower, low + torch.exp(z_lower), y)
        y = torch.where(upper, high - torch.exp(-z_upper), y)
        y = torch.where(interval, low + width * torch.sigmoid(z_interval), y)

        log_det = torch.zeros_like(x)
        log_det = torch.where(lower, z_lower, log_det)
        log_det = torch.where(upper, -z_upper, log_det)
        interval_log_det = (
            torch.log(width) + F.logsigmoid(z_interval) + F.logsigmoid(-z_interval)
        )
        log_det = torch.where(interval, interval_log_det, log_det)
        return y, log_det.sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        lower, upper, interval = self._masks()
        low, high = self._safe_bounds()
        width = torch.where(interval, high - low, torch.ones_like(high))
        ones = torch.ones_like(y)

        log_above = torch.log(_nudge(torch.where(lower | interval, y - low, ones)))
        log_below = torch.log(_nudge(torch.where(upper | interval, high - y, ones)))

        z = y
        z = torch.where(lower, log_above, z)
        z = torch.where(upper, -log_below, z)
        # The logit written with both distances to the bounds keeps values near either
        # end precise.
        z = torch.where(interval, log_above - log_below, z)

        log_det = torch.zeros_like(y)
        log_det = torch.where(lower, -log_above, log_det)
        log_det = torch.where(upper, -log_below, log_det)
        log_det = torch.where(interval, torch.log(width) - log_above - log_below, log_det)
        return z, log_det.sum(-1)

    def config(self) -> dict[str, Any]:
        # JSON has no infinities, so an absent bound is written as None.
        return {
            "features": self.features,
            "low": [v if math.isfinite(v) else None for v in self.low.tolist()],
            "high": [v if math.isfinite(v) else None for v in self.high.tolist()],
        }


def _nudge(distance: Tensor) -> Tensor:
    """Replace exact zeros by the smallest positive normal number of the dtype."""
    tiny = torch.finfo(distance.dtype).tiny
    return torch.where(distance == 0, torch.full_like(distance, tiny), distance)
