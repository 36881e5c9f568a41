"""Log-densities and KL divergences as pure functions of tensors.

Conventions: every function returns one value per example, shape ``[batch]``,
summed over the event dimensions (everything after the first axis).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "bernoulli_log_prob",
    "bits_per_dim",
    "diag_normal_log_prob",
    "discretized_logistic_log_prob",
    "kl_diag_normal_std_normal",
    "std_normal_log_prob",
]

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(-1)


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)``.

    Args:
      z: ``[batch, ...]``.

    Returns:
      ``[batch]``: ``-1/2 Σ_d (z_d² + log 2π)``.
    """
    return -0.5 * _sum_event(z.square() + LOG_2PI)


def diag_normal_log_prob(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``log N(z; μ, diag(σ²))`` with ``log_var = log σ²``.

    Args:
      z, mean, log_var: ``[batch, dim]`` (broadcastable).

    Returns:
      ``[batch]``: ``-1/2 Σ_d ((z_d - μ_d)² / σ_d² + log σ_d² + log 2π)``.
    """
    return -0.5 * _sum_event((z - mean).square() * torch.exp(-log_var) + log_var + LOG_2PI)


def kl_diag_normal_std_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Analytic ``KL(N(μ, diag σ²) || N(0, I))``.

    ``KL = 1/2 Σ_d (μ_d² + σ_d² - 1 - log σ_d²)``, computed with ``expm1`` so
    that it is non-negative and exactly zero at ``μ = 0, log σ² = 0``.

    Args:
      mean, log_var: ``[batch, dim]``.

    Returns:
      ``[batch]``.
    """
    return 0.5 * _sum_event(mean.square() + torch.expm1(log_var) - log_var)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log Bern(x; sigmoid(logits))`` summed over pixels.

    ``Σ_i x_i ℓ_i - softplus(ℓ_i)``, stable for large ``|ℓ|``.

    Args:
      logits: ``[batch, ...]`` decoder outputs.
      x: ``[batch, ...]`` binary targets (0./1.).

    Returns:
      ``[batch]``.
    """
    return -_sum_event(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def discretized_logistic_log_prob(
    mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, num_levels: int = 256
) -> torch.Tensor:
    """Log-probability of pixel levels under a discretised logistic.

    Pixels take ``num_levels`` values ``x_k = 2k/(L-1) - 1`` in ``[-1, 1]``.
    Each gets the logistic mass of its bin ``[x - h, x + h]``, ``h = 1/(L-1)``,
    with the edge bins extended to ``±∞`` so the masses of the ``L`` levels
    sum to exactly one (a real probability, so the NLL is a code length):

        P(x) = σ((x + h - μ)/s) - σ((x - h - μ)/s)     for interior levels,
        P(-1) = σ((-1 + h - μ)/s),  P(1) = 1 - σ((1 - h - μ)/s).

    Computed in log space as in PixelCNN++ (Salimans et al. 2017).

    Args:
      mean: ``[batch, C, H, W]`` logistic locations ``μ``.
      log_scale: ``[batch, C, H, W]`` ``log s`` (clamped below at -7 for stability).
      x: ``[batch, C, H, W]`` pixel levels mapped to ``[-1, 1]``.
      num_levels: number of levels ``L``.

    Returns:
      ``[batch]`` log-probability in nats.
    """
    half_bin = 1.0 / (num_levels - 1)
    log_scale = log_scale.clamp(min=-7.0)
    inv_s = torch.exp(-log_scale)
    centered = x - mean
    plus = inv_s * (centered + half_bin)
    minus = inv_s * (centered - half_bin)
    log_cdf_plus = -F.softplus(-plus)  # log σ(plus)
    log_one_minus_cdf_minus = -F.softplus(minus)  # log (1 - σ(minus))
    # σ(a) - σ(b) = σ(a) (1 - σ(b)) (1 - e^{b - a}): every factor is computed
    # in log space, so tiny bins (small s) and far tails stay finite.
    log_mid = log_cdf_plus + log_one_minus_cdf_minus + _log1mexp(plus - minus)
    log_p = torch.where(
        x < -1.0 + 1e-3,
        log_cdf_plus,
        torch.where(x > 1.0 - 1e-3, log_one_minus_cdf_minus, log_mid),
    )
    return _sum_event(log_p)


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-a))`` for ``a > 0``, accurate for small and large ``a`` (Mächler 2012).

    ``log(-expm1(-a))`` below ``a = log 2``, ``log1p(-exp(-a))`` above. Each
    branch gets its argument clamped to its own side of ``log 2`` (the
    "safe where"): ``torch.where`` differentiates both branches, and the
    unused ``log1p(-exp(-a))`` at tiny ``a`` has an infinite derivative whose
    zero weight still makes the gradient ``0 · inf = NaN``.
    """
    cut = math.log(2.0)
    small = torch.log(-torch.expm1(-a.clamp(max=cut)))
    large = torch.log1p(-torch.exp(-a.clamp(min=cut)))
    return torch.where(a < cut, small, large)


def bits_per_dim(nll_nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Converts a per-example NLL in nats to bits per dimension.

    ``bpd = NLL / (D · log 2)``.

    Args:
      nll_nats: ``[batch]`` (or any shape) negative log-likelihoods in nats.
      num_dims: ``D``, the number of dimensions per example (e.g. ``C·H·W``).

    Returns:
      Bits per dimension, the shape of ``nll_nats``.
    """
    return nll_nats / (num_dims * math.log(2.0))
