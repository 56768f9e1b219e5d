"""Distributed data parallel training: process groups, collectives and launching.

flowfit trains across processes with PyTorch's own engine: each process wraps the flow in
:class:`torch.nn.parallel.DistributedDataParallel`, and ``torchrun`` (or ``flowfit fit
--nproc N``, which runs torchrun's launcher) starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.

The data reach the processes in one of two ways.

* Replicated: every process holds the whole table, draws the same global batch order
  from the same seed and takes a contiguous share of each global batch (:func:`shard`).
  Two processes then follow the steps of one process with the same batch size.
* Sharded: every process holds only its own rows (:mod:`flowfit.io.shards` reads them),
  splits them into training and validation rows and shuffles them with a random stream
  of its own (:func:`rank_seed`). The processes agree on the number of steps per epoch,
  and in each step every process contributes an equal part of its shuffled training
  rows, so a global batch has about ``batch_size`` rows. The column statistics come
  from a sample pooled from all processes and from sums over all rows
  (:func:`flowfit.preprocessing.choose_columns_sharded`).

In both, each process scales its summed loss by ``world_size`` over the global batch's
total weight, and DistributedDataParallel averages the gradients over the processes, so
every step follows the gradient of the global batch's mean loss.
"""

from __future__ import annotations

__all__ = [
    "DistributedSetup",
    "ProcessFailedError",
    "all_gather_object",
    "all_reduce_max",
    "all_reduce_sum",
    "detect",
    "free_port",
    "initialize",
    "rank_seed",
    "run_local",
    "shard",
    "shutdown",
    "torchrun_arguments",
    "torchrun_command",
    "wrap",
]

import atexit
import datetime
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from flowfit.errors import FlowfitError

# How long a collective operation waits for the other processes before failing. A process
# that dies makes the others fail after this long instead of hanging for ever.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class DistributedSetup:
    """The position of this process in a distributed run; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows progress and writes files."""
        return self.rank == 0


def detect() -> DistributedSetup:
    """Read the setup from the environment variables that ``torchrun`` sets."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as error:
        raise RuntimeError(f"Invalid torchrun environment variable: {error}.") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise RuntimeError(f"Invalid distributed setup: RANK={rank}, WORLD_SIZE={world_size}.")
    return DistributedSetup(rank, world_size, local_rank)


def initialize(setup: DistributedSetup, device: torch.device | str = "cpu", *,
               timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> None:
    """Join the process group for a flow on ``device``; nothing for one process.

    A flow on a CUDA device gets nccl, and every other flow gets gloo, whether or not the
    machine has a GPU. Under torchrun each process of a GPU run should hold its flow on
    ``cuda:LOCAL_RANK``.
    """
    if not setup.enabled or dist.is_initialized():
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    atexit.register(_leave_group)


def shutdown(setup: DistributedSetup) -> None:
    """Leave the process group once every process has finished; nothing for one process.

    Every process must call it, because it waits for the others first. A process that
    leaves while another still uses the group can abort (gloo, torch 2.13).
    """
    if not (setup.enabled and dist.is_initialized()):
        return
    try:
        dist.barrier()
    except RuntimeError:
        # Another process failed first, and the launcher reports that failure.
        return
    dist.destroy_process_group()


def _leave_group() -> None:
    # A process that exits without destroying its gloo group can abort during the
    # interpreter's teardown. Without a barrier, this cannot hang after an error.
    if dist.is_initialized():
        dist.destroy_process_group()


class LogDensity(nn.Module):
    """The flow's continuous log-density as a module's forward, which DDP wraps."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.flow.log_density(x, context)


def wrap(flow: nn.Module, setup: DistributedSetup, device: torch.device | str = "cpu"
         ) -> nn.Module:
    """Return a module computing ``flow.log_density``, in DDP when several processes train.

    DistributedDataParallel copies rank 0's parameters and buffers to every process
    here, so all processes start from the same flow.
    """
    module = LogDensity(flow)
    if not setup.enabled:
        return module
    device = torch.device(device)
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def shard(batch: Tensor, setup: DistributedSetup) -> Tensor:
    """Return this process's contiguous share of a global batch of row indices.

    Shares differ in size by at most one row; a share may be empty when the batch has
    fewer rows than there are processes.
    """
    if not setup.enabled:
        return batch
    bounds = torch.linspace(0, batch.numel(), setup.world_size + 1).round().long()
    return batch[bounds[setup.rank] : bounds[setup.rank + 1]]


def all_reduce_sum(values: Tensor, setup: DistributedSetup) -> Tensor:
    """Sum ``values`` over all processes; every process gets the result."""
    return _all_reduce(values, setup, dist.ReduceOp.SUM)


def all_reduce_max(values: Tensor, setup: DistributedSetup) -> Tensor:
    """Take the element-wise maximum of ``values`` over all processes; every process gets it."""
    return _all_reduce(values, setup, dist.ReduceOp.MAX)


def _all_reduce(values: Tensor, setup: DistributedSetup, op: dist.ReduceOp) -> Tensor:
    if not setup.enabled:
        return values
    reduced = values.to(_collective_device(), copy=True)
    dist.all_reduce(reduced, op=op)
    return reduced.to(values.device)


def _collective_device() -> torch.device:
    # nccl reduces CUDA tensors only, and gloo is used for flows on the CPU.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_object(value: Any, setup: DistributedSetup) -> list[Any]:
    """Return the picklable ``value`` of every process, in rank order, on every process."""
    if not setup.enabled:
        return [value]
    gathered: list[Any] = [None] * setup.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def rank_seed(seed: int, rank: int) -> int:
    """Return a seed for process ``rank``'s own random stream, derived from ``seed``.

    NumPy's :class:`~numpy.random.SeedSequence` mixes the two numbers, so the streams
    of different ranks, and of nearby seeds, are independent in practice.
    """
    sequence = np.random.SeedSequence([seed % 2**64, rank])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def torchrun_arguments(nproc: int, arguments: list[str]) -> list[str]:
    """Return torchrun's arguments that run ``flowfit ARGUMENTS`` on ``nproc`` local processes."""
    return [
        "--nnodes", "1",
        "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
        "-m", "flowfit", *arguments,
    ]


def torchrun_command(nproc: int, arguments: list[str]) -> list[str]:
    """Return the ``torchrun`` command that runs ``flowfit ARGUMENTS`` on ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_arguments(nproc, arguments)]


class ProcessFailedError(FlowfitError, RuntimeError):
    """A process of a run started by :func:`run_local` failed, so the run was stopped.

    Attributes:
        rank: The rank of the process that failed first.
        exit_code: Its exit status; a negative value -N means it was killed by signal N.
    """

    def __init__(self, rank: int, exit_code: int, world_size: int) -> None:
        if exit_code < 0:
            name = _signal_name(-exit_code)
            outcome = f"was killed by signal {-exit_code} ({name})"
            if -exit_code == signal.SIGKILL:
                outcome += ", which the system's out-of-memory killer sends, among others"
        else:
            outcome = f"exited with code {exit_code}"
        super().__init__(
            f"The process of rank {rank} (of {world_size}) {outcome}, so the launcher stopped "
            "the other processes. Its messages, if any, are above."
        )
        self.rank = rank
        self.exit_code = exit_code


# Signals that torch's elastic launcher handles while it runs: it passes them on to the
# processes and raises SignalException.
LAUNCHER_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


def run_local(nproc: int, arguments: list[str]) -> int:
    """Run ``flowfit ARGUMENTS`` on ``nproc`` local processes with torchrun's launcher.

    The launcher runs in this process, so a failure ends with one
    :class:`ProcessFailedError` and not with torchrun's traceback. When one process
    fails, the launcher ends the others at once, so none waits for it until the
    collective timeout.

    Returns:
        0 when every process succeeded, or 128 plus the number of a signal that this
        process received, such as SIGINT for Ctrl-C. The launcher passes such a signal
        on to the processes and waits for them to exit.

    Raises:
        ProcessFailedError: A process exited with a non-zero status or was killed.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    handlers = {name: signal.getsignal(getattr(signal, name))
                for name in LAUNCHER_SIGNALS if hasattr(signal, name)}
    threads_set = "OMP_NUM_THREADS" not in os.environ
    # One thread per process unless the user chose otherwise. Setting it also keeps
    # torchrun from printing its notice about the variable.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The launcher logs each stopped process as a warning and each failure as an error.
    # ProcessFailedError reports the failure instead, so those records are dropped.
    disabled = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        run(parse_args(torchrun_arguments(nproc, arguments)))
    except ChildFailedError as error:
        rank, failure = _first_failure(error.failures)
        raise ProcessFailedError(rank, failure.exitcode, nproc) from None
    except SignalException as error:
        return 128 + int(error.sigval)
    finally:
        logging.disable(disabled)
        if threads_set:
            os.environ.pop("OMP_NUM_THREADS", None)
        # The launcher installs its own signal handlers; put the previous ones back.
        for name, handler in handlers.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)
    return 0


def _first_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """Return the rank and record of the failure that caused the others.

    The launcher ends the other processes with SIGTERM after the first failure, so a
    process that exited with an error comes first, then one killed by another signal,
    and the earliest of those.
    """
    def cause_order(rank: int) -> tuple[int, float]:
        code = failures[rank].exitcode
        if code > 0:
            kind = 0
        elif code != -signal.SIGTERM:
            kind = 1
        else:
            kind = 2
        return kind, failures[rank].timestamp

    rank = min(failures, key=cause_order)
    return rank, failures[rank]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
