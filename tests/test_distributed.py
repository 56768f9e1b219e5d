"""Distributed data parallel training on real processes over gloo on 127.0.0.1."""

import subprocess
import sys
from pathlib import Path

import safetensors.torch
import torch

from flowfit.training.distributed import DistributedSetup, shard, torchrun_command

WORKER = Path(__file__).parent / "workers" / "ddp_fit.py"
sys.path.insert(0, str(WORKER.parent))


def run_torchrun(nproc: int, arguments: list[str], timeout: float = 240) -> None:
    command = torchrun_command(nproc, [])
    command = command[: command.index("-m", 3)] + arguments
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_shards_cover_batch_once():
    batch = torch.arange(11)
    parts = [shard(batch, DistributedSetup(rank, 3)) for rank in range(3)]

    assert torch.equal(torch.cat(parts), batch)
    assert [p.numel() for p in parts] == [4, 3, 4]


def test_two_processes_match_one(tmp_path, float64):
    from ddp_fit import train

    output = tmp_path / "ddp.safetensors"
    run_torchrun(2, [str(WORKER), str(output)])
    distributed = safetensors.torch.load_file(str(output))
    flow, history = train()

    for name, tensor in flow.state_dict().items():
        assert torch.allclose(distributed[name], tensor, atol=1e-5, rtol=0), name
    assert torch.allclose(distributed["val"], torch.tensor(history.val, dtype=torch.float64), atol=1e-8, rtol=0)
