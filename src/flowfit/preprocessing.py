r"""Turning a data table into a flow: standardisation, support maps and rounding grids.

Every step is a bijection with an exact Jacobian, placed after the learned layers in the
generative chain, so log-densities come out in the data's own units:

.. math:: x = s(\text{loc} + \text{scale} \cdot g_\theta(z)),

where :math:`s` is the identity, :math:`\exp` (positive data) or a scaled sigmoid (data
on an interval).
"""

from __future__ import annotations

__all__ = ["detect_grid", "make_flow", "support_bijection"]

from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowfit.bijections import Bijection, Chain, Exp, FixedAffine, Sigmoid
from flowfit.distributions import Flow, StandardNormal
from flowfit.errors import DataError
from flowfit.flows import build_bijection

Support = str | tuple[float, float]


def detect_grid(values: np.ndarray) -> float:
    """Return the step of the grid a column was rounded to, or 0 for a continuous column.

    A column counts as rounded when every value is an integer multiple of its smallest
    gap between distinct values, and repeats are common: fewer distinct values than half
    the rows. Integer counts and waiting times in whole minutes qualify; measurements
    stored with many digits do not.
    """
    values = np.asarray(values, dtype=np.float64)
    distinct = np.unique(values)
    if distinct.size < 2 or distinct.size * 2 > values.size:
        return 0.0
    step = float(np.min(np.diff(distinct)))
    multiples = distinct / step
    if np.max(np.abs(multiples - np.round(multiples))) > 1e-6:
        return 0.0
    return step


def support_bijection(support: Support, features: int) -> Bijection | None:
    """Return the map from the real line onto ``support``, or None for "real"."""
    if support == "real":
        return None
    if support == "positive":
        return Exp(features)
    if isinstance(support, tuple | list) and len(support) == 2:
        low, high = (float(v) for v in support)
        return Sigmoid(features, low=low, high=high)
    raise ValueError(f"support must be 'real', 'positive' or (low, high); got {support!r}.")


def _to_unconstrained(x: Tensor, support: Support, grid: Tensor | None) -> Tensor:
    """Map data onto the real line through the inverse support map, checking it fits."""
    map_ = support_bijection(support, x.shape[-1])
    if map_ is None:
        return x
    half_cell = 0.0 if grid is None else grid / 2
    low = x - half_cell
    high = x + half_cell
    if support == "positive" and bool(torch.any(low <= 0)):
        raise DataError(
            f"support='positive' needs data above 0 (after dequantisation); the smallest "
            f"value is {x.min().item():g}. Use support='real'."
        )
    if support not in ("real", "positive"):
        a, b = (float(v) for v in support)
        if bool(torch.any(low <= a)) or bool(torch.any(high >= b)):
            raise DataError(
                f"support=({a:g}, {b:g}) needs every value strictly inside the interval; "
                f"the data span [{x.min().item():g}, {x.max().item():g}]."
            )
    return map_.to(x.dtype).inverse(x)[0]


def make_flow(
    x: Tensor,
    *,
    flow: str = "spline",
    context: Tensor | None = None,
    support: Support = "real",
    grid: str | float | list[float] | None = "auto",
    standardize: bool = True,
    flow_options: dict[str, Any] | None = None,
) -> Flow:
    """Build a flow for data ``x`` of shape :math:`(N, D)`, ready for :func:`~flowfit.fit`.

    Arguments:
        x: The training data; its statistics set the standardisation.
        flow: A preset name from :data:`flowfit.flows.PRESETS`.
        context: Training contexts of shape :math:`(N, C)` for a conditional flow; they
            are standardised by their own statistics.
        support: "real", "positive" or a ``(low, high)`` interval, for all columns.
        grid: "auto" detects rounded columns with :func:`detect_grid`; a number or one
            number per column sets the steps (0 for continuous); None treats all columns
            as continuous.
        standardize: Whether to standardise (after the support map) before the
            learned layers.
        flow_options: Keyword arguments for the preset, such as ``bins`` or ``layers``.
    """
    if x.ndim != 2:
        raise DataError(f"Expected data of shape (N, D); got {tuple(x.shape)}.")
    features = x.shape[1]
    steps = _grid_steps(x, grid)
    unconstrained = _to_unconstrained(x, support, steps)

    bijections: list[Bijection] = [
        build_bijection(flow, features, context=0 if context is None else context.shape[1],
                        **(flow_options or {}))
    ]
    if standardize:
        scale = unconstrained.std(0, correction=0)
        constant = torch.nonzero(~(scale > 0)).flatten().tolist()
        if constant:
            raise DataError(
                f"Column(s) {constant} are constant, so they have no density to fit. "
                "Leave them out of the data."
            )
        bijections.append(FixedAffine(features, unconstrained.mean(0), scale))
    support_map = support_bijection(support, features)
    if support_map is not None:
        bijections.append(support_map)

    chain = Chain(bijections).to(x.dtype)
    scaler = None
    if context is not None:
        scaler = FixedAffine.from_data(context.to(x.dtype))
    return Flow(chain, StandardNormal(features).to(x.dtype), context_scaler=scaler, grid=steps)


def _grid_steps(x: Tensor, grid: str | float | list[float] | None) -> Tensor | None:
    features = x.shape[1]
    if grid is None:
        return None
    if grid == "auto":
        steps = [detect_grid(x[:, i].cpu().numpy()) for i in range(features)]
    elif isinstance(grid, int | float):
        steps = [float(grid)] * features
    else:
        steps = [float(s) for s in grid]
    if len(steps) != features or any(not np.isfinite(s) or s < 0 for s in steps):
        raise ValueError(
            f"grid needs {features} non-negative finite steps; got {steps}."
        )
    if not any(steps):
        return None
    return torch.tensor(steps, dtype=x.dtype)
