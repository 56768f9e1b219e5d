r"""Fixed maps from the real line onto a support: positive data and data on an interval.

Each is placed last in the generative chain, so the flow models an unconstrained
variable and the log-density of the data includes the map's Jacobian.
"""

from __future__ import annotations

__all__ = ["Exp", "Softplus", "Sigmoid"]

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flowfit.bijections.base import Bijection, register


@register
class Exp(Bijection):
    r"""Map :math:`x = e^{z}` onto :math:`(0, \infty)`; :math:`\log|\det J| = \sum_i z_i`."""

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return torch.exp(x), x.sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        log_y = torch.log(y)
        return log_y, -log_y.sum(-1)

    def config(self) -> dict[str, Any]:
        return {"features": self.features}


@register
class Softplus(Bijection):
    r"""Map :math:`x = \log(1 + e^{z})` onto :math:`(0, \infty)`.

    Unlike :class:`Exp` it is close to the identity for large values, so it leaves the
    right tail of the data nearly linear in :math:`z`.
    """

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # d softplus(z) / dz = sigmoid(z), so log|J| = logsigmoid(z).
        return F.softplus(x), F.logsigmoid(x).sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # softplus^{-1}(y) = log(expm1(y)) = y + log(1 - exp(-y)), stable for large y.
        x = y + torch.log(-torch.expm1(-y))
        return x, -F.logsigmoid(x).sum(-1)

    def config(self) -> dict[str, Any]:
        return {"features": self.features}


@register
class Sigmoid(Bijection):
    r"""Map :math:`x = a + (b - a)\,\sigma(z)` onto the open interval :math:`(a, b)`.

    Arguments:
        features: The number of features :math:`D`.
        low: The lower bounds :math:`a`, one per feature (a float applies to all).
        high: The upper bounds :math:`b`, each greater than its lower bound.
    """

    def __init__(
        self, features: int = 1, low: float | list[float] = 0.0, high: float | list[float] = 1.0
    ) -> None:
        super().__init__(features)
        dtype = torch.get_default_dtype()
        low_t = torch.as_tensor(low, dtype=dtype).expand(features).clone()
        high_t = torch.as_tensor(high, dtype=dtype).expand(features).clone()
        if not bool(torch.all(high_t > low_t)):
            raise ValueError(
                f"Each upper bound must exceed its lower bound; got low={low_t.tolist()}, "
                f"high={high_t.tolist()}."
            )
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        width = self.high - self.low
        y = self.low + width * torch.sigmoid(x)
        log_det = torch.log(width) + F.logsigmoid(x) + F.logsigmoid(-x)
        return y, log_det.sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        width = self.high - self.low
        # log(u) - log(1 - u) for u = (y - a) / (b - a), written with both distances to
        # the bounds so that values near either end keep their precision.
        log_lower = torch.log(y - self.low)
        log_upper = torch.log(self.high - y)
        log_det = torch.log(width) - log_lower - log_upper
        return log_lower - log_upper, log_det.sum(-1)

    def config(self) -> dict[str, Any]:
        return {"features": self.features, "low": self.low.tolist(), "high": self.high.tolist()}
