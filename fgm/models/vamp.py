"""The VampPrior (Tomczak & Welling 2018): a mixture of the encoder's posteriors at learned pseudo-inputs.

With ``K`` learned pseudo-inputs ``u_1, ..., u_K`` (images, in the data's
range) and the VAE's own encoder ``q(z|x) = N(z; μ(x), diag σ²(x))``,

    p(z) = 1/K Σ_k q(z | u_k),
    log p(z) = logsumexp_k log q(z | u_k) - log K,

so the prior is the aggregate posterior of ``K`` made-up data points: the
optimum of the ELBO's prior for a fixed encoder, ``1/N Σ_n q(z|x_n)``, with
``N`` data points replaced by ``K ≪ N`` learned ones. It reads the encoder,
so it is a :class:`fgm.models.vae.Prior` whose ``view`` is the whole
parameter tree: ``log_prob`` and ``sample`` take ``{"encoder", "decoder",
"prior"}``; the pseudo-inputs are ``params["prior"]["pseudo_inputs"]``
(``[K, C, H, W]``) and train with the rest. There is no closed-form KL; the
ELBO uses the one-sample estimate ``log q(z|x) - log p(z)``
(:func:`fgm.models.vae.elbo_terms`), and the gradient reaches the encoder
through both terms.

Sampling draws its noise at the edge (:func:`mixture_noise`): ``[N, d + 1]``,
``ε ~ N(0, I)`` in the first ``d`` columns and ``v ~ U[0, 1)`` in the last;
``k = ⌊K v⌋`` picks the component and ``z = μ(u_k) + σ(u_k) ⊙ ε``.

Usage::

    model = vamp.with_vamp_prior(vae.make_vae(...), num_components=500)
    params = vae.init(model, key)                 # params["prior"] = {"pseudo_inputs": [500, C, H, W]}
    loss, metrics = vae.loss(model, params, x, eps)
    images = vae.generate(model, params, vae.prior_noise(model, key, 64))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fgm import random
from fgm.distributions import LOG_2PI
from fgm.models import vae as vae_lib
from fgm.tree import TensorTree

__all__ = [
    "component_index",
    "component_log_probs",
    "mixture_log_prob",
    "mixture_noise",
    "mixture_sample",
    "pseudo_inputs",
    "vamp_prior",
    "whole_tree",
    "with_vamp_prior",
]


def whole_tree(params: TensorTree) -> TensorTree:
    """The whole ``{"encoder", "decoder", "prior"}`` tree: the VampPrior's :attr:`~fgm.models.vae.Prior.view`."""
    return params


def component_log_probs(z: torch.Tensor, means: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """``log N(z_b; μ_k, diag σ²_k)`` for every latent ``b`` and component ``k``.

    ``log N(z; μ_k, diag σ²_k) = -1/2 Σ_j [(z_j - μ_kj)² / σ²_kj + log σ²_kj + log 2π]``.
    The quadratic is expanded,

        Σ_j (z_j - μ_kj)² / σ²_kj = Σ_j z_j² / σ²_kj - 2 Σ_j z_j μ_kj / σ²_kj + Σ_j μ_kj² / σ²_kj,

    into three matrix products (no ``[B, K, d]`` tensor: ~25 times faster on
    a CPU for ``K = 500``). Its terms can be large and cancel (``σ`` small,
    ``z`` near ``μ_k``), so they are computed in float64 and the result is
    cast back to ``z``'s dtype: closer to the exact value than the direct
    float32 formula.

    Args:
      z: ``[B, d]`` latents.
      means: ``[K, d]`` component means ``μ_k``.
      log_vars: ``[K, d]`` component log-variances ``log σ²_k``.

    Returns:
      ``[B, K]`` in ``z``'s dtype.
    """
    z64, mean64, log_var64 = z.double(), means.double(), log_vars.double()
    precision = torch.exp(-log_var64)  # [K, d]
    quadratic = (
        z64.square() @ precision.T - 2.0 * z64 @ (mean64 * precision).T + (mean64.square() * precision).sum(-1)
    )  # [B, K]
    return (-0.5 * (quadratic + log_var64.sum(-1) + z.shape[-1] * LOG_2PI)).to(z.dtype)


def mixture_log_prob(z: torch.Tensor, means: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """``log p(z)`` of the equal-weight Gaussian mixture ``p(z) = 1/K Σ_k N(z; μ_k, diag σ²_k)``.

    ``log p(z) = log Σ_k exp(a_k) - log K`` with ``a_k = log N(z; μ_k, diag σ²_k)``
    (:func:`component_log_probs`), through ``torch.logsumexp``, which
    subtracts ``m = max_k a_k`` before exponentiating:
    ``log Σ_k exp(a_k) = m + log Σ_k exp(a_k - m)``, every term ``≤ 1`` and
    the largest exactly 1, so nothing overflows and the sum is ``≥ 1``. Hence
    ``max_k a_k - log K ≤ log p(z) ≤ max_k a_k``.

    Args:
      z: ``[B, d]``.
      means: ``[K, d]``.
      log_vars: ``[K, d]``.

    Returns:
      ``[B]`` nats.
    """
    return torch.logsumexp(component_log_probs(z, means, log_vars), dim=-1) - math.log(means.shape[0])


def component_index(v: torch.Tensor, num_components: int) -> torch.Tensor:
    """``k = ⌊K v⌋``: the component of a uniform draw ``v ∈ [0, 1)``, each ``k`` with probability ``1/K``.

    Computed in float64, where ``K v`` is exact for float32 ``v`` (a 24-bit
    fraction times ``K < 2²⁹``), and clamped to ``K - 1`` for inputs outside
    ``[0, 1)``.

    Args:
      v: ``[N]`` uniform draws in ``[0, 1)``.
      num_components: ``K``.

    Returns:
      ``[N]`` int64 indices in ``[0, K)``.
    """
    return torch.floor(v.double() * num_components).long().clamp(0, num_components - 1)


def mixture_sample(means: torch.Tensor, log_vars: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``z = μ_k + σ_k ⊙ ε`` with ``k = ⌊K v⌋``: a draw of ``1/K Σ_k N(μ_k, diag σ²_k)`` from given noise.

    Args:
      means: ``[K, d]``.
      log_vars: ``[K, d]``.
      noise: ``[N, d + 1]`` from :func:`mixture_noise`: ``ε`` in the first
        ``d`` columns, ``v ∈ [0, 1)`` in the last.

    Returns:
      ``[N, d]``, differentiable in ``means`` and ``log_vars``.
    """
    eps, v = noise[:, :-1], noise[:, -1]
    k = component_index(v, means.shape[0])
    return vae_lib.reparameterize(means[k], log_vars[k], eps)


def mixture_noise(key: random.Key, n: int, latent_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The noise :func:`mixture_sample` takes: ``[ε | v]``, ``ε ~ N(0, I)`` and ``v ~ U[0, 1)``.

    Args:
      key: the noise key (split in two: one key for ``ε``, one for ``v``).
      n: number of draws ``N``.
      latent_dim: ``d``.
      device: where to draw it (the same numbers on every device).

    Returns:
      ``[N, d + 1]`` float32.
    """
    k_eps, k_component = random.split(key)
    eps = random.normal(k_eps, (n, latent_dim), device=device)
    v = random.uniform(k_component, (n, 1), device=device)
    return torch.cat([eps, v], dim=1)


def pseudo_inputs(params: TensorTree, bounds: tuple[float, float]) -> torch.Tensor:
    """The pseudo-inputs ``u_k``: the learned ``params["prior"]["pseudo_inputs"]`` clipped to the data's range.

    The clip (the hardtanh of the authors' code) keeps the encoder's inputs
    in the range it sees data in; it passes no gradient to a value outside
    the range, so such a pixel stays at the bound.

    Args:
      params: the VAE's whole tree.
      bounds: ``(low, high)``: the data's range (``(0, 1)`` for binarised
        images, ``(-1, 1)`` for 256-level ones).

    Returns:
      ``[K, C, H, W]``.
    """
    low, high = bounds
    return params["prior"]["pseudo_inputs"].clamp(low, high)


def vamp_prior(
    encode: Callable[[TensorTree, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    image_shape: tuple[int, int, int],
    num_components: int,
    bounds: tuple[float, float] = (0.0, 1.0),
    init_std: float = 0.01,
) -> vae_lib.Prior:
    """The VampPrior ``p(z) = 1/K Σ_k q(z | u_k)`` over an encoder's posteriors.

    Initialisation: ``u_k ~ N(c, (s·(high - low))²)`` pixel-wise, ``c`` the
    middle of ``bounds`` (0.5 for binarised data) and ``s = init_std``: all
    components start near one grey image (the mixture starts close to a
    single Gaussian, ``q(z | grey)``), apart enough to break the symmetry,
    and every pixel inside the clip, so every pixel gets a gradient. (The
    authors' code draws ``N(m, 0.01)`` with ``m`` an option; its default,
    ``-0.05``, lies below its clip at 0.)

    Args:
      encode: ``(encoder_params, x [K, C, H, W]) -> (mean, log_var)``, each
        ``[K, d]``: the VAE's encoder (:attr:`fgm.models.vae.VAE.encode`).
      image_shape: ``(C, H, W)``.
      num_components: ``K ≥ 1``.
      bounds: the data's range ``(low, high)``; pseudo-inputs are clipped to it.
      init_std: the initial spread, as a fraction of the range.

    Returns:
      A :class:`fgm.models.vae.Prior` with ``view`` = :func:`whole_tree`,
      ``noise`` = :func:`mixture_noise` and no analytic KL; its ``init(key)``
      returns ``{"pseudo_inputs": [K, C, H, W]}``.

    Raises:
      ValueError: ``num_components < 1`` or ``low >= high``.
    """
    low, high = bounds
    if num_components < 1 or not low < high:
        raise ValueError(f"need num_components >= 1 and low < high, got {num_components} and bounds {bounds}")
    centre, spread = (low + high) / 2.0, init_std * (high - low)

    def init(key):
        return {"pseudo_inputs": centre + spread * random.normal(key, (num_components, *image_shape))}

    def components(params):
        return encode(params["encoder"], pseudo_inputs(params, bounds))

    def log_prob(params, z):
        return mixture_log_prob(z, *components(params))

    def sample(params, noise):
        return mixture_sample(*components(params), noise)

    return vae_lib.Prior(init, log_prob, sample, analytic_kl=None, noise=mixture_noise, view=whole_tree)


def with_vamp_prior(
    vae: vae_lib.VAE, num_components: int, bounds: tuple[float, float] = (0.0, 1.0), init_std: float = 0.01
) -> vae_lib.VAE:
    """``vae`` with its prior replaced by the VampPrior over its own encoder.

    Args:
      vae: any :class:`fgm.models.vae.VAE` (its prior is discarded).
      num_components: ``K``, the number of pseudo-inputs.
      bounds: the data's range, as in :func:`vamp_prior`.
      init_std: as in :func:`vamp_prior`.

    Returns:
      The same VAE with ``prior = vamp_prior(vae.encode, vae.image_shape, ...)``.
    """
    return vae._replace(prior=vamp_prior(vae.encode, vae.image_shape, num_components, bounds, init_std))
