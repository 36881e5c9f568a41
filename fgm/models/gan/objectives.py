r"""Each player's objective: the loss its step differentiates, as a pure function of its own parameters.

.. math::

    L_D(\varphi) = \frac1B \sum_b \ell_D\big(D_\varphi(x_b), D_\varphi(G_\theta(z_b))\big)
                  \;[+\; \lambda\,(\|\nabla D_\varphi(\hat x_b)\| - 1)^2],
    \qquad
    L_G(\theta) = \frac1B \sum_b \ell_G\big(D_\varphi(G_\theta(z_b))\big),

with :math:`(\ell_D, \ell_G)` an :class:`~fgm.models.gan.losses.AdversarialLoss`.
Both networks run in *training mode* in both objectives, as in DCGAN
practice: G's BatchNorm normalises with batch statistics whenever it draws
fakes (also in the D objective, where no gradient reaches G), and every
forward pass moves the running statistics and power-iteration vectors it
touches, in call order (D on the reals, then on the fakes). The
``*_and_state`` forms return that new layer state beside the metrics, in
the ``(loss, (metrics, model_state))`` form ``fgm.train.value_and_grad``
differentiates; the update (``fgm.models.gan.steps``) threads it.
"""

from __future__ import annotations

import torch

from fgm.models.gan.losses import AdversarialLoss, gradient_penalty
from fgm.models.gan.model import GAN
from fgm.tree import TensorTree
from fgm.types import Metrics

__all__ = [
    "discriminator_objective",
    "discriminator_objective_and_state",
    "generator_objective",
    "generator_objective_and_state",
]


def _no_state() -> dict[str, dict]:
    """The layer state of two stateless networks."""
    return {"generator": {}, "discriminator": {}}


def discriminator_objective(
    gan: GAN,
    loss: AdversarialLoss,
    d_params: TensorTree,
    g_params: TensorTree,
    real: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor | None = None,
    model_state: dict[str, TensorTree] | None = None,
) -> tuple[torch.Tensor, Metrics]:
    r"""The D step's loss, a function of the discriminator's parameters.

    .. math::

        L_D(\varphi) = \frac1B \sum_b \ell_D\big(D_\varphi(x_b), D_\varphi(G_\theta(z_b))\big)
                      \;[+\; \lambda\,(\|\nabla D_\varphi(\hat x_b)\| - 1)^2].

    ``G_θ(z)`` is computed without a graph: the D step does not differentiate
    through the generator. Both networks run in training mode; the updated
    layer state is dropped here (:func:`discriminator_objective_and_state`
    returns it).

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      d_params: the discriminator's parameters (differentiated).
      g_params: the generator's parameters (held fixed).
      real: ``[B, C, H, W]`` data in ``[-1, 1]``.
      z: ``[B, d]`` latent noise.
      alpha: ``[B, 1, 1, 1]`` interpolation weights, required when
        ``loss.gradient_penalty > 0``.
      model_state: ``{"generator", "discriminator"}`` layer state; ``None``
        for stateless networks.

    Returns:
      ``(loss, {"d_loss", "d_real", "d_fake"[, "gradient_penalty"]})``;
      ``d_real``/``d_fake`` are the batch means of ``σ(D(x))``/``σ(D(G(z)))``.
    """
    total, (metrics, _) = discriminator_objective_and_state(
        gan, loss, d_params, g_params, model_state or _no_state(), real, z, alpha
    )
    return total, metrics


def discriminator_objective_and_state(
    gan: GAN,
    loss: AdversarialLoss,
    d_params: TensorTree,
    g_params: TensorTree,
    model_state: dict[str, TensorTree],
    real: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[Metrics, dict[str, TensorTree]]]:
    """:func:`discriminator_objective` that also returns the new layer state.

    Training mode throughout: G draws the fakes (its BatchNorm statistics
    move), then D sees the reals, the fakes and (WGAN-GP) the interpolates,
    each forward pass starting from the state the previous one left.

    Returns:
      ``(loss, (metrics, model_state))``, the form ``fgm.train.value_and_grad`` differentiates.
    """
    g_state, d_state = model_state["generator"], model_state["discriminator"]
    with torch.no_grad():
        fake, g_state = gan.generate(g_params, g_state, z, train=True)
    real_logits, d_state = gan.discriminate(d_params, d_state, real, train=True)
    fake_logits, d_state = gan.discriminate(d_params, d_state, fake, train=True)
    d_loss = loss.discriminator(real_logits, fake_logits).mean()
    metrics = {
        "d_loss": d_loss.detach(),
        "d_real": torch.sigmoid(real_logits).mean().detach(),
        "d_fake": torch.sigmoid(fake_logits).mean().detach(),
    }
    total = d_loss
    if loss.gradient_penalty > 0:
        if alpha is None:
            raise ValueError(f"the {loss.name} loss needs interpolation weights alpha")
        state = {"d": d_state}

        def critic(params, x):
            logits, state["d"] = gan.discriminate(params, state["d"], x, train=True)
            return logits

        penalty = gradient_penalty(critic, d_params, real, fake, alpha).mean()
        d_state = state["d"]
        metrics["gradient_penalty"] = penalty.detach()
        total = d_loss + loss.gradient_penalty * penalty
    return total, (metrics, {"generator": g_state, "discriminator": d_state})


def generator_objective(
    gan: GAN,
    loss: AdversarialLoss,
    g_params: TensorTree,
    d_params: TensorTree,
    z: torch.Tensor,
    model_state: dict[str, TensorTree] | None = None,
) -> tuple[torch.Tensor, Metrics]:
    r"""The G step's loss, a function of the generator's parameters.

    .. math:: L_G(\theta) = \frac1B \sum_b \ell_G\big(D_\varphi(G_\theta(z_b))\big),

    differentiated through the (fixed) discriminator into the generator.
    Both networks run in training mode; the updated layer state is dropped
    here (:func:`generator_objective_and_state` returns it).

    Returns:
      ``(loss, {"g_loss"})``.
    """
    g_loss, (metrics, _) = generator_objective_and_state(gan, loss, g_params, d_params, model_state or _no_state(), z)
    return g_loss, metrics


def generator_objective_and_state(
    gan: GAN,
    loss: AdversarialLoss,
    g_params: TensorTree,
    d_params: TensorTree,
    model_state: dict[str, TensorTree],
    z: torch.Tensor,
) -> tuple[torch.Tensor, tuple[Metrics, dict[str, TensorTree]]]:
    """:func:`generator_objective` that also returns the new layer state (G, then D on its fakes).

    Returns:
      ``(loss, (metrics, model_state))``.
    """
    fake, g_state = gan.generate(g_params, model_state["generator"], z, train=True)
    logits, d_state = gan.discriminate(d_params, model_state["discriminator"], fake, train=True)
    g_loss = loss.generator(logits).mean()
    return g_loss, ({"g_loss": g_loss.detach()}, {"generator": g_state, "discriminator": d_state})
