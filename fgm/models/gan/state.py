"""The state of a GAN's training: both players' parameters, optimizer states and layer state.

:class:`GANState` is what the training loop carries and checkpoints;
:func:`init_state` creates it at step 0 and :func:`variables` reads from
it what sampling and evaluation need (``fgm.models.gan.model``).

**Layer state.** The networks may hold BatchNorm layers or spectral-normalised
layers (``fgm.nn.stateful``); their state lives in ``GANState.model_state =
{"generator": ..., "discriminator": ...}`` (empty dicts for the MLPs), with
the moving average of G under ``"generator_ema"`` when there is one
(``fgm.models.gan.average``). The update takes it and returns it
(``fgm.models.gan.steps``).
"""

from __future__ import annotations

from typing import NamedTuple

from fgm import nn as fnn
from fgm import optim, random
from fgm.models.gan.average import ema_init
from fgm.models.gan.model import EMA, GAN, init, init_model_state
from fgm.tree import TensorTree

__all__ = ["GANState", "init_state", "variables"]


class GANState(NamedTuple):
    """The state of a GAN's training: two players, two optimizer states (flax: fork the state per regime).

    Attributes:
      params: ``{"generator": tree, "discriminator": tree}``.
      opt_state: ``{"generator": g_opt state, "discriminator": d_opt state}``.
      model_state: ``{"generator": tree, "discriminator": tree}``, the layer
        state (BatchNorm statistics, spectral-norm vectors; empty dicts for
        stateless networks). Not differentiated, not seen by the optimizers.
      step: game iterations taken: one per G step, whatever the D steps per G step.
      key: the step-key root (``fgm.train.step_key(state) = fold_in(key, step)``).
    """

    params: dict[str, TensorTree]
    opt_state: dict[str, TensorTree]
    model_state: dict[str, TensorTree]
    step: int
    key: random.Key


def init_state(
    gan: GAN,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    key: random.Key,
    ema: bool = False,
) -> GANState:
    """A step-0 :class:`GANState`; ``key`` is both the initialisation key and the step-key root.

    With ``ema`` the model state also holds
    :func:`~fgm.models.gan.average.ema_init` of the generator's parameters
    under ``"generator_ema"`` (train it with ``build(..., ema_decay=...)``).
    """
    params = init(gan, key)
    opt_state = {"generator": g_opt.init(params["generator"]), "discriminator": d_opt.init(params["discriminator"])}
    model_state = init_model_state(gan, params, key)
    if ema:
        model_state[EMA] = ema_init(params["generator"])
    return GANState(params=params, opt_state=opt_state, model_state=model_state, step=0, key=key)


def variables(state: GANState) -> dict[str, TensorTree]:
    """What ``generate`` and ``evaluate`` read: each network's parameters merged with its layer state.

    Returns:
      ``{"generator": {**params, **state}, "discriminator": {...}}``, flat
      dicts like ``state_dict()`` s; for stateless networks, ``state.params``'s
      contents. With an EMA generator, also ``"generator_ema"``: the averaged
      parameters merged with G's layer state (its BatchNorm statistics are
      G's own, as in StyleGAN's copy of the buffers).
    """
    found = {name: fnn.merge(state.params[name], state.model_state[name]) for name in ("generator", "discriminator")}
    if EMA in state.model_state:
        found[EMA] = fnn.merge(state.model_state[EMA]["params"], state.model_state["generator"])
    return found
