"""IWAE NLL against the closed form of a linear-Gaussian model, and the known estimator bugs."""

import itertools
import math

import pytest
import torch
from torch import nn

from fgm import bijectors as B
from fgm import distributions as D
from fgm import random
from fgm.metrics import nll as N
from fgm.models import vae as V
from fgm.tree import tree_map

DX, DZ, SIGMA = 3, 2, 0.5


def gaussian_likelihood(sigma=SIGMA):
    """p(x|z) = N(x; decoder(z), σ² I) on [B, 1, 1, DX] 'images'."""
    log_var = 2 * math.log(sigma)

    def log_prob(out, x):
        return D.diag_normal_log_prob(x.flatten(1), out.flatten(1), torch.full_like(out.flatten(1), log_var))

    return V.Likelihood("gaussian", log_prob, lambda out: out, 1)


def linear_gaussian(prior=None):
    enc = lambda: nn.Sequential(nn.Flatten(), nn.Linear(DX, 2 * DZ))  # noqa: E731 - a one-line function beside its only use
    dec = lambda: nn.Sequential(nn.Linear(DZ, DX), nn.Unflatten(1, (1, 1, DX)))  # noqa: E731 - a one-line function beside its only use
    vae = V.make_vae(enc, dec, gaussian_likelihood(), DZ, (1, 1, DX), prior=prior)
    params = V.init(vae, random.key(0))
    return vae, tree_map(lambda t: t.double(), params)


def exact_log_px(params, x):
    """p(x) = N(b, W Wᵀ + σ² I) for z ~ N(0, I), x = W z + b + σ ε."""
    w, b = params["decoder"]["0.weight"], params["decoder"]["0.bias"]
    cov = w @ w.T + SIGMA**2 * torch.eye(DX, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x.flatten(1))


def exact_posterior_encoder(params):
    """Sets the (linear) encoder to the true Gaussian posterior: then every weight is p(x)."""
    w, b = params["decoder"]["0.weight"], params["decoder"]["0.bias"]
    precision = torch.eye(DZ, dtype=torch.float64) + w.T @ w / SIGMA**2
    post_cov = torch.linalg.inv(precision)
    # the posterior covariance is full; make W orthogonal-columned so it is diagonal
    assert torch.allclose(post_cov, torch.diag(torch.diagonal(post_cov)), atol=1e-12)
    gain = post_cov @ w.T / SIGMA**2  # mean = gain (x - b)
    log_var = torch.log(torch.diagonal(post_cov))
    enc_w = torch.cat([gain, torch.zeros(DZ, DX, dtype=torch.float64)])
    enc_b = torch.cat([-gain @ b, log_var])
    return {**params, "encoder": {"1.weight": enc_w, "1.bias": enc_b}}


def data(n=7):
    return random.normal(random.key(9), (n, 1, 1, DX), dtype=torch.float64)


def orthogonal_decoder(params):
    w = torch.tensor([[1.2, 0.0], [0.0, -0.7], [0.0, 0.0]], dtype=torch.float64)
    return {**params, "decoder": {"0.weight": w, "0.bias": torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)}}


def test_exact_posterior_gives_exact_log_likelihood_for_any_k():
    vae, params = linear_gaussian()
    params = exact_posterior_encoder(orthogonal_decoder(params))
    x = data()
    for k in (1, 7):
        est = N.iwae_log_likelihood(vae, params, x, random.key(1), num_samples=k, chunk_size=3)
        assert torch.allclose(est, exact_log_px(params, x), atol=1e-9)


def test_converges_to_the_closed_form_and_is_a_lower_bound():
    vae, params = linear_gaussian()
    params = orthogonal_decoder(params)  # the encoder stays a random (wrong) posterior
    x = data()
    exact = exact_log_px(params, x)
    elbo = N.iwae_log_likelihood(vae, params, x, random.key(2), num_samples=1, chunk_size=1)
    # K = 200,000: the estimate's std is at most 0.008 here (measured over keys), so 0.035 is about 4 std
    est = N.iwae_log_likelihood(vae, params, x, random.key(2), num_samples=200_000, chunk_size=20_000)
    assert torch.all(est <= exact + 0.035)
    assert torch.allclose(est, exact, atol=0.05)
    assert est.mean() > elbo.mean()


def test_chunking_drops_no_samples():
    vae, params = linear_gaussian()
    x = data()
    one = N.iwae_log_likelihood(vae, params, x, random.key(3), num_samples=10, chunk_size=10)
    # same noise, drawn in one chunk of 10, compared with the formula on those 10 samples
    eps = random.normal(random.fold_in(random.key(3), 0), (10, x.shape[0], DZ), dtype=torch.float64)
    log_w = N.log_importance_weights(vae, params, x, eps)
    assert torch.allclose(one, torch.logsumexp(log_w, 0) - math.log(10), atol=1e-12)
    # K = 10 in chunks of 3 (3+3+3+1) must use 10 samples: compare with the float64 formula
    chunked = N.iwae_log_likelihood(vae, params, x, random.key(4), num_samples=10, chunk_size=3)
    eps_all = torch.cat(
        [
            random.normal(random.fold_in(random.key(4), c), (k, x.shape[0], DZ), dtype=torch.float64)
            for c, k in enumerate([3, 3, 3, 1])
        ]
    )
    ref = torch.logsumexp(N.log_importance_weights(vae, params, x, eps_all), 0) - math.log(10)
    assert torch.allclose(chunked, ref, atol=1e-12)


def test_each_point_is_independent_of_the_rest_of_the_batch():
    vae, params = linear_gaussian()
    params = orthogonal_decoder(params)
    x = data(5)
    full = N.iwae_log_likelihood(vae, params, x, random.key(5), num_samples=50, chunk_size=50)
    exact = exact_log_px(params, x)
    big = N.iwae_log_likelihood(vae, params, x, random.key(5), num_samples=200_000, chunk_size=20_000)
    single = torch.stack(
        [
            N.iwae_log_likelihood(vae, params, x[i : i + 1], random.key(6), num_samples=200_000, chunk_size=20_000)[0]
            for i in range(5)
        ]
    )
    assert torch.allclose(big, single, atol=0.05) and torch.allclose(big, exact, atol=0.05)
    assert full.shape == (5,) and full.dtype == torch.float64


def test_works_with_a_flow_prior():
    flow = B.realnvp(DZ, 2, (8,), identity_init=False)
    vae, params = linear_gaussian(prior=V.flow_prior(flow))
    params = {**params, "prior": tree_map(lambda t: t.double(), flow.init(random.key(7)))}
    x = data()
    # closed form by quadrature over the 2-D latent: p(x) = ∫ p(x|z) p(z) dz
    g = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    zz = torch.cartesian_prod(g, g)
    log_pz = vae.prior.log_prob(params["prior"], zz)
    out = vae.decode(params["decoder"], zz)
    log_px = torch.stack(
        [torch.logsumexp(vae.likelihood.log_prob(out, xi.expand(zz.shape[0], -1, -1, -1)) + log_pz, 0) for xi in x]
    ) + 2 * torch.log(g[1] - g[0])
    est = N.iwae_log_likelihood(vae, params, x, random.key(8), num_samples=200_000, chunk_size=20_000)
    assert torch.allclose(est, log_px, atol=0.05)


def test_one_sample_is_the_elbo_in_expectation():
    vae, params = linear_gaussian()
    params = orthogonal_decoder(params)  # a wrong encoder: the ELBO is well below log p(x)
    x = data()
    # L_1 with a key is exactly the single-sample ELBO with that key's noise ...
    key = random.key(10)
    eps = random.normal(random.fold_in(key, 0), (1, x.shape[0], DZ), dtype=torch.float64)
    one = N.iwae_log_likelihood(vae, params, x, key, num_samples=1)
    assert torch.allclose(one, V.elbo_terms(vae, params, x, eps[0], analytic_kl=False).elbo, atol=1e-12)
    # ... and in expectation it is the ELBO with the analytic KL. Same noise for both (common
    # random numbers): per sample they differ only by log p(z) - log q(z|x) + KL, of mean 0.
    eps = random.normal(random.key(11), (4000, x.shape[0], DZ), dtype=torch.float64)
    log_w = N.log_importance_weights(vae, params, x, eps)  # [K, B]: the L_1 of each sample
    elbo = torch.stack([V.elbo_terms(vae, params, x, e, analytic_kl=True).elbo for e in eps])
    diff = log_w - elbo
    assert torch.all(diff.mean(0).abs() < 4 * diff.std(0) / math.sqrt(eps.shape[0]) + 1e-9)
    elbo = elbo.mean(0)
    assert torch.all(elbo < exact_log_px(params, x) - 0.1)  # the test would notice a tight bound


def test_bound_does_not_decrease_with_k_on_average():
    vae, params = linear_gaussian()
    params = orthogonal_decoder(params)
    x = data()
    means = [
        torch.stack(
            [
                N.iwae_log_likelihood(vae, params, x, random.key(1000 * k + r), num_samples=k, chunk_size=50)
                for r in range(40)
            ]
        ).mean()
        for k in (1, 5, 50, 500)
    ]
    assert all(a < b for a, b in itertools.pairwise(means)), means
    assert means[-1] <= exact_log_px(params, x).mean() + 0.02


def test_nll_is_minus_the_bound_with_the_same_defaults():
    """``nll`` is ``-L_K`` with K = 1000 in chunks of 100 by default (the chunking fixes the noise)."""
    vae, params = linear_gaussian()
    x, key = data(2), random.key(12)
    default = N.iwae_log_likelihood(vae, params, x, key)
    assert torch.equal(default, N.iwae_log_likelihood(vae, params, x, key, num_samples=1000, chunk_size=100))
    assert torch.equal(N.nll(vae, params, x, key), -default)
    assert torch.equal(
        N.nll(vae, params, x, key, num_samples=7, chunk_size=3),
        -N.iwae_log_likelihood(vae, params, x, key, num_samples=7, chunk_size=3),
    )


def test_sizes_below_one_are_refused():
    vae, params = linear_gaussian()
    for k, chunk in ((0, 10), (10, 0)):
        with pytest.raises(ValueError, match=f"num_samples and chunk_size must be >= 1, got {k}, {chunk}"):
            N.iwae_log_likelihood(vae, params, data(), random.key(0), num_samples=k, chunk_size=chunk)


@pytest.mark.slow
def test_compiled_estimate_equals_the_eager_one_on_the_same_noise():
    """compile=True: the same noise and float64 accumulation; log-weights agree to float32 rounding.

    The fused reduction sums the 784 pixel terms in another order: log-weights of ~550 nats then differ
    by a few float32 ulps (~5e-5 nats), so the check is relative.
    """
    spec_shape = (1, 28, 28)
    enc = lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ELU(), nn.Linear(64, 2 * 8))  # noqa: E731 - a one-line function beside its only use
    dec = lambda: nn.Sequential(nn.Linear(8, 64), nn.ELU(), nn.Linear(64, 784), nn.Unflatten(1, spec_shape))  # noqa: E731 - a one-line function beside its only use
    vae = V.make_vae(enc, dec, V.bernoulli_likelihood(), 8, spec_shape)
    params = V.init(vae, random.key(0))
    x = (random.uniform(random.key(1), (10, *spec_shape)) > 0.5).float()
    eager = N.iwae_log_likelihood(vae, params, x, random.key(2), num_samples=50, chunk_size=20)
    compiled = N.iwae_log_likelihood(vae, params, x, random.key(2), num_samples=50, chunk_size=20, compile=True)
    assert compiled.dtype == torch.float64
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=0)
    assert not torch.equal(compiled, N.iwae_log_likelihood(vae, params, x, random.key(3), 50, 20, compile=True))
