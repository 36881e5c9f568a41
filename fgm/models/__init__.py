"""Generative models as pure functions of parameter pytrees.

One submodule per model family, plus the architectures: ``fgm.models.vae``
(the VAE: :func:`~fgm.models.vae.make_vae`, ELBO, likelihoods, priors),
``fgm.models.gan`` (the GAN: adversarial losses, D/G steps) and
``fgm.models.networks`` (the encoders, decoders, generators and
discriminators the command line uses; any ``nn.Module`` of the right shapes
works instead). A new model is a new submodule: the submodules are found on
disk, not listed here.

Submodules are imported on first access (``fgm.models.gan``) or explicitly
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
