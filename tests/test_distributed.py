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


def test_cli_nproc_matches_one_process(tmp_path):
    from flowfit import FlowDensity, datasets

    data = datasets.path("old_faithful")
    models = {}
    for nproc in (1, 2):
        output = tmp_path / f"model-{nproc}.flowfit"
        command = [sys.executable, "-m", "flowfit", "fit", str(data), "--flow", "maf",
                   "--epochs", "5", "--float64", "--quiet", "--nproc", str(nproc),
                   "-o", str(output)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240,
                                check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        models[nproc] = FlowDensity.load(output)
    rows = datasets.load("old_faithful")
    one = models[1].score_samples(rows)
    two = models[2].score_samples(rows)

    assert one.shape == (272,)
    assert abs(one - two).max() < 1e-6
