"""Training faults: non-finite losses and gradients, and interrupts."""

import logging
import math

import pytest
import torch

from flowfit import fit, make_flow
from flowfit.errors import TrainingError
from flowfit.training import TrainingInterrupted

LOGGER = "flowfit.training.loop"


def data(n=100, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=generator, dtype=torch.float64) * 2 + 1


def build(x):
    torch.manual_seed(0)
    return make_flow(x, flow="spline", grid=None)


def parameters(flow):
    return {name: p.detach().clone() for name, p in flow.named_parameters()}


def same(a, b):
    return all(torch.equal(a[name], b[name]) for name in a)


class Faults:
    """Wrap ``flow.log_density``: record parameters per call, misbehave on chosen calls.

    Calls are counted from 0 and include validation passes.
    """

    def __init__(self, flow, *, nan=(), interrupt=None, always_nan=False):
        self.flow = flow
        self.nan = set(nan)
        self.interrupt = interrupt
        self.always_nan = always_nan
        self.seen = []
        self.original = flow.log_density
        flow.log_density = self

    def __call__(self, x, context=None):
        call = len(self.seen)
        self.seen.append(parameters(self.flow))
        if call == self.interrupt:
            raise KeyboardInterrupt
        log_prob = self.original(x, context)
        if self.always_nan or call in self.nan:
            return log_prob * math.nan
        return log_prob


# Four training batches of 25 rows per epoch and no validation rows, so call 4k is the
# first batch of epoch k.
OPTIONS = dict(batch_size=25, val_fraction=0.0, lr_schedule="constant", learning_rate=0.01,
               show_progress=False)


def test_nan_loss_rolls_back_and_halves_lr(caplog):
    x = data()
    flow = build(x)
    faults = Faults(flow, nan={10})  # third batch of epoch 2
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        history = fit(flow, x, max_epochs=4, **OPTIONS)
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]

    assert history.recoveries == 1
    assert len(history.train) == 4
    assert same(faults.seen[11], faults.seen[8])  # the retry starts where epoch 2 did
    assert not same(faults.seen[10], faults.seen[8])
    assert len(warnings) == 1
    assert "Non-finite loss or gradient in epoch 2" in warnings[0]
    assert "halved the learning rate to 0.005 (recovery 1 of 5)" in warnings[0]
    assert all(math.isfinite(v) for v in history.train)


def test_nan_gradient_rolls_back(caplog):
    x = data()
    flow = build(x)
    faults = Faults(flow)
    calls = {"backward": 0}

    def poison(grad):
        calls["backward"] += 1
        return grad * math.nan if calls["backward"] == 6 else grad

    next(flow.parameters()).register_hook(poison)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        history = fit(flow, x, max_epochs=3, **OPTIONS)

    assert history.recoveries == 1
    assert len(history.train) == 3
    assert same(faults.seen[6], faults.seen[4])  # epoch 1 restarted from its start
    assert "Non-finite loss or gradient in epoch 1" in caplog.text


def test_repeated_failures_raise_training_error(caplog):
    x = data()
    flow = build(x)
    before = parameters(flow)
    Faults(flow, always_nan=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(TrainingError) as raised:
            fit(flow, x, max_epochs=4, max_recoveries=2, **OPTIONS)
    message = str(raised.value)
    warnings = [r for r in caplog.records if r.name == LOGGER]

    assert "non-finite 3 times" in message
    assert "lower learning_rate" in message
    assert "the flow holds the parameters from before that epoch" in message
    assert len(warnings) == 3
    assert same(parameters(flow), before)


def test_history_indices_after_recovery():
    x = data(200)
    flow = build(x)
    Faults(flow, nan={13})
    options = {**OPTIONS, "val_fraction": 0.5}  # 4 batches and 1 validation pass per epoch
    history = fit(flow, x, max_epochs=5, **options)

    assert history.recoveries == 1
    assert len(history.train) == 5
    assert len(history.val) == 5
    assert history.val[history.best_epoch] == min(history.val)


def test_interrupt_keeps_best_parameters():
    x = data(200)
    options = {**OPTIONS, "val_fraction": 0.5}
    reference = build(x)
    reference_history = fit(reference, x, max_epochs=3, **options)
    flow = build(x)
    Faults(flow, interrupt=17)  # second batch of epoch 3

    with pytest.raises(TrainingInterrupted) as raised:
        fit(flow, x, max_epochs=10, **options)

    assert isinstance(raised.value, KeyboardInterrupt)
    assert raised.value.history.train == reference_history.train
    assert raised.value.history.best_epoch == reference_history.best_epoch
    assert raised.value.checkpoint is None
    assert same(parameters(flow), parameters(reference))


def test_interrupt_before_first_epoch_keeps_initial_parameters():
    x = data()
    flow = build(x)
    before = parameters(flow)
    Faults(flow, interrupt=0)

    with pytest.raises(TrainingInterrupted) as raised:
        fit(flow, x, max_epochs=3, **OPTIONS)

    assert raised.value.history.train == []
    assert raised.value.history.best_epoch == -1
    assert same(parameters(flow), before)


def test_non_finite_validation_loss_never_best(caplog):
    x = data(200)
    flow = build(x)
    original = flow.log_density

    def infinite_in_validation(x, context=None):
        log_prob = original(x, context)
        return log_prob if flow.training else log_prob - math.inf

    flow.log_density = infinite_in_validation
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        history = fit(flow, x, max_epochs=3, patience=10, **{**OPTIONS, "val_fraction": 0.5})

    assert history.val == [math.inf] * 3
    assert history.best_epoch == 2
    assert "No epoch had a finite validation loss" in caplog.text
    assert "The validation loss of epoch 0 is inf" in caplog.text


def test_checkpoint_every_must_be_positive():
    x = data()
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer; got 0"):
        fit(build(x), x, max_epochs=1, checkpoint_every=0, **OPTIONS)
