"""Reading one process's share of a table, for training on several processes.

In a sharded run each process reads a contiguous block of rows and nothing else, so no
process holds the whole table. A ``.npy`` file is memory-mapped and only the block is
copied into memory. A Parquet file is read by whole row groups, assigned to the
processes in file order so that their row counts are as even as the groups allow.
Text tables (CSV, TSV, whitespace-separated) have no row index to seek to, so they are
always read whole with :func:`~flowfit.io.tables.read_table`.

The checks and messages are those of :func:`~flowfit.io.tables.read_table`, and row
numbers in messages count rows of the whole file, from 1.
"""

from __future__ import annotations

__all__ = [
    "SHARDABLE_SUFFIXES",
    "Shard",
    "assign_row_groups",
    "check_shardable",
    "is_shardable",
    "read_shard",
    "row_block",
]

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flowfit.errors import DataError
from flowfit.io.tables import (
    check_data_file,
    check_frame,
    npy_columns,
    npy_frame,
    open_npy,
    parquet_columns,
    parquet_errors,
    select_columns,
)

SHARDABLE_SUFFIXES = (".npy", ".parquet", ".pq")


@dataclass(frozen=True)
class Shard:
    """The rows of a table that one process reads.

    Attributes:
        frame: The selected columns of the process's rows, as float64, indexed from 0.
        first_row: The position of the shard's first row in the file, counted from 0.
        total_rows: The number of rows in the whole file.
    """

    frame: pd.DataFrame
    first_row: int
    total_rows: int


def is_shardable(path: str | Path) -> bool:
    """Return whether ``path`` is a ``.npy`` or Parquet file, which can be read in shards."""
    return Path(path).suffix.lower() in SHARDABLE_SUFFIXES


def row_block(total_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Return the start and stop rows of process ``rank``'s contiguous block.

    The blocks cover ``range(total_rows)`` in rank order and differ in size by at most
    one row.
    """
    return rank * total_rows // world_size, (rank + 1) * total_rows // world_size


def assign_row_groups(row_counts: Sequence[int], world_size: int) -> list[tuple[int, int]]:
    """Assign contiguous runs of row groups to processes, balanced by their row counts.

    Arguments:
        row_counts: The number of rows of each row group, in file order.
        world_size: The number of processes.

    Returns:
        One ``(first_group, stop_group)`` pair per rank. Every rank gets at least one
        group, and each boundary sits at the group boundary nearest to an even split
        of the rows.

    Raises:
        ValueError: There are fewer row groups than processes.
    """
    groups = len(row_counts)
    if groups < world_size:
        raise ValueError(f"{groups} row group(s) cannot be shared by {world_size} processes.")
    cumulative = np.concatenate([[0], np.cumsum(row_counts, dtype=np.int64)])
    total = int(cumulative[-1])
    cuts = [0]
    for rank in range(1, world_size):
        target = rank * total / world_size
        # Leave at least one group for this rank and for each rank after it.
        candidates = range(cuts[-1] + 1, groups - (world_size - rank) + 1)
        cuts.append(min(candidates, key=lambda k: abs(int(cumulative[k]) - target)))
    cuts.append(groups)
    return [(cuts[rank], cuts[rank + 1]) for rank in range(world_size)]


def check_shardable(path: str | Path, world_size: int, columns: list[str] | None = None) -> int:
    """Check that ``world_size`` processes can read shards of ``path``; return its row count.

    Only the header is read: the array header of a ``.npy`` file, the footer (schema and
    row groups) of a Parquet file. So this catches a missing file, a damaged header, a
    missing column or too few rows or row groups at once, without reading the data. Text,
    NaN and infinite values show up when each process reads its shard.

    Raises:
        DataError: As :func:`read_shard` would for these problems.
    """
    path = Path(path)
    check_data_file(path)
    if path.suffix.lower() == ".npy":
        array = open_npy(path, mmap=True)
        names, total = npy_columns(array.shape[1]), array.shape[0]
        _check_rows(path, names, columns, total, world_size)
        return total
    parquet, names = _open_parquet(path)
    counts = _row_group_counts(parquet)
    total = sum(counts)
    _check_rows(path, names, columns, total, world_size)
    _assign(path, counts, world_size)
    return total


def read_shard(
    path: str | Path, rank: int, world_size: int, columns: list[str] | None = None
) -> Shard:
    """Read process ``rank``'s rows of a ``.npy`` or Parquet file, of ``world_size`` processes.

    A ``.npy`` file gives each process the block of :func:`row_block`: the file is
    memory-mapped and only the block is copied. A Parquet file gives each process the
    row groups of :func:`assign_row_groups`, and only those groups and the selected
    columns are read.

    Arguments:
        path: A ``.npy``, ``.parquet`` or ``.pq`` file.
        rank: This process's rank, from 0.
        world_size: The number of processes that share the file.
        columns: The columns to keep, in this order; None keeps all.

    Raises:
        DataError: A problem that :func:`~flowfit.io.tables.read_table` reports, found
            in this shard and named by its row in the whole file. Also fewer rows than
            processes and, for Parquet, fewer row groups than processes.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got {rank}.")
    path = Path(path)
    if not is_shardable(path):
        raise DataError(
            f"{path} is not a .npy or Parquet file, so it cannot be read in shards; "
            "read it whole with flowfit.read_table."
        )
    check_data_file(path)
    if path.suffix.lower() == ".npy":
        array = open_npy(path, mmap=True)
        total = array.shape[0]
        _check_rows(path, npy_columns(array.shape[1]), columns, total, world_size)
        start, stop = row_block(total, rank, world_size)
        frame = npy_frame(np.array(array[start:stop]))
    else:
        parquet, names = _open_parquet(path)
        counts = _row_group_counts(parquet)
        total = sum(counts)
        _check_rows(path, names, columns, total, world_size)
        first_group, stop_group = _assign(path, counts, world_size)[rank]
        start = sum(counts[:first_group])
        with parquet_errors(path):
            table = parquet.read_row_groups(
                list(range(first_group, stop_group)), columns=columns,
                use_pandas_metadata=True,
            )
            frame = table.to_pandas()
    frame = select_columns(frame, columns, source=str(path))
    frame = check_frame(frame, source=str(path), first_row=start)
    return Shard(frame=frame, first_row=start, total_rows=total)


def _open_parquet(path: Path):
    """Open a Parquet file for reading by row groups; return it and its data columns."""
    import pyarrow.parquet as pq

    with parquet_errors(path):
        parquet = pq.ParquetFile(path)
        return parquet, parquet_columns(parquet.schema_arrow)


def _row_group_counts(parquet) -> list[int]:
    metadata = parquet.metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def _check_rows(path: Path, names: list[str], columns: list[str] | None, total: int,
                world_size: int) -> None:
    """Raise DataError for a missing column, an empty table or fewer rows than processes."""
    # An empty frame with the file's columns gives the messages that read_table gives.
    header = pd.DataFrame(columns=names)
    header = select_columns(header, columns, source=str(path))
    if total == 0:
        check_frame(header, source=str(path))
    if total < world_size:
        raise DataError(
            f"{path} has {total} row(s), fewer than the {world_size} processes that would "
            "share it. Run fewer processes."
        )


def _assign(path: Path, counts: list[int], world_size: int) -> list[tuple[int, int]]:
    """Assign row groups to processes, or raise DataError naming the fix.

    The launcher calls this through :func:`check_shardable`, so a file that cannot be
    shared fails before any process starts.
    """
    try:
        ranges = assign_row_groups(counts, world_size)
    except ValueError:
        rows = max(1, sum(counts) // (4 * world_size))
        raise DataError(
            f"{path} has {len(counts)} row group(s), fewer than the {world_size} processes "
            "that would share it, and each process reads whole row groups. Rewrite the "
            "file with smaller row groups, for example with pyarrow.parquet.write_table("
            f"table, path, row_group_size={rows}), or read it whole in every process "
            "(flowfit fit --sharding off)."
        ) from None
    for rank, (first_group, stop_group) in enumerate(ranges):
        if sum(counts[first_group:stop_group]) == 0:
            raise DataError(
                f"The row groups {first_group} to {stop_group - 1} of {path}, which rank "
                f"{rank} of {world_size} would read, hold no rows. Rewrite the file without "
                "empty row groups, or run fewer processes."
            )
    return ranges
