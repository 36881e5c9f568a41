"""Properties of the pure functions that take a key, a shape or a range, over generated inputs.

Each property is one that a plausible bug breaks: a sampler that ignores part of its key or shape,
a metric that is not symmetric where it should be, a subset drawn with replacement, a loss with its
sign or its margin flipped. Small sizes and few examples keep the file at a few seconds.
"""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fgm import bijectors as B
from fgm import distributions as D
from fgm import random
from fgm.metrics import frechet as F
from fgm.metrics import kid as K
from fgm.metrics import precision_recall as PR
from fgm.models import gan as G

FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**64 - 1)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
float_dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])


# --------------------------------------------------------------------------- fgm.random


@FAST
@given(seed=seeds, shape=shapes, dtype=float_dtypes)
def test_samplers_give_the_asked_shape_dtype_and_range(seed, shape, dtype):
    k = random.key(seed)
    u = random.uniform(k, shape, dtype)
    assert u.shape == shape and u.dtype == dtype
    assert u.numel() == 0 or (0 <= float(u.min()) and float(u.max()) < 1)
    z = random.normal(k, shape, dtype)
    assert z.shape == shape and z.dtype == dtype and torch.isfinite(z).all()
    draws = random.bernoulli(k, torch.full(shape, 0.5, dtype=dtype))
    assert draws.shape == shape and draws.dtype == dtype and set(draws.unique().tolist()) <= {0.0, 1.0}


@FAST
@given(seed=seeds, low=st.integers(-(2**40), 2**40), span=st.integers(1, 2**40), shape=shapes)
def test_randint_stays_in_its_range(seed, low, span, shape):
    x = random.randint(random.key(seed), low, low + span, shape)
    assert x.shape == shape and x.dtype == torch.int64
    assert x.numel() == 0 or (low <= int(x.min()) and int(x.max()) < low + span)


@FAST
@given(seed=seeds, n=st.integers(0, 300))
def test_permutation_is_a_permutation_of_any_length(seed, n):
    p = random.permutation(random.key(seed), n)
    assert p.dtype == torch.int64 and torch.equal(p.sort().values, torch.arange(n))


@FAST
@given(a=seeds, b=seeds)
def test_different_keys_draw_different_numbers(a, b):
    assume(random.key(a) != random.key(b))
    ka, kb = random.key(a), random.key(b)
    assert not torch.equal(random.uniform(ka, (32,)), random.uniform(kb, (32,)))
    assert not torch.equal(random.normal(ka, (32,)), random.normal(kb, (32,)))
    assert not torch.equal(random.permutation(ka, 32), random.permutation(kb, 32))


@FAST
@given(seed=seeds, n=st.integers(1, 8), m=st.integers(1, 8))
def test_the_ith_split_does_not_depend_on_how_many_are_drawn(seed, n, m):
    k = random.key(seed)
    assert random.split(k, n)[: min(n, m)] == random.split(k, m)[: min(n, m)]


@FAST
@given(seed=seeds, data=st.lists(st.integers(-(2**70), 2**70), min_size=1, max_size=6))
def test_fold_in_and_split_give_keys_distinct_from_each_other_and_the_parent(seed, data):
    k = random.key(seed)
    assume(len({d % 2**64 for d in data}) == len(data))  # fold_in reads its data modulo 2**64
    folded = [random.fold_in(k, d) for d in data]
    children = [k, *folded, *random.split(k, 4), *random.split(folded[0], 2)]
    assert len(set(children)) == len(children)
    # sibling streams are unrelated: their uniforms agree only by chance (2**-24 per value)
    u = [random.uniform(c, (256,)) for c in children[1:]]
    assert all(int((u[0] == v).sum()) <= 2 for v in u[1:])


@FAST
@given(seed=seeds, p=st.lists(st.floats(0, 1), min_size=1, max_size=20), q=st.floats(0, 1))
def test_bernoulli_draws_are_monotone_in_the_probability(seed, p, q):
    """One key, two probability vectors with ``p ≤ p'`` elementwise: every success under ``p`` is one under ``p'``."""
    k = random.key(seed)
    low = torch.tensor(p, dtype=torch.float64)
    high = low + q * (1 - low)
    assert (random.bernoulli(k, low) <= random.bernoulli(k, high)).all()
    assert torch.equal(random.bernoulli(k, torch.zeros_like(low)), torch.zeros_like(low))
    assert torch.equal(random.bernoulli(k, torch.ones_like(low)), torch.ones_like(low))


# --------------------------------------------------------------------------- metrics


def _features(seed, n, d, shift=0.0, scale=1.0):
    return random.normal(random.key(seed), (n, d), dtype=torch.float64) * scale + shift


@FAST
@given(seed=st.integers(0, 2**32), d=st.integers(1, 5), shift=st.floats(-3, 3), scale=st.floats(0.3, 3))
def test_frechet_distance_is_symmetric_non_negative_and_shift_invariant(seed, d, shift, scale):
    a = F.stats_from_features(_features(seed, 40, d))
    b = F.stats_from_features(_features(seed + 1, 50, d, shift, scale))
    ab, ba = F.frechet_distance_from_stats(a, b), F.frechet_distance_from_stats(b, a)
    assert ab >= 0 and ab == pytest.approx(ba, rel=1e-9, abs=1e-10)
    moved = [F.stats_from_features(x + 7.0) for x in (_features(seed, 40, d), _features(seed + 1, 50, d, shift, scale))]
    assert F.frechet_distance_from_stats(*moved) == pytest.approx(ab, rel=1e-7, abs=1e-8)


@FAST
@given(seed=st.integers(0, 2**32), d=st.integers(1, 5), c=st.lists(st.floats(-3, 3), min_size=5, max_size=5))
def test_frechet_distance_of_a_set_and_its_translate_is_the_squared_shift(seed, d, c):
    x = _features(seed, 30, d)
    shift = torch.tensor(c[:d], dtype=torch.float64)
    value = F.frechet_distance_from_stats(F.stats_from_features(x), F.stats_from_features(x + shift))
    assert value == pytest.approx(float(shift.square().sum()), rel=1e-8, abs=1e-8)


@FAST
@given(seed=st.integers(0, 2**32), n_a=st.integers(2, 12), n_b=st.integers(2, 12), d=st.integers(1, 4))
def test_mmd2_is_symmetric_and_ignores_the_order_of_rows(seed, n_a, n_b, d):
    x, y = _features(seed, n_a, d), _features(seed + 1, n_b, d, 0.5)
    value = K.mmd2_unbiased(x, y)
    assert K.mmd2_unbiased(y, x) == pytest.approx(value, rel=1e-10, abs=1e-12)
    px, py = random.permutation(random.key(seed), n_a), random.permutation(random.key(seed + 1), n_b)
    assert K.mmd2_unbiased(x[px], y[py]) == pytest.approx(value, rel=1e-10, abs=1e-12)


@FAST
@given(seed=st.integers(0, 2**32), n=st.integers(2, 30), subsets=st.integers(1, 6))
def test_kid_with_subsets_of_whole_sets_has_no_spread(seed, n, subsets):
    """``subset_size = N`` for both sets: drawn without replacement, every subset is the whole set."""
    a, b = _features(seed, n, 3), _features(seed + 1, n, 3, 0.3)
    result = K.kid(a, b, random.key(seed), num_subsets=subsets, subset_size=n)
    assert (result.num_subsets, result.subset_size, result.num_a, result.num_b) == (subsets, n, n, n)
    assert result.mean == pytest.approx(K.mmd2_unbiased(a, b), rel=1e-9, abs=1e-12)
    assert result.std == pytest.approx(0.0, abs=1e-9 * max(1.0, abs(result.mean)))


@FAST
@given(
    seed=st.integers(0, 2**32),
    n_a=st.integers(2, 40),
    n_b=st.integers(2, 40),
    size=st.integers(2, 50),
    subsets=st.integers(1, 5),
)
def test_kid_subsets_are_within_range_and_without_replacement(seed, n_a, n_b, size, subsets):
    size = min(size, n_a, n_b)
    idx_a, idx_b = K.subset_indices(random.key(seed), n_a, n_b, subsets, size)
    assert idx_a.shape == idx_b.shape == (subsets, size)
    for idx, n in ((idx_a, n_a), (idx_b, n_b)):
        assert int(idx.min()) >= 0 and int(idx.max()) < n
        assert all(len(set(row.tolist())) == size for row in idx)
    again = K.subset_indices(random.key(seed), n_a, n_b, subsets, size)
    assert torch.equal(again[0], idx_a) and torch.equal(again[1], idx_b)


@FAST
@given(seed=st.integers(0, 2**32), n_g=st.integers(5, 30), n_r=st.integers(5, 30), shift=st.floats(0, 3))
def test_precision_and_recall_swap_with_their_arguments_and_ignore_row_order(seed, n_g, n_r, shift):
    g, r = _features(seed, n_g, 3, shift), _features(seed + 1, n_r, 3)
    result = PR.precision_recall(g, r)
    assert 0 <= result.precision <= 1 and 0 <= result.recall <= 1
    swapped = PR.precision_recall(r, g)
    assert (swapped.precision, swapped.recall) == (result.recall, result.precision)
    shuffled = PR.precision_recall(g[random.permutation(random.key(seed), n_g)], r.flip(0))
    assert (shuffled.precision, shuffled.recall) == (result.precision, result.recall)
    assert (result.k, result.num_generated, result.num_real) == (3, n_g, n_r)


# --------------------------------------------------------------------------- bijectors


@FAST
@given(perms=st.lists(st.permutations(range(5)), min_size=1, max_size=4), seed=st.integers(0, 2**32))
def test_a_chain_of_permutations_is_their_composition_in_order(perms, seed):
    flow = B.chain([B.permute(p) for p in perms])
    params = flow.init(random.key(seed))
    x = _features(seed, 3, 5)
    y, log_det = flow.forward_and_log_det(params, x)
    expected = x
    for p in perms:  # the first bijector first
        expected = expected[:, list(p)]
    assert torch.equal(y, expected) and torch.equal(log_det, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(B.inverse(flow, params, y), x)


# --------------------------------------------------------------------------- GAN losses

logits = st.lists(st.floats(-20, 20), min_size=1, max_size=8)


@FAST
@given(real=logits, fake=logits, step=st.floats(0.01, 5))
def test_discriminator_losses_fall_as_reals_score_higher_and_fakes_lower(real, fake, step):
    n = min(len(real), len(fake))
    r, f = torch.tensor(real[:n], dtype=torch.float64), torch.tensor(fake[:n], dtype=torch.float64)
    for loss in (G.bce_discriminator_loss, G.hinge_discriminator_loss, G.wasserstein_critic_loss):
        value = loss(r, f)
        assert value.shape == (n,)
        assert (loss(r + step, f) <= value).all() and (loss(r, f - step) <= value).all()
    assert (G.bce_discriminator_loss(r, f) > 0).all() and (G.hinge_discriminator_loss(r, f) >= 0).all()
    # the hinge is zero exactly where both logits are beyond their margins (real >= 1, fake <= -1)
    for rr, ff in ((r, f), (r / 10, f / 10), (r.abs() + 1, -f.abs() - 1)):
        assert torch.equal(G.hinge_discriminator_loss(rr, ff) > 0, (rr < 1) | (ff > -1))
    assert torch.equal(G.wasserstein_critic_loss(r, f), -G.wasserstein_critic_loss(f, r))


@FAST
@given(fake=logits, step=st.floats(0.01, 5))
def test_generator_losses_fall_as_the_fakes_score_higher(fake, step):
    f = torch.tensor(fake, dtype=torch.float64)
    for name in ("non_saturating", "minimax", "hinge", "wgan_gp"):
        loss = G.get_loss(name).generator
        assert loss(f).shape == f.shape and (loss(f + step) < loss(f)).all(), name


# --------------------------------------------------------------------------- distributions


@FAST
@given(mu=st.floats(-2, 2), log_s=st.floats(-7, 3), levels=st.sampled_from([2, 16, 256]), seed=st.integers(0, 2**32))
def test_discretized_logistic_log_prob_is_a_log_mass(mu, log_s, levels, seed):
    """Every pixel level has a probability in (0, 1], so the summed log-probability is finite and at most 0."""
    x = random.randint(random.key(seed), 0, levels, (4, 1, 2, 3)).double() * 2 / (levels - 1) - 1
    mean, log_scale = torch.full_like(x, mu), torch.full_like(x, log_s)
    log_p = D.discretized_logistic_log_prob(mean, log_scale, x, levels)
    assert log_p.shape == (4,) and torch.isfinite(log_p).all() and (log_p <= 1e-12).all()


@FAST
@given(seed=st.integers(0, 2**32), d=st.integers(1, 6), m=st.floats(-3, 3), log_var=st.floats(-4, 4))
def test_diag_normal_log_prob_is_the_standard_normal_of_the_standardised_point(seed, d, m, log_var):
    z = _features(seed, 5, d)
    mean, lv = torch.full_like(z, m), torch.full_like(z, log_var)
    standardised = (z - mean) * math.exp(-0.5 * log_var)
    expected = D.std_normal_log_prob(standardised) - 0.5 * log_var * d
    torch.testing.assert_close(D.diag_normal_log_prob(z, mean, lv), expected, rtol=1e-10, atol=1e-10)
