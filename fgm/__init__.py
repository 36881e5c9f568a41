"""fgm: functional, JAX-style deep generative models in PyTorch.

Modules (each usable on its own):

* ``fgm.random``: explicit keys (``key``, ``split``, ``fold_in``) and samplers.
* ``fgm.tree``: pytree helpers over optree.
* ``fgm.optim``: optax-style gradient transformations (``adam``, ``chain``, ...).
* ``fgm.nn``: modules as architecture templates, turned into pure functions.
* ``fgm.train``: ``TrainState`` and ``step(state, batch, key) -> (state, metrics)`` builders.
* ``fgm.distributions``: log-densities and KL divergences.
* ``fgm.bijectors``: bijectors, RealNVP.
* ``fgm.models``: the VAE (``fgm.models.vae``) and its architectures.
* ``fgm.metrics``: the IWAE negative log-likelihood (``fgm.metrics.nll``) and the
  Fréchet distance with streaming feature statistics (``fgm.metrics.frechet``).
* ``fgm.data``: MNIST / SVHN loading, splits, batching, binarisation.
* ``fgm.checkpoint``: atomic, verified checkpoints.
"""

from fgm import bijectors, checkpoint, distributions, nn, optim, random, train, tree

__version__ = "0.1.0"

__all__ = ["bijectors", "checkpoint", "distributions", "nn", "optim", "random", "train", "tree"]
