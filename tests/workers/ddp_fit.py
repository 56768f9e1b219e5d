"""Fit a seeded MAF with flowfit.fit under torchrun and save its parameters from rank 0.

Usage: torchrun --nproc-per-node N ddp_fit.py OUTPUT.safetensors
The same function, run as a single process, gives the reference the test compares with.
"""

import sys

import safetensors.torch
import torch

from flowfit import fit
from flowfit.bijections import ActNorm, Chain
from flowfit.distributions import Flow
from flowfit.flows import MAF
from flowfit.training.distributed import detect, shutdown


def train(actnorm: bool = False) -> tuple[torch.nn.Module, object]:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(403, 2, generator=generator)
    x[:, 1] = 0.5 * x[:, 1] + x[:, 0] ** 2
    torch.manual_seed(1)
    flow = MAF(2, layers=2, hidden=[16, 16])
    if actnorm:
        # ActNorm initialises from data, which every process must do alike.
        flow = Flow(Chain([flow.bijection, ActNorm(2)]))
    history = fit(flow, x, max_epochs=4, batch_size=50, learning_rate=1e-2, val_fraction=0.2,
                  patience=100, seed=3, show_progress=False)
    return flow, history


if __name__ == "__main__":
    flow, history = train(actnorm="actnorm" in sys.argv[2:])
    if torch.distributed.get_rank() == 0:
        tensors = {name: t.detach().clone() for name, t in flow.state_dict().items()}
        tensors["val"] = torch.tensor(history.val)
        safetensors.torch.save_file(tensors, sys.argv[1])
    shutdown(detect())
