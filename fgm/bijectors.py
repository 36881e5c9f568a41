"""Bijectors as pure functions over parameter pytrees (distrax / TFP style).

A :class:`Bijector` implements only two functions,

* ``forward_and_log_det(params, x) -> (y, log|det ∂y/∂x|)``
* ``inverse_and_log_det(params, y) -> (x, log|det ∂x/∂y|)``

on ``[batch, dim]`` tensors, with log-determinants already summed over the
event dimension (shape ``[batch]``). :func:`forward` and :func:`inverse` are
derived from them once, here.

**Composition order.** ``chain([f1, f2, ..., fN])`` applies ``f1`` first:
its forward map is ``fN ∘ ... ∘ f2 ∘ f1`` (the order of a list of layers,
*not* the function-composition order of distrax's ``Chain``).

The RealNVP flow (Dinh et al. 2017) alternates :func:`affine_coupling`
layers, each transforming the dimensions its mask leaves out conditioned on
the masked ones, with complementary masks so every dimension is transformed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from fgm import nn as fnn
from fgm import random
from fgm.tree import TensorTree

__all__ = [
    "Bijector",
    "affine_coupling",
    "alternating_masks",
    "chain",
    "forward",
    "inverse",
    "permute",
    "realnvp",
]

Transform = Callable[[TensorTree, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Bijector(NamedTuple):
    """An invertible map with tractable Jacobian determinant.

    Attributes:
      init: ``key -> params``.
      forward_and_log_det: ``(params, x [B, d]) -> (y [B, d], log|det J_f(x)| [B])``.
      inverse_and_log_det: ``(params, y [B, d]) -> (x [B, d], log|det J_{f⁻¹}(y)| [B])``.
    """

    init: Callable[[random.Key], TensorTree]
    forward_and_log_det: Transform
    inverse_and_log_det: Transform


def forward(bijector: Bijector, params: TensorTree, x: torch.Tensor) -> torch.Tensor:
    """``y = f(x)``, derived from ``forward_and_log_det``.

    Args:
      bijector: the bijector ``f``.
      params: its parameters.
      x: ``[B, d]``.

    Returns:
      ``y``: ``[B, d]``.
    """
    return bijector.forward_and_log_det(params, x)[0]


def inverse(bijector: Bijector, params: TensorTree, y: torch.Tensor) -> torch.Tensor:
    """``x = f⁻¹(y)``, derived from ``inverse_and_log_det``.

    Args:
      bijector: the bijector ``f``.
      params: its parameters.
      y: ``[B, d]``.

    Returns:
      ``x``: ``[B, d]``.
    """
    return bijector.inverse_and_log_det(params, y)[0]


def chain(bijectors: Sequence[Bijector]) -> Bijector:
    """Composes bijectors; ``chain([f1, ..., fN])`` applies ``f1`` first.

    Forward: ``y = fN(...f1(x))``, ``log|det J| = Σ_i log|det J_{f_i}|`` at each
    intermediate point. Inverse runs the list backwards. Parameters are a dict
    ``{"0": params_of_f1, "1": params_of_f2, ...}``.

    Args:
      bijectors: ``[f1, ..., fN]``, applied first to last.

    Returns:
      A :class:`Bijector` whose ``init(key)`` splits ``key`` over the parts.
    """
    bijectors = tuple(bijectors)
    names = [str(i) for i in range(len(bijectors))]

    def init(key):
        keys = random.split(key, max(len(bijectors), 1))
        return {n: b.init(k) for n, b, k in zip(names, bijectors, keys, strict=True)}

    def forward_and_log_det(params, x):
        total = x.new_zeros(x.shape[0])
        for n, b in zip(names, bijectors, strict=True):
            x, log_det = b.forward_and_log_det(params[n], x)
            total = total + log_det
        return x, total

    def inverse_and_log_det(params, y):
        total = y.new_zeros(y.shape[0])
        for n, b in zip(reversed(names), reversed(bijectors), strict=True):
            y, log_det = b.inverse_and_log_det(params[n], y)
            total = total + log_det
        return y, total

    return Bijector(init, forward_and_log_det, inverse_and_log_det)


def permute(permutation: Sequence[int]) -> Bijector:
    """A fixed permutation of the dimensions, ``y = x[:, perm]``; log-det 0.

    Args:
      permutation: a permutation of ``range(d)``.

    Returns:
      A :class:`Bijector` without parameters (``init`` returns ``{}``).
    """
    perm = torch.as_tensor(list(permutation), dtype=torch.long)
    inv = torch.argsort(perm)

    def fwd(params, x):
        return x[:, perm.to(x.device)], x.new_zeros(x.shape[0])

    def inv_fn(params, y):
        return y[:, inv.to(y.device)], y.new_zeros(y.shape[0])

    return Bijector(lambda key: {}, fwd, inv_fn)


def _conditioner(dim: int, hidden: Sequence[int]) -> nn.Module:
    layers: list[nn.Module] = []
    sizes = [dim, *hidden]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ELU()]
    layers.append(nn.Linear(sizes[-1], 2 * dim))
    return nn.Sequential(*layers)


def affine_coupling(
    mask: torch.Tensor,
    hidden: Sequence[int] = (128,),
    scale_bound: float = 2.0,
    identity_init: bool = True,
) -> Bijector:
    """A RealNVP affine coupling layer.

    With a binary ``mask`` ``m`` (1 = conditioning dimension, kept as is):

        (s, t) = NN(m ⊙ x),   s ← b · tanh(s / b)      (bounded log-scale, |s| < b)
        y = m ⊙ x + (1 - m) ⊙ (x ⊙ exp(s) + t)
        log|det ∂y/∂x| = Σ_j (1 - m_j) s_j

    and the inverse ``x = m ⊙ y + (1 - m) ⊙ (y - t) ⊙ exp(-s)`` with the same
    ``(s, t)``, since ``m ⊙ y = m ⊙ x``.

    Args:
      mask: ``[d]`` of 0./1.
      hidden: widths of the conditioner MLP's hidden layers (ELU).
      scale_bound: ``b``; bounding the log-scale keeps early training stable.
      identity_init: zero the conditioner's output layer so the layer starts
        as the identity (then a flow of them is exactly the base distribution).

    Returns:
      A :class:`Bijector` on ``[B, d]`` whose parameters are the conditioner's
      (a flat dict, as :func:`fgm.nn.init_params` makes).
    """
    mask = mask.to(torch.float32)
    dim = mask.numel()
    template, apply = fnn.functional(lambda: _conditioner(dim, tuple(hidden)))
    mask_like = _mask_copies(mask)
    out_layer = f"{len(hidden) * 2}"

    def init(key):
        params = fnn.init_params(template, key)
        if identity_init:
            params[f"{out_layer}.weight"] = torch.zeros_like(params[f"{out_layer}.weight"])
            params[f"{out_layer}.bias"] = torch.zeros_like(params[f"{out_layer}.bias"])
        return params

    def scale_and_shift(params, x_cond):
        s, t = apply(params, x_cond).chunk(2, dim=-1)
        s = scale_bound * torch.tanh(s / scale_bound)
        m = mask_like(x_cond)
        return s * (1 - m), t * (1 - m), m

    def fwd(params, x):
        m = mask_like(x)
        s, t, m = scale_and_shift(params, x * m)
        y = x * torch.exp(s) + t  # s = t = 0 on the conditioning dimensions
        return y, s.sum(-1)

    def inv(params, y):
        m = mask_like(y)
        s, t, m = scale_and_shift(params, y * m)
        x = (y - t) * torch.exp(-s)
        return x, -s.sum(-1)

    return Bijector(init, fwd, inv)


def _mask_copies(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``mask_like(x)``: ``mask`` in ``x``'s dtype on ``x``'s device, copied once per (dtype, device).

    A copy from the CPU at every call waits for the GPU and cannot be
    captured in a CUDA graph.
    """
    copies: dict[tuple, torch.Tensor] = {}

    def mask_like(x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # a traced copy is a constant of the graph; a kept one has no storage
            return mask.to(dtype=x.dtype, device=x.device)
        where = (x.dtype, x.device)
        if where not in copies:
            copies[where] = mask.to(dtype=x.dtype, device=x.device)
        return copies[where]

    return mask_like


def alternating_masks(dim: int, num_layers: int) -> list[torch.Tensor]:
    """Masks that alternate between even and odd dimensions, layer by layer.

    Args:
      dim: ``d``.
      num_layers: how many masks.

    Returns:
      ``num_layers`` float32 ``[d]`` masks: even dimensions set for layers 0, 2, ...,
      odd ones for layers 1, 3, ...
    """
    even = (torch.arange(dim) % 2 == 0).to(torch.float32)
    return [even if i % 2 == 0 else 1 - even for i in range(num_layers)]


def realnvp(
    dim: int,
    num_layers: int = 4,
    hidden: Sequence[int] = (128,),
    scale_bound: float = 2.0,
    identity_init: bool = True,
) -> Bijector:
    """A RealNVP flow on ``R^dim``: ``num_layers`` affine couplings with alternating masks.

    Consecutive layers use complementary masks, so after two layers every
    dimension has been transformed, conditioned on the others.

    Args:
      dim: ``d`` >= 2.
      num_layers: number of coupling layers, >= 2 (every dimension transformed).
      hidden: the conditioners' hidden widths.
      scale_bound: bound ``b`` on each layer's log-scale (see :func:`affine_coupling`).
      identity_init: start every layer as the identity.

    Returns:
      ``chain([coupling_1, ..., coupling_L])``, a :class:`Bijector` on ``[B, dim]``.
    """
    if dim < 2:
        raise ValueError(f"a coupling flow needs dim >= 2, got {dim}")
    if num_layers < 2:
        # A single coupling passes its conditioning half through unchanged.
        raise ValueError(
            f"a RealNVP flow needs num_layers >= 2 (one coupling leaves half the dimensions untouched), "
            f"got {num_layers}"
        )
    return chain([affine_coupling(m, hidden, scale_bound, identity_init) for m in alternating_masks(dim, num_layers)])
