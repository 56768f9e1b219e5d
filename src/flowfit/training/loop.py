"""Maximum-likelihood training: mini-batch Adam on the negative log-likelihood."""

from __future__ import annotations

__all__ = ["History", "TrainingError", "fit", "split_indices"]

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flowfit.distributions import Flow
from flowfit.errors import DataError, TrainingError

logger = logging.getLogger(__name__)


@dataclass
class History:
    """Per-epoch mean negative log-likelihoods (nats per row) and how training ended.

    ``val`` is empty when no validation rows were held out. ``best_epoch`` is the
    0-based epoch whose parameters the flow holds after :func:`fit`.
    """

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    recoveries: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "train": self.train,
            "val": self.val,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "recoveries": self.recoveries,
            "seconds": self.seconds,
        }


def split_indices(n: int, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return shuffled train and validation row indices; validation gets ``val_fraction``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}.")
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n - n_val < 1:
        raise DataError(f"{n} rows leave none for training with val_fraction={val_fraction}.")
    return order[n_val:], order[:n_val]


def _weighted_nll(log_prob: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return -log_prob.mean()
    return -(weight * log_prob).sum() / weight.sum()


def _dequantize(x: Tensor, grid: Tensor | None, generator: torch.Generator) -> Tensor:
    # Uniform noise over each value's grid cell turns rounded data into a continuous
    # sample whose density, averaged over the cell, is the cell's probability.
    if grid is None:
        return x
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) - 0.5
    return x + noise * grid.to(x.dtype)


def _grads_finite(flow: Flow) -> bool:
    return all(
        bool(torch.all(torch.isfinite(p.grad))) for p in flow.parameters() if p.grad is not None
    )


def fit(
    flow: Flow,
    x: Tensor,
    *,
    context: Tensor | None = None,
    sample_weight: Tensor | None = None,
    max_epochs: int = 200,
    batch_size: int | None = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    lr_schedule: Literal["cosine", "constant"] = "cosine",
    val_fraction: float = 0.1,
    patience: int = 20,
    clip_norm: float | None = 10.0,
    max_recoveries: int = 5,
    seed: int = 0,
    show_progress: bool = True,
) -> History:
    r"""Fit ``flow`` to the rows of ``x`` by minimising the mean negative log-likelihood.

    Adam runs on shuffled mini-batches. A fraction of the rows is held out; after each
    epoch the validation loss decides early stopping, and at the end the flow holds the
    parameters of the best validation epoch. Without validation rows it keeps the last
    parameters. Rounded features (the flow's ``grid``) get fresh uniform dequantisation
    noise in every epoch and fixed noise for validation.

    A non-finite loss or gradient rolls the parameters and optimizer state back to the
    start of the epoch and halves the learning rate. After ``max_recoveries`` such
    events :class:`TrainingError` is raised.

    Arguments:
        flow: The flow to train in place.
        x: Data of shape :math:`(N, D)`.
        context: Context of shape :math:`(N, C)` for a conditional flow.
        sample_weight: Non-negative row weights of shape :math:`(N,)`; the loss is the
            weighted mean, for training and validation alike.
        max_epochs: The number of passes over the training rows, at most.
        batch_size: Rows per optimizer step; None uses all training rows at once.
        learning_rate: Adam's initial learning rate.
        weight_decay: Adam's L2 penalty.
        lr_schedule: "cosine" decays the learning rate to 0 over ``max_epochs``;
            "constant" keeps it.
        val_fraction: The share of rows held out for validation, in :math:`[0, 1)`.
        patience: Epochs without a better validation loss before training stops.
        clip_norm: Maximum gradient norm, or None for no clipping.
        max_recoveries: Non-finite events tolerated before giving up.
        seed: Seeds the split, the shuffling and the dequantisation noise. Initial
            parameters come from the flow as given, so seed torch before building it.
        show_progress: Whether to show a progress bar with train and validation NLL.

    Returns:
        The :class:`History` of the run.
    """
    x, context, sample_weight = _check_inputs(flow, x, context, sample_weight)
    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = split_indices(x.shape[0], val_fraction, generator)
    batch = train_idx.numel() if batch_size is None else min(batch_size, train_idx.numel())
    grid = flow.grid

    def take(t: Tensor | None, idx: Tensor) -> Tensor | None:
        return None if t is None else t[idx]

    x_val = _dequantize(x[val_idx], grid, generator)
    c_val, w_val = take(context, val_idx), take(sample_weight, val_idx)

    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = None
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    elif lr_schedule != "constant":
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant'; got {lr_schedule!r}.")

    history = History()
    best_loss, best_state = math.inf, None
    stale_epochs = 0
    start = time.perf_counter()
    bar = tqdm(range(max_epochs), disable=not show_progress, desc="fit", unit="epoch")
    for epoch in bar:
        good_state = _snapshot(flow, optimizer)
        train_loss = _train_epoch(flow, optimizer, x, context, sample_weight, train_idx,
                                  batch, grid, clip_norm, generator)
        if train_loss is None:
            history.recoveries += 1
            _restore(flow, optimizer, good_state)
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
            logger.warning(
                "Non-finite loss or gradient in epoch %d; rolled back and halved the "
                "learning rate to %.3g (recovery %d of %d).",
                epoch, optimizer.param_groups[0]["lr"], history.recoveries, max_recoveries,
            )
            if history.recoveries > max_recoveries:
                raise TrainingError(
                    f"The loss or its gradient was non-finite {history.recoveries} times. "
                    "Check the data for extreme values, or lower learning_rate."
                )
            continue
        history.train.append(train_loss)
        if scheduler is not None:
            scheduler.step()

        if val_idx.numel() == 0:
            history.best_epoch = epoch
            bar.set_postfix(train=f"{train_loss:.4f}")
            continue
        with torch.no_grad():
            val_loss = _weighted_nll(flow.log_density(x_val, c_val), w_val).item()
        history.val.append(val_loss)
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(flow.state_dict())
            history.best_epoch = epoch
            stale_epochs = 0
        else:
            stale_epochs += 1
            if stale_epochs >= patience:
                history.stopped_early = True
                break
    bar.close()

    if best_state is not None:
        flow.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history


def _train_epoch(flow, optimizer, x, context, weight, train_idx, batch, grid, clip_norm,
                 generator) -> float | None:
    """Run one epoch; return the mean training loss, or None after a non-finite step."""
    flow.train()
    order = train_idx[torch.randperm(train_idx.numel(), generator=generator)]
    total, rows = 0.0, 0
    for start in range(0, order.numel(), batch):
        idx = order[start:start + batch]
        xb = _dequantize(x[idx], grid, generator)
        cb = None if context is None else context[idx]
        wb = None if weight is None else weight[idx]
        loss = _weighted_nll(flow.log_density(xb, cb), wb)
        if not torch.isfinite(loss):
            return None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not _grads_finite(flow):
            return None
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(flow.parameters(), clip_norm)
        optimizer.step()
        total += loss.item() * idx.numel()
        rows += idx.numel()
    flow.eval()
    return total / rows


def _snapshot(flow: Flow, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    return copy.deepcopy(flow.state_dict()), copy.deepcopy(optimizer.state_dict())


def _restore(flow: Flow, optimizer: torch.optim.Optimizer, state: tuple[dict, dict]) -> None:
    flow.load_state_dict(state[0])
    lrs = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state[1])
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr


def _check_inputs(flow, x, context, weight):
    dtype = next(flow.parameters()).dtype
    x = torch.as_tensor(x, dtype=dtype)
    if x.ndim != 2 or x.shape[1] != flow.features:
        raise DataError(
            f"Expected data of shape (N, {flow.features}); got {tuple(x.shape)}."
        )
    if x.shape[0] < 2:
        raise DataError(f"Training needs at least 2 rows; got {x.shape[0]}.")
    if not bool(torch.all(torch.isfinite(x))):
        rows = torch.nonzero(~torch.isfinite(x).all(1)).flatten()[:5].tolist()
        raise DataError(f"Data contain NaN or infinite values, first in rows {rows}.")
    if context is not None:
        context = torch.as_tensor(context, dtype=dtype)
        if context.shape != (x.shape[0], flow.context_features):
            raise DataError(
                f"Expected context of shape ({x.shape[0]}, {flow.context_features}); "
                f"got {tuple(context.shape)}."
            )
        if not bool(torch.all(torch.isfinite(context))):
            raise DataError("The context contains NaN or infinite values.")
    elif flow.context_features:
        raise DataError(
            f"This flow is conditional: pass context of shape (N, {flow.context_features})."
        )
    if weight is not None:
        weight = torch.as_tensor(weight, dtype=dtype)
        if weight.shape != (x.shape[0],):
            raise DataError(
                f"Expected sample_weight of shape ({x.shape[0]},); got {tuple(weight.shape)}."
            )
        if not bool(torch.all(torch.isfinite(weight) & (weight >= 0))) or weight.sum() <= 0:
            raise DataError("sample_weight must be finite, non-negative and not all zero.")
    return x, context, weight
