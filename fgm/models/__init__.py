"""Generative models as pure functions of parameter pytrees.

One submodule per model family, plus the architectures:

* ``fgm.models.vae``: the VAE (:func:`~fgm.models.vae.make_vae`, ELBO, likelihoods,
  standard-normal and flow priors).
* ``fgm.models.vamp``: the VampPrior, a mixture of the encoder's posteriors at learned
  pseudo-inputs (:func:`~fgm.models.vamp.with_vamp_prior`).
* ``fgm.models.networks``: the architectures the CLI uses, the VAE's encoders/decoders and
  the GAN's generators/discriminators (MLPs, MNIST and SVHN ConvNets); any ``nn.Module`` of
  the right shapes works instead.
* ``fgm.models.gan``: the GAN (model, adversarial losses, moving average of G, objectives,
  and ``build``, its Trainer), a package of one module per concern.

A new model is a new submodule: the submodules are found on disk, not listed in code.
They are imported on first access (``fgm.models.gan``) or explicitly
(``from fgm.models import vae``).
"""

import importlib
import pkgutil

__all__ = sorted(module.name for module in pkgutil.iter_modules(__path__))


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
