r"""An invertible linear layer with an LU-decomposed weight matrix.

Writing the weight as :math:`W = L U`, with :math:`L` unit lower triangular and
:math:`U` upper triangular with a positive diagonal, makes the log-determinant
:math:`\sum_i \log U_{ii}` cost :math:`O(D)` and the inverse two triangular solves.

References:
    Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma and Dhariwal, 2018),
    https://arxiv.org/abs/1807.03039
"""

from __future__ import annotations

__all__ = ["LULinear"]

from typing import Any

import torch
from torch import Tensor, nn

from flowfit.bijections.base import Bijection, register


@register
class LULinear(Bijection):
    r"""Learnable invertible linear map :math:`x = W z + b` with :math:`W = L U`.

    :math:`L` has ones on its diagonal and :math:`U` has the diagonal
    :math:`e^{s_i}`, so :math:`\log|\det J| = \sum_i s_i`. The layer starts as the
    identity.

    Arguments:
        features: The number of features :math:`D`.

    Note:
        Every :math:`W = L U` of this form has positive leading principal minors, so this
        layer covers every such matrix but not every invertible one. Glow adds a fixed
        permutation in front (:math:`W = P L U`); here a
        :class:`~flowfit.bijections.permutation.Permutation` layer does that job.
    """

    def __init__(self, features: int) -> None:
        super().__init__(features)
        # Only the strict lower and strict upper triangles of these are used.
        self.lower = nn.Parameter(torch.zeros(features, features))
        self.upper = nn.Parameter(torch.zeros(features, features))
        self.log_diagonal = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_diagonal))
        return lower, upper

    def weight(self) -> Tensor:
        """Return the weight matrix :math:`W = L U`, of shape :math:`(D, D)`."""
        lower, upper = self._factors()
        return lower @ upper

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x @ self.weight().T + self.bias
        return y, self.log_diagonal.sum().expand(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        # Rows are solved as z W^T = y - b, that is z U^T L^T = y - b: first against
        # L^T (upper, unit diagonal), then against U^T (lower).
        rows = (y - self.bias).reshape(-1, self.features)
        rows = torch.linalg.solve_triangular(
            lower.T, rows, upper=True, left=False, unitriangular=True
        )
        rows = torch.linalg.solve_triangular(upper.T, rows, upper=False, left=False)
        return rows.reshape(y.shape), -self.log_diagonal.sum().expand(y.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"features": self.features}
