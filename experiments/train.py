"""The one training pipeline: M >= 1 seeds of one model, trained, evaluated on the test set, pictured.

``M = 1`` steps the model's plain update; ``M > 1`` maps the same update over
the stacked members with ``torch.func.vmap`` (:mod:`fgm.ensemble`). Member
``i`` uses exactly the keys, batches and noise of the single run with seed
``seeds[i]`` (:func:`experiments.rundir.run_keys`), so the two agree bit for
bit in their inputs (tested) and to vmap's float rounding in their numbers
(batched matrix products round differently from unbatched ones). Everything
is a function of (seed, step, epoch): a run resumed from the checkpoint of
epoch ``e`` continues exactly as if never stopped.

:func:`train` checks its input (:func:`start_ranks`, :func:`check_out`,
:func:`check_compile`), reads the data (:func:`load_data`) and the state
(:func:`initial_state`), then :func:`train_loop` runs the epochs: per epoch
:func:`train_epoch` (per step :func:`step_inputs` and :func:`check_finite`),
:func:`validate`, :func:`save_sample_grid`, :func:`end_epoch` (checkpoint and
log); :func:`write_results` tests every member (:func:`test_member`) and
draws the figures (:func:`write_figures`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from experiments import config as cfg
from experiments import models, rundir
from fgm import checkpoint, distributed, ensemble, figures, layouts, random
from fgm import data as fdata
from fgm import nn as fnn
from fgm import train as ftrain
from fgm.metrics import evaluate as evaluate_lib
from fgm.metrics import inception, samples

# Steps between the loop's host reads (NaN check, progress bar): a GPU step need not wait for the host. The
# first bad step is kept on the device and read every HOST_READ_EVERY steps and at the epoch's end, before
# anything of the epoch is written.
HOST_READ_EVERY = 50


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""

    def __init__(self, step: int, epoch: int, seed: int, metrics: dict):
        self.step, self.epoch = step, epoch
        shown = {k: float(v) for k, v in metrics.items()}
        super().__init__(f"non-finite loss at step {step} (epoch {epoch}, seed {seed}): {shown}")


def evaluate_split(evaluate: Callable, params: Any, inputs: torch.Tensor, key: random.Key) -> dict[str, float]:
    """The model's own evaluation averaged over a split in batches of 1000 (``fgm.metrics.evaluate.split_means``)."""
    with torch.no_grad():
        return evaluate_lib.split_means(evaluate, params, inputs, key, 1000)


def mean_log_likelihood(experiment: models.Experiment, params, inputs, key, k: int, progress: bool = True) -> float:
    """Mean estimate of ``log p(x)`` over a split with ``k`` importance samples (nats per image), in batches of 100."""

    def log_px(p, x, key_i):
        return {"log_px": experiment.log_likelihood(p, x, key_i, k)}

    desc = f"test NLL (K={k})" if progress else None
    return evaluate_lib.split_means(log_px, params, inputs, key, 100, desc)["log_px"]


class Setup(NamedTuple):
    """What every piece of a run reads: the model, its config, where it writes, where it runs."""

    experiment: models.Experiment
    config: dict
    out: Path
    device: torch.device = torch.device("cpu")
    progress: bool = True
    data_dir: str | None = None

    @property
    def seeds(self) -> list[int]:
        """The members' seeds."""
        return self.config["seeds"]


class Data(NamedTuple):
    """A run's images: ``uint8`` on the CPU, model inputs on the run's device."""

    train: torch.Tensor  # uint8 training images (batches move to the device one at a time)
    val: torch.Tensor  # validation inputs
    test: torch.Tensor  # test inputs
    val_reference: torch.Tensor | None  # uint8 real images of the validation FID (None: no validation FID)
    real: dict[str, torch.Tensor]  # uint8: "test" the sample metrics' reference, "train" the real-data floor's


def train_loop(run: Setup, data: Data, state: Any, start_epoch: int, history: list[dict]) -> Any:
    """Trains every member from ``start_epoch`` to ``config["epochs"]``, checkpointing every epoch.

    Raises:
      NonFiniteLossError: a member's loss was NaN or infinite; nothing of the
        epoch is written, the checkpoint of the last finished epoch remains.
    """
    keys = [rundir.run_keys(s) for s in run.seeds]
    grid_noise = [run.experiment.trainer.noise(k.samples, 64, run.device) for k in keys]  # the same every epoch
    mode = "cuda_graph" if run.config.get("cuda_graph") else run.config.get("compile", False)
    step = ensemble.member_step(run.experiment.trainer, len(keys), mode)
    watches = [run.experiment.monitor() for _ in keys] if run.experiment.monitor else None
    epochs, per_epoch = run.config["epochs"], fdata.num_batches(len(data.train), models.images_per_update(run.config))
    done, disable = start_epoch * per_epoch, not run.progress
    bar = tqdm(total=epochs * per_epoch, initial=done, disable=disable, unit="step", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            started = time.perf_counter()
            state, sums, warnings = train_epoch(run, step, state, data.train, epoch, keys, watches, bar)
            train_seconds = time.perf_counter() - started
            if not distributed.is_main():  # rank 0 evaluates and writes; the others wait for its checkpoint
                distributed.barrier()
                continue
            record = validate(run, state, data, epoch, {n: v / per_epoch for n, v in sums.items()}, warnings)
            record["epoch_seconds"] = round(train_seconds, 3)
            if epoch % run.config["sample_every"] == 0 or epoch == epochs:
                save_sample_grid(run, state, grid_noise, run.out / "samples" / f"epoch_{epoch:04d}.png")
            # validation, its FID and the grid: part of the study's compute, not of the training steps
            record["validation_seconds"] = round(time.perf_counter() - started - train_seconds, 3)
            end_epoch(run, state, history, record)
            bar.write(epoch_line(run, record, train_seconds))
            distributed.barrier()  # every rank starts the next epoch once this one is on disk
    finally:
        bar.close()
    return state


def train_epoch(run: Setup, step: Callable, state: Any, images: torch.Tensor, epoch: int, keys: list, watches, bar):
    """One pass over the training images: ``(state, float64 sums of each metric [M], warnings per member)``."""
    sums, first_bad, warnings = {}, None, [[] for _ in keys]
    per_update, pin = models.images_per_update(run.config), run.device.type == "cuda"  # pinned: async copies
    orders = [fdata.batches(images, per_update, random.fold_in(k.data, epoch), pin_memory=pin) for k in keys]
    last = fdata.num_batches(len(images), per_update)
    for n, batches in enumerate(zip(*orders, strict=True), start=1):
        state, metrics = step(state, step_inputs(run, keys, batches, state.step))
        if distributed.world_size() > 1:
            metrics = distributed.all_mean(metrics)  # every rank logs, and stops on, the global values
            # per-rank BatchNorm statistics, averaged so the replicas stay equal (empty: a no-op)
            state = state._replace(model_state=distributed.all_mean(state.model_state))
        first_bad = ftrain.first_nonfinite_step(first_bad, metrics["loss"], state.step)
        for i, watch in enumerate(watches or []):
            message = watch({k: v[i] for k, v in metrics.items()}, state.step)
            if message and message not in warnings[i]:
                warnings[i].append(message)
                bar.write(f"warning (seed {run.seeds[i]}, step {state.step}): {message}")
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value.double()
        bar.update(1)
        if n % HOST_READ_EVERY == 0 or n == last:
            check_finite(first_bad, metrics, epoch, run.seeds)
            loss = float(metrics["loss"].mean())
            bar.set_postfix(epoch=f"{epoch}/{run.config['epochs']}", loss=f"{loss:.2f}", refresh=False)
    return state, sums, warnings


def step_inputs(run: Setup, keys: list, batches: tuple, step: int) -> list[tuple]:
    """Each member's update inputs for its batch (``uint8``, on the CPU) at step ``step``, on the run's device.

    Every rank draws the global batch's inputs and takes its rows: the draws do
    not depend on the number of processes.
    """
    inputs = []
    for k, batch in zip(keys, batches, strict=True):
        input_key, noise_key = rundir.step_keys(k, step)
        model_input = run.experiment.train_input(batch.to(run.device, non_blocking=True), input_key)
        inputs.append(tuple(distributed.shard(tuple(run.experiment.trainer.inputs(model_input, noise_key)))))
    return inputs


def check_finite(first_bad: torch.Tensor, metrics: dict, epoch: int, seeds: list[int]) -> None:
    """Raises :class:`NonFiniteLossError` for the member whose loss turned NaN or infinite first (one host read)."""
    if bool((first_bad >= 0).any()):
        i = int(torch.where(first_bad >= 0, first_bad, first_bad.max() + 1).argmin())
        raise NonFiniteLossError(int(first_bad[i]), epoch, seeds[i], {k: v[i] for k, v in metrics.items()})


def validate(run: Setup, state: Any, data: Data, epoch: int, train: dict, warnings: list[list[str]]) -> dict:
    """The epoch's record: per member its training means, validation metrics and FID, warnings; mean and std."""
    members = []
    variables = rundir.member_variables(run.experiment, state, len(run.seeds))
    for i, (k, params) in enumerate(zip(map(rundir.run_keys, run.seeds), variables, strict=True)):
        record = {"seed": run.seeds[i], **{f"train_{n}": float(v[i]) for n, v in train.items() if n != "loss"}}
        val = evaluate_split(run.experiment.trainer.evaluate, params, data.val, k.evaluation)
        record.update({f"val_{n}": v for n, v in val.items()})
        fid_every = run.config["fid_every"]
        if data.val_reference is not None and fid_every and (epoch % fid_every == 0 or epoch == run.config["epochs"]):
            n, dataset = run.config["fid_val_samples"], run.config["dataset"]
            args = (random.fold_in(k.evaluation, 1), n, dataset, "val", data.val_reference, False, run.device)
            record["val_fid"], record["val_fid_samples"] = samples.model_fid(run.experiment.trainer, params, *args), n
            record["val_fid_reference"] = int(data.val_reference.shape[0])
        if warnings[i]:
            record["warnings"] = warnings[i]
        members.append(record)
    mean, std = rundir.mean_std(members)
    return dict(epoch=epoch, step=state.step, members=members, mean=mean, std=std)


def save_sample_grid(run: Setup, state: Any, grid_noise: list[torch.Tensor], path: Path) -> None:
    """Every member's samples of the fixed latents, in whole rows of 8 (64 for one member), as one PNG."""
    per_member = 64 if len(run.seeds) == 1 else 8 * max(1, 8 // len(run.seeds))
    with torch.no_grad():
        grids = [
            run.experiment.trainer.generate(p, z[:per_member])
            for p, z in zip(rundir.member_variables(run.experiment, state, len(run.seeds)), grid_noise, strict=True)
        ]
    figures.save_grid(torch.cat(grids), path)


def end_epoch(run: Setup, state: Any, history: list[dict], record: dict) -> None:
    """Appends the epoch's record and writes the checkpoint, ``metrics.jsonl`` and the curves."""
    # The checkpoint carries the whole log, so the log can be rebuilt after a crash between the writes.
    history.append(record)
    meta = {"epoch": record["epoch"], "config": run.config, "history": history}
    checkpoint.save(run.out / rundir.CHECKPOINT, state, meta)
    rundir.write_metrics(run.out, history)
    figures.plot_curves(history, run.out / "curves.png", title=run.out.name)


def epoch_line(run: Setup, record: dict, train_seconds: float) -> str:
    """The epoch's log line: the objective's training mean and validation value, the training time."""
    objective, mean, seeds = run.experiment.objective, record["mean"], run.seeds
    line = f"epoch {record['epoch']}/{run.config['epochs']}  train {objective} "
    line += f"{mean.get('train_' + objective, float('nan')):.3f}"
    if f"val_{objective}" in mean:
        line += f"  val {mean['val_' + objective]:.3f}"
    return line + f"  ({train_seconds:.1f}s{f', {len(seeds)} seeds' if len(seeds) > 1 else ''})"


def test_member(run: Setup, params: Any, keys: rundir.RunKeys, data: Data) -> dict:
    """One member's test metrics: its own evaluation, the IWAE NLL and the sample metrics (each with its N and K).

    Everything runs on the run's device (``params`` are there too); the
    sample metrics compare with ``data.real`` (:func:`fgm.metrics.samples.sample_metrics`).
    """
    config, experiment = run.config, run.experiment
    spec = fdata.get_spec(config["dataset"])
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    test = evaluate_split(experiment.trainer.evaluate, params, data.test, keys.test)
    seconds["test_objective"] = time.perf_counter() - started
    if experiment.log_likelihood is not None and config["nll_samples"]:
        started = time.perf_counter()
        key, k = random.fold_in(keys.test, 1), config["nll_samples"]
        log_px = mean_log_likelihood(experiment, params, data.test, key, k, progress=run.progress)
        seconds["nll"] = time.perf_counter() - started
        test["nll"] = -log_px
        if spec.likelihood == "discretized_logistic":
            test["nll_bits_per_dim"] = -log_px / (math.prod(spec.shape) * math.log(2.0))
    results = {f"test_{k}": v for k, v in test.items()}
    if config["fid_samples"]:
        key, n, dataset = random.fold_in(keys.test, 2), config["fid_samples"], config["dataset"]
        real = (data.real["test"], data.real["train"], config["classifier_metrics"], run.data_dir, run.progress)
        results |= samples.sample_metrics(experiment.trainer, params, key, n, dataset, *real, run.device, seconds)
    results["eval_seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return results


def limit(images: torch.Tensor, n: int | None) -> torch.Tensor:
    return images if n is None else images[:n]


def train(
    config: dict,
    out: Path,
    resume: bool = False,
    data_dir: str | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> int:
    """Trains, tests and pictures a run on ``device``; returns the exit code (0 done, 3 non-finite loss).

    A run may be resumed on another device than the one that started it
    (the checkpoint loads anywhere); its numbers then differ by the
    devices' float rounding, not by their random draws.

    Started by ``torchrun --nproc-per-node N`` it trains data-parallel
    (:mod:`fgm.distributed`): each rank takes its rows of every global
    batch, the gradients are averaged inside the update, and rank 0 alone
    evaluates and writes. On CUDA rank ``r`` uses ``cuda:LOCAL_RANK``.

    Raises:
      ValueError, fgm.data.DataError, fgm.checkpoint.CheckpointError,
      fgm.metrics.inception.InceptionWeightsError: bad input, before any training.
    """
    device = start_ranks(config, torch.device(device))
    check_out(out, resume)
    images = {split: fdata.load_images(config["dataset"], split, data_dir) for split in fdata.SPLITS}
    train_images = limit(images["train"], config["train_limit"])
    per_epoch = fdata.num_batches(train_images.shape[0], models.images_per_update(config))
    config["total_steps"] = config["epochs"] * per_epoch
    run = Setup(models.build(config), config, out, device, progress and distributed.is_main(), data_dir)
    check_compile(run)
    if device.type == "cuda":
        # cuDNN's default TF32 convolutions round to a 10-bit mantissa (~1e-3 relative): full float32 keeps a GPU
        # run within float rounding of a CPU run, at no measured cost for these networks (docs/devices.md)
        torch.backends.cudnn.allow_tf32 = False
    data = load_data(run, images, train_images)
    state, start_epoch, history = initial_state(run, resume)
    if config["fid_samples"] or config["fid_every"]:
        inception.make_feature_extractor()  # fail before training, not after, if the weights are missing
    if distributed.is_main():
        rundir.write_json(out / rundir.CONFIG, config)
        announce(run, data, state)
    started = time.perf_counter()
    try:
        state = train_loop(run, data, state, start_epoch, history)
    except NonFiniteLossError as exc:
        kept = (
            f"the checkpoint of epoch {exc.epoch - 1} in {out / rundir.CHECKPOINT}"
            if exc.epoch > 1
            else "no checkpoint"
        )
        print(f"error: {exc}. Stopped; kept {kept}.", file=sys.stderr)
        return 3
    if distributed.is_main():
        write_results(run, state, data, time.perf_counter() - started)
    return 0


def start_ranks(config: dict, device: torch.device) -> torch.device:
    """Joins the process group of a ``torchrun`` start (if any); the device of this rank."""
    if distributed.initialize(device) > 1:
        if len(config["seeds"]) > 1:
            raise ValueError("--seeds N trains a vmapped ensemble in one process; under torchrun train one seed a run")
        if config["batch_size"] % distributed.world_size():
            raise ValueError(
                f"batch size {config['batch_size']} is not a multiple of the {distributed.world_size()} processes"
            )
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def check_out(out: Path, resume: bool) -> None:
    """Refuses to overwrite a run, and to resume one that is not there."""
    ckpt_path = out / rundir.CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise ValueError(
            f"{out} already holds a run (checkpoint.pt); pass --resume to continue it, or --out for a new directory"
        )
    if resume and not ckpt_path.exists():
        raise ValueError(f"--resume: no checkpoint at {ckpt_path}")


def check_compile(run: Setup) -> None:
    """Refuses ``--compile`` for models (or seed ensembles of models) without it, and ``cuda_graph`` off a
    single-seed, uncompiled CUDA run, before any work."""
    if run.config.get("cuda_graph"):
        if run.device.type != "cuda" or len(run.seeds) > 1 or run.config.get("compile"):
            raise ValueError(
                f"cuda_graph=true needs a CUDA device, one seed and no --compile (device {run.device}, "
                f"{len(run.seeds)} seed(s), compile {bool(run.config.get('compile'))})"
            )
    if run.config.get("compile"):
        stacked = {"stacked": True} if len(run.seeds) > 1 else {}
        try:
            run.experiment.trainer.make_update(compile=True, **stacked)
        except TypeError as error:  # a registered model's make_update without the keyword
            raise ValueError(
                f"--compile{' with --seeds N' if stacked else ''} is not offered by this model: {error}"
            ) from error


def load_data(run: Setup, images: dict[str, torch.Tensor], train_images: torch.Tensor) -> Data:
    """The run's :class:`Data` from the splits' ``uint8`` images, limited as the config says."""
    config, to_input = run.config, run.experiment.eval_input
    val_reference = limit(images["val"], config["fid_val_reference_count"]) if config["fid_every"] else None
    real = {
        "test": limit(images["test"], config["fid_reference_count"]),
        "train": train_images[: config["fid_samples"]],
    }
    val = to_input(limit(images["val"], config["val_limit"])).to(run.device)
    return Data(
        train_images, val, to_input(limit(images["test"], config["test_limit"])).to(run.device), val_reference, real
    )


def initial_state(run: Setup, resume: bool) -> tuple[Any, int, list[dict]]:
    """``(state, epochs done, history)``: fresh, or the checkpoint's when resuming (refused if the config changed)."""
    state = rundir.state_template(run.experiment, run.config, run.device)
    if not resume:
        return state, 0, []
    ckpt_path = run.out / rundir.CHECKPOINT
    saved = rundir.read_config(run.out)  # a corrupt config.json is refused
    state, meta = layouts.load_state(ckpt_path, state)
    changed = cfg.changed_settings(rundir.with_later_settings(meta.get("config", saved)), run.config)
    if changed:
        diffs = ", ".join(f"{k}: {meta['config'].get(k)!r} -> {run.config.get(k)!r}" for k in changed)
        raise checkpoint.CheckpointError(f"{ckpt_path} was written with a different config ({diffs})")
    if distributed.is_main():
        rundir.write_metrics(run.out, meta.get("history", []))
        print(f"resuming {run.out} from epoch {meta['epoch']} (step {state.step})")
    return state, meta["epoch"], meta.get("history", [])


def announce(run: Setup, data: Data, state: Any) -> None:
    """Prints what is trained on what, where, and the parameter table."""
    config, seeds = run.config, run.seeds
    ranks = f" × {distributed.world_size()} processes" if distributed.world_size() > 1 else ""
    print(
        f"{config['model']} on {config['dataset']}, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}: {data.train.shape[0]} train / {data.val.shape[0]} val / "
        f"{data.test.shape[0]} test images, profile {config['profile']}, {config['epochs']} epochs, "
        f"on {run.device}{ranks}"
    )
    print(fnn.parameter_table(rundir.member_params(state, len(seeds))[0], run.experiment.networks))


def write_results(run: Setup, state: Any, data: Data, elapsed: float) -> dict:
    """Tests every member (:func:`test_member`), writes ``results.json`` and the figures; returns the results."""
    config, seeds, out = run.config, run.seeds, run.out
    history = rundir.read_metrics(out)
    members = []
    variables = rundir.member_variables(run.experiment, state, len(seeds))
    for i, (seed, params) in enumerate(zip(seeds, variables, strict=True)):
        test = test_member(run, params, rundir.run_keys(seed), data)
        final_val = {k: v for k, v in history[-1]["members"][i].items() if k.startswith("val_")} if history else {}
        members.append({"seed": seed, **test, "final_val": final_val})
    write_figures(run.experiment, config, out, variables, data.test)
    mean, std = rundir.mean_std(members)
    val_mean, val_std = rundir.mean_std([m["final_val"] for m in members])
    results = {
        "model": config["model"],
        "dataset": config["dataset"],
        "profile": config["profile"],
        "seeds": seeds,
        "epochs": config["epochs"],
        "steps": state.step,
        "num_test": int(data.test.shape[0]),
        "nll_samples": config["nll_samples"] if "test_nll" in mean else None,
        "members": members,
        "mean": {**mean, "final_val": val_mean},
        "std": {**std, "final_val": val_std},
        "std_definition": "sample standard deviation over members (ddof=1)",
        # wall time of the whole run: M seeds trained together share it
        "train_seconds_total": round(sum(r.get("epoch_seconds", 0.0) for r in history), 1),
        "members_trained_together": len(seeds),
        "this_invocation_seconds": round(elapsed, 1),
        "code": rundir.code_version(),  # the commit that tested (and, unless resumed across commits, trained) it
        "device": str(data.test.device),  # where it was tested (a resumed run may have trained elsewhere)
        "parameters": {
            name: fnn.count_params(tree) for name, tree in rundir.member_params(state, len(seeds))[0].items()
        },
    }
    rundir.write_json(out / rundir.RESULTS, results)
    key, objective = f"test_{run.experiment.objective}", run.experiment.objective
    spread = f" ± {std[key]:.3f}" if std.get(key) is not None else ""
    print(
        f"test {objective}: {mean[key]:.3f}{spread} ({data.test.shape[0]} images"
        f"{f', mean ± std over {len(seeds)} seeds' if len(seeds) > 1 else ''}); results in {out}"
    )
    return results


def write_figures(
    experiment: models.Experiment, config: dict, out: Path, params: list, test_inputs: torch.Tensor
) -> None:
    """Curves, each member's interpolations (``interpolations/[s<seed>/]``) and the sample progression."""
    seeds = config["seeds"]
    figures.plot_curves(rundir.read_metrics(out), out / "curves.png", title=out.name)
    for seed, member in zip(seeds, params, strict=True):
        folder = out / rundir.INTERPOLATIONS / (f"s{seed}" if len(seeds) > 1 else "")
        figures.write_interpolations(experiment, member, folder, test_inputs, config["interpolation_points"])
    figures.write_progression(out)


def rewrite_figures(path: Path, data_dir: str | None = None, device: torch.device | str = "cpu") -> None:
    """``python -m experiments.run figures RUN``: the figures of a run, from its checkpoint."""
    run = rundir.load_run(path, device)
    test = limit(fdata.load_images(run.config["dataset"], "test", data_dir), run.config["test_limit"])
    write_figures(run.experiment, run.config, run.path, run.params, run.experiment.eval_input(test).to(device))
