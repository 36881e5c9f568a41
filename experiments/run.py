"""Train and evaluate one model on one dataset.

    python -m experiments.run vae_std mnist                  # default profile
    python -m experiments.run vae_std mnist --profile smoke  # seconds, data subsets
    python -m experiments.run vae_std mnist --resume         # continue an interrupted run
    python -m experiments.run vae_std mnist --seeds 4        # seeds 0-3 at once (vmap), mean ± std
    python -m experiments.run all                            # every model on every dataset with data
    python -m experiments.run my_vae mnist --import my_models  # a model registered in your own module

Outputs go to ``runs/<model>-<dataset>-s<seed>/``: ``config.json`` (the
resolved config), ``metrics.jsonl`` (one line per epoch), ``curves.png``,
``samples/epoch_*.png``, ``checkpoint.pt`` (atomic, every epoch) and
``results.json`` (test metrics) at the end.

Exit codes: 0 done, 2 bad input (names, data, checkpoint), 3 non-finite loss.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

import torch

from experiments import analysis, evaluation, plots, profiles, trainer
from experiments.registry import MODELS, get_model
from fgm import checkpoint, random
from fgm import data as fdata
from fgm import nn as fnn
from fgm.metrics import inception

# Config keys that may differ between a run and its resumption.
# (evaluation-only settings: changing them cannot change the trained state)
_RESUMABLE_CHANGES = {"data_dir", "out", "nll_samples", "test_limit", "fid_samples", "fid_reference_count",
                      "fid_every", "fid_val_samples"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=f"one of: {', '.join(sorted(MODELS))}")
    parser.add_argument("dataset", help=f"one of: {', '.join(fdata.DATASETS)}")
    parser.add_argument("--profile", default="default", help=f"one of: {', '.join(profiles.PROFILES)}")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, metavar="N",
                        help="train N seeds (--seed, --seed + 1, ...) at once with vmap and report mean ± std "
                             "(runs/<model>-<dataset>-s<seed>xN; see experiments/ensemble.py)")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    parser.add_argument("--out", help="run directory (default: runs/<model>-<dataset>-s<seed>)")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    parser.add_argument("--sample-every", type=int, help="write a sample grid every N epochs")
    parser.add_argument("--train-limit", type=int, help="use only the first N training images (quick checks)")
    parser.add_argument("--val-limit", type=int, help="use only the first N validation images")
    parser.add_argument("--test-limit", type=int, help="use only the first N test images")
    parser.add_argument("--nll-samples", type=int, help="importance samples K for the test NLL (0 skips it)")
    parser.add_argument("--fid-samples", type=int, help="generated images for the test FID (0 skips it)")
    parser.add_argument("--fid-reference-count", type=int, help="real test images the FID compares against")
    parser.add_argument("--fid-every", type=int, help="validation FID every N epochs (0: never)")
    parser.add_argument("--fid-val-samples", type=int, help="generated (and real validation) images per validation FID")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model setting, e.g. --set flow_layers=6 (JSON value; a bare word is a string)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the loss and its gradient (VAEs; ~20%% faster steps on CPU after "
                             "a compile of up to a minute; results equal eager to float tolerance)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register models/datasets), e.g. --import my_models")
    return parser.parse_args(argv)


def import_plugins(argv: list[str]) -> None:
    """Imports the ``--import MODULE`` modules of ``argv`` so their registrations exist before parsing."""
    names = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--import"]
    names += [arg.partition("=")[2] for arg in argv if arg.startswith("--import=")]
    for name in names:
        if name:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ValueError(f"--import {name}: {exc}") from exc


def resolve_config(args: argparse.Namespace) -> dict:
    """Profile defaults, then model defaults, then explicit flags."""
    entry = get_model(args.model)
    fdata.get_spec(args.dataset)  # fail on a bad name before anything else
    config = {"model": args.model, "dataset": args.dataset, "profile": args.profile, "seed": args.seed}
    config.update(profiles.resolve(args.model, args.dataset, args.profile))
    config.update(entry.defaults)
    for flag in ("epochs", "batch_size", "lr", "sample_every", "train_limit", "val_limit", "test_limit", "nll_samples",
                 "fid_samples", "fid_reference_count", "fid_every", "fid_val_samples"):
        value = getattr(args, flag)
        if value is not None:
            config[flag] = value
    for item in args.set:
        name, sep, raw = item.partition("=")
        if not sep or name not in entry.defaults:
            raise ValueError(
                f"--set {item!r}: expected KEY=VALUE with KEY one of: {', '.join(sorted(entry.defaults))}"
            )
        try:
            config[name] = json.loads(raw)
        except json.JSONDecodeError:
            config[name] = raw  # a bare word, e.g. --set loss=hinge, is a string
    if args.compile:  # recorded only when set, so configs of eager runs stay as they were
        config["compile"] = True
    if config["epochs"] < 1 or config["batch_size"] < 1:
        raise ValueError("--epochs and --batch-size must be positive")
    return config


def check_resumable(saved: dict, config: dict, ckpt_path: Path) -> None:
    """Refuses to resume a checkpoint written with another config (evaluation-only keys aside).

    Raises:
      checkpoint.CheckpointError: naming every changed key with its old and new value.
    """
    changed = sorted(k for k in set(saved) | set(config) if k not in _RESUMABLE_CHANGES and saved.get(k) != config.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise checkpoint.CheckpointError(f"{ckpt_path} was written with a different config ({diffs})")


def _limit(images: torch.Tensor, n: int | None) -> torch.Tensor:
    return images if n is None else images[:n]


def parameter_table(recipe, params) -> str:
    """Per network: layers, output shapes, parameter counts."""
    lines = []
    total = 0
    for name, (template, input_shape) in recipe.networks.items():
        rows = fnn.describe(template, input_shape)
        count = fnn.count_params(params[name])
        total += count
        lines.append(f"{name}: {count:,} parameters")
        for layer, kind, shape, n in rows:
            lines.append(f"    {layer:<10} {kind:<16} {str(list(shape)):<20} {n:>10,}")
    for name, subtree in params.items():
        count = fnn.count_params(subtree)
        if name in recipe.networks or count == 0:
            continue
        total += count
        lines.append(f"{name}: {count:,} parameters")
        if isinstance(subtree, dict):
            for part, leaf in subtree.items():
                lines.append(f"    {part:<10} {'':<16} {'':<20} {fnn.count_params(leaf):>10,}")
    lines.append(f"total: {total:,} parameters")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "all":  # every (model, dataset) pair with data: experiments/sweep.py
        from experiments import sweep

        return sweep.main(argv[1:])
    try:
        import_plugins(argv)
        args = parse_args(argv)
        return _main(args)
    except (ValueError, fdata.DataError, checkpoint.CheckpointError, inception.InceptionWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.seeds is not None:  # N seeds in one process: experiments/ensemble.py
        from experiments import ensemble

        return ensemble.main(args)
    config = resolve_config(args)
    spec = fdata.get_spec(args.dataset)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}-s{args.seed}")
    ckpt_path = out / trainer.CHECKPOINT
    if ckpt_path.exists() and not args.resume:
        raise ValueError(
            f"{out} already holds a run (checkpoint.pt); pass --resume to continue it, "
            "or --out for a new directory"
        )
    if args.resume and not ckpt_path.exists():
        raise ValueError(f"--resume: no checkpoint at {ckpt_path}")

    images = {
        split: fdata.load_images(args.dataset, split, args.data_dir)
        for split in fdata.SPLITS
    }
    train_images = _limit(images["train"], config["train_limit"])
    config["total_steps"] = config["epochs"] * fdata.num_batches(train_images.shape[0], config["batch_size"])

    recipe = get_model(args.model).build(spec, config)
    trainer.compile_option(recipe, config)  # refuse --compile for models without it before any work
    eval_input = recipe.eval_input or (lambda imgs: fdata.to_eval_input(args.dataset, imgs))
    val_inputs = eval_input(_limit(images["val"], config["val_limit"]))
    test_inputs = eval_input(_limit(images["test"], config["test_limit"]))
    state = recipe.init(random.key(config["seed"]))
    start_epoch, history = 0, []
    if args.resume:
        state, meta = checkpoint.load(ckpt_path, state)
        check_resumable(meta.get("config", {}), config, ckpt_path)
        start_epoch = meta["epoch"]
        history = meta.get("history", [])
        trainer.restore_metrics(out, history)
        print(f"resuming {out} from epoch {start_epoch} (step {state.step})")
    if config.get("fid_samples") or config.get("fid_every"):
        inception.make_feature_extractor()  # fail before training, not after, if the weights are missing
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    print(f"{args.model} on {args.dataset}: {train_images.shape[0]} train / {val_inputs.shape[0]} val / "
          f"{test_inputs.shape[0]} test images, profile {config['profile']}, {config['epochs']} epochs")
    print(parameter_table(recipe, state.params))

    started = time.perf_counter()
    try:
        state = trainer.train_run(
            recipe, config, args.dataset, train_images, val_inputs, out, state, start_epoch,
            history=history, progress=not args.no_progress,
            fid_reference=_limit(images["val"], config.get("fid_val_samples")) if config.get("fid_every") else None,
        )
    except trainer.NonFiniteLossError as exc:
        kept = f"the checkpoint of epoch {exc.epoch - 1} in {ckpt_path}" if exc.epoch > 1 else "no checkpoint (it failed in the first epoch)"
        print(f"error: {exc}. Stopped; kept {kept}.", file=sys.stderr)
        return 3
    elapsed = time.perf_counter() - started

    test_key = random.fold_in(random.key(config["seed"]), 2)
    test = trainer.evaluate(recipe, state.params, test_inputs, test_key)
    if recipe.log_likelihood is not None and config.get("nll_samples"):
        k = config["nll_samples"]
        log_px = trainer.log_likelihood(recipe, state.params, test_inputs, random.fold_in(test_key, 1), k,
                                        progress=not args.no_progress)
        test["nll"] = -log_px
        if spec.likelihood == "discretized_logistic":
            test["nll_bits_per_dim"] = -log_px / (math.prod(spec.shape) * math.log(2.0))
        print(f"test NLL (IWAE, K={k}, {test_inputs.shape[0]} images): {test['nll']:.3f} nats")
    fid_results = {}
    if config.get("fid_samples"):
        reference = _limit(images["test"], config.get("fid_reference_count"))
        report = evaluation.model_fid(recipe, state.params, random.fold_in(test_key, 2), config["fid_samples"],
                                      args.dataset, "test", reference, progress=not args.no_progress)
        fid_results = report.as_results("test")
        print(f"test FID: {report.value:.2f} ({report.num_generated} samples vs {report.reference}, "
              f"{report.weights} Inception weights)")
    records = plots.read_metrics(out / trainer.METRICS)
    results = {
        "model": args.model,
        "dataset": args.dataset,
        "epochs": config["epochs"],
        "steps": state.step,
        "num_test": int(test_inputs.shape[0]),
        "nll_samples": config.get("nll_samples") if "nll" in test else None,
        **{f"test_{k}": v for k, v in test.items()},
        **fid_results,
        "final_val": {k: v for k, v in records[-1].items() if k.startswith("val_")} if records else {},
        "train_seconds_total": round(sum(r.get("epoch_seconds", 0.0) for r in records), 1),
        "this_invocation_seconds": round(elapsed, 1),
        "parameters": {name: fnn.count_params(tree) for name, tree in state.params.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    figures = analysis.write_run_figures(recipe, state.params, out, test_inputs)
    print(f"figures: {', '.join(sorted(figures))} in {out}")
    print(f"test {recipe.objective}: {test[recipe.objective]:.3f} ({test_inputs.shape[0]} images); results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
