"""``flowfit fit``: fit a flow to columns of a table and write a model file.

While it trains, the command keeps a checkpoint next to the model (``OUTPUT.ckpt``),
written atomically every few epochs and on Ctrl-C. ``--resume`` continues the run from
there after a crash, a kill or Ctrl-C, and ends with the model an uninterrupted run
would have written. The checkpoint is deleted once the model is written.

Under ``torchrun`` every process runs this command; they train one model with
distributed data parallel, and only rank 0 writes files and prints. ``--nproc N``
starts such a run on this machine. With ``--sharding auto``, the default, each process
of such a run reads only its own block of rows of a ``.npy`` or Parquet file.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from flowfit.cli.common import (
    USER_ERRORS,
    check_output,
    fail,
    parse_columns,
    parse_grid,
    parse_support,
    reports_errors,
)
from flowfit.errors import CheckpointError, DataError
from flowfit.estimators import ConditionalFlowDensity, FlowDensity
from flowfit.flows import PRESETS
from flowfit.io.shards import check_shardable, is_shardable, read_shard
from flowfit.io.tables import read_table
from flowfit.training import TrainingInterrupted
from flowfit.training.distributed import (
    DistributedSetup,
    all_reduce_sum,
    detect,
    run_local,
    shutdown,
)
from flowfit.training.progress import PROGRESS_MODES

# The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

SHARDING_MODES = ("auto", "off")


def checkpoint_path(output: Path) -> Path:
    """Return the checkpoint file that belongs to the model file ``output``."""
    return output.with_name(output.name + ".ckpt")


def _rank_in_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Prefix the user errors of a process in a distributed run with its rank.

    Every process prints its own errors, so the prefix distinguishes the lines of
    processes that fail alike and shows which process failed alone.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup = detect()
        if not setup.enabled:
            return command(*args, **kwargs)
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            raise fail(f"rank {setup.rank} of {setup.world_size}: {error}") from None

    return wrapper


@reports_errors
@_rank_in_errors
def fit_command(
    data: Annotated[Path, typer.Argument(help="Table to fit: .csv, .tsv, .txt, .npy or .parquet.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write.")],
    columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns to model; default: all but --context."),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated columns to condition on: the model is then p(columns | "
            "context), and score and sample need these columns too."
        ),
    ] = None,
    flow: Annotated[
        str,
        typer.Option(
            help="Flow preset: auto (spline or affine for one column; nsf for several, maf "
            "when a column has heavy tails), "
            + ", ".join(sorted(PRESETS)) + "."
        ),
    ] = "auto",
    support: Annotated[
        str,
        typer.Option(
            help="Support of every column: auto (positive for skewed positive columns), "
            "real, positive, or LOW,HIGH."
        ),
    ] = "auto",
    grid: Annotated[
        str,
        typer.Option(help="Rounding grid: auto (detect), none, or a step such as 1."),
    ] = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum passes over the data.")] = 200,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per optimizer step.")] = 256,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 5e-3,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of rows held out for early stopping.")
    ] = 0.1,
    patience: Annotated[
        int, typer.Option(min=1, help="Epochs without validation gain before stopping.")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Random seed for initialisation and splits.")] = 0,
    float64: Annotated[bool, typer.Option("--float64", help="Train in float64.")] = False,
    checkpoint_every: Annotated[
        int,
        typer.Option(min=0, help="Epochs between checkpoints in OUTPUT.ckpt; 0 writes none."),
    ] = 10,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the interrupted run saved in OUTPUT.ckpt; pass the same DATA and "
            "options. Replaces OUTPUT.",
        ),
    ] = False,
    progress: Annotated[
        str,
        typer.Option(help="Progress output on stderr: bar, jsonl (one JSON object per "
                     "epoch, for scripts) or quiet."),
    ] = "bar",
    nproc: Annotated[
        int,
        typer.Option(min=1, help="Train on this many local processes with distributed "
                     "data parallel (starts torchrun)."),
    ] = 1,
    sharding: Annotated[
        str,
        typer.Option(
            help="How each process of a run with --nproc or torchrun gets its rows: auto "
            "(each reads only its own block of rows of a .npy or Parquet file, and the "
            "whole table of other formats) or off (each reads the whole table, and the "
            "run takes the steps of a one-process run)."
        ),
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace OUTPUT, and any checkpoint, if they exist.")
    ] = False,
) -> None:
    """Fit a normalizing flow to DATA by maximum likelihood and save it to OUTPUT."""
    if progress not in PROGRESS_MODES:
        raise typer.BadParameter(
            f"expected one of {', '.join(PROGRESS_MODES)}; got {progress!r}.",
            param_hint="--progress",
        )
    if sharding not in SHARDING_MODES:
        raise typer.BadParameter(
            f"expected one of {', '.join(SHARDING_MODES)}; got {sharding!r}.",
            param_hint="--sharding",
        )
    setup = detect()
    checkpoint = checkpoint_path(output)
    if setup.is_main:
        _check_targets(output, checkpoint, resume=resume, force=force)
    context_columns = parse_columns(context)
    targets = parse_columns(columns)
    selected = None if targets is None else targets + (context_columns or [])
    processes = setup.world_size if setup.enabled else nproc
    sharded = processes > 1 and sharding == "auto" and is_shardable(data)
    if nproc > 1 and not setup.enabled:
        # Bad data fail here, once, before torchrun starts. A sharded run checks the
        # header only, so that this process does not load the whole table. Bad values
        # are then reported by the process that reads them.
        if sharded:
            check_shardable(data, nproc, selected)
        else:
            read_table(data, selected)
        raise typer.Exit(_launch(nproc))
    if sharded:
        frame = read_shard(data, setup.rank, setup.world_size, selected).frame
    else:
        frame = read_table(data, selected)

    if context_columns is not None:
        missing = [name for name in context_columns if name not in frame.columns]
        if missing:
            raise DataError(f"Context column {missing[0]!r} not found in {data}.")
        targets = targets or [c for c in frame.columns if c not in context_columns]
        if not targets:
            raise DataError("Every column is a --context column; name the columns to model.")
    estimator = FlowDensity if context_columns is None else ConditionalFlowDensity
    model = estimator(
        flow=flow, support=parse_support(support), grid=parse_grid(grid), max_epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, val_fraction=val_fraction,
        patience=patience, dtype="float64" if float64 else "float32", random_state=seed,
        show_progress=not quiet and setup.is_main, progress=progress,
    )
    checkpointing = {
        "checkpoint": checkpoint if checkpoint_every > 0 else None,
        "checkpoint_every": max(checkpoint_every, 1),
        "resume_from": checkpoint if resume else None,
    }
    try:
        with _sigterm_interrupts():
            if context_columns is None:
                model.fit(frame, sharded=sharded, **checkpointing)
            else:
                model.fit(frame[context_columns], frame[targets], sharded=sharded,
                          **checkpointing)
    except TrainingInterrupted as interrupt:
        if not setup.is_main:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        raise _save_interrupted(model, output, interrupt, overwrite=force or resume) from None
    if setup.is_main:
        model.save(output, overwrite=force or resume)
        checkpoint.unlink(missing_ok=True)
    # In a sharded run every process scores its own rows for the summary.
    if not quiet and (setup.is_main or sharded):
        fitted = frame if context_columns is None else frame[targets]
        rows, mean_log_lik = _summary_scores(model, fitted, setup, sharded=sharded,
                                             conditional=context_columns is not None)
        if setup.is_main:
            _print_summary(model, list(fitted.columns), rows, mean_log_lik, output,
                           conditional_on=context_columns)
    shutdown(setup)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while training, so the best model and checkpoint are kept.

    Job schedulers and ``timeout`` stop a job with SIGTERM, and torchrun passes it on to
    its processes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # Python accepts signal handlers in the main thread only.
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _launch(nproc: int) -> int:
    """Run this same command on ``nproc`` local processes; return the exit status.

    torchrun's launcher runs in this process (see
    :func:`~flowfit.training.distributed.run_local`), so a failed process ends the run
    with one error line that names its rank and exit code.
    """
    arguments = []
    skip = False
    for argument in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if argument == "--nproc":
            skip = True
            continue
        if argument.startswith("--nproc="):
            continue
        arguments.append(argument)
    return run_local(nproc, arguments)


def _check_targets(output: Path, checkpoint: Path, *, resume: bool, force: bool) -> None:
    """Stop before any work if the run would replace files it may not replace."""
    if resume:
        if not checkpoint.is_file():
            raise CheckpointError(
                f"There is no checkpoint to resume at {checkpoint}; run without --resume "
                "to start a new fit."
            )
        return
    check_output(output, force=force)
    if checkpoint.exists() and not force:
        raise FileExistsError(
            f"{checkpoint} contains the checkpoint of an interrupted run; pass --resume to "
            "continue it, or --force to start over and replace it."
        )


def _save_interrupted(model: FlowDensity, output: Path, interrupt: TrainingInterrupted,
                      *, overwrite: bool) -> typer.Exit:
    """Write the best model so far after Ctrl-C, say where, and return the exit to raise."""
    history = interrupt.history
    lines = [f"interrupted after {len(history.train)} completed epoch(s)"]
    if history.best_epoch >= 0:
        model.save(output, overwrite=overwrite)
        lines.append(
            f"wrote the best model so far (epoch {history.best_epoch + 1}) to {output}"
        )
    else:
        lines.append("no epoch completed, so no model was written")
    if interrupt.checkpoint is not None:
        lines.append(
            f"the checkpoint {interrupt.checkpoint} holds the run; continue it with the "
            "same command and --resume"
        )
    return fail("; ".join(lines) + ".", code=EXIT_INTERRUPTED)


def _summary_scores(model, fitted, setup: DistributedSetup, *, sharded: bool,
                    conditional: bool) -> tuple[int, float | None]:
    """Return the number of fitted rows and their mean log-likelihood (None if conditional).

    In a sharded run both count the rows of every process, and every process must call
    this.
    """
    total = 0.0 if conditional else model.score(fitted)
    sums = torch.tensor([float(len(fitted)), total], dtype=torch.float64)
    if sharded:
        sums = all_reduce_sum(sums, setup)
    rows = int(sums[0].item())
    return rows, None if conditional else sums[1].item() / rows


def _print_summary(model, columns: list[str], rows: int, mean_log_lik: float | None,
                   output: Path, *, conditional_on: list[str] | None) -> None:
    history = model.history_
    rounded = [c.name for c in model.columns_ if c.step > 0 and not c.dropped]
    given = "" if conditional_on is None else f" given {', '.join(conditional_on)}"
    typer.echo(f"fitted {model.preset_} flow to {rows} rows x {len(columns)} columns "
               f"({', '.join(columns)}){given}")
    if rounded:
        typer.echo(f"dequantised rounded columns: {', '.join(rounded)}")
    best = history.val[history.best_epoch] if history.val else history.train[-1]
    typer.echo(f"epochs: {len(history.train)}, best epoch: {history.best_epoch + 1}, "
               f"validation NLL: {best:.4f} nats/row")
    if history.recoveries:
        typer.echo(f"recovered from {history.recoveries} non-finite loss(es) by rolling "
                   "back and halving the learning rate")
    if mean_log_lik is not None:
        typer.echo(f"mean log-likelihood on all rows: {mean_log_lik:.4f} nats/row")
    typer.echo(f"wrote {output}")
