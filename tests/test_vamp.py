"""The VampPrior (fgm/models/vamp.py) and the IWAE bound over any ImportanceModel, against float64 references.

The references share nothing with the code under test but the parameters:
the encoder and decoder are applied by hand, component densities come from
``torch.distributions.Normal``, and the log-mean-exp is written out.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributions import Bernoulli, MultivariateNormal, Normal

from experiments import models
from fgm import data as fdata
from fgm import distributions as D
from fgm import interpolate, random, train, tree
from fgm.metrics import nll as N
from fgm.models import vae as V
from fgm.models import vamp
from fgm.types import ImportanceModel

IMAGE, PIXELS, LATENT, K = (1, 4, 4), 16, 3, 5


def tiny_vamp(k=K, bounds=(0.0, 1.0)):
    """A float64 VampPrior VAE on 4×4 images whose pseudo-inputs are spread over (and beyond) the data's range."""
    enc = lambda: nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 8), nn.Tanh(), nn.Linear(8, 2 * LATENT))  # noqa: E731 - a one-line function beside its only use
    dec = lambda: nn.Sequential(nn.Linear(LATENT, PIXELS), nn.Unflatten(1, IMAGE))  # noqa: E731 - a one-line function beside its only use
    model = vamp.with_vamp_prior(V.make_vae(enc, dec, V.bernoulli_likelihood(), LATENT, IMAGE), k, bounds)
    params = tree.tree_map(lambda t: t.double(), V.init(model, random.key(0)))
    low, high = bounds
    spread = random.uniform(random.key(1), (k, *IMAGE), dtype=torch.float64) * 1.5 - 0.25  # some pixels get clipped
    params["prior"] = {"pseudo_inputs": low + (high - low) * spread}
    return model, params


def reference_encode(enc, x):
    """The encoder by hand: Linear, tanh, Linear; the output split into (mean, log-variance)."""
    hidden = torch.tanh(x.flatten(1) @ enc["1.weight"].T + enc["1.bias"])
    out = hidden @ enc["3.weight"].T + enc["3.bias"]
    return out[:, :LATENT], out[:, LATENT:]


def reference_components(params, bounds=(0.0, 1.0)):
    u = params["prior"]["pseudo_inputs"].clamp(*bounds)
    return reference_encode(params["encoder"], u)


def reference_log_prior(params, z, bounds=(0.0, 1.0)):
    """log (1/K) Σ_k q(z|u_k): one Normal per component, then an explicit log-mean-exp in float64."""
    means, log_vars = reference_components(params, bounds)
    a = torch.stack(
        [Normal(m, torch.exp(0.5 * lv)).log_prob(z).sum(-1) for m, lv in zip(means, log_vars, strict=True)], dim=-1
    )  # [B, K]
    top = a.max(-1, keepdim=True).values
    return (top + torch.log(torch.exp(a - top).sum(-1, keepdim=True) / a.shape[-1])).squeeze(-1)


def binary(n, seed=2):
    return random.bernoulli(random.key(seed), torch.full((n, *IMAGE), 0.4, dtype=torch.float64))


# ---------------------------------------------------------------- density


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0)])
def test_density_is_the_mean_of_the_pseudo_inputs_posteriors(bounds):
    model, params = tiny_vamp(bounds=bounds)
    z = 2.0 * random.normal(random.key(3), (9, LATENT), dtype=torch.float64)
    expected = reference_log_prior(params, z, bounds)
    got = V.prior_log_prob(model, params, z)
    assert got.shape == (9,) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    # the prior reads the encoder: other encoder parameters, another density
    other = {**params, "encoder": tree.tree_map(lambda t: 1.1 * t, params["encoder"])}
    assert not torch.allclose(V.prior_log_prob(model, other, z), got)


def test_narrow_components_keep_float32_accuracy():
    """σ ≈ 0.01 and z near μ: the expanded quadratic's terms reach ~1e5 and cancel; float64 keeps them exact."""
    means = 3.0 * random.normal(random.key(4), (6, 4))
    log_vars = torch.full((6, 4), -9.0) + 0.1 * random.normal(random.key(5), (6, 4))
    z = means[torch.tensor([0, 2, 5, 5])] + 0.01 * random.normal(random.key(6), (4, 4))
    got = vamp.mixture_log_prob(z, means, log_vars)
    assert got.dtype == torch.float32
    a = torch.stack(
        [
            Normal(m, torch.exp(0.5 * lv)).log_prob(z.double()).sum(-1)
            for m, lv in zip(means.double(), log_vars.double(), strict=True)
        ],
        -1,
    )
    expected = torch.logsumexp(a, -1) - math.log(6)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-4)  # values ~ 15 nats: float32 rounding


@given(st.integers(0, 2**32), st.integers(1, 20), st.floats(0.1, 5.0))
@settings(max_examples=40, deadline=None)
def test_log_density_lies_within_log_k_of_the_best_component(seed, k, scale):
    """max_k log q(z|u_k) - log K ≤ log p(z) ≤ max_k log q(z|u_k); equality on the left for K = 1."""
    key = random.key(seed)
    means = scale * random.normal(random.fold_in(key, 0), (k, LATENT), dtype=torch.float64)
    log_vars = random.normal(random.fold_in(key, 1), (k, LATENT), dtype=torch.float64)
    z = scale * random.normal(random.fold_in(key, 2), (7, LATENT), dtype=torch.float64)
    best = torch.stack(
        [D.diag_normal_log_prob(z, m.expand_as(z), lv.expand_as(z)) for m, lv in zip(means, log_vars, strict=True)]
    )
    best = best.max(0).values
    log_p = vamp.mixture_log_prob(z, means, log_vars)
    assert torch.all(log_p <= best + 1e-9) and torch.all(log_p >= best - math.log(k) - 1e-9)
    if k == 1:
        torch.testing.assert_close(log_p, best, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- sampling


def test_a_sample_of_component_k_is_exactly_its_reparameterised_draw():
    model, params = tiny_vamp()
    eps = random.normal(random.key(7), (K, LATENT), dtype=torch.float64)
    v = (torch.arange(K, dtype=torch.float64) + 0.5) / K  # component k's interval [k/K, (k+1)/K)
    z = V.prior_sample(model, params, torch.cat([eps, v[:, None]], 1))
    means, log_vars = model.encode(params["encoder"], params["prior"]["pseudo_inputs"].clamp(0, 1))
    assert torch.equal(z, means + torch.exp(0.5 * log_vars) * eps)
    # and those are the hand-computed posteriors of the clipped pseudo-inputs
    ref_means, ref_log_vars = reference_components(params)
    torch.testing.assert_close(z, ref_means + torch.exp(0.5 * ref_log_vars) * eps, rtol=0, atol=1e-12)


def test_component_index_cuts_the_unit_interval_into_k_equal_parts():
    v = torch.tensor([0.0, 0.19999, 0.2, 0.5, 0.79999, 0.8, 1.0 - 2.0**-24])
    assert vamp.component_index(v, 5).tolist() == [0, 0, 1, 2, 3, 4, 4]
    assert vamp.component_index(torch.tensor([1.0, -0.5]), 5).tolist() == [4, 0]  # outside [0, 1): clamped
    # the drawn noise picks each component with probability 1/K (a chi-square test, 29 dof: 99.99% below 70)
    noise = vamp.mixture_noise(random.key(8), 60_000, LATENT)
    assert noise.shape == (60_000, LATENT + 1)
    counts = torch.bincount(vamp.component_index(noise[:, -1], 30), minlength=30).double()
    assert float(((counts - 2000.0) ** 2 / 2000.0).sum()) < 70


def test_samples_follow_the_mixture_density():
    """Each coordinate's empirical CDF is the mixture's, 1/K Σ_k Φ((z - μ_k) / σ_k) (a KS bound at ~1e-3)."""
    model, params = tiny_vamp()
    n = 40_000
    z = V.prior_sample(model, params, vamp.mixture_noise(random.key(9), n, LATENT).double())
    means, log_vars = reference_components(params)
    sigmas = torch.exp(0.5 * log_vars)
    for j in range(LATENT):
        sorted_z = z[:, j].sort().values
        cdf = torch.special.ndtr((sorted_z[:, None] - means[:, j]) / sigmas[:, j]).mean(-1)
        empirical = torch.arange(1, n + 1, dtype=torch.float64) / n
        assert float((cdf - empirical).abs().max()) < 1.95 / math.sqrt(n)


def test_the_prior_noise_is_what_the_trainer_draws_and_the_vamp_prior_needs():
    model, params = tiny_vamp()
    noise = V.prior_noise(model, random.key(10), 4)
    assert noise.shape == (4, LATENT + 1) and torch.equal(noise, vamp.mixture_noise(random.key(10), 4, LATENT))
    assert ((noise[:, -1] >= 0) & (noise[:, -1] < 1)).all()
    assert V.generate(model, params, noise.double()).shape == (4, *IMAGE)
    # the standard normal and flow priors keep their [N, d] Gaussian noise, the numbers latent_noise draws
    std = V.make_vae(lambda: nn.Flatten(), lambda: nn.Flatten(), V.bernoulli_likelihood(), 3, IMAGE)
    assert torch.equal(V.prior_noise(std, random.key(10), 4), V.latent_noise(std, random.key(10), 4))


# ---------------------------------------------------------------- gradients


def test_gradients_reach_the_pseudo_inputs_and_the_encoder_through_the_prior():
    model, params = tiny_vamp()
    x = binary(6)
    eps = random.normal(random.key(11), (6, LATENT), dtype=torch.float64)
    mean, log_var = reference_encode(params["encoder"], x)
    z = mean + torch.exp(0.5 * log_var) * eps
    # the KL is the one-sample estimate log q(z|x) - log p(z), with the VampPrior's density
    terms = V.elbo_terms(model, params, x, eps)
    expected_kl = Normal(mean, torch.exp(0.5 * log_var)).log_prob(z).sum(-1) - reference_log_prior(params, z)
    torch.testing.assert_close(terms.kl, expected_kl, rtol=0, atol=1e-10)

    grads = torch.func.grad(lambda p: V.loss(model, p, x, eps)[0])(params)
    g_u = grads["prior"]["pseudo_inputs"]
    u = params["prior"]["pseudo_inputs"]
    inside = (u > 0) & (u < 1)
    assert bool((g_u[inside] != 0).all()) and bool((g_u[~inside] == 0).all())  # the clip passes no gradient
    # the pseudo-inputs enter the loss only through -mean log p(z) at the (pseudo-input-free) samples
    g_prior = torch.func.grad(lambda pu: reference_log_prior({**params, "prior": {"pseudo_inputs": pu}}, z).mean())(u)
    torch.testing.assert_close(g_u, -g_prior, rtol=0, atol=1e-10)
    # the encoder gets the prior's share too: the gradient of log p(z) alone, at fixed z, is not zero
    g_enc = torch.func.grad(lambda e: V.prior_log_prob(model, {**params, "encoder": e}, z).sum())(params["encoder"])
    assert all(bool(g.abs().max() > 0) for g in tree.tree_leaves(g_enc))


def test_a_training_step_moves_the_pseudo_inputs(key):
    spec = fdata.get_spec("mnist")
    config = {**models.defaults("vae_vamp", "mnist", "smoke"), "total_steps": 4}
    config["pseudo_inputs"] = 7
    trainer = models.build({**config, "model": "vae_vamp", "dataset": "mnist"}).trainer
    state = trainer.init(key)
    u = state.params["prior"]["pseudo_inputs"]
    assert u.shape == (7, 1, 28, 28)
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.std()) - 0.01) < 0.002  # N(0.5, 0.01²), inside [0, 1]
    step = train.step_from_update(trainer.make_update(), trainer.inputs)
    x = random.bernoulli(key, torch.full((8, *spec.shape), 0.3))
    for _ in range(2):  # the first step moves the zero-initialised output layers only
        state, metrics = step(state, x, train.step_key(state))
    assert torch.isfinite(metrics["loss"])
    assert not torch.equal(state.params["prior"]["pseudo_inputs"], u)
    assert set(state.opt_state[0].mu) == {"encoder", "decoder", "prior"}


# ---------------------------------------------------------------- the IWAE bound over any ImportanceModel

A = torch.tensor([[1.2, 0.0], [0.0, -0.7], [0.0, 0.0]], dtype=torch.float64)  # orthogonal columns
SIGMA = 0.5


def linear_gaussian_model() -> ImportanceModel:
    """p(z) = N(0, I), p(x|z) = N(A z + b, σ² I), q(z|x) = N(C x + c, diag exp(ℓ)); no VAE involved."""

    def proposal(params, x):
        return x @ params["C"].T + params["c"], params["log_var"].expand(x.shape[0], -1)

    def sample(q, eps):
        mean, log_var = q
        z = mean + torch.exp(0.5 * log_var) * eps
        return z, -0.5 * ((z - mean) ** 2 / log_var.exp() + log_var + math.log(2 * math.pi)).sum(-1)

    def log_joint(params, x, z):
        resid = x - z @ A.T - params["b"]
        log_lik = -0.5 * (resid**2 / SIGMA**2 + math.log(2 * math.pi * SIGMA**2)).sum(-1)
        return log_lik - 0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)

    return ImportanceModel(proposal, sample, log_joint, (2,))


def linear_gaussian_params(exact_posterior=False):
    b = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    if exact_posterior:  # posterior N(G (x - b), P⁻¹), P = I + AᵀA / σ² (diagonal: A's columns are orthogonal)
        cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + A.T @ A / SIGMA**2)
        gain = cov @ A.T / SIGMA**2
        return {"b": b, "C": gain, "c": -gain @ b, "log_var": torch.log(torch.diagonal(cov))}
    c = torch.tensor([[0.5, 0.1, 0.0], [0.2, -0.4, 0.3]], dtype=torch.float64)
    log_var = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    return {"b": b, "C": c, "c": torch.tensor([0.1, -0.1], dtype=torch.float64), "log_var": log_var}


def chunk_noise(key, sizes, batch, shape):
    """The estimator's noise: chunk c of size k_c from fold_in(key, c)."""
    return torch.cat(
        [random.normal(random.fold_in(key, c), (k, batch, *shape), dtype=torch.float64) for c, k in enumerate(sizes)]
    )


def log_mean_exp(log_w):
    top = log_w.max(0).values
    return top + torch.log(torch.exp(log_w - top).mean(0))


def test_generic_iwae_on_a_hand_written_model_against_float64():
    model, params = linear_gaussian_model(), linear_gaussian_params()
    x = random.normal(random.key(12), (5, 3), dtype=torch.float64)
    key = random.key(13)
    got = N.iwae_log_likelihood(model, params, x, key, num_samples=13, chunk_size=5)  # chunks 5 + 5 + 3
    eps = chunk_noise(key, [5, 5, 3], 5, (2,))
    mean, std = x @ params["C"].T + params["c"], torch.exp(0.5 * params["log_var"])
    z = mean + std * eps  # [13, 5, 2]
    log_w = (
        Normal(z @ A.T + params["b"], SIGMA).log_prob(x).sum(-1)
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(mean, std).log_prob(z).sum(-1)
    )
    assert got.shape == (5,) and got.dtype == torch.float64
    torch.testing.assert_close(got, log_mean_exp(log_w), rtol=0, atol=1e-10)
    torch.testing.assert_close(N.nll(model, params, x, key, 13, 5), -got, rtol=0, atol=0)


def test_generic_iwae_with_the_exact_posterior_is_exact_for_any_k():
    model, params = linear_gaussian_model(), linear_gaussian_params(exact_posterior=True)
    x = random.normal(random.key(14), (6, 3), dtype=torch.float64)
    exact = MultivariateNormal(params["b"], A @ A.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)).log_prob(x)
    for k in (1, 7):
        torch.testing.assert_close(
            N.iwae_log_likelihood(model, params, x, random.key(15), num_samples=k, chunk_size=3),
            exact,
            rtol=0,
            atol=1e-10,
        )


def test_vamp_vae_iwae_against_a_direct_float64_computation():
    model, params = tiny_vamp()
    x, key = binary(4), random.key(16)
    got = N.iwae_log_likelihood(model, params, x, key, num_samples=9, chunk_size=4)  # chunks 4 + 4 + 1
    eps = chunk_noise(key, [4, 4, 1], 4, (LATENT,))
    mean, log_var = reference_encode(params["encoder"], x)
    std = torch.exp(0.5 * log_var)
    z = mean + std * eps  # [9, 4, d]
    logits = z @ params["decoder"]["0.weight"].T + params["decoder"]["0.bias"]  # [9, 4, 16]
    log_lik = Bernoulli(logits=logits).log_prob(x.flatten(1)).sum(-1)
    log_prior = torch.stack([reference_log_prior(params, zi) for zi in z])
    log_w = log_lik + log_prior - Normal(mean, std).log_prob(z).sum(-1)
    torch.testing.assert_close(got, log_mean_exp(log_w), rtol=0, atol=1e-9)
    # a VAE and its ImportanceModel are the same estimator
    assert torch.equal(got, N.iwae_log_likelihood(V.importance_model(model), params, x, key, 9, 4))


@pytest.mark.slow
def test_compiled_iwae_of_a_vamp_vae_equals_the_eager_one():
    """compile=True through the VampPrior's float64 matrix products: the eager numbers to float32 rounding."""
    model, params = tiny_vamp()
    params = tree.tree_map(lambda t: t.float(), params)
    x = binary(6).float()
    eager = N.iwae_log_likelihood(model, params, x, random.key(17), num_samples=30, chunk_size=10)
    compiled = N.iwae_log_likelihood(model, params, x, random.key(17), num_samples=30, chunk_size=10, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the registered model


def smoke_experiment(**extra):
    config = {**models.defaults("vae_vamp", "mnist", "smoke"), "total_steps": 4}
    return models.build({**config, **extra, "model": "vae_vamp", "dataset": "mnist"})


def test_interpolations_join_prior_draws_in_latent_space():
    experiment = smoke_experiment(pseudo_inputs=3)
    trainer = experiment.trainer
    params = trainer.variables(trainer.init(random.key(0)))
    params["prior"]["pseudo_inputs"] = random.uniform(random.key(1), (3, 1, 28, 28))  # three distinct components
    na, nb = trainer.noise(random.key(3), 4), trainer.noise(random.key(4), 4)
    xa = random.bernoulli(random.key(5), torch.full((4, 1, 28, 28), 0.3))
    xb = random.bernoulli(random.key(6), torch.full((4, 1, 28, 28), 0.3))
    w = interpolate.interpolation_weights(10)
    strips = experiment.interpolate(params, na, nb, xa, xb, w)
    assert set(strips) == {"prior_latent", "test_latent"}  # no path through the component choice
    vae = experiment.interpolate.args[0]
    with torch.no_grad():
        z_a, z_b = V.prior_sample(vae, params, na), V.prior_sample(vae, params, nb)
        path = interpolate.lerp(z_a, z_b, w).reshape(4 * 12, -1)
        direct = vae.likelihood.mean(vae.decode(params["decoder"], path)).reshape(4, 12, 1, 28, 28)
        ends = trainer.generate(params, na), trainer.generate(params, nb)
    images = strips["prior_latent"].images
    assert torch.equal(images, direct)
    torch.testing.assert_close(images[:, 0], ends[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(images[:, -1], ends[1], rtol=0, atol=1e-5)
    assert "VampPrior" in strips["prior_latent"].caption and "latent space" in strips["prior_latent"].caption


def test_the_registered_model_runs_on_meta_tensors():
    """Every tensor it builds (noise, component indices, float64 products) stays on its inputs' device."""
    meta = torch.device("meta")
    experiment = smoke_experiment(pseudo_inputs=5)
    trainer = experiment.trainer
    state = train.to_device(trainer.init(random.key(0)), meta)
    x = experiment.train_input(torch.empty(4, 1, 28, 28, dtype=torch.uint8, device=meta), random.key(1))
    inputs = trainer.inputs(x, random.key(2))
    params, _, _, metrics = trainer.make_update()(state.params, state.opt_state, state.model_state, *inputs)
    assert {leaf.device for leaf in tree.tree_leaves(params)} == {meta} and metrics["loss"].device == meta
    noise = trainer.noise(random.key(3), 3, meta)
    assert noise.device == meta and noise.shape == (3, 33)
    assert trainer.generate(state.params, noise).device == meta
    assert experiment.log_likelihood(state.params, x, random.key(4), 5).device == meta
    strips = experiment.interpolate(
        state.params, noise[:2], noise[1:], x[:2], x[:2], torch.linspace(0, 1, 4, device=meta)
    )
    assert {s.images.device for s in strips.values()} == {meta}
