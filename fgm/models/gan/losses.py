r"""The adversarial losses: pairs of per-example losses, pure functions of discriminator logits.

The discriminator returns one *logit* per image, ``D(x) ∈ ℝ``; for the
losses derived from a classifier, ``σ(D(x))`` is its probability that ``x``
is real. An :class:`AdversarialLoss` holds the discriminator's loss
``(real_logits [B], fake_logits [B]) -> [B]``, the generator's
``fake_logits [B] -> [B]`` and, for WGAN-GP, the weight of the
:func:`gradient_penalty`. :data:`LOSSES` maps each name to its
constructor and :func:`get_loss` builds one by name; ``docs/gan.md``
has the maths and the choice of default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from fgm.tree import TensorTree

__all__ = [
    "LOSSES",
    "AdversarialLoss",
    "bce_discriminator_loss",
    "critic_generator_loss",
    "get_loss",
    "gradient_penalty",
    "hinge",
    "hinge_discriminator_loss",
    "minimax",
    "minimax_generator_loss",
    "non_saturating",
    "non_saturating_generator_loss",
    "wasserstein_critic_loss",
    "wgan_gp",
]


class AdversarialLoss(NamedTuple):
    """A pair of per-example losses, functions of discriminator logits only.

    Attributes:
      name: the registry name.
      discriminator: ``(real_logits [B], fake_logits [B]) -> [B]``; example
        ``b`` pairs real image ``b`` with fake image ``b``, and the D loss is
        the batch mean.
      generator: ``fake_logits [B] -> [B]``.
      gradient_penalty: weight ``λ`` of the WGAN-GP penalty the D step adds
        (:func:`gradient_penalty`); 0 for the other losses.
    """

    name: str
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    gradient_penalty: float = 0.0


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""The classifier's cross-entropy, shared by the minimax and non-saturating games.

    .. math::

        L_D = -\log \sigma(D(x)) - \log\big(1 - \sigma(D(G(z)))\big)
            = \operatorname{softplus}(-D(x)) + \operatorname{softplus}(D(G(z))),

    using :math:`-\log\sigma(t) = \operatorname{softplus}(-t)` and
    :math:`-\log(1-\sigma(t)) = \operatorname{softplus}(t)`, which stay finite
    for any logit (``log(sigmoid(t))`` underflows to ``-inf`` near ``t ≈ -104``).
    At ``D ≡ 0`` it is ``2 log 2``.

    Args:
      real_logits: ``[B]`` ``D(x)``.
      fake_logits: ``[B]`` ``D(G(z))``.

    Returns:
      ``[B]`` per-example losses.
    """
    return F.softplus(-real_logits) + F.softplus(fake_logits)


def non_saturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_G = -log σ(D(G(z))) = softplus(-D(G(z)))``, ``[B] -> [B]``.

    Its gradient in the logit is :math:`-(1 - \sigma(D(G(z))))`, close to
    ``-1`` exactly when the discriminator rejects the fakes, so G learns
    fastest when it is worst (unlike the minimax loss).
    """
    return F.softplus(-fake_logits)


def minimax_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_G = log(1 - σ(D(G(z)))) = -softplus(D(G(z)))``, ``[B] -> [B]``.

    The original zero-sum game: G minimises exactly what D maximises. Its
    gradient in the logit, :math:`-\sigma(D(G(z)))`, vanishes when D confidently
    rejects the fakes (early training), which is why it saturates. Kept for
    reference and for experiments.
    """
    return -F.softplus(fake_logits)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_D = relu(1 - D(x)) + relu(1 + D(G(z)))``, ``[B], [B] -> [B]``.

    A margin loss: real logits above ``+1`` and fake logits below ``-1``
    contribute nothing, so D stops pushing on examples it already separates.
    """
    return F.relu(1.0 - real_logits) + F.relu(1.0 + fake_logits)


def critic_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_G = -D(G(z))``, ``[B] -> [B]`` (hinge and Wasserstein games)."""
    return -fake_logits


def wasserstein_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_D = D(G(z)) - D(x)``, ``[B], [B] -> [B]``: minus the Kantorovich–Rubinstein estimate.

    Over 1-Lipschitz critics, :math:`\max_D \mathbb E[D(x)] - \mathbb E[D(G(z))]`
    is the Wasserstein-1 distance; the Lipschitz constraint is imposed softly
    by :func:`gradient_penalty`.
    """
    return fake_logits - real_logits


def gradient_penalty(
    discriminate: Callable[[TensorTree, torch.Tensor], torch.Tensor],
    d_params: TensorTree,
    real: torch.Tensor,
    fake: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    r"""The WGAN-GP penalty :math:`(\|\nabla_{\hat x} D(\hat x)\|_2 - 1)^2` per example.

    :math:`\hat x = \alpha x + (1 - \alpha) G(z)` lies on the segment between a
    real and a fake image; the optimal critic has unit gradient norm there
    (Gulrajani et al., 2017). The input gradient is taken with
    ``create_graph=True`` so the penalty itself can be differentiated with
    respect to ``d_params``. Each output depends on its own input only, so
    the gradient of the *sum* gives every per-example gradient at once.

    Args:
      discriminate: ``(params, x [B, C, H, W]) -> [B]`` (a closure over the
        layer state for a stateful discriminator).
      d_params: the discriminator's parameters.
      real: ``[B, C, H, W]``.
      fake: ``[B, C, H, W]`` (no graph to the generator needed).
      alpha: ``[B, 1, 1, 1]`` weights in ``[0, 1]``, drawn outside (a key at the edge).

    Returns:
      ``[B]`` penalties.
    """
    x_hat = (alpha * real + (1.0 - alpha) * fake).detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(discriminate(d_params, x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0) ** 2


def non_saturating() -> AdversarialLoss:
    """Cross-entropy D, ``-log σ(D(G(z)))`` G (the default; see ``docs/gan.md``)."""
    return AdversarialLoss("non_saturating", bce_discriminator_loss, non_saturating_generator_loss)


def minimax() -> AdversarialLoss:
    """Cross-entropy D, ``log(1 - σ(D(G(z))))`` G: the original zero-sum game."""
    return AdversarialLoss("minimax", bce_discriminator_loss, minimax_generator_loss)


def hinge() -> AdversarialLoss:
    """Hinge D, ``-D(G(z))`` G (as in SAGAN / BigGAN)."""
    return AdversarialLoss("hinge", hinge_discriminator_loss, critic_generator_loss)


def wgan_gp(weight: float = 10.0) -> AdversarialLoss:
    """Wasserstein critic with a gradient penalty of weight ``weight`` (λ = 10 in the paper)."""
    if not weight > 0:
        raise ValueError(f"the gradient-penalty weight must be > 0, got {weight}")
    return AdversarialLoss("wgan_gp", wasserstein_critic_loss, critic_generator_loss, float(weight))


LOSSES: dict[str, Callable[..., AdversarialLoss]] = {
    "non_saturating": non_saturating,
    "hinge": hinge,
    "minimax": minimax,
    "wgan_gp": wgan_gp,
}


def get_loss(name: str, gp_weight: float = 10.0) -> AdversarialLoss:
    """The adversarial loss called ``name``; ``gp_weight`` is used by ``wgan_gp`` only.

    Raises:
      ValueError: unknown name (the message lists the choices).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}; choose from: {', '.join(sorted(LOSSES))}")
    return wgan_gp(gp_weight) if name == "wgan_gp" else LOSSES[name]()
