"""The command line, run for real on the bundled data."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flowfit import FlowDensity, datasets
from flowfit.cli.app import app

FAITHFUL = datasets.path("old_faithful")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "waiting.flowfit"
    result = invoke("fit", FAITHFUL, "--columns", "waiting", "--epochs", "40", "-q", "-o", path)
    assert result.exit_code == 0, result.output
    return path


def test_fit_prints_summary(tmp_path):
    out = tmp_path / "m.flowfit"
    result = invoke("fit", FAITHFUL, "--columns", "eruptions", "--epochs", "20", "-o", out)

    assert result.exit_code == 0, result.output
    assert "fitted spline flow to 272 rows x 1 columns (eruptions)" in result.stdout
    assert f"wrote {out}" in result.stdout
    assert out.exists()


def test_score_matches_library(model_path, tmp_path):
    out = tmp_path / "scores.csv"
    result = invoke("score", model_path, FAITHFUL, "-o", out)
    scores = pd.read_csv(out)["log_prob"].to_numpy()
    model = FlowDensity.load(model_path)
    expected = model.score_samples(datasets.load("old_faithful")[["waiting"]])

    assert result.exit_code == 0, result.output
    assert scores.shape == (272,)
    np.testing.assert_allclose(scores, expected, rtol=1e-8)


def test_score_writes_stdout_without_output(model_path):
    result = invoke("score", model_path, FAITHFUL)
    lines = result.stdout.strip().splitlines()

    assert result.exit_code == 0, result.output
    assert lines[0] == "log_prob"
    assert len(lines) == 273


def test_sample_writes_rows_on_the_grid(model_path, tmp_path):
    out = tmp_path / "samples.csv"
    result = invoke("sample", model_path, "-n", 50, "-o", out)
    samples = pd.read_csv(out)

    assert result.exit_code == 0, result.output
    assert list(samples.columns) == ["waiting"]
    assert len(samples) == 50
    assert np.array_equal(samples["waiting"], np.round(samples["waiting"]))


def test_fit_refuses_to_overwrite_without_force(model_path):
    before = model_path.read_bytes()
    result = invoke("fit", FAITHFUL, "--columns", "waiting", "-q", "-o", model_path)

    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert "--force" in result.stderr
    assert model_path.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("waiting\n70\nabc\n", "holds text: 'abc' in data row 2"),
        ("waiting\n70\nnan\n", "missing or NaN value(s), first in data rows [2]"),
        ("waiting\n70\ninf\n", "infinite value(s), first in data rows [2]"),
        ("waiting\n", "has a header but no data rows"),
        ("", "is empty"),
        ("other\n1\n2\n", "Column 'waiting' not found"),
    ],
    ids=["text", "nan", "inf", "header-only", "empty", "unknown-column"],
)
def test_score_bad_data_fails_cleanly(model_path, tmp_path, content, message):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    out = tmp_path / "scores.csv"
    result = invoke("score", model_path, data, "-o", out)

    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_data_file_fails_cleanly(tmp_path):
    result = invoke("fit", tmp_path / "none.csv", "-o", tmp_path / "m.flowfit")

    assert result.exit_code == 1
    assert "Data file not found" in result.stderr


def test_demo_beats_gaussian():
    result = invoke("demo")
    lines = {line.split()[0] + " " + line.split()[1]: line for line in result.stdout.splitlines()
             if line.startswith("  spline") or line.startswith("  single")}
    flow_score = float(lines["spline flow"].split()[-1])
    gauss_score = float(lines["single Gaussian"].split()[-1])

    assert result.exit_code == 0, result.output
    assert flow_score > gauss_score


def test_installed_command_runs(tmp_path):
    script = Path(sys.executable).parent / "flowfit"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr
    assert "fit" in result.stdout
    assert "score" in result.stdout


def test_multicolumn_fit_beats_full_covariance_gaussian(tmp_path):
    from scipy import stats

    table = datasets.load("ccpp").sample(n=4000, random_state=0)
    train, test = table.iloc[:2000], table.iloc[2000:]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    model = tmp_path / "ccpp.flowfit"
    fitted = invoke("fit", tmp_path / "train.csv", "--flow", "maf", "--epochs", "40", "-q",
                    "-o", model)
    scored = invoke("score", model, tmp_path / "test.csv", "-o", tmp_path / "scores.csv")
    flow_score = pd.read_csv(tmp_path / "scores.csv")["log_prob"].mean()
    gaussian = stats.multivariate_normal(train.mean().to_numpy(),
                                         np.cov(train.to_numpy(), rowvar=False, bias=True))
    gauss_score = gaussian.logpdf(test.to_numpy()).mean()
    print(f"held-out mean log-likelihood: MAF {flow_score:.4f}, Gaussian {gauss_score:.4f}")

    assert fitted.exit_code == 0, fitted.output
    assert scored.exit_code == 0, scored.output
    assert flow_score > gauss_score + 0.2
