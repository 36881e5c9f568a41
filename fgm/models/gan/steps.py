"""Training a GAN: one game iteration as a pure update of tensors, its inputs, and the model's Trainer.

Training is a two-player game played with *alternating* steps:

    D step:  φ ← φ - η ∇_φ L_D(φ; x, G_θ(z)),      z ~ N(0, I)
    G step:  θ ← θ - η ∇_θ L_G(θ; D_φ),            z' ~ N(0, I)

(the objectives are in ``fgm.models.gan.objectives``). Each player's step
updates its own parameters and optimizer state and hands the other
player's subtrees through untouched (the very same tensor objects). One
game iteration is ``d_steps_per_g_step`` D steps, then a G step, then
(with ``ema_decay``) the moving average of G.

:func:`build` is the one path to train a GAN: its :class:`fgm.types.Trainer`
has ``inputs`` (:func:`gan_inputs`: the real batches and the noise, drawn
from a key at the edge) and ``make_update(backend=..., donate=...,
compile=..., stacked=...)``, the pure update of tensors that ``fgm.train``,
``fgm.ensemble`` (``vmap`` over a seed ensemble) and the runner call.
:func:`make_gan_step` joins the two into ``step(state, batch, key) ->
(state, metrics)`` for a research loop.
"""

from __future__ import annotations

import functools

import torch

from fgm import ensemble, optim, random, train
from fgm.models.gan.average import ema_update
from fgm.models.gan.losses import AdversarialLoss
from fgm.models.gan.model import EMA, GAN, evaluate, generate, interpolation_weights, latent_noise
from fgm.models.gan.objectives import discriminator_objective_and_state, generator_objective_and_state
from fgm.models.gan.state import init_state, variables
from fgm.tree import TensorTree
from fgm.types import Trainer, UpdateFn

__all__ = ["build", "gan_inputs", "make_gan_step"]


def gan_inputs(gan: GAN, loss: AdversarialLoss, d_steps_per_g_step: int = 1) -> train.InputsFn:
    """The data and noise of one game iteration (the Trainer's ``inputs``).

    One iteration consumes ``d_steps_per_g_step`` real batches, one per D
    step, passed together as one batch of ``d_steps_per_g_step * B`` images:
    a D step never sees the same real images twice. The key is split into
    ``d_steps_per_g_step + 1`` keys, one per player step; each D key is split
    again into the latents' and (WGAN-GP only) the interpolation weights' keys.
    The G step draws ``B`` latents.

    Returns:
      ``inputs(batch [d_steps * B, C, H, W], key) -> (reals, d_noise, z_g)``
      with ``reals`` a tuple of one ``[B, C, H, W]`` batch per D step,
      ``d_noise`` a tuple of one ``(z [B, d],)`` or ``(z, alpha [B, 1, 1, 1])``
      per D step and ``z_g`` the G step's ``[B, d]`` latents.

    Raises:
      ValueError: ``d_steps_per_g_step < 1``, or (when called) a batch whose
        size is not a multiple of ``d_steps_per_g_step``.
    """
    if d_steps_per_g_step < 1:
        raise ValueError(f"d_steps_per_g_step must be >= 1, got {d_steps_per_g_step}")

    def inputs(batch: torch.Tensor, key: random.Key) -> tuple:
        if batch.shape[0] % d_steps_per_g_step:
            raise ValueError(
                f"a batch of {batch.shape[0]} images cannot be split into {d_steps_per_g_step} equal D-step batches"
            )
        reals = tuple(batch.chunk(d_steps_per_g_step))
        n = reals[0].shape[0]
        *d_keys, g_key = random.split(key, d_steps_per_g_step + 1)
        d_noise = []
        for d_key in d_keys:
            k_z, k_alpha = random.split(d_key)
            alpha = (interpolation_weights(k_alpha, n, batch.device),) if loss.gradient_penalty > 0 else ()
            d_noise.append((latent_noise(gan, k_z, n, batch.device), *alpha))
        return reals, tuple(d_noise), latent_noise(gan, g_key, n, batch.device)

    return inputs


# --------------------------------------------------------------------------- one player's step


def _apply(optimizer: optim.GradientTransformation, donate: bool = False):
    """``apply(params, opt_state, grads) -> (params, opt_state)``: one optimizer step of one player."""
    donation = {"donate": True} if donate else {}

    def apply(params: TensorTree, opt_state: TensorTree, grads: TensorTree) -> tuple[TensorTree, TensorTree]:
        updates, opt_state = optimizer.update(grads, opt_state, params, **donation)
        return optim.apply_updates(params, updates, donate=donate), opt_state

    return apply


def _update_player(params: dict, opt_state: dict, player: str, grads: TensorTree, apply) -> tuple[dict, dict]:
    """Applies ``apply`` to one player's subtrees; the other's are passed through as they are."""
    player_params, player_opt = apply(params[player], opt_state[player], grads)
    return {**params, player: player_params}, {**opt_state, player: player_opt}


def _discriminator_objective(gan: GAN, loss: AdversarialLoss):
    def objective(d_params, g_params, model_state, real, z, alpha=None):
        return discriminator_objective_and_state(gan, loss, d_params, g_params, model_state, real, z, alpha)

    return objective


def _generator_objective(gan: GAN, loss: AdversarialLoss):
    def objective(g_params, d_params, model_state, z):
        return generator_objective_and_state(gan, loss, g_params, d_params, model_state, z)

    return objective


def _grad_fn(objective, backend: str, compile: bool | str = False):
    """``value_and_grad`` of a player's objective; compiled, it is traced through ``torch.func`` (one graph).

    Static shapes: both players' functions run one code object, so the second
    would otherwise count as a recompile of the first and be made dynamic.
    """
    if compile == "cuda_graph":  # the layer state comes back with the metrics, so it is copied out too
        return train.cloned_metrics(train.cuda_graph(train.value_and_grad(objective, backend)))
    if compile:
        return torch.compile(train.value_and_grad(objective, "func"), dynamic=False)
    return train.value_and_grad(objective, backend)


# --------------------------------------------------------------------------- one game iteration


def _check_options(loss: AdversarialLoss, backend: str, compile: bool, ema_decay: float | None) -> None:
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if (backend == "func" or compile) and loss.gradient_penalty > 0:
        raise ValueError(
            f"the {loss.name} loss needs the autograd backend: its gradient penalty calls torch.autograd.grad"
        )


def _check_inputs(reals: tuple, d_noise: tuple, model_state: dict, ema_decay: float | None) -> None:
    if len(reals) != len(d_noise):
        raise ValueError(f"{len(reals)} real batches for {len(d_noise)} D steps")
    if (EMA in model_state) != (ema_decay is not None):
        raise ValueError(
            "the state holds an average of G but the update has no ema_decay"
            if EMA in model_state
            else f"ema_decay={ema_decay} but the state holds no average of G (init_state(..., ema=True))"
        )


def _game(d_grad, g_grad, d_apply, g_apply, average_update, ema_decay: float | None) -> UpdateFn:
    """One game iteration from its pieces: each player's gradient (with layer state) and optimizer step, the average.

    The same loop serves one model and, with every piece mapped over the
    members, a seed ensemble (see :func:`_make_update`).
    """

    def update(params, opt_state, model_state, reals: tuple, d_noise: tuple, z_g: torch.Tensor):
        _check_inputs(reals, d_noise, model_state, ema_decay)
        average = model_state.get(EMA)
        model_state = {"generator": model_state["generator"], "discriminator": model_state["discriminator"]}
        for real, noise in zip(reals, d_noise, strict=True):
            # noise: (z,) or (z, alpha); no None argument, which vmap cannot map
            (_, (d_metrics, model_state)), grads = d_grad(
                params["discriminator"], params["generator"], model_state, real, *noise
            )
            params, opt_state = _update_player(params, opt_state, "discriminator", grads, d_apply)
        (_, (g_metrics, model_state)), grads = g_grad(params["generator"], params["discriminator"], model_state, z_g)
        params, opt_state = _update_player(params, opt_state, "generator", grads, g_apply)
        if average is not None:
            model_state[EMA] = average_update(average, params["generator"])
        metrics = {"loss": d_metrics["d_loss"] + g_metrics["g_loss"], **d_metrics, **g_metrics}
        return params, opt_state, model_state, metrics

    return update


def _make_update(
    gan: GAN,
    loss: AdversarialLoss,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    ema_decay: float | None = None,
    *,
    backend: str = "autograd",
    donate: bool = False,
    compile: bool | str = False,
    stacked: bool = False,
) -> UpdateFn:
    """The Trainer's ``make_update``: D step(s), then a G step, then the average of G (see :func:`build`).

    Stacked and compiled, the order of ``vmap`` and ``torch.compile`` is
    turned around as in :func:`fgm.ensemble.make_update` (``torch.compile``
    cannot trace inside a ``vmap``): each player's objective and gradient,
    layer state in and out, is ``vmap``-ped over the members and compiled
    as one graph per player; the optimizers (step counters shared) and the
    average of G are mapped eagerly. The same arithmetic as the whole
    update ``vmap``-ped, so it agrees with that to the fused kernels' rounding.
    """
    train.check_compile_mode(compile, stacked)
    if stacked and not compile:
        return ensemble.vmap_update(_make_update(gan, loss, g_opt, d_opt, ema_decay, backend="func", donate=donate))
    _check_options(loss, "func" if stacked else backend, compile, ema_decay)
    d_objective, g_objective = _discriminator_objective(gan, loss), _generator_objective(gan, loss)
    average = functools.partial(ema_update, decay=ema_decay)
    if stacked:
        return _game(
            ensemble.vmap_value_and_grad(d_objective, compile=True),
            ensemble.vmap_value_and_grad(g_objective, compile=True),
            ensemble.vmap_apply(d_opt, donate),
            ensemble.vmap_apply(g_opt, donate),
            torch.func.vmap(average),
            ema_decay,
        )
    return _game(
        _grad_fn(d_objective, backend, compile),
        _grad_fn(g_objective, backend, compile),
        _apply(d_opt, donate),
        _apply(g_opt, donate),
        average,
        ema_decay,
    )


# --------------------------------------------------------------------------- the public path


def build(
    gan: GAN,
    loss: AdversarialLoss,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    d_steps_per_g_step: int = 1,
    ema_decay: float | None = None,
) -> Trainer:
    """The GAN's training pieces (:class:`fgm.types.Trainer`): one game iteration per update.

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      g_opt: the generator's optimizer (its schedule counts game iterations).
      d_opt: the discriminator's optimizer (its schedule counts D updates,
        ``d_steps_per_g_step`` per iteration: give it ``d_steps_per_g_step``
        times the G schedule's length so that both decay together over the run).
      d_steps_per_g_step: D steps before each G step (e.g. 5 for WGAN-GP); each
        takes its own real batch, so an update's batch holds
        ``d_steps_per_g_step * B`` images (see :func:`gan_inputs`).
      ema_decay: β of a moving average of G (``fgm.models.gan.average.ema_update``)
        moved after every G step; the state then carries it and ``generate``
        samples from it. ``None``: no average.

    Returns:
      ``init(key) -> GANState``; ``make_update(backend="autograd", donate=False,
      compile=False, stacked=False) -> update(params, opt_state, model_state,
      reals, d_noise, z_g) -> (params, opt_state, model_state, metrics)`` (a
      ``fgm.types.UpdateFn``, the one update signature) on the inputs of
      ``inputs`` (:func:`gan_inputs`), with the metrics of :func:`make_gan_step`
      (``backend`` as in :func:`fgm.train.value_and_grad`, ``"func"`` to
      ``vmap``, not for WGAN-GP; ``donate``: in place, as in
      :func:`fgm.train.make_update`; ``compile``: each player's objective and
      gradient through ``torch.compile``, the optimizers and the average
      eager; ``stacked``: over a seed ensemble's stacked trees, with
      ``compile`` each player's gradient ``vmap``-ped over the members and
      compiled as one graph);
      ``evaluate(variables, x, key)`` as ``fgm.models.gan.evaluate`` with
      latents from ``key``; ``generate(variables, z)`` in ``[0, 1]``;
      ``noise(key, n, device="cpu") -> z [n, d]``; ``variables`` as
      ``fgm.models.gan.variables``.

    Raises:
      ValueError: ``d_steps_per_g_step < 1``; (from ``make_update``) WGAN-GP
        with the ``"func"`` backend, ``compile`` or ``stacked``, ``ema_decay``
        outside ``[0, 1)``; (from the update) a
        state with an average and no ``ema_decay``, or the other way round.
    """
    return Trainer(
        init=lambda key: init_state(gan, g_opt, d_opt, key, ema=ema_decay is not None),
        make_update=functools.partial(_make_update, gan, loss, g_opt, d_opt, ema_decay),
        inputs=gan_inputs(gan, loss, d_steps_per_g_step),
        evaluate=lambda variables, x, key: evaluate(
            gan, loss, variables, x, latent_noise(gan, key, x.shape[0], x.device)
        ),
        generate=lambda variables, z: generate(gan, variables, z),
        noise=lambda key, n, device="cpu": latent_noise(gan, key, n, device),
        variables=variables,
    )


def make_gan_step(
    gan: GAN,
    loss: AdversarialLoss,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    d_steps_per_g_step: int = 1,
    donate: bool = False,
    ema_decay: float | None = None,
) -> train.StepFn:
    """``step(state, batch, key) -> (state, metrics)``: :func:`build`'s update on its inputs, for a research loop.

    ``batch`` holds ``d_steps_per_g_step`` real batches of ``B`` images, one
    per D step; each D step draws its own latents (and WGAN-GP weights), the
    G step draws ``B`` fresh latents (:func:`gan_inputs`).
    ``state.step`` grows by one per call.

    Args:
      gan, loss, g_opt, d_opt, d_steps_per_g_step, ema_decay: as in :func:`build`.
      donate: the step consumes its input state (see :func:`fgm.train.make_step`).

    Returns:
      The step function. Its metrics (detached scalars) are ``d_loss``,
      ``d_real``, ``d_fake`` (from the last D step, before its update, so
      ``d_fake`` is measured before the G step), ``g_loss``, and ``loss =
      d_loss + g_loss`` for the runner's NaN guard (plus ``gradient_penalty``
      for WGAN-GP).
    """
    trainer = build(gan, loss, g_opt, d_opt, d_steps_per_g_step, ema_decay)
    return train.step_from_update(trainer.make_update(donate=donate), trainer.inputs)
