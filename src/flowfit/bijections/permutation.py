r"""Feature permutations, placed between autoregressive or coupling layers.

A permutation :math:`y_i = x_{\sigma(i)}` has :math:`\log|\det J| = 0`.
"""

from __future__ import annotations

__all__ = ["Permutation", "RandomPermutation", "ReversePermutation"]

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowfit.bijections.base import Bijection, register


@register
class Permutation(Bijection):
    r"""Reorder features: ``forward`` returns ``x[..., indices]``.

    The indices are stored as a buffer, so a model file carries them in its state dict.

    Arguments:
        features: The number of features :math:`D`.
        indices: A permutation of :math:`0, \dots, D - 1`; the identity by default.
    """

    def __init__(self, features: int, indices: Sequence[int] | None = None) -> None:
        super().__init__(features)
        indices_t = torch.arange(features) if indices is None else torch.as_tensor(indices)
        if sorted(indices_t.tolist()) != list(range(features)):
            raise ValueError(
                f"indices must be a permutation of 0..{features - 1}; got {indices_t.tolist()}."
            )
        self.register_buffer("indices", indices_t.long())
        self.register_buffer("inverse_indices", torch.argsort(self.indices))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x[..., self.indices], x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y[..., self.inverse_indices], y.new_zeros(y.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"features": self.features, "indices": self.indices.tolist()}


@register
class ReversePermutation(Permutation):
    r"""Reverse the order of the features: :math:`y_i = x_{D - 1 - i}`."""

    def __init__(self, features: int) -> None:
        super().__init__(features, list(range(features - 1, -1, -1)))

    # flip() gives the same values as the index buffers, and its backward is another
    # flip, where indexing scatters into a zero tensor.
    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x.flip(-1), x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y.flip(-1), y.new_zeros(y.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"features": self.features}


@register
class RandomPermutation(Permutation):
    r"""A random permutation drawn from ``torch.randperm`` with a seeded generator.

    The seed is saved in the config and the drawn indices in the state dict, so a saved
    model reloads the same permutation even if torch's generator were to change.

    Arguments:
        features: The number of features :math:`D`.
        seed: The seed of the generator that draws the permutation.
    """

    def __init__(self, features: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        super().__init__(features, torch.randperm(features, generator=generator).tolist())
        self.seed = seed

    def config(self) -> dict[str, Any]:
        return {"features": self.features, "seed": self.seed}
