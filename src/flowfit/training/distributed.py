"""Distributed data parallel training: process groups, sharding and launching.

flowfit trains across processes with PyTorch's own engine: each process wraps the flow in
:class:`torch.nn.parallel.DistributedDataParallel`, and ``torchrun`` (or ``flowfit fit
--nproc N``, which calls it) starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.

Every process draws the same global batch order from the same seed and takes a
contiguous share of each global batch. Each process scales its summed loss by
``world_size / global_rows``, and DistributedDataParallel averages gradients over the
processes, so every step equals a one-process step on the whole global batch.
"""

from __future__ import annotations

__all__ = [
    "DistributedSetup",
    "all_reduce_sum",
    "detect",
    "free_port",
    "initialize",
    "shard",
    "torchrun_command",
    "wrap",
]

import datetime
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

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


def initialize(setup: DistributedSetup, *, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> None:
    """Join the process group: nccl on GPU machines, gloo on CPU; nothing for one process."""
    if not setup.enabled or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(setup.local_rank)
    dist.init_process_group(backend, timeout=timeout)


class LogDensity(nn.Module):
    """The flow's continuous log-density as a module's forward, which DDP wraps."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.flow.log_density(x, context)


def wrap(flow: nn.Module, setup: DistributedSetup) -> nn.Module:
    """Return a module computing ``flow.log_density``, in DDP when several processes train.

    DistributedDataParallel copies rank 0's parameters and buffers to every process
    here, so all processes start from the same flow.
    """
    module = LogDensity(flow)
    if not setup.enabled:
        return module
    device_ids = [setup.local_rank] if torch.cuda.is_available() else None
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
    if not setup.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def torchrun_command(nproc: int, arguments: list[str]) -> list[str]:
    """Return the ``torchrun`` command that runs ``flowfit ARGUMENTS`` on ``nproc`` local processes."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1",
        "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
        "-m", "flowfit", *arguments,
    ]
