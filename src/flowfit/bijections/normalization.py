r"""Activation normalisation: a per-feature affine map initialised from the data.

References:
    Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma and Dhariwal, 2018),
    https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

__all__ = ["ActNorm"]

import math
from typing import Any

import torch
from torch import Tensor, nn

from flowfit.bijections.base import Bijection, register

# Floor on the standard deviation used for initialisation, so that a constant feature
# gives a finite log-scale instead of log(0).
MIN_INIT_STD = 1e-6


@register
class ActNorm(Bijection):
    r"""Per-feature affine map :math:`x = \mu + e^{s} z` with data-dependent initialisation.

    The first :meth:`inverse` call in training mode with at least 2 rows of data sets
    :math:`\mu` to the mean and :math:`e^{s}` to the standard deviation of each feature
    of that batch, so the layer's output starts standardised; :meth:`initialize` does the
    same on demand. The ``initialized`` buffer records that this happened and is saved in
    the state dict, so a reloaded model is not initialised again. Before initialisation
    the layer is the identity. :meth:`forward` maps base samples, so it never initialises.

    Arguments:
        features: The number of features :math:`D`.
    """

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        r"""Set :math:`\mu` and :math:`s` from data ``x`` of shape :math:`(*, D)`.

        Raises ValueError if ``x`` has fewer than 2 rows.
        """
        rows = x.detach().reshape(-1, self.features)
        if rows.shape[0] < 2:
            raise ValueError(f"ActNorm needs at least 2 rows to initialise; got {rows.shape[0]}.")
        std = rows.std(0, correction=0).clamp_min(MIN_INIT_STD)
        self.loc.copy_(rows.mean(0))
        self.log_scale.copy_(torch.log(std))
        self.initialized.fill_(True)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = self.loc + torch.exp(self.log_scale) * x
        return y, self.log_scale.sum().expand(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized) and math.prod(y.shape[:-1]) >= 2:
            self.initialize(y)
        x = (y - self.loc) * torch.exp(-self.log_scale)
        return x, -self.log_scale.sum().expand(y.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"features": self.features}
