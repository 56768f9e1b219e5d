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
