"""Run every benchmark script on a tiny budget, so that the scripts keep working.

The peers (zuko, nflows, normflows) come from the ``bench`` extra. The tests use the
ones that are installed and always run flowfit's path.
"""

import json
import math
import sys
from pathlib import Path

import pytest

from flowfit.flows import PRESETS

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import accuracy  # noqa: E402
import adapters  # noqa: E402
import make_tables  # noqa: E402
import real_data  # noqa: E402
import speed  # noqa: E402

INSTALLED = [library for library in adapters.LIBRARIES if adapters.available(library)]
LIBRARIES = ",".join(INSTALLED)


def read_runs(path: Path) -> dict:
    return json.loads(path.read_text())["runs"]


@pytest.mark.parametrize("library", INSTALLED)
@pytest.mark.parametrize("kind", adapters.KINDS)
@pytest.mark.parametrize("features", [1, 3])
def test_adapter_shapes(library, kind, features):
    import torch

    torch.manual_seed(0)
    model = adapters.build(library, kind, features, layers=2, hidden=8, bins=4)
    log_prob = model.log_prob(torch.randn(5, features))
    samples = model.sample(4)

    assert log_prob.shape == (5,)
    assert bool(torch.all(torch.isfinite(log_prob)))
    assert samples.shape == (4, features)
    assert model.parameters > 0


def test_adapter_unknown_library_rejected():
    with pytest.raises(ValueError, match="Unknown library 'jax'"):
        adapters.build("jax", "maf", 2)


def test_accuracy_script_tiny_budget(tmp_path):
    output = tmp_path / "accuracy.json"
    accuracy.main([
        "--target", "normal,ring", "--libraries", LIBRARIES, "--steps", "3",
        "--train-size", "300", "--test-size", "400", "--layers", "2", "--hidden", "8",
        "--output", str(output),
    ])
    runs = read_runs(output)

    for target in ("normal", "ring"):
        for library in INSTALLED:
            for kind in adapters.KINDS:
                record = runs[f"steps-3/{target}/{library}/{kind}"]
                assert record["steps"] == 3
                assert math.isfinite(record["kl"])
                assert record["kl_se"] > 0
    assert "flowfit MAF" in output.with_suffix(".md").read_text()


def test_accuracy_script_seconds_and_estimator(tmp_path):
    output = tmp_path / "accuracy.json"
    accuracy.main([
        "--target", "normal", "--libraries", "flowfit", "--kinds", "nsf", "--seconds", "0.5",
        "--train-size", "200", "--test-size", "300", "--layers", "1", "--hidden", "8",
        "--estimator", "--output", str(output),
    ])
    runs = read_runs(output)
    timed = runs["seconds-0.5/normal/flowfit/nsf"]
    estimator = runs["seconds-0.5/normal/flowfit-estimator/default"]

    assert timed["steps"] >= 1
    assert math.isfinite(timed["kl"])
    assert estimator["flow"] in PRESETS
    assert math.isfinite(estimator["kl"])


def test_accuracy_script_rejects_unknown_target():
    with pytest.raises(SystemExit, match="invalid target"):
        accuracy.main(["--target", "moon"])


def test_real_data_script_tiny_budget(tmp_path):
    output = tmp_path / "real_data.json"
    real_data.main([
        "--table", "banknote", "--libraries", LIBRARIES, "--steps", "3",
        "--max-rows", "300", "--layers", "2", "--hidden", "8", "--output", str(output),
    ])
    runs = read_runs(output)
    mixture = runs["steps-3/banknote/gaussian-mixture/baseline"]
    kernel = runs["steps-3/banknote/kernel-density/baseline"]

    for library in INSTALLED:
        for kind in adapters.KINDS:
            record = runs[f"steps-3/banknote/{library}/{kind}"]
            assert record["rows"] == {"train": 210, "val": 30, "test": 60}
            assert math.isfinite(record["ll"])
    assert mixture["components"] in real_data.GMM_COMPONENTS
    assert kernel["bandwidth"] > 0
    assert "GaussianMixture" in output.with_suffix(".md").read_text()


def test_real_data_split_is_fixed():
    first = real_data.prepare("banknote", max_rows=100)
    second = real_data.prepare("banknote", max_rows=100)

    assert (first["test"] == second["test"]).all()
    assert abs(first["train"].mean(0)).max() < 1e-9
    assert first["columns"] == ["variance", "skewness", "curtosis", "entropy"]


def test_speed_script_tiny_budget(tmp_path):
    output = tmp_path / "speed.json"
    speed.main([
        "--libraries", LIBRARIES, "--features", "3", "--repeats", "1", "--train-steps", "1",
        "--train-batch", "16", "--eval-rows", "32", "--layers", "2", "--hidden", "8",
        "--output", str(output),
    ])
    runs = read_runs(output)

    for kind in adapters.KINDS:
        for measure in speed.MEASURES:
            for library in INSTALLED:
                record = runs[f"{kind}-3/{measure}/{library}"]
                assert record["rate_cpu"] > 0
                assert record["rate_wall"] > 0
                assert record["peak_mib"] >= 0
    assert "flowfit / fastest peer" in output.with_suffix(".md").read_text()


def test_make_tables_fills_docs_blocks(tmp_path):
    results = tmp_path / "results"
    accuracy.main([
        "--target", "normal", "--libraries", "flowfit", "--steps", "2", "--train-size", "100",
        "--test-size", "100", "--layers", "1", "--hidden", "8",
        "--output", str(results / "accuracy.json"),
    ])
    real_data.main([
        "--table", "banknote", "--libraries", "flowfit", "--steps", "2", "--max-rows", "200",
        "--layers", "1", "--hidden", "8", "--output", str(results / "real_data.json"),
    ])
    speed.main([
        "--libraries", "flowfit", "--features", "2", "--repeats", "1", "--train-steps", "1",
        "--train-batch", "8", "--eval-rows", "8", "--layers", "1", "--hidden", "8",
        "--no-memory", "--output", str(results / "speed.json"),
    ])
    names = ["environment", "accuracy", "parameters", "real-data", "speed"]
    page = tmp_path / "benchmarks.md"
    page.write_text("".join(f"<!-- {n}:start -->\nold\n<!-- {n}:end -->\n" for n in names))
    make_tables.main(["--results", str(results), "--docs", str(page)])
    text = page.read_text()

    assert "old" not in text
    assert "| normal | 1 |" in text
    assert "| banknote | 4 |" in text
    assert "flowfit / fastest peer" in text


@pytest.mark.skipif("zuko" not in INSTALLED, reason="speed_floor.py compares against zuko")
def test_speed_floor_script_prints_ratios(capsys):
    import speed_floor

    speed_floor.main(["--features", "3", "--repeats", "1"])
    printed = capsys.readouterr().out

    assert "log_prob, batch 4096: bare stack" in printed
    assert "train step, batch 512: bare stack" in printed
    assert printed.count("largest possible speed-up over zuko") == 2


def test_danish_fire_script_one_split(tmp_path):
    import danish_fire

    output = tmp_path / "danish_fire.json"
    danish_fire.main(["--seeds", "0", "--output", str(output)])
    runs = {run["model"]: run for run in json.loads(output.read_text())["runs"]}

    assert set(runs) == {"pareto", "lognormal", "flowfit", "flowfit-normal-base",
                         "flowfit-lower-limit"}
    assert runs["pareto"]["alpha"] > 1
    assert "(0.999, inf)" in runs["flowfit-lower-limit"]["support"]
    for run in runs.values():
        assert math.isfinite(run["test_log_likelihood"])


def test_rnade_script_one_fold(tmp_path):
    import rnade

    output = tmp_path / "rnade.json"
    rnade.main(["--datasets", "boston", "--folds", "1", "--output", str(output)])
    (run,) = json.loads(output.read_text())["runs"]

    assert run["dataset"] == "boston"
    assert run["features"] == 10
    assert run["flowfit"] > run["gaussian"]
