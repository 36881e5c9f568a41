"""Model registry for ``python -m experiments.run``.

Adding a model is one registration: decorate a function that turns
``(dataset spec, config)`` into a :class:`Recipe` with :func:`register_model`.
The runner only talks to recipes, so nothing else needs editing::

    @register_model("my_vae", defaults={"latent_dim": 16})
    def my_vae(spec, config):
        ...
        return Recipe(...)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from fgm import data as fdata
from fgm import bijectors, optim, random, train
from fgm.models import networks, vae as vae_lib


class Recipe(NamedTuple):
    """Everything the runner needs to train, evaluate and show one model.

    Attributes:
      init: ``key -> TrainState``.
      step: ``(state, batch, key) -> (state, metrics)``; ``batch`` is the model
        input (binarised / scaled images), the key gives the step's noise.
      evaluate: ``(params, batch, key) -> {name: [B] per-example values}``;
        the runner averages them over a split (validation, test).
      generate: ``(params, noise) -> images [N, C, H, W] in [0, 1]``.
      noise: ``(key, n) -> noise`` for :attr:`generate`.
      networks: ``{name: (template, example input shape)}`` for the parameter table.
      objective: the metric name that the learning curve and NaN guard follow.
    """

    init: Callable[[random.Key], train.TrainState]
    step: train.StepFn
    evaluate: Callable[[Any, torch.Tensor, random.Key], dict[str, torch.Tensor]]
    generate: Callable[[Any, torch.Tensor], torch.Tensor]
    noise: Callable[[random.Key, int], torch.Tensor]
    networks: dict[str, tuple[nn.Module, tuple[int, ...]]]
    objective: str


class ModelEntry(NamedTuple):
    build: Callable[[fdata.DatasetSpec, dict], Recipe]
    defaults: dict


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, defaults: dict | None = None):
    """Decorator registering ``build(spec, config) -> Recipe`` under ``name``.

    ``defaults`` are model hyperparameters (e.g. ``latent_dim``) that the
    config can override; they are recorded in the run's resolved config.
    """

    def wrap(build):
        MODELS[name] = ModelEntry(build, dict(defaults or {}))
        return build

    return wrap


def get_model(name: str) -> ModelEntry:
    """The registered model ``name``; a clear error listing the choices otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def make_optimizer(config: dict, total_steps: int) -> optim.GradientTransformation:
    """Adam with the configured learning rate and schedule (``constant`` or ``cosine``)."""
    lr = config["lr"]
    if config.get("lr_schedule", "constant") == "cosine":
        lr = optim.cosine_decay_schedule(lr, max(total_steps, 1), alpha=config.get("lr_final_fraction", 0.1))
    elif config.get("lr_schedule", "constant") != "constant":
        raise ValueError(f"unknown lr_schedule {config['lr_schedule']!r}; choose from: constant, cosine")
    return optim.adam(lr)


def build_vae(spec: fdata.DatasetSpec, config: dict, prior: vae_lib.Prior | None = None) -> vae_lib.VAE:
    """The dataset's encoder/decoder pair with the dataset's likelihood."""
    d = config["latent_dim"]
    if spec.likelihood == "bernoulli":
        likelihood = vae_lib.bernoulli_likelihood()
        enc = functools.partial(networks.mnist_mlp_encoder, d, tuple(config["hidden"]))
        dec = functools.partial(networks.mnist_mlp_decoder, d, tuple(reversed(config["hidden"])))
    else:
        likelihood = vae_lib.discretized_logistic_likelihood()
        enc = functools.partial(networks.svhn_conv_encoder, d, config["width"])
        dec = functools.partial(networks.svhn_conv_decoder, d, config["width"], 2 * spec.shape[0])
    return vae_lib.make_vae(enc, dec, likelihood, d, spec.shape, prior=prior)


def vae_recipe(vae: vae_lib.VAE, config: dict) -> Recipe:
    """Train/eval/generate functions for any :class:`fgm.models.vae.VAE`."""
    optimizer = make_optimizer(config, config["total_steps"])
    loss_fn = functools.partial(vae_lib.loss, vae)
    step = train.make_step(
        loss_fn,
        optimizer,
        make_inputs=lambda x, key: (x, vae_lib.latent_noise(vae, key, x.shape[0])),
    )

    def init(key):
        return train.init_state(vae_lib.init(vae, key), optimizer, key)

    def evaluate(params, x, key):
        terms = vae_lib.elbo_terms(vae, params, x, vae_lib.latent_noise(vae, key, x.shape[0]))
        return {"neg_elbo": -terms.elbo, "recon": -terms.log_likelihood, "kl": terms.kl}

    c, h, w = vae.image_shape
    return Recipe(
        init=init,
        step=step,
        evaluate=evaluate,
        generate=functools.partial(vae_lib.generate, vae),
        noise=lambda key, n: random.normal(key, (n, vae.latent_dim)),
        networks={"encoder": (vae.encoder, (1, c, h, w)), "decoder": (vae.decoder, (1, vae.latent_dim))},
        objective="neg_elbo",
    )


@register_model("vae_std", defaults={"latent_dim": 32, "hidden": [512, 256], "width": 32})
def vae_std(spec: fdata.DatasetSpec, config: dict) -> Recipe:
    """VAE with a standard Gaussian prior and analytic KL."""
    return vae_recipe(build_vae(spec, config), config)


@register_model(
    "vae_flow",
    defaults={"latent_dim": 32, "hidden": [512, 256], "width": 32, "flow_layers": 4, "flow_hidden": [128]},
)
def vae_flow(spec: fdata.DatasetSpec, config: dict) -> Recipe:
    """The same encoder/decoder as ``vae_std`` with a RealNVP prior (Monte-Carlo KL)."""
    flow = bijectors.realnvp(config["latent_dim"], config["flow_layers"], tuple(config["flow_hidden"]))
    return vae_recipe(build_vae(spec, config, prior=vae_lib.flow_prior(flow)), config)
