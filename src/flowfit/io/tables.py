"""Reading numeric tables from CSV, whitespace-separated text, NumPy and Parquet files.

Every problem is raised as :class:`~flowfit.errors.DataError` with a message that names
the file, the column and the row (counted from 1, as a spreadsheet shows them) and
states what to do.
"""

from __future__ import annotations

__all__ = [
    "check_data_file",
    "check_frame",
    "npy_columns",
    "npy_frame",
    "open_npy",
    "parquet_columns",
    "parquet_errors",
    "read_table",
    "select_columns",
]

import csv
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from flowfit.errors import DataError

# R and pandas write row labels as a first column with one of these headers; such a
# column is an index, not data.
INDEX_HEADERS = {"", "rownames", "Unnamed: 0"}

# The safetensors container of model files and checkpoints starts with its JSON
# header's length as a little-endian u64, then "{". Text files never do, because
# printable bytes make that length at least 0x2020202020202020.
MAX_CONTAINER_HEADER_BYTES = 16 * 2**20


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a table of numbers and return the selected columns as float64.

    Arguments:
        path: A ``.csv``, ``.tsv``, ``.txt`` (whitespace-separated), ``.npy`` or
            ``.parquet`` file. A CSV whose first line is all numbers has no header, and
            its columns are named ``x0, x1, ...``; a leading row-label column (headed
            ``rownames`` or nothing) is dropped.
        columns: The columns to keep, in this order; None keeps all.

    Raises:
        DataError: The file is missing, unreadable, empty, or holds text, NaN or
            infinite values in a selected column, or a named column is absent.
    """
    path = Path(path)
    check_data_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        frame = npy_frame(open_npy(path))
    elif suffix in {".parquet", ".pq"}:
        frame = _read_parquet(path)
    else:
        frame = _read_text(path, whitespace=suffix in {".txt", ".dat", ".data"},
                           tab=suffix == ".tsv")
    frame = select_columns(frame, columns, source=str(path))
    return check_frame(frame, source=str(path))


def select_columns(frame: pd.DataFrame, columns: list[str] | None, *, source: str) -> pd.DataFrame:
    """Return the named columns of ``frame`` in the given order, or raise DataError."""
    if columns is None:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        available = ", ".join(map(str, frame.columns))
        raise DataError(
            f"Column {missing[0]!r} not found in {source}; available columns: {available}."
        )
    if len(set(columns)) != len(columns):
        raise DataError(f"Columns are listed twice: {columns}. Name each column once.")
    return frame[list(columns)]


def check_frame(frame: pd.DataFrame, *, source: str, first_row: int = 0) -> pd.DataFrame:
    """Convert every column to float64 and reject empty tables, text, NaN and infinities.

    ``first_row`` is the position of the frame's first row in the file, counted from 0,
    so that messages about a part of a file give the row numbers of the whole file.
    """
    if frame.shape[1] == 0:
        raise DataError(f"{source} has no columns.")
    if frame.shape[0] == 0:
        raise DataError(f"{source} has a header but no data rows.")
    out = {}
    for name in frame.columns:
        column = frame[name]
        numbers = pd.to_numeric(column, errors="coerce")
        bad_text = numbers.isna() & column.notna() & (column.astype(str).str.strip() != "")
        if bool(bad_text.any()):
            row = int(np.flatnonzero(bad_text.to_numpy())[0])
            raise DataError(
                f"Column {name!r} of {source} holds text: {column.iloc[row]!r} in data row "
                f"{first_row + row + 1}. Remove or fix that value, or leave the column out with --columns."
            )
        values = numbers.to_numpy(dtype="float64")
        missing = ~np.isfinite(values)
        if bool(missing.any()):
            rows = (np.flatnonzero(missing)[:5] + first_row + 1).tolist()
            kind = "missing or NaN" if np.isnan(values[missing][0]) else "infinite"
            raise DataError(
                f"Column {name!r} of {source} has {int(missing.sum())} {kind} value(s), "
                f"first in data rows {rows}. Remove or impute those rows first."
            )
        out[str(name)] = values
    return pd.DataFrame(out, index=range(frame.shape[0]))


def check_data_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing file that may hold a table.

    Folders, flowfit model files and checkpoints, pickles and zip archives are rejected
    with a message that names the kind of file.
    """
    if not path.exists():
        raise DataError(f"Data file not found: {path}. Check the path and try again.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass a data file (.csv, .npy or .parquet).")
    _reject_binary_container(path)


def _reject_binary_container(path: Path) -> None:
    """Raise DataError for model files, checkpoints, pickles and zip archives."""
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        is_container = (length is not None and 2 <= length <= MAX_CONTAINER_HEADER_BYTES
                        and handle.read(1) == b"{")
        header = handle.read(length - 1) if is_container else b""
    if is_container:
        if b"flowfit-checkpoint" in header:
            kind = "a flowfit training checkpoint"
        elif b"flowfit-model" in header:
            kind = "a flowfit model file"
        else:
            kind = "a safetensors file"
        raise DataError(
            f"{path} is {kind}, not a data table. Where a command takes DATA, pass a "
            ".csv, .tsv, .txt, .npy or .parquet file; model files go where it takes MODEL."
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise DataError(f"{path} is a Python pickle, not a data table; flowfit never loads "
                        "pickles. Export the data as .csv, .npy or .parquet.")
    if head.startswith(b"PK\x03\x04"):
        raise DataError(f"{path} is a zip archive (such as .xlsx or torch.save output), not a "
                        "data table. Export the data as .csv, .npy or .parquet.")


def _read_text(path: Path, *, whitespace: bool, tab: bool) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not a text table (byte {error.start} is not UTF-8). "
            "Pass a .csv, .npy or .parquet file."
        ) from None
    # Line numbers count every line of the file, as an editor shows them.
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty; it needs a header line and data rows.")

    if whitespace:
        sep = r"\s+"
    elif tab:
        sep = "\t"
    else:
        sep = ","
    first_line = lines[0][1]
    first = first_line.split() if whitespace else next(csv.reader([first_line], delimiter=sep))
    has_header = not all(_is_number(field) for field in first)
    if sep == "," and len(first) == 1 and ";" in first_line:
        raise DataError(
            f"{path} seems to separate its columns with ';', but a .csv file must use ','. "
            "Convert it, for example with pandas.read_csv(path, sep=';').to_csv(new_path)."
        )

    try:
        frame = pd.read_csv(
            path, sep=sep, header=0 if has_header else None, dtype=str,
            skip_blank_lines=True, keep_default_na=False, na_values=["", "NA", "NaN", "nan"],
            engine="python" if whitespace else "c", encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; it needs a header line and data rows.") from None
    except (pd.errors.ParserError, csv.Error, ValueError) as error:
        raise DataError(
            f"{path} cannot be read as a table ({_first_line(error)}). Check that every row "
            "has one value per column and that quotes are balanced."
        ) from None

    if not has_header:
        frame.columns = [f"x{i}" for i in range(frame.shape[1])]
    elif str(frame.columns[0]) in INDEX_HEADERS or str(frame.columns[0]).startswith("Unnamed"):
        frame = frame.iloc[:, 1:]
    _check_ragged(path, lines, sep, whitespace)
    return frame


def _check_ragged(path: Path, lines: list[tuple[int, str]], sep: str, whitespace: bool) -> None:
    # pandas pads short rows with NaN silently; a short row is a broken file, not a gap.
    width = None
    for number, line in lines:
        try:
            fields = line.split() if whitespace else next(csv.reader([line], delimiter=sep))
        except (csv.Error, StopIteration):
            raise DataError(
                f"{path} cannot be read as a table: line {number} is malformed."
            ) from None
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise DataError(
                f"{path} has rows of different lengths: line {number} has {len(fields)} "
                f"fields, the first line has {width}. Every row must have one value per column."
            )


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[-1]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def open_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """Open a ``.npy`` file as a 2-D numeric array of shape (rows, columns).

    A 1-D array becomes one column. With ``mmap``, the array is memory-mapped read-only,
    so only its header is read here and its values are read when they are used.

    Raises:
        DataError: The file is not a ``.npy`` file, contains pickled objects or values
            that are not numbers, or has more than 2 dimensions.
    """
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(f"{path} is not a .npy file: it does not start with the NumPy magic.")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as error:
        reason = str(error).rstrip(".")
        if "mmap length is greater than file size" in reason:
            reason = "the file is shorter than its header says, so it is truncated"
        raise DataError(
            f"{path} is not a readable .npy array of numbers: {reason}. Save the table "
            "again with numpy.save from a float array."
        ) from None
    except Exception as error:  # noqa: BLE001
        # A damaged header makes NumPy's header parser raise assorted types
        # (tokenize.TokenError, SyntaxError, EOFError, OSError, ...).
        raise DataError(
            f"{path} is not a valid .npy file ({type(error).__name__}: {error})."
        ) from None
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path} contains {array.dtype} values; flowfit needs numbers.")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(
            f"{path} contains an array of shape {array.shape}; expected (rows, columns)."
        )
    return array


def npy_frame(array: np.ndarray) -> pd.DataFrame:
    """Return the rows of a 2-D array as a frame with the columns ``x0, x1, ...``."""
    return pd.DataFrame(np.asarray(array), columns=npy_columns(array.shape[1]))


def npy_columns(width: int) -> list[str]:
    """Return the names that the columns of a ``.npy`` array get: ``x0, x1, ...``."""
    return [f"x{i}" for i in range(width)]


@contextmanager
def parquet_errors(path: Path) -> Iterator[None]:
    """Turn the errors of reading the Parquet file ``path`` into DataError."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path} is not a readable Parquet file ({error}).") from None
    except Exception as error:  # noqa: BLE001
        # Damaged pandas metadata in the file makes to_pandas raise JSON, Unicode and
        # key errors.
        raise DataError(
            f"{path} is not a readable Parquet file ({type(error).__name__}: {error})."
        ) from None


def parquet_columns(schema) -> list[str]:
    """Return the data columns of a Parquet file's Arrow ``schema``, in file order.

    A pandas index stored as a column is left out, as ``to_pandas`` makes it the
    index and not a column.
    """
    metadata = schema.pandas_metadata or {}
    index = {name for name in metadata.get("index_columns", []) if isinstance(name, str)}
    return [name for name in schema.names if name not in index]


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    with parquet_errors(path):
        return pq.read_table(path).to_pandas()
