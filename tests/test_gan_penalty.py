"""WGAN-GP gradient penalty against a hand-computed one, with a critic whose gradient varies with x.

A linear critic has the same input gradient everywhere, so a penalty evaluated at the wrong point
(the real image, the fake one, the mirrored interpolate ``(1 - α) x + α G(z)``) still matches it.
Here the critic is non-linear and the penalty is checked at the hand-built interpolate.
"""

import pytest
import torch

from fgm import random
from fgm.models import gan as G
from tests.test_gan import SHAPE as GAN_SHAPE
from tests.test_gan import small_gan

SHAPE = (2, 3, 3)  # [C, H, W]
DIM = 2 * 3 * 3
HIDDEN = 5


def _params(key):
    k1, k2 = random.split(key)
    return {
        "w": random.normal(k1, (DIM, HIDDEN), dtype=torch.float64) * 0.7,
        "v": random.normal(k2, (HIDDEN,), dtype=torch.float64),
        "c": torch.tensor(0.3, dtype=torch.float64),
    }


def discriminate(params, x):
    """``D(x) = vᵀ tanh(Wᵀ x) + c/2 ‖x‖²`` per example, ``x: [B, C, H, W] → [B]``."""
    flat = x.flatten(1)
    return torch.tanh(flat @ params["w"]) @ params["v"] + 0.5 * params["c"] * flat.square().sum(1)


def input_gradient(params, x):
    """``∇ₓ D(x) = W (v ⊙ (1 - tanh²(Wᵀ x))) + c x`` by hand, ``[B, C·H·W]``."""
    flat = x.flatten(1)
    return (params["v"] * (1 - torch.tanh(flat @ params["w"]).square())) @ params["w"].T + params["c"] * flat


def hand_penalty(params, real, fake, alpha):
    """``(‖∇D(x̂)‖₂ - 1)²`` at ``x̂ = α x + (1 - α) G(z)``, built here rather than inside the library."""
    x_hat = alpha * real + (1 - alpha) * fake
    return (input_gradient(params, x_hat).norm(dim=1) - 1) ** 2


def _inputs(key, batch=6):
    k1, k2, k3 = random.split(key, 3)
    real = random.normal(k1, (batch, *SHAPE), dtype=torch.float64)
    fake = random.normal(k2, (batch, *SHAPE), dtype=torch.float64) + 1.0
    alpha = G.interpolation_weights(k3, batch).to(torch.float64)
    return real, fake, alpha


def test_hand_gradient_is_the_autograd_gradient(key):
    """Checks the reference itself, so the tests below compare against a correct formula."""
    params, (real, _, _) = _params(key), _inputs(key)
    x = real.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(discriminate(params, x).sum(), x)
    torch.testing.assert_close(auto.flatten(1), input_gradient(params, real), rtol=1e-12, atol=1e-12)


def test_gradient_penalty_equals_the_hand_computed_one_at_the_interpolate(key):
    params, (real, fake, alpha) = _params(key), _inputs(random.fold_in(key, 1))
    assert ((alpha > 0.05) & (alpha < 0.95)).any() and not torch.allclose(alpha, torch.full_like(alpha, 0.5))
    expected = hand_penalty(params, real, fake, alpha)
    penalty = G.gradient_penalty(discriminate, params, real, fake, alpha)
    assert penalty.shape == (real.shape[0],)
    torch.testing.assert_close(penalty, expected, rtol=1e-10, atol=1e-12)
    # The check can tell the points apart: the penalty differs at the other candidates for x̂.
    for wrong in (real, fake, (1 - alpha) * real + alpha * fake):
        other = (input_gradient(params, wrong).norm(dim=1) - 1) ** 2
        assert (other - expected).abs().max() > 1e-3


def test_gradient_penalty_gradient_wrt_critic_params_matches_the_hand_penalty(key):
    """``create_graph=True``: the penalty's own gradient reaches the critic's parameters."""
    params, (real, fake, alpha) = _params(random.fold_in(key, 2)), _inputs(random.fold_in(key, 3))
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}  # the library uses autograd

    def grads(penalty_fn):
        return dict(zip(leaves, torch.autograd.grad(penalty_fn(leaves).sum(), list(leaves.values())), strict=True))

    got = grads(lambda p: G.gradient_penalty(discriminate, p, real, fake, alpha))
    want = grads(lambda p: hand_penalty(p, real, fake, alpha))
    for name in params:
        assert want[name].abs().max() > 1e-6, name  # every parameter matters
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12)


def test_gradient_penalty_is_zero_exactly_where_the_gradient_has_unit_norm():
    """A critic ``D(x) = uᵀx`` with ``‖u‖ = 1`` has zero penalty; scaling ``u`` by 3 gives (3 - 1)²."""
    u = torch.zeros(DIM, dtype=torch.float64)
    u[0], u[1] = 0.6, 0.8
    linear = lambda p, x: x.flatten(1) @ p["u"]  # noqa: E731 - a one-line function beside its only use
    x = torch.ones(4, *SHAPE, dtype=torch.float64)
    alpha = torch.full((4, 1, 1, 1), 0.25, dtype=torch.float64)
    assert torch.equal(G.gradient_penalty(linear, {"u": u}, x, -x, alpha), torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(
        G.gradient_penalty(linear, {"u": 3 * u}, x, -x, alpha), torch.full((4,), 4.0, dtype=torch.float64)
    )


@pytest.mark.parametrize("d_steps", [1, 3])
def test_interpolation_weights_are_drawn_from_their_own_key(key, d_steps):
    """As ``gan_inputs`` documents: each D key splits into the latents' key and the weights' key.

    Drawn from the latents' key, ``α`` would be the uniforms behind ``z``'s Box-Muller pairs: the
    interpolates would move with the fakes instead of independently of them.
    """
    gan, n = small_gan(), 8
    batch = torch.zeros(d_steps * n, *GAN_SHAPE)
    _, d_noise, z_g = G.gan_inputs(gan, G.get_loss("wgan_gp"), d_steps)(batch, key)
    _, plain_noise, plain_z_g = G.gan_inputs(gan, G.get_loss("non_saturating"), d_steps)(batch, key)
    *d_keys, g_key = random.split(key, d_steps + 1)
    assert len(d_noise) == d_steps and torch.equal(z_g, G.latent_noise(gan, g_key, n)) and torch.equal(z_g, plain_z_g)
    for (z, alpha), (plain_z,), d_key in zip(d_noise, plain_noise, d_keys, strict=True):
        k_z, k_alpha = random.split(d_key)
        assert torch.equal(z, G.latent_noise(gan, k_z, n)) and torch.equal(z, plain_z)  # the penalty moves no latent
        assert alpha.shape == (n, 1, 1, 1) and torch.equal(alpha, G.interpolation_weights(k_alpha, n))
        assert not torch.equal(alpha, random.uniform(k_z, alpha.shape))
    alphas = torch.cat([alpha.flatten() for _, alpha in d_noise])
    assert len(set(alphas.tolist())) == alphas.numel()  # the D steps do not share weights


def test_interpolation_weights_are_uniform_on_the_unit_interval(key):
    alpha = G.interpolation_weights(key, 4000)
    assert alpha.shape == (4000, 1, 1, 1) and alpha.dtype == torch.float32
    assert 0 <= alpha.min() and alpha.max() < 1 and abs(alpha.mean() - 0.5) < 5 * (1 / 12 / 4000) ** 0.5
    assert torch.equal(alpha.flatten(), random.uniform(key, (4000,)))  # fgm.random's uniforms: any device alike
