"""Training progress output: a progress bar, JSON lines for scripts, or nothing.

The training loop creates one reporter with :func:`make_progress`, calls
:meth:`TrainingProgress.epoch_end` after every completed epoch and
:meth:`TrainingProgress.close` once at the end. Throughput is training rows per second
of wall time between two ``epoch_end`` calls, so it includes validation and any epoch
that was rolled back and retried.
"""

from __future__ import annotations

__all__ = [
    "PROGRESS_MODES",
    "BarProgress",
    "JsonLinesProgress",
    "QuietProgress",
    "TrainingProgress",
    "make_progress",
]

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm.auto import tqdm

PROGRESS_MODES = ("bar", "jsonl", "quiet")


class TrainingProgress:
    """Base class of the reporters: counts epochs and measures throughput.

    Arguments:
        max_epochs: The maximum number of epochs of the run, the bar's total.
        rows_per_epoch: Training rows processed in one epoch.
        initial_epoch: Epochs already completed, when a run resumes from a checkpoint.
        stream: The text stream for output, standard error by default.
        clock: A function returning seconds as a float, :func:`time.perf_counter` by
            default.
    """

    def __init__(
        self,
        *,
        max_epochs: int,
        rows_per_epoch: int,
        initial_epoch: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1; got {max_epochs}.")
        if rows_per_epoch < 0:
            raise ValueError(f"rows_per_epoch must be non-negative; got {rows_per_epoch}.")
        if not 0 <= initial_epoch <= max_epochs:
            raise ValueError(
                f"initial_epoch must be in [0, max_epochs={max_epochs}]; got {initial_epoch}."
            )
        self.max_epochs = max_epochs
        self.rows_per_epoch = rows_per_epoch
        self.epoch = initial_epoch
        self.stream = sys.stderr if stream is None else stream
        self._clock = clock
        self._start = clock()
        self._last = self._start

    def epoch_end(self, train_nll: float, val_nll: float | None = None) -> None:
        """Record one completed epoch with its mean training and validation NLL (nats/row)."""
        now = self._clock()
        seconds = now - self._last
        self._last = now
        self.epoch += 1
        rows_per_second = self.rows_per_epoch / seconds if seconds > 0 else math.inf
        self._show(train_nll, val_nll, rows_per_second, now - self._start)

    def close(self, *, best_epoch: int | None = None, stopped_early: bool = False) -> None:
        """End the output. ``best_epoch`` is 1-based, or None when unknown."""

    def _show(
        self, train_nll: float, val_nll: float | None, rows_per_second: float, elapsed: float
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _show.")

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class QuietProgress(TrainingProgress):
    """A reporter that writes nothing."""

    def _show(
        self, train_nll: float, val_nll: float | None, rows_per_second: float, elapsed: float
    ) -> None:
        pass


class BarProgress(TrainingProgress):
    """A tqdm bar over epochs whose postfix shows rows/s and the train and validation NLL."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bar = tqdm(
            total=self.max_epochs, initial=self.epoch, desc="fit", unit="epoch",
            file=self.stream, dynamic_ncols=True,
        )

    def _show(
        self, train_nll: float, val_nll: float | None, rows_per_second: float, elapsed: float
    ) -> None:
        parts = [f"{rows_per_second:,.0f} rows/s", f"train {train_nll:.4f}"]
        if val_nll is not None:
            parts.append(f"val {val_nll:.4f}")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)
        self._bar.update(1)

    def close(self, *, best_epoch: int | None = None, stopped_early: bool = False) -> None:
        self._bar.close()


class JsonLinesProgress(TrainingProgress):
    """One JSON object per line: ``"event": "epoch"`` per epoch, ``"event": "end"`` last.

    Epoch lines hold ``epoch`` (1-based), ``max_epochs``, ``train_nll``, ``val_nll``
    (null without validation rows), ``rows_per_second`` and ``elapsed_seconds``. The
    end line contains ``epochs``, ``best_epoch``, ``stopped_early`` and
    ``elapsed_seconds``. Non-finite numbers are written as null, so that every line is
    strict JSON.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closed = False

    def _show(
        self, train_nll: float, val_nll: float | None, rows_per_second: float, elapsed: float
    ) -> None:
        self._write({
            "event": "epoch",
            "epoch": self.epoch,
            "max_epochs": self.max_epochs,
            "train_nll": _finite_or_none(train_nll),
            "val_nll": _finite_or_none(val_nll),
            "rows_per_second": _finite_or_none(rows_per_second),
            "elapsed_seconds": _finite_or_none(elapsed),
        })

    def close(self, *, best_epoch: int | None = None, stopped_early: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._write({
            "event": "end",
            "epochs": self.epoch,
            "best_epoch": best_epoch,
            "stopped_early": bool(stopped_early),
            "elapsed_seconds": _finite_or_none(self._clock() - self._start),
        })

    def _write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, allow_nan=False) + "\n")
        self.stream.flush()


def make_progress(
    mode: str,
    *,
    max_epochs: int,
    rows_per_epoch: int,
    initial_epoch: int = 0,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainingProgress:
    """Return the reporter for ``mode``: "bar", "jsonl" or "quiet".

    The other arguments are those of :class:`TrainingProgress`.

    Raises:
        ValueError: ``mode`` is not one of :data:`PROGRESS_MODES`.
    """
    classes = {"bar": BarProgress, "jsonl": JsonLinesProgress, "quiet": QuietProgress}
    if mode not in classes:
        modes = ", ".join(PROGRESS_MODES)
        raise ValueError(f"progress mode must be one of {modes}; got {mode!r}.")
    return classes[mode](
        max_epochs=max_epochs, rows_per_epoch=rows_per_epoch, initial_epoch=initial_epoch,
        stream=stream, clock=clock,
    )


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
