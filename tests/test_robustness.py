"""Numerical robustness of the layers and flows: extreme values, edges, dtypes, shapes."""

import math

import numpy as np
import pytest
import torch

from flowfit import FlowDensity, fit, make_flow
from flowfit.bijections import RationalQuadraticSpline
from flowfit.bijections.spline import DERIVATIVE_OFFSET, MIN_DERIVATIVE, _knots
from flowfit.flows import PRESETS

DTYPES = [torch.float32, torch.float64]
BOUND = 3.0


def random_spline(dtype, features=2, bins=8, seed=0):
    spline = RationalQuadraticSpline(features, bins=bins, bound=BOUND)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in spline.parameters():
            p.copy_(1.5 * torch.randn(p.shape, generator=generator))
    return spline.to(dtype)


def call(spline, x, inverse):
    return spline.inverse(x) if inverse else spline(x)


def all_grads_finite(spline, x):
    tensors = [x, *spline.parameters()]
    return all(t.grad is not None and bool(torch.all(torch.isfinite(t.grad))) for t in tensors)


# -- splines outside their interval -----------------------------------------------------


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spline_batch_all_outside_is_identity(dtype, inverse):
    spline = random_spline(dtype)
    values = [[-1e30, 1e30], [-BOUND * 1.0001, 4.0], [-1e4, 1e4], [-3.5, 1e38]]
    x = torch.tensor(values, dtype=dtype, requires_grad=True)
    y, log_det = call(spline, x, inverse)
    (y.sum() + log_det.sum()).backward()

    assert torch.equal(y, x.detach())
    assert torch.equal(log_det, torch.zeros(4, dtype=dtype))
    assert all_grads_finite(spline, x)
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("outlier", [1e30, -1e30, math.inf], ids=["1e30", "-1e30", "inf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spline_far_outlier_leaves_batch_finite(dtype, inverse, outlier):
    spline = random_spline(dtype)
    generator = torch.Generator().manual_seed(1)
    normal = torch.randn(9, 2, generator=generator, dtype=dtype)
    x = torch.cat([normal, torch.tensor([[outlier, 0.5]], dtype=dtype)]).requires_grad_()
    y, log_det = call(spline, x, inverse)
    alone_y, alone_log_det = call(spline, normal, inverse)
    (y[:, 1].sum() + log_det.sum()).backward()

    assert torch.equal(y[:9], alone_y.detach())
    assert torch.equal(log_det[:9], alone_log_det.detach())
    assert y[9, 0] == outlier
    assert bool(torch.all(torch.isfinite(log_det)))
    assert all_grads_finite(spline, x)


# -- spline inverse at bin edges and interval ends ---------------------------------------


def knot_values(spline, dtype):
    """Return the knots of the spline: (x positions, y positions), each of shape (K + 1, D)."""
    with torch.no_grad():
        _, knots_x = _knots(spline.widths, BOUND, 1e-3)
        _, knots_y = _knots(spline.heights, BOUND, 1e-3)
    return knots_x.T.contiguous().to(dtype), knots_y.T.contiguous().to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spline_inverse_at_knots_round_trips(dtype):
    spline = random_spline(dtype)
    knots_x, knots_y = knot_values(spline, dtype)
    y = knots_y.clone().requires_grad_()
    x, log_det = spline.inverse(y)
    (x.sum() + log_det.sum()).backward()
    y_back, log_det_forward = spline(x.detach())
    ulp = torch.finfo(dtype).eps * BOUND

    assert bool(torch.all(torch.isfinite(x)))
    assert bool(torch.all(torch.isfinite(log_det)))
    assert all_grads_finite(spline, y)
    torch.testing.assert_close(x.detach(), knots_x, rtol=0, atol=4 * ulp)
    torch.testing.assert_close(y_back, knots_y, rtol=0, atol=4 * ulp)
    atol = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(log_det_forward, -log_det.detach(), rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_steep_spline_inverse_near_knots_finite(dtype):
    # Large parameters give bins of near-minimum width and slopes near 1e-3 or 1e3,
    # where rounding could push the quadratic's discriminant below 0.
    for seed in range(20):
        spline = random_spline(dtype, features=1, bins=12, seed=seed)
        with torch.no_grad():
            for p in spline.parameters():
                p.mul_(3.0)
        _, knots_y = knot_values(spline, dtype)
        up = torch.nextafter(knots_y, torch.full_like(knots_y, 10.0))
        down = torch.nextafter(knots_y, torch.full_like(knots_y, -10.0))
        y = torch.cat([knots_y, up, down]).clamp(-BOUND, BOUND).requires_grad_()
        x, log_det = spline.inverse(y)
        (x.sum() + log_det.sum()).backward()

        assert bool(torch.all(torch.isfinite(x))), seed
        assert bool(torch.all(torch.isfinite(log_det))), seed
        assert all_grads_finite(spline, y), seed
        assert bool(torch.all((x >= -BOUND) & (x <= BOUND))), seed


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_steep_spline_log_det_at_knots(dtype):
    # At a knot the slope is the knot's derivative, 1 at both ends, so the inverse
    # log-det is -log(slope). Solving for the position from the left knot of the top
    # bin gives a position just short of 1 and, in a steep bin, a visible log-det.
    for seed in range(20):
        spline = random_spline(dtype, features=1, bins=12, seed=seed)
        with torch.no_grad():
            for p in spline.parameters():
                p.mul_(3.0)
            _, knots_y = knot_values(spline, dtype)
            x, log_det = spline.inverse(knots_y)
            inner = spline.derivatives[0] + DERIVATIVE_OFFSET
            slopes = MIN_DERIVATIVE + torch.nn.functional.softplus(inner)
        expected = -torch.log(torch.cat([torch.ones(1), slopes, torch.ones(1)])).to(dtype)

        assert x[0, 0] == -BOUND, seed
        assert x[-1, 0] == BOUND, seed
        assert log_det[0] == 0.0, seed
        assert log_det[-1] == 0.0, seed
        torch.testing.assert_close(log_det, expected, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spline_interval_ends_are_exact(dtype):
    spline = random_spline(dtype)
    inside = torch.nextafter(torch.tensor(BOUND, dtype=dtype), torch.tensor(0.0, dtype=dtype))
    outside = torch.nextafter(torch.tensor(BOUND, dtype=dtype), torch.tensor(9.0, dtype=dtype))
    ends = torch.tensor([[-BOUND, BOUND], [-inside, inside], [-outside, outside]], dtype=dtype)
    for inverse in (False, True):
        y, log_det = call(spline, ends, inverse)
        x_back, _ = call(spline, y, not inverse)

        assert y[0].tolist() == [-BOUND, BOUND]
        assert log_det[0] == 0.0  # the slope at both ends is 1
        assert torch.equal(y[2], ends[2])
        assert bool(torch.all(torch.isfinite(log_det)))
        assert torch.equal(x_back[0], ends[0])
        assert torch.equal(x_back[2], ends[2])
        torch.testing.assert_close(x_back[1], ends[1], rtol=0, atol=8 * torch.finfo(dtype).eps)


# -- flows: dtypes and batch shapes ------------------------------------------------------


def randomized_flow(preset, features=2, seed=0, dtype=torch.float64):
    """Build ``preset`` on seeded data and set every parameter to seeded values.

    The values are small (standard deviation 0.1), as after training. Larger ones make
    some coupling layers so steep that float32 rounding of their inputs alone moves
    log_prob by more than 1e-4.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(200, features, generator=generator, dtype=torch.float64) * 3 + 1
    torch.manual_seed(seed)
    flow = make_flow(x.to(dtype), flow=preset, grid=None)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=generator, dtype=torch.float64))
    return flow, x


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_float32_log_prob_matches_float64(preset):
    flow64, x = randomized_flow(preset)
    flow32, _ = randomized_flow(preset, dtype=torch.float32)
    flow32.load_state_dict({k: v.float() for k, v in flow64.state_dict().items()})
    with torch.no_grad():
        log_prob64 = flow64.log_prob(x)
        log_prob32 = flow32.log_prob(x.float())

    assert log_prob32.dtype == torch.float32
    torch.testing.assert_close(log_prob32.double(), log_prob64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_flow_batch_shapes(preset):
    flow, x = randomized_flow(preset)
    with torch.no_grad():
        batch = flow.log_prob(x[:5])
        one = flow.log_prob(x[:1])
        row = flow.log_prob(x[0])
        empty = flow.log_prob(x[:0])
        samples = flow.sample((0,))

    assert one.shape == (1,)
    assert row.shape == ()
    assert empty.shape == (0,)
    assert samples.shape == (0, 2)
    torch.testing.assert_close(one[0], batch[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(row, batch[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("features", [1, 2])
def test_grid_flow_batch_shapes(features):
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 20, (300, features), generator=generator).double()
    flow = make_flow(x, flow="spline", grid=1.0)
    with torch.no_grad():
        row = flow.log_prob(x[0])
        empty = flow.log_prob(x[:0])
        batch = flow.log_prob(x[:3])

    assert flow.grid is not None
    assert row.shape == ()
    assert empty.shape == (0,)
    torch.testing.assert_close(row, batch[0])


def test_estimator_single_and_empty_rows():
    X = np.random.default_rng(0).normal(size=(100, 2))
    model = FlowDensity(flow="affine", max_epochs=2).fit(X)

    assert model.score_samples(X[:1]).shape == (1,)
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
        model.score_samples(X[:0])


# -- conditional flows with large contexts -----------------------------------------------


@pytest.mark.parametrize("preset", [p for p in ("maf", "nsf", "realnvp") if p in PRESETS])
def test_large_context_stays_finite(preset):
    generator = torch.Generator().manual_seed(0)
    context = 1e3 + 50 * torch.randn(256, 1, generator=generator)
    x = torch.cat([context / 1e3, torch.randn(256, 1, generator=generator)], dim=1)
    x = x + 0.1 * torch.randn(256, 2, generator=generator)
    torch.manual_seed(0)
    flow = make_flow(x, flow=preset, context=context, grid=None)
    history = fit(flow, x, context=context, max_epochs=3, batch_size=64, show_progress=False)
    with torch.no_grad():
        log_prob = flow.log_prob(x, context)
        inner_context = (context - flow.context_scaler.loc) / flow.context_scaler.scale
        z, log_det = flow.bijection.inverse(x, inner_context)
        direct = flow.base.log_prob(z) + log_det

    assert flow.context_scaler is not None
    assert float(inner_context.abs().max()) < 10
    assert all(math.isfinite(v) for v in history.train + history.val)
    assert history.recoveries == 0
    assert bool(torch.all(torch.isfinite(log_prob)))
    torch.testing.assert_close(log_prob, direct)


# -- a narrow peak ------------------------------------------------------------------------


def test_narrow_peak_gives_positive_log_density():
    X = np.random.default_rng(0).normal(5.0, 1e-3, size=(400, 1))
    model = FlowDensity(flow="affine", grid=None, max_epochs=30).fit(X)
    scores = model.score_samples(X)

    assert np.all(np.isfinite(scores))
    assert np.mean(scores) > 5.0  # log of 1 / (1e-3 sqrt(2 pi e)) is about 5.5
    assert min(model.history_.train) < 0
