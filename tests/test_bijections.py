"""The bijection contract, checked for every case in the registry, in float64."""

import json

import pytest
import torch
from torch.distributions import Independent, Normal, TransformedDistribution

from bijection_cases import CASES
from flowfit.bijections import Bijection, bijection_from_spec

IDS = sorted(CASES)


def draw(name, n=64, seed=1):
    return CASES[name].inputs(torch.Generator().manual_seed(seed), n)


@pytest.mark.parametrize("name", IDS)
def test_round_trip_exact(name):
    bijection = CASES[name].build()
    x, c = draw(name)
    y, log_det = bijection(x, c)
    x_back, log_det_inv = bijection.inverse(y, c)

    assert y.shape == x.shape
    assert log_det.shape == x.shape[:-1]
    assert torch.allclose(x_back, x, atol=1e-10, rtol=0)
    assert torch.allclose(log_det_inv, -log_det, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", IDS)
def test_log_det_matches_autograd(name):
    bijection = CASES[name].build()
    x, c = draw(name, n=6)
    _, log_det = bijection(x, c)
    y, _ = bijection(x, c)
    _, log_det_inv = bijection.inverse(y, c)
    for i in range(x.shape[0]):
        ci = None if c is None else c[i : i + 1]
        forward = lambda v: bijection(v[None], ci)[0][0]
        inverse = lambda v: bijection.inverse(v[None], ci)[0][0]
        jac = torch.autograd.functional.jacobian(forward, x[i])
        jac_inv = torch.autograd.functional.jacobian(inverse, y[i])

        assert torch.allclose(torch.linalg.slogdet(jac)[1], log_det[i], atol=1e-8)
        assert torch.allclose(torch.linalg.slogdet(jac_inv)[1], log_det_inv[i], atol=1e-8)


@pytest.mark.parametrize("name", IDS)
def test_batch_shapes(name):
    bijection = CASES[name].build()
    x, c = draw(name, n=12)
    x3 = x.reshape(3, 4, -1)
    c3 = None if c is None else c.reshape(3, 4, -1)
    y3, log_det3 = bijection(x3, c3)
    y, log_det = bijection(x, c)

    assert y3.shape == x3.shape
    assert log_det3.shape == (3, 4)
    assert torch.allclose(y3.reshape(12, -1), y, atol=1e-12)
    assert torch.allclose(log_det3.reshape(12), log_det, atol=1e-12)


@pytest.mark.parametrize("name", IDS)
def test_unbatched_row_gives_scalar_log_det(name):
    bijection = CASES[name].build()
    x, c = draw(name, n=1)
    y, log_det = bijection(x[0], None if c is None else c[0])

    assert y.shape == x[0].shape
    assert log_det.shape == ()


@pytest.mark.parametrize("name", IDS)
def test_float32_matches_float64(name):
    bijection = CASES[name].build()
    x, c = draw(name)
    y64, log_det64 = bijection(x, c)
    single = bijection.float()
    y32, log_det32 = single(x.float(), None if c is None else c.float())

    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), y64, rtol=1e-4, atol=1e-4)
    assert torch.allclose(log_det32.double(), log_det64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", IDS)
def test_spec_rebuilds_identical_bijection(name):
    bijection = CASES[name].build()
    spec = json.loads(json.dumps(bijection.spec()))
    rebuilt = bijection_from_spec(spec).double()
    rebuilt.load_state_dict(bijection.state_dict())
    x, c = draw(name)

    assert torch.equal(rebuilt(x, c)[0], bijection(x, c)[0])
    assert torch.equal(rebuilt(x, c)[1], bijection(x, c)[1])


@pytest.mark.parametrize("name", IDS)
def test_wrong_feature_count_rejected(name):
    bijection = CASES[name].build()
    x, c = draw(name)
    with pytest.raises(ValueError, match="Expected input of shape"):
        bijection(torch.cat([x, x[:, :1]], dim=-1), c)


@pytest.mark.parametrize("name", [n for n in IDS if CASES[n].build().context == 0])
def test_torch_transform_view_agrees(name):
    bijection = CASES[name].build()
    x, _ = draw(name)
    base = Independent(Normal(torch.zeros(x.shape[-1]), torch.ones(x.shape[-1])), 1)
    transformed = TransformedDistribution(base, [bijection.as_transform()])
    y, log_det = bijection(x)
    expected = base.log_prob(bijection.inverse(y)[0]) - log_det

    assert torch.allclose(transformed.log_prob(y), expected, atol=1e-10)


def test_unknown_spec_type_rejected():
    with pytest.raises(ValueError, match="Unknown bijection type 'os.system'"):
        bijection_from_spec({"type": "os.system", "config": {}})


def test_unregistered_subclass_cannot_be_saved():
    class Custom(Bijection):
        pass

    with pytest.raises(TypeError, match="not registered"):
        Custom(1).spec()
