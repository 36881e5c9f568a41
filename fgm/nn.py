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

Layer state (flax's ``batch_stats``, equinox's ``State``) is a *second* flat
dict keyed by buffer names, passed in and returned by the function that
:func:`stateful` builds::

    template, apply = stateful(lambda: nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8)))
    params = init_params(template, k_params)
    state = init_state(template, params, k_state)    # {"1.running_mean": ..., ...}
    y, state = apply(params, state, x, train=True)   # new running statistics
    y, _ = apply(params, state, x, train=False)      # uses them

Two layer kinds carry state, both declared with plain torch in the template:
``nn.BatchNorm1d/2d/3d`` (running mean, variance and batch count) and
``torch.nn.utils.parametrizations.spectral_norm`` (the power-iteration vectors
``u`` and ``v``). Their torch forwards update the buffers in place; here they
are replaced by pure forwards (:func:`batch_norm`, :func:`spectral_normalize`)
that return the new values instead, so ``apply`` never writes into its
arguments and composes with ``torch.func.grad`` and ``vmap``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.parametrizations import _SpectralNorm

from fgm import random
from fgm.tree import TensorTree, tree_size

__all__ = [
    "StatefulApply",
    "batch_norm",
    "count_params",
    "default_initializer",
    "describe",
    "functional",
    "init_params",
    "init_state",
    "merge",
    "parameter_table",
    "power_iteration",
    "spectral_normalize",
    "sequential_program",
    "split",
    "state_names",
    "stateful",
]

Initializer = Callable[[random.Key, str, torch.Tensor], torch.Tensor]


def functional(build: Callable[[], nn.Module]) -> tuple[nn.Module, Callable[..., torch.Tensor]]:
    """Builds a module template on the meta device and its pure apply function.

    Args:
      build: a zero-argument callable returning the ``nn.Module``.

    Returns:
      ``(template, apply)`` where ``apply(params, *args, **kwargs)`` runs the
      module with ``params`` (a flat dict of tensors) via ``functional_call``.

    Raises:
      ValueError: the module registers buffers (BatchNorm running statistics,
        spectral-norm vectors): build it with :func:`stateful`, whose apply
        takes and returns that state explicitly.
    """
    with torch.device("meta"):
        template = build()
    buffers = [name for name, _ in template.named_buffers()]
    if buffers:
        raise ValueError(
            f"module has buffers {buffers}: its layer state must be threaded explicitly; "
            "build it with fgm.nn.stateful, whose apply(params, state, *inputs, train=...) "
            "returns (outputs, new_state)"
        )

    def apply(params: dict[str, torch.Tensor], *args, **kwargs):
        return torch.func.functional_call(template, params, args, kwargs, strict=True)

    direct = sequential_program(template)
    if direct is None:
        return template, apply
    names = frozenset(name for name, _ in template.named_parameters())

    def apply_sequential(params: dict[str, torch.Tensor], *args, **kwargs):
        if kwargs or len(args) != 1 or params.keys() != names:  # functional_call's checks and errors
            return apply(params, *args, **kwargs)
        x = args[0]
        for layer in direct:
            x = layer(params, x)
        return x

    return template, apply_sequential


# --------------------------------------------------------------------------- a direct path for nn.Sequential

# Module type -> (module, prefix) -> layer(params, x): the same torch.nn.functional call the module's
# forward makes, so the outputs are bitwise those of functional_call (tested), without its per-call
# re-binding of every parameter into the template (BENCHMARKS.md, issue 17).
_DIRECT_LAYERS: dict[type, Callable] = {
    nn.Linear: lambda m, p: lambda ps, x: F.linear(x, ps[p + "weight"], ps.get(p + "bias")),
    nn.Conv2d: lambda m, p: (
        lambda ps, x: F.conv2d(x, ps[p + "weight"], ps.get(p + "bias"), m.stride, m.padding, m.dilation, m.groups)
    ),
    nn.ConvTranspose2d: lambda m, p: (
        lambda ps, x: F.conv_transpose2d(
            x, ps[p + "weight"], ps.get(p + "bias"), m.stride, m.padding, m.output_padding, m.groups, m.dilation
        )
    ),
    nn.ELU: lambda m, p: lambda ps, x: F.elu(x, m.alpha),
    nn.ReLU: lambda m, p: lambda ps, x: F.relu(x),
    nn.LeakyReLU: lambda m, p: lambda ps, x: F.leaky_relu(x, m.negative_slope),
    nn.Tanh: lambda m, p: lambda ps, x: torch.tanh(x),
    nn.Sigmoid: lambda m, p: lambda ps, x: torch.sigmoid(x),
    nn.Identity: lambda m, p: lambda ps, x: x,
    nn.Flatten: lambda m, p: lambda ps, x: x.flatten(m.start_dim, m.end_dim),
    nn.Unflatten: lambda m, p: lambda ps, x: x.unflatten(m.dim, m.unflattened_size),
}


def _plain(module: nn.Module) -> bool:
    """The module's forward is its class's (no hooks, parametrizations, in-place or non-default padding)."""
    if type(module) not in _DIRECT_LAYERS or getattr(module, "parametrizations", None):
        return False
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    if any(getattr(module, h, None) for h in hooks) or getattr(module, "inplace", False):
        return False
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d) and (
        module.padding_mode != "zeros" or isinstance(module.padding, str)
    ):
        return False
    return True


def sequential_program(template: nn.Module) -> list[Callable] | None:
    """The layers of a plain ``nn.Sequential`` as ``layer(params, x) -> x`` calls, or ``None``.

    ``None`` (use ``functional_call``) for anything else: another container, a
    layer type without a direct form, hooks, parametrizations, global forward
    hooks, or buffers.
    """
    if type(template) is not nn.Sequential or nn.modules.module._global_forward_hooks:
        return None
    if any(True for _ in template.named_buffers()) or template._forward_hooks or template._forward_pre_hooks:
        return None
    program = []
    for name, module in template.named_children():
        if not _plain(module) or any(True for _ in module.children()):
            return None
        program.append(_DIRECT_LAYERS[type(module)](module, f"{name}."))
    return program


# --------------------------------------------------------------------------- layer state


class StatefulApply(Protocol):
    """``apply(params, state, *inputs, train) -> (outputs, new_state)``, built by :func:`stateful`.

    Pure: ``params``, ``state`` and ``inputs`` are not modified. In training
    mode (``train=True``) BatchNorm normalises with the batch's statistics
    and spectral norm runs its power iteration; ``new_state`` holds the
    updated buffers (new tensors) and every other entry of ``state`` as it
    was (the same objects). In evaluation mode BatchNorm uses the running
    statistics, spectral norm the stored vectors, and ``new_state`` equals
    ``state``.
    """

    def __call__(
        self, params: dict[str, torch.Tensor], state: dict[str, torch.Tensor], *inputs, train: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class _Context:
    """Where the pure layer forwards of one :func:`stateful` template read the mode and write new state."""

    def __init__(self) -> None:
        self.train = False
        self.updates: dict[str, torch.Tensor] | None = None


def stateful(build: Callable[[], nn.Module]) -> tuple[nn.Module, StatefulApply]:
    """Builds a module template whose layer state is threaded explicitly.

    The module may contain ``nn.BatchNorm1d/2d/3d`` and layers wrapped with
    ``torch.nn.utils.parametrizations.spectral_norm``; their forwards are
    replaced on the template by pure ones (:func:`batch_norm`,
    :func:`spectral_normalize`) that return the new buffers instead of
    writing them. A module without buffers gets an empty state.

    Args:
      build: a zero-argument callable returning the ``nn.Module``.

    Returns:
      ``(template, apply)``, ``apply`` as :class:`StatefulApply`; the state
      is a flat dict keyed by buffer names, as :func:`init_state` creates it.

    Raises:
      ValueError: the module holds buffers of another kind (the message
        names them), whose update rule fgm does not know.
    """
    with torch.device("meta"):
        template = build()
    context = _Context()
    known: set[str] = set()
    for name, module in template.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, _BatchNorm):
            module.forward = functools.partial(_batch_norm_forward, module, prefix, context)
        elif isinstance(module, _SpectralNorm):
            module.forward = functools.partial(_spectral_norm_forward, module, prefix, context)
        else:
            continue
        known.update(prefix + b for b, _ in module.named_buffers(recurse=False))
    unknown = [name for name, _ in template.named_buffers() if name not in known]
    if unknown:
        raise ValueError(
            f"module has buffers {unknown} that fgm cannot thread: only BatchNorm statistics and "
            "spectral-norm vectors (torch.nn.utils.parametrizations.spectral_norm) are supported"
        )

    def apply(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor], *inputs, train: bool, **kwargs):
        outer = (context.train, context.updates)  # an apply may run inside another (gradient penalties)
        context.train, context.updates = bool(train), {}
        try:
            out = torch.func.functional_call(template, (params, state), inputs, kwargs, strict=True)
            updates = context.updates
        finally:
            context.train, context.updates = outer
        return out, {**state, **updates}

    return template, apply


def state_names(template: nn.Module) -> list[str]:
    """The names of the template's state entries (its buffers), in registration order."""
    return [name for name, _ in template.named_buffers()]


def init_state(template: nn.Module, params: dict[str, torch.Tensor], k: random.Key) -> dict[str, torch.Tensor]:
    """The layer state of a fresh model, as torch's constructors create it.

    BatchNorm: running mean 0, running variance 1, batch count 0 (``int64``).
    Spectral norm: ``u`` and ``v`` drawn from ``N(0, I)`` and normalised,
    then 15 power iterations on the layer's initial weight (from
    ``params``), as ``torch.nn.utils.parametrizations.spectral_norm`` does
    at construction.

    Args:
      template: a template built by :func:`stateful`.
      params: its parameters (:func:`init_params`); spectral norm reads its weights.
      k: the key of the spectral-norm draws; entry ``i`` of the state uses ``fold_in(k, i)``.

    Returns:
      A flat dict ``{buffer_name: tensor}`` (empty for a stateless module);
      floating entries take the dtype of ``params``.
    """
    dtype = next(iter(params.values())).dtype if params else torch.float32
    state: dict[str, torch.Tensor] = {}
    for index, (name, module) in enumerate(template.named_modules()):
        prefix = f"{name}." if name else ""
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            c = module.num_features
            state[prefix + "running_mean"] = torch.zeros(c, dtype=dtype)
            state[prefix + "running_var"] = torch.ones(c, dtype=dtype)
            state[prefix + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        elif isinstance(module, _SpectralNorm) and hasattr(module, "_u"):
            # "a.parametrizations.weight.0." -> the parameter "a.parametrizations.weight.original"
            weight = params[prefix.rsplit(".", 2)[0] + ".original"]
            matrix = module._reshape_weight_to_matrix(weight)
            k_u, k_v = random.split(random.fold_in(k, index))
            u = F.normalize(random.normal(k_u, (matrix.shape[0],), dtype=dtype), dim=0, eps=module.eps)
            v = F.normalize(random.normal(k_v, (matrix.shape[1],), dtype=dtype), dim=0, eps=module.eps)
            u, v = power_iteration(matrix, u, v, 15, module.eps)
            state[prefix + "_u"], state[prefix + "_v"] = u, v
    return state


def merge(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One flat dict of parameters and state, like a ``state_dict`` (what evaluation code reads)."""
    return {**params, **state}


def split(template: nn.Module, variables: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """The inverse of :func:`merge`: ``(params, state)`` by the template's buffer names."""
    names = set(state_names(template))
    params = {k: v for k, v in variables.items() if k not in names}
    return params, {k: v for k, v in variables.items() if k in names}


def batch_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    num_batches_tracked: torch.Tensor | None,
    train: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    r"""Batch normalisation that returns its new running statistics instead of writing them.

    Per channel ``c`` (axis 1), with batch mean :math:`\mu` and biased
    variance :math:`\sigma^2` over the other axes,
    :math:`y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta`. In
    training mode the running statistics move towards the batch's,

    .. math::

        \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu, \qquad
        \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\,\tfrac{n}{n-1}\sigma^2,

    with the *unbiased* variance over the ``n`` values per channel, as torch
    does; ``m = 1 / count`` (a cumulative average) when ``momentum`` is
    ``None``. In evaluation mode the running statistics replace the batch's.

    Args:
      x: ``[B, C]``, ``[B, C, L]``, ``[B, C, H, W]`` or ``[B, C, D, H, W]``.
      weight, bias: ``[C]`` affine parameters, or ``None``.
      running_mean, running_var: ``[C]``, or ``None`` (no tracking: batch statistics always).
      num_batches_tracked: ``[]`` ``int64`` count, or ``None``.
      train: normalise with the batch's statistics and update the running ones.
      momentum, eps: as in ``torch.nn.BatchNorm2d``.

    Returns:
      ``(y, new_stats)``: ``y`` like ``x``; ``new_stats = (running_mean,
      running_var, num_batches_tracked)`` (new tensors, no graph) when
      training with running statistics, else ``None``.
    """
    tracking = running_mean is not None
    if tracking and not train:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps), None
    y = F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
    if not tracking:
        return y, None
    var, mean = torch.var_mean(x.detach(), dim=[0, *range(2, x.dim())], correction=1)
    count = num_batches_tracked + 1
    m = momentum if momentum is not None else 1.0 / count.to(mean.dtype)
    new_mean = (1 - m) * running_mean + m * mean
    new_var = (1 - m) * running_var + m * var
    return y, (new_mean, new_var, count)


def power_iteration(
    matrix: torch.Tensor, u: torch.Tensor, v: torch.Tensor, iterations: int, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Power iteration towards the leading singular vectors of ``matrix`` (no graph).

    ``iterations`` times: :math:`u \leftarrow W v / \|W v\|`, then
    :math:`v \leftarrow W^\top u / \|W^\top u\|` (torch's order).

    Args:
      matrix: ``[h, w]`` (detached here).
      u: ``[h]``; v: ``[w]``.
      iterations: ``>= 0``.
      eps: the normalisation's floor, as in ``F.normalize``.

    Returns:
      ``(u [h], v [w])``, new tensors.
    """
    matrix = matrix.detach()
    for _ in range(iterations):
        u = F.normalize(torch.mv(matrix, v), dim=0, eps=eps)
        v = F.normalize(torch.mv(matrix.H, u), dim=0, eps=eps)
    return u, v


def spectral_normalize(
    weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``W / σ`` with the estimate :math:`\sigma = u^\top W v` of the largest singular value.

    ``W`` is reshaped to a matrix with axis ``dim`` first (``[h, w]``); the
    vectors carry no gradient, so the gradient flows through ``W`` in both
    the numerator and :math:`\sigma`, as in torch.

    Args:
      weight: ``[out, in, *kernel]`` (``dim = 0``) or ``[in, out, *kernel]``
        (transposed convolutions, ``dim = 1``).
      u: ``[h]``; v: ``[w]`` (from :func:`power_iteration`).
      dim: the output axis.

    Returns:
      ``(weight / σ, σ)``.
    """
    matrix = weight.movedim(dim, 0).flatten(1)
    sigma = torch.vdot(u, torch.mv(matrix, v))
    return weight / sigma, sigma


def _batch_norm_forward(module: _BatchNorm, prefix: str, context: _Context, x: torch.Tensor) -> torch.Tensor:
    """``nn.BatchNorm*d.forward`` without in-place writes; new statistics go to ``context``."""
    module._check_input_dim(x)
    tracking = module.track_running_stats
    train = context.train
    y, new = batch_norm(
        x,
        module.weight,
        module.bias,
        module.running_mean if tracking else None,
        module.running_var if tracking else None,
        module.num_batches_tracked if tracking else None,
        train,
        module.momentum,
        module.eps,
    )
    if new is not None and context.updates is not None:
        for name, value in zip(("running_mean", "running_var", "num_batches_tracked"), new, strict=True):
            context.updates[prefix + name] = value
    return y


def _spectral_norm_forward(module: _SpectralNorm, prefix: str, context: _Context, weight: torch.Tensor) -> torch.Tensor:
    """``_SpectralNorm.forward`` without in-place writes; new ``u``, ``v`` go to ``context``."""
    if weight.ndim == 1:
        return F.normalize(weight, dim=0, eps=module.eps)
    u, v = module._u, module._v
    if context.train:
        u, v = power_iteration(module._reshape_weight_to_matrix(weight), u, v, module.n_power_iterations, module.eps)
        if context.updates is not None:
            context.updates[prefix + "_u"], context.updates[prefix + "_v"] = u, v
    return spectral_normalize(weight, u, v, module.dim)[0]


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
    # A spectral-normalised layer keeps its weight as "parametrizations.weight.original".
    weight = named.get(prefix + "weight", named.get(prefix + "parametrizations.weight.original", named[name]))
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
        # A parametrized layer (spectral norm) is one row: its weight lives under "parametrizations".
        children = [c for n, c in module.named_children() if n != "parametrizations"]
        if name == "" or children or ".parametrizations" in f".{name}":
            continue

        def hook(mod, _inputs, output, name=name):
            n = sum(p.numel() for p in mod.parameters())
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


def parameter_table(params: dict[str, TensorTree], networks: dict[str, tuple[nn.Module, tuple[int, ...]]]) -> str:
    """Per subtree of ``params``: its parameter count, and for a network its layers (:func:`describe`); the total.

    Args:
      params: ``{name: parameter tree}`` (e.g. ``{"encoder", "decoder", "prior"}``).
      networks: ``{name: (template, example input shape)}`` of the subtrees that are networks.
    """
    lines, total = [], 0
    for name, subtree in params.items():
        count = count_params(subtree)
        total += count
        if count:
            lines.append(f"{name}: {count:,} parameters")
        if name in networks:
            template, shape = networks[name]
            lines += [
                f"    {layer:<10} {kind:<16} {str(list(s)):<20} {n:>10,}"
                for layer, kind, s, n in describe(template, shape)
            ]
    lines.append(f"total: {total:,} parameters")
    return "\n".join(lines)
