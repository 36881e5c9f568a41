"""Fréchet distance against closed forms and scipy; streaming statistics against numpy."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgm import random
from fgm.metrics import frechet as F


def random_spd(key, dim, condition=10.0):
    q, _ = torch.linalg.qr(random.normal(key, (dim, dim), dtype=torch.float64))
    eig = torch.logspace(0, np.log10(condition), dim, dtype=torch.float64)
    return (q * eig) @ q.T


def test_streaming_statistics_match_numpy(key):
    x = random.normal(key, (1000, 6), dtype=torch.float64) * torch.arange(1.0, 7.0, dtype=torch.float64) + 3
    stats = F.init_stats(6)
    for chunk in x.split(137):  # uneven batches
        stats = F.update_stats(stats, chunk)
    mean, cov = F.mean_and_covariance(stats)
    assert int(stats.count) == 1000
    np.testing.assert_allclose(mean.numpy(), x.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-9, atol=1e-12)


def test_update_is_pure(key):
    stats = F.update_stats(F.init_stats(3), random.normal(key, (5, 3)))
    before = [t.clone() for t in stats]
    F.update_stats(stats, random.normal(key, (4, 3)))
    assert all(torch.equal(a, b) for a, b in zip(before, stats, strict=True))


def test_distance_of_a_set_with_itself_is_zero(key):
    x = random.normal(key, (500, 8), dtype=torch.float64)
    stats = F.update_stats(F.init_stats(8), x)
    assert abs(F.frechet_distance_from_stats(stats, stats)) < 1e-9


@given(st.integers(0, 2**32), st.integers(1, 6))
@settings(max_examples=25, deadline=None)
def test_closed_form_for_diagonal_gaussians(seed, dim):
    """For diagonal covariances d² = ‖μ₁-μ₂‖² + Σ (σ₁ - σ₂)²."""
    k1, k2, k3, k4 = random.split(random.key(seed), 4)
    m1, m2 = random.normal(k1, (dim,), dtype=torch.float64), random.normal(k2, (dim,), dtype=torch.float64)
    s1 = random.uniform(k3, (dim,), dtype=torch.float64) + 0.1
    s2 = random.uniform(k4, (dim,), dtype=torch.float64) + 0.1
    expected = (m1 - m2).square().sum() + (s1 - s2).square().sum()
    got = F.frechet_distance(m1, torch.diag(s1**2), m2, torch.diag(s2**2))
    assert abs(got - expected.item()) < 1e-9 * max(1.0, expected.item())


@pytest.mark.parametrize("dim", [4, 32, 128])
def test_agrees_with_scipy_sqrtm_on_well_conditioned_cases(dim):
    k = random.key(dim)
    c1, c2 = random_spd(random.fold_in(k, 1), dim), random_spd(random.fold_in(k, 2), dim)
    m1, m2 = random.normal(random.fold_in(k, 3), (dim,), dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    covmean = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy())
    ref = float(((m1 - m2) ** 2).sum()) + np.trace(c1.numpy()) + np.trace(c2.numpy()) - 2 * np.trace(covmean).real
    got = F.frechet_distance(m1, c1, m2, c2)
    assert abs(got - ref) <= 1e-6 * abs(ref)


def test_fewer_samples_than_dimensions_warns_and_stays_finite(key):
    a = F.update_stats(F.init_stats(64), random.normal(key, (20, 64)))
    b = F.update_stats(F.init_stats(64), random.normal(random.fold_in(key, 1), (20, 64)) + 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = F.frechet_distance_from_stats(a, b)
    assert np.isfinite(value) and value > 0
    assert any("20 feature vectors for 64 dimensions" in str(w.message) for w in caught)


def test_covariance_needs_two_vectors():
    with pytest.raises(ValueError, match="at least 2"):
        F.mean_and_covariance(F.update_stats(F.init_stats(3), torch.zeros(1, 3)))


def test_empty_statistics_have_the_documented_types():
    stats = F.init_stats(3)
    assert stats.count.dtype == torch.int64 and stats.count.shape == () and int(stats.count) == 0
    assert stats.total.dtype == torch.float64 and stats.total.shape == (3,)
    assert stats.outer.dtype == torch.float64 and stats.outer.shape == (3, 3)
    assert not stats.total.any() and not stats.outer.any()


def test_float32_features_are_summed_in_float64():
    """``(1 + 2⁻¹²)²`` needs 25 significant bits: a float32 product would drop the last one."""
    f = torch.tensor([[1 + 2**-12, 1.0]], dtype=torch.float32)
    stats = F.update_stats(F.init_stats(2), f)
    assert stats.outer[0, 0].item() == (1 + 2**-12) ** 2 and stats.outer.dtype == torch.float64


def test_two_vectors_give_the_unbiased_covariance():
    stats = F.update_stats(F.init_stats(2), torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    mean, cov = F.mean_and_covariance(stats)
    assert torch.equal(mean, torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert torch.equal(cov, torch.tensor([[2.0, 4.0], [4.0, 8.0]], dtype=torch.float64))  # divided by N - 1 = 1


@pytest.mark.parametrize("which", ["first", "second"])
def test_warning_names_the_small_set_at_the_callers_line(key, which):
    """N = D is still singular; the warning points at the caller and says which set and what to do."""
    dim = 4
    small = F.update_stats(F.init_stats(dim), random.normal(key, (dim, dim)))
    large = F.update_stats(F.init_stats(dim), random.normal(random.fold_in(key, 1), (50, dim)))
    pair = (small, large) if which == "first" else (large, small)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F.frechet_distance_from_stats(*pair)
    # stacklevel=2 blames the caller: neither the library's own line nor pytest's frames above the test
    # (not `== __file__`: mutmut's trampoline sits between the two when mutation testing)
    assert len(caught) == 1 and caught[0].filename != F.__file__ and "_pytest" not in caught[0].filename
    assert str(caught[0].message) == (
        f"the {which} set has 4 feature vectors for 4 dimensions: its covariance is singular and the Fréchet "
        "distance is biased upwards; report N with the value"
    )


def test_a_distance_that_rounds_below_zero_is_zero():
    """A set against itself: the exact value is 0 and the float64 sum lands on either side of it.

    Without the clip, some of these seeds give about -1e-13 (checked when the test was written).
    """
    values = []
    for seed in range(20):
        stats = F.stats_from_features(random.normal(random.key(seed), (40, 8), dtype=torch.float64) * 3 + 1)
        mean, cov = F.mean_and_covariance(stats)
        values.append(F.frechet_distance(mean, cov, mean, cov))
    assert min(values) >= 0.0 and max(values) < 1e-10
    assert 0.0 in values


def test_sample_size_warning_is_data_too(key):
    dim = 4
    small = F.stats_from_features(random.normal(key, (dim, dim)))
    large = F.stats_from_features(random.normal(random.fold_in(key, 1), (50, dim)))
    assert F.sample_size_warning(large, large) is None
    assert F.sample_size_warning(small, large) == (
        "the first set has 4 feature vectors for 4 dimensions: its covariance is singular and the Fréchet "
        "distance is biased upwards; report N with the value"
    )
    both = F.sample_size_warning(small, small)
    assert both.count("feature vectors for 4 dimensions") == 2 and "the second set" in both
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F.frechet_distance_from_stats(small, small)
    assert len(caught) == 2 and " | ".join(str(w.message) for w in caught) == both  # the same text, one per set


def test_stats_from_mean_and_covariance_inverts_mean_and_covariance(key):
    stats = F.stats_from_features(random.normal(key, (30, 5), dtype=torch.float64) * 2 + 3)
    back = F.stats_from_mean_and_covariance(*F.mean_and_covariance(stats), int(stats.count))
    assert int(back.count) == 30 and back.count.dtype == torch.int64
    torch.testing.assert_close(back.total, stats.total, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(back.outer, stats.outer, rtol=1e-12, atol=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        F.stats_from_mean_and_covariance(back.total, back.outer, 1)


def _constant_feature_covariance():
    """A set whose second feature is constant (a unit that never changes): its variance rounds to -2.8e-17.

    ``x₀ = -1, 0, 1`` and ``x₁ = 0.3`` give ``mean = (0, 0.3)`` and, in float64, the covariance
    ``diag(1, -2.78e-17)``: off-diagonal exactly 0, a negative variance that is rounding only.
    """
    x = torch.tensor([[-1.0, 0.3], [0.0, 0.3], [1.0, 0.3]], dtype=torch.float64)
    mean, cov = F.mean_and_covariance(F.stats_from_features(x))
    assert cov[0, 1] == 0 and cov[1, 0] == 0 and -1e-16 < cov[1, 1] < 0  # the case this test is about
    return mean, cov


@pytest.mark.parametrize("order", ["constant first", "constant second"])
def test_a_negative_rounding_eigenvalue_counts_as_zero_not_as_its_size(order):
    """The distance is the closed form of the true (zero-variance) Gaussian, to float64 precision.

    Taking ``|λ|`` for the rounding eigenvalue would add ``√2.8e-17 ≈ 5e-9`` to the trace term (1e-8 to
    the distance): in the square root of the first covariance, or in the eigenvalues of the middle matrix.
    """
    mean, cov = _constant_feature_covariance()
    other_mean = mean + torch.tensor([0.5, -1.0], dtype=torch.float64)
    other_cov = torch.diag(torch.tensor([4.0, 9.0], dtype=torch.float64))
    # diagonal Gaussians: ‖Δμ‖² + Σ (σ₁ - σ₂)², with σ = (1, 0) and (2, 3)
    expected = 0.25 + 1.0 + (1.0 - 2.0) ** 2 + (0.0 - 3.0) ** 2
    pair = (mean, cov, other_mean, other_cov) if order == "constant first" else (other_mean, other_cov, mean, cov)
    assert abs(F.frechet_distance(*pair) - expected) < 1e-12
