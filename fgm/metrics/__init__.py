"""Evaluation metrics.

* ``fgm.metrics.nll``: the IWAE bound on a VAE's negative log-likelihood.
* ``fgm.metrics.frechet``: the Fréchet distance between Gaussians fitted to
  features, with streaming float64 feature statistics.
* ``fgm.metrics.inception``: the Inception V3 feature extractor for FID.
* ``fgm.metrics.fid``: FID between two sets of images; image features held
  once (``image_features``) and cached (``dataset_features``); pytorch-fid
  ``.npz`` statistics.
* ``fgm.metrics.kid``: Kernel Inception Distance (unbiased MMD², cubic kernel).
* ``fgm.metrics.precision_recall``: improved precision and recall (k-NN manifolds).
* ``fgm.metrics.evaluate``: FID, KID and precision/recall of one pair of feature sets.
* ``fgm.metrics.classifier``: a digit classifier trained on the data set; class
  coverage, confidence and its own feature space.
* ``fgm.metrics.samples``: every metric above of a model's samples against real
  images, from one set of samples (what a run reports).

Submodules are imported on first access (``fgm.metrics.fid``) or explicitly
(``from fgm.metrics import fid``): the Inception network pulls in torchvision,
which takes seconds to import, and only FID needs it.
"""

import importlib

_SUBMODULES = ("classifier", "evaluate", "fid", "frechet", "inception", "kid", "nll", "precision_recall", "samples")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
