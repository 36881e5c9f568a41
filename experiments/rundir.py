"""A run directory: its paths, its files, its keys, and loading it back for any number of members.

Layout of ``runs/<model>-<dataset>-s<seed>`` (``...-s<seed>x<M>`` for M seeds trained together)::

    config.json        the resolved config (checked on every read)
    metrics.jsonl      one line per epoch: {"epoch", "step", "members": [{"seed", "train_*", "val_*"}], "mean", "std"}
    checkpoint.pt      the whole state (M = 1: the model's state; M > 1: the stacked fgm.ensemble.EnsembleState)
    results.json       test metrics: {"members": [{"seed", "test_*", ...}], "mean", "std", ...}
    curves.png, samples/epoch_*.png, samples/progression.{gif,png}, interpolations/[s<seed>/]*.png

Keys (:func:`run_keys`): every purpose has its own key, split from the seed's
root, and the step keys live in their own namespace (``fold_in(steps, t)``),
so no step ever draws the noise of the data order, an evaluation, the sample
grid or the test set.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import torch

from experiments import config as cfg
from experiments import models
from fgm import ensemble, layouts, random, train

CONFIG, METRICS, CHECKPOINT, RESULTS = "config.json", "metrics.jsonl", "checkpoint.pt", "results.json"
INTERPOLATIONS = "interpolations"


class RunKeys(NamedTuple):
    """The keys of one member (one seed); each is used for one purpose only."""

    init: random.Key
    steps: random.Key
    data: random.Key
    evaluation: random.Key
    samples: random.Key
    test: random.Key


def run_keys(seed: int) -> RunKeys:
    """``RunKeys(*split(key(seed), 6))``: the one key schedule of a run."""
    return RunKeys(*random.split(random.key(seed), 6))


def step_keys(keys: RunKeys, step: int) -> tuple[random.Key, random.Key]:
    """``(input key, noise key)`` of step ``step``: ``split(fold_in(keys.steps, step))``."""
    return random.split(random.fold_in(keys.steps, step))


def default_dir(model: str, dataset: str, seeds: list[int], root: str | Path = "runs") -> Path:
    """``<root>/<model>-<dataset>-s<seed>``, with ``x<M>`` for ``M > 1`` seeds trained together."""
    suffix = f"x{len(seeds)}" if len(seeds) > 1 else ""
    return Path(root) / f"{model}-{dataset}-s{seeds[0]}{suffix}"


def read_json(path: Path) -> Any:
    """A JSON file; a ValueError naming the file if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is corrupt (not valid JSON: {exc})") from exc


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def read_config(run: Path) -> dict:
    """A run's ``config.json``, checked against the settings table (a corrupt one is refused)."""
    path = Path(run) / CONFIG
    if not path.exists():
        raise ValueError(f"{run} is not a run directory (no {CONFIG})")
    config = read_json(path)
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, str) and model not in models.MODELS:
        module = config.get("import")
        where = f"--import {module}" if isinstance(module, str) else "--import MODULE with the module that registers it"
        raise ValueError(
            f"{run} is a run of model {model!r}, which is not registered (registered: {', '.join(models.MODELS)}); "
            f"pass {where}"
        )
    try:
        return with_later_settings(cfg.check_config(config))
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt or from another version: {exc}") from exc


def with_later_settings(config: dict) -> dict:
    """A saved config completed with the settings added after it was written, at their defaults.

    A setting is added with a default that keeps the behaviour before it
    (``ema_decay = None``: no average of G; ``arch = "auto"``; ``compile_nll
    = False``; ``fid_val_reference_count`` = its ``fid_val_samples``), so an
    older run directory loads, evaluates and resumes as it
    was trained.
    """
    if config.get("model") not in models.MODELS:
        return config  # read_config names the unknown model
    # before fid_val_reference_count, the validation FID compared as many validation images as samples
    earlier = {"compile_nll": False, "fid_val_reference_count": config.get("fid_val_samples", 250)}
    return {**earlier, **models.MODELS[config["model"]].defaults, **config}


def read_metrics(run: Path) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl`` (``[]`` when absent)."""
    path = Path(run) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(run: Path, history: list[dict]) -> None:
    """Rewrites ``metrics.jsonl`` from the checkpoint's history (lines after a crash are dropped)."""
    (Path(run) / METRICS).write_text("".join(json.dumps(r) + "\n" for r in history))


def mean_std(members: list[dict]) -> tuple[dict, dict]:
    """Mean and sample std (``ddof = 1``; ``None`` for one member) of every number all members have."""
    mean, std = {}, {}
    for key in members[0]:
        values = [m.get(key) for m in members]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            mean[key] = math.fsum(values) / len(values)
            std[key] = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def code_version() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``None`` outside a git checkout."""
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent)
    try:
        head, status = run(["git", "rev-parse", "--short", "HEAD"]), run(["git", "status", "--porcelain"])
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def state_template(experiment: models.Experiment, config: dict, device: torch.device | str = "cpu"):
    """A fresh state of the run's shape on ``device``: the model's state (M = 1) or the stacked ensemble (M > 1).

    The initial values are drawn on the CPU and moved, so they are the same on
    every device; step counters stay on the CPU (:func:`fgm.train.to_device`).
    """
    states = [experiment.trainer.init(run_keys(s).init) for s in config["seeds"]]
    return train.to_device(states[0] if len(states) == 1 else ensemble.stack_states(states), device)


def member_params(state, num_members: int) -> list:
    """The parameter tree of each member (views into the stack for M > 1)."""
    return [state.params] if num_members == 1 else ensemble.unstack(state.params)


def member_variables(experiment: models.Experiment, state, num_members: int) -> list:
    """What each member's evaluation reads: its parameters, merged with its layer state where it has one
    (then through the experiment's ``evaluation_variables``, where it has them)."""
    members = member_params(state._replace(params=experiment.trainer.variables(state)), num_members)
    if experiment.evaluation_variables is None:
        return members
    return [experiment.evaluation_variables(v) for v in members]


class Run(NamedTuple):
    """A run directory read back: its config, model, state and per-member variables (what evaluation reads)."""

    path: Path
    config: dict
    experiment: models.Experiment
    state: Any
    params: list
    metadata: dict


def load_run(path: str | Path, device: torch.device | str = "cpu") -> Run:
    """Loads a finished or interrupted run with any number of members onto ``device`` (whatever device saved it).

    Raises:
      ValueError: not a run directory, or a corrupt ``config.json``.
      fgm.checkpoint.CheckpointError: a missing, corrupt or mismatched checkpoint.
    """
    path = Path(path)
    config = read_config(path)
    experiment = models.build(config)
    state, meta = layouts.load_state(path / CHECKPOINT, state_template(experiment, config, device))
    return Run(path, config, experiment, state, member_variables(experiment, state, len(config["seeds"])), meta)
