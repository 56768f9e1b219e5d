r"""Conditioner networks: a masked autoregressive MLP (MADE) and a plain MLP.

A conditioner maps its inputs, and an optional context, to the unconstrained parameters
of an element-wise transformer, and does not interpret them. Both
networks start close to zero output: the last layer has small weights and zero biases, so
a fresh flow layer is close to its transformer's identity map.

References:
    MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015),
    https://arxiv.org/abs/1502.03509
"""

from __future__ import annotations

__all__ = ["ACTIVATIONS", "MADE", "MLP", "MaskedLinear"]

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}

# Standard deviation of the last layer's initial weights. It is small, so the first
# outputs are close to 0, but not 0, so that every earlier layer gets a gradient at the
# first step.
OUTPUT_INIT_STD = 1e-3


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(hidden)
    if not all(isinstance(h, int) and h >= 1 for h in hidden):
        raise ValueError(f"hidden must be a sequence of positive integers; got {hidden!r}.")
    return hidden


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; choose one of: {', '.join(sorted(ACTIVATIONS))}."
        )
    return ACTIVATIONS[name]


def _init_output_layer(layer: nn.Linear) -> None:
    with torch.no_grad():
        layer.weight.normal_(0.0, OUTPUT_INIT_STD)
        layer.bias.zero_()


class MaskedLinear(nn.Linear):
    r"""Linear layer :math:`y = (W \odot M) x + b` with a fixed binary mask :math:`M`.

    Arguments:
        mask: The mask, of shape :math:`(\text{out}, \text{in})`. It is derived from the
            owner's configuration, so it is a non-persistent buffer and stays out of the
            state dict.
    """

    def __init__(self, mask: Tensor) -> None:
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked MLP whose outputs for feature :math:`i` depend only on earlier features.

    With the autoregressive order :math:`\pi` (``order``), the ``params`` outputs of
    feature :math:`\pi_k` depend on features :math:`\pi_0, \dots, \pi_{k-1}` and on the
    context, and on nothing else. Every layer is one masked matrix product, so all
    features are conditioned in a single pass.

    Each unit has a degree. Feature :math:`\pi_k` has degree :math:`k + 1` and the
    context has degree 0. A hidden unit of degree :math:`m` is connected to the inputs of
    degree at most :math:`m`, and an output of feature degree :math:`d` to the hidden
    units of degree less than :math:`d`. Hidden degrees cycle through
    :math:`1, \dots, D - 1`, and through :math:`0, \dots, D - 1` with a context, so that
    the first feature's outputs can depend on the context. When every hidden layer has at
    least :math:`D` units, each output depends on all inputs it may depend on.

    With one feature and no context no output may depend on anything, so the network
    reduces to a learnable constant of shape :math:`(1, P)`.

    Arguments:
        features: The number of features :math:`D`.
        params: The number :math:`P` of outputs per feature.
        context: The size :math:`C` of the context, or 0.
        hidden: The widths of the hidden layers.
        order: The autoregressive order: a permutation of :math:`0, \dots, D - 1` that
            lists the first feature first. Defaults to :math:`0, 1, \dots, D - 1`.
        activation: The name of the activation between layers, a key of
            :data:`ACTIVATIONS`.

    ``forward(x, context)`` takes inputs of shape :math:`(*, D)` and a context of shape
    :math:`(*, C)` and returns parameters of shape :math:`(*, D, P)`.
    """

    def __init__(
        self,
        features: int,
        params: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        order: Sequence[int] | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        hidden = _check_hidden(hidden)
        activation_cls = _activation(activation)
        order_t = torch.arange(features) if order is None else torch.as_tensor(order)
        if sorted(order_t.tolist()) != list(range(features)):
            raise ValueError(
                f"order must be a permutation of 0..{features - 1}; got {order_t.tolist()}."
            )
        self.features = features
        self.params = params
        self.context = context
        self.register_buffer("order", order_t, persistent=False)

        if features == 1 and context == 0:
            self.constant = nn.Parameter(torch.zeros(1, params))
            self.network = None
            return
        self.constant = None

        # Degrees: feature order[k] has degree k + 1, and the context has degree 0.
        rank = torch.empty(features, dtype=torch.long)
        rank[order_t] = torch.arange(features)
        in_degrees = torch.cat([rank + 1, torch.zeros(context, dtype=torch.long)])
        low = 0 if context else 1
        span = features - low

        layers: list[nn.Module] = []
        previous = in_degrees
        for width in hidden:
            degrees = low + torch.arange(width) % span
            layers.append(MaskedLinear(degrees[:, None] >= previous[None, :]))
            layers.append(activation_cls())
            previous = degrees
        out_degrees = torch.repeat_interleave(rank + 1, params)
        output = MaskedLinear(out_degrees[:, None] > previous[None, :])
        _init_output_layer(output)
        layers.append(output)
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.network is None:
            return self.constant.expand(*x.shape[:-1], 1, self.params)
        inputs = x if context is None else torch.cat([x, context], dim=-1)
        return self.network(inputs).unflatten(-1, (self.features, self.params))


class MLP(nn.Module):
    r"""Fully connected network from :math:`(*, \text{in})` to :math:`(*, \text{out})`.

    With no inputs (``in_features`` 0) the output is a learnable constant, so that a
    coupling layer with nothing to condition on still has free parameters.

    Arguments:
        in_features: The input size, possibly 0.
        out_features: The output size.
        hidden: The widths of the hidden layers.
        activation: The name of the activation between layers, a key of
            :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        hidden = _check_hidden(hidden)
        activation_cls = _activation(activation)
        self.out_features = out_features
        if in_features == 0:
            self.constant = nn.Parameter(torch.zeros(out_features))
            self.network = None
            return
        self.constant = None

        layers: list[nn.Module] = []
        width_in = in_features
        for width in hidden:
            layers.append(nn.Linear(width_in, width))
            layers.append(activation_cls())
            width_in = width
        output = nn.Linear(width_in, out_features)
        _init_output_layer(output)
        layers.append(output)
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.network is None:
            return self.constant.expand(*x.shape[:-1], self.out_features)
        return self.network(x)
