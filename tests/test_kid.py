"""KID: unbiased MMD² with the cubic kernel, against hand-computed values and torch-fidelity's implementation."""

import numpy as np
import pytest
import torch

from fgm import random
from fgm.metrics import kid as K

tf_kid = pytest.importorskip("torch_fidelity.metric_kid", reason="pip install torch-fidelity (a dev dependency)")


def shifted_sets(key, n_a=600, n_b=700, d=16, shift=0.3):
    ka, kb = random.split(key)
    a = random.normal(ka, (n_a, d), dtype=torch.float64)
    b = random.normal(kb, (n_b, d), dtype=torch.float64) * 1.1 + shift
    return a, b


def test_cubic_kernel_by_hand():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([[3.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    # xᵀy = 1 and 0; d = 2: (1/2 + 1)³ = 3.375, (0 + 1)³ = 1
    assert torch.equal(K.polynomial_kernel(x, y), torch.tensor([[3.375, 1.0]], dtype=torch.float64))


def test_unbiased_mmd2_by_hand():
    """d = 1, k(a, b) = (ab + 1)³; x = {0, 1}, y = {1, 2}.

    within x: k(0,1) = 1 twice / (2·1) = 1; within y: k(1,2) = 27 twice / 2 = 27;
    across: k(0,1) + k(0,2) + k(1,1) + k(1,2) = 1 + 1 + 8 + 27 = 37, times 2 / (2·2) = 18.5.
    """
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[1.0], [2.0]])
    assert K.mmd2_unbiased(x, y) == 1 + 27 - 18.5


def test_unbiased_mmd2_sizes_may_differ_and_is_symmetric():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([[1.0], [2.0]])
    # within x: 2·(k(0,1) + k(0,3) + k(1,3)) / (3·2) = 2·(1 + 1 + 64) / 6 = 22
    # across: Σ over {0,1,3}×{1,2} = 1 + 1 + 8 + 27 + 64 + 343 = 444, times 2 / 6 = 148
    assert K.mmd2_unbiased(x, y) == pytest.approx(22 + 27 - 148, abs=1e-12)
    assert K.mmd2_unbiased(y, x) == pytest.approx(K.mmd2_unbiased(x, y), abs=1e-12)


def test_unbiased_mmd2_equals_torch_fidelity_on_one_subset(key):
    a, b = shifted_sets(key, 300, 300)
    ref = tf_kid.kernel_mmd(a.numpy(), b.numpy())  # defaults: poly, degree 3, gamma 1/d, coef0 1, unbiased
    assert K.mmd2_unbiased(a, b) == pytest.approx(ref, rel=1e-10)


def test_kid_with_the_same_subsets_equals_torch_fidelity(key):
    """Same subset indices → the same values subset by subset, mean and (population) std."""
    a, b = shifted_sets(key)
    result = K.kid(a, b, random.fold_in(key, 7), num_subsets=20, subset_size=250)
    idx_a, idx_b = K.subset_indices(random.fold_in(key, 7), a.shape[0], b.shape[0], 20, 250)
    ref = np.array([tf_kid.kernel_mmd(a[ia].numpy(), b[ib].numpy()) for ia, ib in zip(idx_a, idx_b, strict=True)])
    np.testing.assert_allclose(K.subset_mmd2(a, b, idx_a, idx_b).numpy(), ref, rtol=1e-10)
    assert result.mean == pytest.approx(ref.mean(), rel=1e-10)
    assert result.std == pytest.approx(ref.std(), rel=1e-8)  # np.std: ddof = 0, as torch-fidelity reports
    assert (result.num_subsets, result.subset_size, result.num_a, result.num_b) == (20, 250, 600, 700)


def test_kid_agrees_with_torch_fidelity_statistically(key):
    """Each draws its own subsets; both estimate the same expectation."""
    a, b = shifted_sets(key)
    ours = K.kid(a, b, key, num_subsets=50, subset_size=300)
    ref = tf_kid.kid_features_to_metric(a, b, kid_subsets=50, kid_subset_size=300, verbose=False)
    ref_mean, ref_std = ref[tf_kid.KEY_METRIC_KID_MEAN], ref[tf_kid.KEY_METRIC_KID_STD]
    assert ours.mean > 10 * ours.std / 50**0.5  # clearly non-zero, so the comparison means something
    assert abs(ours.mean - ref_mean) < 4 * ((ours.std**2 + ref_std**2) / 50) ** 0.5
    assert ours.std == pytest.approx(ref_std, rel=0.5)


def test_kid_is_deterministic_given_the_key_and_varies_with_it(key):
    a, b = shifted_sets(key, 200, 200)
    first = K.kid(a, b, random.key(3), num_subsets=5, subset_size=50)
    assert K.kid(a, b, random.key(3), num_subsets=5, subset_size=50) == first
    assert K.kid(a, b, random.key(4), num_subsets=5, subset_size=50).mean != first.mean
    state = torch.random.get_rng_state()
    K.kid(a, b, random.key(3), num_subsets=2, subset_size=50)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is neither read nor advanced


def test_subsets_are_without_replacement_and_independent(key):
    idx_a, idx_b = K.subset_indices(key, 100, 120, 30, 100)
    assert idx_a.shape == idx_b.shape == (30, 100)
    for row in idx_a:  # subset_size = N: every subset is a permutation of all rows
        assert torch.equal(row.sort().values, torch.arange(100))
    assert int(idx_b.max()) < 120 and len({tuple(r.tolist()) for r in idx_b}) == 30


def test_subset_size_is_clipped_to_the_smaller_set(key):
    a, b = shifted_sets(key, 40, 90)
    result = K.kid(a, b, key, num_subsets=3)  # default 1000 > 40
    assert result.subset_size == 40 and (result.num_a, result.num_b) == (40, 90)


def test_same_distribution_is_near_zero_and_may_be_negative(key):
    ka, kb = random.split(key)
    a = random.normal(ka, (800, 8), dtype=torch.float64)
    b = random.normal(kb, (800, 8), dtype=torch.float64)
    result = K.kid(a, b, key, num_subsets=20, subset_size=400)
    shifted = K.kid(a, b + 0.5, key, num_subsets=20, subset_size=400)
    assert abs(result.mean) < 3 * result.std and shifted.mean > 20 * abs(result.mean)
    assert "20 subsets of 400" in str(result) and "N = 800 vs 800" in str(result)


def test_bad_inputs_are_refused(key):
    with pytest.raises(ValueError, match="at least 2"):
        K.mmd2_unbiased(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="one d"):
        K.kid(torch.zeros(10, 3), torch.zeros(10, 4), key)
    with pytest.raises(ValueError, match="subset_size"):
        K.subset_indices(key, 10, 10, 3, 11)


def test_the_second_sets_subsets_are_drawn_independently_of_the_firsts(key):
    """Sets of equal size: were both subsets drawn with one key, every pair would be the same rows."""
    idx_a, idx_b = K.subset_indices(key, 200, 200, 50, 20)
    assert not any(set(a.tolist()) & set(b.tolist()) == set(a.tolist()) for a, b in zip(idx_a, idx_b, strict=True))
    # overlaps of two independent 20-subsets of 200: hypergeometric, mean 2; the same key would give 20 each
    overlaps = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(idx_a, idx_b, strict=True)]
    assert max(overlaps) < 10 and 0.5 < sum(overlaps) / len(overlaps) < 4
    assert len({tuple(r.tolist()) for r in idx_a}) == 50  # and each subset of a set is drawn afresh


def test_kid_equals_the_by_hand_estimate_with_the_documented_keys(key):
    """``ka, kb = split(k)``; subset ``s`` of a set is the first ``m`` of ``permutation(fold_in(k_set, s), N)``."""
    a, b = shifted_sets(key, 120, 120, d=4)
    k = random.fold_in(key, 11)
    ka, kb = random.split(k)
    values = []
    for s in range(6):
        ia, ib = (
            random.permutation(random.fold_in(ka, s), 120)[:30],
            random.permutation(random.fold_in(kb, s), 120)[:30],
        )
        values.append(tf_kid.kernel_mmd(a[ia].numpy(), b[ib].numpy()))
    result = K.kid(a, b, k, num_subsets=6, subset_size=30)
    assert result.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert result.std == pytest.approx(np.std(values), rel=1e-10)


@pytest.mark.parametrize(
    "n_a, n_b, asked, used", [(90, 40, 1000, 40), (40, 90, 1000, 40), (90, 40, 60, 40), (90, 70, 30, 30)]
)
def test_subset_size_is_clipped_to_either_set(key, n_a, n_b, asked, used):
    a, b = shifted_sets(key, n_a, n_b)
    result = K.kid(a, b, key, num_subsets=2, subset_size=asked)
    assert (result.subset_size, result.num_a, result.num_b, result.num_subsets) == (used, n_a, n_b, 2)
    idx_a, idx_b = K.subset_indices(key, n_a, n_b, 2, used)
    assert result.mean == pytest.approx(float(K.subset_mmd2(a, b, idx_a, idx_b).mean()), rel=1e-12)
