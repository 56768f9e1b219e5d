r"""Element-wise affine maps: a learnable shift, a learnable affine map and a fixed one."""

from __future__ import annotations

__all__ = ["Shift", "Affine", "FixedAffine"]

from typing import Any

import torch
from torch import Tensor, nn

from flowfit.bijections.base import Bijection, register


@register
class Shift(Bijection):
    r"""Learnable translation :math:`x = z + \mu`, with :math:`\log|\det J| = 0`.

    With a standard normal base this is the model :math:`x \sim N(\mu, 1)`, whose
    maximum-likelihood :math:`\mu` is the sample mean.

    Arguments:
        features: The number of features :math:`D`; :math:`\mu` has shape :math:`(D,)`.
    """

    def __init__(self, features: int = 1) -> None:
        super().__init__(features)
        self.shift = nn.Parameter(torch.zeros(features))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x + self.shift, x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y - self.shift, y.new_zeros(y.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"features": self.features}


@register
class Affine(Bijection):
    r"""Learnable affine map :math:`x = \mu + \sigma z` with :math:`\sigma = e^{s} > 0`.

    :math:`\log|\det J| = \sum_i s_i`. With a standard normal base, maximum likelihood
    gives the sample mean and the biased sample standard deviation.

    Arguments:
        features: The number of features :math:`D`.
    """

    def __init__(self, features: int = 1) -> None:
        super().__init__(features)
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = self.shift + torch.exp(self.log_scale) * x
        return y, self.log_scale.sum().expand(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = (y - self.shift) * torch.exp(-self.log_scale)
        return x, -self.log_scale.sum().expand(y.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"features": self.features}


@register
class FixedAffine(Bijection):
    r"""Affine map :math:`x = \text{loc} + \text{scale} \cdot u` with constants, not parameters.

    This is how standardisation enters a model: placed last in the generative chain, it
    maps standardised values back to the data's units, and its log-determinant
    :math:`\sum_i \log \text{scale}_i` keeps log-densities in those units.

    Arguments:
        features: The number of features :math:`D`.
        loc: The offsets, of shape :math:`(D,)`; zeros by default.
        scale: The positive scales, of shape :math:`(D,)`; ones by default.
    """

    def __init__(
        self, features: int, loc: Tensor | None = None, scale: Tensor | None = None
    ) -> None:
        super().__init__(features)
        loc = torch.zeros(features) if loc is None else torch.as_tensor(loc).detach().clone()
        scale = torch.ones(features) if scale is None else torch.as_tensor(scale).detach().clone()
        if loc.shape != (features,) or scale.shape != (features,):
            raise ValueError(
                f"loc and scale must have shape ({features},); "
                f"got {tuple(loc.shape)} and {tuple(scale.shape)}."
            )
        if not bool(torch.all(scale > 0)) or not bool(torch.all(torch.isfinite(scale))):
            raise ValueError(f"scale must be positive and finite; got {scale.tolist()}.")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    @classmethod
    def from_data(cls, x: Tensor) -> FixedAffine:
        """Build the map whose inverse standardises ``x`` of shape :math:`(N, D)`."""
        loc = x.mean(0)
        scale = x.std(0, correction=0)
        return cls(x.shape[-1], loc, scale)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        log_scale = torch.log(self.scale).sum()
        return self.loc + self.scale * x, log_scale.expand(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        log_scale = torch.log(self.scale).sum()
        return (y - self.loc) / self.scale, -log_scale.expand(y.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"features": self.features}
