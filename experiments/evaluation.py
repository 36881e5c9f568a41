"""FID of a trained model against a dataset split, for the runner and the FID CLI.

Real and generated images take the identical path: ``[N, C, H, W]`` in
``[0, 1]`` (real ``uint8`` levels divided by 255; generated images are the
model's ``generate`` output, e.g. the VAE decoder's Bernoulli means), then
:func:`fgm.metrics.inception.make_feature_extractor`'s preprocessing (grey to
three channels, 28×28 to 32×32, then to 299×299 as the reference does), pool3
features, float64 streaming statistics. Real-data statistics are cached on
disk per (dataset, split, image count, weights, preprocessing), so they are
computed once per machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple

import torch

from fgm import random
from fgm.metrics import fid as fid_lib
from fgm.metrics import frechet, inception


def cache_dir() -> Path:
    """``$FGM_CACHE_DIR/fid``, else ``~/.cache/fgm/fid``."""
    root = os.environ.get("FGM_CACHE_DIR") or Path.home() / ".cache" / "fgm"
    return Path(root) / "fid"


class FIDReport(NamedTuple):
    """A FID value with what it was computed from (always report N)."""

    value: float
    num_generated: int
    reference: str
    num_reference: int
    weights: str

    def as_results(self, prefix: str = "test") -> dict:
        return {
            f"{prefix}_fid": self.value,
            "fid_samples" if prefix == "test" else f"{prefix}_fid_samples": self.num_generated,
            "fid_reference" if prefix == "test" else f"{prefix}_fid_reference": self.reference,
            "fid_reference_count" if prefix == "test" else f"{prefix}_fid_reference_count": self.num_reference,
            "fid_weights": self.weights,
        }


def generated_batches(recipe, params, key: random.Key, num: int, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """``num`` samples from ``recipe.generate`` in batches, ``[b, C, H, W]`` in ``[0, 1]``."""
    with torch.no_grad():
        for i, start in enumerate(range(0, num, batch_size)):
            n = min(batch_size, num - start)
            yield recipe.generate(params, recipe.noise(random.fold_in(key, i), n)).clamp(0, 1)


def real_batches(images: torch.Tensor, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """``uint8 [N, C, H, W]`` as float batches in ``[0, 1]``."""
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size].float() / 255.0


def reference_statistics(
    extractor, dataset: str, split: str, images: torch.Tensor, progress: bool = True
) -> frechet.FeatureStats:
    """Feature statistics of a real split (``uint8 [N, C, H, W]``), cached on disk."""
    key = fid_lib.statistics_key(dataset, split, images.shape[0], extractor.info)
    return fid_lib.cached_statistics(
        cache_dir(),
        key,
        lambda: fid_lib.image_statistics(real_batches(images), extractor, progress=progress, total=images.shape[0],
                                         desc=f"FID reference {dataset}:{split}[:{images.shape[0]}]"),
    )


def model_fid(
    recipe, params, key: random.Key, num_samples: int, dataset: str, split: str, reference: torch.Tensor,
    extractor: inception.FeatureExtractor | None = None, progress: bool = True,
) -> FIDReport:
    """FID between ``num_samples`` generated images and the real ``reference`` images."""
    extractor = extractor or inception.make_feature_extractor()
    real = reference_statistics(extractor, dataset, split, reference, progress)
    fake = fid_lib.image_statistics(generated_batches(recipe, params, key, num_samples), extractor,
                                    progress=progress, total=num_samples, desc=f"FID samples ({num_samples})")
    value = frechet.frechet_distance_from_stats(fake, real)
    return FIDReport(value, num_samples, f"{dataset}:{split}[:{reference.shape[0]}]", int(reference.shape[0]),
                     extractor.info.weights)
