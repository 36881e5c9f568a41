import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fgm import nn as fnn
from fgm import random, train
from fgm.models import networks
from fgm.models import vae as V
from fgm.tree import tree_clone, tree_equal, tree_map

LATENT = 4


def mnist_vae(latent=LATENT, hidden=(32, 16)):
    return V.make_vae(
        lambda: networks.mnist_mlp_encoder(latent, hidden),
        lambda: networks.mnist_mlp_decoder(latent, tuple(reversed(hidden))),
        V.bernoulli_likelihood(),
        latent,
        (1, 28, 28),
    )


def svhn_vae(latent=LATENT):
    return V.make_vae(
        lambda: networks.svhn_conv_encoder(latent, 4),
        lambda: networks.svhn_conv_decoder(latent, 4, 6),
        V.discretized_logistic_likelihood(),
        latent,
        (3, 32, 32),
    )


def binary_batch(key, n=5):
    return random.bernoulli(key, torch.full((n, 1, 28, 28), 0.3))


def test_init_is_deterministic_per_key(key):
    vae = mnist_vae()
    assert tree_equal(V.init(vae, key), V.init(vae, key))
    assert not tree_equal(V.init(vae, key), V.init(vae, random.fold_in(key, 1)))


def test_init_follows_torch_default_bounds(key):
    params = fnn.init_params(networks.mnist_mlp_encoder(LATENT, (32, 16)), key)
    w = params["1.weight"]  # Linear(784, 32)
    bound = 1 / 784**0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert abs(w.std().item() - bound / 3**0.5) < 0.05 * bound


def test_init_does_not_touch_global_rng(key):
    state = torch.get_rng_state().clone()
    V.init(svhn_vae(), key)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("make, shape", [(mnist_vae, (3, 1, 28, 28)), (svhn_vae, (3, 3, 32, 32))])
def test_functional_call_matches_module(make, shape, key):
    """The pure function gives the module's output when the module holds the same weights."""
    vae = make()
    params = V.init(vae, key)
    x = random.uniform(key, shape)
    builders = {"encoder": vae.encoder, "decoder": vae.decoder}
    inputs = {"encoder": x, "decoder": random.normal(key, (3, LATENT))}
    for name, template in builders.items():
        module = _materialise(template, params[name])
        apply = lambda p, v, t=template: torch.func.functional_call(t, p, (v,))  # noqa: E731 - a one-line function beside its only use
        assert torch.equal(apply(params[name], inputs[name]), module(inputs[name]))


def _materialise(template, params):
    import copy

    module = copy.deepcopy(template).to_empty(device="cpu")
    module.load_state_dict(params)
    return module


def test_modules_with_buffers_are_refused():
    with pytest.raises(ValueError, match="buffers"):
        fnn.functional(lambda: nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


@given(st.integers(0, 2**32))
@settings(max_examples=10, deadline=None)
def test_loss_is_pure_and_deterministic(seed):
    vae = mnist_vae()
    k = random.key(seed)
    params = V.init(vae, k)
    x = binary_batch(random.fold_in(k, 1))
    eps = V.latent_noise(vae, random.fold_in(k, 2), x.shape[0])
    before = tree_clone((params, x, eps))
    loss1, m1 = V.loss(vae, params, x, eps)
    loss2, m2 = V.loss(vae, params, x, eps)
    assert tree_equal(before, (params, x, eps))  # inputs untouched
    assert torch.equal(loss1, loss2) and tree_equal(m1, m2)
    terms = V.elbo_terms(vae, params, x, eps)
    assert torch.all(torch.isfinite(terms.log_likelihood)) and torch.all(torch.isfinite(terms.kl))
    assert torch.all(terms.kl >= 0)
    assert torch.allclose(loss1, -(terms.log_likelihood - terms.kl).mean())


def test_svhn_elbo_finite_and_in_plausible_range(key):
    vae = svhn_vae()
    params = V.init(vae, key)
    x = random.randint(key, 0, 256, (4, 3, 32, 32)).float() / 127.5 - 1
    terms = V.elbo_terms(vae, params, x, random.normal(key, (4, LATENT)))
    nll_bits = -terms.elbo / (3072 * torch.log(torch.tensor(2.0)))
    # an untrained model is worse than uniform (8 bits/dim) but not absurdly so
    assert torch.all(torch.isfinite(nll_bits)) and torch.all(nll_bits > 0) and torch.all(nll_bits < 20)


def test_kl_is_zero_when_encoder_outputs_the_prior(key):
    vae = mnist_vae()
    params = V.init(vae, key)
    params["encoder"] = dict(params["encoder"])
    params["encoder"]["5.weight"] = torch.zeros_like(params["encoder"]["5.weight"])
    params["encoder"]["5.bias"] = torch.zeros_like(params["encoder"]["5.bias"])
    terms = V.elbo_terms(vae, params, binary_batch(key), random.normal(key, (5, LATENT)))
    assert torch.equal(terms.kl, torch.zeros(5))


def test_elbo_is_below_the_exact_log_likelihood_of_a_tiny_model(key):
    """With 2 binary pixels and a 1-d latent, log p(x) is computable by quadrature."""
    enc = lambda: nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # noqa: E731 - a one-line function beside its only use
    dec = lambda: nn.Sequential(nn.Linear(1, 2), nn.Unflatten(1, (1, 1, 2)))  # noqa: E731 - a one-line function beside its only use
    vae = V.make_vae(enc, dec, V.bernoulli_likelihood(), 1, (1, 1, 2))
    params = tree_map(lambda t: 3 * t.double(), V.init(vae, key))
    x = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]], dtype=torch.float64)
    z = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    logits = vae.decode(params["decoder"], z[:, None]).flatten(1)  # [Z, 2]
    log_joint = (
        -torch.nn.functional.binary_cross_entropy_with_logits(
            logits[None].expand(2, -1, -1), x.flatten(1)[:, None].expand(-1, z.numel(), -1), reduction="none"
        ).sum(-1)
        - 0.5 * z**2
        - 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    )
    log_px = torch.logsumexp(log_joint, 1) + torch.log(z[1] - z[0])
    eps = random.normal(key, (200_000, 1), dtype=torch.float64)
    elbo = torch.stack([V.elbo_terms(vae, params, xi.expand(eps.shape[0], -1, -1, -1), eps).elbo.mean() for xi in x])
    assert torch.all(elbo <= log_px + 1e-3)


def test_autograd_and_func_backends_agree(key):
    vae = mnist_vae()
    params = V.init(vae, key)
    x, eps = binary_batch(key), random.normal(key, (5, LATENT))
    lf = functools.partial(V.loss, vae)
    (l1, _), g1 = train.value_and_grad(lf, "autograd")(params, x, eps)
    (l2, _), g2 = train.value_and_grad(lf, "func")(params, x, eps)
    assert torch.allclose(l1, l2)
    from fgm.tree import tree_allclose

    assert tree_allclose(g1, g2, rtol=1e-5, atol=1e-6)
    assert all(not t.requires_grad for t in [l1, *torch.utils._pytree.tree_leaves(g1)])


def test_generate_and_reconstruct_shapes(key):
    for make, shape in [(mnist_vae, (1, 28, 28)), (svhn_vae, (3, 32, 32))]:
        vae = make()
        params = V.init(vae, key)
        imgs = V.generate(vae, params, random.normal(key, (6, LATENT)))
        assert imgs.shape == (6, *shape) and imgs.min() >= 0 and imgs.max() <= 1
        assert V.reconstruct(vae, params, imgs * 2 - 1).shape == (6, *shape)


@pytest.mark.parametrize("model", ["vae_std", "vae_flow", "gan"])
def test_train_steps_leave_the_global_rng_alone(model, key):
    from experiments import models
    from fgm import data as fdata

    config = {**models.defaults(model, "mnist", "default"), "total_steps": 10}
    trainer = models.get_model(model).build(fdata.get_spec("mnist"), config).trainer
    step = train.step_from_update(trainer.make_update(), trainer.inputs)
    state = trainer.init(key)
    x = random.uniform(key, (4, 1, 28, 28))
    torch.manual_seed(1234)
    before = torch.get_rng_state().clone()
    state, metrics = step(state, (x > 0.5).float(), train.step_key(state))
    state, metrics = step(state, (x > 0.5).float(), train.step_key(state))
    assert torch.equal(before, torch.get_rng_state())
    assert torch.isfinite(metrics["loss"])
