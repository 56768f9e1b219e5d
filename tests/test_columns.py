"""Per-column support maps, and fitted column handling checked against closed forms."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from flowfit import FlowDensity
from flowfit.bijections import ColumnwiseSupport, bijection_from_spec

# ---------------------------------------------------------------------------------
# The bijection
# ---------------------------------------------------------------------------------


def mixed_support():
    return ColumnwiseSupport(
        4, low=[None, 2.0, None, -1.0], high=[None, None, 3.0, 1.0]
    ).double()


def test_forward_matches_closed_forms():
    z = torch.tensor([[0.3, -0.7, 1.2, 0.4]], dtype=torch.float64)
    x, log_det = mixed_support()(z)
    expected = [0.3, 2.0 + math.exp(-0.7), 3.0 - math.exp(-1.2), -1.0 + 2.0 / (1 + math.exp(-0.4))]
    sigmoid = 1 / (1 + math.exp(-0.4))
    expected_log_det = -0.7 + (-1.2) + math.log(2.0 * sigmoid * (1 - sigmoid))

    assert torch.allclose(x[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert math.isclose(log_det.item(), expected_log_det, abs_tol=1e-12)


def test_inverse_outside_support_is_nan():
    inside = torch.tensor([[5.0, 2.5, 2.5, 0.0]], dtype=torch.float64)
    for column, value in ((1, 1.0), (2, 4.0), (3, 1.5), (3, -2.0)):
        y = inside.clone()
        y[0, column] = value
        z, log_det = mixed_support().inverse(y)

        assert torch.isnan(z[0, column])
        assert torch.isnan(log_det[0])


def test_inverse_on_bound_is_finite():
    y = torch.tensor([[5.0, 2.0, 3.0, 1.0]], dtype=torch.float64)
    z, log_det = mixed_support().inverse(y)

    assert torch.all(torch.isfinite(z))
    assert torch.isfinite(log_det).all()
    assert z[0, 1] < -700  # log of the smallest normal float64, about -708


def test_config_writes_open_sides_as_none():
    spec = json.loads(json.dumps(mixed_support().spec()))

    assert spec["config"]["low"] == [None, 2.0, None, -1.0]
    assert spec["config"]["high"] == [None, None, 3.0, 1.0]
    rebuilt = bijection_from_spec(spec).double()
    z = torch.randn(5, 4, dtype=torch.float64)
    assert torch.equal(rebuilt(z)[0], mixed_support()(z)[0])


def test_bounds_not_in_state_dict():
    # Model files reject infinite tensors; the bounds travel in the config instead.
    assert set(mixed_support().state_dict()) == set()


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        ([1.0], [1.0], "must exceed"),
        ([math.inf], [None], "cannot be"),
        ([None], [-math.inf], "cannot be"),
        ([0.0, 1.0], None, "needs 1 entries"),
        ([math.nan], None, "NaN"),
    ],
)
def test_invalid_bounds_rejected(low, high, message):
    with pytest.raises(ValueError, match=message):
        ColumnwiseSupport(1, low=low, high=high)


def test_gradients_finite_with_open_sides():
    bijection = mixed_support()
    y = torch.tensor([[5.0, 2.5, 2.5, 0.0]], dtype=torch.float64, requires_grad=True)
    z, log_det = bijection.inverse(y)
    (z.sum() + log_det.sum()).backward()

    assert torch.all(torch.isfinite(y.grad))


# ---------------------------------------------------------------------------------
# Fitted columns against closed forms
# ---------------------------------------------------------------------------------


def draw(sampler, n_train=2000, n_test=2000, seed=0):
    values = sampler(np.random.default_rng(seed), n_train + n_test).reshape(-1, 1)
    return values[:n_train], values[n_train:]


def test_lognormal_scored_in_original_units():
    train, test = draw(lambda rng, n: rng.lognormal(0.0, 1.0, n))
    model = FlowDensity(random_state=0).fit(train)
    gap = model.score_samples(test) - stats.lognorm.logpdf(test[:, 0], 1.0)
    print(f"LogNormal(0, 1): mean flow - scipy = {gap.mean():.4f} nats, "
          f"mean |flow - scipy| = {np.mean(np.abs(gap)):.4f} nats")

    assert model.columns_[0].kind == "positive"
    assert abs(gap.mean()) < 0.05
    # A missing Jacobian term -log x would average out, because E[log X] = 0, but its
    # mean absolute size is E|log X| = 0.8 nats.
    assert np.mean(np.abs(gap)) < 0.1
    assert model.score_samples(np.array([[-1.0], [0.0]])).tolist() == [-math.inf, -math.inf]


def test_large_offset_gaussian_keeps_scale_jacobian():
    train, test = draw(lambda rng, n: rng.normal(1000.0, 50.0, n))
    model = FlowDensity(random_state=0).fit(train)
    gap = model.score_samples(test) - stats.norm.logpdf(test[:, 0], 1000.0, 50.0)
    print(f"N(1000, 50^2): mean flow - scipy = {gap.mean():.4f} nats, "
          f"mean |flow - scipy| = {np.mean(np.abs(gap)):.4f} nats, log 50 = {math.log(50):.2f}")

    assert model.columns_[0].kind == "real"
    assert abs(gap.mean()) < 0.05
    assert np.mean(np.abs(gap)) < 0.1


def test_poisson_counts_scored_as_probabilities():
    train, test = draw(lambda rng, n: rng.poisson(3.0, n).astype(float))
    model = FlowDensity(random_state=0).fit(train)
    log_prob = model.score_samples(test)
    true_log_pmf = stats.poisson.logpmf(test[:, 0], 3.0)
    entropy = float(stats.poisson(3.0).entropy())
    error = 3 * true_log_pmf.std() / math.sqrt(len(test))
    mass = np.exp(model.score_samples(np.arange(0.0, 40.0)[:, None])).sum()
    samples = model.sample(1000, random_state=0)[:, 0]
    print(f"Poisson(3): mean log-probability {log_prob.mean():.4f}, "
          f"minus entropy {-entropy:.4f}, sampling error {error:.4f}, total mass {mass:.5f}")

    assert model.grid_.tolist() == [1.0]
    assert log_prob.mean() <= -entropy + error
    assert log_prob.mean() > -entropy - 0.05
    assert abs(mass - 1.0) < 1e-3
    assert np.array_equal(samples, np.round(samples))
    assert samples.min() >= 0


def test_counts_with_zeros_take_positive_support():
    train, test = draw(lambda rng, n: rng.poisson(3.0, n).astype(float))
    model = FlowDensity(support="positive", random_state=0).fit(train)
    mass = np.exp(model.score_samples(np.arange(0.0, 40.0)[:, None]))
    samples = model.sample(2000, random_state=0)[:, 0]

    # The cell of 0 is [-0.5, 0.5], so the log map starts half a step below 0.
    assert model.columns_[0].low == -0.5
    assert abs(mass.sum() - 1.0) < 1e-3
    assert abs(mass[0] - stats.poisson.pmf(0, 3.0)) < 0.02
    assert model.score_samples(np.array([[-1.0]]))[0] == -math.inf
    assert samples.min() == 0.0
    assert np.array_equal(samples, np.round(samples))


def test_off_grid_value_has_zero_probability():
    train, _ = draw(lambda rng, n: rng.poisson(3.0, n).astype(float))
    model = FlowDensity(max_epochs=20, random_state=0).fit(train)
    scores = model.score_samples(np.array([[2.0], [2.5], [2.0 + 1e-9]]))

    assert np.isfinite(scores[0])
    assert scores[1] == -math.inf
    assert scores[2] == scores[0]


def test_beta_bounded_scores_and_samples():
    train, test = draw(lambda rng, n: rng.beta(2.0, 5.0, n))
    model = FlowDensity(support=(0.0, 1.0), random_state=0).fit(train)
    outside = model.score_samples(np.array([[-0.1], [0.0], [1.0], [1.2]]))
    gap = model.score_samples(test) - stats.beta.logpdf(test[:, 0], 2.0, 5.0)
    samples = model.sample(5000, random_state=0)[:, 0]
    print(f"Beta(2, 5): mean flow - scipy = {gap.mean():.4f} nats, "
          f"mean |flow - scipy| = {np.mean(np.abs(gap)):.4f} nats")

    assert model.columns_[0].kind == "bounded"
    assert outside.tolist() == [-math.inf] * 4
    assert abs(gap.mean()) < 0.05
    # A missing logit Jacobian would be off by |log(x (1 - x))|, 1.9 nats on average.
    assert np.mean(np.abs(gap)) < 0.2
    assert samples.min() > 0.0
    assert samples.max() < 1.0


def test_bounded_samples_stay_inside_when_map_saturates():
    # Data piled against the upper bound push float32 sigmoid outputs to exactly 1.0.
    train, _ = draw(lambda rng, n: 1.0 - rng.beta(0.3, 8.0, n) * 1e-3)
    model = FlowDensity(support=(0.0, 1.0), max_epochs=20, random_state=0).fit(train)
    samples = model.sample(20000, random_state=0)[:, 0]

    assert samples.max() < 1.0
    assert samples.min() > 0.0
