"""``flowfit fit``: fit a flow to columns of a table and write a model file.

While it trains, the command keeps a checkpoint next to the model (``OUTPUT.ckpt``),
written atomically every few epochs and on Ctrl-C. ``--resume`` continues the run from
there after a crash, a kill or Ctrl-C, and ends with the model an uninterrupted run
would have written. The checkpoint is deleted once the model is written.

Under ``torchrun`` every process runs this command; they train one model with
distributed data parallel, and only rank 0 writes files and prints. ``--nproc N``
starts such a run on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import os
import subprocess
import sys

import typer

from flowfit.cli.common import (
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
from flowfit.io.tables import read_table
from flowfit.training import TrainingInterrupted
from flowfit.training.distributed import detect, torchrun_command
from flowfit.training.progress import PROGRESS_MODES

# The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def checkpoint_path(output: Path) -> Path:
    """Return the checkpoint file that belongs to the model file ``output``."""
    return output.with_name(output.name + ".ckpt")


@reports_errors
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
    setup = detect()
    checkpoint = checkpoint_path(output)
    if setup.is_main:
        _check_targets(output, checkpoint, resume=resume, force=force)
    context_columns = parse_columns(context)
    targets = parse_columns(columns)
    # Reading the table first means bad data fail here, once, before torchrun starts.
    frame = read_table(data, None if targets is None else targets + (context_columns or []))
    if nproc > 1 and not setup.enabled:
        raise typer.Exit(_launch(nproc))

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
        if context_columns is None:
            model.fit(frame, **checkpointing)
        else:
            model.fit(frame[context_columns], frame[targets], **checkpointing)
    except TrainingInterrupted as interrupt:
        if not setup.is_main:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        raise _save_interrupted(model, output, interrupt, overwrite=force or resume) from None
    if not setup.is_main:
        return
    model.save(output, overwrite=force or resume)
    checkpoint.unlink(missing_ok=True)
    if not quiet:
        _print_summary(model, frame if context_columns is None else frame[targets], output,
                       conditional_on=context_columns)


def _launch(nproc: int) -> int:
    """Run this same command on ``nproc`` local processes through torchrun."""
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
    # Setting the thread count keeps torchrun from printing its OMP_NUM_THREADS notice.
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # NOTE: an error inside the processes still ends with torchrun's own traceback after
    # flowfit's error line; input errors are caught before launching, above.
    command = torchrun_command(nproc, arguments)
    return subprocess.run(command, check=False, env=environment).returncode


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


def _print_summary(model, frame, output: Path, *, conditional_on: list[str] | None) -> None:
    history = model.history_
    rounded = [c.name for c in model.columns_ if c.step > 0 and not c.dropped]
    given = "" if conditional_on is None else f" given {', '.join(conditional_on)}"
    typer.echo(f"fitted {model.preset_} flow to {len(frame)} rows x {frame.shape[1]} columns "
               f"({', '.join(frame.columns)}){given}")
    if rounded:
        typer.echo(f"dequantised rounded columns: {', '.join(rounded)}")
    best = history.val[history.best_epoch] if history.val else history.train[-1]
    typer.echo(f"epochs: {len(history.train)}, best epoch: {history.best_epoch + 1}, "
               f"validation NLL: {best:.4f} nats/row")
    if history.recoveries:
        typer.echo(f"recovered from {history.recoveries} non-finite loss(es) by rolling "
                   "back and halving the learning rate")
    if conditional_on is None:
        mean_log_lik = model.score(frame) / len(frame)
        typer.echo(f"mean log-likelihood on all rows: {mean_log_lik:.4f} nats/row")
    typer.echo(f"wrote {output}")
