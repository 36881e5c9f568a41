"""Improved precision and recall (Kynkäänniemi et al. 2019): k-NN manifolds in feature space.

Each set's manifold is the union of balls around its vectors, each ball's
radius the distance to that vector's k-th nearest neighbour in the same set
(``k = 3``; the vector itself is not counted):

    manifold(Φ) = ⋃_{φ ∈ Φ} B(φ, ‖φ - NN_k(φ, Φ)‖).

* **precision** = share of generated vectors inside the real manifold (are
  samples realistic?);
* **recall** = share of real vectors inside the generated manifold (is the
  data's variety covered?).

FID and KID fold both failures into one number; a model that draws only half
of the modes perfectly has precision ≈ 1 and recall ≈ 0.5. Both estimates
depend on N and k (a larger N gives smaller balls), so compare them only at
the same N; the paper uses 50k vs 50k, fgm's report 10k vs 10k. Distances are
computed in chunks of rows (``chunk_size × N`` squared distances at a time),
so 10k × 10k × 2048 never needs the full distance matrix (~0.8 GB in
float64); squared distances are compared, which gives the same decisions as
distances.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["PrecisionRecall", "in_manifold", "knn_radii", "precision_recall", "squared_distances"]

DEFAULT_K = 3


class PrecisionRecall(NamedTuple):
    """Precision and recall with their k and both set sizes (always report them)."""

    precision: float
    recall: float
    k: int
    num_generated: int
    num_real: int

    def __str__(self) -> str:
        return (
            f"precision {self.precision:.4f}, recall {self.recall:.4f} "
            f"(k = {self.k}; N = {self.num_generated} generated vs {self.num_real} real)"
        )


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``‖xᵢ - yⱼ‖²`` for all pairs, via ``‖x‖² + ‖y‖² - 2 xᵀy`` (clipped at 0).

    Args:
      x: ``[m, d]``.
      y: ``[n, d]`` (same dtype).

    Returns:
      ``[m, n]``.
    """
    d2 = x.square().sum(1, keepdim=True) + y.square().sum(1) - 2 * x @ y.T
    return d2.clamp_(min=0)


def knn_radii(features: torch.Tensor, k: int = DEFAULT_K, chunk_size: int = 1024) -> torch.Tensor:
    """Squared distance from each vector to its k-th nearest neighbour in the same set.

    The vector itself (distance 0) is the first of the sorted distances, so
    this is the ``(k + 1)``-th smallest, as in the reference code.

    Args:
      features: ``[N, d]``, ``N > k``.
      k: the neighbour (``k ≥ 1``).
      chunk_size: rows of the distance matrix computed at once.

    Returns:
      ``[N]`` squared radii, in ``features``' dtype.
    """
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N - 1] = [1, {n - 1}], got {k}")
    return torch.cat(
        [squared_distances(rows, features).kthvalue(k + 1, dim=1).values for rows in features.split(chunk_size)]
    )


def in_manifold(
    queries: torch.Tensor, reference: torch.Tensor, radii: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """Whether each query lies in some ball ``B(reference[j], √radii[j])`` (boundary included).

    Args:
      queries: ``[M, d]``.
      reference: ``[N, d]``.
      radii: ``[N]`` squared radii (:func:`knn_radii` of ``reference``).
      chunk_size: query rows at once (memory ``chunk_size × N``).

    Returns:
      ``bool [M]``.
    """
    return torch.cat([(squared_distances(q, reference) <= radii).any(1) for q in queries.split(chunk_size)])


def precision_recall(
    generated: torch.Tensor,
    real: torch.Tensor,
    k: int = DEFAULT_K,
    *,
    chunk_size: int = 1024,
    dtype: torch.dtype = torch.float64,
) -> PrecisionRecall:
    """Improved precision and recall of generated features against real ones.

    Args:
      generated: ``[N_g, d]`` features of the samples.
      real: ``[N_r, d]`` features of the data (the order matters: precision
        asks about ``generated``, recall about ``real``).
      k: neighbourhood size (the paper's 3).
      chunk_size: rows of distances at a time.
      dtype: computation dtype (float64 by default, so that ``‖x‖² + ‖y‖² -
        2xᵀy`` keeps the small distances of 2048-d features exact enough
        for the boundary decisions).

    Returns:
      :class:`PrecisionRecall`.
    """
    if generated.dim() != 2 or real.dim() != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(f"expected [N, d] features of one d, got {tuple(generated.shape)} and {tuple(real.shape)}")
    g, r = generated.detach().to(dtype), real.detach().to(dtype)
    precision = in_manifold(g, r, knn_radii(r, k, chunk_size), chunk_size).double().mean()
    recall = in_manifold(r, g, knn_radii(g, k, chunk_size), chunk_size).double().mean()
    return PrecisionRecall(float(precision), float(recall), int(k), g.shape[0], r.shape[0])
