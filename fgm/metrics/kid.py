"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² over random subsets.

KID compares two feature sets with the squared maximum mean discrepancy under
the cubic polynomial kernel

    k(x, y) = (xᵀy / d + 1)³,

estimated without bias (the diagonal ``k(xᵢ, xᵢ)`` terms are left out):

    MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m-1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (n(n-1)) - 2 Σ_{i,j} k(xᵢ, yⱼ) / (mn).

Unlike FID it has no bias at small N (its expectation is the population
MMD² for any subset size), so it can be slightly negative for two samples of
one distribution, and values at different N are comparable; its spread is
large at small N. Following the reference code (and torch-fidelity, whose
defaults are used: 100 subsets of 1000 vectors, each subset drawn without
replacement), the estimate is averaged over random subsets and reported as
mean ± standard deviation (population std, ``ddof = 0``, as torch-fidelity).
The subset size is clipped to the smaller set. Subsets come from an explicit
:class:`fgm.random.Key`: the same key gives the same value.

Cost: ``3 × subsets × subset_size² × d`` multiply-adds (100 × 1000² × 2048 ≈
6·10¹¹ in float64 at the defaults), independent of N.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fgm import random

__all__ = ["KIDResult", "kid", "mmd2_unbiased", "polynomial_kernel", "subset_indices", "subset_mmd2"]

DEFAULT_SUBSETS = 100  # torch-fidelity's kid_subsets
DEFAULT_SUBSET_SIZE = 1000  # torch-fidelity's kid_subset_size


class KIDResult(NamedTuple):
    """KID as mean ± std over subsets, with the subset layout and both set sizes (always report them)."""

    mean: float
    std: float
    num_subsets: int
    subset_size: int
    num_a: int
    num_b: int

    def __str__(self) -> str:
        return (
            f"KID {self.mean:.5f} ± {self.std:.5f} ({self.num_subsets} subsets of {self.subset_size}; "
            f"N = {self.num_a} vs {self.num_b})"
        )


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    """``k(x, y) = (xᵀy / d + coef0) ** degree`` for all pairs.

    Args:
      x: ``[m, d]``.
      y: ``[n, d]``.
      degree, coef0: the kernel's degree and offset (KID: 3 and 1).

    Returns:
      ``[m, n]`` in the inputs' dtype.
    """
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² of two samples under :func:`polynomial_kernel` (the module docstring's formula).

    Args:
      x: ``[m, d]``, ``m ≥ 2``.
      y: ``[n, d]``, ``n ≥ 2``; computed in float64.

    Returns:
      A Python float (it may be slightly negative).
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD² needs at least 2 vectors per set, got {m} and {n}")
    x, y = x.detach().double(), y.detach().double()
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.sum() / (m * n))


def subset_indices(
    k: random.Key, num_a: int, num_b: int, num_subsets: int, subset_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the random subsets: each drawn without replacement, independently per subset and set.

    ``ka, kb = split(k)``; subset ``s`` of the first set is the first
    ``subset_size`` entries of ``permutation(fold_in(ka, s), num_a)``, of the
    second set the same with ``kb`` and ``num_b``.

    Args:
      k: the key.
      num_a, num_b: sizes of the two sets.
      num_subsets: ``S``.
      subset_size: ``m ≤ min(num_a, num_b)``.

    Returns:
      ``(idx_a, idx_b)``, ``int64 [S, m]`` each.
    """
    if not 2 <= subset_size <= min(num_a, num_b):
        raise ValueError(f"subset_size must be in [2, {min(num_a, num_b)}] (the smaller set), got {subset_size}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    ka, kb = random.split(k)
    idx_a = torch.stack([random.permutation(random.fold_in(ka, i), num_a)[:subset_size] for i in range(num_subsets)])
    idx_b = torch.stack([random.permutation(random.fold_in(kb, i), num_b)[:subset_size] for i in range(num_subsets)])
    return idx_a, idx_b


def subset_mmd2(
    features_a: torch.Tensor, features_b: torch.Tensor, idx_a: torch.Tensor, idx_b: torch.Tensor
) -> torch.Tensor:
    """:func:`mmd2_unbiased` of each subset pair ``(features_a[idx_a[s]], features_b[idx_b[s]])``.

    Args:
      features_a: ``[N_a, d]``.
      features_b: ``[N_b, d]``.
      idx_a, idx_b: ``int64 [S, m]`` (see :func:`subset_indices`).

    Returns:
      ``float64 [S]``.
    """
    values = [mmd2_unbiased(features_a[ia], features_b[ib]) for ia, ib in zip(idx_a, idx_b, strict=True)]
    return torch.tensor(values, dtype=torch.float64)


def kid(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    k: random.Key,
    num_subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
) -> KIDResult:
    """KID of two feature sets: mean ± std of :func:`mmd2_unbiased` over random subsets.

    Args:
      features_a: ``[N_a, d]`` (e.g. generated Inception features).
      features_b: ``[N_b, d]`` (e.g. real ones); the metric is symmetric.
      k: key for the subsets (:func:`subset_indices`).
      num_subsets: how many subsets (torch-fidelity's default 100).
      subset_size: vectors per subset (default 1000), clipped to ``min(N_a, N_b)``.

    Returns:
      :class:`KIDResult`.
    """
    if features_a.dim() != 2 or features_b.dim() != 2 or features_a.shape[1] != features_b.shape[1]:
        shapes = f"{tuple(features_a.shape)} and {tuple(features_b.shape)}"
        raise ValueError(f"expected [N, d] features of one d, got {shapes}")
    n_a, n_b = features_a.shape[0], features_b.shape[0]
    size = min(int(subset_size), n_a, n_b)
    idx_a, idx_b = subset_indices(k, n_a, n_b, num_subsets, size)
    values = subset_mmd2(features_a, features_b, idx_a, idx_b)
    return KIDResult(float(values.mean()), float(values.std(correction=0)), int(num_subsets), size, n_a, n_b)
