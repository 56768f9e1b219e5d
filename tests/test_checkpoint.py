"""Checkpoints: the file format, exact resumption, and kill/Ctrl-C of ``flowfit fit``."""

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flowfit import fit, load_flow, make_flow, save_flow
from flowfit.cli.app import app
from flowfit.errors import CheckpointError
from flowfit.training import TrainingInterrupted, load_checkpoint, loop, save_checkpoint

# -- the file format ---------------------------------------------------------------------


def test_state_round_trips_with_types(tmp_path):
    state = {
        "epoch": 3,
        "loss": math.inf,
        "nan": math.nan,
        "betas": (0.9, 0.999),
        "state": {0: {"step": torch.tensor(4.0), "exp_avg": torch.randn(3, 2)}},
        "flags": [True, None, "text"],
        "generator": torch.Generator().manual_seed(1).get_state(),
        "__dunder__": 1,
    }
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)

    assert loaded["epoch"] == 3
    assert loaded["loss"] == math.inf
    assert math.isnan(loaded["nan"])
    assert loaded["betas"] == (0.9, 0.999)
    assert isinstance(loaded["betas"], tuple)
    assert list(loaded["state"]) == [0]
    assert torch.equal(loaded["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert loaded["state"][0]["step"].dtype == torch.float32
    assert loaded["flags"] == [True, None, "text"]
    assert torch.equal(loaded["generator"], state["generator"])
    assert loaded["__dunder__"] == 1


def test_unsupported_value_rejected(tmp_path):
    with pytest.raises(TypeError, match="Cannot store a value of type set"):
        save_checkpoint(tmp_path / "run.ckpt", {"bad": {1, 2}})

    assert not (tmp_path / "run.ckpt").exists()


def test_damaged_checkpoint_rejected(tmp_path):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(4)})
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[-3] ^= 1
    cases = {"flipped": bytes(flipped), "truncated": data[:-7], "empty": b""}
    for name, content in cases.items():
        damaged = tmp_path / f"{name}.ckpt"
        damaged.write_bytes(content)
        with pytest.raises(CheckpointError):
            load_checkpoint(damaged)


def test_model_file_given_as_checkpoint_rejected(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.flowfit"
    save_flow(path, make_flow(torch.randn(20, 1), flow="affine", grid=None))

    with pytest.raises(CheckpointError, match="is a flowfit model file, not a flowfit training"):
        load_checkpoint(path)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(2)})

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save", fail)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(2)})

    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


# -- resuming in process -----------------------------------------------------------------


def data(seed=0):
    # Rounded values exercise the dequantisation noise, which must resume too.
    generator = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(150, 2, generator=generator),
                   2 + 0.5 * torch.randn(100, 2, generator=generator)])
    return torch.round(x * 20) / 20


def build(x, flow="spline"):
    torch.manual_seed(0)
    return make_flow(x, flow=flow, grid="auto")


OPTIONS = dict(max_epochs=9, batch_size=50, learning_rate=0.01, patience=4, seed=5,
               show_progress=False)


def uninterrupted(x):
    flow = build(x)
    history = fit(flow, x, **OPTIONS)
    return flow, history


def assert_same_run(flow, history, reference_flow, reference_history):
    for name, tensor in reference_flow.state_dict().items():
        assert torch.equal(flow.state_dict()[name], tensor), name
    assert history.train == reference_history.train
    assert history.val == reference_history.val
    assert history.best_epoch == reference_history.best_epoch
    assert history.stopped_early == reference_history.stopped_early


class Crash(Exception):
    """Stands in for SIGKILL: no handler in fit() runs, only the periodic checkpoint stays."""


def fail_in_epoch(monkeypatch, epoch, error):
    """Make the training loop raise ``error`` in the middle of ``epoch`` (from 0)."""
    original = loop._train_epoch
    started = {"epochs": 0}

    def train_epoch(*args):
        if started["epochs"] == epoch:
            started["epochs"] += 1
            original(*args)  # progress to lose
            raise error
        started["epochs"] += 1
        return original(*args)

    monkeypatch.setattr(loop, "_train_epoch", train_epoch)


@pytest.mark.parametrize("crash_epoch", [4, 7])
def test_resume_after_crash_matches_uninterrupted(tmp_path, monkeypatch, crash_epoch):
    x = data()
    reference_flow, reference_history = uninterrupted(x)
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        fail_in_epoch(patch, crash_epoch, Crash())
        with pytest.raises(Crash):
            fit(build(x), x, checkpoint=path, checkpoint_every=3, **OPTIONS)

    assert load_checkpoint(path)["epoch"] == 3 * (crash_epoch // 3)
    flow = build(x)
    history = fit(flow, x, checkpoint=path, resume_from=path, **OPTIONS)
    assert_same_run(flow, history, reference_flow, reference_history)


@pytest.mark.parametrize("interrupt_epoch", [0, 2, 8])
def test_resume_after_interrupt_matches_uninterrupted(tmp_path, monkeypatch, interrupt_epoch):
    x = data()
    reference_flow, reference_history = uninterrupted(x)
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        fail_in_epoch(patch, interrupt_epoch, KeyboardInterrupt())
        with pytest.raises(TrainingInterrupted) as raised:
            fit(build(x), x, checkpoint=path, checkpoint_every=100, **OPTIONS)

    assert raised.value.checkpoint == path
    assert load_checkpoint(path)["epoch"] == interrupt_epoch
    flow = build(x)
    history = fit(flow, x, checkpoint=path, resume_from=path, **OPTIONS)
    assert_same_run(flow, history, reference_flow, reference_history)


def test_resume_after_recovery_matches_uninterrupted(tmp_path, monkeypatch):
    # A recovery halves the learning rate; the checkpoint must carry the lowered rate.
    x = data()
    original = loop._train_epoch
    calls = {"n": 0, "crash": None}

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == calls["crash"]:
            raise Crash
        return None if calls["n"] == 2 else original(*args)

    monkeypatch.setattr(loop, "_train_epoch", failing)
    reference_flow, reference_history = uninterrupted(x)
    calls.update(n=0, crash=7)  # epoch 1 fails once and is retried; the crash is in epoch 5
    path = tmp_path / "run.ckpt"
    with pytest.raises(Crash):
        fit(build(x), x, checkpoint=path, checkpoint_every=3, **OPTIONS)
    calls.update(n=100, crash=None)
    flow = build(x)
    history = fit(flow, x, resume_from=path, **OPTIONS)

    assert load_checkpoint(path)["epoch"] == 3
    assert reference_history.recoveries == 1
    assert history.recoveries == 1
    assert_same_run(flow, history, reference_flow, reference_history)


def test_resume_with_other_settings_rejected(tmp_path):
    x = data()
    path = tmp_path / "run.ckpt"
    fit(build(x), x, checkpoint=path, checkpoint_every=2, **OPTIONS)

    with pytest.raises(CheckpointError, match=r"learning_rate=0.01 \(now 0.02\)"):
        fit(build(x), x, resume_from=path, **{**OPTIONS, "learning_rate": 0.02})
    with pytest.raises(CheckpointError, match="written by a run on other data"):
        fit(build(x), x + 1, resume_from=path, **OPTIONS)
    with pytest.raises(CheckpointError, match="does not fit this flow"):
        fit(build(x, flow="affine"), x, resume_from=path, **OPTIONS)


def test_missing_checkpoint_rejected(tmp_path):
    x = data()
    with pytest.raises(CheckpointError, match="not found"):
        fit(build(x), x, resume_from=tmp_path / "absent.ckpt", **OPTIONS)


# -- the command line --------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, (400, 2)), rng.normal(3, 0.5, (200, 2))])
    path = tmp_path / "data.csv"
    path.write_text("a,b\n" + "\n".join(f"{a:.5f},{b:.5f}" for a, b in values) + "\n")
    return path


FIT = ["--epochs", "40", "--batch-size", "128", "--checkpoint-every", "2", "-q"]


def cli_fit(table, output, *options):
    return runner.invoke(app, ["fit", str(table), "-o", str(output), *FIT, *options])


def weights(path):
    flow, metadata = load_flow(path)
    return flow.state_dict(), metadata["history"]


def assert_same_model(path, reference, resumed_at):
    state, history = weights(path)
    reference_state, reference_history = weights(reference)
    for name, tensor in reference_state.items():
        difference = (state[name] - tensor).abs().max().item()
        assert difference == 0.0, f"{name} differs by {difference}, resumed at {resumed_at}"
    assert history["train"] == reference_history["train"]
    assert history["val"] == reference_history["val"]


def start_fit(table, output):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "flowfit", "fit", str(table), "-o", str(output), *FIT]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(path, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


@pytest.mark.slow
def test_killed_fit_resumes_to_same_model(table, tmp_path):
    reference = tmp_path / "reference.flowfit"
    assert cli_fit(table, reference).exit_code == 0
    output = tmp_path / "model.flowfit"
    checkpoint = tmp_path / "model.flowfit.ckpt"
    process = start_fit(table, output)
    wait_for(checkpoint, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()

    resumed_at = load_checkpoint(checkpoint)["epoch"]

    assert process.returncode == -signal.SIGKILL
    assert not output.exists()
    assert resumed_at < 40
    resumed = cli_fit(table, output, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert not checkpoint.exists()
    assert_same_model(output, reference, resumed_at)


def interrupt_fit(table, output, signal_number):
    """Start a fit, send it ``signal_number`` after its first checkpoint; return it."""
    process = start_fit(table, output)
    wait_for(output.with_name(output.name + ".ckpt"), process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.slow
def test_sigterm_saves_best_model_like_ctrl_c(table, tmp_path):
    output = tmp_path / "model.flowfit"
    checkpoint = tmp_path / "model.flowfit.ckpt"
    returncode, stderr = interrupt_fit(table, output, signal.SIGTERM)

    assert returncode == 130, stderr
    assert "wrote the best model so far (epoch " in stderr
    assert "Traceback" not in stderr
    assert load_flow(output)[1]["history"]["best_epoch"] >= 0
    assert load_checkpoint(checkpoint)["epoch"] >= 1


@pytest.mark.slow
def test_ctrl_c_saves_best_model_and_resumes(table, tmp_path):
    reference = tmp_path / "reference.flowfit"
    assert cli_fit(table, reference).exit_code == 0
    output = tmp_path / "model.flowfit"
    checkpoint = tmp_path / "model.flowfit.ckpt"
    returncode, stderr = interrupt_fit(table, output, signal.SIGINT)

    assert returncode == 130, stderr
    assert "wrote the best model so far (epoch " in stderr
    assert f"to {output}" in stderr
    assert f"the checkpoint {checkpoint} holds the run" in stderr
    assert "Traceback" not in stderr
    assert load_flow(output)[1]["history"]["best_epoch"] >= 0
    resumed_at = load_checkpoint(checkpoint)["epoch"]
    resumed = cli_fit(table, output, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_model(output, reference, resumed_at)


def test_cli_interrupt_in_process_saves_best_model(table, tmp_path, monkeypatch):
    output = tmp_path / "model.flowfit"
    fail_in_epoch(monkeypatch, 5, KeyboardInterrupt())
    result = cli_fit(table, output)

    assert result.exit_code == 130
    assert "interrupted after 5 completed epoch(s)" in result.stderr
    assert f"to {output}" in result.stderr
    assert len(load_flow(output)[1]["history"]["train"]) == 5
    assert load_checkpoint(tmp_path / "model.flowfit.ckpt")["epoch"] == 5


def test_cli_interrupt_in_first_epoch_writes_no_model(table, tmp_path, monkeypatch):
    output = tmp_path / "model.flowfit"
    fail_in_epoch(monkeypatch, 0, KeyboardInterrupt())
    result = cli_fit(table, output)

    assert result.exit_code == 130
    assert "no epoch completed, so no model was written" in result.stderr
    assert not output.exists()


def test_cli_resume_needs_checkpoint(table, tmp_path):
    result = cli_fit(table, tmp_path / "model.flowfit", "--resume")

    assert result.exit_code == 1
    assert "There is no checkpoint to resume" in result.stderr


def test_cli_leftover_checkpoint_needs_resume_or_force(table, tmp_path):
    output = tmp_path / "model.flowfit"
    checkpoint = tmp_path / "model.flowfit.ckpt"
    save_checkpoint(checkpoint, {"epoch": 0})
    refused = cli_fit(table, output)

    assert refused.exit_code == 1
    assert "pass --resume to continue it, or --force" in refused.stderr
    assert not output.exists()
    forced = cli_fit(table, output, "--force", "--epochs", "2")
    assert forced.exit_code == 0, forced.output
    assert output.exists()
    assert not checkpoint.exists()


def test_resume_on_other_process_count_names_it(tmp_path):
    stored = {"settings": {"shards": 2, "data_sha256": "a"}}

    with pytest.raises(CheckpointError, match="sharded run on 2 processes; resume it on 2"):
        loop._check_settings(stored, {"shards": 3, "data_sha256": "b"}, tmp_path / "run.ckpt")
