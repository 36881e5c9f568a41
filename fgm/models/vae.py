"""Variational autoencoder as pure functions of a parameter pytree.

A :class:`VAE` is a bundle of pure functions (no tensors inside); its
parameters live in a separate pytree ``{"encoder": ..., "decoder": ...,
"prior": ...}``. The three pieces are swappable: any encoder returning
``[B, 2·d]`` (mean and log-variance), any decoder paired with a
:class:`Likelihood`, and any :class:`Prior` (standard normal and flow here;
the VampPrior of :mod:`fgm.models.vamp`, which reads the encoder, implements
the same protocol). Code outside a prior reaches it through
:func:`prior_log_prob`, :func:`prior_sample` and :func:`prior_noise`, which
hand the prior the part of the parameter tree it reads (:attr:`Prior.view`).

The objective is the evidence lower bound, per data point ``x``:

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z)) ≤ log p(x),
    q(z|x) = N(z; μ(x), diag σ²(x)),  z = μ + σ ⊙ ε,  ε ~ N(0, I).

The expectation uses one reparameterised sample; ``ε`` is an *input*, drawn
by the caller from an explicit key, so every function here is deterministic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from fgm import bijectors, ensemble, optim, random, train
from fgm import distributions as D
from fgm import nn as fnn
from fgm.tree import TensorTree
from fgm.types import ImportanceModel, Trainer

__all__ = [
    "ElboTerms",
    "Likelihood",
    "Prior",
    "VAE",
    "bernoulli_likelihood",
    "build",
    "discretized_logistic_likelihood",
    "elbo_terms",
    "evaluate",
    "flow_prior",
    "gaussian_noise",
    "generate",
    "importance_model",
    "init",
    "latent_noise",
    "loss",
    "make_vae",
    "own_params",
    "prior_log_prob",
    "prior_noise",
    "prior_sample",
    "reconstruct",
    "reparameterize",
    "standard_normal_prior",
]


class Likelihood(NamedTuple):
    """How decoder outputs score data: ``log p(x | z)``.

    Attributes:
      name: short identifier.
      log_prob: ``(decoder_output [B, ...], x [B, C, H, W]) -> [B]`` nats.
      mean: ``decoder_output -> [B, C, H, W]`` image in ``[0, 1]`` for display.
      out_channels: decoder channels needed per image channel.
    """

    name: str
    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mean: Callable[[torch.Tensor], torch.Tensor]
    out_channels: int


def bernoulli_likelihood() -> Likelihood:
    """Bernoulli pixels for binarised data; decoder outputs logits ``[B, C, H, W]``.

    ``log p(x|z) = Σ_i x_i ℓ_i - softplus(ℓ_i)`` with ``ℓ`` the logits (see
    :func:`fgm.distributions.bernoulli_log_prob`).

    Returns:
      A :class:`Likelihood` with ``out_channels = 1``; its ``mean`` is ``sigmoid(ℓ)``.
    """
    return Likelihood("bernoulli", D.bernoulli_log_prob, torch.sigmoid, 1)


def _split_logistic(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, log_scale = out.chunk(2, dim=1)
    return mean, log_scale


def discretized_logistic_likelihood(num_levels: int = 256) -> Likelihood:
    """Discretised logistic over ``num_levels`` pixel levels (data in ``[-1, 1]``).

    The decoder outputs ``[B, 2C, H, W]``: locations then log-scales. The
    probability of each level is the logistic mass of its bin (see
    :func:`fgm.distributions.discretized_logistic_log_prob`).

    Args:
      num_levels: number of pixel levels ``L``.

    Returns:
      A :class:`Likelihood` with ``out_channels = 2``; its ``mean`` maps the
      locations to ``[0, 1]``.
    """

    def log_prob(out, x):
        mean, log_scale = _split_logistic(out)
        return D.discretized_logistic_log_prob(mean, log_scale, x, num_levels)

    def mean(out):
        loc, _ = _split_logistic(out)
        return (loc.clamp(-1.0, 1.0) + 1.0) / 2.0

    return Likelihood("discretized_logistic", log_prob, mean, 2)


def gaussian_noise(key: random.Key, n: int, latent_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``ε ~ N(0, I)``: the sampling noise of a prior that pushes Gaussian noise to ``z`` (standard normal, flow).

    Args:
      key: the noise key.
      n: number of draws.
      latent_dim: ``d``.
      device: where to draw it (the same numbers on every device).

    Returns:
      ``[n, d]`` float32.
    """
    return random.normal(key, (n, latent_dim), device=device)


def own_params(params: TensorTree) -> TensorTree:
    """``params["prior"]``: what a prior with parameters of its own only (standard normal, flow) reads."""
    return params["prior"]


class Prior(NamedTuple):
    """A prior ``p(z)`` over ``[B, d]`` latents, possibly with parameters, possibly reading the model's.

    ``log_prob``, ``sample`` and ``analytic_kl`` take the tree ``view``
    selects from the VAE's parameters: the prior's own ``params["prior"]``
    by default, the whole ``{"encoder", "decoder", "prior"}`` tree for a
    prior built from the encoder (the VampPrior, :mod:`fgm.models.vamp`).
    Through the VAE, call :func:`prior_log_prob` and :func:`prior_sample`,
    which apply ``view``.

    Attributes:
      init: ``key -> params["prior"]`` (``{}`` for a fixed prior).
      log_prob: ``(view(params), z [B, d]) -> [B]``.
      sample: ``(view(params), noise [N, ...]) -> z [N, d]``: pushes noise drawn
        by ``noise`` to ``z``, without drawing any itself (so it is vmappable).
      analytic_kl: ``(view(params), mean, log_var) -> [B]`` closed-form
        ``KL(q || p)``, or ``None`` when only a Monte-Carlo estimate exists.
      noise: ``(key, n, d, device="cpu") -> noise [N, ...]``, what ``sample``
        takes (default :func:`gaussian_noise`, ``[N, d]``).
      view: ``VAE params -> the tree the functions above take`` (default
        :func:`own_params`).
    """

    init: Callable[[random.Key], TensorTree]
    log_prob: Callable[[TensorTree, torch.Tensor], torch.Tensor]
    sample: Callable[[TensorTree, torch.Tensor], torch.Tensor]
    analytic_kl: Callable[[TensorTree, torch.Tensor, torch.Tensor], torch.Tensor] | None
    noise: Callable[..., torch.Tensor] = gaussian_noise
    view: Callable[[TensorTree], TensorTree] = own_params


def standard_normal_prior() -> Prior:
    """``p(z) = N(0, I)``, with the analytic Gaussian KL.

    ``KL(N(μ, diag σ²) || N(0, I)) = 1/2 Σ_d (μ_d² + σ_d² - 1 - log σ_d²)``.

    Returns:
      A :class:`Prior` without parameters (``init`` returns ``{}``).
    """
    return Prior(
        init=lambda key: {},
        log_prob=lambda params, z: D.std_normal_log_prob(z),
        sample=lambda params, eps: eps,
        analytic_kl=lambda params, mean, log_var: D.kl_diag_normal_std_normal(mean, log_var),
    )


def flow_prior(flow: bijectors.Bijector) -> Prior:
    """A normalizing-flow prior ``p(z) = N(f⁻¹(z); 0, I) |det ∂f⁻¹/∂z|``.

    ``f`` (the bijector's forward map) pushes base noise ``u ~ N(0, I)`` to
    ``z = f(u)``; the density follows from the change of variables,

        log p(z) = log N(f⁻¹(z); 0, I) + log|det ∂f⁻¹(z)/∂z|,

    where the base log-density is summed over the ``d`` dimensions *before*
    the log-determinant (one per sample, shape ``[B]``) is added. No closed-form
    KL exists, so the ELBO uses the single-sample estimate
    ``log q(z|x) - log p(z)`` (see :func:`elbo_terms`).

    Args:
      flow: a bijector on ``[B, d]``, e.g. :func:`fgm.bijectors.realnvp`.

    Returns:
      A :class:`Prior` whose parameters are the flow's and whose
      ``analytic_kl`` is ``None``.
    """

    def log_prob(params, z):
        u, log_det_inverse = flow.inverse_and_log_det(params, z)
        return D.std_normal_log_prob(u) + log_det_inverse

    def sample(params, eps):
        return flow.forward_and_log_det(params, eps)[0]

    return Prior(init=flow.init, log_prob=log_prob, sample=sample, analytic_kl=None)


class VAE(NamedTuple):
    """A VAE definition: pure functions and static shapes, no parameters.

    Attributes:
      encode: ``(encoder_params, x [B, C, H, W]) -> (mean, log_var)``, each ``[B, d]``.
      decode: ``(decoder_params, z [B, d]) -> decoder output``.
      likelihood: scores decoder outputs against data.
      prior: ``p(z)``.
      latent_dim: ``d``.
      image_shape: ``(C, H, W)``.
      encoder: the encoder's architecture template (meta device).
      decoder: the decoder's architecture template (meta device).
    """

    encode: Callable[[TensorTree, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    decode: Callable[[TensorTree, torch.Tensor], torch.Tensor]
    likelihood: Likelihood
    prior: Prior
    latent_dim: int
    image_shape: tuple[int, int, int]
    encoder: nn.Module
    decoder: nn.Module


def make_vae(
    build_encoder: Callable[[], nn.Module],
    build_decoder: Callable[[], nn.Module],
    likelihood: Likelihood,
    latent_dim: int,
    image_shape: tuple[int, int, int],
    prior: Prior | None = None,
) -> VAE:
    """Assembles a VAE from module builders (templates only; no parameters yet).

    Args:
      build_encoder: returns a module ``[B, C, H, W] -> [B, 2·latent_dim]``.
      build_decoder: returns a module ``[B, latent_dim] -> decoder output``.
      likelihood: the observation model the decoder output parameterises.
      latent_dim: ``d``.
      image_shape: ``(C, H, W)``.
      prior: defaults to :func:`standard_normal_prior`.

    Returns:
      A :class:`VAE`; get parameters with :func:`init`.

    Raises:
      ValueError: a module registers buffers (see :func:`fgm.nn.functional`).
    """
    encoder, encoder_apply = fnn.functional(build_encoder)
    decoder, decoder_apply = fnn.functional(build_decoder)

    def encode(params, x):
        mean, log_var = encoder_apply(params, x).chunk(2, dim=-1)
        return mean, log_var

    return VAE(
        encode=encode,
        decode=decoder_apply,
        likelihood=likelihood,
        prior=prior or standard_normal_prior(),
        latent_dim=latent_dim,
        image_shape=image_shape,
        encoder=encoder,
        decoder=decoder,
    )


def init(vae: VAE, key: random.Key) -> dict[str, TensorTree]:
    """Fresh parameters ``{"encoder", "decoder", "prior"}`` from ``key``.

    Args:
      vae: the model definition.
      key: split three ways, one key per part.

    Returns:
      ``{"encoder": flat dict, "decoder": flat dict, "prior": prior.init(key)}``.
    """
    k_enc, k_dec, k_prior = random.split(key, 3)
    return {
        "encoder": fnn.init_params(vae.encoder, k_enc),
        "decoder": fnn.init_params(vae.decoder, k_dec),
        "prior": vae.prior.init(k_prior),
    }


class ElboTerms(NamedTuple):
    """Per-example ELBO pieces, each ``[B]`` (nats).

    Attributes:
      log_likelihood: ``log p(x | z)`` at the sampled ``z``.
      kl: ``KL(q(z|x) || p(z))``: analytic when the prior has one, else the
        single-sample estimate ``log q(z|x) - log p(z)``.
    """

    log_likelihood: torch.Tensor
    kl: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        """``log p(x|z) - KL``, ``[B]``."""
        return self.log_likelihood - self.kl


def reparameterize(mean: torch.Tensor, log_var: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``z = μ + σ ⊙ ε`` with ``σ = exp(log_var / 2)``.

    Args:
      mean: ``[B, d]`` ``μ``.
      log_var: ``[B, d]`` ``log σ²``.
      eps: ``[B, d]`` (or broadcastable) standard-normal noise ``ε``.

    Returns:
      ``z``: ``[B, d]``, differentiable in ``mean`` and ``log_var``.
    """
    return mean + torch.exp(0.5 * log_var) * eps


def elbo_terms(vae: VAE, params: TensorTree, x: torch.Tensor, eps: torch.Tensor, analytic_kl: bool = True) -> ElboTerms:
    """The ELBO's two terms for a batch, with one reparameterised sample.

    ``z = μ(x) + σ(x) ⊙ ε``; ``log p(x|z)`` at that ``z``; the KL analytic when
    the prior offers it (and ``analytic_kl``), else the one-sample estimate

        KL ≈ log q(z|x) - log p(z),   z ~ q(z|x),

    which is unbiased for ``E_q[log q(z|x) - log p(z)]``.

    Args:
      vae: the model definition.
      params: ``{"encoder", "decoder", "prior"}``.
      x: ``[B, C, H, W]`` data in the likelihood's space.
      eps: ``[B, d]`` standard-normal noise.
      analytic_kl: use the prior's closed-form KL when it has one.

    Returns:
      :class:`ElboTerms` with ``[B]`` tensors.
    """
    mean, log_var = vae.encode(params["encoder"], x)
    z = reparameterize(mean, log_var, eps)
    log_likelihood = vae.likelihood.log_prob(vae.decode(params["decoder"], z), x)
    if analytic_kl and vae.prior.analytic_kl is not None:
        kl = vae.prior.analytic_kl(vae.prior.view(params), mean, log_var)
    else:
        kl = D.diag_normal_log_prob(z, mean, log_var) - prior_log_prob(vae, params, z)
    return ElboTerms(log_likelihood, kl)


def loss(
    vae: VAE, params: TensorTree, x: torch.Tensor, eps: torch.Tensor, analytic_kl: bool = True
) -> tuple[torch.Tensor, dict]:
    """Negative ELBO averaged over the batch, with its terms as metrics.

    ``L(θ, φ) = -1/B Σ_b [log p_θ(x_b | z_b) - KL(q_φ(z|x_b) || p(z))]``,
    ``z_b = μ_φ(x_b) + σ_φ(x_b) ⊙ ε_b`` (see :func:`elbo_terms`).

    Args:
      vae: the model definition.
      params: ``{"encoder", "decoder", "prior"}``.
      x: ``[B, C, H, W]`` data in the likelihood's space.
      eps: ``[B, d]`` standard-normal noise.
      analytic_kl: use the prior's closed-form KL when it has one.

    Returns:
      ``(loss, {"neg_elbo", "recon", "kl"})``, all scalars (nats per example).
    """
    terms = elbo_terms(vae, params, x, eps, analytic_kl)
    neg_elbo = -terms.elbo.mean()
    metrics = {
        "neg_elbo": neg_elbo.detach(),
        "recon": -terms.log_likelihood.mean().detach(),
        "kl": terms.kl.mean().detach(),
    }
    return neg_elbo, metrics


def latent_noise(vae: VAE, key: random.Key, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``ε ~ N(0, I)`` for one step's reparameterisation.

    Args:
      vae: the model (gives ``d``).
      key: the noise key.
      batch_size: ``B``.
      device: where to draw it (the same numbers on every device).

    Returns:
      ``[B, d]`` float32.
    """
    return random.normal(key, (batch_size, vae.latent_dim), device=device)


def prior_log_prob(vae: VAE, params: TensorTree, z: torch.Tensor) -> torch.Tensor:
    """``log p(z)``, the prior given the part of ``params`` it reads (:attr:`Prior.view`).

    Args:
      vae: the model definition.
      params: ``{"encoder", "decoder", "prior"}``.
      z: ``[B, d]``.

    Returns:
      ``[B]`` nats.
    """
    return vae.prior.log_prob(vae.prior.view(params), z)


def prior_sample(vae: VAE, params: TensorTree, noise: torch.Tensor) -> torch.Tensor:
    """``z ~ p(z)`` from noise drawn by :func:`prior_noise` (deterministic given the noise).

    Args:
      vae: the model definition.
      params: ``{"encoder", "decoder", "prior"}``.
      noise: ``[N, ...]`` from :func:`prior_noise` (``[N, d]`` Gaussian noise
        for the standard normal and flow priors).

    Returns:
      ``[N, d]`` latents.
    """
    return vae.prior.sample(vae.prior.view(params), noise)


def prior_noise(vae: VAE, key: random.Key, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The noise :func:`prior_sample` and :func:`generate` take, drawn from ``key``.

    Args:
      vae: the model (its prior decides the noise's shape).
      key: the noise key.
      n: number of draws ``N``.
      device: where to draw it (the same numbers on every device).

    Returns:
      ``[N, ...]``: ``[N, d]`` ``ε ~ N(0, I)`` for the standard normal and flow
      priors (the same numbers as :func:`latent_noise`).
    """
    return vae.prior.noise(key, n, vae.latent_dim, device)


def generate(vae: VAE, params: TensorTree, eps: torch.Tensor) -> torch.Tensor:
    """Images from the prior: ``z = prior_sample(noise)``, decoded to the likelihood's mean.

    Args:
      vae: the model definition.
      params: its parameters.
      eps: ``[N, ...]`` prior noise (:func:`prior_noise`; ``[N, d]`` base
        noise for the standard normal and flow priors).

    Returns:
      ``[N, C, H, W]`` in ``[0, 1]``.
    """
    z = prior_sample(vae, params, eps)
    return vae.likelihood.mean(vae.decode(params["decoder"], z))


def reconstruct(vae: VAE, params: TensorTree, x: torch.Tensor) -> torch.Tensor:
    """Decodes the posterior mean ``μ(x)``.

    Args:
      vae: the model definition.
      params: its parameters.
      x: ``[B, C, H, W]`` data in the likelihood's space.

    Returns:
      ``[B, C, H, W]`` in ``[0, 1]``: the likelihood's mean at ``z = μ(x)``.
    """
    mean, _ = vae.encode(params["encoder"], x)
    return vae.likelihood.mean(vae.decode(params["decoder"], mean))


def evaluate(vae: VAE, params: TensorTree, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example terms of the bound on held-out data.

    Args:
      vae: the model definition.
      params: its parameters.
      x: ``[B, C, H, W]`` data in the likelihood's space.
      eps: ``[B, d]`` standard-normal noise.

    Returns:
      ``{"neg_elbo", "recon", "kl"}``, each ``[B]`` in nats (``-ELBO = recon + KL``);
      for 256-level data also ``"bits_per_dim"``: ``-ELBO / (C·H·W · log 2)``, the
      bound as a code length per sub-pixel.
    """
    terms = elbo_terms(vae, params, x, eps)
    values = {"neg_elbo": -terms.elbo, "recon": -terms.log_likelihood, "kl": terms.kl}
    if vae.likelihood.name == "discretized_logistic":
        values["bits_per_dim"] = D.bits_per_dim(-terms.elbo, math.prod(vae.image_shape))
    return values


def importance_model(vae: VAE) -> ImportanceModel:
    """The VAE as importance sampling sees it (for :mod:`fgm.metrics.nll`).

    The proposal is the encoder's ``q(z|x) = N(μ(x), diag σ²(x))``, sampled by
    reparameterisation; the log joint is ``log p(x|z) + log p(z)`` with the
    model's likelihood and prior (:func:`prior_log_prob`), so the log-weight
    ``log p(x, z) - log q(z|x)`` is the single-sample ELBO estimate.

    Args:
      vae: the model definition (any prior, any likelihood).

    Returns:
      An :class:`fgm.types.ImportanceModel` over the VAE's parameter tree,
      ``latent_shape = (d,)``.
    """

    def proposal(params, x):
        return vae.encode(params["encoder"], x)

    def sample(q, eps):
        mean, log_var = q
        z = reparameterize(mean, log_var, eps)
        return z, D.diag_normal_log_prob(z, mean, log_var)

    def log_joint(params, x, z):
        log_lik = vae.likelihood.log_prob(vae.decode(params["decoder"], z), x)
        return log_lik + prior_log_prob(vae, params, z)

    return ImportanceModel(proposal, sample, log_joint, (vae.latent_dim,))


def build(vae: VAE, optimizer: optim.GradientTransformation) -> Trainer:
    """The VAE's training pieces (:class:`fgm.types.Trainer`), trained on the negative ELBO.

    Args:
      vae: the model definition (any prior, any likelihood).
      optimizer: the optimizer of all parameters (encoder, decoder and the
        prior's, e.g. the flow's: a learned prior trains with the rest).

    Returns:
      ``init(key) -> TrainState``; ``make_update`` over :func:`loss`;
      ``inputs(x, key) -> (x, ε)``; ``evaluate(params, x, key)`` as
      :func:`evaluate` with ``ε`` from ``key``; ``generate(params, ε)`` as
      :func:`generate`; ``noise(key, n, device="cpu")`` as :func:`prior_noise`
      (``ε [n, d]`` for the standard normal and flow priors).
    """
    loss_fn = functools.partial(loss, vae)

    def make_update(
        *, backend: str = "autograd", donate: bool = False, compile: bool | str = False, stacked: bool = False
    ):
        train.check_compile_mode(compile, stacked)
        if stacked and compile:
            return ensemble.make_update(loss_fn, optimizer, donate=donate, compile=True)
        if stacked:
            return ensemble.vmap_update(train.make_update(loss_fn, optimizer, backend="func", donate=donate))
        return train.make_update(loss_fn, optimizer, backend=backend, donate=donate, compile=compile)

    return Trainer(
        init=lambda key: train.init_state(init(vae, key), optimizer, key),
        make_update=make_update,
        inputs=lambda x, key: (x, latent_noise(vae, key, x.shape[0], x.device)),
        evaluate=lambda params, x, key: evaluate(vae, params, x, latent_noise(vae, key, x.shape[0], x.device)),
        generate=functools.partial(generate, vae),
        noise=lambda key, n, device="cpu": prior_noise(vae, key, n, device),
    )
