"""Optax-style optimizers: pure gradient transformations over pytrees.

An optimizer is a :class:`GradientTransformation`, a pair of pure functions::

    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = apply_updates(params, updates)

``params``, ``grads`` and ``updates`` are pytrees (nested dicts, tuples,
NamedTuples) of floating-point tensors with the same structure; the state is a
pytree too, so it can be checkpointed and inspected like the parameters.

Design, following optax:

* Transformations are small and composable. :func:`chain` runs them in order,
  each one turning the updates of the previous one into new updates, and its
  state is the tuple of the inner states. :func:`adam` *is*
  ``chain(scale_by_adam(...), scale_by_learning_rate(lr))`` (same state).
* Updates are *descent directions*: :func:`scale_by_learning_rate` multiplies
  by ``-lr``, and :func:`apply_updates` only adds, ``params + updates``.
  Keeping the addition separate lets a caller inspect, clip or log the step.
* Nothing is mutated. No input tensor (params, grads, state) is written to;
  in-place ops are used only on buffers the function has just allocated, and
  every output tensor is new. Callers should treat all of them as immutable
  values too: an optimizer state may be updated twice, or kept for later.
* Step counters are int64 scalar tensors kept on the CPU, so reading them
  (``int(count)``) never waits for an accelerator, and schedules and bias
  corrections are computed in Python float64 from the exact integer count.
  (Raising ``b1`` to a float32 *tensor* power drifts from the reference
  implementation as the count grows; Python floats do not.)
* Speed: a transformation flattens its trees once with ``optree`` (which sorts
  dict keys, so equal structures always flatten in the same order) and works
  on the leaf lists with ``torch._foreach_*`` kernels: one call per
  elementwise operation for the whole tree (a multi-tensor kernel on CUDA, a
  C++ loop over the leaves on the CPU). Purity has a price that in-place
  optimizers do not pay: every step writes new moment and parameter buffers
  (see ``benchmarks/bench_adam.py``).
* Buffer donation (opt-in, as ``donate_argnums`` in JAX): ``update(...,
  donate=True)`` may overwrite the incoming updates and the old state and
  hand their buffers back as the outputs, and ``apply_updates(...,
  donate=True)`` adds into the old parameters. The values are bitwise those
  of the pure call; only a caller that never reads the donated trees again
  may ask for it (a training loop that replaces its state every step, such
  as ``fgm.train.make_update(donate=True)``). On the CPU a fresh
  parameter-sized buffer costs a page fault per 4 KiB, several times the
  arithmetic on it; with donation an Adam step allocates nothing, which
  makes it cheaper than ``torch.optim.Adam``'s (see BENCHMARKS.md). Updates
  are written to only when their leaves are dense and share no memory:
  autograd may hand one gradient tensor to two leaves, or an expanded one;
  parameters only when no two share a storage (else ``apply_updates`` copies).
* The optimizer maths runs under ``torch.no_grad()``: updates and states never
  carry autograd history, and :func:`apply_updates` returns fresh tensors with
  the ``requires_grad`` flags of the parameters it was given.
* ``torch.func`` composes: the ``_foreach`` kernels have no ``vmap`` batching
  rules, so when a leaf is a ``torch.func`` tensor (inside ``vmap``, e.g. a
  seed ensemble, see ``fgm.ensemble``) each transformation runs the same ops
  leaf by leaf instead, with the same results. Step counters must then be
  unbatched (all members at the same step), because bias corrections and
  schedules read them as Python ints; the moments should be batched with
  the parameters (a shared second moment cannot take a batched gradient in
  place).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import optree
import torch

Params = Any  # a pytree of floating-point tensors
Updates = Any  # a pytree with the structure of the params
OptState = Any  # a pytree (usually NamedTuples of tensors)
Schedule = Callable[[int], float]
ScalarOrSchedule = float | Schedule


class GradientTransformation(NamedTuple):
    """A pair of pure functions that together define an optimizer.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None) -> (updates, state)``;
        ``params`` is needed only by transformations that read the parameters
        (e.g. :func:`add_decayed_weights`). The transformations of this module
        also take ``donate=True`` (keyword only): the caller gives up
        ``updates`` and ``state``, whose buffers may then be overwritten and
        returned as the outputs.
    """

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


class EmptyState(NamedTuple):
    """The state of a stateless transformation (a pytree with no leaves)."""


class ScaleByAdamState(NamedTuple):
    """The state of :func:`scale_by_adam`.

    Attributes:
      count: int64 scalar CPU tensor, the number of updates done so far.
      mu: first-moment estimate, a tree like the params.
      nu: second-moment estimate, a tree like the params.
    """

    count: torch.Tensor
    mu: Updates
    nu: Updates


class ScaleByScheduleState(NamedTuple):
    """The state of :func:`scale_by_schedule`.

    Attributes:
      count: int64 scalar CPU tensor; the schedule is evaluated at this value.
    """

    count: torch.Tensor


# --------------------------------------------------------------------------- helpers


def _zero_count() -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64)


def _count_tensor(n: int) -> torch.Tensor:
    return torch.tensor(n, dtype=torch.int64)


def _leaves_like(tree: Any, treedef: optree.PyTreeSpec, what: str) -> list[torch.Tensor]:
    """The leaves of ``tree``, which must have exactly the structure ``treedef``.

    Every list handed to one ``_foreach`` call must be in the same leaf order;
    checking the structure (not just the leaf count) catches a state built for
    other parameters before it silently pairs the wrong tensors.
    """
    leaves, other = optree.tree_flatten(tree)
    if other != treedef:
        raise ValueError(f"{what} has structure {other}, expected {treedef}")
    return leaves


def _foreach(name: str, *args, **kwargs):
    """``torch._foreach_<name>(*args, **kwargs)``."""
    return getattr(torch, "_foreach_" + name)(*args, **kwargs)


# In-place ops without a vmap batching rule in torch 2.14 (vmap falls back to a loop over members).
_NO_BATCHED_INPLACE = frozenset({"lerp_", "addcmul_"})


def _per_leaf(name: str, *args, **kwargs):
    """The same op as :func:`_foreach`, as a loop of ``Tensor.<name>`` calls.

    On the CPU a ``_foreach`` kernel is such a loop in C++ (bitwise the same
    results); this one also runs on ``torch.func`` tensors, for which the
    ``_foreach`` kernels have no batching rule. List arguments are indexed
    per leaf, anything else is passed to every call.
    """
    calls = [tuple(a[i] if isinstance(a, list) else a for a in args) for i in range(len(args[0]))]
    method = getattr(torch.Tensor, name)
    if name in _NO_BATCHED_INPLACE:
        # vmap runs these in place member by member (and warns about it). That
        # is still faster on the CPU than the batched out-of-place op plus a
        # copy back, which writes a fresh stacked buffer.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="There is a performance drop")
            for call in calls:
                method(*call, **kwargs)
        return None
    out = [method(*call, **kwargs) for call in calls]
    return None if name.endswith("_") else out


def _ops(*leaf_lists: list[torch.Tensor]) -> Callable[..., Any]:
    """:func:`_per_leaf` if any leaf is a ``torch.func`` tensor (inside ``vmap``), else :func:`_foreach`."""
    return _per_leaf if any(map(_is_wrapped, itertools.chain(*leaf_lists))) else _foreach


class _Scalars:
    """Makes the scalar operand of a ``_foreach`` op over ``leaves``.

    On the CPU the ``_foreach`` ops fall back to one kernel call per leaf, and
    a Python-number operand is wrapped into a new tensor for each of those
    calls (more than half the time of the op for small leaves). A list of one
    shared 0-dim tensor per dtype avoids that; its value is the Python float
    rounded to the leaf's dtype, which is what the kernel would use anyway, so
    the results are bitwise the same. Elsewhere (CUDA) the Python number keeps
    the fused multi-tensor kernels.
    """

    __slots__ = ("_n", "_dtypes", "_uniform")

    def __init__(self, leaves: list[torch.Tensor]):
        self._n = len(leaves)
        self._dtypes = None
        self._uniform = None
        if leaves and leaves[0].device.type == "cpu":
            dtypes = [t.dtype for t in leaves]
            if dtypes.count(dtypes[0]) == len(dtypes):
                self._uniform = dtypes[0]
            else:
                self._dtypes = dtypes

    def __call__(self, value: float) -> float | list[torch.Tensor]:
        if self._uniform is not None:
            return [torch.tensor(value, dtype=self._uniform)] * self._n
        if self._dtypes is None:
            return value
        by_dtype = {dt: torch.tensor(value, dtype=dt) for dt in set(self._dtypes)}
        return [by_dtype[dt] for dt in self._dtypes]


def _writable(leaves: list[torch.Tensor]) -> bool:
    """True when donated ``leaves`` may be overwritten one by one (in place, without ``out=``).

    Each must be a dense tensor with storage of its own: autograd can return
    one gradient tensor for two leaves (``a + b``) or a stride-0 expanded one
    (``p.sum()``), and writing into those would corrupt the other leaf or
    fail. Inside one ``vmap`` the check is made on the tensors underneath.
    """
    plain = _underlying(leaves)
    return plain is not None and all(t.is_contiguous() for t in plain) and _separate_storage(plain)


def _underlying(leaves: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """The plain tensors under one ``vmap`` level (the leaves themselves outside it).

    ``None`` under nested ``torch.func`` transforms: the tensors underneath
    are not the ones written to, so do not guess.
    """
    plain = []
    for t in leaves:
        if _is_wrapped(t):
            t = torch._C._functorch.get_unwrapped(t)
            if _is_wrapped(t):
                return None
        plain.append(t)
    return plain


def _separate_storage(tensors: list[torch.Tensor]) -> bool:
    """True when no two non-empty ``tensors`` share a storage (views of one buffer do).

    One set of storage pointers per call: cheap enough for every step.
    Sharing a storage is stricter than overlapping (disjoint slices of a flat
    buffer are refused too), which only costs the donating caller one copy.
    """
    ptrs = [t.untyped_storage().data_ptr() for t in tensors if t.numel()]
    return len(set(ptrs)) == len(ptrs)


def _is_wrapped(t: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def _scaled(leaves: list[torch.Tensor], value: float, donate: bool = False) -> list[torch.Tensor]:
    """``value * leaf`` for each leaf: new tensors, or the donated leaves scaled in place."""
    if not leaves:
        return []
    if donate and _writable(leaves):
        _ops(leaves)("mul_", leaves, _Scalars(leaves)(value))
        return leaves
    return _ops(leaves)("mul", leaves, _Scalars(leaves)(value))


# --------------------------------------------------------------------------- Adam


def _adam_step(
    grads: list[torch.Tensor],
    mu: list[torch.Tensor],
    nu: list[torch.Tensor],
    count: int,
    b1: float,
    b2: float,
    eps: float,
    post_scale: float | None,
    donate: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One Adam step on non-empty leaf lists: returns ``(updates, mu, nu)``.

    ``count`` is the 1-based index of this step. With ``post_scale`` set, the
    updates are multiplied by it in place, which gives bitwise the result of
    multiplying them afterwards by :func:`scale`, without a new buffer. The
    moments are fresh tensors, or with ``donate`` the old ones updated in
    place (the same kernels, so the same values); with ``donate`` the updates
    are also written into the gradients' buffers when :func:`_writable`.
    """
    bc1 = 1.0 - b1**count
    bc2 = 1.0 - b2**count
    sqrt_bc2 = math.sqrt(bc2)
    scalar = _Scalars(grads)
    op = _ops(grads, mu, nu)
    if donate:
        op("lerp_", mu, grads, 1.0 - b1)
        op("mul_", nu, scalar(b2))
    else:
        mu = op("lerp", mu, grads, 1.0 - b1)
        nu = op("mul", nu, scalar(b2))
    # One pass instead of squaring into a temporary, exactly as torch.optim.Adam.
    op("addcmul_", nu, grads, grads, value=1.0 - b2)
    # The only allocation besides mu and nu, and it becomes the updates:
    # fresh buffers are what costs most on the CPU (page faults), more than
    # the two extra in-place passes of the reciprocal form below. Donated
    # gradients are no longer needed here, so their buffers take it instead.
    if donate and _writable(grads):
        for g, n in zip(grads, nu, strict=True):
            if _is_wrapped(g):  # vmap has no batching rule for out=
                g.copy_(n).sqrt_()
            else:
                torch.sqrt(n, out=g)
        updates = grads
    else:
        updates = op("sqrt", nu)
    # sqrt(nu_hat) + eps, scaled by sqrt(bc2) so that bias correction 2 costs
    # no pass of its own; the sqrt(bc2) goes back in with the last scalar.
    op("add_", updates, scalar(eps * sqrt_bc2))
    # 1 / (denom / mu) = mu / denom, written into the denominator's buffer.
    # mu = 0 gives denom / 0 = inf and then exactly 0, as mu / denom would.
    op("div_", updates, mu)
    op("reciprocal_", updates)
    op("mul_", updates, scalar(sqrt_bc2 / bc1))
    if post_scale is not None:
        op("mul_", updates, scalar(post_scale))
    return updates, mu, nu


def _adam_update(
    updates: Updates,
    state: ScaleByAdamState,
    b1: float,
    b2: float,
    eps: float,
    post_scale: float | None,
    donate: bool = False,
) -> tuple[Updates, ScaleByAdamState]:
    grads, treedef = optree.tree_flatten(updates)
    mu = _leaves_like(state.mu, treedef, "state.mu")
    nu = _leaves_like(state.nu, treedef, "state.nu")
    count = int(state.count) + 1
    if grads:
        new_updates, mu, nu = _adam_step(grads, mu, nu, count, b1, b2, eps, post_scale, donate)
    else:
        new_updates = []
    new_state = ScaleByAdamState(
        count=_count_tensor(count),
        mu=optree.tree_unflatten(treedef, mu),
        nu=optree.tree_unflatten(treedef, nu),
    )
    return optree.tree_unflatten(treedef, new_updates), new_state


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    r"""Rescales updates by Adam's bias-corrected moment estimates.

    For step :math:`t = 1, 2, \dots` (``count`` before the update is
    :math:`t - 1`) and gradient :math:`g_t`, leafwise:

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,

        \hat m_t = \frac{m_t}{1 - \beta_1^t}, \qquad
        \hat v_t = \frac{v_t}{1 - \beta_2^t}, \qquad
        u_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}.

    The output :math:`u_t` points *up* the gradient; follow it with
    :func:`scale_by_learning_rate` (as :func:`adam` does) to descend. The
    arithmetic mirrors ``torch.optim.Adam``: the bias corrections are Python
    floats computed from the integer step, and :math:`u_t` is evaluated as
    :math:`c \cdot [(\sqrt{v_t} + \epsilon \sqrt{1-\beta_2^t}) / m_t]^{-1}`
    with :math:`c = \sqrt{1-\beta_2^t} / (1-\beta_1^t)` (one buffer, no
    separate bias-correction pass), which agrees with ``torch.optim.Adam`` to
    a few ulps per step.

    Args:
      b1: decay rate :math:`\beta_1` of the first moment, in ``[0, 1)``.
      b2: decay rate :math:`\beta_2` of the second moment, in ``[0, 1)``.
      eps: :math:`\epsilon`, added to :math:`\sqrt{\hat v_t}` for stability.

    Returns:
      A transformation whose state is a :class:`ScaleByAdamState` with ``mu``
      and ``nu`` shaped (and typed) like the params, initialised to zero.
      Each leaf of the updates keeps its shape and dtype.
    """

    def init_fn(params: Params) -> ScaleByAdamState:
        leaves, treedef = optree.tree_flatten(params)
        zeros = lambda: optree.tree_unflatten(treedef, [torch.zeros_like(p) for p in leaves])  # noqa: E731 - a one-line function beside its only use
        return ScaleByAdamState(count=_zero_count(), mu=zeros(), nu=zeros())

    @torch.no_grad()
    def update_fn(updates: Updates, state: ScaleByAdamState, params: Params = None, *, donate: bool = False):
        del params
        return _adam_update(updates, state, b1, b2, eps, post_scale=None, donate=donate)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------- scaling


def scale(step_size: float) -> GradientTransformation:
    """Multiplies every update by the constant ``step_size``.

    Args:
      step_size: a Python float.

    Returns:
      A stateless transformation (state :class:`EmptyState`).
    """
    step_size = float(step_size)

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    @torch.no_grad()
    def update_fn(updates: Updates, state: EmptyState, params: Params = None, *, donate: bool = False):
        del params
        leaves, treedef = optree.tree_flatten(updates)
        return optree.tree_unflatten(treedef, _scaled(leaves, step_size, donate)), state

    return GradientTransformation(init_fn, update_fn)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiplies every update by ``step_size_fn(count)``.

    ``count`` is the number of updates done before this one, so the first
    update is scaled by ``step_size_fn(0)`` (as optax, and as
    ``torch.optim.lr_scheduler.LambdaLR`` stepped after each optimizer step).

    Args:
      step_size_fn: a pure function from a Python int to a float.

    Returns:
      A transformation with state :class:`ScaleByScheduleState`.
    """

    def init_fn(params: Params) -> ScaleByScheduleState:
        del params
        return ScaleByScheduleState(count=_zero_count())

    @torch.no_grad()
    def update_fn(updates: Updates, state: ScaleByScheduleState, params: Params = None, *, donate: bool = False):
        del params
        count = int(state.count)
        factor = float(step_size_fn(count))
        leaves, treedef = optree.tree_flatten(updates)
        new_updates = optree.tree_unflatten(treedef, _scaled(leaves, factor, donate))
        return new_updates, ScaleByScheduleState(count=_count_tensor(count + 1))

    return GradientTransformation(init_fn, update_fn)


def _signed(learning_rate: ScalarOrSchedule, flip_sign: bool) -> ScalarOrSchedule:
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate):
        return lambda count: sign * float(learning_rate(count))
    return sign * float(learning_rate)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> GradientTransformation:
    """Multiplies updates by ``-learning_rate`` (a descent step).

    Args:
      learning_rate: a float, or a schedule ``count -> float`` evaluated at the
        number of updates done so far (see :func:`scale_by_schedule`).
      flip_sign: multiply by ``-learning_rate`` (default) rather than
        ``+learning_rate``.

    Returns:
      :func:`scale` (state :class:`EmptyState`) for a float, and
      :func:`scale_by_schedule` (state :class:`ScaleByScheduleState`) for a
      schedule.
    """
    signed = _signed(learning_rate, flip_sign)
    if callable(signed):
        return scale_by_schedule(signed)
    return scale(signed)


# --------------------------------------------------------------------------- composition


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies ``transforms`` in order, each to the updates of the previous one.

    Args:
      *transforms: the transformations, first applied first.

    Returns:
      A transformation whose state is the tuple of the inner states. With
      ``donate=True`` every inner transformation is asked to donate, so all
      of them must accept the keyword (this module's do).
    """

    def init_fn(params: Params) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update_fn(updates: Updates, state: tuple, params: Params = None, *, donate: bool = False):
        if len(state) != len(transforms):
            raise ValueError(f"chain of {len(transforms)} transformations got a state of length {len(state)}")
        # Pure calls do not pass the keyword, so user transformations without it still chain.
        extra = {"donate": True} if donate else {}
        new_state = []
        for t, s in zip(transforms, state, strict=True):
            updates, s = t.update(updates, s, params, **extra)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init_fn, update_fn)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> GradientTransformation:
    r"""The Adam optimizer (Kingma & Ba, 2015), as in ``torch.optim.Adam``.

    Equal to ``chain(scale_by_adam(b1, b2, eps),
    scale_by_learning_rate(learning_rate))``: same state (a 2-tuple of
    :class:`ScaleByAdamState` and the learning-rate state) and bitwise the
    same updates, :math:`u_t = -\eta_t\, \hat m_t / (\sqrt{\hat v_t} +
    \epsilon)` (see :func:`scale_by_adam` for :math:`\hat m_t, \hat v_t`).
    The update applies :math:`-\eta_t` in place on the Adam pass's fresh
    output instead of allocating another tree, which is the only difference.

    Args:
      learning_rate: :math:`\eta`, a float or a schedule ``count -> float``.
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      eps: :math:`\epsilon`.

    Returns:
      A :class:`GradientTransformation`; add its updates with
      :func:`apply_updates`.
    """
    composed = chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))
    signed = _signed(learning_rate, flip_sign=True)

    @torch.no_grad()
    def update_fn(updates: Updates, state: tuple, params: Params = None, *, donate: bool = False):
        del params
        adam_state, lr_state = state
        if callable(signed):
            count = int(lr_state.count)
            factor = float(signed(count))
            lr_state = ScaleByScheduleState(count=_count_tensor(count + 1))
        else:
            factor = signed
        updates, adam_state = _adam_update(updates, adam_state, b1, b2, eps, post_scale=factor, donate=donate)
        return updates, (adam_state, lr_state)

    return GradientTransformation(composed.init, update_fn)


# --------------------------------------------------------------------------- other transformations


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    r"""Rescales the updates so that their global norm is at most ``max_norm``.

    With :math:`\|u\| = \sqrt{\sum_\text{leaves} \sum_i u_i^2}`, the updates
    become :math:`u \cdot \min(1, \text{max\_norm} / \|u\|)`. Below the
    threshold the factor is exactly 1 and the values are unchanged; above it
    the new norm equals ``max_norm`` up to rounding in the leaves' dtype. The
    factor stays a tensor, so this never waits for an accelerator.

    Args:
      max_norm: the largest allowed global norm, > 0.

    Returns:
      A stateless transformation (state :class:`EmptyState`).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    @torch.no_grad()
    def update_fn(updates: Updates, state: EmptyState, params: Params = None, *, donate: bool = False):
        del params
        leaves, treedef = optree.tree_flatten(updates)
        if not leaves:
            return updates, state
        op = _ops(leaves)
        norms = op("norm", leaves)
        dtype = norms[0].dtype
        for n in norms[1:]:
            dtype = torch.promote_types(dtype, n.dtype)
        total = torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]))
        # max_norm / 0 = inf, clamped to 1: all-zero updates pass through.
        factor = torch.clamp(max_norm / total, max=1.0)
        # One 0-dim factor per leaf in the leaf's dtype: a 0-dim leaf times a
        # float64 0-dim factor would otherwise come out float64.
        by_dtype = {dt: factor.to(dt) for dt in {t.dtype for t in leaves}}
        factors = [by_dtype[t.dtype] for t in leaves]
        if donate and _writable(leaves):
            op("mul_", leaves, factors)
            return optree.tree_unflatten(treedef, leaves), state
        return optree.tree_unflatten(treedef, op("mul", leaves, factors)), state

    return GradientTransformation(init_fn, update_fn)


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """Adds ``weight_decay * params`` to the updates.

    Placed between :func:`scale_by_adam` and :func:`scale_by_learning_rate`
    this gives AdamW's decoupled weight decay.

    Args:
      weight_decay: the coefficient (a Python float).

    Returns:
      A stateless transformation (state :class:`EmptyState`); its ``update``
      requires ``params``.
    """
    weight_decay = float(weight_decay)

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    @torch.no_grad()
    def update_fn(updates: Updates, state: EmptyState, params: Params = None, *, donate: bool = False):
        if params is None:
            raise ValueError("add_decayed_weights needs params: call update(updates, state, params)")
        leaves, treedef = optree.tree_flatten(updates)
        p = _leaves_like(params, treedef, "params")
        if not leaves:
            return updates, state
        if donate and _writable(leaves):
            _ops(leaves, p)("add_", leaves, p, alpha=weight_decay)
            return optree.tree_unflatten(treedef, leaves), state
        return optree.tree_unflatten(treedef, _ops(leaves, p)("add", leaves, p, alpha=weight_decay)), state

    return GradientTransformation(init_fn, update_fn)


def apply_updates(params: Params, updates: Updates, *, donate: bool = False) -> Params:
    """Returns ``params + updates``, leafwise, as new tensors.

    Args:
      params: the parameter tree.
      updates: a tree of the same structure, shapes and dtypes (the output of
        a transformation's ``update``, already a descent step).
      donate: add in place and return ``params``' own tensors (the caller
        gives up the old parameters: nothing may read them afterwards). When
        two leaves share a storage (tied weights stored twice, views of one
        buffer) an in-place add would apply their updates to each other, so
        the pure path runs instead: same values, fresh, separate leaves.

    Returns:
      The new parameter tree. A leaf whose parameter had ``requires_grad`` set
      is returned as a fresh leaf with ``requires_grad`` set, so autograd-based
      loops keep working; no autograd history links it to the old params.
    """
    leaves, treedef = optree.tree_flatten(params)
    u = _leaves_like(updates, treedef, "updates")
    if not leaves:
        return params
    op = _ops(leaves, u)
    # Aliased leaves (tied weights stored twice, a slice of another leaf)
    # would get every update they share once per leaf: copy instead, which
    # gives the pure call's values and leaves separate buffers for next time.
    if donate and (plain := _underlying(leaves)) is not None and _separate_storage(plain):
        with torch.no_grad():
            op("add_", leaves, u)
        return params
    with torch.no_grad():
        new = op("add", leaves, u)
    for p, q in zip(leaves, new, strict=True):
        if p.requires_grad:
            q.requires_grad_(True)
    return optree.tree_unflatten(treedef, new)


# --------------------------------------------------------------------------- schedules


def constant_schedule(value: float) -> Schedule:
    """The schedule ``count -> value``."""
    value = float(value)

    def schedule(count: int) -> float:
        del count
        return value

    return schedule


def exponential_decay(
    init_value: float,
    decay_rate: float,
    transition_steps: int,
    *,
    staircase: bool = False,
) -> Schedule:
    r"""The schedule ``init_value * decay_rate ** (count / transition_steps)``.

    Args:
      init_value: the value at count 0.
      decay_rate: the factor applied every ``transition_steps`` counts.
      transition_steps: > 0.
      staircase: use ``count // transition_steps`` (a step function) instead
        of the real quotient.

    Returns:
      A pure function of an integer count returning a Python float.
    """
    if transition_steps <= 0:
        raise ValueError(f"transition_steps must be > 0, got {transition_steps}")
    init_value, decay_rate = float(init_value), float(decay_rate)

    def schedule(count: int) -> float:
        count = int(count)
        exponent = count // transition_steps if staircase else count / transition_steps
        return init_value * decay_rate**exponent

    return schedule


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    r"""Cosine decay from ``init_value`` to ``alpha * init_value``.

    .. math::

        \eta(c) = \eta_0 \left[(1 - \alpha)\,\tfrac12\left(1 + \cos\frac{\pi
        \min(c, T)}{T}\right) + \alpha\right], \qquad T = \text{decay\_steps}.

    Args:
      init_value: :math:`\eta_0`, the value at count 0.
      decay_steps: :math:`T` > 0; the value stays at :math:`\alpha\eta_0` after.
      alpha: the final value as a fraction of ``init_value``.

    Returns:
      A pure function of an integer count returning a Python float.
    """
    if decay_steps <= 0:
        raise ValueError(f"decay_steps must be > 0, got {decay_steps}")
    init_value, alpha = float(init_value), float(alpha)

    def schedule(count: int) -> float:
        fraction = min(int(count), decay_steps) / decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * fraction))
        return init_value * ((1.0 - alpha) * cosine + alpha)

    return schedule


__all__ = [
    "GradientTransformation",
    "EmptyState",
    "ScaleByAdamState",
    "ScaleByScheduleState",
    "scale_by_adam",
    "scale",
    "scale_by_schedule",
    "scale_by_learning_rate",
    "chain",
    "adam",
    "clip_by_global_norm",
    "add_decayed_weights",
    "apply_updates",
    "constant_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
]
