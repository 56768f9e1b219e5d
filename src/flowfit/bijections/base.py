r"""The bijection contract, composition, inversion and a registry for model files.

A bijection maps a tensor of shape :math:`(*, D)` to a tensor of the same shape and
returns the log-absolute-determinant of its Jacobian, of shape :math:`(*)`, in the same
call. Flows use the generative direction: ``forward`` maps base samples :math:`z` to data
:math:`x = g(z)`, and ``inverse`` maps data back to the base, as in
:class:`torch.distributions.TransformedDistribution`.
"""

from __future__ import annotations

__all__ = [
    "Bijection",
    "Chain",
    "Inverse",
    "TorchTransform",
    "BijectionTransform",
    "register",
    "bijection_from_spec",
]

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Transform, constraints

REGISTRY: dict[str, type[Bijection]] = {}


def register(cls: type[Bijection]) -> type[Bijection]:
    """Add a bijection class to the registry that model files are loaded through.

    Loading looks classes up by their registered name only, never by import path, so a
    model file can name nothing but the classes listed here.
    """
    if cls.__name__ in REGISTRY:
        raise ValueError(f"A bijection named {cls.__name__!r} is already registered.")
    REGISTRY[cls.__name__] = cls
    return cls


class Bijection(nn.Module):
    r"""Base class of invertible maps with an exact log-determinant.

    Subclasses implement :meth:`_forward` and :meth:`_inverse`, each returning the output
    and :math:`\log |\det J|` of the map it computes, and :meth:`config`, the keyword
    arguments that rebuild the bijection (its tensors travel separately, in the state
    dict). The public :meth:`forward` and :meth:`inverse` check shapes first.

    Arguments:
        features: The size :math:`D` of the last dimension of inputs.
        context: The size :math:`C` of the context, or 0 for an unconditional map.
    """

    def __init__(self, features: int, context: int = 0) -> None:
        super().__init__()
        if not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive integer; got {features!r}.")
        if not isinstance(context, int) or context < 0:
            raise ValueError(f"context must be a non-negative integer; got {context!r}.")
        self.features = features
        self.context = context

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Map :math:`z \mapsto x = g(z)`; return :math:`(g(z), \log|\det J_g(z)|)`."""
        self._check(x, context)
        return self._forward(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Map :math:`x \mapsto g^{-1}(x)`; return it with :math:`\log|\det J_{g^{-1}}(x)|`."""
        self._check(y, context)
        return self._inverse(y, context)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not implement _forward.")

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not implement _inverse.")

    def config(self) -> dict[str, Any]:
        """Return the JSON-serialisable keyword arguments that rebuild this bijection."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot be saved: it defines no config()."
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Bijection:
        """Build the bijection from :meth:`config` output; its tensors come separately."""
        return cls(**config)

    def spec(self) -> dict[str, Any]:
        """Return the registered name and config, the form a model file stores."""
        name = type(self).__name__
        if REGISTRY.get(name) is not type(self):
            raise TypeError(
                f"{name} is not registered, so it cannot be saved; decorate it with "
                "flowfit.bijections.register."
            )
        return {"type": name, "config": self.config()}

    def as_transform(self) -> BijectionTransform:
        """Wrap this bijection as a :class:`torch.distributions.Transform`."""
        return BijectionTransform(self)

    def _check(self, x: Tensor, context: Tensor | None) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected a torch.Tensor; got {type(x).__name__}.")
        if x.ndim == 0 or x.shape[-1] != self.features:
            raise ValueError(
                f"Expected input of shape (*, {self.features}); got {tuple(x.shape)}."
            )
        if self.context == 0:
            if context is not None:
                raise ValueError(
                    f"{type(self).__name__} is unconditional but was given a context."
                )
            return
        if context is None:
            raise ValueError(
                f"{type(self).__name__} needs a context of shape (*, {self.context}); "
                "got None."
            )
        if context.shape[-1] != self.context or context.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                f"Expected context of shape {(*x.shape[:-1], self.context)} to match "
                f"input of shape {tuple(x.shape)}; got {tuple(context.shape)}."
            )


@register
class Chain(Bijection):
    r"""Composition :math:`g = g_K \circ \cdots \circ g_1`: ``forward`` applies the listed
    bijections in order and adds their log-determinants.

    Arguments:
        bijections: The maps :math:`g_1, \dots, g_K`, all of the same ``features`` and
            ``context``.
    """

    def __init__(self, bijections: list[Bijection]) -> None:
        if not bijections:
            raise ValueError("Chain needs at least one bijection; got an empty list.")
        features = bijections[0].features
        context = max(b.context for b in bijections)
        for b in bijections:
            if b.features != features:
                raise ValueError(
                    f"Every bijection in a Chain must have {features} features; "
                    f"{type(b).__name__} has {b.features}."
                )
        super().__init__(features, context)
        self.bijections = nn.ModuleList(bijections)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # The sum starts from the first log-det rather than from zeros, which saves an
        # allocation and an addition per call.
        total = None
        for b in self.bijections:
            x, log_det = b._forward(x, context if b.context else None)
            total = log_det if total is None else total + log_det
        return x, total

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        total = None
        for b in reversed(self.bijections):
            y, log_det = b._inverse(y, context if b.context else None)
            total = log_det if total is None else total + log_det
        return y, total

    def spec(self) -> dict[str, Any]:
        return {"type": "Chain", "config": {"bijections": [b.spec() for b in self.bijections]}}


@register
class Inverse(Bijection):
    """The inverse of a bijection: ``forward`` and ``inverse`` swap roles."""

    def __init__(self, bijection: Bijection) -> None:
        super().__init__(bijection.features, bijection.context)
        self.bijection = bijection

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.bijection._inverse(x, context)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.bijection._forward(y, context)

    def spec(self) -> dict[str, Any]:
        return {"type": "Inverse", "config": {"bijection": self.bijection.spec()}}


class TorchTransform(Bijection):
    r"""Use an element-wise :class:`torch.distributions.Transform` as a bijection.

    The transform acts on each of the ``features`` entries, and the log-determinant is the
    sum of its element-wise ``log_abs_det_jacobian``. Such a wrapper has no registered
    config, so a flow containing one can be used but not saved.

    Example:
        >>> from torch.distributions import ExpTransform
        >>> exp = TorchTransform(ExpTransform(), features=1)
        >>> exp(torch.zeros(2, 1))[0]
        tensor([[1.],
                [1.]])
    """

    def __init__(self, transform: Transform, features: int) -> None:
        super().__init__(features)
        if transform.event_dim != 0 or not transform.bijective:
            raise ValueError(
                "TorchTransform wraps element-wise bijective transforms (event_dim 0); "
                f"got {transform!r} with event_dim {transform.event_dim}."
            )
        self.transform = transform

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = self.transform(x)
        return y, self.transform.log_abs_det_jacobian(x, y).sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = self.transform.inv(y)
        return x, -self.transform.log_abs_det_jacobian(x, y).sum(-1)


class BijectionTransform(Transform):
    """A :class:`torch.distributions.Transform` view of an unconditional bijection.

    Its ``event_dim`` is 1: it acts on vectors of ``features`` entries, so it composes
    with :class:`torch.distributions.TransformedDistribution` over an
    :class:`~torch.distributions.Independent` base.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, bijection: Bijection, cache_size: int = 0) -> None:
        if bijection.context:
            raise ValueError(
                "A conditional bijection has no Transform view; call it with its context."
            )
        super().__init__(cache_size=cache_size)
        self.bijection = bijection

    def _call(self, x: Tensor) -> Tensor:
        return self.bijection(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.bijection.inverse(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.bijection(x)[1]


def bijection_from_spec(spec: dict[str, Any]) -> Bijection:
    """Rebuild a bijection from :meth:`Bijection.spec` output, by registered name only."""
    if not isinstance(spec, dict) or "type" not in spec or "config" not in spec:
        raise ValueError(f"A bijection spec needs 'type' and 'config' keys; got {spec!r}.")
    name = spec["type"]
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(
            f"Unknown bijection type {name!r}; known types: {', '.join(sorted(REGISTRY))}."
        )
    config = dict(spec["config"])
    if cls is Chain:
        return Chain([bijection_from_spec(s) for s in config["bijections"]])
    if cls is Inverse:
        return Inverse(bijection_from_spec(config["bijection"]))
    return cls.from_config(config)

