"""Ready-made flows: the learned part of a model, built by name with measured defaults.

Each preset returns a :class:`~flowfit.bijections.Bijection` in the generative direction
that acts on standardised data. Preprocessing (standardisation, support maps) is added
around it by :func:`flowfit.preprocessing.make_flow`.
"""

from __future__ import annotations

__all__ = ["PRESETS", "build_bijection", "preset"]

from collections.abc import Callable
from typing import Any

from flowfit.bijections import Affine, Bijection, Chain, RationalQuadraticSpline, Shift

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
