"""The epoch loop behind ``python -m experiments.run``.

Keys: the run's root key is ``fgm.random.key(seed)``. The state's key drives
the steps (``fold_in(state.key, step)`` per step, split into a binarisation
key and the step's own noise key), the epoch order comes from
``fold_in(data_key, epoch)``, and evaluation and sample grids use fixed keys.
Everything is a function of (seed, step, epoch), so a run resumed from the
checkpoint of epoch ``e`` continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path
import torch
from tqdm.auto import tqdm

from fgm import checkpoint, random, train
from fgm import data as fdata
from experiments import evaluation, plots
from experiments.registry import Recipe

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""

    def __init__(self, step: int, epoch: int, metrics: dict):
        self.step, self.epoch = step, epoch
        shown = {k: float(v) for k, v in metrics.items()}
        super().__init__(f"non-finite loss at step {step} (epoch {epoch}): {shown}")


def evaluate(
    recipe: Recipe, params, inputs: torch.Tensor, key: random.Key, batch_size: int = 1000
) -> dict[str, float]:
    """Averages ``recipe.evaluate`` over a whole split (fixed key per batch index)."""
    totals: dict[str, float] = {}
    n = inputs.shape[0]
    with torch.no_grad():
        for i, start in enumerate(range(0, n, batch_size)):
            values = recipe.evaluate(params, inputs[start : start + batch_size], random.fold_in(key, i))
            for name, v in values.items():
                totals[name] = totals.get(name, 0.0) + float(v.double().sum())
    return {name: total / n for name, total in totals.items()}


def log_likelihood(
    recipe: Recipe, params, inputs: torch.Tensor, key: random.Key, num_samples: int,
    batch_size: int = 100, progress: bool = True,
) -> float:
    """Mean ``recipe.log_likelihood`` over a split (nats per image), with a progress bar."""
    total = 0.0
    n = inputs.shape[0]
    starts = range(0, n, batch_size)
    for i, start in enumerate(tqdm(starts, disable=not progress, desc=f"test NLL (K={num_samples})", unit="batch")):
        values = recipe.log_likelihood(params, inputs[start : start + batch_size], random.fold_in(key, i), num_samples)
        total += float(values.double().sum())
    return total / n


def compile_option(recipe: Recipe, config: dict) -> dict:
    """``{"compile": True}`` for ``recipe.make_update`` when the run asks for it (``--compile``).

    Raises:
      ValueError: the run asks for it and the model's update cannot be compiled.
    """
    if not config.get("compile"):
        return {}
    if recipe.make_update is None or "compile" not in inspect.signature(recipe.make_update).parameters:
        raise ValueError(f"--compile is not offered for {config.get('model', 'this model')} (VAEs only)")
    return {"compile": True}


def train_run(
    recipe: Recipe,
    config: dict,
    dataset: str,
    train_images: torch.Tensor,
    val_inputs: torch.Tensor,
    out: Path,
    state: train.TrainState,
    start_epoch: int,
    history: list[dict] | None = None,
    progress: bool = True,
    fid_reference: torch.Tensor | None = None,
) -> train.TrainState:
    """Trains from ``start_epoch`` to ``config["epochs"]``, checkpointing every epoch.

    Args:
      recipe: the model's functions.
      config: the resolved run config (``epochs``, ``batch_size``, ``seed``...).
      dataset: dataset name (selects the input transform).
      train_images: ``uint8 [N, C, H, W]``.
      val_inputs: the validation set, already in model-input form.
      out: the run directory.
      state: the state at the end of ``start_epoch`` (step 0 for a new run).
      start_epoch: number of epochs already done.
      history: the per-epoch records of those epochs (from the checkpoint).
      progress: show a progress bar with ETA.
      fid_reference: ``uint8`` validation images; with ``config["fid_every"]``
        set, every that many epochs (and at the last) the record gets
        ``val_fid``: ``config["fid_val_samples"]`` samples against these.

    Returns:
      The final state.

    Raises:
      NonFiniteLossError: a step's loss was NaN or infinite. Nothing of that
        epoch is written; the checkpoint of the last finished epoch remains.
    """
    root = random.key(config["seed"])
    data_key, eval_key, sample_key = random.split(random.fold_in(root, 1), 3)
    grid_noise = recipe.noise(sample_key, 64)  # the same 64 latents every epoch
    steps_per_epoch = fdata.num_batches(train_images.shape[0], config["batch_size"])
    epochs = config["epochs"]
    history = list(history or [])
    watch = recipe.monitor() if recipe.monitor else None
    # The loop never touches a state again once it has stepped it, so the update
    # may reuse its buffers (donate): the same numbers bit for bit, without
    # allocating fresh optimizer buffers every step (BENCHMARKS.md).
    step = (train.step_from_update(recipe.make_update(donate=True, **compile_option(recipe, config)), recipe.make_inputs)
            if recipe.make_update is not None and recipe.make_inputs is not None else recipe.step)
    prepare = recipe.train_input or (lambda images, key: fdata.to_model_input(dataset, images, key))
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            started = time.perf_counter()
            sums: dict[str, float] = {}
            warnings: list[str] = []
            for batch in fdata.batches(train_images, config["batch_size"], random.fold_in(data_key, epoch)):
                binarize_key, step_noise_key = random.split(train.step_key(state))
                x = prepare(batch, binarize_key)
                state, metrics = step(state, x, step_noise_key)
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    raise NonFiniteLossError(state.step, epoch, metrics)
                message = watch(metrics, state.step) if watch else None
                if message and message not in warnings:
                    warnings.append(message)
                    bar.write(f"warning (step {state.step}): {message}")
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.2f}", refresh=False)
            train_seconds = time.perf_counter() - started
            record = {"epoch": epoch, "step": state.step}
            record.update({f"train_{k}": v / steps_per_epoch for k, v in sums.items() if k != "loss"})
            val = evaluate(recipe, state.params, val_inputs, eval_key)
            record.update({f"val_{k}": v for k, v in val.items()})
            record["epoch_seconds"] = round(train_seconds, 3)
            fid_every = config.get("fid_every")
            if fid_reference is not None and fid_every and (epoch % fid_every == 0 or epoch == epochs):
                report = evaluation.model_fid(
                    recipe, state.params, random.fold_in(eval_key, 1), config["fid_val_samples"],
                    dataset, "val", fid_reference, progress=False,
                )
                record["val_fid"] = report.value
                record["val_fid_samples"] = report.num_generated
            if warnings:
                record["warnings"] = warnings
            if epoch % config["sample_every"] == 0 or epoch == epochs:
                with torch.no_grad():
                    plots.save_grid(recipe.generate(state.params, grid_noise), out / "samples" / f"epoch_{epoch:04d}.png")
            # The checkpoint carries the whole log, so the log can be rebuilt
            # from it after a crash between the two writes (see restore_metrics).
            history.append(record)
            checkpoint.save(out / CHECKPOINT, state, {"epoch": epoch, "config": config, "history": history})
            with open(out / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            plots.plot_curves(history, out / "curves.png", title=out.name)
            val_obj = record.get(f"val_{recipe.objective}")
            log_line = f"epoch {epoch}/{epochs}  train {recipe.objective} {record.get('train_' + recipe.objective, float('nan')):.3f}"
            if val_obj is not None:
                log_line += f"  val {val_obj:.3f}"
            bar.write(log_line + f"  ({train_seconds:.1f}s)")
    finally:
        bar.close()
    return state


def restore_metrics(out: Path, history: list[dict]) -> None:
    """Rewrites ``metrics.jsonl`` from a checkpoint's history.

    Lines written after the checkpoint (a crash mid-epoch) are dropped, and
    lines lost between checkpointing and logging are recovered.
    """
    with open(out / METRICS, "w") as f:
        for record in history:
            f.write(json.dumps(record) + "\n")
