"""``python -m experiments.run all``: every model on every dataset that has data, resumable.

    python -m experiments.run all                           # default profile, seed 0, into runs/
    python -m experiments.run all --profile full --seeds 3  # seeds 0, 1, 2 of every pair, trained together
    python -m experiments.run all --datasets mnist --models vae_std,vae_flow
    python -m experiments.run all -- --fid-samples 2000     # flags after -- go to every run

Each (model, dataset) is one run of ``--seeds`` members in
``rundir.default_dir`` under ``--runs`` (one run per seed with
``--separate-seeds``, or for a model whose update cannot be vmapped). A
finished run is skipped (``--reevaluate`` re-runs its test evaluation), an
interrupted one resumed, a directory of another profile left alone, anything
else started fresh. A dataset without its files is skipped and the summary
says which files are needed where. One failing run does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import NamedTuple

from experiments import config as cfg
from experiments import models, rundir, train
from fgm import checkpoint
from fgm import data as fdata

_RESERVED = {"--out", "--resume", "--seed", "--seeds", "--profile"}


class Job(NamedTuple):
    model: str
    dataset: str
    seeds: list[int]
    out: Path


class Outcome(NamedTuple):
    job: Job
    status: str
    seconds: float


def _names(value: str | None, choices: list[str], what: str, default: list[str] | None = None) -> list[str]:
    names = [v.strip() for v in (value or "").split(",") if v.strip()] or list(default or choices)
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from: {', '.join(choices)}")
    return names


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's own flags, and the flags after ``--`` passed to every run."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m experiments.run all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help=f"one of: {', '.join(cfg.PROFILES)}")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds of every pair (default 1)")
    parser.add_argument("--separate-seeds", action="store_true", help="one run per seed instead of one run of N")
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(sorted(models.MODELS))}")
    parser.add_argument("--datasets", help=f"comma-separated subset of: {', '.join(fdata.DATASETS)}")
    parser.add_argument("--runs", default="runs", help="where the run directories go (default: runs)")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    parser.add_argument("--download", action="store_true", help="let torchvision try to download missing datasets")
    parser.add_argument("--reevaluate", action="store_true", help="re-run the test evaluation of finished runs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    cfg.add_device_flag(parser)
    cfg.add_import_flag(parser)
    args = parser.parse_args(argv)
    clash = sorted({a.split("=")[0] for a in extra} & _RESERVED)
    if clash:
        raise ValueError(f"{', '.join(clash)} cannot be passed through after --: the sweep sets them")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    return args, extra


def run_config(job: Job, profile: str, extra: list[str]) -> dict:
    """The config of a job, resolved by the same parser and table as a single command."""
    argv = [job.model, job.dataset, "--profile", profile, "--seed", str(job.seeds[0]), "--seeds", str(len(job.seeds))]
    argv += extra
    args = cfg.train_parser(sorted(models.MODELS), list(fdata.DATASETS)).parse_args(argv)
    return cfg.resolve(args, models.get_model(job.model))


def can_train_together(config: dict) -> bool:
    """Whether the model's update composes with ``vmap`` (WGAN-GP's penalty does not)."""
    try:
        models.build({**config, "total_steps": 1}).trainer.make_update(backend="func")
    except ValueError:
        return False
    return True


def jobs_for(model: str, dataset: str, args: argparse.Namespace, extra: list[str]) -> list[Job]:
    seeds = list(range(args.seed, args.seed + args.seeds))
    together = Job(model, dataset, seeds, rundir.default_dir(model, dataset, seeds, args.runs))
    if len(seeds) > 1 and not args.separate_seeds and can_train_together(run_config(together, args.profile, extra)):
        return [together]
    return [Job(model, dataset, [s], rundir.default_dir(model, dataset, [s], args.runs)) for s in seeds]


def plan(job: Job, config: dict, reevaluate: bool) -> str:
    """What to do with a run directory: ``fresh``, ``resume``, ``done`` or ``conflict: ...``."""
    ckpt = job.out / rundir.CHECKPOINT
    if not ckpt.exists():
        return "done" if (job.out / rundir.RESULTS).exists() else "fresh"
    try:
        meta = checkpoint.read_metadata(ckpt)
    except checkpoint.CheckpointError as exc:
        return f"conflict: {exc}"
    saved = meta.get("config", {})
    if saved.get("profile", config["profile"]) != config["profile"]:
        return f"conflict: holds a run of profile {saved.get('profile')!r}, not {config['profile']!r} (use --runs DIR)"
    finished = meta.get("epoch", 0) >= config["epochs"]
    return "done" if finished and (job.out / rundir.RESULTS).exists() and not reevaluate else "resume"


def run_job(job: Job, args: argparse.Namespace, extra: list[str]) -> Outcome:
    """Plans and (unless ``--dry-run``) makes one run; never raises for a failed run."""
    try:
        config = run_config(job, args.profile, extra)
        action = plan(job, config, args.reevaluate)
    except (ValueError, SystemExit) as exc:
        return Outcome(job, f"conflict: bad flags ({exc})", 0.0)
    if action == "done" or action.startswith("conflict") or args.dry_run:
        return Outcome(job, f"would {action}" if args.dry_run and action in ("fresh", "resume") else action, 0.0)
    command = cfg.reproduce_command(config, models.get_model(job.model))
    print(f"\n=== {job.model} on {job.dataset}, seeds {job.seeds}: {action} -> {job.out}\n    ({command})", flush=True)
    started = time.perf_counter()
    try:
        rc = train.train(config, job.out, action == "resume", args.data_dir, not args.no_progress, args.device)
    except KeyboardInterrupt:
        raise
    except Exception:
        traceback.print_exc()
        rc = 1
    status = ("resumed" if action == "resume" else "trained") if rc == 0 else f"failed (exit {rc})"
    return Outcome(job, status, time.perf_counter() - started)


def summary(outcomes: list[Outcome], no_data: dict) -> str:
    """The table printed at the end of a sweep, and the datasets that had no data."""
    lines = ["", "summary:"]
    for o in outcomes:
        seeds = ",".join(map(str, o.job.seeds))
        took = f"{o.seconds / 60:.1f} min" if o.seconds else "—"
        lines.append(f"  {o.job.model:<9} {o.job.dataset:<8} seeds {seeds:<8} {o.status:<24} {took:>9}  {o.job.out}")
        results = o.job.out / rundir.RESULTS
        if o.status in ("trained", "resumed", "done") and results.exists():
            mean = json.loads(results.read_text()).get("mean", {})
            own = [f"test_{m.name}" for m in models.get_model(o.job.model).metrics[:1]]  # its objective
            names = ("test_nll", *own, "test_fid")
            shown = [f"{k}={mean[k]:.3f}" for k in names if isinstance(mean.get(k), (int, float))]
            if shown:
                lines.append(f"      {', '.join(shown)}")
    for dataset, (root, missing) in no_data.items():
        lines.append(
            f"  {dataset}: skipped, no data: {', '.join(missing)} not in {root}. Put "
            f"{', '.join(fdata.get_spec(dataset).raw_files)} there (or pass --data-dir / set FGM_DATA_DIR), "
            "then rerun this command."
        )
    if outcomes:
        lines.append("  next: python -m experiments.run report")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args, extra = parse_args(list(argv))
    args.device = cfg.resolve_device(args.device)  # a bad or absent device fails before any run
    model_names = _names(args.models, list(models.MODELS), "model", [n for n, e in models.MODELS.items() if e.study])
    datasets = _names(args.datasets, list(fdata.DATASETS), "dataset")
    outcomes: list[Outcome] = []
    no_data: dict[str, tuple[Path, list[str]]] = {}
    for dataset in datasets:
        root, missing = fdata.missing_files(dataset, args.data_dir)
        if missing and args.download and not args.dry_run:
            try:
                for split in ("train", "test"):
                    fdata.load_images(dataset, split, args.data_dir, download=True)
            except (fdata.DataError, ValueError, OSError) as exc:
                print(f"{dataset}: download failed: {str(exc).splitlines()[0]}")
            root, missing = fdata.missing_files(dataset, args.data_dir)
        if missing:
            no_data[dataset] = (root, missing)
            continue
        for model in model_names:
            for job in jobs_for(model, dataset, args, extra):
                outcomes.append(run_job(job, args, extra))
    print(summary(outcomes, no_data))
    return 1 if any(o.status.startswith("failed") for o in outcomes) else 0
