"""The adversarial losses and the two objectives, against formulas written out here in float64.

A tiny stand-in model (``generate``/``discriminate`` of plain tensors) keeps these independent of
the network builders and fast; ``tests/test_gan_penalty.py`` covers the gradient penalty.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from fgm.models import gan as G

LOGITS = torch.tensor([-30.0, -3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5, 30.0], dtype=torch.float64)
OTHER = torch.tensor([2.0, -0.5, 1.5, -2.0, 0.0, 0.75, -1.0, 1.0, -30.0], dtype=torch.float64)


def log_sigmoid(t):
    return -torch.log1p(torch.exp(-t))  # accurate at ±30 in float64, unlike log(sigmoid(t))


def test_bce_discriminator_loss_is_the_cross_entropy():
    want = -log_sigmoid(LOGITS) - log_sigmoid(-OTHER)  # log(1 - σ(t)) = log σ(-t)
    torch.testing.assert_close(G.bce_discriminator_loss(LOGITS, OTHER), want, rtol=1e-12, atol=1e-12)
    assert G.bce_discriminator_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(2 * math.log(2))


def test_generator_losses():
    torch.testing.assert_close(G.non_saturating_generator_loss(LOGITS), -log_sigmoid(LOGITS), rtol=1e-12, atol=0)
    torch.testing.assert_close(G.minimax_generator_loss(LOGITS), log_sigmoid(-LOGITS), rtol=1e-12, atol=0)
    assert torch.equal(G.critic_generator_loss(LOGITS), -LOGITS)


def test_hinge_and_wasserstein_critic_losses():
    want = torch.clamp(1 - LOGITS, min=0) + torch.clamp(1 + OTHER, min=0)
    assert torch.equal(G.hinge_discriminator_loss(LOGITS, OTHER), want)
    assert torch.equal(G.wasserstein_critic_loss(LOGITS, OTHER), OTHER - LOGITS)
    # the margins sit at exactly ±1
    assert G.hinge_discriminator_loss(torch.tensor([1.0]), torch.tensor([-1.0])).item() == 0.0
    assert G.hinge_discriminator_loss(torch.tensor([0.5]), torch.tensor([-0.5])).item() == 1.0


def test_losses_are_paired_as_documented():
    assert G.non_saturating() == ("non_saturating", G.bce_discriminator_loss, G.non_saturating_generator_loss, 0.0)
    assert G.minimax() == ("minimax", G.bce_discriminator_loss, G.minimax_generator_loss, 0.0)
    assert G.hinge() == ("hinge", G.hinge_discriminator_loss, G.critic_generator_loss, 0.0)
    assert G.wgan_gp() == ("wgan_gp", G.wasserstein_critic_loss, G.critic_generator_loss, 10.0)
    assert G.wgan_gp(2.5).gradient_penalty == 2.5 and G.wgan_gp(0.5).gradient_penalty == 0.5
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="must be > 0"):
            G.wgan_gp(bad)


def test_get_loss_by_name():
    for name in ("non_saturating", "minimax", "hinge"):
        assert G.get_loss(name) == G.LOSSES[name]()
        assert G.get_loss(name, gp_weight=3.0).gradient_penalty == 0.0
    assert G.get_loss("wgan_gp") == G.wgan_gp(10.0)
    assert G.get_loss("wgan_gp", gp_weight=3.0) == G.wgan_gp(3.0)
    choices = "hinge, minimax, non_saturating, wgan_gp"
    with pytest.raises(ValueError, match=f"unknown GAN loss 'wgan'; choose from: {choices}"):
        G.get_loss("wgan")


def toy_gan():
    """``G(z) = a·z`` as a [B, 1, 1, 2] image; ``D(x) = w·x + c·‖x‖²`` (non-linear, so the penalty varies)."""
    generate = lambda p, z: (p["a"] * z).view(-1, 1, 1, 2)  # noqa: E731
    discriminate = lambda p, x: x.flatten(1) @ p["w"] + p["c"] * x.flatten(1).square().sum(1)  # noqa: E731
    return SimpleNamespace(
        # the GAN's stateful surface (no layer state here), and the plain maps the references use
        generate=lambda p, state, z, train: (generate(p, z), state),
        discriminate=lambda p, state, x, train: (discriminate(p, x), state),
        plain_generate=generate,
        plain_discriminate=discriminate,
    )


def toy_inputs():
    g_params = {"a": torch.tensor([1.5, -0.5], dtype=torch.float64)}
    d_params = {"w": torch.tensor([0.7, -1.2], dtype=torch.float64), "c": torch.tensor(0.3, dtype=torch.float64)}
    real = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.25, -0.75]], dtype=torch.float64).view(3, 1, 1, 2)
    z = torch.tensor([[0.5, 1.0], [-2.0, 0.25], [1.0, -1.0]], dtype=torch.float64)
    alpha = torch.tensor([0.2, 0.9, 0.6], dtype=torch.float64).view(3, 1, 1, 1)
    return g_params, d_params, real, z, alpha


@pytest.mark.parametrize(
    "name, weight", [("non_saturating", 4.0), ("minimax", 4.0), ("hinge", 4.0), ("wgan_gp", 4.0), ("wgan_gp", 0.5)]
)
def test_discriminator_objective(name, weight):
    gan, loss = toy_gan(), G.get_loss(name, gp_weight=weight)
    g_params, d_params, real, z, alpha = toy_inputs()
    fake = gan.plain_generate(g_params, z)
    real_logits, fake_logits = gan.plain_discriminate(d_params, real), gan.plain_discriminate(d_params, fake)
    d_loss = loss.discriminator(real_logits, fake_logits).mean()
    total, metrics = G.discriminator_objective(gan, loss, d_params, g_params, real, z, alpha)
    torch.testing.assert_close(metrics["d_loss"], d_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(metrics["d_real"], torch.sigmoid(real_logits).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(metrics["d_fake"], torch.sigmoid(fake_logits).mean(), rtol=1e-12, atol=0)
    if name == "wgan_gp":
        penalty = G.gradient_penalty(gan.plain_discriminate, d_params, real, fake, alpha).mean()
        assert penalty > 0.1
        torch.testing.assert_close(metrics["gradient_penalty"], penalty, rtol=1e-12, atol=0)
        torch.testing.assert_close(total, d_loss + weight * penalty, rtol=1e-12, atol=0)
        with pytest.raises(ValueError, match="needs interpolation weights alpha"):
            G.discriminator_objective(gan, loss, d_params, g_params, real, z)
    else:
        assert set(metrics) == {"d_loss", "d_real", "d_fake"}
        torch.testing.assert_close(total, d_loss, rtol=1e-12, atol=0)
    assert all(not m.requires_grad for m in metrics.values())


def test_discriminator_objective_differentiates_d_only():
    gan, loss = toy_gan(), G.get_loss("wgan_gp")
    g_params, d_params, real, z, alpha = toy_inputs()
    g_params = {"a": g_params["a"].clone().requires_grad_(True)}
    d_params = {k: v.clone().requires_grad_(True) for k, v in d_params.items()}
    total, _ = G.discriminator_objective(gan, loss, d_params, g_params, real, z, alpha)
    grads = torch.autograd.grad(total, [*d_params.values(), g_params["a"]], allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:-1])
    assert grads[-1] is None  # no graph through the generator


@pytest.mark.parametrize("name", ["non_saturating", "minimax", "hinge"])
def test_generator_objective(name):
    gan, loss = toy_gan(), G.get_loss(name)
    g_params, d_params, _, z, _ = toy_inputs()
    g_params = {"a": g_params["a"].clone().requires_grad_(True)}
    want = loss.generator(gan.plain_discriminate(d_params, gan.plain_generate(g_params, z))).mean()
    g_loss, metrics = G.generator_objective(gan, loss, g_params, d_params, z)
    torch.testing.assert_close(g_loss, want, rtol=1e-12, atol=0)
    assert set(metrics) == {"g_loss"} and not metrics["g_loss"].requires_grad
    torch.testing.assert_close(metrics["g_loss"], want.detach(), rtol=1e-12, atol=0)
    (grad,) = torch.autograd.grad(g_loss, g_params["a"])
    (want_grad,) = torch.autograd.grad(want, g_params["a"])
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=0)
