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
    "sample_size_warning",
    "stats_from_features",
    "stats_from_mean_and_covariance",
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


def stats_from_features(features: torch.Tensor) -> FeatureStats:
    """:class:`FeatureStats` of one feature matrix held in memory (``update_stats(init_stats(D), features)``).

    Args:
      features: ``[N, D]``.
    """
    return update_stats(init_stats(features.shape[1]), features)


def stats_from_mean_and_covariance(mean: torch.Tensor, cov: torch.Tensor, count: int) -> FeatureStats:
    """The running sums that give ``mean`` and the unbiased ``cov`` over ``count`` vectors.

    Inverts :func:`mean_and_covariance`: ``Σf = N μ`` and ``Σ f fᵀ = (N - 1) Σ + N μ μᵀ``
    (e.g. for statistics imported from a pytorch-fid ``.npz`` file that records ``N``).

    Args:
      mean: ``[D]``.
      cov: ``[D, D]``.
      count: ``N ≥ 2``.
    """
    if int(count) < 2:
        raise ValueError(f"count must be at least 2, got {count}")
    m, c = mean.detach().double(), cov.detach().double()
    n = int(count)
    return FeatureStats(torch.tensor(n, dtype=torch.int64), n * m, (n - 1) * c + n * torch.outer(m, m))


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
      ``Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` (clipped at 0), computed in float64. A distance
      is never negative: a sum that rounds below zero (two nearly equal
      Gaussians) is returned as ``0.0``.
    """
    m1, m2 = mean1.double(), mean2.double()
    c1, c2 = cov1.double(), cov2.double()
    root1 = _sqrt_psd(c1)
    middle = root1 @ c2 @ root1
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = eigenvalues.clamp(min=0).sqrt().sum()
    value = (m1 - m2).square().sum() + torch.trace(c1) + torch.trace(c2) - 2 * trace_sqrt
    return max(float(value), 0.0)


def sample_size_warning(stats1: FeatureStats, stats2: FeatureStats) -> str | None:
    """The warning for a set with no more vectors than dimensions, as data (``None`` when both are larger).

    With ``N ≤ D`` a covariance is singular and the Fréchet distance is
    biased upwards; callers store this text with the value (``results.json``)
    as well as showing it.

    Args:
      stats1, stats2: statistics of the two feature sets (same ``D``).

    Returns:
      One clause per small set, joined by ``" | "``, or ``None``.
    """
    return " | ".join(_small_set_messages(stats1, stats2)) or None


def _small_set_messages(stats1: FeatureStats, stats2: FeatureStats) -> list[str]:
    dim = stats1.total.shape[0]
    return [
        f"the {name} set has {int(s.count)} feature vectors for {dim} dimensions: its covariance "
        "is singular and the Fréchet distance is biased upwards; report N with the value"
        for name, s in (("first", stats1), ("second", stats2))
        if int(s.count) <= dim
    ]


def frechet_distance_from_stats(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """:func:`frechet_distance` of two accumulated feature sets.

    Warns (it does not fail) when a set has no more vectors than dimensions:
    its covariance is then singular and the value is biased upwards
    (:func:`sample_size_warning` gives the same text as data).

    Args:
      stats1, stats2: statistics of the two feature sets (same ``D``).

    Returns:
      The squared Fréchet distance, a Python float.
    """
    for message in _small_set_messages(stats1, stats2):
        warnings.warn(message, stacklevel=2)
    return frechet_distance(*mean_and_covariance(stats1), *mean_and_covariance(stats2))
