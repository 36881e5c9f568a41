r"""An exponential moving average of the generator's parameters, and BatchNorm statistics recomputed for it.

With ``init_state(..., ema=True)`` and ``build(..., ema_decay=β)`` the model
state holds, under ``model_state["generator_ema"]`` (:data:`~fgm.models.gan.model.EMA`),
an average of G's parameters, :math:`\bar\theta \leftarrow \beta_n \bar\theta + (1 - \beta_n)\,\theta`,
updated after every G step (:func:`ema_update`). ``generate`` then samples
from the average (the generator of Yazıcı et al. 2019, StyleGAN, BigGAN);
``evaluate`` still plays the game with the trained G. The average borrows
G's BatchNorm statistics; :func:`ema_variables_with_batch_stats` gives it
its own (:func:`recompute_batch_stats`).
"""

from __future__ import annotations

import torch

from fgm import nn as fnn
from fgm import random
from fgm.models.gan.model import EMA, GAN, latent_noise
from fgm.tree import TensorTree

__all__ = [
    "ema_decay_at",
    "ema_init",
    "ema_update",
    "ema_variables_with_batch_stats",
    "recompute_batch_stats",
]


def ema_init(g_params: TensorTree) -> dict[str, TensorTree]:
    """The moving average's state at step 0: a copy of G's parameters and an update count of 0.

    Returns:
      ``{"params": tree like g_params, "updates": float32 []}``; the count is
      a float tensor so that the state stacks and moves like parameters.
    """
    first = next(iter(g_params.values()), None) if isinstance(g_params, dict) else None
    device = first.device if first is not None else "cpu"
    return {
        "params": {k: v.detach().clone() for k, v in g_params.items()},
        "updates": torch.zeros((), dtype=torch.float32, device=device),
    }


def ema_decay_at(decay: float, updates: torch.Tensor) -> torch.Tensor:
    r"""The decay of update number ``n`` (0-based): :math:`\beta_n = \min(\beta, \frac{1 + n}{10 + n})`.

    The warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=n)``:
    early averages forget the random initialisation quickly (β₀ = 0.1), later
    ones average over about ``1 / (1 - β)`` updates.
    """
    return torch.clamp((1.0 + updates) / (10.0 + updates), max=decay)


def ema_update(ema: dict[str, TensorTree], g_params: TensorTree, decay: float) -> dict[str, TensorTree]:
    r"""One step of the average: :math:`\bar\theta \leftarrow \beta_n \bar\theta + (1 - \beta_n)\,\theta`.

    Pure (new tensors; works under ``vmap``), no gradient flows into it.

    Args:
      ema: from :func:`ema_init` or a previous call.
      g_params: the generator's parameters after its step.
      decay: β in ``[0, 1)``; :func:`ema_decay_at` gives the step's β_n.

    Returns:
      The new average and ``updates + 1``.
    """
    n = ema["updates"]
    params = {
        k: torch.lerp(g_params[k].detach(), v, ema_decay_at(decay, n.to(v.dtype))) for k, v in ema["params"].items()
    }
    return {"params": params, "updates": ema["updates"] + 1.0}


# BatchNorm's statistics and their reset values (torch's reset_running_stats)
_BATCH_STATS = {
    "running_mean": torch.zeros_like,
    "running_var": torch.ones_like,
    "num_batches_tracked": torch.zeros_like,
}


def recompute_batch_stats(
    gan: GAN,
    g_params: TensorTree,
    g_state: TensorTree,
    key: random.Key,
    num_batches: int = 300,
    batch_size: int = 64,
) -> TensorTree:
    r"""G's BatchNorm statistics recomputed for the weights ``g_params`` (e.g. the moving average of G).

    The running statistics in G's state were gathered for G's own weights; the
    average's activations have other means and variances, so sampling the
    average with G's statistics mismatches them (SWA's ``update_bn`` fixes the
    same thing). This resets every BatchNorm's statistics (mean 0, variance 1,
    count 0) and runs ``num_batches`` training-mode forwards of ``batch_size``
    latents, each moving them by the layer's momentum as in training (0.1:
    the reset values weigh :math:`0.9^{n}` at the end). Spectral-norm vectors
    (none in the built-in generators) are kept.

    Args:
      gan: the model definition.
      g_params: the generator weights to gather statistics for.
      g_state: G's layer state (the entries that are not BatchNorm statistics are kept).
      key: batch ``i`` draws its latents from ``fold_in(key, i)``.
      num_batches, batch_size: how many forwards, of how many latents.

    Returns:
      The new layer state, structured like ``g_state``.
    """
    state = {
        name: _BATCH_STATS[name.rsplit(".", 1)[-1]](value) if name.rsplit(".", 1)[-1] in _BATCH_STATS else value
        for name, value in g_state.items()
    }
    like = next(iter(g_params.values()))  # the latents' device and dtype
    with torch.no_grad():
        for i in range(num_batches):
            z = latent_noise(gan, random.fold_in(key, i), batch_size, like.device).to(like.dtype)
            _, state = gan.generate(g_params, state, z, train=True)
    return state


def ema_variables_with_batch_stats(
    gan: GAN, variables_tree: dict, key: random.Key, num_batches: int = 300, batch_size: int = 64
) -> dict:
    """Variables whose average of G carries its own BatchNorm statistics (:func:`recompute_batch_stats`).

    Args:
      gan: the model definition.
      variables_tree: from :func:`~fgm.models.gan.state.variables`.
      key, num_batches, batch_size: as in :func:`recompute_batch_stats`.

    Returns:
      ``variables_tree`` with ``"generator_ema"`` replaced (the same tree when there is no average).
    """
    if EMA not in variables_tree:
        return variables_tree
    params, state = fnn.split(gan.generator, variables_tree[EMA])
    state = recompute_batch_stats(gan, params, state, key, num_batches, batch_size)
    return {**variables_tree, EMA: fnn.merge(params, state)}
