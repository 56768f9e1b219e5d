r"""Coupling layers: transform some features given the others, in one pass each way.

A mask splits the features into a conditioning part :math:`x_A`, passed through
unchanged, and a transformed part :math:`x_B`. The normalising direction (data to base)
is

.. math:: z_A = x_A, \qquad z_B = \tau(x_B; h(x_A, c)),

with :math:`h` an MLP, so :math:`\log|\det J| = \sum_{i \in B} \log|\tau'(x_i)|`, and
the generative direction applies :math:`\tau^{-1}` with the same parameters.

References:
    Density estimation using Real NVP (Dinh et al., 2016), https://arxiv.org/abs/1605.08803

    Neural Spline Flows (Durkan et al., 2019), https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

__all__ = ["Coupling"]

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowfit.bijections.autoregressive import make_transformer
from flowfit.bijections.base import Bijection, register
from flowfit.nn import MLP


@register
class Coupling(Bijection):
    r"""Coupling layer with an affine (RealNVP) or rational-quadratic spline transformer.

    Arguments:
        features: The number of features :math:`D`.
        context: The size :math:`C` of the context, or 0.
        mask: One boolean per feature, True for the features that are transformed.
            Defaults to the second half, ``i >= D // 2``, which is the single feature
            when :math:`D = 1`. The network then takes only the context as input, or is
            a learned constant without one.
        transformer: ``"affine"`` or ``"spline"``, as in
            :class:`~flowfit.bijections.autoregressive.MaskedAutoregressive`.
        bins: The number of spline bins; used by ``"spline"`` only.
        bound: The half-width of the spline interval; used by ``"spline"`` only.
        hidden: The widths of the MLP's hidden layers.
        activation: The MLP's activation, a key of :data:`flowfit.nn.ACTIVATIONS`.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        mask: Sequence[bool] | None = None,
        transformer: str = "affine",
        bins: int = 8,
        bound: float = 5.0,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__(features, context)
        if mask is None:
            mask = [i >= features // 2 for i in range(features)]
        mask = [bool(m) for m in mask]
        if len(mask) != features or not any(mask):
            raise ValueError(
                f"mask must hold {features} booleans with at least one True; got {mask}."
            )
        self.mask = mask
        self.transformer_name = transformer
        self.transformer = make_transformer(transformer, bins, bound)
        self.bins = bins
        self.bound = float(bound)
        self.hidden = [int(h) for h in hidden]
        self.activation = activation

        mask_t = torch.tensor(mask)
        identity_index = torch.nonzero(~mask_t).flatten()
        transformed_index = torch.nonzero(mask_t).flatten()
        self.register_buffer("identity_index", identity_index, persistent=False)
        self.register_buffer("transformed_index", transformed_index, persistent=False)
        transformed = int(mask_t.sum())
        self.conditioner = MLP(
            features - transformed + context,
            transformed * self.transformer.num_params,
            hidden=self.hidden,
            activation=activation,
        )

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        inputs = x.index_select(-1, self.identity_index)
        if context is not None:
            inputs = torch.cat([inputs, context], dim=-1)
        params = self.conditioner(inputs)
        transformed = self.transformed_index.numel()
        params = params.unflatten(-1, (transformed, self.transformer.num_params))
        x_b = x.index_select(-1, self.transformed_index)
        y_b, log_det = self.transformer(x_b, params, inverse=inverse)
        return x.index_copy(-1, self.transformed_index, y_b), log_det.sum(-1)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=True)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=False)

    def config(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "context": self.context,
            "mask": self.mask,
            "transformer": self.transformer_name,
            "bins": self.bins,
            "bound": self.bound,
            "hidden": self.hidden,
            "activation": self.activation,
        }
