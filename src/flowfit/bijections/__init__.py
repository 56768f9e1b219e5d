r"""Invertible maps with exact log-determinants, one family per module."""

from flowfit.bijections.base import (
    Bijection,
    BijectionTransform,
    Chain,
    Inverse,
    TorchTransform,
    bijection_from_spec,
    register,
)
from flowfit.bijections.elementwise import Affine, FixedAffine, Shift
from flowfit.bijections.spline import RationalQuadraticSpline, rational_quadratic_spline
from flowfit.bijections.support import Exp, Sigmoid, Softplus

__all__ = [
    "Affine",
    "Bijection",
    "BijectionTransform",
    "Chain",
    "Exp",
    "FixedAffine",
    "Inverse",
    "RationalQuadraticSpline",
    "Shift",
    "Sigmoid",
    "Softplus",
    "TorchTransform",
    "bijection_from_spec",
    "rational_quadratic_spline",
    "register",
]
