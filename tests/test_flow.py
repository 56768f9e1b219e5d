"""The Flow distribution: shapes, sampling, torch interoperability and rounded data."""

import math

import pytest
import torch
from scipy import stats
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution

from flowfit import DiagonalNormal, Flow
from flowfit.bijections import Affine, Chain, FixedAffine, RationalQuadraticSpline, Shift
from bijection_cases import randomize


def spline_flow(grid=None):
    chain = Chain([randomize(RationalQuadraticSpline(1, bins=8), 1.0),
                   FixedAffine(1, torch.tensor([5.0]), torch.tensor([2.0])).double()])
    return Flow(chain, grid=grid).double()


def test_flow_is_a_torch_distribution(float64):
    flow = Flow(Shift(2))

    assert isinstance(flow, Distribution)
    assert flow.event_shape == (2,)
    assert flow.sample((5,)).shape == (5, 2)
    assert flow.log_prob(torch.zeros(4, 3, 2)).shape == (4, 3)


def test_log_prob_matches_transformed_distribution(float64):
    bijection = randomize(Chain([RationalQuadraticSpline(2), Affine(2)]), 1.0)
    flow = Flow(bijection)
    reference = TransformedDistribution(Independent(Normal(torch.zeros(2), torch.ones(2)), 1),
                                        [bijection.as_transform()])
    x = 3 * torch.randn(50, 2)

    assert torch.allclose(flow.log_prob(x), reference.log_prob(x), atol=1e-12)


def test_rsample_carries_gradients(float64):
    flow = Flow(Affine(1))
    flow.rsample((10,)).sum().backward()

    assert flow.bijection.shift.grad is not None
    assert flow.bijection.log_scale.grad is not None


def test_diagonal_normal_base_matches_scipy(float64):
    base = DiagonalNormal(1)
    with torch.no_grad():
        base.loc.fill_(1.5)
        base.log_scale.fill_(math.log(0.3))
    flow = Flow(Shift(1), base)
    x = torch.linspace(0, 3, 7)[:, None]

    expected = stats.norm.logpdf(x[:, 0].numpy(), 1.5, 0.3)
    assert torch.allclose(flow.log_prob(x), torch.as_tensor(expected), atol=1e-12)


def test_grid_log_prob_is_cell_mass_over_width(float64):
    flow = spline_flow(grid=torch.tensor([0.5]))
    cells = torch.arange(-30.0, 40.0, 0.5)[:, None]
    log_mass = flow.log_prob(cells) + math.log(0.5)

    assert abs(log_mass.exp().sum().item() - 1.0) < 1e-9
    # The quasi-Monte Carlo path used for several features agrees with the exact one.
    log_cells = flow._log_prob_cells(cells, None, flow.grid)
    assert torch.allclose(log_cells, flow.log_prob(cells), atol=1e-3)


def test_grid_samples_lie_on_grid(float64):
    flow = spline_flow(grid=torch.tensor([0.5]))
    samples = flow.sample((200,))

    assert torch.equal(samples, torch.round(samples * 2) / 2)


def test_context_given_to_unconditional_flow_rejected(float64):
    with pytest.raises(ValueError, match="unconditional"):
        Flow(Shift(1)).log_prob(torch.zeros(3, 1), torch.zeros(3, 2))
