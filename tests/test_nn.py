"""Conditioner networks: MADE's autoregressive masks, checked through numerical Jacobians."""

import pytest
import torch

from flowfit.bijections import InverseAutoregressive, MaskedAutoregressive
from flowfit.nn import MADE, MLP

ORDERS = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]


def randomize(module, seed=0, scale=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module.double()


def rank_of(order):
    rank = torch.empty(len(order), dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(len(order))
    return rank


def jacobian(function, x):
    return torch.autograd.functional.jacobian(function, x)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("context", [0, 2])
def test_made_dependencies_follow_order(order, context):
    made = randomize(MADE(4, 3, context, hidden=[32, 32], order=order))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, generator=generator, dtype=torch.float64)
    c = torch.randn(context, generator=generator, dtype=torch.float64) if context else None
    # Jacobian of the (D, P) outputs with respect to the D inputs: shape (D, P, D).
    jac = jacobian(lambda v: made(v, c), x)
    depends = jac.abs().amax(1) > 0
    rank = rank_of(order)
    allowed = rank[None, :] < rank[:, None]

    assert not torch.any(depends & ~allowed), "an output depends on a later feature"
    assert torch.equal(depends, allowed), "an output ignores an earlier feature"


@pytest.mark.parametrize("order", ORDERS)
def test_made_outputs_all_see_context(order):
    made = randomize(MADE(4, 2, 3, hidden=[32], order=order))
    x = torch.randn(4, dtype=torch.float64)
    c = torch.randn(3, dtype=torch.float64)
    jac = jacobian(lambda v: made(x, v), c)

    assert jac.shape == (4, 2, 3)
    assert torch.all(jac.abs().amax(-1) > 0)


def test_made_single_feature_depends_on_context():
    made = randomize(MADE(1, 5, context=2, hidden=[8]))
    c = torch.randn(2, dtype=torch.float64)
    jac = jacobian(lambda v: made(torch.zeros(1, dtype=torch.float64), v), c)

    assert torch.all(jac.abs().amax(-1) > 0)


def test_made_single_feature_is_constant():
    made = randomize(MADE(1, 5))
    out = made(torch.randn(7, 1, dtype=torch.float64))

    assert out.shape == (7, 1, 5)
    assert torch.equal(out[0], out[6])
    assert [name for name, _ in made.named_parameters()] == ["constant"]


def test_made_batch_shape():
    made = randomize(MADE(3, 4, 2, hidden=[16]))
    x = torch.randn(5, 6, 3, dtype=torch.float64)
    c = torch.randn(5, 6, 2, dtype=torch.float64)
    out = made(x, c)

    assert out.shape == (5, 6, 3, 4)


def test_made_rejects_invalid_order():
    with pytest.raises(ValueError, match="order must be a permutation"):
        MADE(3, 2, order=[0, 0, 1])


def test_made_rejects_unknown_activation():
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        MADE(3, 2, activation="swish")


def test_made_rejects_invalid_hidden():
    with pytest.raises(ValueError, match="hidden must be a sequence of positive integers"):
        MADE(3, 2, hidden=[16, 0])


@pytest.mark.parametrize("layer_cls", [MaskedAutoregressive, InverseAutoregressive])
@pytest.mark.parametrize("transformer", ["affine", "spline"])
@pytest.mark.parametrize("order", ORDERS)
def test_autoregressive_jacobian_triangular(layer_cls, transformer, order):
    layer = randomize(layer_cls(4, 1, transformer=transformer, hidden=[32, 32], order=order))
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, generator=generator, dtype=torch.float64)
    c = torch.randn(1, generator=generator, dtype=torch.float64)
    rank = rank_of(order)
    # Rows and columns sorted by position in the order, so triangular means lower.
    by_rank = torch.argsort(rank)
    strictly_lower = torch.tril(torch.ones(4, 4, dtype=torch.bool), diagonal=-1)
    for direction in (layer, layer.inverse):
        jac = jacobian(lambda v: direction(v, c)[0], x)[by_rank][:, by_rank]

        assert torch.all(torch.triu(jac, diagonal=1) == 0)
        assert torch.all(torch.diagonal(jac) > 0)
        assert torch.all(jac[strictly_lower] != 0)


def test_mlp_without_inputs_is_constant():
    mlp = randomize(MLP(0, 6))
    out = mlp(torch.zeros(4, 0, dtype=torch.float64))

    assert out.shape == (4, 6)
    assert torch.equal(out[0], out[3])


def test_mlp_starts_near_zero():
    mlp = MLP(3, 5, hidden=[64, 64])
    out = mlp(torch.randn(100, 3))

    assert out.abs().max() < 0.1
    assert out.abs().max() > 0
