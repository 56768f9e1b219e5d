"""Speed and peak memory of flowfit and the peer libraries, measured side by side.

Three measures, for MAF and NSF at 8 and 32 features:

* ``train``: optimizer steps per second, each step a ``log_prob`` forward pass on a batch
  of 512 rows, the backward pass and an Adam update;
* ``log_prob``: rows per second of ``log_prob`` on 4096 rows, without gradients;
* ``sample``: samples per second when drawing 4096 samples, without gradients.

The libraries run interleaved in one process (flowfit, zuko, nflows, normflows, then
again), so that a change in the machine's load affects all of them alike, and each rate
is the median over the repetitions. Every timing is taken twice, as wall-clock time and
as the CPU time of this process. On a machine shared with other work the CPU time is the
steadier of the two, because waiting for a processor does not count in it. Peak memory is the maximum of the bytes of live tensors allocated
during one call, from ``torch.profiler``'s memory records, measured once per call outside
the timed repetitions.

Example:
    python benchmarks/speed.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters import KINDS, LIBRARIES, Model, build, installed  # noqa: E402
from common import RESULTS, environment, parse_list, store_result  # noqa: E402

MEASURES = ("train", "log_prob", "sample")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libraries", default=",".join(LIBRARIES),
                        help="Comma-separated libraries; peers that are not installed are "
                        "skipped with a message.")
    parser.add_argument("--kinds", default=",".join(KINDS), help="Comma-separated flow kinds.")
    parser.add_argument("--features", default="8,32",
                        help="Comma-separated numbers of features.")
    parser.add_argument("--measures", default=",".join(MEASURES),
                        help="Comma-separated measures.")

    parser.add_argument("--repeats", type=int, default=7,
                        help="Timed repetitions of each measure per library.")
    parser.add_argument("--train-steps", type=int, default=5,
                        help="Optimizer steps in one timed repetition of 'train'.")
    parser.add_argument("--train-batch", type=int, default=512, help="Rows per training step.")
    parser.add_argument("--eval-rows", type=int, default=4096,
                        help="Rows per log_prob call and samples per sample call.")

    parser.add_argument("--layers", type=int, default=5, help="Autoregressive layers.")
    parser.add_argument("--hidden", type=int, default=64,
                        help="Units in each of the 2 hidden layers of every conditioner.")
    parser.add_argument("--bins", type=int, default=8, help="Spline bins (NSF).")

    parser.add_argument("--no-memory", action="store_true", help="Skip the peak memory runs.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    parser.add_argument("--output", type=Path, default=RESULTS / "speed.json",
                        help="Results file (JSON); the Markdown table goes beside it.")

    args = parser.parse_args(argv)
    args.libraries = parse_list(args.libraries, LIBRARIES, "library")
    args.kinds = parse_list(args.kinds, KINDS, "flow kind")
    args.measures = parse_list(args.measures, MEASURES, "measure")
    try:
        args.features = [int(f) for f in args.features.split(",")]
    except ValueError:
        raise SystemExit(f"error: --features must be integers; got {args.features!r}.") from None
    return args


def make_work(args: argparse.Namespace, model: Model, measure: str, features: int
              ) -> tuple[Callable[[], None], int]:
    """Return a callable doing one repetition of ``measure`` and the units it completes."""
    generator = torch.Generator().manual_seed(0)
    if measure == "train":
        x = torch.randn(args.train_batch, features, generator=generator)
        optimizer = torch.optim.Adam(model.module.parameters(), lr=1e-4)

        def train_steps() -> None:
            for _ in range(args.train_steps):
                loss = -model.log_prob(x).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        return train_steps, args.train_steps
    if measure == "log_prob":
        x = torch.randn(args.eval_rows, features, generator=generator)

        def evaluate() -> None:
            with torch.no_grad():
                model.log_prob(x)

        return evaluate, args.eval_rows

    def draw() -> None:
        with torch.no_grad():
            model.sample(args.eval_rows)

    return draw, args.eval_rows


def peak_memory(work: Callable[[], None]) -> float:
    """Return the peak bytes of live tensors allocated during ``work()``, in MiB."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        work()
    # Each event's self memory is the bytes it allocated (positive) or freed (negative),
    # apart from its children. In start order, their running sum is the live memory.
    records = sorted(
        (event.time_range.start, event.self_cpu_memory_usage)
        for event in profiler.events()
        if event.self_cpu_memory_usage
    )
    live = peak = 0
    for _, change in records:
        live += change
        peak = max(peak, live)
    return peak / 2**20


def time_once(work: Callable[[], None]) -> tuple[float, float]:
    """Return the wall-clock and process CPU seconds of one call of ``work``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_config(args: argparse.Namespace, libraries: list[str], kind: str, features: int,
                   measure: str) -> dict[str, dict]:
    """Time one measure for every library, interleaved; return a record per library."""
    works = {}
    records = {}
    for library in libraries:
        torch.manual_seed(0)
        model = build(library, kind, features, layers=args.layers, hidden=args.hidden,
                      bins=args.bins)
        work, units = make_work(args, model, measure, features)
        work()  # warm-up: first-call allocations and lazy initialisation
        works[library] = (work, units)
        records[library] = {"parameters": model.parameters, "units": units,
                            "wall": [], "cpu": []}
    for _ in range(args.repeats):
        for library in libraries:
            work, _ = works[library]
            wall, cpu = time_once(work)
            records[library]["wall"].append(wall)
            records[library]["cpu"].append(cpu)
    for library in libraries:
        work, units = works[library]
        record = records[library]
        record["rate_wall"] = units / statistics.median(record["wall"])
        record["rate_cpu"] = units / statistics.median(record["cpu"])
        record["peak_mib"] = None if args.no_memory else peak_memory(work)
    return records


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    libraries = installed(args.libraries)
    settings = {key: getattr(args, key) for key in (
        "repeats", "train_steps", "train_batch", "eval_rows", "layers", "hidden", "bins",
        "threads")}
    for kind in args.kinds:
        for features in args.features:
            for measure in args.measures:
                records = measure_config(args, libraries, kind, features, measure)
                summary = []
                for library, record in records.items():
                    record.update(library=library, kind=kind, features=features,
                                  measure=measure, settings=settings,
                                  environment=environment())
                    store_result(args.output, f"{kind}-{features}/{measure}/{library}", record)
                    summary.append(f"{library} {record['rate_cpu']:.4g}")
                print(f"{kind} D={features} {measure} per CPU second: {', '.join(summary)}",
                      flush=True)

    from make_tables import write_speed_markdown

    write_speed_markdown(args.output)


if __name__ == "__main__":
    main()
