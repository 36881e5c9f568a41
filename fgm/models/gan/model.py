"""The GAN's definition: two networks as pure functions, their parameters and layer state, sampling and evaluation.

A :class:`GAN` is a bundle of pure functions and templates (no tensors);
its parameters live in a separate pytree ``{"generator": ...,
"discriminator": ...}`` (:func:`init`) and its layer state (BatchNorm
statistics, spectral-norm vectors; ``fgm.nn.stateful``) in another
(:func:`init_model_state`). Sampling and evaluation (:func:`generate`,
:func:`evaluate`) run the networks in evaluation mode on *variables*, each
network's parameters merged with its state like a ``state_dict``
(``fgm.models.gan.variables``). When the model state holds a moving
average of G, under the key :data:`EMA` (``fgm.models.gan.average``),
:func:`generate` samples from it.

Data live in ``[-1, 1]`` (:func:`scale_pixels`); the generators end with
a ``tanh`` so their samples do too, and :func:`to_unit_interval` maps them
back to ``[0, 1]`` for display.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from fgm import nn as fnn
from fgm import random
from fgm.models.gan.losses import AdversarialLoss
from fgm.tree import TensorTree

__all__ = [
    "EMA",
    "GAN",
    "discriminator_won_monitor",
    "evaluate",
    "generate",
    "init",
    "init_model_state",
    "interpolation_weights",
    "latent_noise",
    "make_gan",
    "scale_pixels",
    "to_unit_interval",
]

# The model state's entry for the moving average of G's parameters (fgm.models.gan.average).
EMA = "generator_ema"


class GAN(NamedTuple):
    """A GAN definition: pure functions and static shapes, no parameters.

    Attributes:
      generate: ``(g_params, g_state, z [B, d], train=...) -> (x [B, C, H, W]
        in [-1, 1], new g_state)`` (an ``fgm.nn.StatefulApply``).
      discriminate: ``(d_params, d_state, x [B, C, H, W], train=...) ->
        (logits [B], new d_state)``.
      latent_dim: ``d``.
      image_shape: ``(C, H, W)``.
      generator: the generator's architecture template (meta device).
      discriminator: the discriminator's architecture template (meta device).
    """

    generate: fnn.StatefulApply
    discriminate: fnn.StatefulApply
    latent_dim: int
    image_shape: tuple[int, int, int]
    generator: nn.Module
    discriminator: nn.Module


def make_gan(
    build_generator: Callable[[], nn.Module],
    build_discriminator: Callable[[], nn.Module],
    latent_dim: int,
    image_shape: tuple[int, int, int],
) -> GAN:
    """Assembles a GAN from module builders (templates only; no parameters yet).

    Args:
      build_generator: returns a module ``[B, latent_dim] -> [B, C, H, W]``;
        it may hold BatchNorm or spectral-normalised layers (``fgm.nn.stateful``).
      build_discriminator: returns a module ``[B, C, H, W] -> [B, 1]``; likewise.
      latent_dim: ``d``.
      image_shape: ``(C, H, W)``.
    """
    generator, generator_apply = fnn.stateful(build_generator)
    discriminator, discriminator_apply = fnn.stateful(build_discriminator)

    def discriminate(params, state, x, *, train):
        logits, state = discriminator_apply(params, state, x, train=train)
        return logits.squeeze(-1), state

    return GAN(
        generate=generator_apply,
        discriminate=discriminate,
        latent_dim=latent_dim,
        image_shape=tuple(image_shape),
        generator=generator,
        discriminator=discriminator,
    )


def init(gan: GAN, key: random.Key) -> dict[str, TensorTree]:
    """Fresh parameters ``{"generator", "discriminator"}`` from ``key``."""
    k_gen, k_disc = random.split(key)
    return {
        "generator": fnn.init_params(gan.generator, k_gen),
        "discriminator": fnn.init_params(gan.discriminator, k_disc),
    }


def init_model_state(gan: GAN, params: dict[str, TensorTree], key: random.Key) -> dict[str, TensorTree]:
    """Fresh layer state ``{"generator", "discriminator"}`` (``fgm.nn.init_state``; ``{}`` for a stateless network).

    Args:
      gan: the model definition.
      params: from :func:`init` (spectral norm's first power iterations read the weights).
      key: the same key as :func:`init`; the state's keys are the last two of
        ``split(key, 4)``, whose first two are :func:`init`'s.
    """
    k_gen, k_disc = random.split(key, 4)[2:]
    return {
        "generator": fnn.init_state(gan.generator, params["generator"], k_gen),
        "discriminator": fnn.init_state(gan.discriminator, params["discriminator"], k_disc),
    }


def _split_variables(gan: GAN, tree: dict[str, TensorTree]) -> tuple[dict, dict]:
    """``(params, model_state)`` from ``variables(state)`` (or from parameters alone, for stateless networks)."""
    g_params, g_state = fnn.split(gan.generator, tree["generator"])
    d_params, d_state = fnn.split(gan.discriminator, tree["discriminator"])
    return {"generator": g_params, "discriminator": d_params}, {"generator": g_state, "discriminator": d_state}


def latent_noise(gan: GAN, key: random.Key, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``z ~ N(0, I)`` of shape ``[n, d]``, drawn on ``device`` (the same numbers on every device)."""
    return random.normal(key, (n, gan.latent_dim), device=device)


def interpolation_weights(key: random.Key, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``α ~ U[0, 1)`` of shape ``[n, 1, 1, 1]`` for the WGAN-GP interpolates."""
    return random.uniform(key, (n, 1, 1, 1), device=device)


def scale_pixels(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [B, C, H, W]`` levels ``k`` to ``float32`` ``k / 127.5 - 1`` in ``[-1, 1]``."""
    return images.float() / 127.5 - 1.0


def to_unit_interval(x: torch.Tensor) -> torch.Tensor:
    """Maps ``[-1, 1]`` images back to ``[0, 1]`` (clamped) for display."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def generate(gan: GAN, variables: TensorTree, z: torch.Tensor) -> torch.Tensor:
    """Samples for display, in evaluation mode: ``z [N, d] -> [N, C, H, W]`` in ``[0, 1]``.

    Args:
      gan: the model definition.
      variables: from :func:`~fgm.models.gan.state.variables` (for stateless networks, the parameters
        will do); its ``"generator_ema"`` when there is one, else ``"generator"``.
      z: ``[N, d]`` latents.
    """
    g_params, g_state = fnn.split(gan.generator, variables.get(EMA, variables["generator"]))
    return to_unit_interval(gan.generate(g_params, g_state, z, train=False)[0])


def evaluate(
    gan: GAN, loss: AdversarialLoss, variables: TensorTree, real: torch.Tensor, z: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-example game values on held-out data, in evaluation mode (no gradient penalty: it needs a graph).

    Args:
      variables: from :func:`~fgm.models.gan.state.variables` (for stateless networks, the parameters will do).
      real: ``[B, C, H, W]`` data in ``[-1, 1]``.
      z: ``[B, d]`` fixed latent noise.

    Returns:
      ``{"d_loss", "g_loss", "d_real", "d_fake"}``, each ``[B]``; ``d_real``
      and ``d_fake`` are ``σ(D(x))`` and ``σ(D(G(z)))``.
    """
    params, state = _split_variables(gan, variables)
    d_params, d_state = params["discriminator"], state["discriminator"]
    fake, _ = gan.generate(params["generator"], state["generator"], z, train=False)
    real_logits, _ = gan.discriminate(d_params, d_state, real, train=False)
    fake_logits, _ = gan.discriminate(d_params, d_state, fake, train=False)
    return {
        "d_loss": loss.discriminator(real_logits, fake_logits),
        "g_loss": loss.generator(fake_logits),
        "d_real": torch.sigmoid(real_logits),
        "d_fake": torch.sigmoid(fake_logits),
    }


def discriminator_won_monitor(
    threshold: float = 1e-3, patience: int = 200
) -> Callable[[], Callable[[dict, int], str | None]]:
    """A monitor factory: warns when the discriminator has won outright.

    When D rejects every fake with certainty (``d_fake < threshold``) for
    ``patience`` consecutive steps, the generator's gradients have (for the
    minimax loss) vanished or (otherwise) stopped carrying useful signal,
    and training rarely recovers.

    Returns:
      ``factory() -> watch``; ``watch(metrics, step)`` returns a message
      naming the step where the streak started once it is ``patience`` steps
      long (and on every later step of the same streak), else ``None``.
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")

    def factory():
        streak = {"start": None, "length": 0}

        def watch(metrics: dict, step: int) -> str | None:
            if float(metrics["d_fake"]) < threshold:
                if streak["length"] == 0:
                    streak["start"] = step
                streak["length"] += 1
            else:
                streak["start"], streak["length"] = None, 0
            if streak["length"] >= patience:
                # The same text for the whole streak: the runner records each distinct message once per epoch.
                return f"the discriminator has won: D(G(z)) < {threshold:g} on every step since step {streak['start']}"
            return None

        return watch

    return factory
