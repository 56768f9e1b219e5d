"""Distributed data parallel training on real processes over gloo on 127.0.0.1."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from flowfit import FlowDensity
from flowfit.cli.app import app
from flowfit.errors import DataError
from flowfit.io.shards import assign_row_groups, check_shardable, read_shard, row_block
from flowfit.preprocessing import Column, choose_columns
from flowfit.training.distributed import DistributedSetup, shard, torchrun_command

WORKER = Path(__file__).parent / "workers" / "ddp_fit.py"
SHARD_WORKER = Path(__file__).parent / "workers" / "ddp_shards.py"
sys.path.insert(0, str(WORKER.parent))

# The largest difference in held-out mean log-likelihood (nats per row) between a
# two-process sharded fit and a one-process fit of the same table and seed. With the
# 1,000-row table of test_cli_sharded_fit_matches_one_process, seeds 0 to 4 gave
# differences of 0.008, 0.016, 0.020, 0.016 and 0.025, about as large as the spread
# between one-process fits with different seeds (0.030).
SHARDED_LOG_LIKELIHOOD_TOLERANCE = 0.06


def run_torchrun(nproc: int, arguments: list[str], timeout: float = 240) -> None:
    command = torchrun_command(nproc, [])
    command = command[: command.index("-m", 3)] + arguments
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def run_cli(*arguments, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flowfit", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def banana(rows: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=rows)
    return np.column_stack([x, 0.5 * x**2 + 0.5 * rng.normal(size=rows)])


def test_shards_cover_batch_once():
    batch = torch.arange(11)
    parts = [shard(batch, DistributedSetup(rank, 3)) for rank in range(3)]

    assert torch.equal(torch.cat(parts), batch)
    assert [p.numel() for p in parts] == [4, 3, 4]


@pytest.mark.parametrize("actnorm", [False, True], ids=["maf", "maf-actnorm"])
def test_two_processes_match_one(tmp_path, float64, actnorm):
    from ddp_fit import train

    output = tmp_path / "ddp.safetensors"
    run_torchrun(2, [str(WORKER), str(output), *(["actnorm"] if actnorm else [])])
    distributed = safetensors.torch.load_file(str(output))
    flow, history = train(actnorm=actnorm)

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


# -- reading shards ----------------------------------------------------------------


@pytest.fixture
def table():
    return np.random.default_rng(0).normal(size=(1003, 3))


def test_row_blocks_cover_rows_once():
    blocks = [row_block(10, rank, 3) for rank in range(3)]

    assert blocks == [(0, 3), (3, 6), (6, 10)]


def test_row_groups_balanced_by_rows():
    assert assign_row_groups([100, 100, 100, 100], 2) == [(0, 2), (2, 4)]
    assert assign_row_groups([300, 10, 10, 300], 2) == [(0, 2), (2, 4)]
    # One large group: every rank still gets a group.
    assert assign_row_groups([500, 1, 1, 1], 3) == [(0, 1), (1, 2), (2, 4)]


def test_npy_shards_partition_table(tmp_path, table):
    path = tmp_path / "table.npy"
    np.save(path, table)
    shards = [read_shard(path, rank, 3) for rank in range(3)]

    for rank, part in enumerate(shards):
        start, stop = row_block(1003, rank, 3)
        assert part.first_row == start
        assert part.total_rows == 1003
        assert list(part.frame.columns) == ["x0", "x1", "x2"]
        np.testing.assert_array_equal(part.frame.to_numpy(), table[start:stop])
    whole = np.concatenate([part.frame.to_numpy() for part in shards])
    np.testing.assert_array_equal(whole, table)


def test_parquet_shards_read_whole_row_groups(tmp_path, table):
    path = tmp_path / "table.parquet"
    pd.DataFrame(table, columns=["a", "b", "c"]).to_parquet(path, row_group_size=100)
    shards = [read_shard(path, rank, 3, columns=["c", "a"]) for rank in range(3)]

    # 11 row groups of 100, 100, ..., 3 rows; the cuts nearest to 334 and 669 rows.
    assert [len(part.frame) for part in shards] == [300, 400, 303]
    assert [part.first_row for part in shards] == [0, 300, 700]
    assert list(shards[0].frame.columns) == ["c", "a"]
    whole = np.concatenate([part.frame.to_numpy() for part in shards])
    np.testing.assert_array_equal(whole, table[:, [2, 0]])


def test_too_few_row_groups_rejected_with_fix(tmp_path):
    path = tmp_path / "one-group.parquet"
    pd.DataFrame({"a": np.arange(10.0)}).to_parquet(path)

    message = r"1 row group\(s\), fewer than the 2 processes.*row_group_size=1"
    with pytest.raises(DataError, match=message):
        read_shard(path, 0, 2)
    with pytest.raises(DataError, match=message):
        check_shardable(path, 2)


def test_shard_nan_named_by_file_row(tmp_path, table):
    table[700, 1] = np.nan
    path = tmp_path / "table.npy"
    np.save(path, table)

    assert len(read_shard(path, 0, 2).frame) == 501
    with pytest.raises(DataError, match=r"Column 'x1' .* NaN .* first in data rows \[701\]"):
        read_shard(path, 1, 2)


def test_shard_text_named_by_file_row(tmp_path):
    frame = pd.DataFrame({"a": [str(i) for i in range(40)], "b": np.arange(40.0)})
    frame.loc[30, "a"] = "abc"
    path = tmp_path / "text.parquet"
    frame.to_parquet(path, row_group_size=10)

    with pytest.raises(DataError, match=r"Column 'a' .* holds text: 'abc' in data row 31"):
        read_shard(path, 1, 2)


def test_shard_of_csv_rejected(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("x\n1\n2\n")

    with pytest.raises(DataError, match="cannot be read in shards"):
        read_shard(path, 0, 2)


def test_shardable_check_reads_header_only(tmp_path, table):
    table[5, 0] = np.nan
    path = tmp_path / "table.npy"
    np.save(path, table)

    # The NaN is in the data, which the check does not read.
    assert check_shardable(path, 2) == 1003
    with pytest.raises(DataError, match=r"Column 'zz' not found .* columns: x0, x1, x2"):
        check_shardable(path, 2, ["x0", "zz"])
    with pytest.raises(DataError, match=r"has 1003 row\(s\), fewer than the 2000 processes"):
        check_shardable(path, 2000)


def test_launcher_checks_header_before_starting(tmp_path):
    path = tmp_path / "one-group.parquet"
    pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2}).to_parquet(path)
    output = tmp_path / "model.flowfit"
    runner = CliRunner()

    groups = runner.invoke(app, ["fit", str(path), "--nproc", "2", "-o", str(output)])
    column = runner.invoke(app, ["fit", str(path), "--columns", "a,zz", "--nproc", "2",
                                 "-o", str(output)])

    assert groups.exit_code == 1
    assert "1 row group(s), fewer than the 2 processes" in groups.output
    assert column.exit_code == 1
    assert "Column 'zz' not found" in column.output
    assert not output.exists()


# -- statistics, training and resuming on shards ------------------------------------


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory):
    """Run the shard worker on 2 processes; return the table and each rank's report."""
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(5)
    rows = 3000
    counts = rng.poisson(1.0, rows).astype(float)
    rounded = np.round(rng.normal(100, 10, rows))
    rounded[2500] = 100.37  # off the grid of 1, in rank 1's rows
    table = np.column_stack([rng.normal(5, 2, rows), rng.gamma(2.0, size=rows), counts, rounded])
    np.save(folder / "table.npy", table)
    run_torchrun(2, [str(SHARD_WORKER), str(folder / "table.npy"), str(folder)])
    reports = [json.loads((folder / f"rank-{rank}.json").read_text()) for rank in range(2)]
    return table, reports


def test_each_rank_holds_only_its_shard(shard_run):
    _, reports = shard_run

    assert [report["rows"] for report in reports] == [1500, 1500]
    assert [report["first_row"] for report in reports] == [0, 1500]


def test_sharded_statistics_match_one_process(shard_run):
    table, reports = shard_run
    expected = choose_columns(table, ["x0", "x1", "x2", "x3"], dtype=torch.float64)
    sharded = [Column.from_dict(record) for record in reports[0]["columns"]]

    assert reports[1]["columns"] == reports[0]["columns"]
    assert reports[0]["sample_rows"] == 300
    for whole, shards in zip(expected, sharded):
        assert shards.kind == whole.kind, whole.name
        assert (shards.low, shards.high, shards.step) == (whole.low, whole.high, whole.step)
        assert abs(shards.loc - whole.loc) < 1e-10, whole.name
        assert abs(shards.scale - whole.scale) < 1e-10, whole.name
    # The sample alone gives other values, so the sums over all rows made the match.
    sample_locs = reports[0]["sample_loc"]
    sample_error = max(abs(loc - whole.loc) for loc, whole in zip(sample_locs, expected))
    assert sample_error > 1e-3


def test_value_off_sampled_grid_found(shard_run):
    _, reports = shard_run
    record = reports[0]["columns"][3]

    assert record["step"] == 0.0
    assert "1 value(s) lie off that grid" in record["reason"]


def test_sharded_fit_resumes_exactly(shard_run):
    _, reports = shard_run

    for report in reports:
        resume = report["resume"]
        assert resume["interrupted"]
        assert resume["max_parameter_difference"] == 0.0
        assert resume["resumed_train"] == resume["train"]
        assert resume["resumed_val"] == resume["val"]
    # Early stopping uses the same validation losses on every rank.
    assert reports[0]["resume"]["val"] == reports[1]["resume"]["val"]


def test_resume_fingerprint_covers_every_shard(shard_run):
    _, reports = shard_run

    # Only rank 1's rows changed, and both ranks reject the checkpoint.
    for report in reports:
        assert "written by a run on other data" in report["resume"]["changed_rows_error"]


# -- the command line on shards ---------------------------------------------------------


def test_cli_sharded_fit_matches_one_process(tmp_path):
    rng = np.random.default_rng(0)
    train, held_out = banana(1000, rng), banana(4000, rng)
    npy = tmp_path / "train.npy"
    parquet = tmp_path / "train.parquet"
    np.save(npy, train)
    # 8 row groups of 125 rows give each process the rows of its .npy block.
    pd.DataFrame(train, columns=["x0", "x1"]).to_parquet(parquet, row_group_size=125)
    # The command line's defaults, set explicitly.
    one_process = FlowDensity(flow="maf", max_epochs=15, batch_size=256, learning_rate=5e-3,
                              val_fraction=0.1, patience=20, random_state=0).fit(train)
    one_score = one_process.score_samples(held_out).mean()

    scores = {}
    for path in (npy, parquet):
        output = tmp_path / f"{path.suffix[1:]}.flowfit"
        result = run_cli("fit", path, "--flow", "maf", "--epochs", 15, "--nproc", 2,
                         "--progress", "quiet", "-o", output)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "fitted maf flow to 1000 rows x 2 columns" in result.stdout
        scores[path.suffix] = FlowDensity.load(output).score_samples(held_out).mean()

    assert abs(scores[".npy"] - one_score) < SHARDED_LOG_LIKELIHOOD_TOLERANCE
    assert scores[".parquet"] == scores[".npy"]


def test_dying_rank_ends_run_with_one_error(tmp_path):
    table = np.random.default_rng(0).normal(size=(400, 2))
    table[300, 1] = np.nan  # in rank 1's rows
    path = tmp_path / "bad.npy"
    np.save(path, table)
    output = tmp_path / "model.flowfit"

    result = run_cli("fit", path, "--nproc", 2, "--epochs", 2, "-q", "-o", output, timeout=120)
    lines = result.stderr.strip().splitlines()

    assert result.returncode == 1
    assert lines[-1] == (
        "error: The process of rank 1 (of 2) exited with code 1, so the launcher stopped "
        "the other processes. Its messages, if any, are above."
    )
    assert "error: rank 1 of 2: Column 'x1' of" in result.stderr
    assert "first in data rows [301]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_empty_row_group_fails_at_header_check(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "gaps.parquet"
    table = pa.table({"a": np.arange(10.0), "b": np.arange(10.0)})
    with pq.ParquetWriter(path, table.schema) as writer:
        for part in (table.slice(0, 5), table.slice(0, 0), table.slice(5, 5)):
            writer.write_table(part)

    with pytest.raises(DataError, match="row groups 1 to 1 of .* which rank 1 of 3 would read"):
        check_shardable(path, 3, None)
    assert check_shardable(path, 2, None) == 10
