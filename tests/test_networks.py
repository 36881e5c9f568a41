"""fgm.models.networks against the networks as they were before the shared builders: same names, init and outputs.

The ``_old_*`` functions below are the definitions of ``fgm/models/networks.py``
and ``fgm/models/gan.py`` before the VAE's and the GAN's networks shared
:func:`~fgm.models.networks.conv_encoder`, :func:`~fgm.models.networks.conv_decoder`
and :func:`~fgm.models.networks.mlp`, copied unchanged (only renamed). Checkpoints
written with them, and the committed study's numbers, rely on each network
keeping its ``state_dict`` names, shapes and initialisation from a key, which
the tests check bitwise, with the outputs of a training- and an
evaluation-mode forward pass and their gradients.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from fgm import nn as fnn
from fgm import random
from fgm.models import networks

# --------------------------------------------------------------------------- the old definitions, frozen


def _old_mlp(sizes, activation=nn.ELU):
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return layers


def _old_mnist_mlp_encoder(latent_dim, hidden=(512, 256), image_shape=(1, 28, 28)):
    return nn.Sequential(nn.Flatten(), *_old_mlp([math.prod(image_shape), *hidden, 2 * latent_dim]))


def _old_mnist_mlp_decoder(latent_dim, hidden=(256, 512), out_channels=None, image_shape=(1, 28, 28)):
    c, h, w = image_shape
    out_channels = c if out_channels is None else out_channels
    return nn.Sequential(*_old_mlp([latent_dim, *hidden, out_channels * h * w]), nn.Unflatten(1, (out_channels, h, w)))


def _old_mnist_conv_encoder(latent_dim, width=80, image_shape=(1, 28, 28)):
    h, w = image_shape[1] // 4, image_shape[2] // 4
    return nn.Sequential(
        nn.Conv2d(image_shape[0], width, 4, 2, 1),
        nn.ELU(),
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.ELU(),
        nn.Flatten(),
        nn.Linear(2 * width * h * w, 2 * latent_dim),
    )


def _old_mnist_conv_decoder(latent_dim, width=80, out_channels=None, image_shape=(1, 28, 28)):
    h, w = image_shape[1] // 4, image_shape[2] // 4
    out_channels = image_shape[0] if out_channels is None else out_channels
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * width * h * w),
        nn.ELU(),
        nn.Unflatten(1, (2 * width, h, w)),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.ELU(),
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),
    )


def _old_svhn_conv_encoder(latent_dim, width=32, in_channels=3):
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, 2, 1),
        nn.ELU(),
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.ELU(),
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
        nn.ELU(),
        nn.Flatten(),
        nn.Linear(4 * width * 16, 2 * latent_dim),
    )


def _old_svhn_conv_decoder(latent_dim, width=32, out_channels=6):
    return nn.Sequential(
        nn.Linear(latent_dim, 4 * width * 16),
        nn.ELU(),
        nn.Unflatten(1, (4 * width, 4, 4)),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
        nn.ELU(),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.ELU(),
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),
    )


def _old_mlp_generator(latent_dim, image_shape=(1, 28, 28), hidden=(256, 512)):
    sizes = [latent_dim, *hidden, math.prod(image_shape)]
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2)]
    layers += [nn.Linear(sizes[-2], sizes[-1]), nn.Tanh(), nn.Unflatten(1, tuple(image_shape))]
    return nn.Sequential(*layers)


def _old_mlp_discriminator(image_shape=(1, 28, 28), hidden=(512, 256)):
    sizes = [math.prod(image_shape), *hidden]
    layers = [nn.Flatten()]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(sizes[-1], 1))
    return nn.Sequential(*layers)


def _old_dcgan_generator(latent_dim, channels=3, width=32):
    return nn.Sequential(
        nn.Linear(latent_dim, 4 * width * 16),
        nn.ReLU(),
        nn.Unflatten(1, (4 * width, 4, 4)),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(width, channels, 4, 2, 1),
        nn.Tanh(),
    )


def _old_mnist_dcgan_generator(latent_dim, width=80, batchnorm=True):
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batchnorm else (lambda c: [])
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * width * 49, bias=not batchnorm),
        nn.Unflatten(1, (2 * width, 7, 7)),
        *norm(2 * width),
        nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=not batchnorm),
        *norm(width),
        nn.ReLU(),
        nn.ConvTranspose2d(width, 1, 4, 2, 1),
        nn.Tanh(),
    )


def _old_mnist_dcgan_discriminator(width=80, spectral=False):
    wrap = nn.utils.parametrizations.spectral_norm if spectral else (lambda layer: layer)
    return nn.Sequential(
        wrap(nn.Conv2d(1, width, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        wrap(nn.Conv2d(width, 2 * width, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        wrap(nn.Linear(2 * width * 49, 1)),
    )


def _old_dcgan_discriminator(channels=3, width=32):
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(4 * width * 16, 1),
    )


P = functools.partial
MNIST, SVHN = (5, 1, 28, 28), (5, 3, 32, 32)

# name: (old build, new build, input shape); small widths, and the defaults the runner uses
PAIRS = {
    "mnist_mlp_encoder": (P(_old_mnist_mlp_encoder, 8, (16, 12)), P(networks.mnist_mlp_encoder, 8, (16, 12)), MNIST),
    "mnist_mlp_encoder/default": (P(_old_mnist_mlp_encoder, 32), P(networks.mnist_mlp_encoder, 32), MNIST),
    "mnist_mlp_decoder": (P(_old_mnist_mlp_decoder, 8, (12, 16)), P(networks.mnist_mlp_decoder, 8, (12, 16)), (5, 8)),
    "mnist_mlp_decoder/shape": (
        P(_old_mnist_mlp_decoder, 8, (12,), 2, (1, 8, 12)),
        P(networks.mnist_mlp_decoder, 8, (12,), 2, (1, 8, 12)),
        (5, 8),
    ),
    "mnist_conv_encoder": (P(_old_mnist_conv_encoder, 8, 4), P(networks.mnist_conv_encoder, 8, 4), MNIST),
    "mnist_conv_encoder/default": (P(_old_mnist_conv_encoder, 32), P(networks.mnist_conv_encoder, 32), MNIST),
    "mnist_conv_decoder": (P(_old_mnist_conv_decoder, 8, 4), P(networks.mnist_conv_decoder, 8, 4), (5, 8)),
    "mnist_conv_decoder/shape": (
        P(_old_mnist_conv_decoder, 8, 4, 2, (1, 12, 16)),
        P(networks.mnist_conv_decoder, 8, 4, 2, (1, 12, 16)),
        (5, 8),
    ),
    "svhn_conv_encoder": (P(_old_svhn_conv_encoder, 8, 4), P(networks.svhn_conv_encoder, 8, 4), SVHN),
    "svhn_conv_encoder/default": (P(_old_svhn_conv_encoder, 32), P(networks.svhn_conv_encoder, 32), SVHN),
    "svhn_conv_decoder": (P(_old_svhn_conv_decoder, 8, 4), P(networks.svhn_conv_decoder, 8, 4), (5, 8)),
    "svhn_conv_decoder/default": (P(_old_svhn_conv_decoder, 32), P(networks.svhn_conv_decoder, 32), (5, 32)),
    "mlp_generator": (
        P(_old_mlp_generator, 8, (1, 28, 28), (16, 12)),
        P(networks.mnist_mlp_generator, 8, (16, 12), (1, 28, 28)),
        (5, 8),
    ),
    "mlp_generator/default": (P(_old_mlp_generator, 64), P(networks.mnist_mlp_generator, 64), (5, 64)),
    "mlp_discriminator": (
        P(_old_mlp_discriminator, (1, 28, 28), (16, 12)),
        P(networks.mnist_mlp_discriminator, (16, 12), (1, 28, 28)),
        MNIST,
    ),
    "mlp_discriminator/default": (P(_old_mlp_discriminator), P(networks.mnist_mlp_discriminator), MNIST),
    "dcgan_generator": (P(_old_dcgan_generator, 8, 3, 4), P(networks.svhn_conv_generator, 8, 4, 3), (5, 8)),
    "dcgan_generator/default": (P(_old_dcgan_generator, 64), P(networks.svhn_conv_generator, 64), (5, 64)),
    "dcgan_discriminator": (P(_old_dcgan_discriminator, 3, 4), P(networks.svhn_conv_discriminator, 4, 3), SVHN),
    "dcgan_discriminator/default": (P(_old_dcgan_discriminator), P(networks.svhn_conv_discriminator), SVHN),
    **{
        f"mnist_dcgan_generator/batchnorm={bn}": (
            P(_old_mnist_dcgan_generator, 8, 4, bn),
            P(networks.mnist_conv_generator, 8, 4, bn),
            (5, 8),
        )
        for bn in (False, True)
    },
    "mnist_dcgan_generator/default": (P(_old_mnist_dcgan_generator, 64), P(networks.mnist_conv_generator, 64), (5, 64)),
    **{
        f"mnist_dcgan_discriminator/spectral={sn}": (
            P(_old_mnist_dcgan_discriminator, 4, sn),
            P(networks.mnist_conv_discriminator, 4, sn),
            MNIST,
        )
        for sn in (False, True)
    },
    "mnist_dcgan_discriminator/default": (
        P(_old_mnist_dcgan_discriminator),
        P(networks.mnist_conv_discriminator),
        MNIST,
    ),
}


def _built(build, key):
    template, apply = fnn.stateful(build)
    params = fnn.init_params(template, key)
    return template, apply, params, fnn.init_state(template, params, random.fold_in(key, 1))


def _same(a: dict, b: dict) -> bool:
    """Same names in the same order, same dtypes, shapes and values, bit for bit."""
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_names_shapes_init_and_outputs_are_the_old_networks(name):
    build_old, build_new, shape = PAIRS[name]
    key = random.key(3)
    old, old_apply, old_params, old_state = _built(build_old, key)
    new, new_apply, new_params, new_state = _built(build_new, key)
    assert list(new.state_dict()) == list(old.state_dict())  # the names a checkpoint holds
    assert _same(new_params, old_params) and _same(new_state, old_state)
    # the same layers; an activation and the reshape before or after it may have swapped (they commute)
    assert sorted(type(m).__name__ for m in new.modules()) == sorted(type(m).__name__ for m in old.modules())
    x = random.normal(random.fold_in(key, 2), shape)
    for train in (True, False):
        params = {k: v.detach().requires_grad_() for k, v in new_params.items()}
        params_old = {k: v.detach().requires_grad_() for k, v in old_params.items()}
        out_new, state_new = new_apply(params, new_state, x, train=train)
        out_old, state_old = old_apply(params_old, old_state, x, train=train)
        assert torch.equal(out_new, out_old) and _same(state_new, state_old)
        grads_new = torch.autograd.grad(out_new.square().sum(), list(params.values()))
        grads_old = torch.autograd.grad(out_old.square().sum(), [params_old[k] for k in params])
        assert all(torch.equal(a, b) for a, b in zip(grads_new, grads_old, strict=True))
    if not old_state:  # stateless networks also take fgm.nn.functional's direct path
        new_template, new_plain = fnn.functional(build_new)
        assert fnn.sequential_program(new_template) is not None
        assert torch.equal(new_plain(new_params, x), fnn.functional(build_old)[1](old_params, x))


def test_the_builders_refuse_shapes_the_strides_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 8"):
        networks.conv_encoder(1, (3, 28, 28), 4, depth=3)
    with pytest.raises(ValueError, match="divisible by 4"):
        networks.conv_decoder(2, 1, (1, 30, 28), 4, depth=2)
