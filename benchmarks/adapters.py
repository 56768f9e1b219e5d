"""One interface over flowfit and the peer libraries, so every benchmark treats them alike.

:func:`build` returns a :class:`Model` for a library name and a flow kind:

* ``"maf"``: masked autoregressive flow with affine transformers,
* ``"nsf"``: autoregressive neural spline flow, rational-quadratic splines with linear
  tails on ``[-bound, bound]``.

Every library gets the same architecture: ``layers`` autoregressive layers with a
feature reversal between them, each conditioner a masked MLP with two hidden layers of
``hidden`` units and ReLU, ``bins`` spline bins and a standard normal base. The peers are
optional: :func:`available` returns whether one is installed (``pip install -e '.[bench]'``).

Where a library cannot express this exactly, the difference is listed in
:data:`ARCHITECTURE_NOTES`, and the parameter counts are reported beside every result.
"""

from __future__ import annotations

__all__ = [
    "ARCHITECTURE_NOTES",
    "KINDS",
    "LIBRARIES",
    "Model",
    "available",
    "installed",
    "build",
    "library_version",
]

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

LIBRARIES = ("flowfit", "zuko", "nflows", "normflows")
KINDS = ("maf", "nsf")

ARCHITECTURE_NOTES = {
    "flowfit": "flowfit.flows.MAF / NSF presets; affine log-scale soft-clipped to (-3, 3).",
    "zuko": "zuko.flows.MAF / NSF with orders alternating between identity and reversal; "
    "affine log-scale soft-clipped by the minimum slope 1e-3.",
    "nflows": "MaskedAffineAutoregressiveTransform / "
    "MaskedPiecewiseRationalQuadraticAutoregressiveTransform with num_blocks=1 and no "
    "residual blocks (2 hidden layers), ReversePermutation between layers; affine scale "
    "is sigmoid(s + 2) + 1e-3, so at most about 1 per layer.",
    "normflows": "MaskedAffineAutoregressive and the MaskedPiecewiseRationalQuadratic"
    "Autoregressive layer with num_blocks=1 and no residual blocks (the spline wrapper "
    "class forces residual blocks, so the layer is used directly), Permute with a fixed "
    "reversal between layers; affine scale as in nflows.",
}


@dataclass
class Model:
    """A flow of one library behind a common interface.

    Attributes:
        library: The library name, one of :data:`LIBRARIES`.
        kind: ``"maf"`` or ``"nsf"``.
        module: The :class:`torch.nn.Module` that owns every trainable parameter.
        log_prob: Maps rows of shape :math:`(N, D)` to log-densities of shape :math:`(N,)`.
        sample: Maps a count :math:`n` to samples of shape :math:`(n, D)`.
    """

    library: str
    kind: str
    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]

    @property
    def parameters(self) -> int:
        """The number of trainable scalars."""
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


def available(library: str) -> bool:
    """Return whether ``library`` can be imported."""
    try:
        importlib.import_module(library)
    except ImportError:
        return False
    return True


def installed(libraries: list[str]) -> list[str]:
    """Return the requested libraries that are installed, printing a line for each other."""
    found = []
    for library in libraries:
        if available(library):
            found.append(library)
        else:
            print(f"skipping {library}: not installed (pip install -e '.[bench]')")
    return found


def library_version(library: str) -> str:
    """Return the installed version of ``library``, or ``"missing"``."""
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def build(
    library: str,
    kind: str,
    features: int,
    *,
    layers: int = 5,
    hidden: int = 64,
    bins: int = 8,
    bound: float = 5.0,
) -> Model:
    """Build the ``kind`` flow of ``library`` for ``features`` standardised columns."""
    builders = {
        "flowfit": _flowfit,
        "zuko": _zuko,
        "nflows": _nflows,
        "normflows": _normflows,
    }
    if library not in builders:
        raise ValueError(f"Unknown library {library!r}; choose one of: {', '.join(LIBRARIES)}.")
    if kind not in KINDS:
        raise ValueError(f"Unknown flow kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    return builders[library](kind, features, layers, hidden, bins, bound)


def _flowfit(kind: str, features: int, layers: int, hidden: int, bins: int, bound: float) -> Model:
    from flowfit.flows import MAF, NSF

    constructor = MAF if kind == "maf" else NSF
    flow = constructor(features, layers=layers, hidden=(hidden, hidden), bins=bins, bound=bound)
    return Model(
        "flowfit", kind, flow, log_prob=flow.log_prob, sample=lambda n: flow.sample((n,))
    )


def _zuko(kind: str, features: int, layers: int, hidden: int, bins: int, bound: float) -> Model:
    import zuko

    if kind == "maf":
        flow = zuko.flows.MAF(features, transforms=layers, hidden_features=(hidden, hidden))
    else:
        # NOTE: zuko's spline bound is fixed at 5 (zuko 1.6), so `bound` applies only
        # when it is 5.
        flow = zuko.flows.NSF(
            features, bins=bins, transforms=layers, hidden_features=(hidden, hidden)
        )

    def log_prob(x: Tensor) -> Tensor:
        return flow().log_prob(x)

    def sample(n: int) -> Tensor:
        return flow().sample((n,))

    return Model("zuko", kind, flow, log_prob=log_prob, sample=sample)


def _nflows(kind: str, features: int, layers: int, hidden: int, bins: int, bound: float) -> Model:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import (
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    )
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.permutations import ReversePermutation

    transforms = []
    for i in range(layers):
        if i > 0:
            transforms.append(ReversePermutation(features))
        if kind == "maf":
            layer = MaskedAffineAutoregressiveTransform(
                features=features, hidden_features=hidden, num_blocks=1,
                use_residual_blocks=False,
            )
        else:
            layer = MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                features=features, hidden_features=hidden, num_bins=bins, tails="linear",
                tail_bound=bound, num_blocks=1, use_residual_blocks=False,
            )
        transforms.append(layer)
    flow = Flow(CompositeTransform(transforms), StandardNormal([features]))
    return Model("nflows", kind, flow, log_prob=flow.log_prob, sample=flow.sample)


def _normflows(
    kind: str, features: int, layers: int, hidden: int, bins: int, bound: float
) -> Model:
    import normflows as nf
    from normflows.flows.neural_spline.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressive,
    )

    class SplineLayer(nf.flows.Flow):
        """The spline layer without residual blocks, in normflows' direction convention."""

        def __init__(self) -> None:
            super().__init__()
            self.layer = MaskedPiecewiseRationalQuadraticAutoregressive(
                features=features, hidden_features=hidden, num_bins=bins, tails="linear",
                tail_bound=bound, num_blocks=1, use_residual_blocks=False,
            )

        def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
            z, log_det = self.layer.inverse(z, context=context)
            return z, log_det.view(-1)

        def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
            z, log_det = self.layer(z, context=context)
            return z, log_det.view(-1)

    flows = []
    for i in range(layers):
        if i > 0:
            flows.append(_normflows_reversal(nf, features))
        if kind == "maf":
            flows.append(
                nf.flows.MaskedAffineAutoregressive(
                    features, hidden, num_blocks=1, use_residual_blocks=False
                )
            )
        else:
            flows.append(SplineLayer())
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(features, trainable=False), flows)

    def sample(n: int) -> Tensor:
        return flow.sample(n)[0]

    return Model("normflows", kind, flow, log_prob=flow.log_prob, sample=sample)


def _normflows_reversal(nf, features: int) -> nn.Module:
    # normflows offers a random shuffle or a swap of halves; the reversal that the other
    # libraries use is set into a shuffle's buffers.
    permute = nf.flows.Permute(features, mode="shuffle")
    reversal = torch.arange(features - 1, -1, -1)
    permute.perm.copy_(reversal)
    permute.inv_perm.copy_(reversal)
    return permute
