import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgm import distributions as D

floats = st.floats(min_value=-5, max_value=5, allow_nan=False)


def test_std_normal_matches_torch():
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(D.std_normal_log_prob(z), ref)


def test_diag_normal_matches_torch():
    g = torch.Generator().manual_seed(1)
    z, m, lv = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    ref = torch.distributions.Normal(m, torch.exp(0.5 * lv)).log_prob(z).sum(-1)
    assert torch.allclose(D.diag_normal_log_prob(z, m, lv), ref)


@given(st.lists(floats, min_size=4, max_size=4), st.lists(floats, min_size=4, max_size=4))
@settings(max_examples=100, deadline=None)
def test_kl_nonnegative_and_matches_torch(mean, log_var):
    m = torch.tensor([mean], dtype=torch.float64)
    lv = torch.tensor([log_var], dtype=torch.float64)
    kl = D.kl_diag_normal_std_normal(m, lv)
    assert kl.item() >= 0
    q = torch.distributions.Normal(m, torch.exp(0.5 * lv))
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl, ref, rtol=1e-9, atol=1e-9)


def test_kl_exactly_zero_at_prior():
    zeros = torch.zeros(3, 8)
    assert torch.equal(D.kl_diag_normal_std_normal(zeros, zeros), torch.zeros(3))


def test_kl_equals_monte_carlo_estimate():
    g = torch.Generator().manual_seed(2)
    m, lv = torch.randn(1, 3, dtype=torch.float64, generator=g), torch.randn(1, 3, dtype=torch.float64, generator=g)
    eps = torch.randn(400_000, 3, dtype=torch.float64, generator=g)
    z = m + torch.exp(0.5 * lv) * eps
    mc = (D.diag_normal_log_prob(z, m, lv) - D.std_normal_log_prob(z)).mean()
    assert abs(mc - D.kl_diag_normal_std_normal(m, lv).item()) < 0.02


def test_bernoulli_matches_torch():
    g = torch.Generator().manual_seed(3)
    logits = 10 * torch.randn(4, 1, 5, 5, generator=g, dtype=torch.float64)
    x = (torch.rand(4, 1, 5, 5, generator=g) < 0.5).double()
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(-1)
    assert torch.allclose(D.bernoulli_log_prob(logits, x), ref)


def _all_levels(num_levels=256, dtype=torch.float64):
    return torch.arange(num_levels, dtype=dtype) * 2 / (num_levels - 1) - 1


@given(st.floats(min_value=-1.5, max_value=1.5), st.floats(min_value=-6, max_value=2))
@settings(max_examples=60, deadline=None)
def test_discretized_logistic_is_normalised(mu, log_s):
    """The 256 level probabilities sum to one: the NLL is a real code length."""
    x = _all_levels().view(256, 1, 1, 1)
    mean = torch.full_like(x, mu)
    log_scale = torch.full_like(x, log_s)
    logp = D.discretized_logistic_log_prob(mean, log_scale, x)
    total = torch.logsumexp(logp, 0).exp()
    assert torch.all(torch.isfinite(logp))
    assert abs(total.item() - 1) < 1e-6


def test_discretized_logistic_matches_cdf_differences():
    x = _all_levels()[torch.tensor([0, 1, 100, 254, 255])].view(5, 1, 1, 1)
    mean, log_scale = torch.full_like(x, 0.1), torch.full_like(x, math.log(0.05))
    s = math.exp(math.log(0.05))
    cdf = lambda v: torch.sigmoid((v - 0.1) / s)  # noqa: E731 - a one-line function beside its only use
    h = 1 / 255
    ref = cdf(x + h) - cdf(x - h)
    ref[0] = cdf(x[0] + h)
    ref[-1] = 1 - cdf(x[-1] - h)
    assert torch.allclose(D.discretized_logistic_log_prob(mean, log_scale, x).exp(), ref.flatten(), rtol=1e-9)


def test_discretized_logistic_gradients_in_tails_match_reference():
    """Far tails (bins 150 to 450 scales below the mean), off the log-scale clamp at -7.

    Below the clamp the log-scale gradient is zero by construction, so the test sits above it; a
    float64 CDF difference still resolves masses of ~1e-193 here, so it is the reference.
    """
    x = _all_levels().view(256, 1, 1, 1)
    mean, log_scale = torch.full_like(x, 2.0), torch.full_like(x, -5.0)  # mean outside [-1, 1]
    g_mean, g_scale = _logistic_grads(D.discretized_logistic_log_prob, mean, log_scale, x, torch.float32)
    r_mean, r_scale = _logistic_grads(_reference_discretized_logistic, mean, log_scale, x, torch.float64)
    assert torch.isfinite(g_mean).all() and torch.isfinite(g_scale).all()
    assert (r_scale[:-1].abs() > 100).all()  # far from the clamp's zero gradient (the top bin holds μ = 2)
    torch.testing.assert_close(g_mean.double(), r_mean, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(g_scale.double(), r_scale, rtol=1e-4, atol=1e-3)


def test_discretized_logistic_log_scale_clamped_at_minus_7():
    """Below -7 the log-scale is clamped: same value as at -7 and no gradient."""
    x = _all_levels()[torch.tensor([0, 128, 255])].view(3, 1, 1, 1)
    mean = torch.full_like(x, 0.01)
    at_clamp = D.discretized_logistic_log_prob(mean, torch.full_like(x, -7.0), x)
    log_scale = torch.full_like(x, -9.0, requires_grad=True)
    below = D.discretized_logistic_log_prob(mean, log_scale, x)
    assert torch.equal(below, at_clamp)
    below.sum().backward()
    assert torch.equal(log_scale.grad, torch.zeros_like(x))


def test_bits_per_dim():
    assert math.isclose(D.bits_per_dim(torch.tensor(3072 * math.log(2.0)), 3072).item(), 1.0, rel_tol=1e-6)


def _reference_discretized_logistic(mean, log_scale, x, num_levels=256):
    """The bin masses as plain CDF differences in float64: independent of the log-space formula."""
    h = 1 / (num_levels - 1)
    s = torch.exp(log_scale.clamp(min=-7.0))
    cdf_plus = torch.sigmoid((x + h - mean) / s)
    cdf_minus = torch.sigmoid((x - h - mean) / s)
    p = torch.where(x < -1 + 1e-3, cdf_plus, torch.where(x > 1 - 1e-3, 1 - cdf_minus, cdf_plus - cdf_minus))
    return torch.log(p).flatten(1).sum(-1)


def _logistic_grads(fn, mean, log_scale, x, dtype):
    mean = mean.to(dtype).requires_grad_(True)
    log_scale = log_scale.to(dtype).requires_grad_(True)
    fn(mean, log_scale, x.to(dtype)).sum().backward()
    return mean.grad, log_scale.grad


def test_discretized_logistic_gradient_finite_for_wide_logistics():
    """At log_scale >= 13 a bin's width in units of s is ~1e-8: exp(-a) rounds to 1 in float32.

    The log-probability stays finite; its gradient must too (an unsafe ``torch.where`` turns the
    unused branch's infinite derivative into NaN), and must match a float64 CDF difference.
    """
    x = _all_levels().view(256, 1, 1, 1)
    for log_s in (13.0, 16.0, 20.0, 40.0):
        mean, log_scale = torch.full_like(x, 0.1), torch.full_like(x, log_s)
        g_mean, g_scale = _logistic_grads(D.discretized_logistic_log_prob, mean, log_scale, x, torch.float32)
        assert torch.isfinite(g_mean).all() and torch.isfinite(g_scale).all(), log_s
        if log_s <= 16.0:  # the float64 CDF difference is still accurate here
            r_mean, r_scale = _logistic_grads(_reference_discretized_logistic, mean, log_scale, x, torch.float64)
            # d log P / d log s ≈ -1 for interior bins (P ∝ 1/s), ≈ 0 at the edges (P → 1/2)
            torch.testing.assert_close(g_scale.double(), r_scale, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(g_mean.double(), r_mean, rtol=1e-3, atol=1e-6)
