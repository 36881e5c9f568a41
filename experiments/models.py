"""The model registry of ``python -m experiments.run``: names, settings, and what each model builds.

A model is registered with its settings (defaults, types, ranges) and a
function ``build(spec, config) -> Experiment``; the training pieces come from
the model's own module (``fgm.models.vae.build``, ``fgm.models.gan.build``),
so nothing here assembles a train step::

    @register_model("my_vae", settings={"latent_dim": (16, Setting("latent_dim", int, "latent size", low=1))},
                    overrides={("mnist", "default"): {"epochs": 20}}, colour="tab:red", metrics=VAE_METRICS)
    def my_vae(spec, config):
        ...
        return Experiment(trainer=vae.build(model, optim.adam(config["lr"])), ...)

The registration is the only place that knows a model: its settings, its
overrides per (dataset, profile), the images one update reads, and how the
report draws it (colour, order, its own metrics). The rest of the pipeline
reads them from :data:`MODELS`; a model registered in another module records
that module (``config.json``'s ``"import"``), so a run of it names the
``--import`` it needs.

The built-in models pick their networks from the dataset's spec: MLPs for
binarised (``"bernoulli"``) data of any shape, ConvNets for 32×32 images of
256 levels, a ValueError naming the shape otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from experiments import config as cfg
from experiments.config import Setting
from fgm import bijectors, distributed, interpolate, optim, random
from fgm import data as fdata
from fgm.metrics import nll as nll_lib
from fgm.models import gan as gan_lib
from fgm.models import networks
from fgm.models import vae as vae_lib
from fgm.models import vamp as vamp_lib
from fgm.types import Trainer


class Experiment(NamedTuple):
    """A model's training pieces plus what the command line needs around them.

    Attributes:
      trainer: the model's :class:`fgm.types.Trainer`.
      networks: ``{name: (template, example input shape)}`` for the parameter table.
      objective: the metric the curves and logs follow.
      train_input: ``(uint8 batch, key) -> model input`` (e.g. dynamic binarisation).
      eval_input: ``uint8 images -> model input`` for validation and test.
      monitor: optional ``() -> watch``; ``watch(metrics, step) -> message | None``
        after every step (e.g. "the discriminator has won"); training goes on.
      log_likelihood: ``(params, x, key, K) -> [B]`` estimate of ``log p(x)``,
        or ``None`` (no likelihood: GANs).
      interpolate: ``(params, noise_a, noise_b, images_a | None, images_b,
        weights) -> {kind: interpolate.Strip}``, or ``None``.
      sample_variables: ``(variables, raw, batch_stats, key) -> (variables,
        description)``: what ``fid --raw-generator``/``--ema-batch-stats N``
        sample from (a GAN's G or its moving average), or ``None``.
      evaluation_variables: ``variables -> variables`` applied to each
        member's variables before the run evaluates or samples them (a GAN's
        average of G given BatchNorm statistics of its own), or ``None``.
    """

    trainer: Trainer
    networks: dict[str, tuple[nn.Module, tuple[int, ...]]]
    objective: str
    train_input: Callable[[torch.Tensor, random.Key], torch.Tensor]
    eval_input: Callable[[torch.Tensor], torch.Tensor]
    monitor: Callable[[], Callable[[dict, int], str | None]] | None = None
    log_likelihood: Callable[..., torch.Tensor] | None = None
    interpolate: Callable[..., dict] | None = None
    sample_variables: Callable[..., tuple[Any, str]] | None = None
    evaluation_variables: Callable[[Any], Any] | None = None


class Metric(NamedTuple):
    """A number of a model's own that the report shows: ``test_<name>`` in the table, ``<name>`` on the curves."""

    name: str  # logged as train_<name>/val_<name> per epoch and test_<name> in results.json
    title: str  # the table column's title
    digits: int  # decimals shown
    curve: str | None = None  # the learning-curve panel's title (None: no panel)
    compared: bool = True  # whether the report lists the differences between models on it


def batch_images(config: dict) -> int:
    """Training images one update reads by default: one batch."""
    return config["batch_size"]


class ModelEntry(NamedTuple):
    """A registered model: how to build it and everything the pipeline knows of it (see :func:`register_model`)."""

    build: Callable[[fdata.DatasetSpec, dict], Experiment]
    defaults: dict
    overrides: dict[tuple[str, str], dict] = {}
    colour: str | None = None
    order: int | None = None
    metrics: tuple[Metric, ...] = ()
    images_per_update: Callable[[dict], int] = batch_images
    module: str | None = None
    study: bool = True


MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    settings: dict[str, tuple[Any, Setting | None]] | None = None,
    *,
    overrides: dict[tuple[str, str], dict] | None = None,
    colour: str | None = None,
    order: int | None = None,
    metrics: tuple[Metric, ...] = (),
    images_per_update: Callable[[dict], int] = batch_images,
    study: bool = True,
):
    """Decorator registering ``build(spec, config) -> Experiment`` under ``name``.

    Args:
      name: the command-line name.
      settings: ``{key: (default, Setting or None)}``: the model's settings
        (``--set key=value``). Without a :class:`Setting` the type is the
        default's and any value of that type is allowed.
      overrides: ``{(dataset, profile): {key: value}}``: settings of the run or
        the model that differ from the profile's and the model's defaults on
        that dataset and profile (checked here).
      colour: the report's colour for the model (``None``: one of the spare ones).
      order: the report's place for the model (``None``: after the ordered ones,
        in registration order).
      metrics: the model's own test metrics and curves in the report (the sample
        metrics and the NLL are every model's); the first is in ``all``'s summary.
      images_per_update: ``config -> training images one update reads`` (an epoch
        is that many images per step).
      study: ``all`` runs it without ``--models`` (else only when named there).
    """

    def wrap(build):
        own = {}
        for key, (default, spec) in (settings or {}).items():
            spec = spec or Setting(key, list if isinstance(default, list) else type(default), key, flag=False)
            known = cfg.MODEL_SETTINGS.setdefault(key, spec._replace(flag=False))
            if known.type is not spec.type:
                raise ValueError(f"setting {key!r} of {name} is {spec.type.__name__}, elsewhere {known.type.__name__}")
            own[key] = default
        for (dataset, profile), values in (overrides or {}).items():
            if profile not in cfg.PROFILES:
                raise ValueError(
                    f"{name}: override for unknown profile {profile!r}; choose from: {', '.join(cfg.PROFILES)}"
                )
            for key, value in values.items():
                if key not in cfg.RUN_SETTINGS and key not in own:
                    raise ValueError(f"{name}: override of {key!r} for ({dataset}, {profile}) is not a setting of it")
                cfg.check_value(cfg.setting(key), value, f"{name}: override {key} for ({dataset}, {profile})")
        module = None if build.__module__ == __name__ or build.__module__.startswith("__") else build.__module__
        MODELS[name] = ModelEntry(
            build, own, dict(overrides or {}), colour, order, tuple(metrics), images_per_update, module, study
        )
        return build

    return wrap


def get_model(name: str) -> ModelEntry:
    """The registered model ``name``; a ValueError listing the choices otherwise."""
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; choose from: {', '.join(sorted(MODELS))} (a model of your own: "
            "--import the module that registers it)"
        )
    return MODELS[name]


def defaults(name: str, dataset: str, profile: str) -> dict:
    """Model ``name``'s settings on ``dataset`` at ``profile`` before any flag (``config.defaults``)."""
    return cfg.defaults(get_model(name), dataset, profile)


def images_per_update(config: dict) -> int:
    """Training images one update of the config's model reads (a GAN iteration: one batch per D step)."""
    return get_model(config["model"]).images_per_update(config)


def build(config: dict) -> Experiment:
    """The :class:`Experiment` of a resolved config."""
    return get_model(config["model"]).build(fdata.get_spec(config["dataset"]), config)


def adam(config: dict, total_steps: int, lr: float | None = None, **betas) -> optim.GradientTransformation:
    """Adam with the configured learning rate (or ``lr``) and schedule over ``total_steps`` updates.

    In a process group of several ranks (``torchrun``), it first averages the
    gradients over the ranks (:func:`fgm.distributed.averaged_gradients`).
    """
    lr = config["lr"] if lr is None else lr
    if config["lr_schedule"] == "cosine":
        lr = optim.cosine_decay_schedule(lr, max(total_steps, 1), alpha=config["lr_final_fraction"])
    opt = optim.adam(lr, **betas)
    return distributed.averaged_gradients(opt) if distributed.world_size() > 1 else opt


def _architecture(spec: fdata.DatasetSpec, model: str) -> str:
    """``"mlp"`` for binarised data of any shape, ``"conv"`` for 32×32 images; a ValueError otherwise."""
    if spec.likelihood == "bernoulli":
        return "mlp"
    if tuple(spec.shape[1:]) == (32, 32):
        return "conv"
    raise ValueError(
        f"{model}: no built-in architecture for dataset {spec.name!r} of shape {tuple(spec.shape)} "
        f"with the {spec.likelihood!r} likelihood; the built-in networks are MLPs for 'bernoulli' data "
        "of any shape and ConvNets for 32×32 images. Register a model of your own for other data "
        "(experiments.models.register_model)"
    )


def dataset_inputs(spec: fdata.DatasetSpec) -> dict:
    """The dataset's own input transforms (its likelihood's: binarisation, 256 levels)."""
    return {
        "train_input": lambda images, key: fdata.to_model_input(spec.name, images, key),
        "eval_input": lambda images: fdata.to_eval_input(spec.name, images),
    }


def build_vae(spec: fdata.DatasetSpec, config: dict, prior: vae_lib.Prior | None = None) -> vae_lib.VAE:
    """The dataset's encoder/decoder pair with the dataset's likelihood.

    For binarised data (MNIST) MLPs of widths ``hidden`` (``arch=auto`` or
    ``mlp``) or, with ``arch=conv``, the conv GAN's shapes at ``width``;
    ConvNets of ``width`` for 32×32 images of 256 levels (SVHN).
    """
    d, c = config["latent_dim"], spec.shape[0]
    arch = config.get("arch", "auto")
    if _architecture(spec, "vae") == "mlp":
        likelihood = vae_lib.bernoulli_likelihood()
        out = likelihood.out_channels * c
        if arch == "conv":
            enc = functools.partial(networks.mnist_conv_encoder, d, config["width"], spec.shape)
            dec = functools.partial(networks.mnist_conv_decoder, d, config["width"], out, spec.shape)
        else:
            enc = functools.partial(networks.mnist_mlp_encoder, d, tuple(config["hidden"]), image_shape=spec.shape)
            widths = tuple(reversed(config["hidden"]))
            dec = functools.partial(networks.mnist_mlp_decoder, d, widths, out, image_shape=spec.shape)
    elif arch == "mlp":
        raise ValueError(f"vae: arch=mlp is for binarised data; {spec.name} is modelled by the ConvNets (arch=conv)")
    else:
        likelihood = vae_lib.discretized_logistic_likelihood()
        enc = functools.partial(networks.svhn_conv_encoder, d, config["width"], in_channels=c)
        dec = functools.partial(networks.svhn_conv_decoder, d, config["width"], likelihood.out_channels * c)
    return vae_lib.make_vae(enc, dec, likelihood, d, spec.shape, prior=prior)


# Importance samples per chunk of the test NLL, eager and compiled: the fastest of 25, 50, 100 and 250 in one
# run each of benchmarks/bench_nll.py (BENCHMARKS.md); smaller chunks keep the [chunk · 100, 784] tensors in cache.
IWAE_CHUNK = {False: 25, True: 50}


def vae_experiment(spec: fdata.DatasetSpec, config: dict, vae: vae_lib.VAE, flow=None) -> Experiment:
    """Any :class:`fgm.models.vae.VAE`, trained on the negative ELBO with the IWAE bound as its test NLL."""
    c, h, w = vae.image_shape
    compiled_nll = bool(config.get("compile") or config.get("compile_nll"))
    return Experiment(
        trainer=vae_lib.build(vae, adam(config, config["total_steps"])),
        networks={"encoder": (vae.encoder, (1, c, h, w)), "decoder": (vae.decoder, (1, vae.latent_dim))},
        objective="neg_elbo",
        log_likelihood=lambda params, x, key, k: nll_lib.iwae_log_likelihood(
            vae, params, x, key, k, min(k, IWAE_CHUNK[compiled_nll]), compile=compiled_nll
        ),
        interpolate=functools.partial(interpolate.vae_interpolations, vae, flow=flow),
        **dataset_inputs(spec),
    )


_LATENT = Setting("latent_dim", int, "latent dimensions", low=1)
_HIDDEN = Setting("hidden", list, "MLP hidden widths, encoder order", low=1)
_WIDTH = Setting("width", int, "ConvNet base channels", low=1)
_VAE = {
    "latent_dim": (32, _LATENT),
    "arch": (
        "auto",
        Setting(
            "arch", str, "networks (auto: MLP for binarised data, conv for 32×32)", choices=("auto", "conv", "mlp")
        ),
    ),
    "hidden": ([512, 256], _HIDDEN),
    "width": (32, _WIDTH),
}


# What the report shows of a VAE beside the NLL (the first: the sweep's summary line too)
VAE_METRICS = (
    Metric("neg_elbo", "test −ELBO ↓ (nats)", 2, "negative ELBO (nats)"),
    Metric("recon", "reconstruction (nats)", 2, "reconstruction (nats)"),
    Metric("kl", "KL (nats)", 2, "KL (nats)"),
)
# MNIST VAEs: width is read by arch=conv only, whose width 80 matches the conv GAN's.
_VAE_OVERRIDES = {("mnist", profile): {"width": 80} for profile in cfg.PROFILES}


@register_model("vae_std", settings=_VAE, overrides=_VAE_OVERRIDES, colour="tab:blue", order=0, metrics=VAE_METRICS)
def vae_std(spec: fdata.DatasetSpec, config: dict) -> Experiment:
    """VAE with a standard Gaussian prior and analytic KL."""
    return vae_experiment(spec, config, build_vae(spec, config))


@register_model(
    "vae_flow",
    settings={
        **_VAE,
        "flow_layers": (4, Setting("flow_layers", int, "RealNVP coupling layers", low=2)),
        "flow_hidden": ([128], Setting("flow_hidden", list, "coupling conditioner widths", low=1)),
    },
    overrides=_VAE_OVERRIDES,
    colour="tab:orange",
    order=1,
    metrics=VAE_METRICS,
)
def vae_flow(spec: fdata.DatasetSpec, config: dict) -> Experiment:
    """The same encoder/decoder as ``vae_std`` with a RealNVP prior (Monte-Carlo KL)."""
    flow = bijectors.realnvp(config["latent_dim"], config["flow_layers"], tuple(config["flow_hidden"]))
    # interpolations in both spaces: the flow's base space u and its latent space z = f(u)
    return vae_experiment(spec, config, build_vae(spec, config, prior=vae_lib.flow_prior(flow)), flow=flow)


@register_model(
    "vae_vamp",
    settings={
        **_VAE,
        # K = 100, not the paper's 500: every step encodes the K pseudo-inputs (step times: docs/vae_vamp.md)
        "pseudo_inputs": (100, Setting("pseudo_inputs", int, "VampPrior components K (learned pseudo-inputs)", low=1)),
    },
    colour="tab:red",
    order=2,
    metrics=VAE_METRICS,
    study=False,  # outside the study until issue 30 decides (docs/vae_vamp.md); `all --models vae_vamp` runs it
)
def vae_vamp(spec: fdata.DatasetSpec, config: dict) -> Experiment:
    """The same encoder/decoder as ``vae_std`` with a VampPrior of ``pseudo_inputs`` components (Monte-Carlo KL)."""
    vae = build_vae(spec, config)
    bounds = (0.0, 1.0) if vae.likelihood.name == "bernoulli" else (-1.0, 1.0)  # the encoder's input range
    vae = vamp_lib.with_vamp_prior(vae, config["pseudo_inputs"], bounds)
    # the prior's noise holds the component choice: interpolate between prior draws in latent space
    strips = functools.partial(interpolate.vae_interpolations, vae, noise_paths=False)
    return vae_experiment(spec, config, vae)._replace(interpolate=strips)


def build_gan(spec: fdata.DatasetSpec, config: dict) -> gan_lib.GAN:
    """The networks of ``arch``: MLPs (``g_hidden``, ``d_hidden``) or DCGAN-style ConvNets of ``width``.

    ConvNets: MNIST's 7 → 14 → 28 pair (``g_batchnorm``, ``d_spectral_norm``)
    for 1×28×28 images, the 4 → 8 → 16 → 32 pair for 32×32 images. ``auto``
    takes the ConvNet where one fits the shape, else the dataset's MLP.
    """
    d, c = config["latent_dim"], spec.shape[0]
    mnist_shaped, conv_fits = tuple(spec.shape) == (1, 28, 28), tuple(spec.shape[1:]) == (32, 32)
    if config["arch"] == "conv" and not (mnist_shaped or conv_fits):
        raise ValueError(f"gan: no built-in ConvNet for shape {tuple(spec.shape)} (1×28×28 or 32×32); try arch=mlp")
    if config["arch"] == "mlp" or (config["arch"] == "auto" and not (mnist_shaped or conv_fits)):
        _architecture(spec, "gan")  # binarised data, or a clear error
        build_g = functools.partial(networks.mnist_mlp_generator, d, tuple(config["g_hidden"]), spec.shape)
        build_d = functools.partial(networks.mnist_mlp_discriminator, tuple(config["d_hidden"]), spec.shape)
    elif mnist_shaped:
        build_g = functools.partial(networks.mnist_conv_generator, d, config["width"], config["g_batchnorm"])
        build_d = functools.partial(networks.mnist_conv_discriminator, config["width"], config["d_spectral_norm"])
    else:
        build_g = functools.partial(networks.svhn_conv_generator, d, config["width"], c)
        build_d = functools.partial(networks.svhn_conv_discriminator, config["width"], c)
    return gan_lib.make_gan(build_g, build_d, d, spec.shape)


# GANs: DCGAN's constant 2e-4 (a decaying rate freezes the game wherever it is, not at an equilibrium) and
# batch 64 (twice the updates per epoch). MNIST's conv GAN: both players at 4e-4, measured better than 2e-4
# at 4 epochs (FID, recall, class balance; docs/gan.md). Width 80 keeps G + D within 25% of vae_std's
# parameters; a step costs ~0.24 s on 2 cores (BENCHMARKS.md), an epoch ~3.5 minutes: 4 epochs fit the
# default profile's 15 minutes of training, 12 the full profile's 45.
_GAN = {"batch_size": 64, "lr": 2e-4, "lr_schedule": "constant"}
_GAN_MNIST = {**_GAN, "lr": 4e-4, "width": 80}
_GAN_OVERRIDES = {
    ("mnist", "default"): {**_GAN_MNIST, "epochs": 4, "sample_every": 1, "fid_every": 1},
    ("mnist", "full"): {**_GAN_MNIST, "epochs": 12, "sample_every": 2, "fid_every": 2},
    ("mnist", "report"): {**_GAN_MNIST, "epochs": 4, "sample_every": 1, "fid_every": 1},
    ("svhn", "default"): {**_GAN, "epochs": 4, "sample_every": 1},
    ("svhn", "full"): {**_GAN, "epochs": 25, "sample_every": 5},
    ("svhn", "report"): {**_GAN, "epochs": 25, "sample_every": 5},
    ("mnist", "smoke"): {"lr": 2e-4, "width": 80},
    ("svhn", "smoke"): {"lr": 2e-4},
}
GAN_METRICS = (
    Metric("d_loss", "test D loss", 3, "D loss", compared=False),  # D and G losses are no quality measure
    Metric("g_loss", "test G loss", 3, "G loss", compared=False),
    Metric("d_real", "test D(x)", 3, "D(x)"),
    Metric("d_fake", "test D(G(z))", 3, "D(G(z))"),
)


def gan_sample_variables(gan: gan_lib.GAN, variables: dict, raw: bool, batch_stats: int, key: random.Key):
    """``(variables, description)`` that draw a GAN's samples: G itself (``raw``), or G's moving average with
    BatchNorm statistics of its own from ``batch_stats`` batches (latents from ``key``), or as they are."""
    if raw:
        return {k: v for k, v in variables.items() if k != gan_lib.EMA}, ", raw G"
    if batch_stats and gan_lib.EMA in variables:
        average = gan_lib.ema_variables_with_batch_stats(gan, variables, key, batch_stats)
        return average, f", average with BatchNorm statistics from {batch_stats} batches"
    return variables, ""


@register_model(
    "gan",
    settings={
        "latent_dim": (64, _LATENT),
        "loss": (
            "non_saturating",
            Setting("loss", str, "adversarial loss", choices=tuple(gan_lib.LOSSES)),
        ),
        "arch": ("auto", Setting("arch", str, "networks (auto: conv where built in)", choices=("auto", "conv", "mlp"))),
        "g_hidden": ([256, 512], Setting("g_hidden", list, "generator MLP widths", low=1)),
        "d_hidden": ([512, 256], Setting("d_hidden", list, "discriminator MLP widths", low=1)),
        "width": (32, _WIDTH),
        "g_batchnorm": (True, Setting("g_batchnorm", bool, "BatchNorm in MNIST's conv generator")),
        "d_spectral_norm": (False, Setting("d_spectral_norm", bool, "spectral norm in MNIST's conv discriminator")),
        # GANs use a small b1 (DCGAN): with the opponent moving, old gradients are stale.
        "b1": (0.5, Setting("b1", float, "Adam's first-moment decay", low=0.0, high=0.999)),
        "b2": (0.999, Setting("b2", float, "Adam's second-moment decay", low=0.0, high=0.99999)),
        "d_steps": (1, Setting("d_steps", int, "discriminator steps per generator step", low=1)),
        "gp_weight": (10.0, Setting("gp_weight", float, "WGAN-GP penalty weight", low=0.0)),
        # two time-scale updates (TTUR, Heusel et al. 2017): D's own rate; null: the run's lr for both players
        "d_lr": (
            None,
            Setting("d_lr", float, "the discriminator's learning rate (null: lr)", low=1e-12, high=1.0, optional=True),
        ),
        # the average of G with BatchNorm statistics of its own (docs/gan.md; 0: G's); sampling only, so eval-only
        "ema_batch_stats": (
            0,
            Setting("ema_batch_stats", int, "64-latent batches for the average's BatchNorm", low=0, eval_only=True),
        ),
        # off by default: at the default profile's length the average scored worse than G (docs/gan.md)
        "ema_decay": (
            None,
            Setting(
                "ema_decay",
                float,
                "decay of G's moving average, which draws the samples (null: off)",
                low=0.0,
                high=0.9999,
                optional=True,
            ),
        ),
    },
    overrides=_GAN_OVERRIDES,
    colour="tab:green",
    order=3,
    metrics=GAN_METRICS,
    images_per_update=lambda config: config["batch_size"] * config["d_steps"],  # a batch per D step
)
def gan(spec: fdata.DatasetSpec, config: dict) -> Experiment:
    """GAN trained by alternating D and G steps (loss chosen by ``loss``; see docs/gan.md).

    The curves follow ``d_loss``: for the cross-entropy losses its held-out
    value bounds the Jensen–Shannon divergence from below
    (``JSD ≥ log 2 - d_loss / 2``); ``g_loss`` can fall while samples worsen.
    """
    model = build_gan(spec, config)
    loss = gan_lib.get_loss(config["loss"], config["gp_weight"])
    betas = {"b1": config["b1"], "b2": config["b2"]}
    # Both schedules span the run: D takes d_steps updates per game iteration.
    g_opt = adam(config, config["total_steps"], **betas)
    d_opt = adam(config, config["total_steps"] * config["d_steps"], config["d_lr"], **betas)
    c, h, w = model.image_shape
    return Experiment(
        trainer=gan_lib.build(model, loss, g_opt, d_opt, config["d_steps"], config["ema_decay"]),
        networks={
            "generator": (model.generator, (1, model.latent_dim)),
            "discriminator": (model.discriminator, (1, c, h, w)),
        },
        objective="d_loss",
        # A Wasserstein critic's outputs are not probabilities: σ(D) ≈ 0 is no sign of a won game.
        monitor=None if loss.gradient_penalty > 0 else gan_lib.discriminator_won_monitor(),
        # Pixels in [-1, 1], not binarised: the generator's tanh covers that range.
        train_input=lambda images, key: gan_lib.scale_pixels(images),
        eval_input=gan_lib.scale_pixels,
        interpolate=functools.partial(interpolate.gan_interpolations, model),
        sample_variables=functools.partial(gan_sample_variables, model),
        evaluation_variables=_own_batch_stats(model, config),
    )


# The latents that give the average of G its BatchNorm statistics: fixed, so every evaluation of a state agrees.
EMA_STATS_KEY = 20_260_904


def _own_batch_stats(model: gan_lib.GAN, config: dict) -> Callable[[Any], Any] | None:
    """``ema_batch_stats > 0`` with an average of G: the average with BatchNorm statistics of its own."""
    if not config["ema_batch_stats"] or config["ema_decay"] is None:
        return None
    batches, key = config["ema_batch_stats"], random.key(EMA_STATS_KEY)
    return lambda variables: gan_lib.ema_variables_with_batch_stats(model, variables, key, batches)
