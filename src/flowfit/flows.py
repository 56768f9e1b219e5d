"""Ready-made flows: the learned part of a model, built by name with measured defaults.

Each preset returns a :class:`~flowfit.bijections.Bijection` in the generative direction
that acts on standardised data. Preprocessing (standardisation, support maps) is added
around it by :func:`flowfit.preprocessing.make_flow`.
"""

from __future__ import annotations

__all__ = ["MAF", "NSF", "PRESETS", "RealNVP", "build_bijection", "preset"]

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from flowfit.bijections import (
    Affine,
    Bijection,
    Chain,
    Coupling,
    FixedAffine,
    MaskedAutoregressive,
    RandomPermutation,
    RationalQuadraticSpline,
    ReversePermutation,
    Shift,
)
from flowfit.distributions import Flow

PRESETS: dict[str, Callable[..., Bijection]] = {}


def preset(name: str) -> Callable[[Callable[..., Bijection]], Callable[..., Bijection]]:
    """Register a builder ``f(features, context=0, **options) -> Bijection`` by name."""

    def decorate(builder: Callable[..., Bijection]) -> Callable[..., Bijection]:
        if name in PRESETS:
            raise ValueError(f"A flow preset named {name!r} is already registered.")
        PRESETS[name] = builder
        return builder

    return decorate


def build_bijection(name: str, features: int, context: int = 0, **options: Any) -> Bijection:
    """Build the preset ``name`` for ``features`` data columns and ``context`` columns."""
    builder = PRESETS.get(name)
    if builder is None:
        raise ValueError(f"Unknown flow {name!r}; choose one of: {', '.join(sorted(PRESETS))}.")
    return builder(features, context=context, **options)


def _unconditional(name: str, context: int) -> None:
    if context:
        raise ValueError(
            f"The {name!r} flow is unconditional; use 'maf', 'nsf' or 'realnvp' with a context."
        )


@preset("shift")
def shift_flow(features: int, context: int = 0) -> Bijection:
    """:math:`x = z + \\mu`: a normal model with a learned mean and the data's scale."""
    _unconditional("shift", context)
    return Shift(features)


@preset("affine")
def affine_flow(features: int, context: int = 0) -> Bijection:
    """:math:`x = \\mu + \\sigma z`: a normal model with learned mean and scale per column."""
    _unconditional("affine", context)
    return Affine(features)


@preset("spline")
def spline_flow(
    features: int, context: int = 0, *, layers: int = 2, bins: int = 16, bound: float = 5.0
) -> Bijection:
    """Element-wise splines followed by an affine map: a flexible model of each column.

    Columns are modelled independently; use a multivariate preset for dependence.
    """
    _unconditional("spline", context)
    if layers < 1:
        raise ValueError(f"layers must be at least 1; got {layers}.")
    splines: list[Bijection] = [
        RationalQuadraticSpline(features, bins=bins, bound=bound) for _ in range(layers)
    ]
    return Chain([*splines, Affine(features)])


def _autoregressive_chain(
    features: int,
    context: int,
    *,
    transformer: str,
    layers: int,
    hidden: Sequence[int],
    bins: int,
    bound: float,
    activation: str,
) -> Bijection:
    if layers < 1:
        raise ValueError(f"layers must be at least 1; got {layers}.")
    chain: list[Bijection] = []
    for i in range(layers):
        if i > 0:
            chain.append(ReversePermutation(features))
        chain.append(
            MaskedAutoregressive(
                features,
                context,
                transformer=transformer,
                bins=bins,
                bound=bound,
                hidden=hidden,
                activation=activation,
            )
        )
    return Chain(chain)


def _coupling_chain(
    features: int,
    context: int,
    *,
    transformer: str,
    layers: int,
    hidden: Sequence[int],
    bins: int,
    bound: float,
    activation: str,
) -> Bijection:
    if layers < 1:
        raise ValueError(f"layers must be at least 1; got {layers}.")
    chain: list[Bijection] = []
    for i in range(layers):
        # Alternate the transformed half, and with more than 2 features also shuffle
        # between layers, so that every pair of features is coupled within a few layers.
        if i > 0 and features > 2:
            chain.append(RandomPermutation(features, seed=i))
        mask = [(j >= features // 2) != (i % 2 == 1) for j in range(features)]
        if features == 1:
            mask = [True]
        chain.append(
            Coupling(
                features,
                context,
                mask=mask,
                transformer=transformer,
                bins=bins,
                bound=bound,
                hidden=hidden,
                activation=activation,
            )
        )
    return Chain(chain)


@preset("maf")
def maf_flow(
    features: int,
    context: int = 0,
    *,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    bins: int = 8,
    bound: float = 5.0,
) -> Bijection:
    """Masked autoregressive flow: affine autoregressive layers with reversals between them.

    An affine autoregressive model of a single feature is an affine map of the normal base,
    so with ``features == 1`` the layers use rational-quadratic splines (``bins`` and
    ``bound``) instead, and the flow equals the ``nsf`` preset.
    """
    transformer = "affine" if features > 1 else "spline"
    return _autoregressive_chain(
        features, context, transformer=transformer, layers=layers, hidden=hidden,
        bins=bins, bound=bound, activation=activation,
    )


@preset("nsf")
def nsf_flow(
    features: int,
    context: int = 0,
    *,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    bins: int = 8,
    bound: float = 5.0,
) -> Bijection:
    """Autoregressive neural spline flow: spline autoregressive layers with reversals.

    Each spline acts on ``[-bound, bound]`` and is the identity outside, which suits
    standardised data.

    Warning:
        A value more than ``bound`` standard deviations from the mean is left unchanged
        by every spline, so the flow gives a long tail the base's normal shape. On the
        banana target, whose second coordinate reaches 10 standard deviations, a short
        fit (4000 rows, 10 epochs) scored KL 0.077 here against 0.003 for ``maf``. A
        larger ``bound`` with more ``bins`` narrows the gap (0.022 with 10 and 16).
    """
    return _autoregressive_chain(
        features, context, transformer="spline", layers=layers, hidden=hidden,
        bins=bins, bound=bound, activation=activation,
    )


@preset("nsf-coupling")
def nsf_coupling_flow(
    features: int,
    context: int = 0,
    *,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    bins: int = 8,
    bound: float = 5.0,
) -> Bijection:
    """Coupling neural spline flow: spline coupling layers on alternating halves.

    Sampling and ``log_prob`` both take one network pass per layer. With one feature
    each layer's spline depends on the context only, or is learned directly without one.
    """
    return _coupling_chain(
        features, context, transformer="spline", layers=layers, hidden=hidden,
        bins=bins, bound=bound, activation=activation,
    )


@preset("realnvp")
def realnvp_flow(
    features: int,
    context: int = 0,
    *,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    bins: int = 8,
    bound: float = 5.0,
) -> Bijection:
    """RealNVP: affine coupling layers on alternating halves.

    An affine coupling of a single feature is an affine map of the normal base, so with
    ``features == 1`` the layers use rational-quadratic splines (``bins`` and ``bound``)
    instead, and the flow equals the ``nsf-coupling`` preset.
    """
    transformer = "affine" if features > 1 else "spline"
    return _coupling_chain(
        features, context, transformer=transformer, layers=layers, hidden=hidden,
        bins=bins, bound=bound, activation=activation,
    )


def _make_flow(
    name: str,
    features: int,
    context: int,
    data: Tensor | None,
    context_data: Tensor | None,
    options: dict[str, Any],
) -> Flow:
    bijection = build_bijection(name, features, context, **options)
    if data is not None:
        data = torch.as_tensor(data, dtype=torch.get_default_dtype())
        if data.ndim != 2 or data.shape[1] != features:
            raise ValueError(
                f"Expected data of shape (N, {features}); got {tuple(data.shape)}."
            )
        bijection = Chain([bijection, FixedAffine.from_data(data)])
    context_scaler = None
    if context_data is not None:
        context_data = torch.as_tensor(context_data, dtype=torch.get_default_dtype())
        if context == 0 or context_data.ndim != 2 or context_data.shape[1] != context:
            raise ValueError(
                f"Expected context_data of shape (N, {context}); "
                f"got {tuple(context_data.shape)}."
            )
        context_scaler = FixedAffine.from_data(context_data)
    return Flow(bijection, context_scaler=context_scaler)


def MAF(
    features: int,
    context: int = 0,
    *,
    data: Tensor | None = None,
    context_data: Tensor | None = None,
    **options: Any,
) -> Flow:
    r"""Build a masked autoregressive flow (the ``maf`` preset) as a :class:`Flow`.

    The presets expect standardised data and context. Given ``data`` of shape
    :math:`(N, D)`, the flow ends in a fixed map from standardised values to the data's
    units, and given ``context_data`` of shape :math:`(N, C)` it standardises the context
    with that data's mean and standard deviation.

    Arguments:
        features: The number of data columns :math:`D`.
        context: The number of context columns :math:`C`, 0 for an unconditional flow.
        data: Training data that sets the standardisation of the flow's output.
        context_data: Training context that sets the standardisation of the context.
        options: Keyword options of :func:`maf_flow`, such as ``layers`` and ``hidden``.

    Example:
        >>> flow = MAF(3, context=2)
        >>> flow.sample((5,), torch.zeros(4, 2)).shape
        torch.Size([5, 4, 3])
    """
    return _make_flow("maf", features, context, data, context_data, options)


def NSF(
    features: int,
    context: int = 0,
    *,
    coupling: bool = False,
    data: Tensor | None = None,
    context_data: Tensor | None = None,
    **options: Any,
) -> Flow:
    """Build a neural spline flow (``nsf``, or ``nsf-coupling`` if ``coupling``), a :class:`Flow`.

    The other arguments are those of :func:`MAF`; ``options`` go to :func:`nsf_flow` or
    :func:`nsf_coupling_flow`.
    """
    name = "nsf-coupling" if coupling else "nsf"
    return _make_flow(name, features, context, data, context_data, options)


def RealNVP(
    features: int,
    context: int = 0,
    *,
    data: Tensor | None = None,
    context_data: Tensor | None = None,
    **options: Any,
) -> Flow:
    """Build a RealNVP flow (the ``realnvp`` preset) as a :class:`Flow`.

    The other arguments are those of :func:`MAF`; ``options`` go to :func:`realnvp_flow`.
    """
    return _make_flow("realnvp", features, context, data, context_data, options)
