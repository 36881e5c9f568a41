"""Model registry for ``python -m experiments.run``.

Adding a model is one registration: decorate a function that turns
``(dataset spec, config)`` into a :class:`Recipe` with :func:`register_model`.
The runner only talks to recipes, so nothing else needs editing::

    @register_model("my_vae", defaults={"latent_dim": 16})
    def my_vae(spec, config):
        ...
        return Recipe(...)

Adding a dataset is one :func:`fgm.data.register_dataset` call. The models
registered here pick their networks from the dataset's spec, not its name:
MLPs for binarised (``"bernoulli"``) data of any shape, ConvNets for 32×32
images of 256 levels, a ``ValueError`` naming the shape otherwise.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import nn

from experiments import analysis
from fgm import data as fdata
from fgm import bijectors, distributions, optim, random, train
from fgm.metrics import nll as nll_lib
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
      monitor: optional factory ``() -> watch``; the runner makes one ``watch``
        per run and calls ``watch(metrics, step) -> message | None`` after every
        step. A message (e.g. "the discriminator has won since step 1200") is
        printed and recorded in that epoch's ``warnings``; training goes on.
      train_input: ``(uint8 batch, key) -> model input``; default: the
        dataset's likelihood transform (``fgm.data.to_model_input``, e.g.
        dynamic binarisation for MNIST).
      eval_input: ``uint8 images -> model input`` for validation/test; default
        ``fgm.data.to_eval_input``.
      log_likelihood: ``(params, x, key, K) -> [B]`` estimate of ``log p(x)``
        (the IWAE bound for VAEs), reported as the test NLL; ``None`` for
        models without a likelihood (GANs).
      interpolate: ``(params, noise_a [P, ...], noise_b, images_a [P, C, H, W]
        | None, images_b, weights [W]) -> {kind: experiments.analysis.Strip}``:
        images along paths between two latent points (noise as from
        :attr:`noise`; images in model-input form, for models with an
        encoder); see :mod:`experiments.analysis`. ``None``: no interpolations.
      make_update: ``(backend=..., donate=...) -> update``, the step's pure
        tensor core ``update(params, opt_state, *inputs) -> (params,
        opt_state, metrics)`` (keywords as :func:`fgm.train.make_update`);
        with :attr:`make_inputs` it is the same step as :attr:`step`. Built
        with ``backend="func"`` it composes with ``vmap``, which is how
        ``--seeds`` trains several members at once (``experiments.ensemble``),
        and the runner trains single runs with ``make_update(donate=True)``
        (bitwise the same as :attr:`step`, without fresh buffers), so a
        recipe that replaces :attr:`step` must replace or clear this too.
        ``None``: the model cannot be trained as an ensemble, and the runner
        uses :attr:`step`.
      make_inputs: ``(model input batch, key) -> inputs`` of :attr:`make_update`'s
        update: the step's noise, drawn from the step's key.
    """

    init: Callable[[random.Key], train.TrainState]
    step: train.StepFn
    evaluate: Callable[[Any, torch.Tensor, random.Key], dict[str, torch.Tensor]]
    generate: Callable[[Any, torch.Tensor], torch.Tensor]
    noise: Callable[[random.Key, int], torch.Tensor]
    networks: dict[str, tuple[nn.Module, tuple[int, ...]]]
    objective: str
    monitor: Optional[Callable[[], Callable[[dict, int], Optional[str]]]] = None
    train_input: Optional[Callable[[torch.Tensor, random.Key], torch.Tensor]] = None
    eval_input: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    log_likelihood: Optional[Callable[[Any, torch.Tensor, random.Key, int], torch.Tensor]] = None
    interpolate: Optional[Callable[..., dict]] = None
    make_update: Optional[Callable[..., train.UpdateFn]] = None
    make_inputs: Optional[train.InputsFn] = None


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


def _architecture(spec: fdata.DatasetSpec, model: str) -> str:
    """The built-in network family for a dataset: ``"mlp"`` or ``"conv"``.

    Binarised data (``"bernoulli"``, e.g. MNIST) of any shape gets MLPs over
    the ``C·H·W`` pixels; 32×32 images of 256 levels (SVHN) get the strided
    ConvNets. Anything else is refused: register a model of your own for it.
    """
    c, h, w = spec.shape
    if spec.likelihood == "bernoulli":
        return "mlp"
    if (h, w) == (32, 32):
        return "conv"
    raise ValueError(
        f"{model}: no built-in architecture for dataset {spec.name!r} of shape {tuple(spec.shape)} "
        f"with the {spec.likelihood!r} likelihood; the built-in networks are MLPs for 'bernoulli' data "
        "of any shape and ConvNets for 32×32 images. Register a model of your own for other data "
        "(experiments.registry.register_model)"
    )


def build_vae(spec: fdata.DatasetSpec, config: dict, prior: vae_lib.Prior | None = None) -> vae_lib.VAE:
    """The dataset's encoder/decoder pair with the dataset's likelihood.

    MLPs of widths ``hidden`` for binarised data of any shape (MNIST);
    ConvNets of ``width`` for 32×32 images of 256 levels (SVHN).

    Raises:
      ValueError: no built-in architecture fits the dataset (the message names its shape).
    """
    d = config["latent_dim"]
    c = spec.shape[0]
    if _architecture(spec, "vae") == "mlp":
        likelihood = vae_lib.bernoulli_likelihood()
        enc = functools.partial(networks.mnist_mlp_encoder, d, tuple(config["hidden"]), image_shape=spec.shape)
        dec = functools.partial(
            networks.mnist_mlp_decoder, d, tuple(reversed(config["hidden"])), likelihood.out_channels * c,
            image_shape=spec.shape,
        )
    else:
        likelihood = vae_lib.discretized_logistic_likelihood()
        enc = functools.partial(networks.svhn_conv_encoder, d, config["width"], in_channels=c)
        dec = functools.partial(networks.svhn_conv_decoder, d, config["width"], likelihood.out_channels * c)
    return vae_lib.make_vae(enc, dec, likelihood, d, spec.shape, prior=prior)


def vae_recipe(vae: vae_lib.VAE, config: dict) -> Recipe:
    """Train/eval/generate functions for any :class:`fgm.models.vae.VAE`."""
    optimizer = make_optimizer(config, config["total_steps"])
    loss_fn = functools.partial(vae_lib.loss, vae)
    make_inputs = lambda x, key: (x, vae_lib.latent_noise(vae, key, x.shape[0]))  # noqa: E731
    step = train.make_step(loss_fn, optimizer, make_inputs=make_inputs)

    def init(key):
        return train.init_state(vae_lib.init(vae, key), optimizer, key)

    def evaluate(params, x, key):
        terms = vae_lib.elbo_terms(vae, params, x, vae_lib.latent_noise(vae, key, x.shape[0]))
        values = {"neg_elbo": -terms.elbo, "recon": -terms.log_likelihood, "kl": terms.kl}
        if vae.likelihood.name == "discretized_logistic":
            # 256-level pixels: the bound is a code length, reported per sub-pixel in bits
            values["bits_per_dim"] = distributions.bits_per_dim(-terms.elbo, math.prod(vae.image_shape))
        return values

    c, h, w = vae.image_shape
    return Recipe(
        init=init,
        step=step,
        evaluate=evaluate,
        generate=functools.partial(vae_lib.generate, vae),
        noise=lambda key, n: random.normal(key, (n, vae.latent_dim)),
        networks={"encoder": (vae.encoder, (1, c, h, w)), "decoder": (vae.decoder, (1, vae.latent_dim))},
        objective="neg_elbo",
        log_likelihood=lambda params, x, key, k: nll_lib.iwae_log_likelihood(vae, params, x, key, k, chunk_size=min(k, 100)),
        interpolate=functools.partial(analysis.vae_interpolations, vae),
        make_update=functools.partial(train.make_update, loss_fn, optimizer),
        make_inputs=make_inputs,
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
    vae = build_vae(spec, config, prior=vae_lib.flow_prior(flow))
    # interpolations in both spaces: the flow's base space u and its latent space z = f(u)
    return vae_recipe(vae, config)._replace(interpolate=functools.partial(analysis.vae_interpolations, vae, flow=flow))


# --------------------------------------------------------------------------- GAN

from fgm.models import gan as gan_lib  # noqa: E402


def build_gan(spec: fdata.DatasetSpec, config: dict) -> gan_lib.GAN:
    """The dataset's generator/discriminator pair (templates only).

    The same choice as :func:`build_vae`: binarised datasets of any shape
    (MNIST) get MLPs (``g_hidden``, ``d_hidden``), dense layers being the
    cheapest FLOPs on a CPU; 32×32 images of 256 levels (SVHN) get
    DCGAN-style convnets of ``width`` that mirror the SVHN VAE's encoder and
    decoder. Other datasets raise a ValueError naming the shape.
    """
    d = config["latent_dim"]
    c = spec.shape[0]
    if _architecture(spec, "gan") == "mlp":
        build_g = functools.partial(gan_lib.mlp_generator, d, spec.shape, tuple(config["g_hidden"]))
        build_d = functools.partial(gan_lib.mlp_discriminator, spec.shape, tuple(config["d_hidden"]))
    else:
        build_g = functools.partial(gan_lib.dcgan_generator, d, c, config["width"])
        build_d = functools.partial(gan_lib.dcgan_discriminator, c, config["width"])
    return gan_lib.make_gan(build_g, build_d, d, spec.shape)


def gan_optimizer(config: dict, total_steps: int) -> optim.GradientTransformation:
    """Adam with the GAN's betas (``b1``, ``b2``) and the configured lr and schedule.

    GANs use a small ``b1`` (0.5, after DCGAN): with the opponent moving, old
    gradients are stale, so the first-moment average should forget faster.
    """
    lr = config["lr"]
    schedule = config.get("lr_schedule", "constant")
    if schedule == "cosine":
        lr = optim.cosine_decay_schedule(lr, max(total_steps, 1), alpha=config.get("lr_final_fraction", 0.1))
    elif schedule != "constant":
        raise ValueError(f"unknown lr_schedule {schedule!r}; choose from: constant, cosine")
    return optim.adam(lr, b1=config["b1"], b2=config["b2"])


@register_model(
    "gan",
    defaults={
        "latent_dim": 64,
        "loss": "non_saturating",
        "g_hidden": [256, 512],
        "d_hidden": [512, 256],
        "width": 32,
        "b1": 0.5,
        "b2": 0.999,
        "d_steps": 1,
        "gp_weight": 10.0,
    },
)
def gan(spec: fdata.DatasetSpec, config: dict) -> Recipe:
    """GAN trained by alternating D and G steps (loss chosen by ``loss``; see docs/gan.md).

    The objective followed by the curves is ``d_loss``: for the cross-entropy
    losses its value on held-out data bounds the Jensen–Shannon divergence
    between data and samples from below (``JSD ≥ log 2 - d_loss / 2``), it
    sits near ``2 log 2`` while the game is balanced and drops towards 0 when
    D wins. ``g_loss`` has no such reading: it can fall while the samples get
    worse.
    """
    model = build_gan(spec, config)
    loss = gan_lib.get_loss(config["loss"], config["gp_weight"])
    total_steps = config.get("total_steps", 1)
    g_opt, d_opt = gan_optimizer(config, total_steps), gan_optimizer(config, total_steps)
    step = gan_lib.make_gan_step(model, loss, g_opt, d_opt, config["d_steps"])

    def evaluate(params, x, key):
        return gan_lib.evaluate(model, loss, params, x, gan_lib.latent_noise(model, key, x.shape[0]))

    c, h, w = model.image_shape
    return Recipe(
        init=lambda key: gan_lib.init_state(model, g_opt, d_opt, key),
        step=step,
        evaluate=evaluate,
        generate=functools.partial(gan_lib.generate, model),
        noise=functools.partial(gan_lib.latent_noise, model),
        networks={"generator": (model.generator, (1, model.latent_dim)), "discriminator": (model.discriminator, (1, c, h, w))},
        objective="d_loss",
        # A Wasserstein critic's outputs are not probabilities: σ(D) ≈ 0 is no sign of a won game.
        monitor=None if loss.gradient_penalty > 0 else gan_lib.discriminator_won_monitor(),
        # Pixels in [-1, 1], not binarised: the generator's tanh covers that range.
        train_input=lambda images, key: gan_lib.scale_pixels(images),
        eval_input=gan_lib.scale_pixels,
        interpolate=functools.partial(analysis.gan_interpolations, model),
        make_update=functools.partial(gan_lib.make_gan_update, model, loss, g_opt, d_opt),
        make_inputs=gan_lib.gan_inputs(model, loss, config["d_steps"]),
    )
