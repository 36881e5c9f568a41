"""fgm.nn.functional's direct path for plain nn.Sequential templates: bitwise functional_call, or functional_call."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fgm import bijectors, random
from fgm import nn as fnn
from fgm.models import networks

TEMPLATES = {
    "mnist_mlp_encoder": (functools.partial(networks.mnist_mlp_encoder, 8, (16, 12)), (5, 1, 28, 28)),
    "mnist_mlp_decoder": (functools.partial(networks.mnist_mlp_decoder, 8, (12, 16)), (5, 8)),
    "mnist_conv_encoder": (functools.partial(networks.mnist_conv_encoder, 8, 4), (5, 1, 28, 28)),
    "mnist_conv_decoder": (functools.partial(networks.mnist_conv_decoder, 8, 4), (5, 8)),
    "svhn_conv_encoder": (functools.partial(networks.svhn_conv_encoder, 8, 4), (5, 3, 32, 32)),
    "svhn_conv_decoder": (functools.partial(networks.svhn_conv_decoder, 8, 4), (5, 8)),
    "mnist_mlp_generator": (functools.partial(networks.mnist_mlp_generator, 8, (16, 12)), (5, 8)),
    "mnist_mlp_discriminator": (functools.partial(networks.mnist_mlp_discriminator, (16, 12)), (5, 1, 28, 28)),
    "mnist_conv_generator": (functools.partial(networks.mnist_conv_generator, 8, 4, False), (5, 8)),
    "mnist_conv_discriminator": (functools.partial(networks.mnist_conv_discriminator, 4), (5, 1, 28, 28)),
    "svhn_conv_generator": (functools.partial(networks.svhn_conv_generator, 8, 4, 3), (5, 8)),
    "svhn_conv_discriminator": (functools.partial(networks.svhn_conv_discriminator, 4, 3), (5, 3, 32, 32)),
}


def reference(template, params, x):
    return torch.func.functional_call(template, params, (x,), strict=True)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_path_is_bitwise_functional_call_with_gradients(name, dtype):
    build, shape = TEMPLATES[name]
    template, apply = fnn.functional(build)
    assert fnn.sequential_program(template) is not None, "the project's networks take the direct path"
    params = {k: v.to(dtype).requires_grad_() for k, v in fnn.init_params(template, random.key(0)).items()}
    x = random.normal(random.key(1), shape, dtype=dtype).requires_grad_()
    out, expected = apply(params, x), reference(template, params, x)
    assert torch.equal(out, expected)
    cotangent = random.normal(random.key(2), out.shape, dtype=dtype)
    grads = torch.autograd.grad(out, [x, *params.values()], cotangent)
    expected_grads = torch.autograd.grad(expected, [x, *params.values()], cotangent)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads, strict=True))


@pytest.mark.parametrize("name", ["mnist_mlp_decoder", "mnist_conv_decoder"])
def test_direct_path_under_vmap_and_func_grad(name):
    build, shape = TEMPLATES[name]
    template, apply = fnn.functional(build)
    stacked = {k: torch.stack([v, 2 * v]) for k, v in fnn.init_params(template, random.key(0)).items()}
    x = random.normal(random.key(1), shape)

    def loss(f, params):
        return f(params, x).square().mean()

    def ref(params, x):
        return reference(template, params, x)

    ours = torch.func.vmap(torch.func.grad(functools.partial(loss, apply)))(stacked)
    theirs = torch.func.vmap(torch.func.grad(functools.partial(loss, ref)))(stacked)
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-7) for k in ours)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5),
    activation=st.sampled_from([nn.ELU, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity]),
    bias=st.booleans(),
)
def test_any_plain_mlp_is_bitwise_functional_call(sizes, activation, bias):
    def build():
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b, bias=bias), activation()]
        return nn.Sequential(*layers)

    template, apply = fnn.functional(build)
    params = fnn.init_params(template, random.key(0))
    x = random.normal(random.key(1), (3, sizes[0]))
    assert torch.equal(apply(params, x), reference(template, params, x))


def test_realnvp_conditioners_take_the_direct_path():
    template, apply = fnn.functional(lambda: bijectors._conditioner(4, (8,)))
    assert fnn.sequential_program(template) is not None
    params = fnn.init_params(template, random.key(0))
    x = random.normal(random.key(1), (3, 4))
    assert torch.equal(apply(params, x), reference(template, params, x))


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True)), (2, 3)),  # in place
        (lambda: nn.Sequential(nn.Sequential(nn.Linear(3, 3)), nn.ELU()), (2, 3)),  # nested
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.GELU()), (2, 3)),  # no direct form
        (lambda: nn.Sequential(nn.Conv2d(3, 3, 3, padding="same")), (2, 3, 5, 5)),  # string padding
        (lambda: nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")), (2, 3, 5, 5)),
        (lambda: nn.Sequential(torch.nn.utils.parametrizations.weight_norm(nn.Linear(3, 3))), (2, 3)),
        (lambda: nn.Linear(3, 3), (2, 3)),  # not a Sequential
    ],
)
def test_anything_else_falls_back_to_functional_call(build, shape):
    template, apply = fnn.functional(build)
    assert fnn.sequential_program(template) is None
    params = fnn.init_params(template, random.key(0))
    x = random.normal(random.key(1), shape)
    assert torch.equal(apply(params, x), reference(template, params, x))


def test_a_hooked_template_falls_back():
    def build():
        seq = nn.Sequential(nn.Linear(3, 3))
        seq[0].register_forward_hook(lambda m, i, o: o * 2)
        return seq

    template, apply = fnn.functional(build)
    assert fnn.sequential_program(template) is None
    params = fnn.init_params(template, random.key(0))
    x = random.normal(random.key(1), (2, 3))
    assert torch.equal(apply(params, x), 2 * torch.nn.functional.linear(x, params["0.weight"], params["0.bias"]))


def test_wrong_parameters_get_functional_calls_errors():
    template, apply = fnn.functional(lambda: nn.Sequential(nn.Linear(3, 2), nn.ELU()))
    params = fnn.init_params(template, random.key(0))
    x = random.normal(random.key(1), (2, 3))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        apply({**params, "extra": torch.zeros(1)}, x)
    with pytest.raises(RuntimeError, match="Missing key"):
        apply({"0.weight": params["0.weight"]}, x)
