"""Turning ``torch.nn`` modules into pure functions over parameter pytrees.

A module here is only an *architecture template*: it is built on the ``meta``
device (no memory, no random initialisation, no global RNG), its parameters
are created separately from an explicit key by :func:`init_params`, and it is
called through ``torch.func.functional_call`` by the function that
:func:`functional` returns::

    template, apply = functional(lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
    params = init_params(template, fgm.random.key(0))
    y = apply(params, x)            # pure: y depends only on (params, x)

Parameter trees are flat dicts ``{"0.weight": tensor, ...}`` keyed by the
module's own parameter names, so they plug straight into ``functional_call``
and into ``state_dict``-style tools. Models nest them (``{"encoder": {...},
"decoder": {...}}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fgm import random
from fgm.tree import TensorTree, tree_size

__all__ = ["count_params", "default_initializer", "describe", "functional", "init_params"]

Initializer = Callable[[random.Key, str, torch.Tensor], torch.Tensor]


def functional(build: Callable[[], nn.Module]) -> tuple[nn.Module, Callable[..., torch.Tensor]]:
    """Builds a module template on the meta device and its pure apply function.

    Args:
      build: a zero-argument callable returning the ``nn.Module``.

    Returns:
      ``(template, apply)`` where ``apply(params, *args, **kwargs)`` runs the
      module with ``params`` (a flat dict of tensors) via ``functional_call``.

    Raises:
      ValueError: the module registers buffers (e.g. BatchNorm running stats):
        hidden mutable state has no place in a pure function.
    """
    with torch.device("meta"):
        template = build()
    buffers = [name for name, _ in template.named_buffers()]
    if buffers:
        raise ValueError(
            f"module has buffers {buffers}: mutable state is not allowed in a pure "
            "model; thread it through explicitly or use a stateless layer instead"
        )

    def apply(params: dict[str, torch.Tensor], *args, **kwargs):
        return torch.func.functional_call(template, params, args, kwargs, strict=True)

    return template, apply


def default_initializer(k: random.Key, name: str, like: torch.Tensor, fan_in: int) -> torch.Tensor:
    """PyTorch's default init, drawn from an explicit key.

    ``nn.Linear``/``nn.Conv*`` draw weights and biases from
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (kaiming-uniform with ``a=sqrt(5)``);
    one-dimensional ``weight`` leaves (normalisation scales) start at one.

    Args:
      k: the key of this one parameter.
      name: the parameter's name (``"0.weight"``); decides the ones-init case.
      like: a tensor (e.g. on the meta device) giving shape and dtype.
      fan_in: the layer's fan-in (input features × kernel size).

    Returns:
      A new tensor of ``like``'s shape and dtype, on the CPU.
    """
    if name.endswith("weight") and like.dim() == 1:
        return torch.ones(like.shape, dtype=like.dtype)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    u = random.uniform(k, like.shape, dtype=like.dtype)
    return (2.0 * u - 1.0) * bound


def init_params(
    template: nn.Module,
    k: random.Key,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Creates the parameters of ``template`` from ``k`` with PyTorch's default scheme.

    Each parameter gets its own key, ``fold_in(k, index)`` in the module's
    registration order, so adding a layer at the end does not change the
    initialisation of the others.

    Args:
      template: a module (typically on the meta device) used only for shapes.
      k: the random key.
      dtype: floating dtype of the created tensors.

    Returns:
      A flat dict ``{parameter_name: tensor}`` suitable for ``functional_call``.
    """
    params: dict[str, torch.Tensor] = {}
    named = dict(template.named_parameters())
    for index, (name, p) in enumerate(named.items()):
        like = torch.empty(p.shape, dtype=dtype, device="meta")
        fan_in = _fan_in(named, name)
        params[name] = default_initializer(random.fold_in(k, index), name, like, fan_in)
    return params


def _fan_in(named: dict[str, nn.Parameter], name: str) -> int:
    """Fan-in as ``torch.nn.init`` computes it, for a weight or for its sibling bias."""
    prefix = name.rsplit(".", 1)[0] + "." if "." in name else ""
    weight = named.get(prefix + "weight", named[name])
    if weight.dim() < 2:
        return 0
    return weight.shape[1] * math.prod(weight.shape[2:])


def count_params(params: TensorTree) -> int:
    """The number of scalars in a parameter tree.

    Returns:
      ``Σ leaf.numel()`` over the tensor leaves.
    """
    return tree_size(params)


def describe(template: nn.Module, example_input_shape: tuple[int, ...]) -> list[tuple[str, str, tuple, int]]:
    """A per-layer summary: ``(name, layer type, output shape, parameter count)``.

    Runs the template on a meta tensor (no compute, no memory), like
    pytorch-model-summary but without touching real data.

    Args:
      template: the module (built by :func:`functional`, or any module).
      example_input_shape: input shape including the batch axis, e.g. ``(1, 1, 28, 28)``.

    Returns:
      One row per leaf module, in call order.
    """
    rows: list[tuple[str, str, tuple, int]] = []
    hooks = []
    for name, module in template.named_modules():
        if name == "" or list(module.children()):
            continue

        def hook(mod, _inputs, output, name=name):
            n = sum(p.numel() for p in mod.parameters(recurse=False))
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            rows.append((name, type(mod).__name__, shape, n))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            template(torch.empty(example_input_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return rows
