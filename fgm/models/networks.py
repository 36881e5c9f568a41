"""Architecture templates for the encoders and decoders, per dataset.

Why these shapes (2 CPU cores, minutes not hours):

* **MNIST, MLP 784-512-256-z / z-256-512-784.** On a CPU a dense layer is the
  cheapest FLOP there is (one GEMM, no im2col), and for 28×28 binary digits
  an MLP VAE is within a few nats of a convolutional one (IWAE paper, Table 1:
  its VAEs are MLPs). About 1.0M parameters: an epoch of 55k images is a few
  seconds, so tens of epochs fit in the 10-minute budget.
* **SVHN, a small strided ConvNet (32-64-128 channels, 4×4 kernels,
  stride 2).** Colour images have spatial statistics an MLP of the same size
  models badly; three stride-2 convolutions bring 32×32 down to 4×4 with few
  FLOPs, and the decoder mirrors them with transposed convolutions.

No BatchNorm anywhere: its running statistics are hidden mutable state.
All activations are ``nn.ELU``, smooth so the posterior variance net trains
stably, and cheap.
"""

from __future__ import annotations

from torch import nn


def mlp(sizes: list[int], activation=nn.ELU) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return layers


def mnist_mlp_encoder(latent_dim: int, hidden: tuple[int, ...] = (512, 256)) -> nn.Module:
    """``[B, 1, 28, 28] -> [B, 2·latent_dim]`` (mean and log-variance, concatenated)."""
    return nn.Sequential(nn.Flatten(), *mlp([784, *hidden, 2 * latent_dim]))


def mnist_mlp_decoder(latent_dim: int, hidden: tuple[int, ...] = (256, 512), out_channels: int = 1) -> nn.Module:
    """``[B, latent_dim] -> [B, out_channels, 28, 28]`` (Bernoulli logits for one channel)."""
    return nn.Sequential(*mlp([latent_dim, *hidden, out_channels * 784]), nn.Unflatten(1, (out_channels, 28, 28)))


def svhn_conv_encoder(latent_dim: int, width: int = 32) -> nn.Module:
    """``[B, 3, 32, 32] -> [B, 2·latent_dim]``."""
    return nn.Sequential(
        nn.Conv2d(3, width, 4, 2, 1), nn.ELU(),  # 16×16
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ELU(),  # 8×8
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.ELU(),  # 4×4
        nn.Flatten(),
        nn.Linear(4 * width * 16, 2 * latent_dim),
    )


def svhn_conv_decoder(latent_dim: int, width: int = 32, out_channels: int = 6) -> nn.Module:
    """``[B, latent_dim] -> [B, out_channels, 32, 32]`` (6 = logistic mean and log-scale per RGB channel)."""
    return nn.Sequential(
        nn.Linear(latent_dim, 4 * width * 16), nn.ELU(),
        nn.Unflatten(1, (4 * width, 4, 4)),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.ELU(),  # 8×8
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ELU(),  # 16×16
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),  # 32×32
    )
