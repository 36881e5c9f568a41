"""Latent interpolations: paths between two latent points, and the strips of images along them.

Pure functions, no file I/O (:mod:`fgm.figures` writes the pictures).
Two latent points ``a`` and ``b`` are joined by ``n`` interior points plus
both ends (:func:`interpolation_weights`, ``n = 10`` by default: 12 images,
weights ``0, 1/11, ..., 1``); ``w = 0`` is exactly ``a`` and ``w = 1``
exactly ``b``. The path is linear, ``(1 - w) a + w b``; for Gaussian noise a
spherical path (:func:`slerp`) is drawn as well, because a straight line
between two draws of ``N(0, I)`` in ``d`` dimensions passes through points
of norm ``≈ √(d/2)``, not ``≈ √d``, where the prior puts almost no mass.

The kinds of strips:

* ``prior_noise``: the Gaussian noise the model samples from, interpolated
  linearly (the GAN's ``z``; ``vae_std``'s ``z``; ``vae_flow``'s *base*
  ``u``, then ``z = f(u)``).
* ``prior_noise_slerp``: the same pairs on the spherical path.
* ``prior_latent`` (flow prior only): the *latent* points ``z = f(u_a)``,
  ``f(u_b)`` of the same pairs, interpolated linearly in ``z``. For a prior
  whose noise is no point of a continuous space (the VampPrior's carries the
  choice of a mixture component), the only prior strip: two prior draws
  ``z_a, z_b ~ p(z)``, interpolated linearly in ``z``.
* ``test_latent`` (VAEs): posterior means ``μ(x_a)``, ``μ(x_b)`` of two
  test images, interpolated linearly in ``z``; the real images are shown at
  both ends of the strip (framed in red).
* ``test_base`` (flow prior only): the same encodings mapped to the base
  space, ``f⁻¹(μ)``, interpolated there and pushed back through ``f``.

The pairs come from one fixed key (:data:`INTERPOLATION_SEED`), independent
of the run's seed: models with the same latent size get the same noise pairs,
and every VAE on a dataset the same test-image pairs, so strips can be
compared side by side.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fgm import random
from fgm.models import gan as gan_lib
from fgm.models import vae as vae_lib

__all__ = [
    "INTERIOR_POINTS",
    "INTERPOLATION_SEED",
    "PAIRS",
    "Strip",
    "gan_interpolations",
    "interpolation_weights",
    "lerp",
    "path_statistics",
    "slerp",
    "strip_grid",
    "test_pairs",
    "vae_interpolations",
]

INTERPOLATION_SEED = 6  # fixed across runs and seeds: the same pairs everywhere
INTERIOR_POINTS = 10  # the study asks for "10 points between the two original points"
PAIRS = 6  # pairs (rows) per kind of strip
_REAL_FRAME = (1.0, 0.0, 0.0)  # red


class Strip(NamedTuple):
    """One kind of interpolation for several pairs.

    Attributes:
      images: ``[P, W, C, H, W']`` generated images in ``[0, 1]``; pair ``p``'s
        strip runs from its first point (column 0, weight 0) to its second
        (column ``W - 1``, weight 1).
      caption: what was interpolated, in which space, and how.
      real_a: ``[P, C, H, W']`` the real images whose encodings start the
        strips (shown before column 0), or ``None``.
      real_b: ``[P, C, H, W']`` the real images at the other end, or ``None``.
    """

    images: torch.Tensor
    caption: str
    real_a: torch.Tensor | None = None
    real_b: torch.Tensor | None = None


def interpolation_weights(interior: int = INTERIOR_POINTS) -> torch.Tensor:
    """``[interior + 2]`` evenly spaced weights from 0 to 1: ``interior`` points strictly between the ends."""
    if interior < 1:
        raise ValueError(f"need at least one interior point, got {interior}")
    return torch.linspace(0.0, 1.0, interior + 2)


def _weights_text(weights: torch.Tensor) -> str:
    return f"{weights.numel() - 2} evenly spaced points between the two ends, both ends shown"


def lerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear paths ``(1 - w) a + w b``.

    Exact at the ends: ``w = 0`` gives ``a`` and ``w = 1`` gives ``b`` bit for bit.

    Args:
      a: ``[P, d]`` start points.
      b: ``[P, d]`` end points.
      weights: ``[W]`` in ``[0, 1]``.

    Returns:
      ``[P, W, d]``.
    """
    w = weights.to(device=a.device, dtype=a.dtype)[None, :, None]
    return (1.0 - w) * a[:, None, :] + w * b[:, None, :]


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical paths (Shoemake), for Gaussian noise.

    ``sin((1 - w) Ω) / sin Ω · a + sin(w Ω) / sin Ω · b`` with ``Ω`` the angle
    between ``a`` and ``b``; the norm moves smoothly between ``|a|`` and ``|b|``
    instead of dipping in the middle. Nearly parallel pairs fall back to
    :func:`lerp`. Exact at ``w = 0`` and ``w = 1``.

    Args:
      a: ``[P, d]``.
      b: ``[P, d]``.
      weights: ``[W]`` in ``[0, 1]``.

    Returns:
      ``[P, W, d]``.
    """
    w = weights.to(device=a.device, dtype=a.dtype)[None, :, None]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)[:, None, None]
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    path = torch.sin((1.0 - w) * omega) / safe * a[:, None, :] + torch.sin(w * omega) / safe * b[:, None, :]
    return torch.where(parallel, lerp(a, b, weights), path)


def vae_interpolations(
    vae,
    params,
    noise_a: torch.Tensor,
    noise_b: torch.Tensor,
    images_a: torch.Tensor | None,
    images_b: torch.Tensor | None,
    weights: torch.Tensor,
    flow=None,
    noise_paths: bool = True,
) -> dict[str, Strip]:
    """Interpolations of a :class:`fgm.models.vae.VAE`, decoded to the likelihood's mean.

    Args:
      vae: the model definition.
      params: ``{"encoder", "decoder", "prior"}``.
      noise_a: ``[P, d]`` base noise of the first points (what ``generate`` takes).
      noise_b: ``[P, d]`` base noise of the second points.
      images_a: ``[P, C, H, W]`` test images in model-input form (or ``None``).
      images_b: ``[P, C, H, W]`` the second test images (or ``None``).
      weights: ``[W]`` interpolation weights.
      flow: the prior's bijector ``f`` (``z = f(u)``) for a flow prior: adds
        the latent-space path of the noise pairs and the base-space path of the
        encodings; ``None`` for the standard normal prior, whose base and latent
        spaces coincide.
      noise_paths: interpolate the prior's noise (``prior_noise``,
        ``prior_noise_slerp``); ``False`` for a prior whose noise is not a
        point of a continuous space (the VampPrior's holds the component
        choice): then ``prior_latent`` joins two prior draws
        ``z = prior_sample(noise)`` in latent space instead.

    Returns:
      ``{kind: Strip}``; see the module docstring for the kinds.
    """
    p, w = noise_a.shape[0], weights.numel()
    shape = tuple(vae.image_shape)

    def decode(z):  # [P, W, d] -> [P, W, C, H, W]
        return vae.likelihood.mean(vae.decode(params["decoder"], z.reshape(p * w, -1))).reshape(p, w, *shape)

    def push(u):  # base -> latent, z = f(u), on [P, W, d]
        return vae_lib.prior_sample(vae, params, u.reshape(p * w, -1)).reshape(p, w, -1)

    if flow is None:  # base and latent space coincide
        push, draws, space = (lambda u: u), "two prior draws z ~ N(0, I)", "latent space z (the prior is N(0, I))"
    else:
        draws, space = "two base draws u ~ N(0, I)", "the flow's base space u, decoded at z = f(u)"
    with torch.no_grad():
        strips = (
            _noise_strips(lambda u: decode(push(u)), noise_a, noise_b, weights, draws, space) if noise_paths else {}
        )
        if flow is not None or not noise_paths:
            strips["prior_latent"] = _prior_latent_strip(vae, params, noise_a, noise_b, weights, decode, noise_paths)
        if images_a is not None and images_b is not None:
            strips |= _test_strips(vae, params, images_a, images_b, weights, decode, push, flow)
    return strips


def _prior_latent_strip(vae, params, noise_a, noise_b, weights, decode, noise_paths: bool) -> Strip:
    """:func:`vae_interpolations`' ``prior_latent``: two prior draws joined in latent space."""
    z_a, z_b = vae_lib.prior_sample(vae, params, noise_a), vae_lib.prior_sample(vae, params, noise_b)
    caption = (
        "the same draws mapped to latent space, z = f(u)"
        if noise_paths
        else "two prior draws z ~ p(z) (VampPrior: a component k, then z = μ(u_k) + σ(u_k) ε)"
    )
    return Strip(decode(lerp(z_a, z_b, weights)), f"{caption}, linear path in latent space z; {_weights_text(weights)}")


def _test_strips(vae, params, images_a, images_b, weights, decode, push, flow) -> dict[str, Strip]:
    """:func:`vae_interpolations`' strips between the encodings of two test images (``test_latent``, ``test_base``)."""
    how = _weights_text(weights)
    real_a, real_b = _display(vae, images_a), _display(vae, images_b)
    mu_a, mu_b = vae.encode(params["encoder"], images_a)[0], vae.encode(params["encoder"], images_b)[0]
    strips = {
        "test_latent": Strip(
            decode(lerp(mu_a, mu_b, weights)),
            f"posterior means μ(x) of two test images (shown framed at both ends), linear path in latent "
            f"space z; {how}",
            real_a,
            real_b,
        )
    }
    if flow is not None:
        u_a, u_b = (flow.inverse_and_log_det(params["prior"], mu)[0] for mu in (mu_a, mu_b))
        strips["test_base"] = Strip(
            decode(push(lerp(u_a, u_b, weights))),
            f"the same posterior means mapped to base space, u = f⁻¹(μ(x)), linear path in base space u, "
            f"decoded at z = f(u); {how}",
            real_a,
            real_b,
        )
    return strips


def _display(vae, x: torch.Tensor) -> torch.Tensor:
    """Model-input images as ``[0, 1]`` pictures (binarised MNIST as is; ``[-1, 1]`` pixels rescaled)."""
    if vae.likelihood.name == "bernoulli":
        return x.float()
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def gan_interpolations(
    gan,
    params,
    noise_a: torch.Tensor,
    noise_b: torch.Tensor,
    images_a: torch.Tensor | None,
    images_b: torch.Tensor | None,
    weights: torch.Tensor,
) -> dict[str, Strip]:
    """Interpolations of a :class:`fgm.models.gan.GAN` between latent draws (no encoder: no real images).

    Args: as :func:`vae_interpolations` (``images_a``/``images_b`` are ignored).

    Returns:
      ``{"prior_noise", "prior_noise_slerp"}``.
    """
    p, w = noise_a.shape[0], weights.numel()

    def generate(z):
        return gan_lib.generate(gan, params, z.reshape(p * w, -1)).reshape(p, w, *gan.image_shape)

    with torch.no_grad():
        return _noise_strips(generate, noise_a, noise_b, weights, "two latent draws z ~ N(0, I)", "latent space z")


def _noise_strips(render, noise_a, noise_b, weights: torch.Tensor, draws: str, space: str) -> dict[str, Strip]:
    """``prior_noise`` and ``prior_noise_slerp``: ``render([P, W, d] noise) -> [P, W, C, H, W]`` along both paths."""
    how = _weights_text(weights)
    return {
        "prior_noise": Strip(render(lerp(noise_a, noise_b, weights)), f"{draws}, linear path in {space}; {how}"),
        "prior_noise_slerp": Strip(
            render(slerp(noise_a, noise_b, weights)), f"the same draws, spherical path (slerp) in {space}; {how}"
        ),
    }


def _frame(images: torch.Tensor, colour=_REAL_FRAME) -> torch.Tensor:
    """RGB copies of ``[N, C, H, W]`` images with a 1-pixel coloured frame."""
    x = images.expand(-1, 3, -1, -1).clone() if images.shape[1] == 1 else images.clone()
    c = torch.tensor(colour, dtype=x.dtype, device=x.device)[None, :, None]
    x[:, :, 0, :] = c
    x[:, :, -1, :] = c
    x[:, :, :, 0] = c
    x[:, :, :, -1] = c
    return x


def strip_grid(strip: Strip) -> tuple[torch.Tensor, int]:
    """``([P · W', C, H, W], W')``: a strip's images row by row, its real ends (if any) framed in red."""
    p, w = strip.images.shape[:2]
    images = strip.images
    if strip.real_a is None:
        return images.reshape(p * w, *images.shape[2:]), w
    gen = images.expand(-1, -1, 3, -1, -1) if images.shape[2] == 1 else images
    rows = torch.cat([_frame(strip.real_a)[:, None], gen, _frame(strip.real_b)[:, None]], dim=1)
    return rows.reshape(p * (w + 2), *rows.shape[2:]), w + 2


def path_statistics(images: torch.Tensor) -> dict[str, float]:
    """How evenly a strip changes, in pixel space.

    With ``s_i = mean |x_{i+1} - x_i|`` the mean absolute pixel change of step
    ``i`` of a strip (``W - 1`` steps):

    * ``mean_step``: ``s_i`` averaged over steps and pairs;
    * ``max_step_ratio``: ``max_i s_i / mean_i s_i``, averaged over pairs:
      1 when every step changes the image equally, ``W - 1`` when the whole
      change happens in one step (an abrupt jump);
    * ``path_ratio``: ``Σ_i s_i / mean |x_{W-1} - x_0|``, averaged over pairs:
      1 for a pixel-wise cross-fade, larger when the path passes through
      images unlike either end.

    Args:
      images: ``[P, W, C, H, W']``.
    """
    x = images.double()
    steps = (x[:, 1:] - x[:, :-1]).abs().flatten(2).mean(-1)  # [P, W-1]
    direct = (x[:, -1] - x[:, 0]).abs().flatten(1).mean(-1)  # [P]
    mean = steps.mean(1)
    return {
        "mean_step": float(steps.mean()),
        "max_step_ratio": float((steps.max(1).values / mean.clamp_min(1e-12)).mean()),
        "path_ratio": float((steps.sum(1) / direct.clamp_min(1e-12)).mean()),
    }


def test_pairs(num_images: int, pairs: int = PAIRS, key: random.Key | None = None) -> tuple[list[int], list[int]]:
    """Fixed indices ``(a, b)`` of ``pairs`` pairs of distinct test images (``key``: default the shared seed)."""
    if num_images < 2:
        raise ValueError("need at least two test images to interpolate between")
    key = key if key is not None else random.key(INTERPOLATION_SEED)
    perm = random.permutation(random.fold_in(key, 2), num_images).tolist()
    # consecutive entries of a permutation: distinct even when the list wraps around
    return [perm[(2 * i) % num_images] for i in range(pairs)], [perm[(2 * i + 1) % num_images] for i in range(pairs)]
