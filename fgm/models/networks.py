"""Architecture templates for the VAE's encoders and decoders and the GAN's generators and discriminators.

Names say ``{dataset}_{arch}_{role}``: the dataset whose shape is the
default, ``mlp`` or ``conv``, and ``encoder``/``decoder`` (VAE) or
``generator``/``discriminator`` (GAN). A generator is a decoder with other
activations and a ``tanh`` output, a discriminator an encoder with one
output, so each pair shares one builder: :func:`mlp` for the MLPs,
:func:`conv_encoder` and :func:`conv_decoder` for the ConvNets. The
parameter names (``state_dict`` keys) and the initialisation of every
network are the ones they had as separate functions, so old checkpoints
load (``tests/test_networks.py``).

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

The VAE's networks have no BatchNorm (its batch statistics would couple the
images of a likelihood) and use ``nn.ELU``, smooth so the posterior variance
net trains stably, and cheap. The GAN's follow DCGAN (Radford et al., 2016):
ReLU in G, LeakyReLU(0.2) in D, ``tanh`` at G's output to match data in
``[-1, 1]``, optional BatchNorm in MNIST's conv G and spectral norm in its D
(layer state, see ``fgm.nn.stateful``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

__all__ = [
    "conv_decoder",
    "conv_encoder",
    "mlp",
    "mnist_conv_decoder",
    "mnist_conv_discriminator",
    "mnist_conv_encoder",
    "mnist_conv_generator",
    "mnist_mlp_decoder",
    "mnist_mlp_discriminator",
    "mnist_mlp_encoder",
    "mnist_mlp_generator",
    "svhn_conv_decoder",
    "svhn_conv_discriminator",
    "svhn_conv_encoder",
    "svhn_conv_generator",
]

Activation = Callable[[], nn.Module]


def _leaky_relu() -> nn.Module:
    """DCGAN's discriminator activation: a slope of 0.2 keeps a gradient for the inputs D rejects."""
    return nn.LeakyReLU(0.2)


def _no_output() -> list[nn.Module]:
    return []


# --------------------------------------------------------------------------- the shared builders


def mlp(sizes: list[int], activation: Activation = nn.ELU) -> list[nn.Module]:
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


def _downsampled(image_shape: tuple[int, int, int], depth: int) -> tuple[int, int]:
    """``(H, W) / 2^depth``, the feature map after ``depth`` stride-2 layers."""
    c, h, w = image_shape
    factor = 2**depth
    if h % factor or w % factor:
        raise ValueError(f"the {depth} stride-2 layers need H and W divisible by {factor}, got {tuple(image_shape)}")
    return h // factor, w // factor


def conv_encoder(
    out_features: int,
    image_shape: tuple[int, int, int],
    width: int,
    depth: int,
    activation: Activation = nn.ELU,
    spectral: bool = False,
) -> nn.Module:
    """Strided ConvNet ``[B, C, H, W] -> [B, out_features]``.

    ``depth`` convolutions (4×4 kernels, stride 2, padding 1) halve the
    resolution each, ``C → w → 2w → … → 2^(depth-1)·w`` channels, an
    activation after each, then a linear layer on the flattened map of
    ``(H, W) / 2^depth``. Modules are numbered conv, activation, …, flatten,
    linear, which fixes the parameter names (``"0.weight"``, …).

    Args:
      out_features: 2·d for a VAE encoder (mean and log-variance), 1 for a discriminator's logit.
      image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by ``2^depth``.
      width: ``w``, channels of the first convolution.
      depth: stride-2 convolutions.
      activation: instantiated after every convolution.
      spectral: spectral normalisation (Miyato et al., 2018) of every layer's
        weight, one power iteration per forward pass (layer state, see ``fgm.nn.stateful``).
    """
    h, w = _downsampled(image_shape, depth)
    wrap = nn.utils.parametrizations.spectral_norm if spectral else (lambda layer: layer)
    channels = [image_shape[0]] + [width * 2**i for i in range(depth)]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [wrap(nn.Conv2d(fan_in, fan_out, 4, 2, 1)), activation()]
    return nn.Sequential(*layers, nn.Flatten(), wrap(nn.Linear(channels[-1] * h * w, out_features)))


def conv_decoder(
    latent_dim: int,
    out_channels: int,
    image_shape: tuple[int, int, int],
    width: int,
    depth: int,
    activation: Activation = nn.ELU,
    output: Callable[[], list[nn.Module]] = _no_output,
    batchnorm: bool = False,
) -> nn.Module:
    """Transposed ConvNet ``[B, d] -> [B, out_channels, H, W]``, the mirror of :func:`conv_encoder`.

    A linear layer to a ``2^(depth-1)·w × H/2^depth × W/2^depth`` map, then
    ``depth`` transposed convolutions (4×4 kernels, stride 2, padding 1)
    double the resolution and halve the channels, ``… → 2w → w →
    out_channels``; an activation after every layer but the last. With
    ``batchnorm``, ``BatchNorm2d`` comes before each of those activations and
    the layers it follows drop their bias, which the normalisation would
    cancel. Modules are numbered linear, unflatten, [BatchNorm], activation,
    …, which fixes the parameter names.

    Args:
      latent_dim: ``d``.
      out_channels: channels of the output (likelihood parameters, or the image's ``C``).
      image_shape: ``(C, H, W)`` of the modelled images, ``H`` and ``W`` divisible by ``2^depth``.
      width: ``w``, mirrors the encoder's.
      depth: stride-2 transposed convolutions.
      activation: instantiated after every layer but the last.
      output: ``() -> [modules]`` appended at the end (``[nn.Tanh()]`` for a
        generator); none by default (a likelihood's parameters).
      batchnorm: BatchNorm in the hidden layers (layer state, see ``fgm.nn.stateful``).
    """
    h, w = _downsampled(image_shape, depth)
    channels = [width * 2**i for i in reversed(range(depth))]
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batchnorm else (lambda c: [])
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, channels[0] * h * w, bias=not batchnorm),
        nn.Unflatten(1, (channels[0], h, w)),
        *norm(channels[0]),
        activation(),
    ]
    for fan_in, fan_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [nn.ConvTranspose2d(fan_in, fan_out, 4, 2, 1, bias=not batchnorm), *norm(fan_out), activation()]
    return nn.Sequential(*layers, nn.ConvTranspose2d(width, out_channels, 4, 2, 1), *output())


# --------------------------------------------------------------------------- the VAE's encoders and decoders


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


def mnist_conv_encoder(latent_dim: int, width: int = 80, image_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    """Strided ConvNet encoder ``[B, C, H, W] -> [B, 2·latent_dim]``: the conv GAN's discriminator body.

    Conv ``C → width`` (H → H/2), Conv ``width → 2·width`` (→ H/4), 4×4
    kernels, stride 2, ELU, then Linear to the mean and log-variance
    (:func:`conv_encoder` of depth 2).

    Args:
      latent_dim: ``d``.
      width: channels of the first convolution.
      image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
    """
    return conv_encoder(2 * latent_dim, image_shape, width, depth=2)


def mnist_conv_decoder(
    latent_dim: int, width: int = 80, out_channels: int | None = None, image_shape: tuple[int, int, int] = (1, 28, 28)
) -> nn.Module:
    """Transposed-ConvNet decoder ``[B, latent_dim] -> [B, out_channels, H, W]``: the conv GAN's generator.

    Linear ``d → 2·width·(H/4)·(W/4)``, ConvT ``2·width → width`` (→ H/2),
    ConvT ``width → out_channels`` (→ H), ELU between, no BatchNorm
    (:func:`conv_decoder` of depth 2).

    Args:
      latent_dim: ``d``.
      width: mirrors :func:`mnist_conv_encoder`'s.
      out_channels: default ``C`` (Bernoulli logits).
      image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
    """
    out_channels = image_shape[0] if out_channels is None else out_channels
    return conv_decoder(latent_dim, out_channels, image_shape, width, depth=2)


def svhn_conv_encoder(latent_dim: int, width: int = 32, in_channels: int = 3) -> nn.Module:
    """Strided ConvNet encoder ``[B, in_channels, 32, 32] -> [B, 2·latent_dim]`` (:func:`conv_encoder` of depth 3).

    Args:
      latent_dim: ``d``.
      width: channels of the first convolution (then ``2·width``, ``4·width``).
      in_channels: image channels (3 for SVHN's RGB).

    Returns:
      An ``nn.Sequential``.
    """
    return conv_encoder(2 * latent_dim, (in_channels, 32, 32), width, depth=3)


def svhn_conv_decoder(latent_dim: int, width: int = 32, out_channels: int = 6) -> nn.Module:
    """Transposed-ConvNet decoder ``[B, latent_dim] -> [B, out_channels, 32, 32]`` (:func:`conv_decoder` of depth 3).

    Args:
      latent_dim: ``d``.
      width: mirrors :func:`svhn_conv_encoder`'s ``width``.
      out_channels: 6 = logistic location and log-scale per RGB channel.

    Returns:
      An ``nn.Sequential``.
    """
    return conv_decoder(latent_dim, out_channels, (3, 32, 32), width, depth=3)


# --------------------------------------------------------------------------- the GAN's generators and discriminators


def _tanh() -> list[nn.Module]:
    """A generator's output layer: samples in ``[-1, 1]``, the data's range."""
    return [nn.Tanh()]


def mnist_mlp_generator(
    latent_dim: int, hidden: tuple[int, ...] = (256, 512), image_shape: tuple[int, int, int] = (1, 28, 28)
) -> nn.Module:
    """MLP generator ``z [B, latent_dim] -> x [B, C, H, W]`` in ``[-1, 1]``.

    LeakyReLU(0.2) between layers, no normalisation, ``tanh`` at the output.

    Args:
      latent_dim: ``d``.
      hidden: hidden widths, latent side first.
      image_shape: ``(C, H, W)``; any shape works.
    """
    sizes = [latent_dim, *hidden, math.prod(image_shape)]
    return nn.Sequential(*mlp(sizes, _leaky_relu), *_tanh(), nn.Unflatten(1, tuple(image_shape)))


def mnist_mlp_discriminator(
    hidden: tuple[int, ...] = (512, 256), image_shape: tuple[int, int, int] = (1, 28, 28)
) -> nn.Module:
    """MLP discriminator ``x [B, C, H, W] -> logits [B, 1]`` with LeakyReLU(0.2).

    Args:
      hidden: hidden widths, input side first.
      image_shape: ``(C, H, W)``; any shape works.
    """
    return nn.Sequential(nn.Flatten(), *mlp([math.prod(image_shape), *hidden, 1], _leaky_relu))


def mnist_conv_generator(latent_dim: int, width: int = 80, batchnorm: bool = True) -> nn.Module:
    """DCGAN-style generator ``z [B, latent_dim] -> x [B, 1, 28, 28]`` in ``[-1, 1]``.

    A linear layer to a ``2w × 7 × 7`` map, then two stride-2 transposed
    convolutions (4×4 kernels, padding 1) 7 → 14 → 28: ``2w → w → 1``
    channels; ReLU inside, ``tanh`` at the output (:func:`conv_decoder` of
    depth 2). With ``batchnorm``, ``BatchNorm2d`` follows the projection and
    the first transposed convolution, and those layers drop their bias.

    Args:
      latent_dim: ``d``.
      width: ``w``; 80 puts G + D within 25% of ``vae_std``'s parameter count.
      batchnorm: BatchNorm in the generator (layer state, see ``fgm.nn.stateful``).
    """
    return conv_decoder(latent_dim, 1, (1, 28, 28), width, 2, nn.ReLU, _tanh, batchnorm)


def mnist_conv_discriminator(width: int = 80, spectral: bool = False) -> nn.Module:
    """DCGAN-style discriminator ``x [B, 1, 28, 28] -> logits [B, 1]``.

    Two stride-2 convolutions (4×4 kernels, padding 1) 28 → 14 → 7 with
    ``1 → w → 2w`` channels and LeakyReLU(0.2), then a linear layer on the
    flattened ``2w × 7 × 7`` map (:func:`conv_encoder` of depth 2). No
    BatchNorm: D sees real and fake batches separately, and batch statistics
    would tell them apart.

    Args:
      width: ``w``.
      spectral: spectral normalisation of every layer's weight (layer state, see ``fgm.nn.stateful``).
    """
    return conv_encoder(1, (1, 28, 28), width, 2, _leaky_relu, spectral)


def svhn_conv_generator(latent_dim: int, width: int = 32, channels: int = 3) -> nn.Module:
    """DCGAN-style generator ``z [B, latent_dim] -> x [B, channels, 32, 32]`` in ``[-1, 1]``.

    :func:`svhn_conv_decoder`'s layers (4 → 8 → 16 → 32) with ReLU inside
    and ``tanh`` at the output, no normalisation layers.
    """
    return conv_decoder(latent_dim, channels, (channels, 32, 32), width, 3, nn.ReLU, _tanh)


def svhn_conv_discriminator(width: int = 32, channels: int = 3) -> nn.Module:
    """DCGAN-style discriminator ``x [B, channels, 32, 32] -> logits [B, 1]``.

    :func:`svhn_conv_encoder`'s layers (32 → 16 → 8 → 4) with LeakyReLU(0.2)
    and one output.
    """
    return conv_encoder(1, (channels, 32, 32), width, 3, _leaky_relu)
