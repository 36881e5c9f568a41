"""Importance-sampled negative log-likelihood of a latent-variable model (the IWAE bound).

Burda et al. (2015), appendix A: with ``K`` samples ``z_k ~ q(z|x)``,

    log p(x) ≥ L_K(x) = log (1/K) Σ_k p(x, z_k) / q(z_k | x),

``L_1`` is the ELBO, ``L_K`` grows with ``K`` and tends to ``log p(x)``. The
reported NLL is ``-L_K``, an upper bound that tightens with ``K`` (state
``K`` with every number).

Any model works that gives a proposal ``q(z|x)`` (sampled from standard
normal noise, with its log-density) and a log joint ``log p(x, z)``: an
:class:`fgm.types.ImportanceModel`. A :class:`fgm.models.vae.VAE` is
accepted as it is (any prior: standard normal, flow, VampPrior) and turned
into one by :func:`fgm.models.vae.importance_model`.

Implementation notes, each guarding against a known mistake:

* The log-sum-exp runs over the ``K`` samples of *one* data point; the batch
  axis is never reduced inside it.
* Samples are processed in chunks of at most ``chunk_size`` (memory stays
  ``O(chunk_size · batch)``); a last, smaller chunk is kept, so no sample is
  dropped when ``K`` is not a multiple of ``chunk_size``.
* The running log-sum-exp is accumulated in float64.
* The ``K`` decoder passes of a chunk are batched with ``torch.func.vmap``
  over the sample axis: no Python loop over data points or samples. The
  proposal's parameters (the encoder pass) are computed once per chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fgm import random
from fgm.models import vae as vae_lib
from fgm.tree import TensorTree
from fgm.types import ImportanceModel

__all__ = [
    "as_importance_model",
    "compiled_log_importance_weights",
    "iwae_log_likelihood",
    "log_importance_weights",
    "nll",
]

# What the estimator takes: a model's ImportanceModel, or a VAE (converted by as_importance_model).
Model = ImportanceModel | vae_lib.VAE


def as_importance_model(model: Model) -> ImportanceModel:
    """``model`` if it is an :class:`fgm.types.ImportanceModel`, else :func:`fgm.models.vae.importance_model` of it."""
    return model if isinstance(model, ImportanceModel) else vae_lib.importance_model(model)


def log_importance_weights(model: Model, params: TensorTree, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``log w_k = log p(x, z_k) - log q(z_k|x)`` for a stack of noises.

    For a VAE, ``log p(x, z) = log p(x|z) + log p(z)`` and
    ``z_k = μ(x) + σ(x) ⊙ eps_k``.

    Args:
      model: an :class:`fgm.types.ImportanceModel` or a VAE.
      params: its parameters.
      x: ``[B, ...]`` data (``[B, C, H, W]`` in the likelihood's space for a VAE).
      eps: ``[k, B, *latent_shape]`` standard-normal noise, one slice per sample.

    Returns:
      ``[k, B]`` log-weights.
    """
    model = as_importance_model(model)
    q = model.proposal(params, x)

    def one_sample(e):
        z, log_q = model.sample(q, e)
        return model.log_joint(params, x, z) - log_q

    return torch.func.vmap(one_sample)(eps)


_COMPILED: dict[str, Callable] = {}


def compiled_log_importance_weights() -> Callable:
    """:func:`log_importance_weights` through ``torch.compile`` (one compiled function per process)."""
    if "log_w" not in _COMPILED:
        _COMPILED["log_w"] = torch.compile(log_importance_weights)
    return _COMPILED["log_w"]


def iwae_log_likelihood(
    model: Model,
    params: TensorTree,
    x: torch.Tensor,
    key: random.Key,
    num_samples: int = 1000,
    chunk_size: int = 100,
    compile: bool = False,
) -> torch.Tensor:
    """The IWAE estimate ``L_K(x)`` of ``log p(x)`` for each data point.

    Args:
      model: an :class:`fgm.types.ImportanceModel`, or a VAE (any prior:
        standard normal, flow, VampPrior).
      params: its parameters.
      x: ``[B, ...]`` data (``[B, C, H, W]`` in the likelihood's space for a VAE).
      key: noise key; chunk ``c`` uses ``fold_in(key, c)``.
      num_samples: ``K``.
      chunk_size: samples per vmapped chunk (memory bound).
      compile: compute each chunk's log-weights with ``torch.compile``
        (:func:`compiled_log_importance_weights`): the likelihood's
        elementwise work is fused into one pass instead of several passes
        over ``[chunk_size · B, D]`` tensors. Same noise, same float64
        accumulation; the log-weights agree to float32 rounding.

    Returns:
      ``[B]`` float64 estimates of ``log p(x)`` in nats.
    """
    log_weights = compiled_log_importance_weights() if compile else log_importance_weights
    model = as_importance_model(model)
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples}, {chunk_size}")
    batch = x.shape[0]
    running_max = torch.full((batch,), -math.inf, dtype=torch.float64, device=x.device)
    running_sum = torch.zeros(batch, dtype=torch.float64, device=x.device)  # Σ exp(log w - max)
    done = 0
    with torch.no_grad():
        for chunk, start in enumerate(range(0, num_samples, chunk_size)):
            k = min(chunk_size, num_samples - start)  # the last chunk may be smaller: keep it
            shape = (k, batch, *model.latent_shape)
            eps = random.normal(random.fold_in(key, chunk), shape, dtype=x.dtype, device=x.device)
            log_w = log_weights(model, params, x, eps).double()  # [k, B]
            new_max = torch.maximum(running_max, log_w.max(0).values)
            running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(log_w - new_max).sum(0)
            running_max = new_max
            done += k
    assert done == num_samples
    return running_max + torch.log(running_sum) - math.log(num_samples)


def nll(
    model: Model,
    params: TensorTree,
    x: torch.Tensor,
    key: random.Key,
    num_samples: int = 1000,
    chunk_size: int = 100,
    compile: bool = False,
) -> torch.Tensor:
    """``-L_K(x)``, the importance-sampled negative log-likelihood (an upper bound on ``-log p(x)``).

    Args:
      model, params, x, key, num_samples, chunk_size, compile: as in :func:`iwae_log_likelihood`.

    Returns:
      ``[B]`` float64 nats.
    """
    return -iwae_log_likelihood(model, params, x, key, num_samples, chunk_size, compile)
