"""Reading tables: every kind of bad file gives one DataError naming the row or column."""

import io
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from flowfit import make_flow
from flowfit.errors import DataError
from flowfit.io.model_file import save_flow
from flowfit.io.tables import open_npy, read_table
from flowfit.training.checkpoint import save_checkpoint


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_TEXT = {
    "text in numeric column": (
        "x,y\n1,2\n3,abc\n5,6\n", r"Column 'y' .* holds text: 'abc' in data row 2"
    ),
    "nan": (
        "x,y\n1,2\n3,nan\n5,6\n",
        r"Column 'y' .* 1 missing or NaN value\(s\), first in data rows \[2\]",
    ),
    "empty cell": ("x,y\n1,2\n3,\n5,6\n", r"Column 'y' .* missing or NaN .* rows \[2\]"),
    "NA": ("x,y\n1,2\n3,4\nNA,6\n", r"Column 'x' .* missing or NaN .* rows \[3\]"),
    "inf": (
        "x,y\n1,2\n3,4\n-inf,6\n",
        r"Column 'x' .* 1 infinite value\(s\), first in data rows \[3\]",
    ),
    "empty file": ("", r"is empty"),
    "blank lines only": ("\n\n  \n", r"is empty"),
    "header only": ("x,y\n", r"has a header but no data rows"),
    "short row": ("x,y\n1,2\n3\n5,6\n", r"line 3 has 1 fields, the first line has 2"),
    "long row": ("x,y\n1,2\n3,4,5\n5,6\n", r"cannot be read as a table|rows of different lengths"),
    "unbalanced quote": (
        'x,y\n1,2\n"3,4\n5,6\n', r"cannot be read as a table|different lengths|text"
    ),
    "double byte order mark": ("\ufeff\ufeff", r"is empty|cannot be read"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_bad_text_file_rejected(tmp_path, case):
    text, message = BAD_TEXT[case]
    path = write(tmp_path, text)

    with pytest.raises(DataError, match=message):
        read_table(path)


def test_short_row_counts_blank_lines(tmp_path):
    path = write(tmp_path, "x,y\n\n1,2\n\n3\n")

    with pytest.raises(DataError, match="line 5 has 1 fields"):
        read_table(path)


def test_missing_column_named(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n3,4\n")

    with pytest.raises(DataError, match=r"Column 'z' not found .* available columns: x, y"):
        read_table(path, ["x", "z"])


def test_columns_follow_requested_order(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n3,4\n")
    frame = read_table(path, ["y", "x"])

    assert list(frame.columns) == ["y", "x"]
    assert frame["y"].tolist() == [2.0, 4.0]


def test_large_finite_values_accepted(tmp_path):
    path = write(tmp_path, "x,y\n1e30,2\n-3e30,1e-300\n")
    frame = read_table(path)

    assert frame["x"].tolist() == [1e30, -3e30]
    assert frame["y"].tolist() == [2.0, 1e-300]


def test_value_overflowing_float64_rejected(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n1e999,4\n")

    message = r"Column 'x' .* infinite value\(s\), first in data rows \[2\]"
    with pytest.raises(DataError, match=message):
        read_table(path)


def test_model_file_given_as_data_rejected(tmp_path):
    torch.manual_seed(0)
    flow = make_flow(torch.randn(20, 1), flow="affine", grid=None)
    path = tmp_path / "model.csv"
    save_flow(path, flow)

    with pytest.raises(DataError, match="is a flowfit model file, not a data table"):
        read_table(path)


def test_checkpoint_given_as_data_rejected(tmp_path):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.zeros(3)})

    with pytest.raises(DataError, match="is a flowfit training checkpoint, not a data table"):
        read_table(path)


def test_pickle_given_as_data_rejected(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(pickle.dumps(pd.DataFrame({"x": [1.0, 2.0]}), protocol=4))

    with pytest.raises(DataError, match="is a Python pickle, not a data table"):
        read_table(path)


def test_zip_given_as_data_rejected(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sheet.xml", "<x/>")
    path = tmp_path / "data.csv"
    path.write_bytes(buffer.getvalue())

    with pytest.raises(DataError, match="is a zip archive"):
        read_table(path)


def test_binary_text_file_rejected(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"x\n\xff\xfe\x00\n")

    with pytest.raises(DataError, match="is not a text table"):
        read_table(path)


def test_damaged_npy_rejected(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6.0).reshape(3, 2))
    data = bytearray(buffer.getvalue())
    data[40] = ord("(")  # unbalances the header's Python literal
    path = tmp_path / "data.npy"
    path.write_bytes(bytes(data))

    with pytest.raises(DataError, match="is not a (valid|readable) .npy"):
        read_table(path)


def test_text_named_npy_rejected(tmp_path):
    path = write(tmp_path, "x\n1\n", name="data.npy")

    with pytest.raises(DataError, match="is not a .npy file"):
        read_table(path)


def test_damaged_parquet_rejected(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(DataError, match="is not a readable Parquet file"):
        read_table(path)


def test_npy_object_array_rejected_without_unpickling(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)

    with pytest.raises(DataError, match="not a readable .npy array"):
        read_table(path)


def test_truncated_npy_names_the_fix(tmp_path):
    path = tmp_path / "table.npy"
    np.save(path, np.ones((100, 3)))
    path.write_bytes(path.read_bytes()[:-400])

    with pytest.raises(DataError, match="truncated. Save the table again with numpy.save"):
        open_npy(path, mmap=True)
