"""Fréchet distance between Gaussians fitted to feature sets (the maths of FID).

FID (Heusel et al. 2017) fits ``N(μ₁, Σ₁)`` and ``N(μ₂, Σ₂)`` to Inception
features of two image sets and reports the squared Fréchet (2-Wasserstein)
distance between them:

    d² = ‖μ₁ - μ₂‖² + Tr(Σ₁ + Σ₂ - 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}).

The usual route, ``scipy.linalg.sqrtm(Σ₁ Σ₂)``, takes the square root of a
non-symmetric matrix and returns complex values (or fails) when the
covariances are singular, e.g. with fewer samples than feature dimensions.
Here ``Σ₁^{1/2}`` comes from a symmetric eigendecomposition and the trace of
the square root from the eigenvalues of the *symmetric* PSD matrix
``Σ₁^{1/2} Σ₂ Σ₁^{1/2}``, clipped at zero: always real, always finite.

Feature statistics are accumulated in one streaming pass in float64
(:class:`FeatureStats`), so no set of features has to be held in memory.
The features come from :mod:`fgm.metrics.inception`; :mod:`fgm.metrics.fid`
puts the two together.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

__all__ = [
    "FeatureStats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "init_stats",
    "mean_and_covariance",
    "update_stats",
]


class FeatureStats(NamedTuple):
    """Running sums for a mean and covariance, float64.

    Attributes:
      count: number of feature vectors seen (int64 scalar).
      total: ``[D]`` sum of the features.
      outer: ``[D, D]`` sum of ``f fᵀ``.
    """

    count: torch.Tensor
    total: torch.Tensor
    outer: torch.Tensor


def init_stats(dim: int) -> FeatureStats:
    """Empty statistics for ``dim``-dimensional features.

    Args:
      dim: feature dimension ``D``.

    Returns:
      :class:`FeatureStats` with count 0 and zero sums.
    """
    return FeatureStats(
        torch.zeros((), dtype=torch.int64),
        torch.zeros(dim, dtype=torch.float64),
        torch.zeros(dim, dim, dtype=torch.float64),
    )


def update_stats(stats: FeatureStats, features: torch.Tensor) -> FeatureStats:
    """Adds a batch of features; pure (returns new statistics).

    Args:
      stats: the running statistics.
      features: ``[N, D]``; converted to float64 and detached.

    Returns:
      New :class:`FeatureStats` including the batch.
    """
    f = features.detach().to(torch.float64)
    return FeatureStats(stats.count + f.shape[0], stats.total + f.sum(0), stats.outer + f.T @ f)


def mean_and_covariance(stats: FeatureStats) -> tuple[torch.Tensor, torch.Tensor]:
    """``μ = Σf / N`` and the unbiased ``Σ = (Σ f fᵀ - N μ μᵀ) / (N - 1)``.

    Args:
      stats: accumulated statistics.

    Returns:
      ``(mean [D], cov [D, D])`` float64, ``cov`` exactly symmetric.

    Raises:
      ValueError: fewer than two feature vectors.
    """
    n = int(stats.count)
    if n < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {n}")
    mean = stats.total / n
    cov = (stats.outer - n * torch.outer(mean, mean)) / (n - 1)
    return mean, (cov + cov.T) / 2  # exact symmetry despite rounding


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Squared Fréchet distance between ``N(mean1, cov1)`` and ``N(mean2, cov2)``.

    Args:
      mean1, mean2: ``[D]``.
      cov1, cov2: ``[D, D]`` symmetric PSD.

    Returns:
      ``‖μ₁-μ₂‖² + Tr Σ₁ + Tr Σ₂ - 2 Σᵢ √λᵢ``, with ``λᵢ`` the eigenvalues of
      ``Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` (clipped at 0), computed in float64; ``≥ 0``
      up to rounding.
    """
    m1, m2 = mean1.double(), mean2.double()
    c1, c2 = cov1.double(), cov2.double()
    root1 = _sqrt_psd(c1)
    middle = root1 @ c2 @ root1
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = eigenvalues.clamp(min=0).sqrt().sum()
    value = (m1 - m2).square().sum() + torch.trace(c1) + torch.trace(c2) - 2 * trace_sqrt
    return float(value)


def frechet_distance_from_stats(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """:func:`frechet_distance` of two accumulated feature sets.

    Warns (it does not fail) when a set has no more vectors than dimensions:
    its covariance is then singular and the value is biased upwards.

    Args:
      stats1, stats2: statistics of the two feature sets (same ``D``).

    Returns:
      The squared Fréchet distance, a Python float.
    """
    dim = stats1.total.shape[0]
    for name, s in (("first", stats1), ("second", stats2)):
        if int(s.count) <= dim:
            warnings.warn(
                f"the {name} set has {int(s.count)} feature vectors for {dim} dimensions: its covariance "
                "is singular and the Fréchet distance is biased upwards; report N with the value",
                stacklevel=2,
            )
    return frechet_distance(*mean_and_covariance(stats1), *mean_and_covariance(stats2))
