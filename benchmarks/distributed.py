"""Training throughput of flowfit with 1 and with 2 processes (DDP over gloo on CPU).

Usage:
    python benchmarks/distributed.py [--epochs 3] [--processes 1,2] [--sharded]

Each process count runs as its own ``torchrun`` job on 127.0.0.1 that fits a MAF to the
bundled power-plant table with the same global batch, and reports rows per second of
training (forward, backward, gradient all-reduce and Adam). Results go to
``benchmarks/results/distributed.json`` and a Markdown table on standard output.

By default every process keeps the whole table in memory and takes its share of each
global batch (the replicated mode). With ``--sharded``, each process trains on its own block
of rows (``flowfit.fit(..., sharded=True)``), as ``flowfit fit --nproc N`` does for
``.npy`` and Parquet files, and the results go to ``distributed-sharded.json``. The
flow is built from the whole table in both modes, so only training differs.

Multi-node: start the same job on every machine with
``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
-m flowfit fit DATA -o MODEL``; flowfit reads its rank from torchrun's variables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def worker(epochs: int, output: Path, *, sharded: bool) -> None:
    """Fit once under torchrun; rank 0 writes the measured throughput to ``output``."""
    import torch

    from flowfit import datasets, fit
    from flowfit.io.shards import row_block
    from flowfit.preprocessing import make_flow
    from flowfit.training.distributed import detect

    torch.set_num_threads(1)
    x = torch.tensor(datasets.load("ccpp").to_numpy(), dtype=torch.float32)
    torch.manual_seed(0)
    flow = make_flow(x, flow="maf")
    setup = detect()
    rows = x
    if sharded:
        first, stop = row_block(x.shape[0], setup.rank, setup.world_size)
        rows = x[first:stop]
    start = time.perf_counter()
    history = fit(flow, rows, max_epochs=epochs, batch_size=512, learning_rate=1e-3,
                  val_fraction=0.1, patience=epochs + 1, show_progress=False, sharded=sharded)
    seconds = time.perf_counter() - start
    if setup.is_main:
        trained = len(history.train) * round(0.9 * x.shape[0])
        output.write_text(json.dumps({
            "processes": setup.world_size, "sharded": sharded, "epochs": len(history.train),
            "seconds": seconds, "rows_per_second": trained / seconds,
            "final_val_nll": history.val[-1],
        }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per run.")
    parser.add_argument("--processes", default="1,2", help="Comma-separated process counts.")
    parser.add_argument("--sharded", action="store_true",
                        help="Train each process on its own block of rows.")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.epochs, args.worker, sharded=args.sharded)
        return

    from flowfit.training.distributed import free_port

    RESULTS.mkdir(exist_ok=True)
    rows = []
    for count in [int(p) for p in args.processes.split(",")]:
        output = RESULTS / f"distributed-{count}.tmp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                   "--nproc-per-node", str(count), "--master-addr", "127.0.0.1",
                   "--master-port", str(free_port()), __file__,
                   "--epochs", str(args.epochs), "--worker", str(output),
                   *(["--sharded"] if args.sharded else [])]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append(json.loads(output.read_text()))
        output.unlink()
    base = rows[0]["rows_per_second"]
    print("| processes | epochs | seconds | rows/s | speed-up | final val NLL |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['processes']} | {row['epochs']} | {row['seconds']:.1f} | "
              f"{row['rows_per_second']:.0f} | {row['rows_per_second'] / base:.2f} | "
              f"{row['final_val_nll']:.4f} |")
    name = "distributed-sharded.json" if args.sharded else "distributed.json"
    (RESULTS / name).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
