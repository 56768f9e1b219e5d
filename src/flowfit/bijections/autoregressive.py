r"""Masked autoregressive layers and the element-wise transformers they share with couplings.

An autoregressive layer transforms feature :math:`i` by a monotone map :math:`\tau`
whose parameters come from the features before it in a fixed order,

.. math:: z_i = \tau(x_i; h_i(x_{<i}, c)),

so its Jacobian is triangular and :math:`\log|\det J| = \sum_i \log|\tau'(x_i)|`.
:class:`MaskedAutoregressive` computes this normalising direction (data to base) in one
network pass and its inverse in :math:`D` passes; :class:`InverseAutoregressive` swaps
the two.

References:
    Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017),
    https://arxiv.org/abs/1705.07057

    Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al.,
    2016), https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

__all__ = [
    "AffineTransformer",
    "InverseAutoregressive",
    "MaskedAutoregressive",
    "SplineTransformer",
    "make_transformer",
]

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowfit.bijections.base import Bijection, register
from flowfit.bijections.spline import rational_quadratic_spline
from flowfit.nn import MADE

# The affine transformer's log-scale is soft-clipped to (-LOG_SCALE_BOUND,
# LOG_SCALE_BOUND), because a plain exp() of a network output overflows, or makes the
# loss jump, when the network emits a large value early in training. The clip keeps each
# layer's scale within about (0.05, 20) and is close to the identity near 0.
LOG_SCALE_BOUND = 3.0


class AffineTransformer:
    r"""Element-wise :math:`y = \mu + \sigma x` with :math:`\sigma > 0` from 2 parameters.

    The parameters, of shape :math:`(*, 2)`, are the shift :math:`\mu` and an
    unconstrained :math:`s`, with :math:`\log \sigma = B \tanh(s / B)` and
    :math:`B` = :data:`LOG_SCALE_BOUND`. Zero parameters give the identity.
    """

    num_params = 2

    def __call__(
        self, x: Tensor, params: Tensor, *, inverse: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Return :math:`y` and the element-wise :math:`\\log|dy/dx|`, both shaped like ``x``."""
        # unbind() gives views whose backward is one stack, where two slices would each
        # fill a zero tensor of the parameters' shape.
        shift, unconstrained = params.unbind(-1)
        log_scale = LOG_SCALE_BOUND * torch.tanh(unconstrained / LOG_SCALE_BOUND)
        if inverse:
            return (x - shift) * torch.exp(-log_scale), -log_scale
        return shift + torch.exp(log_scale) * x, log_scale


class SplineTransformer:
    r"""Element-wise monotone rational-quadratic spline on :math:`[-B, B]`, identity outside.

    The :math:`3K - 1` parameters per element are :math:`K` unnormalised widths,
    :math:`K` unnormalised heights and :math:`K - 1` inner-knot slopes, in that order, as
    :func:`~flowfit.bijections.spline.rational_quadratic_spline` takes them. Zero
    parameters give the identity.

    Arguments:
        bins: The number of bins :math:`K`.
        bound: The half-width :math:`B` of the interval the spline acts on.
    """

    def __init__(self, bins: int = 8, bound: float = 5.0) -> None:
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an integer of at least 2; got {bins!r}.")
        if not bound > 0:
            raise ValueError(f"bound must be positive; got {bound}.")
        self.bins = bins
        self.bound = float(bound)
        self.num_params = 3 * bins - 1

    def __call__(
        self, x: Tensor, params: Tensor, *, inverse: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Return :math:`y` and the element-wise :math:`\\log|dy/dx|`, both shaped like ``x``."""
        k = self.bins
        # split() gives views whose backward is a single concatenation, where three
        # slices would each fill a zero tensor of the full parameter shape.
        widths, heights, derivatives = params.split([k, k, k - 1], dim=-1)
        return rational_quadratic_spline(
            x, widths, heights, derivatives, bound=self.bound, inverse=inverse
        )


def make_transformer(
    name: str, bins: int = 8, bound: float = 5.0
) -> AffineTransformer | SplineTransformer:
    """Build the element-wise transformer ``"affine"`` or ``"spline"``."""
    if name == "affine":
        return AffineTransformer()
    if name == "spline":
        return SplineTransformer(bins, bound)
    raise ValueError(f"transformer must be 'affine' or 'spline'; got {name!r}.")


@register
class MaskedAutoregressive(Bijection):
    r"""Autoregressive layer in the MAF direction: one network pass for ``log_prob``.

    The normalising direction (:meth:`inverse`, data to base) is
    :math:`z_i = \tau(x_i; h_i(x_{<i}, c))` with :math:`h` a :class:`~flowfit.nn.MADE`,
    computed for all features at once. The generative direction (:meth:`forward`, used
    for sampling) solves this triangular system with :math:`D` network passes.

    Arguments:
        features: The number of features :math:`D`.
        context: The size :math:`C` of the context, or 0.
        transformer: ``"affine"`` (:class:`AffineTransformer`) or ``"spline"``
            (:class:`SplineTransformer`).
        bins: The number of spline bins; used by ``"spline"`` only.
        bound: The half-width of the spline interval; used by ``"spline"`` only.
        hidden: The widths of the MADE's hidden layers.
        order: The autoregressive order, first feature first; defaults to
            :math:`0, \dots, D - 1`.
        activation: The MADE's activation, a key of :data:`flowfit.nn.ACTIVATIONS`.

    Warning:
        With :math:`D = 1` and no context the MADE's output is a learned constant, so an
        ``"affine"`` layer is then a fixed affine map of its input. Use ``"spline"`` to
        model a single feature.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        transformer: str = "affine",
        bins: int = 8,
        bound: float = 5.0,
        hidden: Sequence[int] = (64, 64),
        order: Sequence[int] | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__(features, context)
        self.transformer_name = transformer
        self.transformer = make_transformer(transformer, bins, bound)
        self.bins = bins
        self.bound = float(bound)
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        self.conditioner = MADE(
            features,
            self.transformer.num_params,
            context,
            hidden=self.hidden,
            order=order,
            activation=activation,
        )

    def _normalize(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        params = self.conditioner(x, context)
        z, log_det = self.transformer(x, params)
        return z, log_det.sum(-1)

    def _generate(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # After pass k the first k features in the order are exact, because their
        # parameters depend only on features that were already exact. The last pass
        # therefore used the parameters of the final x, so its log-det is the layer's.
        x = z
        log_det = z.new_zeros(z.shape)
        for _ in range(self.features):
            params = self.conditioner(x, context)
            x, log_det = self.transformer(z, params, inverse=True)
        return x, log_det.sum(-1)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._generate(x, context)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._normalize(y, context)

    def config(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "context": self.context,
            "transformer": self.transformer_name,
            "bins": self.bins,
            "bound": self.bound,
            "hidden": self.hidden,
            "order": self.conditioner.order.tolist(),
            "activation": self.activation,
        }


@register
class InverseAutoregressive(MaskedAutoregressive):
    r"""Autoregressive layer in the IAF direction: one network pass for sampling.

    The generative direction (:meth:`forward`) is
    :math:`x_i = \tau(z_i; h_i(z_{<i}, c))`, computed for all features at once, and
    ``log_prob`` needs :math:`D` passes. It takes the arguments of
    :class:`MaskedAutoregressive`, and is that layer with its directions swapped.
    """

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._normalize(x, context)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._generate(y, context)
