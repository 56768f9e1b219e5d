"""How far the arithmetic lets a MAF go: flowfit and zuko against a bare stack of layers.

A MAF of 5 layers with MADE conditioners of two hidden layers of width 64 does, per
layer, four dense matrix products. This script times those products alone (the same
shapes, no masks, no transformer, no log-determinant) beside flowfit's and zuko's MAF,
for ``log_prob`` at batch 4096 and for a training step (forward, backward, Adam) at
batch 512. No MAF with these layers can beat the bare stack, so
``zuko / bare`` is the largest speed-up over zuko that this architecture allows on
the machine. Functions run interleaved, and the medians are printed.

Example:
    python benchmarks/speed_floor.py --features 32 --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters import build  # noqa: E402

LAYERS = 5
WIDTH = 64


def bare_stack(features: int) -> nn.ModuleList:
    """Return the MAF's dense layers, without masks: per flow layer D->w->w->w->2D."""
    shapes = [(features, WIDTH), (WIDTH, WIDTH), (WIDTH, WIDTH), (WIDTH, 2 * features)]
    return nn.ModuleList(nn.Linear(a, b) for _ in range(LAYERS) for a, b in shapes)


def stack_output(stack: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Run every flow layer's conditioner on ``x`` and sum the outputs."""
    total = x.new_zeros(())
    for start in range(0, len(stack), 4):
        h = x
        for i, layer in enumerate(stack[start:start + 4]):
            h = layer(h)
            if i < 3:
                h = h.relu()
        total = total + h.sum()
    return total


def train_step(loss: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    loss().backward()
    optimizer.step()


def medians(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Run the functions interleaved ``repeats`` times; return median seconds per call."""
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=32, help="Data dimension D.")
    parser.add_argument("--repeats", type=int, default=50, help="Interleaved repetitions.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    flows = {library: build(library, "maf", args.features) for library in ("flowfit", "zuko")}
    stack = bare_stack(args.features)
    x_eval = torch.randn(4096, args.features)
    x_train = torch.randn(512, args.features)

    with torch.no_grad():
        evaluation = {"bare stack": lambda: stack_output(stack, x_eval)}
        for library, flow in flows.items():
            evaluation[library] = lambda flow=flow: flow.log_prob(x_eval)
        log_prob = medians(evaluation, args.repeats)

    optimizers = {name: torch.optim.Adam(flow.module.parameters(), lr=1e-3)
                  for name, flow in flows.items()}
    steps = {"bare stack": lambda opt=torch.optim.Adam(stack.parameters(), lr=1e-3):
             train_step(lambda: stack_output(stack, x_train), opt)}
    for library, flow in flows.items():
        steps[library] = lambda flow=flow, opt=optimizers[library]: train_step(
            lambda: -flow.log_prob(x_train).mean(), opt)
    training = medians(steps, args.repeats)

    print(f"MAF, {LAYERS} layers, hidden ({WIDTH}, {WIDTH}), D = {args.features}, "
          f"{args.threads} thread(s), medians of {args.repeats}")
    for title, times in (("log_prob, batch 4096", log_prob), ("train step, batch 512", training)):
        print(f"{title}: " + ", ".join(f"{name} {value * 1e3:.2f} ms"
                                       for name, value in times.items()))
        print(f"  flowfit / bare stack {times['flowfit'] / times['bare stack']:.2f}; "
              f"largest possible speed-up over zuko (zuko / bare stack) "
              f"{times['zuko'] / times['bare stack']:.2f}")


if __name__ == "__main__":
    main()
