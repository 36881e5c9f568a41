"""``python -m experiments.run MODEL DATASET --seeds N``: N seeds trained at once.

The members are the seeds ``seed, seed + 1, ..., seed + N - 1`` (``--seed``
gives the first). Their states are stacked (``fgm.ensemble``) and one
``torch.func.vmap``-ed update trains all of them per step, each on its own
batch and noise. Member ``i`` uses exactly the keys of the single run
``python -m experiments.run MODEL DATASET --seed s_i`` (see
``experiments.trainer``): the root key ``key(s_i)``; ``data_key, eval_key,
sample_key = split(fold_in(root, 1), 3)``; per step ``split(fold_in(root,
step))`` into the binarisation and noise keys; the epoch order from
``fold_in(data_key, epoch)``; the test key ``fold_in(root, 2)``. So each
member's metrics equal that single run's to floating-point tolerance (the
batched matrix products of ``vmap`` round differently from single ones,
and float32 training amplifies such differences slowly over many steps).

Outputs go to ``runs/<model>-<dataset>-s<seed>x<N>/``:

* ``config.json``: the resolved config, with ``seeds``;
* ``metrics.jsonl``: one line per epoch, ``{"epoch", "step", "members":
  [{"seed", "train_*", "val_*"}, ...], "mean": {...}, "std": {...},
  "epoch_seconds"}``;
* ``checkpoint.pt``: the stacked :class:`fgm.ensemble.EnsembleState`
  (atomic, every epoch; ``--resume`` continues from it);
* ``curves.png``: the members' mean curves; ``samples/epoch_*.png``: rows of
  samples, one band per member (same latents as the single runs' grids);
* ``results.json``: each member's test metrics (as a single run's
  ``results.json``) and their mean and standard deviation over members.

The standard deviation is the sample one (``ddof = 1``), the spread one
would expect between two seeds; it is ``null`` for a single member.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from experiments import plots, trainer
from experiments.registry import Recipe, get_model
from fgm import checkpoint, ensemble, random, train
from fgm import data as fdata
from fgm import nn as fnn


class MemberKeys(NamedTuple):
    """The keys of one member, derived from its seed as a single run derives them."""

    seed: int
    root: random.Key
    data: random.Key
    eval: random.Key
    sample: random.Key
    test: random.Key


def member_keys(seed: int) -> MemberKeys:
    """``root = key(seed)``; ``data, eval, sample = split(fold_in(root, 1), 3)``; ``test = fold_in(root, 2)``."""
    root = random.key(seed)
    data, eval_key, sample = random.split(random.fold_in(root, 1), 3)
    return MemberKeys(seed, root, data, eval_key, sample, random.fold_in(root, 2))


def run_dir(args: argparse.Namespace) -> Path:
    """``--out``, else ``runs/<model>-<dataset>-s<seed>x<N>``."""
    return Path(args.out or f"runs/{args.model}-{args.dataset}-s{args.seed}x{args.seeds}")


def summarize(values: list[float]) -> tuple[float, float | None]:
    """``(mean, sample standard deviation)`` of the members' values (std ``None`` for one member)."""
    mean = math.fsum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _mean_std(members: list[dict], keys) -> tuple[dict, dict]:
    mean, std = {}, {}
    for k in keys:
        values = [m[k] for m in members if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)]
        if len(values) == len(members):
            mean[k], std[k] = summarize([float(v) for v in values])
    return mean, std


def main(args: argparse.Namespace) -> int:
    """Runs an ensemble from parsed ``experiments.run`` arguments (``args.seeds`` set)."""
    from experiments import run  # the single-run CLI owns the config and the table

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    config = run.resolve_config(args)
    if config.get("compile"):
        raise ValueError("--compile is not offered with --seeds (the vmapped step runs eagerly)")
    seeds = [args.seed + i for i in range(args.seeds)]
    config["seeds"] = seeds
    spec = fdata.get_spec(args.dataset)
    out = run_dir(args)
    ckpt_path = out / trainer.CHECKPOINT
    if ckpt_path.exists() and not args.resume:
        raise ValueError(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it, or --out for a new directory")
    if args.resume and not ckpt_path.exists():
        raise ValueError(f"--resume: no checkpoint at {ckpt_path}")

    images = {split: fdata.load_images(args.dataset, split, args.data_dir) for split in fdata.SPLITS}
    train_images = run._limit(images["train"], config["train_limit"])
    config["total_steps"] = config["epochs"] * fdata.num_batches(train_images.shape[0], config["batch_size"])
    recipe = get_model(args.model).build(spec, config)
    if recipe.make_update is None or recipe.make_inputs is None:
        raise ValueError(f"{args.model} has no vmappable update (Recipe.make_update), so it cannot train --seeds")
    # The loop owns its state and drops the old one each step: donation is safe.
    update = recipe.make_update(backend="func", donate=True)
    eval_input = recipe.eval_input or (lambda imgs: fdata.to_eval_input(args.dataset, imgs))
    val_inputs = eval_input(run._limit(images["val"], config["val_limit"]))
    test_inputs = eval_input(run._limit(images["test"], config["test_limit"]))

    state = ensemble.stack_states([recipe.init(random.key(s)) for s in seeds])
    start_epoch, history = 0, []
    if args.resume:
        state, meta = checkpoint.load(ckpt_path, state)
        run.check_resumable(meta.get("config", {}), config, ckpt_path)
        start_epoch, history = meta["epoch"], meta.get("history", [])
        trainer.restore_metrics(out, history)
        print(f"resuming {out} from epoch {start_epoch} (step {state.step})")
    extractor = None
    if config.get("fid_samples") or config.get("fid_every"):
        from fgm.metrics import inception

        # made once for all members; and it fails before training, not after, if the weights are missing
        extractor = inception.make_feature_extractor()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    print(f"{args.model} on {args.dataset}, {len(seeds)} seeds {seeds} trained together: "
          f"{train_images.shape[0]} train / {val_inputs.shape[0]} val / {test_inputs.shape[0]} test images, "
          f"profile {config['profile']}, {config['epochs']} epochs")
    print("per member:\n" + run.parameter_table(recipe, ensemble.member(state.params, 0)))

    started = time.perf_counter()
    try:
        state = train_ensemble(
            recipe, update, config, args.dataset, train_images, val_inputs, out, state, start_epoch, history,
            progress=not args.no_progress,
            fid_reference=run._limit(images["val"], config.get("fid_val_samples")) if config.get("fid_every") else None,
            extractor=extractor,
        )
    except trainer.NonFiniteLossError as exc:
        kept = f"the checkpoint of epoch {exc.epoch - 1} in {ckpt_path}" if exc.epoch > 1 else "no checkpoint (it failed in the first epoch)"
        print(f"error: {exc}. Stopped; kept {kept}.", file=sys.stderr)
        return 3
    elapsed = time.perf_counter() - started

    records = plots.read_metrics(out / trainer.METRICS)
    members = []
    for i, (seed, member_state) in enumerate(zip(seeds, ensemble.unstack_states(state))):
        test = test_member(recipe, config, args.dataset, spec, member_state.params, member_keys(seed),
                           test_inputs, images, progress=not args.no_progress, extractor=extractor)
        members.append({
            "seed": seed,
            **test,
            "final_val": {k: v for k, v in records[-1]["members"][i].items() if k.startswith("val_")} if records else {},
        })
    test_keys = [k for k in members[0] if k.startswith("test_")]
    mean, std = _mean_std(members, test_keys)
    val_keys = list(members[0]["final_val"])
    val_mean, val_std = _mean_std([m["final_val"] for m in members], val_keys)
    results = {
        "model": args.model,
        "dataset": args.dataset,
        "seeds": seeds,
        "epochs": config["epochs"],
        "steps": state.step,
        "num_test": int(test_inputs.shape[0]),
        "nll_samples": config.get("nll_samples") if "test_nll" in mean else None,
        "members": members,
        "mean": {**mean, "final_val": val_mean},
        "std": {**std, "final_val": val_std},
        "std_definition": "sample standard deviation over members (ddof=1)",
        "train_seconds_total": round(sum(r.get("epoch_seconds", 0.0) for r in records), 1),
        "this_invocation_seconds": round(elapsed, 1),
        "parameters_per_member": {name: fnn.count_params(tree) for name, tree in ensemble.member(state.params, 0).items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    key = f"test_{recipe.objective}"
    spread = f" ± {std[key]:.3f}" if std.get(key) is not None else ""
    print(f"test {recipe.objective}: {mean[key]:.3f}{spread} (mean ± std over {len(seeds)} seeds; "
          f"members {', '.join(f'{m[key]:.3f}' for m in members)}); results in {out}")
    return 0


def train_ensemble(
    recipe: Recipe,
    update: train.UpdateFn,
    config: dict,
    dataset: str,
    train_images: torch.Tensor,
    val_inputs: torch.Tensor,
    out: Path,
    state: ensemble.EnsembleState,
    start_epoch: int,
    history: list[dict],
    progress: bool = True,
    fid_reference: torch.Tensor | None = None,
    extractor=None,
) -> ensemble.EnsembleState:
    """Trains all members from ``start_epoch`` to ``config["epochs"]``, checkpointing every epoch.

    The epoch loop of :func:`experiments.trainer.train_run`, with one batch,
    one binarisation key and one noise key per member per step.

    Args:
      recipe: the model's functions.
      update: the recipe's update for one member (vmappable).
      config: the resolved config (``seeds``, ``epochs``, ``batch_size``...).
      dataset: dataset name (selects the input transform).
      train_images: ``uint8 [N, C, H, W]``.
      val_inputs: the validation set in model-input form.
      out: the run directory.
      state: the stacked state at the end of ``start_epoch``.
      start_epoch: epochs already done.
      history: the per-epoch records of those epochs.
      progress: show a progress bar.
      fid_reference: ``uint8`` validation images for ``config["fid_every"]``.
      extractor: the FID feature extractor (made once by the caller).

    Returns:
      The final stacked state.

    Raises:
      trainer.NonFiniteLossError: a member's loss was NaN or infinite; the
        last epoch's checkpoint remains.
    """
    seeds = config["seeds"]
    keys = [member_keys(s) for s in seeds]
    grid_noise = [recipe.noise(k.sample, 64) for k in keys]  # the single runs' grid latents
    per_member = 8 * max(1, 8 // len(seeds))  # whole rows of 8 per member
    step_fn = ensemble.make_ensemble_step(update, recipe.make_inputs)
    prepare = recipe.train_input or (lambda images, key: fdata.to_model_input(dataset, images, key))
    steps_per_epoch = fdata.num_batches(train_images.shape[0], config["batch_size"])
    epochs = config["epochs"]
    history = list(history)
    watches = [recipe.monitor() for _ in seeds] if recipe.monitor else None
    bar = tqdm(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, disable=not progress,
               unit="step", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            started = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            warnings: list[list[str]] = [[] for _ in seeds]
            orders = [fdata.batches(train_images, config["batch_size"], random.fold_in(k.data, epoch)) for k in keys]
            for batches in zip(*orders):
                step_keys = [random.split(k) for k in ensemble.step_keys(state)]
                inputs = [prepare(b, binarize_key) for b, (binarize_key, _) in zip(batches, step_keys)]
                state, metrics = step_fn(state, inputs, [noise_key for _, noise_key in step_keys])
                losses = metrics["loss"]
                if not bool(torch.isfinite(losses).all()):
                    i = int((~torch.isfinite(losses)).nonzero()[0, 0])
                    raise trainer.NonFiniteLossError(
                        state.step, epoch, {"member_seed": seeds[i], **{k: v[i] for k, v in metrics.items()}}
                    )
                if watches:
                    for i, watch in enumerate(watches):
                        message = watch({k: v[i] for k, v in metrics.items()}, state.step)
                        if message and message not in warnings[i]:
                            warnings[i].append(message)
                            bar.write(f"warning (seed {seeds[i]}, step {state.step}): {message}")
                for name, value in metrics.items():
                    # float64 sums, as the single run's Python floats
                    sums[name] = sums.get(name, 0.0) + value.double()
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{float(losses.mean()):.2f}", refresh=False)
            train_seconds = time.perf_counter() - started

            members = []
            for i, (k, params) in enumerate(zip(keys, ensemble.unstack(state.params))):
                record = {"seed": k.seed}
                record.update({f"train_{n}": float(v[i]) / steps_per_epoch for n, v in sums.items() if n != "loss"})
                record.update({f"val_{n}": v for n, v in trainer.evaluate(recipe, params, val_inputs, k.eval).items()})
                fid_every = config.get("fid_every")
                if fid_reference is not None and fid_every and (epoch % fid_every == 0 or epoch == epochs):
                    from experiments import evaluation

                    report = evaluation.model_fid(recipe, params, random.fold_in(k.eval, 1), config["fid_val_samples"],
                                                  dataset, "val", fid_reference, extractor=extractor, progress=False)
                    record["val_fid"] = report.value
                    record["val_fid_samples"] = report.num_generated
                if warnings[i]:
                    record["warnings"] = warnings[i]
                members.append(record)
            names = [n for n in members[0] if n.startswith(("train_", "val_"))]
            mean, std = _mean_std(members, names)
            record = {"epoch": epoch, "step": state.step, "members": members, "mean": mean, "std": std,
                      "epoch_seconds": round(train_seconds, 3)}
            if epoch % config["sample_every"] == 0 or epoch == epochs:
                with torch.no_grad():
                    grids = [recipe.generate(p, z[:per_member]) for p, z in zip(ensemble.unstack(state.params), grid_noise)]
                plots.save_grid(torch.cat(grids), out / "samples" / f"epoch_{epoch:04d}.png")
            history.append(record)
            checkpoint.save(out / trainer.CHECKPOINT, state, {"epoch": epoch, "config": config, "history": history})
            with open(out / trainer.METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            plots.plot_curves([{"epoch": r["epoch"], **r["mean"]} for r in history], out / "curves.png",
                              title=f"{out.name} (mean of {len(seeds)} seeds)")
            objective = f"val_{recipe.objective}"
            line = f"epoch {epoch}/{epochs}  train {recipe.objective} {mean.get('train_' + recipe.objective, float('nan')):.3f}"
            if objective in mean:
                spread = f" ± {std[objective]:.3f}" if std.get(objective) is not None else ""
                line += f"  val {mean[objective]:.3f}{spread}"
            bar.write(line + f"  ({train_seconds:.1f}s, {len(seeds)} seeds)")
    finally:
        bar.close()
    return state


def test_member(recipe: Recipe, config: dict, dataset: str, spec, params, keys: MemberKeys,
                test_inputs: torch.Tensor, images: dict, progress: bool = True, extractor=None) -> dict:
    """One member's test metrics, with the keys and settings of the single run (``experiments.run``)."""
    from experiments import run

    test = trainer.evaluate(recipe, params, test_inputs, keys.test)
    if recipe.log_likelihood is not None and config.get("nll_samples"):
        k = config["nll_samples"]
        log_px = trainer.log_likelihood(recipe, params, test_inputs, random.fold_in(keys.test, 1), k, progress=progress)
        test["nll"] = -log_px
        if spec.likelihood == "discretized_logistic":
            test["nll_bits_per_dim"] = -log_px / (math.prod(spec.shape) * math.log(2.0))
    results = {f"test_{k}": v for k, v in test.items()}
    if config.get("fid_samples"):
        from experiments import evaluation

        reference = run._limit(images["test"], config.get("fid_reference_count"))
        report = evaluation.model_fid(recipe, params, random.fold_in(keys.test, 2), config["fid_samples"],
                                      dataset, "test", reference, extractor=extractor, progress=progress)
        results.update(report.as_results("test"))
    return results
