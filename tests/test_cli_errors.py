"""Bad input on the command line: one ``error:`` line naming the row or column, exit
status 1, and no output file, not even a partial one."""

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flowfit.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def table(tmp_path, rows, header="a,b", name="data.csv"):
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(f"{row}\n" for row in rows))
    return path


def good_rows(n=60, seed=0):
    values = np.random.default_rng(seed).normal(size=(n, 2))
    return [f"{a:.6f},{b:.6f}" for a, b in values]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    data = table(folder, good_rows(200))
    path = folder / "model.flowfit"
    result = invoke("fit", data, "-o", path, "--epochs", "3", "-q")
    assert result.exit_code == 0, result.output
    return path


def bad_fit_input(tmp_path, case):
    rows = good_rows()
    if case == "text":
        rows[4] = "0.5,abc"
    elif case == "nan":
        rows[4] = "0.5,nan"
    elif case == "inf":
        rows[4] = "inf,0.5"
    elif case == "ragged":
        rows[4] = "0.5"
    elif case == "header only":
        rows = []
    elif case == "beyond float32":
        rows[4] = "1e300,0.5"
    elif case == "constant":
        rows = [f"1.5,{row.split(',')[1]}" for row in rows]
    if case == "empty":
        path = tmp_path / "data.csv"
        path.write_text("")
        return path
    return table(tmp_path, rows)


FIT_ERRORS = {
    "text": ["Column 'b'", "holds text: 'abc' in data row 5"],
    "nan": ["Column 'b'", "missing or NaN", "data rows [5]"],
    "inf": ["Column 'a'", "infinite", "data rows [5]"],
    "ragged": ["line 6 has 1 fields"],
    "empty": ["is empty"],
    "header only": ["has a header but no data rows"],
    "beyond float32": ["Column 'a'", "float32"],
    "constant": ["Column 'a' is constant"],
}


@pytest.mark.parametrize("case", sorted(FIT_ERRORS))
def test_fit_bad_data_fails_cleanly(tmp_path, case):
    data = bad_fit_input(tmp_path, case)
    output = tmp_path / "model.flowfit"
    result = invoke("fit", data, "-o", output, "--epochs", "2", "-q")

    assert_one_error_line(result, *FIT_ERRORS[case])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_fit_missing_column_fails_cleanly(tmp_path):
    data = table(tmp_path, good_rows())
    result = invoke("fit", data, "-o", tmp_path / "m.flowfit", "--columns", "a,z", "-q")

    assert_one_error_line(result, "Column 'z' not found", "available columns: a, b")
    assert not (tmp_path / "m.flowfit").exists()


def test_fit_model_file_as_data_fails_cleanly(model, tmp_path):
    output = tmp_path / "again.flowfit"
    result = invoke("fit", model, "-o", output, "-q")

    assert_one_error_line(result, "is a flowfit model file, not a data table")
    assert not output.exists()


def test_fit_large_values_train_finite(tmp_path):
    values = np.random.default_rng(1).normal(size=(200, 2)) * [1e30, 1.0]
    data = table(tmp_path, [f"{a:.17g},{b:.17g}" for a, b in values])
    output = tmp_path / "big.flowfit"
    fitted = invoke("fit", data, "-o", output, "--epochs", "5", "-q")
    scores = invoke("score", output, data)
    log_prob = pd.read_csv(pd.io.common.StringIO(scores.stdout))["log_prob"]

    assert fitted.exit_code == 0, fitted.output
    assert scores.exit_code == 0, scores.output
    assert np.all(np.isfinite(log_prob))
    assert log_prob.mean() < -60  # the density of a column spread over 1e30 is tiny


def test_score_far_outlier_is_not_nan(model, tmp_path):
    data = table(tmp_path, ["1e30,0.5", "-1e30,0.5", "0.1,0.2"])
    result = invoke("score", model, data)
    log_prob = pd.read_csv(pd.io.common.StringIO(result.stdout))["log_prob"].tolist()

    assert result.exit_code == 0, result.output
    assert not any(math.isnan(v) for v in log_prob)
    assert math.isfinite(log_prob[2])


SCORE_ERRORS = {
    "missing column": ("a\n0.5\n", ["Column 'b' not found", "available columns: a"]),
    "nan": ("a,b\n0.5,0.1\nnan,0.2\n", ["Column 'a'", "missing or NaN", "data rows [2]"]),
    "text": ("a,b\n0.5,0.1\n0.3,x\n", ["Column 'b'", "holds text: 'x' in data row 2"]),
    "header only": ("a,b\n", ["has a header but no data rows"]),
    "ragged": ("a,b\n0.5,0.1\n0.3\n", ["line 3 has 1 fields"]),
}


@pytest.mark.parametrize("case", sorted(SCORE_ERRORS))
def test_score_bad_data_fails_cleanly(model, tmp_path, case):
    text, fragments = SCORE_ERRORS[case]
    data = tmp_path / "data.csv"
    data.write_text(text)
    output = tmp_path / "scores.csv"
    result = invoke("score", model, data, "-o", output)

    assert_one_error_line(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_score_columns_in_other_order_match_by_name(model, tmp_path):
    rows = good_rows(10, seed=3)
    data = table(tmp_path, rows, name="ab.csv")
    swapped = table(tmp_path, [",".join(reversed(r.split(","))) for r in rows], header="b,a",
                    name="ba.csv")
    first = invoke("score", model, data)
    second = invoke("score", model, swapped)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert first.stdout == second.stdout


def test_score_data_file_as_model_fails_cleanly(model, tmp_path):
    data = table(tmp_path, good_rows())
    output = tmp_path / "scores.csv"
    result = invoke("score", data, data, "-o", output)

    assert_one_error_line(result, "is not a flowfit model file")
    assert not output.exists()


def test_score_model_file_as_data_fails_cleanly(model, tmp_path):
    output = tmp_path / "scores.csv"
    result = invoke("score", model, model, "-o", output)

    assert_one_error_line(result, "is a flowfit model file, not a data table")
    assert not output.exists()


def test_sample_data_file_as_model_fails_cleanly(tmp_path):
    data = table(tmp_path, good_rows())
    output = tmp_path / "samples.csv"
    result = invoke("sample", data, "-o", output)

    assert_one_error_line(result, "is not a flowfit model file")
    assert not output.exists()


def test_truncated_model_fails_cleanly(model, tmp_path):
    damaged = tmp_path / "cut.flowfit"
    damaged.write_bytes(model.read_bytes()[:-10])
    data = table(tmp_path, good_rows())
    result = invoke("score", damaged, data)

    assert_one_error_line(result, "is corrupt")


def test_fit_missing_output_folder_fails_before_training(tmp_path):
    data = table(tmp_path, good_rows())
    output = tmp_path / "no-such-folder" / "model.flowfit"

    result = invoke("fit", data, "-o", output, "--epochs", 500, "--progress", "quiet")

    assert_one_error_line(result, "no-such-folder", "does not exist; create it")
    assert "epochs:" not in result.stdout
    assert not output.parent.exists()
