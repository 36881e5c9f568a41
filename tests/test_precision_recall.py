"""Improved precision/recall: synthetic sets with known answers, chunking, and torch-fidelity's implementation."""

import math

import pytest
import torch

from fgm import random
from fgm.metrics import precision_recall as P

# Ten modes on a circle of radius 60 in 2-d: neighbours are ~37 apart, each mode has unit variance.
CENTERS = torch.tensor(
    [[60 * math.cos(2 * math.pi * i / 10), 60 * math.sin(2 * math.pi * i / 10)] for i in range(10)],
    dtype=torch.float64,
)


def mixture(key, n, modes):
    k1, k2 = random.split(key)
    which = torch.tensor(modes)[random.randint(k1, 0, len(modes), (n,))]
    return CENTERS[which] + random.normal(k2, (n, 2), dtype=torch.float64)


def test_identical_sets_give_one_exactly(key):
    x = random.normal(key, (300, 16), dtype=torch.float64)
    assert P.precision_recall(x, x)[:2] == (1.0, 1.0)  # every vector is inside its own ball


def test_two_draws_of_one_distribution_give_nearly_one(key):
    k1, k2 = random.split(key)
    result = P.precision_recall(mixture(k1, 2000, range(10)), mixture(k2, 2000, range(10)))
    assert result.precision > 0.95 and result.recall > 0.95


def test_disjoint_supports_give_zero(key):
    k1, k2 = random.split(key)
    far = mixture(k1, 500, range(10)) + 1000.0
    assert P.precision_recall(far, mixture(k2, 500, range(10)))[:2] == (0.0, 0.0)


def test_half_the_modes_gives_recall_one_half_and_full_precision(key):
    k1, k2 = random.split(key)
    result = P.precision_recall(mixture(k1, 2000, range(5)), mixture(k2, 2000, range(10)))
    assert result.precision > 0.95
    assert result.recall == pytest.approx(0.5, abs=0.04)
    swapped = P.precision_recall(mixture(k2, 2000, range(10)), mixture(k1, 2000, range(5)))  # roles reversed
    assert swapped.recall > 0.95 and swapped.precision == pytest.approx(0.5, abs=0.04)


def test_radii_are_the_kth_neighbour_without_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    # neighbours of 0: 1, 3, 7 → k=1: 1², k=2: 3²; of 7: 3 (4), 1 (6), 0 (7)
    assert P.knn_radii(x, k=1).tolist() == [1.0, 1.0, 4.0, 16.0]
    assert P.knn_radii(x, k=2).tolist() == [9.0, 4.0, 9.0, 36.0]
    with pytest.raises(ValueError, match="k must be"):
        P.knn_radii(x, k=4)


def test_ball_boundary_counts_as_inside():
    reference = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    radii = torch.tensor([4.0, 0.25], dtype=torch.float64)  # squared: radius 2 and 0.5
    queries = torch.tensor([[2.0], [-2.0], [2.5], [-2.1]], dtype=torch.float64)
    assert P.in_manifold(queries, reference, radii).tolist() == [True, True, True, False]


def test_chunking_does_not_change_the_answer(key):
    k1, k2 = random.split(key)
    g, r = random.normal(k1, (257, 32)), random.normal(k2, (301, 32)) * 1.2
    whole = P.precision_recall(g, r, chunk_size=10_000)
    for chunk in (1, 7, 100):
        assert P.precision_recall(g, r, chunk_size=chunk) == whole
    # matrix products round differently per block size: equal to float64 rounding, not bit for bit
    torch.testing.assert_close(P.knn_radii(r.double(), chunk_size=13), P.knn_radii(r.double(), chunk_size=1000))


def test_squared_distances_match_cdist(key):
    k1, k2 = random.split(key)
    x, y = random.normal(k1, (20, 64), dtype=torch.float64), random.normal(k2, (30, 64), dtype=torch.float64)
    torch.testing.assert_close(P.squared_distances(x, y), torch.cdist(x, y).square(), rtol=1e-12, atol=1e-10)
    assert P.squared_distances(x, x).diagonal().min() >= 0


@pytest.mark.parametrize("dim, shift", [(4, 1.0), (64, 0.2)])
def test_equals_torch_fidelity(key, dim, shift):
    """torch-fidelity's full-matrix and chunked ('save_cpu_ram') paths, on the same float64 features."""
    prc = pytest.importorskip("torch_fidelity.metric_prc", reason="pip install torch-fidelity (a dev dependency)")
    k1, k2 = random.split(key)
    generated = random.normal(k1, (700, dim), dtype=torch.float64) + shift
    real = random.normal(k2, (800, dim), dtype=torch.float64)
    ours = P.precision_recall(generated, real, k=3, chunk_size=128)
    full = prc.calculate_precision_recall_full(generated, real, neighborhood=3, batch_size=10000)
    part = prc.calculate_precision_recall_part(generated, real, neighborhood=3, batch_size=256)
    assert 0.3 < ours.precision < 0.8 and 0.3 < ours.recall < 0.8  # a case where the balls matter
    # torch-fidelity averages in float32; 1/N = 1.25e-3, so 1e-6 still means the same counts
    assert (ours.precision, ours.recall) == pytest.approx(full, abs=1e-6)
    assert (ours.precision, ours.recall) == pytest.approx(part, abs=1e-6)
    assert ours[2:] == (3, 700, 800)
    other_k = P.precision_recall(generated, real, k=5)
    assert (other_k.precision, other_k.recall) == pytest.approx(
        prc.calculate_precision_recall_full(generated, real, neighborhood=5), abs=1e-6
    )


def test_result_says_k_and_n_and_bad_shapes_are_refused(key):
    x = random.normal(key, (50, 3))
    text = str(P.precision_recall(x, x[:40]))
    assert "k = 3" in text and "N = 50 generated vs 40 real" in text
    with pytest.raises(ValueError, match="one d"):
        P.precision_recall(x, x[:, :2])
