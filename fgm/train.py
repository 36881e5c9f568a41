"""Explicit-state training: ``step(state, batch, key) -> (state, metrics)``.

A :class:`TrainState` holds everything training changes. A step is a pure
function: it reads the state, a batch and a key, and returns a *new* state
and a dict of scalar metrics; nothing is mutated, no global RNG is read.

The key in the state is the run's root key. Loops derive step ``t``'s key as
``fold_in(state.key, t)`` (see :func:`step_key`), so a run resumed from a
checkpoint at step ``t`` draws exactly the noise it would have drawn without
stopping.

A step has two parts: ``make_inputs(batch, key)`` draws the step's noise from
the key (Python-level, at the edge), and the *update* ``update(params,
opt_state, model_state, *inputs) -> (params, opt_state, model_state,
metrics)`` is a pure function of tensors only (:func:`make_update`;
``model_state`` is the layer state, an empty tree for most models). The update is what ``torch.func.vmap``
maps over a stack of models (``fgm.ensemble``) and what ``torch.compile``
compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import optree
import torch

from fgm import optim, random
from fgm.tree import TensorTree, tree_map
from fgm.types import InputsFn, Metrics, UpdateFn

LossFn = Callable[..., tuple[torch.Tensor, Metrics]]
StepFn = Callable[["TrainState", Any, random.Key], tuple["TrainState", Metrics]]


__all__ = [
    "TrainState",
    "check_compile_mode",
    "cloned_metrics",
    "cuda_graph",
    "first_nonfinite_step",
    "init_state",
    "make_step",
    "make_update",
    "step_from_update",
    "step_key",
    "to_device",
    "value_and_grad",
]


class TrainState(NamedTuple):
    """The state of one model's training.

    Attributes:
      params: the parameter pytree.
      opt_state: the optimizer's state pytree.
      step: number of optimizer steps taken (Python int).
      key: the run's root key (unchanged by steps; see :func:`step_key`).
      model_state: layer state that is not trained by gradients (BatchNorm
        statistics, ...); empty for a model without it. Last, with a
        default, so that ``TrainState(params, opt_state, step, key)`` works.
    """

    params: TensorTree
    opt_state: TensorTree
    step: int
    key: random.Key
    model_state: TensorTree = {}  # never mutated: states are replaced, not changed


def init_state(params: TensorTree, optimizer: optim.GradientTransformation, key: random.Key) -> TrainState:
    """A step-0 state for ``params`` trained by ``optimizer``."""
    return TrainState(params=params, opt_state=optimizer.init(params), step=0, key=key)


def to_device(state: TensorTree, device: torch.device | str) -> TensorTree:
    """A training state (any model's, stacked ensembles included) with its floating-point tensors on ``device``.

    Integer tensors are step counters (the optimizer's ``count``,
    BatchNorm's ``num_batches_tracked``) and stay on the CPU: the update
    reads them as Python ints for its bias corrections and schedules, which
    on a GPU would wait for the device at every step (``torch.optim.Adam``
    keeps its ``step`` on the CPU for the same reason).

    Args:
      state: a state pytree (``TrainState``, ``GANState``, ...).
      device: where the parameters, moments and layer statistics go.

    Returns:
      The same structure; floating-point leaves on ``device``.
    """
    return optree.tree_map(lambda t: t.to(device) if torch.is_tensor(t) and t.is_floating_point() else t, state)


def first_nonfinite_step(first: torch.Tensor | None, loss: torch.Tensor, step: int) -> torch.Tensor:
    """Per member, the first step whose loss was NaN or infinite, tracked on the loss's device without a host read.

    Args:
      first: the previous result (``None`` before the first step).
      loss: ``[M]`` (or ``[]``) the step's losses.
      step: the step's number (e.g. ``state.step`` after it).

    Returns:
      ``int64 [M]``: ``first`` where it was already set (``>= 0``), else
      ``step`` where ``loss`` is not finite, else ``-1``.
    """
    if first is None:
        first = torch.full(loss.shape, -1, dtype=torch.int64, device=loss.device)
    return torch.where((first < 0) & ~torch.isfinite(loss), step, first)


def step_key(state: TrainState) -> random.Key:
    """The key for the next step: ``fold_in(state.key, state.step)``."""
    return random.fold_in(state.key, state.step)


def value_and_grad(
    loss_fn: LossFn, backend: str = "autograd"
) -> Callable[..., tuple[tuple[torch.Tensor, Metrics], TensorTree]]:
    """Wraps ``loss_fn(params, *args) -> (loss, aux)`` to also return ``∂loss/∂params``.

    Args:
      loss_fn: a pure function whose first argument is the parameter tree.
      backend: ``"autograd"`` differentiates with ``torch.autograd.grad`` on
        detached aliases of the leaves (the fastest eager path on CPU; see
        BENCHMARKS.md); ``"func"`` uses ``torch.func.grad_and_value``, which
        composes with ``torch.func.vmap`` (needed to vmap a step over seeds).

    Returns:
      ``fn(params, *args) -> ((loss, aux), grads)``; ``grads`` has the
      structure of ``params`` and, like ``loss`` and ``aux``, is detached.
    """
    if backend == "func":

        def swap(params, *args):
            loss, aux = loss_fn(params, *args)
            return loss, (loss, aux)

        grad_fn = torch.func.grad_and_value(swap, has_aux=True)

        def fn(params, *args):
            grads, (_, (loss, aux)) = grad_fn(params, *args)
            return (loss.detach(), aux), grads

        return fn
    if backend != "autograd":
        raise ValueError(f"unknown backend {backend!r}; choose from: autograd, func")

    def fn(params, *args):
        # Fresh leaves that alias the caller's storage: requires_grad is set on
        # the aliases only, so the caller's tensors are untouched.
        leaves = tree_map(lambda p: p.detach().requires_grad_(True), params)
        with torch.enable_grad():
            loss, aux = loss_fn(leaves, *args)
            flat, spec = optree.tree_flatten(leaves)
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(flat, grads, strict=True)]
        return (loss.detach(), aux), optree.tree_unflatten(spec, grads)

    return fn


def cuda_graph(fn: Callable, warmup: int = 3) -> Callable:
    """``fn`` replayed as one CUDA graph: one launch for all its kernels instead of one per operator.

    The first call captures ``fn`` on copies of its arguments (after
    ``warmup`` calls on a side stream, as ``torch.cuda.graphs`` asks); each
    call then copies its arguments into those buffers, skipping any argument
    that already is the buffer, and replays the graph. ``fn`` must be a pure
    function of CUDA tensors whose Python-level behaviour (shapes, branches,
    Python numbers) is the same on every call: the graph replays the
    kernels of the first call with the same scalar arguments.

    Args:
      fn: ``fn(*args) -> outputs``; ``args`` a pytree of CUDA tensors.
      warmup: uncaptured calls before the capture.

    Returns:
      ``graphed(*args) -> outputs``. The outputs are the graph's own
      buffers: the next call overwrites them, so read or copy them first
      (an optimizer step consumes a gradient at once).

    Raises:
      ValueError: an argument is not a CUDA tensor, or a later call's
        structure, shapes or dtypes differ from the captured call's.
    """
    captured: dict[str, Any] = {}

    def graphed(*args):
        leaves, spec = optree.tree_flatten(args)
        if not captured:
            captured.update(_capture(fn, leaves, spec, warmup))
        static = captured["static"]
        if spec != captured["spec"] or any(_layout(a) != _layout(s) for a, s in zip(leaves, static, strict=True)):
            raise ValueError("cuda_graph: the arguments' structure, shapes or dtypes differ from the captured call's")
        changed = [(s, a) for s, a in zip(static, leaves, strict=True) if _where(s) != _where(a)]
        if changed:
            targets, sources = zip(*changed, strict=True)
            torch._foreach_copy_(list(targets), list(sources))
        captured["graph"].replay()
        return captured["outputs"]

    return graphed


def _capture(fn: Callable, leaves: list[torch.Tensor], spec, warmup: int) -> dict[str, Any]:
    """``fn`` captured on copies of ``leaves`` (:func:`cuda_graph`): the graph, its inputs and its outputs."""
    paths = optree.tree_paths(optree.tree_unflatten(spec, leaves))
    bad = ["/".join(map(str, p)) for p, t in zip(paths, leaves, strict=True) if not _is_cuda(t)]
    if bad:
        raise ValueError(
            f"cuda_graph: every argument must be a CUDA tensor, not {', '.join(bad[:4])}"
            f"{', ...' if len(bad) > 4 else ''} (a step counter that stays on the CPU, such as BatchNorm's"
            " num_batches_tracked, changes at every step, which a graph cannot replay)"
        )
    static = [t.clone() for t in leaves]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(*optree.tree_unflatten(spec, static))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn(*optree.tree_unflatten(spec, static))
    return {"graph": graph, "spec": spec, "static": static, "outputs": outputs}


def _is_cuda(t: Any) -> bool:
    return torch.is_tensor(t) and t.device.type == "cuda"


def _where(t: torch.Tensor) -> tuple:
    return t.data_ptr(), t.stride()


def _layout(t: torch.Tensor) -> tuple:
    return t.shape, t.dtype, t.device


def make_update(
    loss_fn: LossFn,
    optimizer: optim.GradientTransformation,
    backend: str = "autograd",
    donate: bool = False,
    compile: bool | str = False,
) -> UpdateFn:
    """Builds the pure tensor core of a train step: one gradient step on ``loss_fn``.

    Args:
      loss_fn: ``(params, *inputs) -> (loss, metrics)``, deterministic.
      optimizer: a :class:`fgm.optim.GradientTransformation`.
      backend: see :func:`value_and_grad`; ``"func"`` for ``torch.func.vmap``.
      donate: reuse the buffers of the incoming ``params`` and ``opt_state``
        for the outputs (JAX's buffer donation): the results are bitwise the
        same, but the caller must not read the old trees afterwards. Saves
        the fresh parameter and moment buffers of every step (see
        ``fgm.optim``); the optimizer's transformations must accept
        ``donate`` (those of ``fgm.optim`` do).
      compile: ``True`` runs the loss and its gradient through
        ``torch.compile`` (with the ``"func"`` backend, which dynamo traces
        into one graph; the first call compiles, for tens of seconds on a
        CPU); ``"cuda_graph"`` replays them as one CUDA graph
        (:func:`cuda_graph`; CUDA tensors only). The optimizer stays eager
        either way: its step counters and schedules are Python numbers, which
        a graph would bake in (or recompile for) at every step.

    Returns:
      ``update(params, opt_state, model_state, *inputs) -> (params,
      opt_state, model_state, metrics)`` (:class:`fgm.types.UpdateFn`):
      ``model_state`` is passed through unchanged (the loss reads only
      ``params`` and the inputs); ``metrics`` holds ``"loss"`` and the
      loss's own metrics (detached scalars). It takes no keys and touches no
      Python state, so ``torch.func.vmap`` can map it over stacked models.
    """
    check_compile_mode(compile)
    if compile == "cuda_graph":
        grad_fn = cloned_metrics(cuda_graph(value_and_grad(loss_fn, backend)))
    else:
        grad_fn = torch.compile(value_and_grad(loss_fn, "func")) if compile else value_and_grad(loss_fn, backend)
    # Pure calls pass no keyword, so optimizers written without `donate` still work.
    donation = {"donate": True} if donate else {}

    def update(
        params: TensorTree, opt_state: TensorTree, model_state: TensorTree, *inputs
    ) -> tuple[TensorTree, TensorTree, TensorTree, Metrics]:
        (loss, metrics), grads = grad_fn(params, *inputs)
        updates, opt_state = optimizer.update(grads, opt_state, params, **donation)
        params = optim.apply_updates(params, updates, donate=donate)
        return params, opt_state, model_state, {"loss": loss, **metrics}

    return update


def check_compile_mode(compile: bool | str, stacked: bool = False) -> None:
    """Refuses a ``compile`` that is not ``False``, ``True`` or ``"cuda_graph"``, and a graph of stacked seeds.

    Raises:
      ValueError: naming what is allowed.
    """
    if compile not in (False, True, "cuda_graph"):
        raise ValueError(f"compile must be False, True or 'cuda_graph', got {compile!r}")
    if stacked and compile == "cuda_graph":
        raise ValueError("compile='cuda_graph' replays one model's update; stacked seeds take compile=True")


def cloned_metrics(grad_fn: Callable) -> Callable:
    """``grad_fn`` whose loss and metrics are copies (a graph's own buffers are overwritten by its next replay)."""

    def fn(*args):
        (loss, metrics), grads = grad_fn(*args)
        return (loss.clone(), tree_map(torch.clone, metrics)), grads

    return fn


def step_from_update(update: UpdateFn, make_inputs: InputsFn = lambda batch, key: (batch,)) -> StepFn:
    """Wraps a tensor-level ``update`` into ``step(state, batch, key) -> (state, metrics)``.

    Args:
      update: ``(params, opt_state, model_state, *inputs) -> (params,
        opt_state, model_state, metrics)`` (:class:`fgm.types.UpdateFn`).
      make_inputs: ``(batch, key) -> inputs``: draws the step's noise *at the
        edge* and hands it to ``update`` as ordinary tensors.

    Returns:
      The step; it advances ``state.step`` by one and keeps ``state.key``.
    """

    def step(state, batch: Any, key: random.Key):
        params, opt_state, model_state, metrics = update(
            state.params, state.opt_state, state.model_state, *make_inputs(batch, key)
        )
        return state._replace(params=params, opt_state=opt_state, model_state=model_state, step=state.step + 1), metrics

    return step


def make_step(
    loss_fn: LossFn,
    optimizer: optim.GradientTransformation,
    make_inputs: InputsFn = lambda batch, key: (batch,),
    backend: str = "autograd",
    donate: bool = False,
) -> StepFn:
    """Builds a pure train step from a loss and an optimizer.

    Args:
      loss_fn: ``(params, *inputs) -> (loss, metrics)``, deterministic.
      optimizer: a :class:`fgm.optim.GradientTransformation`.
      make_inputs: ``(batch, key) -> inputs``: draws the step's noise *at the
        edge* and hands it to ``loss_fn`` as ordinary tensors.
      backend: see :func:`value_and_grad`.
      donate: see :func:`make_update`: the step then consumes its input
        state (``state.params`` and ``state.opt_state`` hold the new values
        afterwards), so use it only in loops that drop the old state.

    Returns:
      ``step(state, batch, key) -> (new_state, metrics)``; ``metrics``
      contains ``"loss"`` plus the loss's own metrics (detached scalars).
    """
    return step_from_update(make_update(loss_fn, optimizer, backend, donate), make_inputs)
