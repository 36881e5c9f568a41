"""fgm: functional, JAX-style deep generative models in PyTorch.

Modules (each usable on its own):

* ``fgm.random``: explicit keys (``key``, ``split``, ``fold_in``) and samplers.
* ``fgm.tree``: pytree helpers over optree.
* ``fgm.optim``: optax-style gradient transformations (``adam``, ``chain``, ...).
* ``fgm.nn``: modules as architecture templates, turned into pure functions.
* ``fgm.train``: ``TrainState`` and ``step(state, batch, key) -> (state, metrics)`` builders.
* ``fgm.distributions``: log-densities and KL divergences.
* ``fgm.bijectors``: bijectors, RealNVP.
* ``fgm.checkpoint``: atomic, verified checkpoints.
* ``fgm.ensemble``: seed ensembles: stacked states and a ``vmap``-ped train step.
* ``fgm.distributed``: data-parallel training over ``torch.distributed``
  (gradients averaged inside the update, batches sharded by rank).
* ``fgm.models``: the VAE (``fgm.models.vae``), the GAN (``fgm.models.gan``)
  and their architectures (``fgm.models.networks``).
* ``fgm.metrics``: the IWAE negative log-likelihood (``fgm.metrics.nll``), the
  Fréchet distance with streaming feature statistics (``fgm.metrics.frechet``)
  and FID (``fgm.metrics.fid``).
* ``fgm.data``: MNIST / SVHN loading, splits, batching, binarisation.
* ``fgm.interpolate``: latent paths and the interpolation strips of a VAE or a GAN.

``fgm.data``, ``fgm.interpolate``, ``fgm.models`` and ``fgm.metrics`` are imported on first access
(``fgm.data`` and FID import torchvision, which takes seconds). A guided tour
with runnable examples is in ``docs/api.md``.
"""

import importlib

from fgm import bijectors, checkpoint, distributed, distributions, ensemble, nn, optim, random, train, tree

__version__ = "0.1.0"

_LAZY = ("data", "interpolate", "metrics", "models")

__all__ = [
    "bijectors",
    "checkpoint",
    "data",
    "distributed",
    "distributions",
    "ensemble",
    "interpolate",
    "metrics",
    "models",
    "nn",
    "optim",
    "random",
    "train",
    "tree",
]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
