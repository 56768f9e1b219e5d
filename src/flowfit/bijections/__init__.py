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
from flowfit.bijections.autoregressive import (
    AffineTransformer,
    InverseAutoregressive,
    MaskedAutoregressive,
    SplineTransformer,
    make_transformer,
)
from flowfit.bijections.coupling import Coupling
from flowfit.bijections.linear import LULinear
from flowfit.bijections.normalization import ActNorm
from flowfit.bijections.permutation import Permutation, RandomPermutation, ReversePermutation
from flowfit.bijections.columns import ColumnwiseSupport

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
    "ActNorm",
    "AffineTransformer",
    "Coupling",
    "InverseAutoregressive",
    "LULinear",
    "MaskedAutoregressive",
    "Permutation",
    "RandomPermutation",
    "ReversePermutation",
    "SplineTransformer",
    "make_transformer",
    "ColumnwiseSupport",
]
