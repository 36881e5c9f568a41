"""Seed ensembles: many independent models trained at once with ``torch.func.vmap``.

The members of an ensemble share an architecture, an optimizer and a step
count, and differ in their keys (initialisation, step noise, data order).
Their parameter and optimizer-state trees are *stacked*: every tensor leaf
gets a new leading axis of size ``M``, the number of members. A pure update
``update(params, opt_state, model_state, *inputs)`` (see
:func:`fgm.train.make_update`)
is then mapped over that axis with ``torch.func.vmap``, so one call trains
all members, each on its own inputs::

    states = [recipe.init(fgm.random.key(s)) for s in (0, 1, 2, 3)]
    ens = stack_states(states)
    step = make_ensemble_step(train.make_update(loss_fn, optimizer, backend="func"), make_inputs)
    ens, metrics = step(ens, [batch_0, batch_1, batch_2, batch_3], step_keys(ens))  # metrics: [4] each

Keys stay outside ``vmap``: ``fgm.random`` samplers are Python-level (a
private ``torch.Generator`` per key), and ``vmap`` forbids random ops inside
anyway. Each member's noise is drawn at the edge from its own key by the
same ``make_inputs`` a single run uses, and the draws are stacked. Member
``i`` of an ensemble therefore follows exactly the computation of a single
run with ``states[i]`` and the same keys and batches; the results agree to
floating-point tolerance (batched matrix products may round differently).

The layer state (``fgm.nn.stateful``: BatchNorm statistics, spectral-norm
vectors; an empty tree for most models) is stacked like the parameters, in
:attr:`EnsembleState.model_state`.

Integer leaves of the optimizer state are step counters. Bias corrections
and learning-rate schedules read them as Python ints, which a batched tensor
cannot give, so :func:`vmap_update` passes them *unbatched*: all members
must be at the same count (they are, stepping in lockstep), and a mismatch
is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import optree
import torch

from fgm import optim, random, train
from fgm.tree import TensorTree, tree_map
from fgm.types import Trainer

__all__ = [
    "EnsembleState",
    "make_ensemble_step",
    "make_update",
    "member",
    "member_step",
    "num_members",
    "stack",
    "stack_states",
    "step_keys",
    "unstack",
    "unstack_states",
    "vmap_apply",
    "vmap_update",
    "vmap_value_and_grad",
]

# ``step(ensemble, batches, keys) -> (ensemble, metrics)``: one batch and one key per member.
EnsembleStepFn = Callable[[Any, Sequence[Any], Sequence[random.Key]], tuple["EnsembleState", train.Metrics]]


# --------------------------------------------------------------------------- stacking


def stack(trees: Sequence[TensorTree]) -> TensorTree:
    """Stacks trees of the same structure leaf by leaf along a new leading axis.

    Args:
      trees: ``M >= 1`` trees with equal structure; matching leaves must have
        equal shapes and dtypes.

    Returns:
      One tree of that structure whose leaves are ``[M, *leaf.shape]`` (new
      memory, detached).

    Raises:
      ValueError: no trees, or trees of different structures.
    """
    if not trees:
        raise ValueError("stack needs at least one tree")
    leaves0, spec = optree.tree_flatten(trees[0])
    columns = [[leaf] for leaf in leaves0]
    for i, tree in enumerate(trees[1:], start=1):
        leaves, other = optree.tree_flatten(tree)
        if other != spec:
            raise ValueError(f"tree {i} has structure {other}, expected {spec}")
        for column, leaf in zip(columns, leaves, strict=True):
            column.append(leaf)
    return optree.tree_unflatten(spec, [torch.stack([t.detach() for t in column]) for column in columns])


def num_members(tree: TensorTree) -> int:
    """The size ``M`` of the leading axis shared by all leaves of a stacked tree."""
    sizes = {leaf.shape[0] for leaf in optree.tree_leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"not a stacked tree: leading sizes {sorted(sizes)}")
    return sizes.pop()


def member(tree: TensorTree, i: int) -> TensorTree:
    """Member ``i`` of a stacked tree: every leaf indexed ``leaf[i]`` (views, no copy)."""
    return tree_map(lambda leaf: leaf[i], tree)


def unstack(tree: TensorTree) -> list[TensorTree]:
    """The inverse of :func:`stack`: ``M`` trees whose leaves are views ``leaf[i]``."""
    return [member(tree, i) for i in range(num_members(tree))]


class EnsembleState(NamedTuple):
    """The training state of ``M`` models that step together.

    Attributes:
      params: the stacked parameter tree (leaves ``[M, ...]``).
      opt_state: the stacked optimizer state (leaves ``[M, ...]``; integer
        counters equal across members).
      model_state: the members' stacked layer state (every leaf ``[M, ...]``,
        integer batch counts included; empty for models without it).
      step: number of optimizer steps taken by every member (Python int).
      keys: the members' root keys, one per member (see :func:`fgm.train.step_key`).
    """

    params: TensorTree
    opt_state: TensorTree
    model_state: TensorTree
    step: int
    keys: tuple[random.Key, ...]


def stack_states(states: Sequence[Any]) -> EnsembleState:
    """Stacks single-model states (all at the same step) into one ensemble state.

    Args:
      states: :class:`fgm.train.TrainState` s, ``fgm.models.gan.GANState`` s,
        or any :class:`fgm.types.State` of one type.
    """
    steps = {s.step for s in states}
    if len(steps) != 1:
        raise ValueError(f"members must be at the same step to train together, got steps {sorted(steps)}")
    return EnsembleState(
        params=stack([s.params for s in states]),
        opt_state=stack([s.opt_state for s in states]),
        model_state=stack([s.model_state for s in states]),
        step=steps.pop(),
        keys=tuple(s.key for s in states),
    )


def unstack_states(ensemble: EnsembleState, state_type: type = train.TrainState) -> list:
    """The members as single-model states (tensors are views into the stack).

    Args:
      ensemble: from :func:`stack_states`.
      state_type: the members' NamedTuple type, built by field name
        (:class:`fgm.train.TrainState`, ``fgm.models.gan.GANState``).
    """
    params, opt_states = unstack(ensemble.params), unstack(ensemble.opt_state)
    if not len(params) == len(opt_states) == len(ensemble.keys):
        raise ValueError(f"{len(params)} parameter sets, {len(opt_states)} optimizer states, {len(ensemble.keys)} keys")
    return [
        # member(), not unstack(): an empty layer state has no axis to count
        state_type(params=p, opt_state=o, model_state=member(ensemble.model_state, i), step=ensemble.step, key=k)
        for i, (p, o, k) in enumerate(zip(params, opt_states, ensemble.keys, strict=True))
    ]


def step_keys(ensemble: EnsembleState) -> list[random.Key]:
    """Each member's key for the next step, ``fold_in(key_i, step)`` as :func:`fgm.train.step_key`."""
    return [random.fold_in(k, ensemble.step) for k in ensemble.keys]


# --------------------------------------------------------------------------- vmapped steps


def _is_shared(leaf: torch.Tensor) -> bool:
    """Integer leaves are step counters, read as Python ints inside the update."""
    return not (leaf.is_floating_point() or leaf.is_complex())


def vmap_update(update: train.UpdateFn, input_dims: Any = 0) -> train.UpdateFn:
    """Maps a pure update over the members of stacked trees with ``torch.func.vmap``.

    Args:
      update: ``(params, opt_state, model_state, *inputs) -> (params,
        opt_state, model_state, metrics)`` for one model
        (:class:`fgm.types.UpdateFn`), built so that it composes with
        ``vmap`` (e.g. :func:`fgm.train.make_update` with ``backend="func"``;
        donation works too and updates the stacks in place).
      input_dims: ``vmap``'s ``in_dims`` for the inputs: 0 (default) when
        every input has a leading member axis, ``None`` for inputs that all
        members share, or a tuple with one entry per input.

    Returns:
      The same signature on stacked trees: ``params``, ``model_state`` (every
      leaf, integer batch counts included) and the floating-point leaves of
      ``opt_state`` are ``[M, ...]``; integer leaves of ``opt_state`` are
      ``[M]`` and must be equal across members. Outputs are stacked the same
      way; each metric is ``[M]``.

    Raises:
      ValueError: the members' step counters differ.
    """

    def stacked(params: TensorTree, opt_state: TensorTree, model_state: TensorTree, *inputs):
        leaves, treedef = optree.tree_flatten(opt_state)
        mask = [_is_shared(t) for t in leaves]
        batched, shared = _split(leaves, mask)
        for leaf in shared:
            if leaf.dim() != 1 or not bool((leaf == leaf[0]).all()):
                raise ValueError(f"members must share their step counters, got {leaf.tolist()}")

        def core(params, batched, shared, model_state, *inputs):
            opt_state = optree.tree_unflatten(treedef, _merge(batched, shared, mask))
            params, opt_state, model_state, metrics = update(params, opt_state, model_state, *inputs)
            new_leaves, new_def = optree.tree_flatten(opt_state)
            if new_def != treedef:
                raise ValueError(f"the update changed the optimizer state's structure: {treedef} -> {new_def}")
            return params, *_split(new_leaves, mask), model_state, metrics

        dims = input_dims if isinstance(input_dims, tuple) else (input_dims,) * len(inputs)
        mapped = torch.func.vmap(core, in_dims=(0, 0, None, 0, *dims), out_dims=(0, 0, None, 0, 0))
        params, batched, shared, model_state, metrics = mapped(
            params, batched, [leaf[0] for leaf in shared], model_state, *inputs
        )
        m = num_members(params)
        # Fresh [M] counters, not stride-0 views: a stacked state's leaves are ordinary tensors.
        shared = [leaf.expand(m, *leaf.shape).clone() for leaf in shared]
        return params, optree.tree_unflatten(treedef, _merge(batched, shared, mask)), model_state, metrics

    return stacked


def vmap_value_and_grad(loss_fn: train.LossFn, compile: bool = False) -> Callable:
    """The members' loss and gradient as one ``vmap``-ped function, optionally compiled as one graph.

    ``torch.compile`` cannot trace inside a ``vmap`` (every frame falls back
    to eager), but it traces a ``vmap``: mapping the differentiated part
    first and compiling that gives one graph for all members.

    The shapes are static (``dynamic=False``): every ``vmap``-ped function
    runs the same code object, so a second one (a GAN's other player,
    another model in the process) would otherwise count as a recompile of
    the first with other shapes, be made dynamic, and fail to trace under
    ``vmap`` (symbolic sizes in BatchNorm's backward), falling back to eager.

    Args:
      loss_fn: ``(params, *args) -> (loss, aux)`` of one member, as for
        :func:`fgm.train.value_and_grad` (``aux`` may carry layer state).
      compile: run the mapped function through ``torch.compile``.

    Returns:
      ``fn(params, *args) -> ((loss, aux), grads)`` on stacked trees and
      stacked arguments (every leaf ``[M, ...]``).
    """
    fn = torch.func.vmap(train.value_and_grad(loss_fn, "func"))
    return torch.compile(fn, dynamic=False) if compile else fn


def vmap_apply(optimizer: optim.GradientTransformation, donate: bool = False) -> Callable:
    """``apply(params, opt_state, grads) -> (params, opt_state)``: one optimizer step of every member, eager.

    The optimizer runs under :func:`vmap_update` (step counters shared,
    read as Python ints), outside any compiled graph: a graph would
    specialise on the counters' values.

    Args:
      optimizer: the members' optimizer.
      donate: update the stacked trees (and the gradients) in place
        (see :func:`fgm.train.make_update`).
    """
    donation = {"donate": True} if donate else {}

    def apply(params: TensorTree, opt_state: TensorTree, model_state: TensorTree, grads: TensorTree):
        updates, opt_state = optimizer.update(grads, opt_state, params, **donation)
        return optim.apply_updates(params, updates, donate=donate), opt_state, model_state, {}

    mapped = vmap_update(apply)

    def stacked(params: TensorTree, opt_state: TensorTree, grads: TensorTree) -> tuple[TensorTree, TensorTree]:
        params, opt_state, _, _ = mapped(params, opt_state, {}, grads)
        return params, opt_state

    return stacked


def make_update(
    loss_fn: train.LossFn,
    optimizer: optim.GradientTransformation,
    donate: bool = False,
    compile: bool = False,
) -> train.UpdateFn:
    """An update over stacked members whose gradient is one vmapped (and optionally compiled) function.

    ``vmap_update(train.make_update(loss_fn, optimizer, backend="func"))``
    maps the whole update, optimizer included; ``torch.compile`` cannot trace
    inside that ``vmap`` (every frame falls back to eager). Here the order is
    turned around: the members' loss and gradient are ``vmap``-ped first and
    the resulting function is what ``torch.compile`` traces, into one graph
    for all members (:func:`vmap_value_and_grad`); the optimizer is then
    mapped eagerly (:func:`vmap_apply`: its step counters are Python ints,
    which a compiled graph would specialise on). A GAN's trainer builds its
    two players' updates from the same two pieces.

    Args:
      loss_fn: ``(params, *inputs) -> (loss, metrics)`` of one member.
      optimizer: the members' optimizer.
      donate: update the stacked trees in place (see :func:`fgm.train.make_update`).
      compile: run the vmapped loss and gradient through ``torch.compile``.

    Returns:
      ``update(params, opt_state, model_state, *inputs)`` on stacked trees
      and stacked inputs (``model_state`` passed through), as
      :func:`vmap_update` of the single-model update: the same
      arithmetic, so eager it agrees with that bit for bit and
      compiled to the rounding of the fused kernels.
    """
    grads_of = vmap_value_and_grad(loss_fn, compile)
    apply_stacked = vmap_apply(optimizer, donate)

    def update(
        params: TensorTree, opt_state: TensorTree, model_state: TensorTree, *inputs
    ) -> tuple[TensorTree, TensorTree, TensorTree, train.Metrics]:
        (loss, metrics), grads = grads_of(params, *inputs)
        params, opt_state = apply_stacked(params, opt_state, grads)
        return params, opt_state, model_state, {"loss": loss, **metrics}

    return update


def _split(leaves: list[torch.Tensor], mask: list[bool]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(leaves where not mask, leaves where mask)``."""
    return [t for t, m in zip(leaves, mask, strict=True) if not m], [t for t, m in zip(leaves, mask, strict=True) if m]


def _merge(batched: list[torch.Tensor], shared: list[torch.Tensor], mask: list[bool]) -> list[torch.Tensor]:
    """The inverse of :func:`_split`."""
    b, s = iter(batched), iter(shared)
    return [next(s) if m else next(b) for m in mask]


def make_ensemble_step(
    update: train.UpdateFn,
    make_inputs: train.InputsFn = lambda batch, key: (batch,),
    stacked: bool = False,
) -> EnsembleStepFn:
    """Builds ``step(ensemble, batches, keys) -> (ensemble, metrics)`` for stacked members.

    Args:
      update: one model's pure update (see :func:`vmap_update`), or with
        ``stacked`` an update that already maps over the members (e.g.
        :func:`make_update`, or a trainer's ``make_update(stacked=True)``).
      make_inputs: ``(batch, key) -> inputs`` of one member, as for
        :func:`fgm.train.step_from_update`; it runs outside ``vmap``, once
        per member, and its outputs are stacked.
      stacked: ``update`` is already mapped over the members.

    Returns:
      The step. ``batches`` and ``keys`` have one entry per member (pass the
      same batch ``M`` times for a shared data order); member ``i`` gets
      ``make_inputs(batches[i], keys[i])``. Metrics are ``[M]`` tensors.
      ``ensemble.step`` grows by one per call; the keys are kept.
    """
    mapped = update if stacked else vmap_update(update)

    def step(
        ensemble: EnsembleState, batches: Sequence[Any], keys: Sequence[random.Key]
    ) -> tuple[EnsembleState, train.Metrics]:
        m = len(ensemble.keys)
        if len(batches) != m or len(keys) != m:
            raise ValueError(f"{m} members need {m} batches and {m} keys, got {len(batches)} and {len(keys)}")
        inputs = stack([tuple(make_inputs(b, k)) for b, k in zip(batches, keys, strict=True)])
        params, opt_state, model_state, metrics = mapped(
            ensemble.params, ensemble.opt_state, ensemble.model_state, *inputs
        )
        return ensemble._replace(
            params=params, opt_state=opt_state, model_state=model_state, step=ensemble.step + 1
        ), metrics

    return step


def member_step(trainer: Trainer, num_members: int, compile: bool | str = False) -> Callable:
    """``step(state, inputs_per_member) -> (state, metrics [M])``: a trainer's plain update (M = 1) or its vmap.

    ``state`` is the trainer's state (M = 1) or the stacked :class:`EnsembleState`;
    ``inputs_per_member`` holds one tuple of update inputs per member, and every
    metric comes back with a leading axis of M. The caller drops each state once
    stepped, so the update may reuse its buffers (donation: the same numbers bit
    for bit, no fresh buffers). With ``compile`` and M > 1 it is the trainer's own
    stacked update: all members' gradient compiled as one vmapped graph. M = 1
    passes ``compile`` on (``True``, or ``"cuda_graph"``: see :func:`fgm.train.cuda_graph`).
    """
    if num_members == 1:
        update = trainer.make_update(donate=True, **({"compile": compile} if compile else {}))
    elif compile:
        update = trainer.make_update(donate=True, compile=True, stacked=True)
    else:
        update = vmap_update(trainer.make_update(backend="func", donate=True))

    def step(state, inputs: list[tuple]):
        args = inputs[0] if num_members == 1 else stack(inputs)
        # layer state (BatchNorm statistics, power iterations; empty for most models) goes in and out
        params, opt_state, model_state, metrics = update(state.params, state.opt_state, state.model_state, *args)
        if num_members == 1:
            metrics = {k: v.reshape(1) for k, v in metrics.items()}
        return state._replace(params=params, opt_state=opt_state, model_state=model_state, step=state.step + 1), metrics

    return step
