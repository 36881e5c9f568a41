"""The sample quality of a generative model: its samples against real images, every metric from one extraction.

Real and generated images take the identical path: ``[N, C, H, W]`` in
``[0, 1]`` (real ``uint8`` levels divided by 255; generated images are the
model's ``generate`` output), then
:func:`fgm.metrics.inception.make_feature_extractor`'s preprocessing, pool3
features, read once by every metric (FID, KID, precision/recall). Real-data
features are cached on disk (:func:`cache_dir`) per (dataset, split, image
count, the images' content, weights, preprocessing)::

    fid = model_fid(trainer, params, random.key(0), 1000, "mnist", "val", val_images)
    results = sample_metrics(trainer, params, random.key(0), 1000, "mnist", test_images, train_images[:1000])

A model is anything with the :class:`fgm.types.Trainer` functions ``noise``
and ``generate``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from fgm import data as fdata
from fgm import random, tree
from fgm.metrics import classifier as classifier_lib
from fgm.metrics import evaluate, inception
from fgm.metrics import fid as fid_lib
from fgm.types import Trainer

__all__ = [
    "cache_dir",
    "classifier_metrics",
    "generated_batches",
    "model_fid",
    "real_batches",
    "real_features",
    "sample_metrics",
]


def cache_dir() -> Path:
    """``$FGM_CACHE_DIR/fid``, else ``~/.cache/fgm/fid``."""
    root = os.environ.get("FGM_CACHE_DIR") or Path.home() / ".cache" / "fgm"
    return Path(root) / "fid"


def generated_batches(trainer: Trainer, params, key: random.Key, num: int, batch_size=250) -> Iterator[torch.Tensor]:
    """``num`` samples of a model in batches, ``[b, C, H, W]`` in ``[0, 1]``, on the parameters' device."""
    device = tree.tree_leaves(params)[0].device
    with torch.no_grad():
        for i, start in enumerate(range(0, num, batch_size)):
            n = min(batch_size, num - start)
            yield trainer.generate(params, trainer.noise(random.fold_in(key, i), n, device)).clamp(0, 1)


def real_batches(images: torch.Tensor, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """``uint8 [N, C, H, W]`` as float batches in ``[0, 1]``."""
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size].float() / 255.0


def model_fid(
    trainer: Trainer,
    params,
    key: random.Key,
    num_samples: int,
    dataset: str,
    split: str,
    reference: torch.Tensor,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> float:
    """FID between ``num_samples`` generated images and the real ``reference`` images (the validation curve's)."""
    extractor = inception.make_feature_extractor(device=device)
    real = real_features(extractor, dataset, split, reference, progress)
    batches = generated_batches(trainer, params, key, num_samples)
    desc = f"FID samples ({num_samples})"
    fake = fid_lib.image_features(batches, extractor, progress=progress, total=num_samples, desc=desc)
    return fid_lib.fid_from_features(fake, real).value


def real_features(extractor, dataset: str, split: str, images: torch.Tensor, progress: bool = True) -> torch.Tensor:
    """Inception features ``[N, 2048]`` of real images (``uint8 [N, C, H, W]``), cached on disk like the statistics."""
    key = fid_lib.statistics_key(dataset, split, images.shape[0], extractor.info, images=images)
    desc = f"features {dataset}:{split}[:{images.shape[0]}]"
    compute = functools.partial(fid_lib.image_features, extractor=extractor, progress=progress, desc=desc)
    return fid_lib.cached_features(cache_dir(), key, lambda: compute(real_batches(images), total=images.shape[0]))


def sample_metrics(
    trainer: Trainer,
    params,
    key: random.Key,
    num_samples: int,
    dataset: str,
    reference: torch.Tensor,
    floor_images: torch.Tensor,
    classifier: bool,
    data_dir: str | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
    seconds: dict[str, float] | None = None,
) -> dict:
    """Every sample-quality metric of a model, from one set of samples whose features are extracted once.

    Inception features (pool3) of ``num_samples`` samples against the real
    ``reference`` images: FID, KID (mean ± std over subsets) and
    precision/recall (k = 3). The same metrics of ``floor_images`` (real
    training images, as many as samples) against the same reference are the
    real-data floor: what a perfect model of that N would score. With
    ``classifier``, the dataset's own classifier (trained once, cached) adds
    the class histogram of the samples, its KL divergence from the test
    labels' distribution, the rarest and commonest class shares, the mean
    confidence, and FID/KID in the classifier's feature space. The networks
    run on ``device``; features, and so the real images' cache, live on the
    CPU whatever the device.

    ``seconds``, when given, receives the wall time of each part:
    ``sampling``, ``inception_samples``, ``inception_reference`` and
    ``inception_floor`` (near 0 when the real features come from the cache),
    ``metrics`` (FID, KID, precision/recall of the samples and of the floor)
    and ``classifier`` (its features of samples and test set, and its metrics).

    Returns:
      Flat ``results.json`` values: ``test_fid``, ``test_kid_mean``... and
      ``floor_*`` (Inception), ``class_*`` and ``classifier_*`` (classifier),
      with ``fid_samples``, ``fid_reference``, ``fid_reference_count``,
      ``fid_weights`` and ``fid_warning`` (``None`` or the N ≤ 2048 warning).
    """
    seconds = {} if seconds is None else seconds
    timed = functools.partial(_timed, seconds)
    extractor = inception.make_feature_extractor(device=device)
    images = timed("sampling", lambda: torch.cat(list(generated_batches(trainer, params, key, num_samples))))
    results = _inception_metrics(extractor, images, key, dataset, reference, floor_images, progress, timed)
    if classifier:
        classifier_key = random.fold_in(key, 2)
        results |= timed(
            "classifier", lambda: classifier_metrics(dataset, images, classifier_key, data_dir, progress, device)
        )
    return results


def _inception_metrics(extractor, images, key, dataset, reference, floor_images, progress, timed) -> dict:
    """:func:`sample_metrics`' Inception part: the samples' and the floor's metrics against the reference."""
    real = timed("inception_reference", lambda: real_features(extractor, dataset, "test", reference, progress))
    floor = timed("inception_floor", lambda: real_features(extractor, dataset, "train", floor_images, progress))
    desc = f"features of {images.shape[0]} samples"
    generated = timed(
        "inception_samples", lambda: fid_lib.image_features(images, extractor, progress=progress, desc=desc)
    )
    metric_key, floor_key = random.split(random.fold_in(key, 1))
    model = timed("metrics", lambda: evaluate.feature_metrics(generated, real, metric_key).as_dict("test_"))
    results = {k: v for k, v in model.items() if k not in ("test_num_generated", "test_num_real", "test_fid_warning")}
    floor_metrics = timed("metrics", lambda: evaluate.feature_metrics(floor, real, floor_key).as_dict("floor_"))
    floor_keys = ("floor_fid", "floor_kid_mean", "floor_precision", "floor_recall")
    results |= {k: v for k, v in floor_metrics.items() if k in floor_keys}
    return results | {
        "fid_samples": images.shape[0],
        "fid_reference": f"{dataset}:test[:{reference.shape[0]}]",
        "fid_reference_count": int(reference.shape[0]),
        "fid_floor_images": f"{dataset}:train[:{floor_images.shape[0]}]",
        "fid_weights": extractor.info.weights,
        "fid_warning": model["test_fid_warning"],
    }


def _timed(seconds: dict[str, float], part: str, work: Callable[[], Any]) -> Any:
    """``work()``, its wall time added to ``seconds[part]``."""
    started = time.perf_counter()
    result = work()
    seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - started
    return result


def classifier_metrics(
    dataset: str, images: torch.Tensor, key: random.Key, data_dir=None, progress=True, device="cpu"
) -> dict:
    """The dataset classifier's view of samples ``[N, C, H, W]`` in ``[0, 1]`` (see :func:`sample_metrics`)."""
    trained = classifier_lib.cached_classifier(dataset, data_dir=data_dir, progress=progress)
    test = fdata.load(dataset, "test", data_dir)
    params = tree.tree_to(trained.params, device)
    samples = classifier_lib.classifier_outputs(trained.classifier, params, images)
    real = classifier_lib.classifier_outputs(trained.classifier, params, test.images)
    classes = classifier_lib.class_statistics(samples.logits, classifier_lib.class_distribution(test.labels))
    features = evaluate.feature_metrics(samples.features, real.features, key, with_precision_recall=False)
    return {
        "class_histogram": classes.histogram,
        "class_kl": classes.kl_to_samples,
        "class_rarest_share": classes.rarest_share,
        "class_most_common_share": classes.most_common_share,
        "class_missing": classes.missing_classes,
        "class_confidence": classes.confidence,
        "classifier_fid": features.fid.value,
        "classifier_kid_mean": features.kid.mean,
        "classifier_test_accuracy": trained.test_accuracy,
    }
