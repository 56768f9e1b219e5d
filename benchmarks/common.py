"""Helpers shared by the benchmark scripts: environment, results files, training, tables."""

from __future__ import annotations

__all__ = [
    "RESULTS",
    "TrainingRun",
    "environment",
    "evaluate_log_prob",
    "load_results",
    "markdown_table",
    "parse_list",
    "standard_error",
    "store_result",
    "train",
]

import fcntl
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapters import LIBRARIES, Model, library_version

RESULTS = Path(__file__).resolve().parent / "results"


def parse_list(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    """Split a comma-separated option value and check each item against ``allowed``."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise SystemExit(
            f"error: invalid {what} {unknown or value!r}; choose from: {', '.join(allowed)}."
        )
    return items


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        output = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent, check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "../src"], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout.strip()
    return output.stdout.strip() + ("+uncommitted" if dirty else "")


def environment() -> dict[str, Any]:
    """Describe the machine and the software versions a result was measured with."""
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flowfit_commit": _git_commit(),
        "versions": {name: library_version(name) for name in LIBRARIES},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def load_results(path: Path) -> dict[str, Any]:
    """Read a results file: ``{"runs": {key: record}}``, empty when the file is missing."""
    if not path.exists():
        return {"runs": {}}
    return json.loads(path.read_text())


def store_result(path: Path, key: str, record: dict[str, Any]) -> None:
    """Add or replace one record in a results file, rewriting it atomically.

    The file is read again just before the write, under a lock, so separate invocations
    that write different keys accumulate their records.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The lock keeps two scripts that write to one file at once from losing a record.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(path)
        results["runs"][key] = record
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(results, indent=1, sort_keys=True))
        os.replace(temporary, path)


def standard_error(values: np.ndarray) -> float:
    """Return the standard error of the mean of ``values``."""
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


@dataclass
class TrainingRun:
    """Outcome of a training run: steps taken, seconds spent, and whether it diverged."""

    steps: int
    seconds: float
    final_loss: float
    diverged: bool


def _batches(rows: int, batch_size: int, seed: int):
    """Yield row indices of mini-batches, reshuffling at every pass over the rows."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(rows, generator=generator)
        for start in range(0, rows - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def train(
    model: Model,
    x: torch.Tensor,
    *,
    steps: int | None,
    seconds: float | None = None,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> TrainingRun:
    """Fit ``model`` to ``x`` of shape :math:`(N, D)` by Adam on the mean negative log-likelihood.

    Every library gets this same loop: the same mini-batches (drawn from ``seed``), plain
    Adam with a constant learning rate, no gradient clipping and no early stopping.
    Training stops after ``steps`` steps, or once ``seconds`` of wall-clock time have
    passed, whichever comes first; at least one of the two must be given. A non-finite
    loss stops the run and marks it diverged.
    """
    if steps is None and seconds is None:
        raise ValueError("train needs steps, seconds or both; got neither.")
    module = model.module
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    batches = _batches(x.shape[0], min(batch_size, x.shape[0]), seed)
    done = 0
    loss_value = math.nan
    diverged = False
    start = time.perf_counter()
    while steps is None or done < steps:
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
        loss = -model.log_prob(x[next(batches)]).mean()
        if not torch.isfinite(loss):
            diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
        if done % 100 == 0 or done == steps:
            loss_value = loss.item()
    module.eval()
    return TrainingRun(done, time.perf_counter() - start, loss_value, diverged)


def evaluate_log_prob(model: Model, x: torch.Tensor, chunk: int = 8192) -> np.ndarray:
    """Return the model's log-density of every row of ``x``, as float64, in chunks."""
    parts = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            parts.append(model.log_prob(x[start : start + chunk]).double().cpu().numpy())
    return np.concatenate(parts)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """Format a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
