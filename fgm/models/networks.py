"""Architecture templates for the encoders and decoders, per dataset.

Why these shapes (2 CPU cores, minutes not hours):

* **MNIST, MLP 784-512-256-z / z-256-512-784.** On a CPU a dense layer is the
  cheapest FLOP there is (one GEMM, no im2col), and for 28×28 binary digits
  an MLP VAE is within a few nats of a convolutional one (IWAE paper, Table 1:
  its VAEs are MLPs). About 1.0M parameters: an epoch of 55k images is a few
  seconds, so tens of epochs fit in the 10-minute budget. The same MLPs take
  any ``image_shape``, for other binarised datasets
  (:func:`fgm.data.register_dataset`).
* **SVHN, a small strided ConvNet (32-64-128 channels, 4×4 kernels,
  stride 2).** Colour images have spatial statistics an MLP of the same size
  models badly; three stride-2 convolutions bring 32×32 down to 4×4 with few
  FLOPs, and the decoder mirrors them with transposed convolutions.

* **MNIST, ``arch=conv``: the conv GAN's shapes.** Two stride-2 convolutions
  (28→14→7, ``width`` and ``2·width`` channels) in the encoder and the
  generator's transposed convolutions (7→14→28) in the decoder, so that a
  conv VAE can be compared with the conv GAN like for like. With ``width =
  80`` it has 1,173,025 parameters, 7.4% more than the MLP VAE's 1,091,920.
  The MLP stays MNIST's default: the published NLLs are for MLPs.

No BatchNorm anywhere: its running statistics are hidden mutable state.
All activations are ``nn.ELU``, smooth so the posterior variance net trains
stably, and cheap.
"""

from __future__ import annotations

import math

from torch import nn

__all__ = [
    "mlp",
    "mnist_conv_decoder",
    "mnist_conv_encoder",
    "mnist_mlp_decoder",
    "mnist_mlp_encoder",
    "svhn_conv_decoder",
    "svhn_conv_encoder",
]


def mlp(sizes: list[int], activation=nn.ELU) -> list[nn.Module]:
    """The layers of a dense network, an activation between consecutive ``nn.Linear``.

    Args:
      sizes: ``[in, hidden..., out]`` widths.
      activation: activation class, instantiated after every layer but the last.

    Returns:
      A list of modules for ``nn.Sequential(*layers)``; ``[B, in] -> [B, out]``.
    """
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return layers


def mnist_mlp_encoder(
    latent_dim: int,
    hidden: tuple[int, ...] = (512, 256),
    image_shape: tuple[int, int, int] = (1, 28, 28),
) -> nn.Module:
    """MLP encoder ``[B, C, H, W] -> [B, 2·latent_dim]`` (mean and log-variance, concatenated).

    Named for MNIST, its default shape; any image shape works, the pixels are flattened.

    Args:
      latent_dim: ``d``.
      hidden: hidden widths, input side first.
      image_shape: ``(C, H, W)`` of the input images.

    Returns:
      An ``nn.Sequential`` (build it through :func:`fgm.nn.functional`).
    """
    return nn.Sequential(nn.Flatten(), *mlp([math.prod(image_shape), *hidden, 2 * latent_dim]))


def mnist_mlp_decoder(
    latent_dim: int,
    hidden: tuple[int, ...] = (256, 512),
    out_channels: int | None = None,
    image_shape: tuple[int, int, int] = (1, 28, 28),
) -> nn.Module:
    """MLP decoder ``[B, latent_dim] -> [B, out_channels, H, W]`` (Bernoulli logits: one channel per image channel).

    Named for MNIST, its default shape; any image shape works.

    Args:
      latent_dim: ``d``.
      hidden: hidden widths, latent side first.
      out_channels: output channels, the likelihood's ``out_channels`` times the image's ``C``;
        default ``C`` (Bernoulli logits).
      image_shape: ``(C, H, W)`` of the modelled images.

    Returns:
      An ``nn.Sequential``.
    """
    c, h, w = image_shape
    out_channels = c if out_channels is None else out_channels
    return nn.Sequential(*mlp([latent_dim, *hidden, out_channels * h * w]), nn.Unflatten(1, (out_channels, h, w)))


def _quarter(image_shape: tuple[int, int, int]) -> tuple[int, int]:
    c, h, w = image_shape
    if h % 4 or w % 4:
        raise ValueError(f"the two stride-2 layers need H and W divisible by 4, got {tuple(image_shape)}")
    return h // 4, w // 4


def mnist_conv_encoder(latent_dim: int, width: int = 80, image_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    """Strided ConvNet encoder ``[B, C, H, W] -> [B, 2·latent_dim]``: the conv GAN's discriminator body.

    Conv ``C → width`` (H → H/2), Conv ``width → 2·width`` (→ H/4), 4×4
    kernels, stride 2, ELU, then Linear to the mean and log-variance.

    Args:
      latent_dim: ``d``.
      width: channels of the first convolution.
      image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
    """
    h, w = _quarter(image_shape)
    return nn.Sequential(
        nn.Conv2d(image_shape[0], width, 4, 2, 1),
        nn.ELU(),
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.ELU(),
        nn.Flatten(),
        nn.Linear(2 * width * h * w, 2 * latent_dim),
    )


def mnist_conv_decoder(
    latent_dim: int, width: int = 80, out_channels: int | None = None, image_shape: tuple[int, int, int] = (1, 28, 28)
) -> nn.Module:
    """Transposed-ConvNet decoder ``[B, latent_dim] -> [B, out_channels, H, W]``: the conv GAN's generator.

    Linear ``d → 2·width·(H/4)·(W/4)``, ConvT ``2·width → width`` (→ H/2),
    ConvT ``width → out_channels`` (→ H), ELU between, no BatchNorm (its
    batch statistics would couple the images of a likelihood).

    Args:
      latent_dim: ``d``.
      width: mirrors :func:`mnist_conv_encoder`'s.
      out_channels: default ``C`` (Bernoulli logits).
      image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
    """
    h, w = _quarter(image_shape)
    out_channels = image_shape[0] if out_channels is None else out_channels
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * width * h * w),
        nn.ELU(),
        nn.Unflatten(1, (2 * width, h, w)),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.ELU(),
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),
    )


def svhn_conv_encoder(latent_dim: int, width: int = 32, in_channels: int = 3) -> nn.Module:
    """Strided ConvNet encoder ``[B, in_channels, 32, 32] -> [B, 2·latent_dim]``.

    Args:
      latent_dim: ``d``.
      width: channels of the first convolution (then ``2·width``, ``4·width``).
      in_channels: image channels (3 for SVHN's RGB).

    Returns:
      An ``nn.Sequential``.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, 2, 1),
        nn.ELU(),  # 16×16
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.ELU(),  # 8×8
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
        nn.ELU(),  # 4×4
        nn.Flatten(),
        nn.Linear(4 * width * 16, 2 * latent_dim),
    )


def svhn_conv_decoder(latent_dim: int, width: int = 32, out_channels: int = 6) -> nn.Module:
    """Transposed-ConvNet decoder ``[B, latent_dim] -> [B, out_channels, 32, 32]``.

    Args:
      latent_dim: ``d``.
      width: mirrors :func:`svhn_conv_encoder`'s ``width``.
      out_channels: 6 = logistic location and log-scale per RGB channel.

    Returns:
      An ``nn.Sequential``.
    """
    return nn.Sequential(
        nn.Linear(latent_dim, 4 * width * 16),
        nn.ELU(),
        nn.Unflatten(1, (4 * width, 4, 4)),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
        nn.ELU(),  # 8×8
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.ELU(),  # 16×16
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),  # 32×32
    )
