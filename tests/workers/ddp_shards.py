"""Read shards of a .npy table under torchrun, pool their statistics and resume a fit.

Usage: torchrun --nproc-per-node 2 ddp_shards.py TABLE.npy OUTPUT_FOLDER

Every rank writes OUTPUT_FOLDER/rank-R.json with what it saw:

* ``rows`` and ``first_row``: the rows of the shard it holds;
* ``columns``: the records of :func:`choose_columns_sharded` with a pooled sample of
  ``SAMPLE_ROWS`` rows, and ``sample_rows`` and ``sample_loc``, the sample's size and
  the loc that the sample alone gives;
* ``resume``: a sharded fit interrupted after 2 of 4 epochs and resumed, compared with
  an uninterrupted one, and the error of resuming after rank 1's rows changed.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from flowfit import fit
from flowfit.errors import CheckpointError
from flowfit.flows import MAF
from flowfit.io.shards import read_shard
from flowfit.preprocessing import choose_columns, choose_columns_sharded
from flowfit.training import TrainingInterrupted, loop
from flowfit.training.distributed import detect, initialize, shutdown

SAMPLE_ROWS = 300


def fit_shard(x: torch.Tensor, **options) -> tuple[MAF, object]:
    torch.manual_seed(1)
    flow = MAF(2, layers=2, hidden=[16, 16])
    history = fit(flow, x, max_epochs=4, batch_size=100, learning_rate=1e-2,
                  val_fraction=0.2, patience=100, seed=3, show_progress=False, sharded=True,
                  **options)
    return flow, history


def interrupt_in_third_epoch(original):
    calls = []

    def train_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    return train_epoch


def resume_report(x: torch.Tensor, checkpoint: Path, rank: int) -> dict:
    uninterrupted, history = fit_shard(x)

    original = loop._train_epoch
    loop._train_epoch = interrupt_in_third_epoch(original)
    try:
        fit_shard(x, checkpoint=checkpoint, checkpoint_every=1)
        interrupted = False
    except TrainingInterrupted:
        interrupted = True
    finally:
        loop._train_epoch = original
    dist.barrier()  # rank 0 has written the checkpoint

    resumed, resumed_history = fit_shard(x, checkpoint=checkpoint, resume_from=checkpoint)
    dist.barrier()
    difference = max(
        float((a - b).abs().max())
        for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values())
    )

    changed = x.clone()
    if rank == 1:
        changed[0, 0] += 1.0
    try:
        fit_shard(changed, resume_from=checkpoint)
        changed_error = ""
    except CheckpointError as error:
        changed_error = str(error)
    return {
        "interrupted": interrupted,
        "max_parameter_difference": difference,
        "train": history.train,
        "resumed_train": resumed_history.train,
        "val": history.val,
        "resumed_val": resumed_history.val,
        "changed_rows_error": changed_error,
    }


def main() -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    table, output = Path(sys.argv[1]), Path(sys.argv[2])
    setup = detect()
    initialize(setup)

    shard = read_shard(table, setup.rank, setup.world_size)
    values = shard.frame.to_numpy()
    names = list(shard.frame.columns)
    columns, sample = choose_columns_sharded(values, names, setup=setup, dtype=torch.float64,
                                             max_sample_rows=SAMPLE_ROWS)
    from_sample = choose_columns(sample.values, names, dtype=torch.float64)

    x = torch.tensor(values[:, :2])
    x = (x - torch.tensor([c.loc for c in columns[:2]])) / torch.tensor(
        [c.scale for c in columns[:2]])
    report = {
        "rows": len(shard.frame),
        "first_row": shard.first_row,
        "columns": [c.to_dict() for c in columns],
        "sample_rows": int(sample.values.shape[0]),
        "sample_loc": [c.loc for c in from_sample],
        "resume": resume_report(x, output / "run.ckpt", setup.rank),
    }
    (output / f"rank-{setup.rank}.json").write_text(json.dumps(report, default=float))
    shutdown(setup)


if __name__ == "__main__":
    main()
