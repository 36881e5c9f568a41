"""Generative adversarial network as pure functions of a parameter pytree.

One module per concern; every public name is re-exported here, so
``from fgm.models import gan`` then ``gan.build(...)``, ``gan.get_loss(...)``
and so on:

* :mod:`~fgm.models.gan.model`: the :class:`GAN` (``make_gan``: two
  networks from ``fgm.models.networks`` or any ``nn.Module`` of the right
  shapes), ``init``, ``init_model_state``, ``latent_noise``,
  ``scale_pixels`` / ``to_unit_interval`` (data live in ``[-1, 1]``),
  sampling (``generate``) and evaluation (``evaluate``) in evaluation mode,
  and ``discriminator_won_monitor``.
* :mod:`~fgm.models.gan.losses`: the adversarial losses, pure functions of
  discriminator logits (``AdversarialLoss``, ``get_loss``, the registry
  ``LOSSES`` of name -> constructor, ``gradient_penalty``); see
  ``docs/gan.md`` for the maths and the choice of default.
* :mod:`~fgm.models.gan.state`: ``GANState`` (two players, two optimizer
  states, the layer state), ``init_state`` and ``variables``.
* :mod:`~fgm.models.gan.average`: the moving average of G, kept in the
  model state under the key ``EMA`` (``"generator_ema"``), and BatchNorm
  statistics recomputed for it.
* :mod:`~fgm.models.gan.objectives`: each player's loss as a function of
  its own parameters.
* :mod:`~fgm.models.gan.steps`: the one training path, ``build(...) ->
  fgm.types.Trainer`` (one game iteration per update: D step(s), then a G
  step), its inputs ``gan_inputs``, and ``make_gan_step``, the same update
  as ``step(state, batch, key) -> (state, metrics)``.

Typical use without the CLI::

    gan = make_gan(lambda: networks.mnist_mlp_generator(64), networks.mnist_mlp_discriminator, 64, (1, 28, 28))
    g_opt = d_opt = fgm.optim.adam(2e-4, b1=0.5, b2=0.999)
    state = init_state(gan, g_opt, d_opt, fgm.random.key(0))
    step = make_gan_step(gan, get_loss("non_saturating"), g_opt, d_opt)
    state, metrics = step(state, scale_pixels(images), fgm.train.step_key(state))
"""

from fgm.models.gan.average import (
    ema_decay_at,
    ema_init,
    ema_update,
    ema_variables_with_batch_stats,
    recompute_batch_stats,
)
from fgm.models.gan.losses import (
    LOSSES,
    AdversarialLoss,
    bce_discriminator_loss,
    critic_generator_loss,
    get_loss,
    gradient_penalty,
    hinge,
    hinge_discriminator_loss,
    minimax,
    minimax_generator_loss,
    non_saturating,
    non_saturating_generator_loss,
    wasserstein_critic_loss,
    wgan_gp,
)
from fgm.models.gan.model import (
    EMA,
    GAN,
    discriminator_won_monitor,
    evaluate,
    generate,
    init,
    init_model_state,
    interpolation_weights,
    latent_noise,
    make_gan,
    scale_pixels,
    to_unit_interval,
)
from fgm.models.gan.objectives import (
    discriminator_objective,
    discriminator_objective_and_state,
    generator_objective,
    generator_objective_and_state,
)
from fgm.models.gan.state import GANState, init_state, variables
from fgm.models.gan.steps import build, gan_inputs, make_gan_step

__all__ = [
    "EMA",
    "GAN",
    "LOSSES",
    "AdversarialLoss",
    "GANState",
    "bce_discriminator_loss",
    "build",
    "critic_generator_loss",
    "discriminator_objective",
    "discriminator_objective_and_state",
    "discriminator_won_monitor",
    "ema_decay_at",
    "ema_init",
    "ema_update",
    "ema_variables_with_batch_stats",
    "evaluate",
    "gan_inputs",
    "generate",
    "generator_objective",
    "generator_objective_and_state",
    "get_loss",
    "gradient_penalty",
    "hinge",
    "hinge_discriminator_loss",
    "init",
    "init_model_state",
    "init_state",
    "interpolation_weights",
    "latent_noise",
    "make_gan",
    "make_gan_step",
    "minimax",
    "minimax_generator_loss",
    "non_saturating",
    "non_saturating_generator_loss",
    "recompute_batch_stats",
    "scale_pixels",
    "to_unit_interval",
    "variables",
    "wasserstein_critic_loss",
    "wgan_gp",
]
