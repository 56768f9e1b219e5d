"""Exact-density targets: normalised log-densities, and samplers that agree with them."""

import math

import pytest
import scipy.stats
import torch

from flowfit.datasets.targets import (
    TARGETS,
    BananaTarget,
    BimodalTarget,
    CheckerboardTarget,
    FunnelTarget,
    GaussianMixtureTarget,
    RingTarget,
)

ONE_D = ["normal", "bimodal", "lognormal", "student-t"]
TWO_D = ["ring", "checkerboard", "banana"]

# Quadrature ranges that hold all but a negligible part of each density's mass.
RANGES_1D = {
    "normal": (-10.0, 14.0),
    "bimodal": (-8.0, 10.0),
    "lognormal": (0.0, 400.0),
    "student-t": (-3000.0, 3000.0),
}
RANGES_2D = {
    "ring": ((-4.0, 4.0), (-4.0, 4.0)),
    "checkerboard": ((-2.5, 2.5), (-2.5, 2.5)),
    "banana": ((-7.0, 7.0), (-6.0, 50.0)),
}


def grid_1d(name, points=400_001):
    low, high = RANGES_1D[name]
    return torch.linspace(low, high, points, dtype=torch.float64)


def grid_2d(name, points=801):
    (x_low, x_high), (y_low, y_high) = RANGES_2D[name]
    xs = torch.linspace(x_low, x_high, points, dtype=torch.float64)
    ys = torch.linspace(y_low, y_high, points, dtype=torch.float64)
    return xs, ys, torch.stack(torch.meshgrid(xs, ys, indexing="ij"), dim=-1)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_sample_shape_and_support(name, float64):
    target = TARGETS[name]()
    x = target.sample(500, torch.Generator().manual_seed(0))
    log_p = target.log_prob(x)

    assert x.shape == (500, target.features)
    assert x.dtype == torch.float64
    assert log_p.shape == (500,)
    assert torch.all(torch.isfinite(log_p))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_sample_seeded(name):
    target = TARGETS[name]()
    first = target.sample(50, torch.Generator().manual_seed(4))
    again = target.sample(50, torch.Generator().manual_seed(4))

    assert torch.equal(first, again)


@pytest.mark.parametrize("name", ONE_D)
def test_1d_density_normalised(name):
    x = grid_1d(name)
    density = torch.exp(TARGETS[name]().log_prob(x[:, None]))

    assert math.isclose(torch.trapezoid(density, x).item(), 1.0, abs_tol=2e-3)


@pytest.mark.parametrize("name", ONE_D)
def test_1d_samples_follow_density(name, float64):
    """Compare the samples' empirical CDF with the CDF integrated from log_prob."""
    x = grid_1d(name)
    density = torch.exp(TARGETS[name]().log_prob(x[:, None]))
    cdf = torch.cumulative_trapezoid(density, x)
    samples = TARGETS[name]().sample(20_000, torch.Generator().manual_seed(1))[:, 0]
    inside = samples.clamp(x[1], x[-1])
    model_cdf = torch.cat([torch.zeros(1, dtype=cdf.dtype), cdf])[torch.searchsorted(x, inside)]
    empirical = torch.arange(1, 20_001, dtype=torch.float64) / 20_000
    ks = (torch.sort(model_cdf).values - empirical).abs().max().item()

    # The 0.999 quantile of the Kolmogorov-Smirnov statistic for n = 20 000 is about 0.014.
    assert ks < 0.014


@pytest.mark.parametrize("name", TWO_D)
def test_2d_density_normalised(name):
    xs, ys, points = grid_2d(name)
    density = torch.exp(TARGETS[name]().log_prob(points))
    mass = torch.trapezoid(torch.trapezoid(density, ys, dim=1), xs).item()

    assert math.isclose(mass, 1.0, abs_tol=5e-3)


@pytest.mark.parametrize("name", TWO_D)
def test_2d_sample_moments_match_density(name, float64):
    xs, ys, points = grid_2d(name)
    density = torch.exp(TARGETS[name]().log_prob(points))
    samples = TARGETS[name]().sample(100_000, torch.Generator().manual_seed(2))
    for power in (1, 2):
        for axis in (0, 1):
            integrand = density * points[..., axis] ** power
            expected = torch.trapezoid(torch.trapezoid(integrand, ys, dim=1), xs).item()
            values = samples[:, axis] ** power
            tolerance = 5 * values.std().item() / math.sqrt(len(values)) + 1e-2

            assert abs(values.mean().item() - expected) < tolerance, (power, axis)


def test_normal_matches_scipy(float64):
    x = torch.linspace(-3.0, 7.0, 11)[:, None]
    expected = scipy.stats.norm(2.0, 1.0).logpdf(x[:, 0].numpy())

    assert torch.allclose(TARGETS["normal"]().log_prob(x), torch.from_numpy(expected))


def test_bimodal_matches_scipy(float64):
    x = torch.linspace(-4.0, 4.0, 17)[:, None]
    density = 0.4 * scipy.stats.norm(-2.0, 0.5).pdf(x[:, 0].numpy()) + 0.6 * scipy.stats.norm(
        1.5, 1.0
    ).pdf(x[:, 0].numpy())

    assert torch.allclose(TARGETS["bimodal"]().log_prob(x), torch.log(torch.from_numpy(density)))


def test_lognormal_matches_scipy(float64):
    x = torch.linspace(0.1, 10.0, 12)[:, None]
    expected = scipy.stats.lognorm(s=1.0).logpdf(x[:, 0].numpy())

    assert torch.allclose(TARGETS["lognormal"]().log_prob(x), torch.from_numpy(expected))


def test_lognormal_zero_outside_support(float64):
    log_p = TARGETS["lognormal"]().log_prob(torch.tensor([[-1.0], [0.0]]))

    assert torch.all(log_p == -math.inf)


def test_student_t_matches_scipy(float64):
    x = torch.linspace(-20.0, 20.0, 9)[:, None]
    expected = scipy.stats.t(3).logpdf(x[:, 0].numpy())

    assert torch.allclose(TARGETS["student-t"]().log_prob(x), torch.from_numpy(expected))


def test_funnel_matches_formula(float64):
    target = FunnelTarget(features=3)
    x = torch.tensor([[0.0, 0.0, 0.0], [2.0, 1.0, -3.0], [-4.0, 0.1, 0.05]])
    v = x[:, 0].numpy()
    expected = scipy.stats.norm(0.0, 3.0).logpdf(v)
    scale = torch.exp(x[:, 0] / 2).numpy()
    for i in (1, 2):
        expected = expected + scipy.stats.norm(0.0, scale).logpdf(x[:, i].numpy())

    assert torch.allclose(target.log_prob(x), torch.from_numpy(expected))


def test_funnel_samples_conditionally_normal(float64):
    samples = FunnelTarget(features=3).sample(50_000, torch.Generator().manual_seed(3))
    v = samples[:, 0]
    standardised = samples[:, 1:] * torch.exp(-v / 2)[:, None]

    assert abs(v.mean().item()) < 0.05
    assert abs(v.std().item() - 3.0) < 0.05
    assert torch.allclose(standardised.std(0), torch.ones(2, dtype=torch.float64), atol=0.02)


def test_funnel_needs_two_features():
    with pytest.raises(ValueError, match="at least 2 features; got 1"):
        FunnelTarget(features=1)


def test_ring_modes_on_circle(float64):
    target = RingTarget()
    angles = 2 * math.pi * torch.arange(8) / 8
    modes = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    shifted = angles + math.pi / 8
    between = 2.0 * torch.stack([torch.cos(shifted), torch.sin(shifted)], dim=-1)

    assert torch.all(target.log_prob(modes) > target.log_prob(between) + 5.0)


def test_checkerboard_dark_squares(float64):
    target = CheckerboardTarget()
    dark = torch.tensor([[-1.5, -1.5], [0.5, 0.5], [-0.5, 1.5], [1.5, -0.5]])
    light = torch.tensor([[-1.5, -0.5], [0.5, 1.5], [2.5, 0.5], [-0.5, 0.5]])

    assert torch.allclose(target.log_prob(dark), torch.full((4,), -math.log(8.0)))
    assert torch.all(target.log_prob(light) == -math.inf)


def test_banana_conditional_mean(float64):
    samples = BananaTarget().sample(50_000, torch.Generator().manual_seed(5))
    residual = samples[:, 1] - (samples[:, 0].square() - 1.0)

    assert abs(residual.mean().item()) < 0.01
    assert abs(residual.std().item() - 0.5) < 0.01


def test_wrong_dimension_rejected():
    with pytest.raises(ValueError, match=r"Expected input of shape \(\*, 2\); got \(5, 3\)"):
        RingTarget().log_prob(torch.zeros(5, 3))


def test_invalid_mixture_weights_rejected():
    with pytest.raises(ValueError, match="weights must be positive and sum to 1"):
        BimodalTarget(weights=(0.5, 0.6))


def test_gaussian_mixture_matches_scipy(float64):
    target = GaussianMixtureTarget()
    x = target.sample(50, torch.Generator().manual_seed(6))
    covariances = target.cholesky @ target.cholesky.transpose(-1, -2)
    densities = [
        scipy.stats.multivariate_normal(target.means[k].numpy(), covariances[k].numpy()).pdf(
            x.numpy()
        )
        for k in range(target.components)
    ]
    expected = torch.log(torch.from_numpy(sum(densities) / target.components))

    torch.testing.assert_close(target.log_prob(x), expected, rtol=1e-10, atol=1e-10)


def test_gaussian_mixture_sample_moments(float64):
    target = GaussianMixtureTarget(features=3, components=2)
    samples = target.sample(200_000, torch.Generator().manual_seed(7))
    covariances = target.cholesky @ target.cholesky.transpose(-1, -2)
    mean = target.means.mean(0)
    centred = target.means - mean
    covariance = covariances.mean(0) + (centred.T @ centred) / target.components

    torch.testing.assert_close(samples.mean(0), mean, rtol=0, atol=0.03)
    torch.testing.assert_close(samples.T.cov(), covariance, rtol=0, atol=0.1)


def test_gaussian_mixture_parameters_seeded():
    first = GaussianMixtureTarget(seed=3)
    second = GaussianMixtureTarget(seed=3)
    other = GaussianMixtureTarget(seed=4)

    assert torch.equal(first.means, second.means)
    assert torch.equal(first.cholesky, second.cholesky)
    assert not torch.equal(first.means, other.means)


def test_funnel_16d_target(float64):
    target = TARGETS["funnel-16d"]()
    samples = target.sample(20_000, torch.Generator().manual_seed(8))

    assert target.features == 16
    assert samples.shape == (20_000, 16)
    assert abs(samples[:, 0].std().item() - 3.0) < 0.05
