"""The registry of bijection cases that every contract test runs over.

Each entry maps a readable id to a function that builds the bijection in float64 with
non-trivial parameters, and an input sampler that stays inside its domain. A new
bijection is covered by the contract tests once it has an entry here.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowfit.bijections import (
    Affine,
    Bijection,
    Chain,
    Exp,
    FixedAffine,
    Inverse,
    RationalQuadraticSpline,
    Shift,
    Sigmoid,
    Softplus,
)


@dataclass(frozen=True)
class Case:
    build: Callable[[], Bijection]
    # Draws forward inputs of shape (n, D); returns them with a context or None.
    inputs: Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor | None]]


def randomize(bijection: Bijection, scale: float = 0.5, seed: int = 0) -> Bijection:
    """Set every parameter to seeded normal values, so no case tests an identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bijection.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return bijection.double()


def real(features: int, spread: float = 2.0, context: int = 0):
    def draw(generator, n):
        x = spread * torch.randn(n, features, generator=generator, dtype=torch.float64)
        c = None
        if context:
            c = torch.randn(n, context, generator=generator, dtype=torch.float64)
        return x, c

    return draw


CASES: dict[str, Case] = {
    "shift": Case(lambda: randomize(Shift(3)), real(3)),
    "affine": Case(lambda: randomize(Affine(3)), real(3)),
    "fixed-affine": Case(
        lambda: FixedAffine(2, torch.tensor([1.0, -2.0]), torch.tensor([0.5, 30.0])).double(),
        real(2),
    ),
    "spline": Case(lambda: randomize(RationalQuadraticSpline(2, bins=7, bound=3.0), 1.0),
                   real(2, spread=3.0)),
    "spline-1d": Case(lambda: randomize(RationalQuadraticSpline(1, bins=16, bound=5.0), 1.0),
                      real(1, spread=4.0)),
    "exp": Case(lambda: Exp(2).double(), real(2)),
    "softplus": Case(lambda: Softplus(2).double(), real(2)),
    "sigmoid": Case(lambda: Sigmoid(2, low=[-1.0, 10.0], high=[3.0, 10.5]).double(), real(2)),
    "chain": Case(
        lambda: Chain([randomize(RationalQuadraticSpline(2), 1.0), randomize(Affine(2)),
                       Softplus(2).double()]),
        real(2),
    ),
    "inverse-affine": Case(lambda: Inverse(randomize(Affine(2))), real(2)),
}


# Multivariate and conditional layers. Conditioner networks are kept small (hidden
# widths of 16) and their random parameters moderate, because large random networks
# make the splines so steep that the float64 round trip is no longer within 1e-10.
from flowfit.bijections import (  # noqa: E402
    ActNorm,
    Coupling,
    InverseAutoregressive,
    LULinear,
    MaskedAutoregressive,
    Permutation,
    RandomPermutation,
    ReversePermutation,
)
from flowfit.flows import build_bijection  # noqa: E402

SMALL = {"hidden": [16, 16]}
SPLINE = {"transformer": "spline", "bins": 6, "bound": 3.0, **SMALL}


def initialized_actnorm(features: int) -> ActNorm:
    layer = ActNorm(features).double()
    generator = torch.Generator().manual_seed(2)
    data = 1.5 + 3.0 * torch.randn(100, features, generator=generator, dtype=torch.float64)
    layer.initialize(data)
    return layer


CASES.update({
    "maf-affine": Case(lambda: randomize(MaskedAutoregressive(3, order=[2, 0, 1], **SMALL)),
                       real(3)),
    "maf-affine-context": Case(lambda: randomize(MaskedAutoregressive(3, 2, **SMALL)),
                               real(3, context=2)),
    "maf-affine-1d": Case(lambda: randomize(MaskedAutoregressive(1, **SMALL)), real(1)),
    "maf-affine-1d-context": Case(lambda: randomize(MaskedAutoregressive(1, 2, **SMALL)),
                                  real(1, context=2)),
    "maf-spline": Case(lambda: randomize(MaskedAutoregressive(4, order=[1, 3, 0, 2], **SPLINE)),
                       real(4)),
    "maf-spline-context": Case(lambda: randomize(MaskedAutoregressive(3, 2, **SPLINE)),
                               real(3, context=2)),
    "maf-spline-1d": Case(lambda: randomize(MaskedAutoregressive(1, **SPLINE), 1.0),
                          real(1, spread=3.0)),
    "maf-spline-1d-context": Case(lambda: randomize(MaskedAutoregressive(1, 1, **SPLINE)),
                                  real(1, context=1)),
    "iaf-affine-context": Case(lambda: randomize(InverseAutoregressive(3, 2, **SMALL)),
                               real(3, context=2)),
    "iaf-spline": Case(lambda: randomize(InverseAutoregressive(3, order=[1, 2, 0], **SPLINE)),
                       real(3)),
    "iaf-spline-1d-context": Case(lambda: randomize(InverseAutoregressive(1, 2, **SPLINE)),
                                  real(1, context=2)),
    "coupling-affine": Case(lambda: randomize(Coupling(3, **SMALL)), real(3)),
    "coupling-affine-context": Case(
        lambda: randomize(Coupling(4, 2, mask=[True, False, True, False], **SMALL)),
        real(4, context=2),
    ),
    "coupling-spline": Case(lambda: randomize(Coupling(3, **SPLINE)), real(3)),
    "coupling-spline-context": Case(lambda: randomize(Coupling(2, 3, **SPLINE)),
                                    real(2, context=3)),
    "coupling-spline-1d": Case(lambda: randomize(Coupling(1, **SPLINE), 1.0),
                               real(1, spread=3.0)),
    "coupling-spline-1d-context": Case(lambda: randomize(Coupling(1, 2, **SPLINE)),
                                       real(1, context=2)),
    "lu-linear": Case(lambda: randomize(LULinear(4)), real(4)),
    "lu-linear-1d": Case(lambda: randomize(LULinear(1)), real(1)),
    "actnorm": Case(lambda: initialized_actnorm(3), real(3)),
    "actnorm-1d": Case(lambda: initialized_actnorm(1), real(1)),
    "permutation": Case(lambda: Permutation(4, [2, 0, 3, 1]).double(), real(4)),
    "permutation-reverse": Case(lambda: ReversePermutation(3).double(), real(3)),
    "permutation-random": Case(lambda: RandomPermutation(5, seed=7).double(), real(5)),
    "permutation-random-1d": Case(lambda: RandomPermutation(1, seed=7).double(), real(1)),
    "preset-maf": Case(lambda: randomize(build_bijection("maf", 3, layers=3, **SMALL), 0.3),
                       real(3)),
    "preset-maf-1d-context": Case(
        lambda: randomize(build_bijection("maf", 1, 2, layers=2, **SMALL), 0.3),
        real(1, context=2),
    ),
    "preset-nsf-context": Case(
        lambda: randomize(build_bijection("nsf", 2, 1, layers=3, **SMALL), 0.3),
        real(2, context=1),
    ),
    "preset-nsf-coupling": Case(
        lambda: randomize(build_bijection("nsf-coupling", 3, layers=3, **SMALL), 0.3),
        real(3),
    ),
    "preset-realnvp-context": Case(
        lambda: randomize(build_bijection("realnvp", 3, 2, layers=3, **SMALL), 0.3),
        real(3, context=2),
    ),
    "preset-realnvp-1d": Case(
        lambda: randomize(build_bijection("realnvp", 1, layers=2, **SMALL), 0.3),
        real(1),
    ),
})


# Per-column support maps: one feature of each kind, with bounds away from 0 and 1.
from flowfit.bijections import ColumnwiseSupport  # noqa: E402

CASES["columnwise-support"] = Case(
    lambda: ColumnwiseSupport(
        4, low=[None, -1.5, None, 10.0], high=[None, None, 2.0, 10.5]
    ).double(),
    real(4),
)
