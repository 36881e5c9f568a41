"""Generative adversarial network as pure functions of a parameter pytree.

A :class:`GAN` is a bundle of pure functions and templates (no tensors); its
parameters live in a separate pytree ``{"generator": ..., "discriminator":
...}``. Training is a two-player game played with *alternating* steps:

    D step:  φ ← φ - η ∇_φ L_D(φ; x, G_θ(z)),      z ~ N(0, I)
    G step:  θ ← θ - η ∇_θ L_G(θ; D_φ),            z' ~ N(0, I)

Each step is a pure function ``(GANState, data, noise) -> (GANState,
metrics)`` that updates one player's parameters and optimizer state and
hands the other player's subtrees through untouched (the very same tensor
objects). :func:`make_gan_update` composes them into one pure update of
tensors (D step(s), then a G step), :func:`gan_inputs` draws that update's
noise from a key, and :func:`make_gan_step` joins the two into the
``step(state, batch, key) -> (state, metrics)`` that ``fgm.train`` and the
runner use. Split this way, the update can be ``vmap``-ed over a seed
ensemble (``fgm.ensemble``) like any other.

The discriminator returns one *logit* per image, ``D(x) ∈ ℝ``; for the
losses derived from a classifier, ``σ(D(x))`` is its probability that ``x``
is real. The losses are pure functions of these logits
(:class:`AdversarialLoss`, :func:`get_loss`); see ``docs/gan.md`` for the
maths and the choice of default.

Data live in ``[-1, 1]`` (:func:`scale_pixels`); the generator ends with a
``tanh`` so its samples do too, and :func:`to_unit_interval` maps them back
to ``[0, 1]`` for display.

**Layer state.** The networks may hold BatchNorm layers or spectral-normalised
layers (``fgm.nn.stateful``); their state lives in ``GANState.model_state =
{"generator": ..., "discriminator": ...}`` (empty dicts for the MLPs) and is
threaded through the update, which takes and returns it. Both networks run
in *training mode* in both steps, as in DCGAN practice: G's BatchNorm
normalises with batch statistics whenever it draws fakes (also in the D step,
where no gradient reaches G), and every training-mode forward updates the
running statistics and power-iteration vectors it touches, in call order
(D on the reals, then on the fakes). Sampling and evaluation
(:func:`generate`, :func:`evaluate`) use evaluation mode: running
statistics and the stored vectors. They read *variables*, each network's
parameters merged with its state (:func:`variables`), like a ``state_dict``.

**An average of the generator.** With ``init_state(..., ema=True)`` and
``make_gan_update(..., ema_decay=β)`` the model state also holds an
exponential moving average of G's parameters, ``model_state["generator_ema"]``,
updated after every G step (:func:`ema_update`). :func:`generate` then samples
from the average (the generator of Yazıcı et al. 2019, StyleGAN, BigGAN);
:func:`evaluate` still plays the game with the trained G.

Typical use without the CLI::

    gan = make_gan(lambda: mlp_generator(64), lambda: mlp_discriminator(), 64, (1, 28, 28))
    g_opt = d_opt = fgm.optim.adam(2e-4, b1=0.5, b2=0.999)
    state = init_state(gan, g_opt, d_opt, fgm.random.key(0))
    step = make_gan_step(gan, get_loss("non_saturating"), g_opt, d_opt)
    state, metrics = step(state, scale_pixels(images), fgm.train.step_key(state))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fgm import ensemble, optim, random, train
from fgm import nn as fnn
from fgm.tree import TensorTree
from fgm.types import Metrics, Trainer, UpdateFn

# --------------------------------------------------------------------------- architectures


def mlp_generator(
    latent_dim: int, image_shape: tuple[int, int, int] = (1, 28, 28), hidden: tuple[int, ...] = (256, 512)
) -> nn.Module:
    """MLP ``z [B, latent_dim] -> x [B, C, H, W]`` in ``[-1, 1]``.

    LeakyReLU(0.2) between layers, no normalisation, ``tanh`` at the output
    to match the data range.
    """
    sizes = [latent_dim, *hidden, math.prod(image_shape)]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2)]
    layers += [nn.Linear(sizes[-2], sizes[-1]), nn.Tanh(), nn.Unflatten(1, tuple(image_shape))]
    return nn.Sequential(*layers)


def mlp_discriminator(
    image_shape: tuple[int, int, int] = (1, 28, 28), hidden: tuple[int, ...] = (512, 256)
) -> nn.Module:
    """MLP ``x [B, C, H, W] -> logits [B, 1]`` with LeakyReLU(0.2)."""
    sizes = [math.prod(image_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(sizes[-1], 1))
    return nn.Sequential(*layers)


def dcgan_generator(latent_dim: int, channels: int = 3, width: int = 32) -> nn.Module:
    """DCGAN-style ``z [B, latent_dim] -> x [B, channels, 32, 32]`` in ``[-1, 1]``.

    A linear layer to a ``4w × 4 × 4`` map, then three stride-2 transposed
    convolutions (4×4 kernels) double the resolution 4 → 8 → 16 → 32 while
    halving the channels; ReLU inside, ``tanh`` at the output. It mirrors the
    SVHN VAE decoder (same ``width``), with no normalisation layers.
    """
    return nn.Sequential(
        nn.Linear(latent_dim, 4 * width * 16),
        nn.ReLU(),
        nn.Unflatten(1, (4 * width, 4, 4)),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
        nn.ReLU(),  # 8×8
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.ReLU(),  # 16×16
        nn.ConvTranspose2d(width, channels, 4, 2, 1),
        nn.Tanh(),  # 32×32
    )


def mnist_dcgan_generator(latent_dim: int, width: int = 80, batchnorm: bool = True) -> nn.Module:
    """DCGAN-style ``z [B, latent_dim] -> x [B, 1, 28, 28]`` in ``[-1, 1]``.

    A linear layer to a ``2w × 7 × 7`` map, then two stride-2 transposed
    convolutions (4×4 kernels, padding 1) 7 → 14 → 28: ``2w → w → 1``
    channels; ReLU inside, ``tanh`` at the output. With ``batchnorm``,
    ``BatchNorm2d`` follows the projection and the first transposed
    convolution (Radford et al., 2016), and those layers drop their bias,
    which the normalisation would cancel.

    Args:
      latent_dim: ``d``.
      width: ``w``; 80 puts G + D within 25% of ``vae_std``'s parameter count.
      batchnorm: BatchNorm in the generator (layer state, see ``fgm.nn.stateful``).
    """
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batchnorm else (lambda c: [])
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * width * 49, bias=not batchnorm),
        nn.Unflatten(1, (2 * width, 7, 7)),
        *norm(2 * width),
        nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=not batchnorm),
        *norm(width),
        nn.ReLU(),  # 14×14
        nn.ConvTranspose2d(width, 1, 4, 2, 1),
        nn.Tanh(),  # 28×28
    )


def mnist_dcgan_discriminator(width: int = 80, spectral: bool = False) -> nn.Module:
    """DCGAN-style ``x [B, 1, 28, 28] -> logits [B, 1]``.

    Two stride-2 convolutions (4×4 kernels, padding 1) 28 → 14 → 7 with
    ``1 → w → 2w`` channels and LeakyReLU(0.2), then a linear layer on the
    flattened ``2w × 7 × 7`` map. No BatchNorm: D sees real and fake
    batches separately, and batch statistics would tell them apart.

    Args:
      width: ``w``.
      spectral: spectral normalisation (Miyato et al., 2018) of every layer's
        weight, one power iteration per forward pass (layer state, see
        ``fgm.nn.stateful``).
    """
    wrap = nn.utils.parametrizations.spectral_norm if spectral else (lambda layer: layer)
    return nn.Sequential(
        wrap(nn.Conv2d(1, width, 4, 2, 1)),
        nn.LeakyReLU(0.2),  # 14×14
        wrap(nn.Conv2d(width, 2 * width, 4, 2, 1)),
        nn.LeakyReLU(0.2),  # 7×7
        nn.Flatten(),
        wrap(nn.Linear(2 * width * 49, 1)),
    )


def dcgan_discriminator(channels: int = 3, width: int = 32) -> nn.Module:
    """DCGAN-style ``x [B, channels, 32, 32] -> logits [B, 1]``.

    Three stride-2 convolutions (32 → 16 → 8 → 4) with LeakyReLU(0.2), then a
    linear layer on the flattened ``4w × 4 × 4`` map; it mirrors the SVHN VAE
    encoder.
    """
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, 2, 1),
        nn.LeakyReLU(0.2),  # 16×16
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.LeakyReLU(0.2),  # 8×8
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
        nn.LeakyReLU(0.2),  # 4×4
        nn.Flatten(),
        nn.Linear(4 * width * 16, 1),
    )


# --------------------------------------------------------------------------- the model


class GAN(NamedTuple):
    """A GAN definition: pure functions and static shapes, no parameters.

    Attributes:
      generate: ``(g_params, g_state, z [B, d], train=...) -> (x [B, C, H, W]
        in [-1, 1], new g_state)`` (an ``fgm.nn.StatefulApply``).
      discriminate: ``(d_params, d_state, x [B, C, H, W], train=...) ->
        (logits [B], new d_state)``.
      latent_dim: ``d``.
      image_shape: ``(C, H, W)``.
      generator: the generator's architecture template (meta device).
      discriminator: the discriminator's architecture template (meta device).
    """

    generate: fnn.StatefulApply
    discriminate: fnn.StatefulApply
    latent_dim: int
    image_shape: tuple[int, int, int]
    generator: nn.Module
    discriminator: nn.Module


def make_gan(
    build_generator: Callable[[], nn.Module],
    build_discriminator: Callable[[], nn.Module],
    latent_dim: int,
    image_shape: tuple[int, int, int],
) -> GAN:
    """Assembles a GAN from module builders (templates only; no parameters yet).

    Args:
      build_generator: returns a module ``[B, latent_dim] -> [B, C, H, W]``;
        it may hold BatchNorm or spectral-normalised layers (``fgm.nn.stateful``).
      build_discriminator: returns a module ``[B, C, H, W] -> [B, 1]``; likewise.
      latent_dim: ``d``.
      image_shape: ``(C, H, W)``.
    """
    generator, generator_apply = fnn.stateful(build_generator)
    discriminator, discriminator_apply = fnn.stateful(build_discriminator)

    def discriminate(params, state, x, *, train):
        logits, state = discriminator_apply(params, state, x, train=train)
        return logits.squeeze(-1), state

    return GAN(
        generate=generator_apply,
        discriminate=discriminate,
        latent_dim=latent_dim,
        image_shape=tuple(image_shape),
        generator=generator,
        discriminator=discriminator,
    )


def init(gan: GAN, key: random.Key) -> dict[str, TensorTree]:
    """Fresh parameters ``{"generator", "discriminator"}`` from ``key``."""
    k_gen, k_disc = random.split(key)
    return {
        "generator": fnn.init_params(gan.generator, k_gen),
        "discriminator": fnn.init_params(gan.discriminator, k_disc),
    }


def init_model_state(gan: GAN, params: dict[str, TensorTree], key: random.Key) -> dict[str, TensorTree]:
    """Fresh layer state ``{"generator", "discriminator"}`` (``fgm.nn.init_state``; ``{}`` for a stateless network).

    Args:
      gan: the model definition.
      params: from :func:`init` (spectral norm's first power iterations read the weights).
      key: the same key as :func:`init`; the state's keys are the last two of
        ``split(key, 4)``, whose first two are :func:`init`'s.
    """
    k_gen, k_disc = random.split(key, 4)[2:]
    return {
        "generator": fnn.init_state(gan.generator, params["generator"], k_gen),
        "discriminator": fnn.init_state(gan.discriminator, params["discriminator"], k_disc),
    }


def _no_state() -> dict[str, dict]:
    """The layer state of two stateless networks."""
    return {"generator": {}, "discriminator": {}}


class GANState(NamedTuple):
    """The state of a GAN's training: two players, two optimizer states (flax: fork the state per regime).

    Attributes:
      params: ``{"generator": tree, "discriminator": tree}``.
      opt_state: ``{"generator": g_opt state, "discriminator": d_opt state}``.
      model_state: ``{"generator": tree, "discriminator": tree}``, the layer
        state (BatchNorm statistics, spectral-norm vectors; empty dicts for
        stateless networks). Not differentiated, not seen by the optimizers.
      step: game iterations taken: one per G step, whatever the D steps per G step.
      key: the step-key root (``fgm.train.step_key(state) = fold_in(key, step)``).
    """

    params: dict[str, TensorTree]
    opt_state: dict[str, TensorTree]
    model_state: dict[str, TensorTree]
    step: int
    key: random.Key


def init_state(
    gan: GAN,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    key: random.Key,
    ema: bool = False,
) -> GANState:
    """A step-0 :class:`GANState`; ``key`` is both the initialisation key and the step-key root.

    With ``ema`` the model state also holds :func:`ema_init` of the
    generator's parameters under ``"generator_ema"`` (train it with
    ``make_gan_update(..., ema_decay=...)``).
    """
    params = init(gan, key)
    opt_state = {"generator": g_opt.init(params["generator"]), "discriminator": d_opt.init(params["discriminator"])}
    model_state = init_model_state(gan, params, key)
    if ema:
        model_state[EMA] = ema_init(params["generator"])
    return GANState(params=params, opt_state=opt_state, model_state=model_state, step=0, key=key)


def variables(state: GANState) -> dict[str, TensorTree]:
    """What :func:`generate` and :func:`evaluate` read: each network's parameters merged with its layer state.

    Returns:
      ``{"generator": {**params, **state}, "discriminator": {...}}``, flat
      dicts like ``state_dict()`` s; for stateless networks, ``state.params``'s
      contents. With an EMA generator, also ``"generator_ema"``: the averaged
      parameters merged with G's layer state (its BatchNorm statistics are
      G's own, as in StyleGAN's copy of the buffers).
    """
    found = {name: fnn.merge(state.params[name], state.model_state[name]) for name in ("generator", "discriminator")}
    if EMA in state.model_state:
        found[EMA] = fnn.merge(state.model_state[EMA]["params"], state.model_state["generator"])
    return found


# --------------------------------------------------------------------------- the generator's moving average

EMA = "generator_ema"


def ema_init(g_params: TensorTree) -> dict[str, TensorTree]:
    """The moving average's state at step 0: a copy of G's parameters and an update count of 0.

    Returns:
      ``{"params": tree like g_params, "updates": float32 []}``; the count is
      a float tensor so that the state stacks and moves like parameters.
    """
    first = next(iter(g_params.values()), None) if isinstance(g_params, dict) else None
    device = first.device if first is not None else "cpu"
    return {
        "params": {k: v.detach().clone() for k, v in g_params.items()},
        "updates": torch.zeros((), dtype=torch.float32, device=device),
    }


def ema_decay_at(decay: float, updates: torch.Tensor) -> torch.Tensor:
    r"""The decay of update number ``n`` (0-based): :math:`\beta_n = \min(\beta, \frac{1 + n}{10 + n})`.

    The warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=n)``:
    early averages forget the random initialisation quickly (β₀ = 0.1), later
    ones average over about ``1 / (1 - β)`` updates.
    """
    return torch.clamp((1.0 + updates) / (10.0 + updates), max=decay)


def ema_update(ema: dict[str, TensorTree], g_params: TensorTree, decay: float) -> dict[str, TensorTree]:
    r"""One step of the average: :math:`\bar\theta \leftarrow \beta_n \bar\theta + (1 - \beta_n)\,\theta`.

    Pure (new tensors; works under ``vmap``), no gradient flows into it.

    Args:
      ema: from :func:`ema_init` or a previous call.
      g_params: the generator's parameters after its step.
      decay: β in ``[0, 1)``; :func:`ema_decay_at` gives the step's β_n.

    Returns:
      The new average and ``updates + 1``.
    """
    n = ema["updates"]
    params = {
        k: torch.lerp(g_params[k].detach(), v, ema_decay_at(decay, n.to(v.dtype))) for k, v in ema["params"].items()
    }
    return {"params": params, "updates": ema["updates"] + 1.0}


# BatchNorm's statistics and their reset values (torch's reset_running_stats)
_BATCH_STATS = {
    "running_mean": torch.zeros_like,
    "running_var": torch.ones_like,
    "num_batches_tracked": torch.zeros_like,
}


def recompute_batch_stats(
    gan: GAN,
    g_params: TensorTree,
    g_state: TensorTree,
    key: random.Key,
    num_batches: int = 300,
    batch_size: int = 64,
) -> TensorTree:
    r"""G's BatchNorm statistics recomputed for the weights ``g_params`` (e.g. the moving average of G).

    The running statistics in G's state were gathered for G's own weights; the
    average's activations have other means and variances, so sampling the
    average with G's statistics mismatches them (SWA's ``update_bn`` fixes the
    same thing). This resets every BatchNorm's statistics (mean 0, variance 1,
    count 0) and runs ``num_batches`` training-mode forwards of ``batch_size``
    latents, each moving them by the layer's momentum as in training (0.1:
    the reset values weigh :math:`0.9^{n}` at the end). Spectral-norm vectors
    (none in the built-in generators) are kept.

    Args:
      gan: the model definition.
      g_params: the generator weights to gather statistics for.
      g_state: G's layer state (the entries that are not BatchNorm statistics are kept).
      key: batch ``i`` draws its latents from ``fold_in(key, i)``.
      num_batches, batch_size: how many forwards, of how many latents.

    Returns:
      The new layer state, structured like ``g_state``.
    """
    state = {
        name: _BATCH_STATS[name.rsplit(".", 1)[-1]](value) if name.rsplit(".", 1)[-1] in _BATCH_STATS else value
        for name, value in g_state.items()
    }
    like = next(iter(g_params.values()))  # the latents' device and dtype
    with torch.no_grad():
        for i in range(num_batches):
            z = latent_noise(gan, random.fold_in(key, i), batch_size, like.device).to(like.dtype)
            _, state = gan.generate(g_params, state, z, train=True)
    return state


def ema_variables_with_batch_stats(
    gan: GAN, variables_tree: dict, key: random.Key, num_batches: int = 300, batch_size: int = 64
) -> dict:
    """:func:`variables` whose average of G carries its own BatchNorm statistics (:func:`recompute_batch_stats`).

    Args:
      gan: the model definition.
      variables_tree: from :func:`variables`.
      key, num_batches, batch_size: as in :func:`recompute_batch_stats`.

    Returns:
      ``variables_tree`` with ``"generator_ema"`` replaced (the same tree when there is no average).
    """
    if EMA not in variables_tree:
        return variables_tree
    params, state = fnn.split(gan.generator, variables_tree[EMA])
    state = recompute_batch_stats(gan, params, state, key, num_batches, batch_size)
    return {**variables_tree, EMA: fnn.merge(params, state)}


def _split_variables(gan: GAN, tree: dict[str, TensorTree]) -> tuple[dict, dict]:
    """``(params, model_state)`` from :func:`variables` (or from parameters alone, for stateless networks)."""
    g_params, g_state = fnn.split(gan.generator, tree["generator"])
    d_params, d_state = fnn.split(gan.discriminator, tree["discriminator"])
    return {"generator": g_params, "discriminator": d_params}, {"generator": g_state, "discriminator": d_state}


def latent_noise(gan: GAN, key: random.Key, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``z ~ N(0, I)`` of shape ``[n, d]``, drawn on ``device`` (the same numbers on every device)."""
    return random.normal(key, (n, gan.latent_dim), device=device)


def interpolation_weights(key: random.Key, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``α ~ U[0, 1)`` of shape ``[n, 1, 1, 1]`` for the WGAN-GP interpolates."""
    return random.uniform(key, (n, 1, 1, 1), device=device)


def scale_pixels(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [B, C, H, W]`` levels ``k`` to ``float32`` ``k / 127.5 - 1`` in ``[-1, 1]``."""
    return images.float() / 127.5 - 1.0


def to_unit_interval(x: torch.Tensor) -> torch.Tensor:
    """Maps ``[-1, 1]`` images back to ``[0, 1]`` (clamped) for display."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def generate(gan: GAN, variables: TensorTree, z: torch.Tensor) -> torch.Tensor:
    """Samples for display, in evaluation mode: ``z [N, d] -> [N, C, H, W]`` in ``[0, 1]``.

    Args:
      gan: the model definition.
      variables: from :func:`variables` (for stateless networks, the parameters
        will do); its ``"generator_ema"`` when there is one, else ``"generator"``.
      z: ``[N, d]`` latents.
    """
    g_params, g_state = fnn.split(gan.generator, variables.get(EMA, variables["generator"]))
    return to_unit_interval(gan.generate(g_params, g_state, z, train=False)[0])


# --------------------------------------------------------------------------- losses


class AdversarialLoss(NamedTuple):
    """A pair of per-example losses, functions of discriminator logits only.

    Attributes:
      name: the registry name.
      discriminator: ``(real_logits [B], fake_logits [B]) -> [B]``; example
        ``b`` pairs real image ``b`` with fake image ``b``, and the D loss is
        the batch mean.
      generator: ``fake_logits [B] -> [B]``.
      gradient_penalty: weight ``λ`` of the WGAN-GP penalty the D step adds
        (:func:`gradient_penalty`); 0 for the other losses.
    """

    name: str
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    gradient_penalty: float = 0.0


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""The classifier's cross-entropy, shared by the minimax and non-saturating games.

    .. math::

        L_D = -\log \sigma(D(x)) - \log\big(1 - \sigma(D(G(z)))\big)
            = \operatorname{softplus}(-D(x)) + \operatorname{softplus}(D(G(z))),

    using :math:`-\log\sigma(t) = \operatorname{softplus}(-t)` and
    :math:`-\log(1-\sigma(t)) = \operatorname{softplus}(t)`, which stay finite
    for any logit (``log(sigmoid(t))`` underflows to ``-inf`` near ``t ≈ -104``).
    At ``D ≡ 0`` it is ``2 log 2``.

    Args:
      real_logits: ``[B]`` ``D(x)``.
      fake_logits: ``[B]`` ``D(G(z))``.

    Returns:
      ``[B]`` per-example losses.
    """
    return F.softplus(-real_logits) + F.softplus(fake_logits)


def non_saturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_G = -log σ(D(G(z))) = softplus(-D(G(z)))``, ``[B] -> [B]``.

    Its gradient in the logit is :math:`-(1 - \sigma(D(G(z))))`, close to
    ``-1`` exactly when the discriminator rejects the fakes, so G learns
    fastest when it is worst (unlike the minimax loss).
    """
    return F.softplus(-fake_logits)


def minimax_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_G = log(1 - σ(D(G(z)))) = -softplus(D(G(z)))``, ``[B] -> [B]``.

    The original zero-sum game: G minimises exactly what D maximises. Its
    gradient in the logit, :math:`-\sigma(D(G(z)))`, vanishes when D confidently
    rejects the fakes (early training), which is why it saturates. Kept for
    reference and for experiments.
    """
    return -F.softplus(fake_logits)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_D = relu(1 - D(x)) + relu(1 + D(G(z)))``, ``[B], [B] -> [B]``.

    A margin loss: real logits above ``+1`` and fake logits below ``-1``
    contribute nothing, so D stops pushing on examples it already separates.
    """
    return F.relu(1.0 - real_logits) + F.relu(1.0 + fake_logits)


def critic_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_G = -D(G(z))``, ``[B] -> [B]`` (hinge and Wasserstein games)."""
    return -fake_logits


def wasserstein_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""``L_D = D(G(z)) - D(x)``, ``[B], [B] -> [B]``: minus the Kantorovich–Rubinstein estimate.

    Over 1-Lipschitz critics, :math:`\max_D \mathbb E[D(x)] - \mathbb E[D(G(z))]`
    is the Wasserstein-1 distance; the Lipschitz constraint is imposed softly
    by :func:`gradient_penalty`.
    """
    return fake_logits - real_logits


def gradient_penalty(
    discriminate: Callable[[TensorTree, torch.Tensor], torch.Tensor],
    d_params: TensorTree,
    real: torch.Tensor,
    fake: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    r"""The WGAN-GP penalty :math:`(\|\nabla_{\hat x} D(\hat x)\|_2 - 1)^2` per example.

    :math:`\hat x = \alpha x + (1 - \alpha) G(z)` lies on the segment between a
    real and a fake image; the optimal critic has unit gradient norm there
    (Gulrajani et al., 2017). The input gradient is taken with
    ``create_graph=True`` so the penalty itself can be differentiated with
    respect to ``d_params``. Each output depends on its own input only, so
    the gradient of the *sum* gives every per-example gradient at once.

    Args:
      discriminate: ``(params, x [B, C, H, W]) -> [B]`` (a closure over the
        layer state for a stateful discriminator).
      d_params: the discriminator's parameters.
      real: ``[B, C, H, W]``.
      fake: ``[B, C, H, W]`` (no graph to the generator needed).
      alpha: ``[B, 1, 1, 1]`` weights in ``[0, 1]``, drawn outside (a key at the edge).

    Returns:
      ``[B]`` penalties.
    """
    x_hat = (alpha * real + (1.0 - alpha) * fake).detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(discriminate(d_params, x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0) ** 2


def non_saturating() -> AdversarialLoss:
    """Cross-entropy D, ``-log σ(D(G(z)))`` G (the default; see ``docs/gan.md``)."""
    return AdversarialLoss("non_saturating", bce_discriminator_loss, non_saturating_generator_loss)


def minimax() -> AdversarialLoss:
    """Cross-entropy D, ``log(1 - σ(D(G(z))))`` G: the original zero-sum game."""
    return AdversarialLoss("minimax", bce_discriminator_loss, minimax_generator_loss)


def hinge() -> AdversarialLoss:
    """Hinge D, ``-D(G(z))`` G (as in SAGAN / BigGAN)."""
    return AdversarialLoss("hinge", hinge_discriminator_loss, critic_generator_loss)


def wgan_gp(weight: float = 10.0) -> AdversarialLoss:
    """Wasserstein critic with a gradient penalty of weight ``weight`` (λ = 10 in the paper)."""
    if not weight > 0:
        raise ValueError(f"the gradient-penalty weight must be > 0, got {weight}")
    return AdversarialLoss("wgan_gp", wasserstein_critic_loss, critic_generator_loss, float(weight))


LOSSES: dict[str, Callable[..., AdversarialLoss]] = {
    "non_saturating": non_saturating,
    "hinge": hinge,
    "minimax": minimax,
    "wgan_gp": wgan_gp,
}


def get_loss(name: str, gp_weight: float = 10.0) -> AdversarialLoss:
    """The adversarial loss called ``name``; ``gp_weight`` is used by ``wgan_gp`` only.

    Raises:
      ValueError: unknown name (the message lists the choices).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}; choose from: {', '.join(sorted(LOSSES))}")
    return wgan_gp(gp_weight) if name == "wgan_gp" else LOSSES[name]()


# --------------------------------------------------------------------------- objectives


def discriminator_objective(
    gan: GAN,
    loss: AdversarialLoss,
    d_params: TensorTree,
    g_params: TensorTree,
    real: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor | None = None,
    model_state: dict[str, TensorTree] | None = None,
) -> tuple[torch.Tensor, Metrics]:
    r"""The D step's loss, a function of the discriminator's parameters.

    .. math::

        L_D(\varphi) = \frac1B \sum_b \ell_D\big(D_\varphi(x_b), D_\varphi(G_\theta(z_b))\big)
                      \;[+\; \lambda\,(\|\nabla D_\varphi(\hat x_b)\| - 1)^2].

    ``G_θ(z)`` is computed without a graph: the D step does not differentiate
    through the generator. Both networks run in training mode; the updated
    layer state is dropped here (:func:`discriminator_objective_and_state`
    returns it).

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      d_params: the discriminator's parameters (differentiated).
      g_params: the generator's parameters (held fixed).
      real: ``[B, C, H, W]`` data in ``[-1, 1]``.
      z: ``[B, d]`` latent noise.
      alpha: ``[B, 1, 1, 1]`` interpolation weights, required when
        ``loss.gradient_penalty > 0``.
      model_state: ``{"generator", "discriminator"}`` layer state; ``None``
        for stateless networks.

    Returns:
      ``(loss, {"d_loss", "d_real", "d_fake"[, "gradient_penalty"]})``;
      ``d_real``/``d_fake`` are the batch means of ``σ(D(x))``/``σ(D(G(z)))``.
    """
    total, (metrics, _) = discriminator_objective_and_state(
        gan, loss, d_params, g_params, model_state or _no_state(), real, z, alpha
    )
    return total, metrics


def discriminator_objective_and_state(
    gan: GAN,
    loss: AdversarialLoss,
    d_params: TensorTree,
    g_params: TensorTree,
    model_state: dict[str, TensorTree],
    real: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[Metrics, dict[str, TensorTree]]]:
    """:func:`discriminator_objective` that also returns the new layer state.

    Training mode throughout: G draws the fakes (its BatchNorm statistics
    move), then D sees the reals, the fakes and (WGAN-GP) the interpolates,
    each forward pass starting from the state the previous one left.

    Returns:
      ``(loss, (metrics, model_state))``, the form ``fgm.train.value_and_grad`` differentiates.
    """
    g_state, d_state = model_state["generator"], model_state["discriminator"]
    with torch.no_grad():
        fake, g_state = gan.generate(g_params, g_state, z, train=True)
    real_logits, d_state = gan.discriminate(d_params, d_state, real, train=True)
    fake_logits, d_state = gan.discriminate(d_params, d_state, fake, train=True)
    d_loss = loss.discriminator(real_logits, fake_logits).mean()
    metrics = {
        "d_loss": d_loss.detach(),
        "d_real": torch.sigmoid(real_logits).mean().detach(),
        "d_fake": torch.sigmoid(fake_logits).mean().detach(),
    }
    total = d_loss
    if loss.gradient_penalty > 0:
        if alpha is None:
            raise ValueError(f"the {loss.name} loss needs interpolation weights alpha")
        state = {"d": d_state}

        def critic(params, x):
            logits, state["d"] = gan.discriminate(params, state["d"], x, train=True)
            return logits

        penalty = gradient_penalty(critic, d_params, real, fake, alpha).mean()
        d_state = state["d"]
        metrics["gradient_penalty"] = penalty.detach()
        total = d_loss + loss.gradient_penalty * penalty
    return total, (metrics, {"generator": g_state, "discriminator": d_state})


def generator_objective(
    gan: GAN,
    loss: AdversarialLoss,
    g_params: TensorTree,
    d_params: TensorTree,
    z: torch.Tensor,
    model_state: dict[str, TensorTree] | None = None,
) -> tuple[torch.Tensor, Metrics]:
    r"""The G step's loss, a function of the generator's parameters.

    .. math:: L_G(\theta) = \frac1B \sum_b \ell_G\big(D_\varphi(G_\theta(z_b))\big),

    differentiated through the (fixed) discriminator into the generator.
    Both networks run in training mode; the updated layer state is dropped
    here (:func:`generator_objective_and_state` returns it).

    Returns:
      ``(loss, {"g_loss"})``.
    """
    g_loss, (metrics, _) = generator_objective_and_state(gan, loss, g_params, d_params, model_state or _no_state(), z)
    return g_loss, metrics


def generator_objective_and_state(
    gan: GAN,
    loss: AdversarialLoss,
    g_params: TensorTree,
    d_params: TensorTree,
    model_state: dict[str, TensorTree],
    z: torch.Tensor,
) -> tuple[torch.Tensor, tuple[Metrics, dict[str, TensorTree]]]:
    """:func:`generator_objective` that also returns the new layer state (G, then D on its fakes).

    Returns:
      ``(loss, (metrics, model_state))``.
    """
    fake, g_state = gan.generate(g_params, model_state["generator"], z, train=True)
    logits, d_state = gan.discriminate(d_params, model_state["discriminator"], fake, train=True)
    g_loss = loss.generator(logits).mean()
    return g_loss, ({"g_loss": g_loss.detach()}, {"generator": g_state, "discriminator": d_state})


# --------------------------------------------------------------------------- steps


def _update_player(
    params: dict,
    opt_state: dict,
    player: str,
    grads: TensorTree,
    optimizer: optim.GradientTransformation,
    donate: bool = False,
) -> tuple[dict, dict]:
    """Applies ``optimizer`` to one player's subtrees; the other's are passed through as they are."""
    donation = {"donate": True} if donate else {}
    updates, player_opt = optimizer.update(grads, opt_state[player], params[player], **donation)
    new_params = {**params, player: optim.apply_updates(params[player], updates, donate=donate)}
    return new_params, {**opt_state, player: player_opt}


def _discriminator_objective(gan: GAN, loss: AdversarialLoss):
    def objective(d_params, g_params, model_state, real, z, alpha):
        return discriminator_objective_and_state(gan, loss, d_params, g_params, model_state, real, z, alpha)

    return objective


def _generator_objective(gan: GAN, loss: AdversarialLoss):
    def objective(g_params, d_params, model_state, z):
        return generator_objective_and_state(gan, loss, g_params, d_params, model_state, z)

    return objective


def _grad_fn(objective, backend: str, compile: bool = False):
    """``value_and_grad`` of a player's objective; compiled, it is traced through ``torch.func`` (one graph)."""
    return (
        torch.compile(train.value_and_grad(objective, "func")) if compile else train.value_and_grad(objective, backend)
    )


def _discriminator_update(
    gan, loss, d_opt, params, opt_state, model_state, real, z, alpha=None, backend="autograd", donate=False, grad=None
):
    grad = grad or _grad_fn(_discriminator_objective(gan, loss), backend)
    (_, (metrics, model_state)), grads = grad(params["discriminator"], params["generator"], model_state, real, z, alpha)
    return (*_update_player(params, opt_state, "discriminator", grads, d_opt, donate), model_state, metrics)


def _generator_update(gan, loss, g_opt, params, opt_state, model_state, z, backend="autograd", donate=False, grad=None):
    grad = grad or _grad_fn(_generator_objective(gan, loss), backend)
    (_, (metrics, model_state)), grads = grad(params["generator"], params["discriminator"], model_state, z)
    return (*_update_player(params, opt_state, "generator", grads, g_opt, donate), model_state, metrics)


def discriminator_step(
    gan: GAN,
    loss: AdversarialLoss,
    d_opt: optim.GradientTransformation,
    state: GANState,
    real: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor | None = None,
    backend: str = "autograd",
    donate: bool = False,
) -> tuple[GANState, Metrics]:
    """One optimizer step on the discriminator; the generator is untouched.

    Pure: ``state`` is not modified; the returned state shares the
    generator's parameter and optimizer-state subtrees (the same objects) and
    keeps ``state.step`` (the composed step counts game iterations). Its
    layer state is the one the training-mode passes left: D's, and G's
    BatchNorm statistics (G draws the fakes in training mode).

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      d_opt: the discriminator's optimizer.
      state: the game's state.
      real: ``[B, C, H, W]`` data in ``[-1, 1]``.
      z: ``[B, d]`` latent noise for the fakes.
      alpha: ``[B, 1, 1, 1]`` interpolation weights (WGAN-GP only).
      backend: see :func:`fgm.train.value_and_grad` (``"func"`` under ``vmap``;
        not with WGAN-GP, whose penalty calls ``torch.autograd.grad``).
      donate: update the discriminator's parameters and optimizer state in
        place (see :func:`fgm.train.make_update`).

    Returns:
      ``(new_state, metrics)`` with the metrics of :func:`discriminator_objective`,
      computed before the update.
    """
    params, opt_state, model_state, metrics = _discriminator_update(
        gan, loss, d_opt, state.params, state.opt_state, state.model_state, real, z, alpha, backend, donate
    )
    return state._replace(params=params, opt_state=opt_state, model_state=model_state), metrics


def generator_step(
    gan: GAN,
    loss: AdversarialLoss,
    g_opt: optim.GradientTransformation,
    state: GANState,
    z: torch.Tensor,
    backend: str = "autograd",
    donate: bool = False,
) -> tuple[GANState, Metrics]:
    """One optimizer step on the generator; the discriminator is untouched.

    Pure, like :func:`discriminator_step`: the returned state shares the
    discriminator's parameter and optimizer-state subtrees and keeps
    ``state.step``; both networks' layer state moves (training mode).

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      g_opt: the generator's optimizer.
      state: the game's state.
      z: ``[B, d]`` latent noise.
      backend: see :func:`fgm.train.value_and_grad`.
      donate: update the generator's parameters and optimizer state in place.

    Returns:
      ``(new_state, {"g_loss"})``, the loss before the update.
    """
    params, opt_state, model_state, metrics = _generator_update(
        gan, loss, g_opt, state.params, state.opt_state, state.model_state, z, backend, donate
    )
    return state._replace(params=params, opt_state=opt_state, model_state=model_state), metrics


def gan_inputs(gan: GAN, loss: AdversarialLoss, d_steps_per_g_step: int = 1) -> train.InputsFn:
    """The data and noise of one game iteration (the edge of :func:`make_gan_update`).

    One iteration consumes ``d_steps_per_g_step`` real batches, one per D
    step, passed together as one batch of ``d_steps_per_g_step * B`` images:
    a D step never sees the same real images twice. The key is split into
    ``d_steps_per_g_step + 1`` keys, one per player step; each D key is split
    again into the latents' and (WGAN-GP only) the interpolation weights' keys.
    The G step draws ``B`` latents.

    Returns:
      ``inputs(batch [d_steps * B, C, H, W], key) -> (reals, d_noise, z_g)``
      with ``reals`` a tuple of one ``[B, C, H, W]`` batch per D step,
      ``d_noise`` a tuple of one ``(z [B, d],)`` or ``(z, alpha [B, 1, 1, 1])``
      per D step and ``z_g`` the G step's ``[B, d]`` latents.

    Raises:
      ValueError: ``d_steps_per_g_step < 1``, or (when called) a batch whose
        size is not a multiple of ``d_steps_per_g_step``.
    """
    if d_steps_per_g_step < 1:
        raise ValueError(f"d_steps_per_g_step must be >= 1, got {d_steps_per_g_step}")

    def inputs(batch: torch.Tensor, key: random.Key) -> tuple:
        if batch.shape[0] % d_steps_per_g_step:
            raise ValueError(
                f"a batch of {batch.shape[0]} images cannot be split into {d_steps_per_g_step} equal D-step batches"
            )
        reals = tuple(batch.chunk(d_steps_per_g_step))
        n = reals[0].shape[0]
        *d_keys, g_key = random.split(key, d_steps_per_g_step + 1)
        d_noise = []
        for d_key in d_keys:
            k_z, k_alpha = random.split(d_key)
            alpha = (interpolation_weights(k_alpha, n, batch.device),) if loss.gradient_penalty > 0 else ()
            d_noise.append((latent_noise(gan, k_z, n, batch.device), *alpha))
        return reals, tuple(d_noise), latent_noise(gan, g_key, n, batch.device)

    return inputs


def make_gan_update(
    gan: GAN,
    loss: AdversarialLoss,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    backend: str = "autograd",
    donate: bool = False,
    ema_decay: float | None = None,
    compile: bool = False,
) -> UpdateFn:
    """One game iteration as a pure update of tensors: D step(s), then a G step (then the average of G).

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      g_opt: the generator's optimizer.
      d_opt: the discriminator's optimizer.
      backend: see :func:`fgm.train.value_and_grad`; ``"func"`` composes
        with ``vmap`` (seed ensembles), except for WGAN-GP.
      donate: update parameters and optimizer states in place (see
        :func:`fgm.train.make_update`).
      ema_decay: β of the generator's moving average (:func:`ema_update`),
        applied after the G step; the state must then hold one
        (``init_state(..., ema=True)``). ``None``: no average.
      compile: run each player's objective and gradient through
        ``torch.compile`` (traced with the ``"func"`` backend; the first
        update compiles both, for tens of seconds on a CPU). The optimizers
        and the average stay eager, as in :func:`fgm.train.make_update`.

    Returns:
      ``update(params, opt_state, model_state, reals, d_noise, z_g) ->
      (params, opt_state, model_state, metrics)`` (a
      ``fgm.types.UpdateFn``) with the inputs of :func:`gan_inputs`
      (one D step per entry of ``reals`` and ``d_noise``) and the metrics of
      :func:`make_gan_step`; ``model_state`` is ``GANState.model_state``.

    Raises:
      ValueError: WGAN-GP with the ``"func"`` backend or ``compile``; ``ema_decay`` outside
        ``[0, 1)``; (when called) a state with an average and no
        ``ema_decay``, or the other way round.
    """
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if (backend == "func" or compile) and loss.gradient_penalty > 0:
        raise ValueError(
            f"the {loss.name} loss needs the autograd backend: its gradient penalty calls torch.autograd.grad"
        )
    d_grad = _grad_fn(_discriminator_objective(gan, loss), backend, compile)
    g_grad = _grad_fn(_generator_objective(gan, loss), backend, compile)

    def update(
        params: TensorTree,
        opt_state: TensorTree,
        model_state: TensorTree,
        reals: tuple,
        d_noise: tuple,
        z_g: torch.Tensor,
    ):
        if len(reals) != len(d_noise):
            raise ValueError(f"{len(reals)} real batches for {len(d_noise)} D steps")
        if (EMA in model_state) != (ema_decay is not None):
            raise ValueError(
                "the state holds an average of G but the update has no ema_decay"
                if EMA in model_state
                else f"ema_decay={ema_decay} but the state holds no average of G (init_state(..., ema=True))"
            )
        average = model_state.get(EMA)
        model_state = {"generator": model_state["generator"], "discriminator": model_state["discriminator"]}
        for real, noise in zip(reals, d_noise):
            alpha = noise[1] if len(noise) > 1 else None
            params, opt_state, model_state, d_metrics = _discriminator_update(
                gan, loss, d_opt, params, opt_state, model_state, real, noise[0], alpha, donate=donate, grad=d_grad
            )
        params, opt_state, model_state, g_metrics = _generator_update(
            gan, loss, g_opt, params, opt_state, model_state, z_g, donate=donate, grad=g_grad
        )
        if average is not None:
            model_state[EMA] = ema_update(average, params["generator"], ema_decay)
        metrics = {"loss": d_metrics["d_loss"] + g_metrics["g_loss"], **d_metrics, **g_metrics}
        return params, opt_state, model_state, metrics

    return update


def make_gan_step(
    gan: GAN,
    loss: AdversarialLoss,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    d_steps_per_g_step: int = 1,
    donate: bool = False,
    ema_decay: float | None = None,
) -> train.StepFn:
    """Builds ``step(state, batch, key) -> (state, metrics)``: D step(s), then a G step.

    ``batch`` holds ``d_steps_per_g_step`` real batches of ``B`` images, one
    per D step; each D step draws its own latents (and WGAN-GP weights), the
    G step draws ``B`` fresh latents (:func:`gan_inputs`; the update is
    :func:`make_gan_update`).
    ``state.step`` grows by one per call.

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      g_opt: the generator's optimizer.
      d_opt: the discriminator's optimizer.
      d_steps_per_g_step: D steps before each G step (e.g. 5 for WGAN-GP).
      donate: the step consumes its input state (see :func:`fgm.train.make_step`).
      ema_decay: see :func:`make_gan_update`.

    Returns:
      The step function. Its metrics (detached scalars) are ``d_loss``,
      ``d_real``, ``d_fake`` (from the last D step, before its update, so
      ``d_fake`` is measured before the G step), ``g_loss``, and ``loss =
      d_loss + g_loss`` for the runner's NaN guard (plus ``gradient_penalty``
      for WGAN-GP).
    """
    inputs = gan_inputs(gan, loss, d_steps_per_g_step)
    update = make_gan_update(gan, loss, g_opt, d_opt, donate=donate, ema_decay=ema_decay)
    return train.step_from_update(update, inputs)


def build(
    gan: GAN,
    loss: AdversarialLoss,
    g_opt: optim.GradientTransformation,
    d_opt: optim.GradientTransformation,
    d_steps_per_g_step: int = 1,
    ema_decay: float | None = None,
) -> Trainer:
    """The GAN's training pieces (:class:`fgm.types.Trainer`): one game iteration per update.

    Args:
      gan: the model definition.
      loss: the adversarial loss.
      g_opt: the generator's optimizer (its schedule counts game iterations).
      d_opt: the discriminator's optimizer (its schedule counts D updates,
        ``d_steps_per_g_step`` per iteration: give it
        ``d_steps_per_g_step`` times the G schedule's length so that both
        decay together over the run).
      d_steps_per_g_step: D steps before each G step; each takes its own
        real batch, so an update's batch holds ``d_steps_per_g_step * B``
        images (see :func:`gan_inputs`).
      ema_decay: with a value, the state carries a moving average of G
        (:func:`ema_update`) and ``generate`` samples from it.

    Returns:
      ``init(key) -> GANState``; ``make_update`` as :func:`make_gan_update`
      (a ``fgm.types.UpdateFn``, the layer state threaded; ``compile=True``
      compiles each player's objective and gradient); ``inputs`` as
      :func:`gan_inputs`; ``evaluate(variables, x, key)`` as :func:`evaluate`
      with latents from ``key``; ``generate(variables, z)`` in ``[0, 1]``;
      ``noise(key, n, device="cpu") -> z [n, d]``; ``variables`` as :func:`variables`.
    """

    def make_update(*, backend: str = "autograd", donate: bool = False, compile: bool = False, stacked: bool = False):
        if stacked and compile:
            # the players' updates interleave gradients, optimizer steps and layer state inside one vmap,
            # which torch.compile cannot trace into (fgm.ensemble.make_update covers single-loss models)
            raise ValueError("a compiled update over stacked GAN members is not offered: compile single runs instead")
        if stacked:
            update = make_gan_update(gan, loss, g_opt, d_opt, backend="func", donate=donate, ema_decay=ema_decay)
            return ensemble.vmap_update(update)
        return make_gan_update(
            gan, loss, g_opt, d_opt, backend=backend, donate=donate, ema_decay=ema_decay, compile=compile
        )

    return Trainer(
        init=lambda key: init_state(gan, g_opt, d_opt, key, ema=ema_decay is not None),
        make_update=make_update,
        inputs=gan_inputs(gan, loss, d_steps_per_g_step),
        evaluate=lambda variables, x, key: evaluate(
            gan, loss, variables, x, latent_noise(gan, key, x.shape[0], x.device)
        ),
        generate=lambda variables, z: generate(gan, variables, z),
        noise=lambda key, n, device="cpu": latent_noise(gan, key, n, device),
        variables=variables,
    )


# --------------------------------------------------------------------------- evaluation and monitoring


def evaluate(
    gan: GAN, loss: AdversarialLoss, variables: TensorTree, real: torch.Tensor, z: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-example game values on held-out data, in evaluation mode (no gradient penalty: it needs a graph).

    Args:
      variables: from :func:`variables` (for stateless networks, the parameters will do).
      real: ``[B, C, H, W]`` data in ``[-1, 1]``.
      z: ``[B, d]`` fixed latent noise.

    Returns:
      ``{"d_loss", "g_loss", "d_real", "d_fake"}``, each ``[B]``; ``d_real``
      and ``d_fake`` are ``σ(D(x))`` and ``σ(D(G(z)))``.
    """
    params, state = _split_variables(gan, variables)
    d_params, d_state = params["discriminator"], state["discriminator"]
    fake, _ = gan.generate(params["generator"], state["generator"], z, train=False)
    real_logits, _ = gan.discriminate(d_params, d_state, real, train=False)
    fake_logits, _ = gan.discriminate(d_params, d_state, fake, train=False)
    return {
        "d_loss": loss.discriminator(real_logits, fake_logits),
        "g_loss": loss.generator(fake_logits),
        "d_real": torch.sigmoid(real_logits),
        "d_fake": torch.sigmoid(fake_logits),
    }


def discriminator_won_monitor(
    threshold: float = 1e-3, patience: int = 200
) -> Callable[[], Callable[[dict, int], str | None]]:
    """A monitor factory: warns when the discriminator has won outright.

    When D rejects every fake with certainty (``d_fake < threshold``) for
    ``patience`` consecutive steps, the generator's gradients have (for the
    minimax loss) vanished or (otherwise) stopped carrying useful signal,
    and training rarely recovers.

    Returns:
      ``factory() -> watch``; ``watch(metrics, step)`` returns a message
      naming the step where the streak started once it is ``patience`` steps
      long (and on every later step of the same streak), else ``None``.
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")

    def factory():
        streak = {"start": None, "length": 0}

        def watch(metrics: dict, step: int) -> str | None:
            if float(metrics["d_fake"]) < threshold:
                if streak["length"] == 0:
                    streak["start"] = step
                streak["length"] += 1
            else:
                streak["start"], streak["length"] = None, 0
            if streak["length"] >= patience:
                # The same text for the whole streak: the runner records each distinct message once per epoch.
                return f"the discriminator has won: D(G(z)) < {threshold:g} on every step since step {streak['start']}"
            return None

        return watch

    return factory
