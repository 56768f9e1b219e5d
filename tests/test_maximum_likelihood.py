"""Maximum likelihood on closed-form cases: the fitted parameters are the known estimates."""

import numpy as np
import pytest
import torch
from scipy import stats

from flowfit import Flow, fit
from flowfit.bijections import Affine, Shift


@pytest.fixture
def normal_draws(float64):
    generator = torch.Generator().manual_seed(0)
    return 2.0 + torch.randn(10_000, 1, generator=generator, dtype=torch.float64)


def fit_full_batch(flow, x):
    return fit(flow, x, val_fraction=0.0, batch_size=None, max_epochs=500,
               learning_rate=0.05, show_progress=False)


def test_shift_recovers_sample_mean(normal_draws):
    flow = Flow(Shift(1))
    fit_full_batch(flow, normal_draws)

    assert abs(flow.bijection.shift.item() - normal_draws.mean().item()) < 1e-4


def test_affine_recovers_mean_and_biased_std(normal_draws):
    flow = Flow(Affine(1))
    fit_full_batch(flow, normal_draws)
    mean = normal_draws.mean().item()
    std = normal_draws.std(correction=0).item()

    assert abs(flow.bijection.shift.item() - mean) < 1e-3
    assert abs(flow.bijection.log_scale.exp().item() - std) < 1e-3


def test_affine_log_prob_matches_scipy(normal_draws):
    flow = Flow(Affine(1))
    fit_full_batch(flow, normal_draws)
    loc = flow.bijection.shift.item()
    scale = flow.bijection.log_scale.exp().item()
    x = torch.linspace(-6.0, 10.0, 101, dtype=torch.float64)[:, None]
    with torch.no_grad():
        log_prob = flow.log_prob(x).numpy()

    np.testing.assert_allclose(log_prob, stats.norm.logpdf(x[:, 0].numpy(), loc, scale),
                               rtol=0, atol=1e-10)


def test_fit_is_reproducible_from_seed(float64):
    x = torch.randn(300, 1, generator=torch.Generator().manual_seed(3)) * 2 + 1
    results = []
    for _ in range(2):
        flow = Flow(Affine(1))
        history = fit(flow, x, max_epochs=20, batch_size=32, seed=7, show_progress=False)
        results.append((flow.bijection.shift.item(), history.val))

    assert results[0] == results[1]
