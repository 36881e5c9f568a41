"""What the report-scale evaluation of one trained model costs, part by part.

Run from the repository root::

    python -m benchmarks.bench_eval [--run runs/gan-ema] [--model gan] [--samples 10000]
        [--reference 10000] [--cold] [--no-classifier] [--random-weights] [--raw-generator] [--json F]

It runs the very function the runner calls at the end of a run,
:func:`fgm.metrics.samples.sample_metrics` (one set of samples, its Inception
features extracted once and read by FID, KID and precision/recall; the
real-data floor; the digit classifier's metrics), and prints the wall time of
each part: sampling, Inception features of the samples, of the reference
(test) images and of the floor's training images, the metrics, and the
classifier. The parameters are those of ``--run`` (member 0), or a fresh
initialisation of ``--model`` with the default profile's settings: the cost
does not depend on what the weights are.

Real features are cached on disk (keyed by the images and the weights), so a
second evaluation against the same reference skips them; ``--cold`` uses an
empty temporary cache to time a first evaluation. ``--random-weights`` swaps
the TF-FID Inception weights for a random initialisation of the same network
(same FLOPs; for machines without the 87 MB weights file, and for the quick
run in the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments import models, rundir
from fgm import data as fdata
from fgm import random
from fgm.metrics import inception, samples
from fgm.models import gan as gan_lib

PARTS = ("sampling", "inception_samples", "inception_reference", "inception_floor", "metrics", "classifier")


def random_inception(weights: str = "tf-fid", path=None, fold_bn: bool = True) -> tuple[torch.nn.Module, str]:
    """The FID network with random weights (same architecture and FLOPs as the real one), for timing only."""
    net = inception.build_network(weights).to_empty(device="cpu")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02)
        for name, b in net.named_buffers():
            b.fill_(1.0 if name.endswith("running_var") else 0.0)
    return net.eval(), "random"


def member_variables(args) -> tuple[object, dict, str]:
    """``(trainer, variables, description)`` of a run's member 0, or of a fresh model."""
    if args.run:
        run = rundir.load_run(Path(args.run))
        return run.experiment.trainer, run.params[0], f"{args.run} (member 0)"
    config = models.defaults(args.model, args.dataset, "default")
    config |= {"model": args.model, "dataset": args.dataset, "profile": "default", "seeds": [0], "total_steps": 1}
    experiment = models.build(config)
    state = experiment.trainer.init(random.key(0))
    return experiment.trainer, experiment.trainer.variables(state), f"a fresh {args.model} (default profile)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained run directory (default: a fresh --model)")
    parser.add_argument("--model", default="gan", help="model when no --run is given (default gan)")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--samples", type=int, default=10_000, help="generated images (default 10000)")
    parser.add_argument("--reference", type=int, default=10_000, help="test images (default 10000)")
    parser.add_argument("--cold", action="store_true", help="an empty feature cache: time the real features too")
    parser.add_argument("--no-classifier", action="store_true", help="skip the digit classifier's metrics")
    parser.add_argument("--random-weights", action="store_true", help="random Inception weights (timing only)")
    parser.add_argument("--raw-generator", action="store_true", help="a GAN with an average of G: use G itself")
    parser.add_argument("--json", help="also write the metrics and the seconds to this file")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR)")
    args = parser.parse_args(argv)
    load_network, cache_dir = inception.load_network, samples.cache_dir
    seconds: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            # both swaps are undone below: a caller's process (the tests) keeps the real weights and cache
            if args.random_weights:
                inception.load_network = random_inception
            if args.cold:
                samples.cache_dir = lambda: Path(scratch)  # the real features' cache only; the classifier's stays
            trainer, variables, what = member_variables(args)
            if args.raw_generator:
                variables, what = {k: v for k, v in variables.items() if k != gan_lib.EMA}, what + ", raw G"
            test = fdata.load_images(args.dataset, "test", args.data_dir)[: args.reference]
            floor = fdata.load_images(args.dataset, "train", args.data_dir)[: args.samples]
            started = time.perf_counter()
            results = samples.sample_metrics(
                trainer,
                variables,
                random.key(0),
                args.samples,
                args.dataset,
                test,
                floor,
                classifier=not args.no_classifier,
                data_dir=args.data_dir,
                progress=False,
                seconds=seconds,
            )
            total = time.perf_counter() - started
    finally:
        inception.load_network, samples.cache_dir = load_network, cache_dir
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"evaluation of {what}: {args.samples} samples vs {len(test)} test images, floor train[:{len(floor)}]")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {cpu}")
    print(f"cache: {'cold (real features computed)' if args.cold else 'as found on disk'}")
    print(f"{'part':<22}{'seconds':>10}{'share':>9}")
    for part in PARTS:
        if part in seconds:
            print(f"{part:<22}{seconds[part]:>10.1f}{seconds[part] / total:>9.1%}")
    print(f"{'total':<22}{total:>10.1f}{1:>9.0%}")
    print(f"FID {results['test_fid']:.2f} (floor {results['floor_fid']:.2f})")
    if args.json:
        record = {"what": what, "command": "python -m benchmarks.bench_eval " + " ".join(argv or sys.argv[1:])}
        record |= {"cpu_capability": cpu, "threads": torch.get_num_threads(), "total_seconds": round(total, 1)}
        record |= {"seconds": {k: round(v, 1) for k, v in seconds.items()}, "results": results}
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
