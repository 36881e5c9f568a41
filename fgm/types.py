"""The types every part of fgm agrees on, declared once.

A *model* in fgm is a :class:`Trainer`: the same six pure pieces for a VAE,
a flow-prior VAE or a GAN (posteriors' ``build -> Transform(init, update)``,
optax's ``GradientTransformation``). Training code talks to nothing else::

    trainer = fgm.models.vae.build(vae, optim.adam(1e-3))     # or fgm.models.gan.build(...)
    state = trainer.init(key)
    update = trainer.make_update()                           # pure tensor core
    params, opt_state, model_state, metrics = update(
        state.params, state.opt_state, state.model_state, *trainer.inputs(batch, step_key))
    state = state._replace(params=params, opt_state=opt_state, model_state=model_state, step=state.step + 1)

The update is a function of tensors only, so ``torch.func.vmap`` maps it over
stacked seeds (:mod:`fgm.ensemble`) and ``torch.compile`` compiles it; the
noise it needs is drawn at the edge by ``inputs`` from an explicit key.

Every model's update has that one signature. ``model_state`` is the layer
state (BatchNorm statistics, spectral-norm vectors; see ``fgm.nn.stateful``):
it goes in beside the parameters and comes back updated, and for a model
without layer state it is an empty tree that comes back unchanged, so no
caller needs to know which kind of model it steps.

Evaluation reads ``trainer.variables(state)`` (the parameters, merged with
the layer state where there is one), never ``state.params`` directly.

A model with a likelihood bound by importance sampling (the IWAE bound of
:mod:`fgm.metrics.nll`) describes itself as an :class:`ImportanceModel`: a
proposal and a log joint (:func:`fgm.models.vae.importance_model` for a VAE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch

from fgm.random import Key
from fgm.tree import TensorTree

__all__ = [
    "ImportanceModel",
    "InputsFn",
    "Metrics",
    "State",
    "Trainer",
    "UpdateFn",
    "params_of",
]

# {name: scalar tensor}: what a step or an evaluation reports.
Metrics = dict[str, torch.Tensor]


class State(Protocol):
    """What every training state has: parameters, optimizer state, layer state, a step count and a key.

    :class:`fgm.train.TrainState` (one optimizer; ``model_state`` empty
    unless given) and :class:`fgm.models.gan.GANState` (one optimizer state
    per player) are the two implementations; both are NamedTuples, so
    ``_replace`` works.
    """

    params: TensorTree
    opt_state: TensorTree
    model_state: TensorTree
    step: int
    key: Key


class UpdateFn(Protocol):
    """``(params, opt_state, model_state, *inputs) -> (params, opt_state, model_state, metrics)``.

    Tensors in, tensors out, deterministic: the noise arrives in ``inputs``.
    ``model_state`` (BatchNorm statistics, spectral-norm vectors; an empty
    tree for a model without layer state) goes in beside the parameters and
    comes back updated; it is not differentiated and not seen by the
    optimizer. ``metrics`` holds ``"loss"`` (what the NaN guard watches) and
    the model's own scalars.
    """

    def __call__(
        self, params: TensorTree, opt_state: TensorTree, model_state: TensorTree, *inputs: Any
    ) -> tuple[TensorTree, TensorTree, TensorTree, Metrics]: ...


def params_of(state: State) -> TensorTree:
    """``state.params``: what a stateless model's evaluation functions read (:attr:`Trainer.variables`)."""
    return state.params


class MakeUpdateFn(Protocol):
    """Builds an :class:`UpdateFn`.

    Args:
      backend: ``"autograd"`` (fastest eager) or ``"func"`` (composes with ``vmap``).
      donate: reuse the incoming buffers for the outputs (bitwise the same results).
      compile: run the differentiated part through ``torch.compile``
        (``True``) or replay it as one CUDA graph (``"cuda_graph"``,
        :func:`fgm.train.cuda_graph`; one model on a GPU, not ``stacked``).
      stacked: the update maps over stacked members (a seed ensemble,
        :mod:`fgm.ensemble`): leaves ``[M, ...]``, inputs ``[M, ...]``. With
        ``compile`` the members' gradient is compiled as one vmapped graph
        (:func:`fgm.ensemble.make_update`); a model that cannot do that
        raises ``ValueError``. Optional for a trainer of your own: the
        runner asks for it only for ``--compile --seeds N`` (eager seeds
        ``vmap`` the single-model update with ``backend="func"``).
    """

    def __call__(
        self, *, backend: str = "autograd", donate: bool = False, compile: bool | str = False, stacked: bool = False
    ) -> UpdateFn: ...


class InputsFn(Protocol):
    """``(batch, key) -> inputs``: the update's inputs, its noise drawn from ``key``."""

    def __call__(self, batch: Any, key: Key) -> tuple: ...


class Trainer(NamedTuple):
    """One model's training pieces: the only surface training code uses.

    Attributes:
      init: ``key -> state`` at step 0 (a :class:`State`; its ``key`` is the
        step-key root, ``fgm.train.step_key``).
      make_update: see :class:`MakeUpdateFn`.
      inputs: see :class:`InputsFn`; ``batch`` is in model-input form.
      evaluate: ``(variables, x [B, ...], key) -> {name: [B]}`` per-example
        values on held-out data (averaged by the caller).
      generate: ``(variables, noise [N, ...]) -> images [N, C, H, W]`` in ``[0, 1]``.
      noise: ``(key, n, device="cpu") -> noise [n, ...]`` for :attr:`generate`,
        drawn on ``device`` (the same numbers on every device).
      variables: ``state -> variables``, the tree :attr:`evaluate` and
        :attr:`generate` read: ``state.params`` for a model without layer
        state (:func:`params_of`, the default), the parameters merged with
        the layer state for one with it.
    """

    init: Any
    make_update: MakeUpdateFn
    inputs: InputsFn
    evaluate: Any
    generate: Any
    noise: Any
    variables: Any = params_of


class ImportanceModel(NamedTuple):
    """A latent-variable model as importance sampling sees it: a proposal and a log joint.

    What :mod:`fgm.metrics.nll` needs to bound ``log p(x)`` (the IWAE bound)
    of any model, not only a VAE (:func:`fgm.models.vae.importance_model`
    builds one from a VAE). The noise is an input: ``sample`` is
    deterministic, so the estimator maps it over the ``K`` importance
    samples with ``torch.func.vmap``.

    Attributes:
      proposal: ``(params, x [B, ...]) -> q``: the proposal's parameters for
        the batch (a tree of ``[B, ...]`` tensors, e.g. the encoder's
        ``(mean, log_var)``), computed once and shared by every sample.
      sample: ``(q, eps [B, *latent_shape]) -> (z [B, *latent_shape], log q(z|x) [B])``:
        pushes standard-normal noise to a draw of the proposal and scores it.
      log_joint: ``(params, x, z) -> [B]``: ``log p(x, z) = log p(x|z) + log p(z)``.
      latent_shape: the shape of one data point's ``z`` and ``eps``, e.g. ``(d,)``.
    """

    proposal: Callable[[TensorTree, torch.Tensor], TensorTree]
    sample: Callable[[TensorTree, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    log_joint: Callable[[TensorTree, torch.Tensor, torch.Tensor], torch.Tensor]
    latent_shape: tuple[int, ...]
