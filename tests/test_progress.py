"""Training progress reporters: bar, JSON lines and quiet modes."""

import io
import json

import pytest

from flowfit.training.progress import (
    BarProgress,
    JsonLinesProgress,
    QuietProgress,
    make_progress,
)


class FakeClock:
    """A clock that advances by a fixed step on every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_jsonl_writes_one_object_per_epoch():
    stream = io.StringIO()
    progress = make_progress("jsonl", max_epochs=10, rows_per_epoch=500, stream=stream,
                             clock=FakeClock(0.5))
    progress.epoch_end(1.25, 1.5)
    progress.epoch_end(1.0, None)
    progress.close(best_epoch=1, stopped_early=True)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]

    assert [r["event"] for r in records] == ["epoch", "epoch", "end"]
    assert records[0]["epoch"] == 1
    assert records[0]["max_epochs"] == 10
    assert records[0]["train_nll"] == 1.25
    assert records[0]["val_nll"] == 1.5
    assert records[0]["rows_per_second"] == pytest.approx(1000.0)
    assert records[1]["epoch"] == 2
    assert records[1]["val_nll"] is None
    assert records[2]["epochs"] == 2
    assert records[2]["best_epoch"] == 1
    assert records[2]["stopped_early"] is True


def test_jsonl_writes_non_finite_as_null():
    stream = io.StringIO()
    progress = make_progress("jsonl", max_epochs=3, rows_per_epoch=10, stream=stream,
                             clock=FakeClock(1.0))
    progress.epoch_end(float("nan"), float("inf"))
    record = json.loads(stream.getvalue().splitlines()[0])

    assert record["train_nll"] is None
    assert record["val_nll"] is None


def test_jsonl_close_twice_writes_one_end():
    stream = io.StringIO()
    with make_progress("jsonl", max_epochs=3, rows_per_epoch=10, stream=stream) as progress:
        progress.epoch_end(2.0, 2.5)
        progress.close(best_epoch=1)
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]

    assert events == ["epoch", "end"]


def test_bar_shows_throughput_and_losses():
    stream = io.StringIO()
    progress = make_progress("bar", max_epochs=4, rows_per_epoch=2000, stream=stream,
                             clock=FakeClock(0.25))
    progress.epoch_end(1.2345, 1.3456)
    progress.close()
    text = stream.getvalue()

    assert isinstance(progress, BarProgress)
    assert "8,000 rows/s" in text
    assert "train 1.2345" in text
    assert "val 1.3456" in text
    assert "1/4" in text


def test_bar_resumes_from_initial_epoch():
    stream = io.StringIO()
    progress = make_progress("bar", max_epochs=10, rows_per_epoch=1, initial_epoch=6,
                             stream=stream)
    progress.epoch_end(1.0)
    progress.close()

    assert progress.epoch == 7
    assert "7/10" in stream.getvalue()


def test_quiet_writes_nothing():
    stream = io.StringIO()
    progress = make_progress("quiet", max_epochs=5, rows_per_epoch=100, stream=stream)
    progress.epoch_end(1.0, 1.1)
    progress.close(best_epoch=1)

    assert isinstance(progress, QuietProgress)
    assert progress.epoch == 1
    assert stream.getvalue() == ""


def test_default_stream_is_stderr(capsys):
    progress = JsonLinesProgress(max_epochs=2, rows_per_epoch=4)
    progress.epoch_end(0.5)
    captured = capsys.readouterr()

    assert captured.out == ""
    assert json.loads(captured.err.splitlines()[0])["train_nll"] == 0.5


@pytest.mark.parametrize(
    ("mode", "options", "message"),
    [
        ("loud", {}, "progress mode must be one of"),
        ("quiet", {"max_epochs": 0}, "max_epochs must be at least 1"),
        ("quiet", {"rows_per_epoch": -1}, "rows_per_epoch must be non-negative"),
        ("quiet", {"initial_epoch": 11}, "initial_epoch must be in"),
    ],
)
def test_make_progress_rejects_invalid_settings(mode, options, message):
    settings = {"max_epochs": 10, "rows_per_epoch": 5, **options}
    with pytest.raises(ValueError, match=message):
        make_progress(mode, **settings)
