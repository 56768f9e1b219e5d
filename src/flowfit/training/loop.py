"""Maximum-likelihood training: mini-batch Adam on the negative log-likelihood.

The loop works in epochs. At the start of each epoch it captures the run's whole state:
parameters, optimizer, learning rate schedule, generator, history and best parameters.
That copy is what a non-finite loss or gradient rolls back to, and what an interrupted
run writes as its checkpoint. The same capture at the end of an epoch is the periodic
checkpoint that :func:`fit` can resume from.
"""

from __future__ import annotations

__all__ = ["History", "TrainingError", "TrainingInterrupted", "fit", "split_indices"]

import copy
import gc
import hashlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from flowfit.distributions import Flow
from flowfit.errors import CheckpointError, DataError, TrainingError
from flowfit.io.model_file import tensors_sha256
from flowfit.training import distributed
from flowfit.training.checkpoint import load_checkpoint, save_checkpoint
from flowfit.training.distributed import DistributedSetup
from flowfit.training.progress import make_progress

logger = logging.getLogger(__name__)


@dataclass
class History:
    """Per-epoch mean negative log-likelihoods (nats per row) and how training ended.

    ``train`` and ``val`` have one entry per completed epoch; an epoch that was rolled
    back after a non-finite loss is retried and has no entry. ``val`` is empty when no
    validation rows were held out. ``best_epoch`` is the 0-based epoch whose parameters
    the flow has after :func:`fit`, or -1 when no epoch completed.
    """

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    recoveries: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": list(self.train),
            "val": list(self.val),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "recoveries": self.recoveries,
            "seconds": self.seconds,
        }


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`fit` when the run is interrupted, usually by Ctrl-C.

    It is a :class:`KeyboardInterrupt`, so code that does not catch it stops as usual.
    When it is raised, the flow has the best parameters so far: those of the last
    completed epoch without validation rows, or the initial ones if no epoch completed.

    Attributes:
        history: The :class:`History` up to the last completed epoch.
        checkpoint: The checkpoint written for ``resume_from``, or None.
    """

    def __init__(self, history: History, checkpoint: Path | None) -> None:
        super().__init__("training interrupted")
        self.history = history
        self.checkpoint = checkpoint


@dataclass
class _Data:
    """The rows of one run, split once into training and validation rows.

    In a sharded run these are this process's rows; ``train_rows``, ``val_rows`` and
    ``steps`` count over all processes either way.
    """

    x: Tensor
    context: Tensor | None
    weight: Tensor | None
    train_idx: Tensor
    val_idx: Tensor
    x_val: Tensor
    context_val: Tensor | None
    weight_val: Tensor | None
    batch: int
    grid: Tensor | None
    train_rows: int
    val_rows: int
    steps: int
    sharded: bool = False
    setup: DistributedSetup = field(default_factory=DistributedSetup)


@dataclass
class _Progress:
    """The run's state that is not held by the flow, the optimizer or a generator."""

    epoch: int = 0
    history: History = field(default_factory=History)
    best_loss: float = math.inf
    best_flow: dict[str, Tensor] | None = None
    stale_epochs: int = 0


def split_indices(n: int, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return shuffled train and validation row indices; validation gets ``val_fraction``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}.")
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n - n_val < 1:
        raise DataError(f"{n} rows leave none for training with val_fraction={val_fraction}.")
    return order[n_val:], order[:n_val]


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
    progress: Literal["bar", "jsonl", "quiet"] = "bar",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    resume_from: str | Path | None = None,
    distributed_setup: DistributedSetup | None = None,
    sharded: bool = False,
) -> History:
    r"""Fit ``flow`` to the rows of ``x`` by minimising the mean negative log-likelihood.

    Adam runs on shuffled mini-batches. A fraction of the rows is held out. After each
    epoch the validation loss decides early stopping, and at the end the flow has the
    parameters of the best validation epoch. Without validation rows it keeps the last
    parameters. Rounded features (the flow's ``grid``) get fresh uniform dequantisation
    noise in every epoch and fixed noise for validation.

    A non-finite loss or gradient rolls the parameters and optimizer state back to the
    start of the epoch, halves the learning rate, logs a warning and retries the epoch.
    ``max_recoveries`` such events are tolerated; the next one raises
    :class:`~flowfit.errors.TrainingError`, with the flow at the last good parameters.

    With ``checkpoint``, the run's state is written there atomically every
    ``checkpoint_every`` epochs, and when the run is interrupted. ``resume_from`` continues
    the run a checkpoint describes; given the same flow, data and arguments, the result
    is identical to that of an uninterrupted run.

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
        show_progress: Whether to report progress; False is the same as
            ``progress="quiet"``.
        progress: "bar" shows a progress bar with throughput and the train and
            validation NLL, "jsonl" writes one JSON object per epoch to standard error
            for scripts, and "quiet" writes nothing.
        checkpoint: The file to write checkpoints to, or None for no checkpoints.
        checkpoint_every: Epochs between checkpoints.
        resume_from: A checkpoint to continue from, usually the same file as
            ``checkpoint``.
        distributed_setup: This process's place in a distributed data parallel run;
            None reads it from the variables ``torchrun`` sets, so a script started by
            ``torchrun`` trains on all its processes. With more than one process, every
            process passes the same data and seed; each computes its share of every
            global batch of ``batch_size`` rows, DistributedDataParallel averages the
            gradients, and only rank 0 shows progress and writes checkpoints.
        sharded: Whether each process passes only its own rows, in a run on several
            processes. Each process then splits its rows into training and validation
            rows and shuffles them with a random stream of its own, derived from
            ``seed`` and its rank. The processes agree on the number of steps per
            epoch, ``ceil(training rows / batch_size)`` over all processes, and each
            step takes an equal part of every process's shuffled rows. The loss is the
            weighted mean over all processes' rows of the step, and the validation loss
            over all their validation rows. Resuming needs the same number of
            processes and the same rows in each. Ignored in a single process.

    Returns:
        The :class:`History` of the run.

    Raises:
        TrainingError: The loss or gradient was non-finite more than
            ``max_recoveries`` times.
        CheckpointError: ``resume_from`` is missing or corrupt, or was written by a run
            with other data, arguments or flow architecture.
        TrainingInterrupted: A :class:`KeyboardInterrupt` arrived during training.
    """
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer; got {checkpoint_every!r}.")
    checkpoint = None if checkpoint is None else Path(checkpoint)
    setup = distributed.detect() if distributed_setup is None else distributed_setup
    sharded = sharded and setup.enabled
    x, context, sample_weight = _check_inputs(flow, x, context, sample_weight, sharded=sharded)
    device = _device_of(flow, x)
    distributed.initialize(setup, device)
    generator = torch.Generator().manual_seed(seed)
    if sharded:
        data = _split_shard(flow, x, context, sample_weight, val_fraction, batch_size, seed,
                            setup)
    else:
        data = _split(flow, x, context, sample_weight, val_fraction, batch_size, generator)
    data.setup = setup
    _initialize_from_data(flow, data)
    model = distributed.wrap(flow, setup, device)
    if not setup.is_main:
        show_progress = False
        checkpoint = None
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = _make_scheduler(optimizer, lr_schedule, max_epochs)
    settings = {
        "max_epochs": max_epochs, "batch_size": batch_size, "learning_rate": learning_rate,
        "weight_decay": weight_decay, "lr_schedule": lr_schedule,
        "val_fraction": val_fraction, "patience": patience, "clip_norm": clip_norm,
        "max_recoveries": max_recoveries, "seed": seed, "dtype": str(x.dtype),
        "data_sha256": _data_sha256(x, context, sample_weight, setup, sharded=sharded),
    }
    if sharded:
        # The shards, and so each process's split, depend on the number of processes.
        settings["shards"] = setup.world_size

    state = _Progress()
    if resume_from is not None:
        saved = load_checkpoint(resume_from)
        _check_settings(saved, settings, resume_from)
        state = _restore(saved, flow, optimizer, scheduler, generator, resume_from)
        logger.info("Resumed training from %s after epoch %d.", resume_from, state.epoch)

    history = state.history
    start = time.perf_counter() - history.seconds
    reporter = make_progress(
        progress if show_progress else "quiet", max_epochs=max_epochs,
        rows_per_epoch=data.train_rows, initial_epoch=state.epoch,
    )
    at_epoch_start = None
    try:
        while state.epoch < max_epochs and not history.stopped_early:
            at_epoch_start = _capture(flow, optimizer, scheduler, generator, state, settings)
            train_loss = _train_epoch(flow, model, optimizer, data, clip_norm, generator)
            if train_loss is None:
                _recover(flow, optimizer, at_epoch_start, state, max_recoveries)
                continue
            if scheduler is not None:
                scheduler.step()
            val_loss = _end_epoch(flow, data, train_loss, state, patience)
            reporter.epoch_end(train_loss, val_loss)
            if checkpoint is not None and state.epoch % checkpoint_every == 0:
                history.seconds = time.perf_counter() - start
                save_checkpoint(
                    checkpoint, _capture(flow, optimizer, scheduler, generator, state, settings)
                )
                logger.debug("Wrote checkpoint %s after epoch %d.", checkpoint, state.epoch)
    except KeyboardInterrupt:
        raise _interrupt(flow, at_epoch_start, state, checkpoint) from None
    finally:
        best = history.best_epoch + 1 if history.best_epoch >= 0 else None
        reporter.close(best_epoch=best, stopped_early=history.stopped_early)
        if setup.enabled:
            # DistributedDataParallel keeps hooks on the flow's parameters until it is
            # collected. Collecting it now, while the process group exists, keeps its
            # teardown out of interpreter exit, where processes were seen to abort.
            del model
            gc.collect()

    _keep_best(flow, state)
    history.seconds = time.perf_counter() - start
    return history


def _split(flow, x, context, weight, val_fraction, batch_size, generator) -> _Data:
    train_idx, val_idx = split_indices(x.shape[0], val_fraction, generator)
    batch = train_idx.numel() if batch_size is None else min(batch_size, train_idx.numel())
    return _make_data(flow, x, context, weight, train_idx, val_idx, generator, batch=batch,
                      train_rows=train_idx.numel(), val_rows=val_idx.numel())


def _make_data(flow, x, context, weight, train_idx: Tensor, val_idx: Tensor,
               generator: torch.Generator, *, batch: int, train_rows: int, val_rows: int
               ) -> _Data:
    """Return the run's rows with the validation rows dequantised once, from ``generator``."""
    return _Data(
        x=x, context=context, weight=weight, train_idx=train_idx, val_idx=val_idx,
        x_val=_dequantize(x[val_idx], flow.grid, generator),
        context_val=None if context is None else context[val_idx],
        weight_val=None if weight is None else weight[val_idx],
        batch=batch, grid=flow.grid, train_rows=train_rows, val_rows=val_rows,
        steps=math.ceil(train_rows / batch),
    )


def _split_shard(flow, x, context, weight, val_fraction, batch_size, seed: int,
                 setup: DistributedSetup) -> _Data:
    """Split this process's rows with its own stream; count the rows over all processes."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}.")
    generator = torch.Generator().manual_seed(distributed.rank_seed(seed, setup.rank))
    order = torch.randperm(x.shape[0], generator=generator)
    n_val = round(x.shape[0] * val_fraction)
    train_idx, val_idx = order[n_val:], order[:n_val]
    local_weight = x.shape[0] if weight is None else float(weight.sum())
    counts = torch.tensor([train_idx.numel(), n_val, x.shape[0], local_weight],
                          dtype=torch.float64)
    train_rows, val_rows, rows, total_weight = distributed.all_reduce_sum(counts, setup).tolist()
    if rows < 2:
        raise DataError(f"Training needs at least 2 rows; the processes hold {rows:.0f} in all.")
    if train_rows < 1:
        raise DataError(
            f"{rows:.0f} rows leave none for training with val_fraction={val_fraction}."
        )
    if not total_weight > 0:
        raise DataError("sample_weight must not be 0 on every row of every process.")
    train_rows, val_rows = int(train_rows), int(val_rows)
    batch = train_rows if batch_size is None else min(batch_size, train_rows)
    data = _make_data(flow, x, context, weight, train_idx, val_idx, generator, batch=batch,
                      train_rows=train_rows, val_rows=val_rows)
    data.sharded = True
    return data


def _make_scheduler(optimizer, lr_schedule: str, max_epochs: int):
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    if lr_schedule != "constant":
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant'; got {lr_schedule!r}.")
    return None


def _dequantize(x: Tensor, grid: Tensor | None, generator: torch.Generator) -> Tensor:
    # The validation rows get one fixed draw of the noise that _cell_noise explains.
    if grid is None:
        return x
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) - 0.5
    return x + noise.to(x.device) * grid.to(x.dtype)


def _initialize_from_data(flow: Flow, data: _Data) -> None:
    """Initialise data-dependent layers, such as ActNorm, before training starts.

    They use the first batch of training rows. Processes that hold the same rows get
    the same values, and in a sharded run DistributedDataParallel then copies rank 0's
    values to every process. Left to the first training step, each process would
    initialise from its own share of the batch, and the copies would differ.
    """
    waiting = [m for m in flow.modules()
               if isinstance(getattr(m, "initialized", None), Tensor) and not m.initialized]
    if not waiting or data.train_idx.numel() < 2:
        return
    rows = data.train_idx[:data.batch]
    context = None if data.context is None else data.context[rows]
    was_training = flow.training
    flow.train()
    with torch.no_grad():
        flow.log_density(data.x[rows], context)
    flow.train(was_training)


def _device_of(flow: Flow, x: Tensor) -> torch.device:
    """Return the device that training runs on: the flow's, which must hold the data too."""
    parameter = next(flow.parameters(), None)
    device = x.device if parameter is None else parameter.device
    if x.device != device:
        raise ValueError(
            f"The flow is on {device} but x is on {x.device}; move both to one device, "
            f"for example with flow.to(x.device)."
        )
    return device


def _grads_finite(flow: Flow) -> bool:
    return all(
        bool(torch.all(torch.isfinite(p.grad))) for p in flow.parameters() if p.grad is not None
    )


def _train_epoch(flow, model, optimizer, data: _Data, clip_norm, generator) -> float | None:
    """Run one epoch; return the mean training loss, or None after a non-finite step.

    ``model`` computes the flow's log-density, wrapped in DistributedDataParallel when
    several processes train. Each process evaluates its rows of every global batch,
    and its summed loss is scaled by ``world_size / global_weight``, so that the
    averaged gradient is the gradient of the global batch's weighted mean loss.
    """
    setup = data.setup
    flow.train()
    try:
        totals = torch.zeros(2, dtype=torch.float64)  # summed weighted loss, summed weight
        for xb, cb, weight in _local_batches(data, generator):
            summed = -(weight * model(xb, cb)).sum()
            local_weight = weight.sum().double()
            finite, batch_weight = _reduce_step(summed, local_weight, setup)
            if not finite:
                return None
            if not batch_weight > 0:
                continue  # every row of this global batch has weight 0
            loss = summed * setup.world_size / batch_weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not _grads_finite(flow):
                return None
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(flow.parameters(), clip_norm)
            optimizer.step()
            totals += torch.stack([summed.detach().double(), local_weight]).cpu()
    finally:
        flow.eval()
    totals = distributed.all_reduce_sum(totals, setup)
    return (totals[0] / totals[1]).item()


def _local_batches(data: _Data, generator: torch.Generator
                   ) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
    """Yield this process's rows of each step of one epoch: values, context and weights.

    Every process yields ``data.steps`` batches, some possibly empty, so all take the
    same number of optimizer steps.
    """
    if data.sharded:
        # Each process shuffles its own rows with a stream seeded from the shared
        # generator, so a checkpoint of that one generator restores every stream.
        epoch_seed = int(torch.randint(2**62, (1,), generator=generator).item())
        own = torch.Generator().manual_seed(distributed.rank_seed(epoch_seed, data.setup.rank))
        order = data.train_idx[torch.randperm(data.train_idx.numel(), generator=own)]
        for step in range(data.steps):
            # Integer bounds split the rows into parts that differ by at most one row.
            start = step * order.numel() // data.steps
            stop = (step + 1) * order.numel() // data.steps
            rows = order[start:stop]
            yield _batch_rows(data, rows, _cell_noise(rows.numel(), data, own))
        return
    order = data.train_idx[torch.randperm(data.train_idx.numel(), generator=generator)]
    for start in range(0, order.numel(), data.batch):
        batch = order[start:start + data.batch]
        # Every process draws the noise of the whole global batch, so the shared
        # generators stay in step.
        noise = _cell_noise(batch.numel(), data, generator)
        rows = distributed.shard(batch, data.setup)
        mine = distributed.shard(torch.arange(batch.numel()), data.setup)
        yield _batch_rows(data, rows, None if noise is None else noise[mine])


def _batch_rows(data: _Data, rows: Tensor, noise: Tensor | None
                ) -> tuple[Tensor, Tensor | None, Tensor]:
    x = data.x[rows] if noise is None else data.x[rows] + noise
    context = None if data.context is None else data.context[rows]
    weight = torch.ones(rows.numel(), dtype=x.dtype, device=x.device) \
        if data.weight is None else data.weight[rows]
    return x, context, weight


def _cell_noise(rows: int, data: _Data, generator: torch.Generator) -> Tensor | None:
    # Uniform noise over each value's grid cell turns rounded data into a continuous
    # sample whose density, averaged over the cell, is the cell's probability.
    if data.grid is None:
        return None
    noise = torch.rand((rows, data.x.shape[1]), generator=generator, dtype=data.x.dtype) - 0.5
    return noise.to(data.x.device) * data.grid.to(data.x.dtype)


def _reduce_step(summed: Tensor, local_weight: Tensor, setup: DistributedSetup
                 ) -> tuple[bool, float]:
    """Return whether the loss is finite in every process, and the global batch's weight.

    One all-reduce carries both, so all processes skip a bad step alike.
    """
    finite = torch.isfinite(summed.detach()).double()
    reduced = distributed.all_reduce_sum(torch.stack([finite, local_weight]), setup)
    return bool(reduced[0].item() == setup.world_size), reduced[1].item()


def _end_epoch(flow, data: _Data, train_loss: float, progress: _Progress,
               patience: int) -> float | None:
    """Record a completed epoch: validate, keep the best parameters, decide on stopping.

    Returns the validation loss, or None without validation rows.
    """
    history = progress.history
    epoch = progress.epoch
    history.train.append(train_loss)
    progress.epoch += 1
    if data.val_rows == 0:
        history.best_epoch = epoch
        return None

    val_loss = _validation_loss(flow, data)
    history.val.append(val_loss)
    if not math.isfinite(val_loss):
        logger.warning(
            "The validation loss of epoch %d is %s: some validation rows have a log-density "
            "that is not finite. The epoch cannot be the best one.", epoch, val_loss,
        )
    if val_loss < progress.best_loss:
        progress.best_loss = val_loss
        progress.best_flow = _clone(flow.state_dict())
        history.best_epoch = epoch
        progress.stale_epochs = 0
        return val_loss
    progress.stale_epochs += 1
    if progress.stale_epochs >= patience:
        history.stopped_early = True
    return val_loss


def _validation_loss(flow: Flow, data: _Data) -> float:
    """Return the weighted mean validation NLL; processes share the rows and the sums."""
    rows = torch.arange(data.val_idx.numel())
    if not data.sharded:
        rows = distributed.shard(rows, data.setup)
    x = data.x_val[rows]
    context = None if data.context_val is None else data.context_val[rows]
    weight = torch.ones(rows.numel(), dtype=x.dtype, device=x.device) \
        if data.weight_val is None else data.weight_val[rows]
    with torch.no_grad():
        log_prob = flow.log_density(x, context)
        sums = torch.stack([-(weight * log_prob).sum().double(), weight.sum().double()])
    sums = distributed.all_reduce_sum(sums, data.setup)
    return (sums[0] / sums[1]).item()


def _recover(flow, optimizer, at_epoch_start: dict[str, Any], progress: _Progress,
             max_recoveries: int) -> None:
    """Roll back a failed epoch and halve the learning rate, or raise TrainingError."""
    history = progress.history
    history.recoveries += 1
    flow.load_state_dict(at_epoch_start["flow"])
    lrs = [0.5 * group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(at_epoch_start["optimizer"])
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    logger.warning(
        "Non-finite loss or gradient in epoch %d; rolled back to the parameters at the "
        "start of the epoch and halved the learning rate to %.3g (recovery %d of %d).",
        progress.epoch, lrs[0], history.recoveries, max_recoveries,
    )
    if history.recoveries > max_recoveries:
        raise TrainingError(
            f"The loss or its gradient was non-finite {history.recoveries} times, the last "
            f"in epoch {progress.epoch}, even after lowering the learning rate to "
            f"{lrs[0]:.3g}; the flow holds the parameters from before that epoch. Check the "
            "data for extreme values or outliers, rescale or transform them, lower "
            "learning_rate, or train in float64."
        )


def _keep_best(flow: Flow, progress: _Progress) -> None:
    """Load the best validation parameters into ``flow``, if any epoch had finite ones."""
    history = progress.history
    if progress.best_flow is not None:
        flow.load_state_dict(progress.best_flow)
    elif history.val:
        logger.warning(
            "No epoch had a finite validation loss; keeping the parameters of the last one."
        )
        history.best_epoch = len(history.train) - 1


def _interrupt(flow, at_epoch_start, progress, checkpoint) -> TrainingInterrupted:
    """Save the state at the start of the interrupted epoch; leave the best flow."""
    if at_epoch_start is None:
        # Interrupted before the first epoch started: the flow is unchanged since
        # fit() was called or the checkpoint was loaded.
        _keep_best(flow, progress)
        return TrainingInterrupted(progress.history, None)
    # The interrupted epoch may have changed the parameters and the progress record
    # part-way. The state captured at its start is consistent, so that state is saved.
    if checkpoint is not None:
        save_checkpoint(checkpoint, at_epoch_start)
        logger.info("Interrupted; wrote checkpoint %s at epoch %d.", checkpoint,
                    at_epoch_start["epoch"])
    flow.load_state_dict(at_epoch_start["flow"])
    progress_at_start = _progress_from(at_epoch_start)
    _keep_best(flow, progress_at_start)
    return TrainingInterrupted(progress_at_start.history, checkpoint)


def _clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def _capture(flow, optimizer, scheduler, generator, progress: _Progress,
             settings: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the run's whole state, in the form a checkpoint stores."""
    # best_flow is replaced, never modified in place, so sharing it is safe.
    return {
        "epoch": progress.epoch,
        "flow": _clone(flow.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": None if scheduler is None else copy.deepcopy(scheduler.state_dict()),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": progress.history.to_dict(),
        "best_loss": progress.best_loss,
        "best_flow": progress.best_flow,
        "stale_epochs": progress.stale_epochs,
        "settings": settings,
    }


def _progress_from(saved: dict[str, Any]) -> _Progress:
    return _Progress(
        epoch=int(saved["epoch"]),
        history=History(**saved["history"]),
        best_loss=float(saved["best_loss"]),
        best_flow=saved["best_flow"],
        stale_epochs=int(saved["stale_epochs"]),
    )


def _restore(saved, flow, optimizer, scheduler, generator, path) -> _Progress:
    """Load a checkpoint's state into the run's objects; return its progress record."""
    try:
        flow.load_state_dict(saved["flow"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        return _progress_from(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} does not fit this flow or optimizer ({error}). Start over without "
            "resuming, or resume with the flow that wrote the checkpoint."
        ) from None


def _check_settings(saved: dict[str, Any], settings: dict[str, Any], path) -> None:
    stored = saved.get("settings") if isinstance(saved, dict) else None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path} does not record the settings of its run.")
    changed = [key for key in settings if stored.get(key) != settings[key]]
    if not changed:
        return
    if "shards" in changed:
        raise CheckpointError(
            f"{path} was written by a sharded run on {stored.get('shards')} processes; "
            f"resume it on {stored.get('shards')} processes, or start over without resuming."
        )
    if "data_sha256" in changed:
        raise CheckpointError(
            f"{path} was written by a run on other data; resume with the same data and "
            "columns, or start over without resuming."
        )
    details = ", ".join(f"{key}={stored.get(key)!r} (now {settings[key]!r})" for key in changed)
    raise CheckpointError(
        f"{path} was written by a run with other settings: {details}. Resume with the "
        "same settings, or start over without resuming."
    )


def _data_sha256(x: Tensor, context: Tensor | None, weight: Tensor | None,
                 setup: DistributedSetup, *, sharded: bool) -> str:
    """Return the data's fingerprint; in a sharded run it covers every process's rows."""
    tensors = {"x": x}
    if context is not None:
        tensors["context"] = context
    if weight is not None:
        tensors["weight"] = weight
    digest = tensors_sha256(tensors)
    if not sharded:
        return digest
    digests = distributed.all_gather_object(digest, setup)
    return hashlib.sha256(" ".join(digests).encode()).hexdigest()


def _check_inputs(flow, x, context, weight, *, sharded: bool = False):
    """Return the inputs as tensors of the flow's dtype, or raise DataError.

    In a sharded run a process may hold fewer than 2 rows, even none. The row count
    over all processes is checked when the rows are split.
    """
    dtype = next(flow.parameters()).dtype
    x = torch.as_tensor(x, dtype=dtype)
    if x.ndim != 2 or x.shape[1] != flow.features:
        raise DataError(
            f"Expected data of shape (N, {flow.features}); got {tuple(x.shape)}."
        )
    if x.shape[0] < 2 and not sharded:
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
        valid = bool(torch.all(torch.isfinite(weight) & (weight >= 0)))
        # In a sharded run one process's weights may all be 0; _split_shard checks the sum.
        if not valid or (weight.sum() <= 0 and not sharded):
            raise DataError("sample_weight must be finite, non-negative and not all zero.")
    return x, context, weight
