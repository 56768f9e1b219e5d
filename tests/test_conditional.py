"""Conditional flows: context shapes, batched sampling, context standardisation and a fit.

The semantics under test: ``log_prob(x, context)`` takes x of shape (N, D) and a context
of shape (N, C), or (C,) for one context shared by all rows. ``sample(n, context)`` with
a context of shape (M, C) returns samples of shape (n, M, D), where [:, m] are draws
given context row m, from one batched pass through the bijection. The flow standardises
the context with its ``context_scaler`` before passing it to any layer.
"""

import functools

import pytest
import torch

from flowfit.distributions import Flow
from flowfit.flows import MAF, NSF, RealNVP, build_bijection
from flowfit.training.loop import fit

CONSTRUCTORS = {
    "maf": MAF,
    "nsf": NSF,
    "nsf-coupling": functools.partial(NSF, coupling=True),
    "realnvp": RealNVP,
}
NAMES = sorted(CONSTRUCTORS)


def perturb(module, scale=0.1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def conditional_flow(name, features=2, context=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = 1.0 + 2.0 * torch.randn(100, features, generator=generator)
    offset = torch.tensor([5.0, -1.0, 0.0][:context])
    c = offset + 3.0 * torch.randn(100, context, generator=generator)
    return perturb(CONSTRUCTORS[name](features, context, data=x, context_data=c)), x, c


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_one_context_per_row(name, float64):
    flow, x, c = conditional_flow(name)
    log_prob = flow.log_prob(x[:10], c[:10])
    rowwise = torch.stack([flow.log_prob(x[i], c[i]) for i in range(10)])

    assert log_prob.shape == (10,)
    assert torch.allclose(log_prob, rowwise, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_shared_context_broadcasts(name, float64):
    flow, x, c = conditional_flow(name)

    assert torch.equal(flow.log_prob(x[:10], c[0]), flow.log_prob(x[:10], c[0].expand(10, 3)))


@pytest.mark.parametrize("name", NAMES)
def test_context_changes_log_prob(name, float64):
    flow, x, c = conditional_flow(name)

    assert not torch.allclose(flow.log_prob(x[:10], c[:10]), flow.log_prob(x[:10], c[10:20]))


@pytest.mark.parametrize("name", NAMES)
def test_sample_shape_per_context(name, float64):
    flow, _, c = conditional_flow(name)
    samples = flow.sample(6, c[:4])

    assert samples.shape == (6, 4, 2)
    assert torch.all(torch.isfinite(samples))


@pytest.mark.parametrize("name", NAMES)
def test_sample_column_follows_its_context(name, float64):
    flow, _, c = conditional_flow(name)
    torch.manual_seed(3)
    samples = flow.sample(6, c[:4])
    torch.manual_seed(3)
    z = flow.base.rsample(torch.Size([6, 4]))
    for m in range(4):
        standard = flow.context_scaler.inverse(c[m])[0].expand(6, 3)
        expected, _ = flow.bijection(z[:, m], standard)

        assert torch.allclose(samples[:, m], expected, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_one_batched_call(name):
    flow, _, c = conditional_flow(name)
    calls = []
    flow.bijection.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    flow.sample(6, c[:4])

    assert calls == [torch.Size([6, 4, 2])]


@pytest.mark.parametrize("name", NAMES)
def test_context_standardised_like_data(name, float64):
    flow, x, c = conditional_flow(name)
    scaler = flow.context_scaler
    unscaled = Flow(flow.bijection)
    standard = (c - c.mean(0)) / c.std(0, correction=0)

    assert torch.allclose(scaler.loc, c.mean(0))
    assert torch.allclose(scaler.scale, c.std(0, correction=0))
    assert torch.allclose(flow.log_prob(x, c), unscaled.log_prob(x, standard), atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_context_width_rejected(name):
    flow, x, c = conditional_flow(name)
    with pytest.raises(ValueError, match=r"Expected a context of shape \(\*, 3\); got \(100, 2\)"):
        flow.log_prob(x, c[:, :2])
    with pytest.raises(ValueError, match=r"Expected a context of shape \(\*, 3\); got \(4, 4\)"):
        flow.sample(5, torch.zeros(4, 4))


@pytest.mark.parametrize("name", NAMES)
def test_wrong_context_rows_rejected(name):
    flow, x, c = conditional_flow(name)
    with pytest.raises(ValueError, match=r"broadcasts to the data's \(100,\); got \(7, 3\)"):
        flow.log_prob(x, c[:7])


@pytest.mark.parametrize("name", NAMES)
def test_missing_context_rejected(name):
    flow, x, _ = conditional_flow(name)
    with pytest.raises(ValueError, match="This flow is conditional"):
        flow.log_prob(x)


@pytest.mark.parametrize("name", NAMES)
def test_context_to_unconditional_rejected(name):
    flow = CONSTRUCTORS[name](2)
    with pytest.raises(ValueError, match="unconditional but was given a context"):
        flow.log_prob(torch.zeros(3, 2), torch.zeros(3, 1))


@pytest.mark.parametrize("name", NAMES)
def test_bijection_rejects_mismatched_context(name):
    bijection = build_bijection(name, 2, 3)
    with pytest.raises(ValueError, match="Expected context of shape"):
        bijection.inverse(torch.zeros(5, 2), torch.zeros(4, 3))


def conditional_moments(flow, c_values, half_width=4.0, points=2001):
    """Return the mean and standard deviation of x | c by quadrature of the 1-D density."""
    offsets = torch.linspace(-half_width, half_width, points)
    xs = 2.0 * c_values[:, None] + offsets[None, :]
    context = c_values[:, None, None].expand(-1, points, 1)
    with torch.no_grad():
        weights = torch.softmax(flow.log_prob(xs[..., None], context), dim=-1)
    mean = (weights * xs).sum(-1)
    std = (weights * (xs - mean[:, None]).square()).sum(-1).sqrt()
    return mean, std


@pytest.mark.parametrize("name", ["maf", "realnvp"])
def test_fit_recovers_linear_gaussian(name):
    """A fit to x | c ~ N(2c, 0.5^2) recovers the conditional mean and standard deviation.

    Training contexts are uniform on [-2.5, 2.5] and the check covers c in [-2, 2], away
    from the edges where data thin out. The standard deviation must be within 5% of 0.5.
    A relative bound on the mean is undefined at c = 0, so its bound is absolute: 0.1,
    a fifth of the conditional standard deviation. Measured on torch 2.13 CPU: maf 0.032
    and 3.3%, realnvp 0.053 and 2.6%.
    """
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    c = 5.0 * torch.rand(8000, 1, generator=generator) - 2.5
    x = 2.0 * c + 0.5 * torch.randn(8000, 1, generator=generator)
    flow = CONSTRUCTORS[name](1, 1, data=x, context_data=c, layers=2, hidden=[32, 32])
    fit(flow, x, context=c, max_epochs=20, batch_size=256, learning_rate=1e-2, patience=20,
        seed=0, show_progress=False)
    c_values = torch.linspace(-2.0, 2.0, 9)
    mean, std = conditional_moments(flow, c_values)

    assert torch.all((mean - 2.0 * c_values).abs() < 0.1), mean - 2.0 * c_values
    assert torch.all((std / 0.5 - 1.0).abs() < 0.05), std
