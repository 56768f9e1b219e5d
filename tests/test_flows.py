"""Multivariate presets end to end, the layers they are built from, and fitting quality.

The fitting tests train for a few seconds on 2 000 to 4 000 rows of a target with an
exact log-density and score the result by the Monte Carlo estimate of
KL(p || q) = E_p[log p - log q] on 20 000 fresh target samples.
"""

import functools
import json

import pytest
import torch

from flowfit.bijections import (
    ActNorm,
    AffineTransformer,
    Chain,
    Coupling,
    FixedAffine,
    LULinear,
    MaskedAutoregressive,
    Permutation,
    RandomPermutation,
    SplineTransformer,
    bijection_from_spec,
)
from flowfit.datasets.targets import TARGETS
from flowfit.distributions import Flow
from flowfit.flows import MAF, NSF, PRESETS, RealNVP, build_bijection
from flowfit.training.loop import fit

CONSTRUCTORS = {
    "maf": MAF,
    "nsf": NSF,
    "nsf-coupling": functools.partial(NSF, coupling=True),
    "realnvp": RealNVP,
}
NAMES = sorted(CONSTRUCTORS)
SHAPES = [(1, 0), (1, 2), (3, 0), (3, 2)]  # (features, context)


def perturb(module, scale=0.1, seed=0):
    """Add seeded noise to every parameter, so that no check runs on an identity map."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def data_and_context(features, context, n=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = 3.0 + 2.0 * torch.randn(n, features, generator=generator)
    c = -1.0 + 4.0 * torch.randn(n, context, generator=generator) if context else None
    return x, c


def build_flow(name, features, context, x, c, **options):
    return CONSTRUCTORS[name](features, context, data=x, context_data=c, **options)


# Presets end to end ------------------------------------------------------------------


def test_presets_registered():
    for name in NAMES:
        assert name in PRESETS


@pytest.mark.parametrize("name", NAMES)
def test_one_line_construction(name):
    flow = CONSTRUCTORS[name](3, context=2)

    assert isinstance(flow, Flow)
    assert flow.features == 3
    assert flow.context_features == 2
    assert flow.context_scaler is None


@pytest.mark.parametrize("name", NAMES)
def test_data_sets_standardisation(name):
    x, c = data_and_context(2, 1, n=200)
    flow = build_flow(name, 2, 1, x, c)
    output_map = flow.bijection.bijections[-1]

    assert isinstance(output_map, FixedAffine)
    assert torch.allclose(output_map.loc, x.mean(0))
    assert torch.allclose(output_map.scale, x.std(0, correction=0))
    assert torch.allclose(flow.context_scaler.loc, c.mean(0))
    assert torch.allclose(flow.context_scaler.scale, c.std(0, correction=0))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("features, context", SHAPES)
def test_log_prob_shape(name, features, context, float64):
    x, c = data_and_context(features, context)
    flow = perturb(build_flow(name, features, context, x, c))

    x_grid = x.reshape(4, 8, features)
    c_grid = None if c is None else c.reshape(4, 8, context)

    assert flow.log_prob(x, c).shape == (32,)
    assert flow.log_prob(x_grid, c_grid).shape == (4, 8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("features, context", SHAPES)
def test_every_parameter_gets_gradient(name, features, context):
    x, c = data_and_context(features, context)
    flow = build_flow(name, features, context, x, c)
    loss = -flow.log_prob(x, c).mean()
    loss.backward()

    for parameter_name, p in flow.named_parameters():
        assert p.grad is not None, parameter_name
        assert torch.any(p.grad != 0), parameter_name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("features, context", SHAPES)
def test_samples_shape_and_finite(name, features, context, float64):
    x, c = data_and_context(features, context)
    flow = perturb(build_flow(name, features, context, x, c))
    if context:
        samples = flow.sample(7, c[:4])
        expected = (7, 4, features)
    else:
        samples = flow.sample(7)
        expected = (7, features)

    assert samples.shape == expected
    assert torch.all(torch.isfinite(samples))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("features, context", SHAPES)
def test_sample_log_prob_matches_recomputed(name, features, context, float64):
    x, c = data_and_context(features, context)
    flow = perturb(build_flow(name, features, context, x, c))
    z = flow.base.rsample(torch.Size([50]))
    c_standard = None
    if context:
        c_standard = flow.context_scaler.inverse(c[:1])[0].expand(50, context)
    # The log-density of a sample, from the sampling (generative) pass alone.
    samples, log_det = flow.bijection(z, c_standard)
    log_q = flow.base.log_prob(z) - log_det
    recomputed = flow.log_prob(samples, None if c is None else c[:1])

    assert torch.allclose(recomputed, log_q, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("features, context", SHAPES)
def test_spec_round_trip_same_log_prob(name, features, context, float64):
    x, c = data_and_context(features, context)
    flow = perturb(build_flow(name, features, context, x, c))
    spec = json.loads(json.dumps(flow.bijection.spec()))
    scaler = FixedAffine(context) if context else None
    rebuilt = Flow(bijection_from_spec(spec), context_scaler=scaler)
    rebuilt.load_state_dict(flow.state_dict())

    assert torch.equal(rebuilt.log_prob(x, c), flow.log_prob(x, c))


@pytest.mark.parametrize("name", NAMES)
def test_one_feature_preset_uses_splines(name):
    bijection = build_bijection(name, 1)
    transformers = [
        type(layer.transformer) for layer in bijection.bijections if hasattr(layer, "transformer")
    ]

    assert transformers
    assert all(t is SplineTransformer for t in transformers)


@pytest.mark.parametrize("name", ["maf", "realnvp"])
def test_multi_feature_affine_presets(name):
    bijection = build_bijection(name, 2)
    transformers = [
        type(layer.transformer) for layer in bijection.bijections if hasattr(layer, "transformer")
    ]

    assert all(t is AffineTransformer for t in transformers)


@pytest.mark.parametrize("name", NAMES)
def test_preset_rejects_zero_layers(name):
    with pytest.raises(ValueError, match="layers must be at least 1"):
        build_bijection(name, 2, layers=0)


def test_constructor_rejects_mismatched_data():
    with pytest.raises(ValueError, match=r"Expected data of shape \(N, 3\)"):
        MAF(3, data=torch.zeros(10, 2))
    with pytest.raises(ValueError, match=r"Expected context_data of shape \(N, 2\)"):
        MAF(3, 2, context_data=torch.zeros(10, 1))


# Building blocks ----------------------------------------------------------------------


def test_transformers_identity_at_zero():
    x = torch.linspace(-7.0, 7.0, 29)
    for transformer in (AffineTransformer(), SplineTransformer(bins=5, bound=4.0)):
        params = torch.zeros(29, transformer.num_params)
        y, log_det = transformer(x, params)

        assert torch.allclose(y, x, atol=1e-6)
        assert torch.allclose(log_det, torch.zeros(29), atol=1e-6)


def test_affine_transformer_scale_bounded():
    params = torch.tensor([[0.0, 1e4], [0.0, -1e4]])
    y, log_det = AffineTransformer()(torch.ones(2), params)

    assert torch.all(torch.isfinite(y))
    assert torch.all(log_det.abs() <= 3.0)


@pytest.mark.parametrize("layer_cls", [MaskedAutoregressive, Coupling])
@pytest.mark.parametrize("transformer", ["affine", "spline"])
def test_fresh_layer_near_identity(layer_cls, transformer):
    torch.manual_seed(0)
    layer = layer_cls(3, transformer=transformer)
    x = torch.randn(256, 3)
    y, log_det = layer(x)

    assert torch.allclose(y, x, atol=0.1)
    assert torch.allclose(log_det, torch.zeros(256), atol=0.1)


def test_unknown_transformer_rejected():
    with pytest.raises(ValueError, match="transformer must be 'affine' or 'spline'; got 'cubic'"):
        MaskedAutoregressive(2, transformer="cubic")


def test_coupling_leaves_conditioning_part():
    layer = perturb(Coupling(4, mask=[False, True, False, True]), scale=0.5)
    x = torch.randn(16, 4)
    y, _ = layer(x)

    assert torch.equal(y[:, [0, 2]], x[:, [0, 2]])
    assert not torch.allclose(y[:, [1, 3]], x[:, [1, 3]])


def test_coupling_rejects_invalid_mask():
    with pytest.raises(ValueError, match="mask must hold 3 booleans with at least one True"):
        Coupling(3, mask=[False, False, False])
    with pytest.raises(ValueError, match="mask must hold 3 booleans"):
        Coupling(3, mask=[True, False])


def test_random_permutation_from_seed():
    first = RandomPermutation(10, seed=4)
    again = RandomPermutation(10, seed=4)
    other = RandomPermutation(10, seed=5)

    assert torch.equal(first.indices, again.indices)
    assert not torch.equal(first.indices, other.indices)
    assert first.config() == {"features": 10, "seed": 4}


def test_permutation_rejects_invalid_indices():
    with pytest.raises(ValueError, match="indices must be a permutation of 0..2"):
        Permutation(3, [0, 1, 1])


def test_lu_linear_weight_determinant():
    layer = perturb(LULinear(4), scale=0.5).double()
    weight = layer.weight()
    _, log_det = layer(torch.zeros(4, dtype=torch.float64))

    assert torch.allclose(torch.linalg.slogdet(weight)[1], log_det)
    assert torch.linalg.slogdet(weight)[0] > 0


def test_actnorm_initialises_on_first_inverse():
    layer = ActNorm(2)
    x = torch.tensor([5.0, -3.0]) + torch.tensor([2.0, 0.5]) * torch.randn(500, 2)
    z, _ = layer.inverse(x)

    assert bool(layer.initialized)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(0, correction=0), torch.ones(2), atol=1e-5)


def test_actnorm_initialises_once():
    layer = ActNorm(2)
    layer.inverse(torch.randn(100, 2))
    loc = layer.loc.detach().clone()
    layer.inverse(10.0 + torch.randn(100, 2))

    assert torch.equal(layer.loc.detach(), loc)


def test_actnorm_skips_init_in_eval_and_forward():
    layer = ActNorm(2)
    layer.forward(torch.randn(100, 2))
    assert not bool(layer.initialized)

    layer.eval()
    layer.inverse(torch.randn(100, 2))
    assert not bool(layer.initialized)


def test_actnorm_reload_keeps_init():
    layer = ActNorm(2)
    layer.inverse(4.0 + torch.randn(100, 2))
    reloaded = bijection_from_spec(json.loads(json.dumps(layer.spec())))
    reloaded.load_state_dict(layer.state_dict())
    x = torch.randn(100, 2)

    assert bool(reloaded.initialized)
    assert torch.equal(reloaded.inverse(x)[0], layer.inverse(x)[0])


def test_actnorm_initialize_needs_two_rows():
    with pytest.raises(ValueError, match="at least 2 rows"):
        ActNorm(2).initialize(torch.zeros(1, 2))


def test_actnorm_in_flow_initialised_by_fit():
    x = 10.0 + 3.0 * torch.randn(300, 2)
    flow = Flow(Chain([MaskedAutoregressive(2, hidden=[8]), ActNorm(2)]))
    fit(flow, x, max_epochs=1, batch_size=100, show_progress=False)
    actnorm = flow.bijection.bijections[1]

    assert bool(actnorm.initialized)
    assert torch.allclose(actnorm.loc, x.mean(0), atol=1.0)


# Fitting quality ----------------------------------------------------------------------


def fitted_kl(target_name, flow_factory, *, rows, epochs, learning_rate):
    torch.manual_seed(0)
    target = TARGETS[target_name]()
    x = target.sample(rows, torch.Generator().manual_seed(1))
    flow = flow_factory(target.features, data=x)
    fit(flow, x, max_epochs=epochs, batch_size=256, learning_rate=learning_rate,
        patience=epochs, seed=0, show_progress=False)
    test = target.sample(20_000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        return (target.log_prob(test) - flow.log_prob(test)).mean().item()


# Measured KL after these runs (torch 2.13 CPU, one thread): maf banana 0.003, realnvp
# banana 0.005, nsf ring 0.16, nsf checkerboard 0.36, nsf-coupling ring 0.15,
# nsf-coupling checkerboard 0.35. A normal fitted by moments scores 1.09 on the banana,
# 1.86 on the ring and 1.03 on the checkerboard. The bounds leave room for rounding
# that differs between platforms.
FIT_CASES = [
    ("maf", "banana", 0.03),
    ("realnvp", "banana", 0.03),
    ("nsf", "ring", 0.3),
    ("nsf", "checkerboard", 0.55),
    ("nsf-coupling", "ring", 0.3),
    ("nsf-coupling", "checkerboard", 0.55),
]


@pytest.mark.parametrize("name, target, bound", FIT_CASES)
def test_fit_2d_target_kl(name, target, bound):
    kl = fitted_kl(target, CONSTRUCTORS[name], rows=4000, epochs=10, learning_rate=5e-3)

    assert kl < bound


@pytest.mark.parametrize("name", ["maf", "realnvp"])
def test_fit_1d_bimodal_not_gaussian(name):
    # The best normal scores KL 0.28 on this mixture; the fit measured 0.031.
    kl = fitted_kl("bimodal", CONSTRUCTORS[name], rows=2000, epochs=15, learning_rate=1e-2)

    assert kl < 0.08
