"""``python -m experiments.run all``: every model on every dataset that has data.

    python -m experiments.run all                          # default profile, seed 0, into runs/
    python -m experiments.run all --profile full --seeds 3 # seeds 0, 1, 2 of every pair
    python -m experiments.run all --datasets mnist --models vae_std,vae_flow
    python -m experiments.run all -- --fid-samples 2000    # flags after -- go to every run

For each (model, dataset) the run directory is ``experiments.run``'s
default under ``--runs``: ``<model>-<dataset>-s<seed>`` for one seed; with
``--seeds N`` a model that can train seeds together (``Recipe.make_update``,
the VAEs) gets one ensemble run ``<model>-<dataset>-s<seed>x<N>``
(``experiments/ensemble.py``), any other model (or every model, with
``--separate-seeds``) N single runs ``-s<seed>``, ``-s<seed + 1>``, ...; and

* a finished run (``results.json`` and a checkpoint of the last epoch) is
  skipped (``--reevaluate`` re-runs its test evaluation, e.g. to add FID);
* an interrupted run (a checkpoint of an earlier epoch) is resumed;
* a directory holding a run of another profile is left alone (reported);
* anything else starts a fresh run.

A dataset whose files are not in the data directory is skipped, and the
summary says which files are needed where. Runs are made in this process
with ``experiments.run.main``; one failing run does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple, Optional

from experiments.registry import MODELS
from fgm import checkpoint
from fgm import data as fdata

_RESERVED = {"--out", "--resume", "--seed", "--seeds", "--profile"}


class Outcome(NamedTuple):
    model: str
    dataset: str
    seeds: str
    status: str
    seconds: float
    out: Path


class Job(NamedTuple):
    """One invocation of ``experiments.run``: a single seed, or ``count`` seeds as an ensemble."""

    model: str
    dataset: str
    seed: int
    count: int  # 1: a single run; > 1: an ensemble (--seeds count)
    out: Path

    @property
    def seeds_text(self) -> str:
        return str(self.seed) if self.count == 1 else f"{self.seed}-{self.seed + self.count - 1}"

    def flags(self) -> list[str]:
        return ["--seed", str(self.seed), *(["--seeds", str(self.count)] if self.count > 1 else [])]


def _names(value: Optional[str], choices: list[str], what: str) -> list[str]:
    if not value:
        return list(choices)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from: {', '.join(choices)}")
    return names


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's own flags, and the flags after ``--`` passed to every run."""
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m experiments.run all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="run profile (smoke, default, full)")
    parser.add_argument("--seed", type=int, default=0, help="the (first) seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="seeds seed, seed + 1, ..., seed + N - 1 of every pair (default 1); the report "
                             "shows their mean ± std")
    parser.add_argument("--separate-seeds", action="store_true",
                        help="with --seeds: one run per seed even for models that can train seeds together")
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(sorted(MODELS))}")
    parser.add_argument("--datasets", help=f"comma-separated subset of: {', '.join(fdata.DATASETS)}")
    parser.add_argument("--runs", default="runs", help="where the run directories go (default: runs)")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    parser.add_argument("--download", action="store_true", help="let torchvision try to download missing datasets")
    parser.add_argument("--reevaluate", action="store_true",
                        help="re-run the test evaluation of finished runs (--resume on a finished run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    args = parser.parse_args(argv)
    clash = sorted({a.split("=")[0] for a in extra} & _RESERVED)
    if clash:
        raise ValueError(f"{', '.join(clash)} cannot be passed through after --: the sweep sets them")
    return args, extra


def missing_files(dataset: str, data_dir: Optional[str]) -> tuple[Path, list[str]]:
    """``(data directory, files of ``dataset`` absent from it)``; cheap, reads nothing."""
    spec = fdata.get_spec(dataset)
    root = fdata.resolve_data_dir(data_dir)
    return root, [f for f in spec.raw_files if not (root / f).is_file() and not (root / (f + ".gz")).is_file()]


def _try_download(dataset: str, data_dir: Optional[str]) -> Optional[str]:
    try:
        for split in ("train", "test"):
            fdata.load_images(dataset, split, data_dir, download=True)
    except (fdata.DataError, ValueError, OSError) as exc:
        return str(exc).splitlines()[0]
    return None


def can_train_together(model: str, dataset: str, profile: str) -> bool:
    """Whether ``model``'s recipe has the vmappable update that ``--seeds`` ensembles need."""
    from experiments import registry, run

    config = run.resolve_config(run.parse_args([model, dataset, "--profile", profile]))
    config["total_steps"] = 1
    return registry.get_model(model).build(fdata.get_spec(dataset), config).make_update is not None


def jobs_for(model: str, dataset: str, args: argparse.Namespace) -> list[Job]:
    """The runs of one (model, dataset): one ensemble, or one single run per seed."""
    runs = Path(args.runs)
    if args.seeds > 1 and not args.separate_seeds and can_train_together(model, dataset, args.profile):
        return [Job(model, dataset, args.seed, args.seeds, runs / f"{model}-{dataset}-s{args.seed}x{args.seeds}")]
    return [Job(model, dataset, s, 1, runs / f"{model}-{dataset}-s{s}") for s in range(args.seed, args.seed + args.seeds)]


def plan(job: Job, profile: str, extra: list[str], reevaluate: bool) -> str:
    """What to do with one run directory: ``fresh``, ``resume``, ``done`` or ``conflict: ...``."""
    from experiments import run, trainer

    out = job.out
    ckpt = out / trainer.CHECKPOINT
    if not ckpt.exists():
        if (out / "results.json").exists():
            return "done"  # results without a checkpoint: nothing to resume from
        return "fresh"
    try:
        meta = checkpoint.read_metadata(ckpt)
    except checkpoint.CheckpointError as exc:
        return f"conflict: {exc}"
    saved = meta.get("config", {})
    if saved.get("profile", profile) != profile:
        return f"conflict: holds a run of profile {saved.get('profile')!r}, not {profile!r} (use --runs DIR)"
    target = run.resolve_config(run.parse_args([job.model, job.dataset, "--profile", profile, *job.flags(), *extra]))
    finished = meta.get("epoch", 0) >= target["epochs"]
    if finished and (out / "results.json").exists() and not reevaluate:
        return "done"
    return "resume"


def main(argv: list[str] | None = None) -> int:
    try:
        args, extra = parse_args(sys.argv[1:] if argv is None else argv)
        models = _names(args.models, list(MODELS), "model")
        datasets = _names(args.datasets, list(fdata.DATASETS), "dataset")
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from experiments import analysis, run

    outcomes: list[Outcome] = []
    no_data: dict[str, tuple[Path, list[str], Optional[str]]] = {}
    for dataset in datasets:
        root, missing = missing_files(dataset, args.data_dir)
        download_error = None
        if missing and args.download and not args.dry_run:
            download_error = _try_download(dataset, args.data_dir)
            root, missing = missing_files(dataset, args.data_dir)
        if missing:
            no_data[dataset] = (root, missing, download_error)
            continue
        for model in models:
            for job in jobs_for(model, dataset, args):
                outcomes.append(_do(job, args, extra, analysis, run))
    print(summary(outcomes, no_data))
    failed = [o for o in outcomes if o.status.startswith("failed")]
    return 1 if failed else 0


def _do(job: Job, args: argparse.Namespace, extra: list[str], analysis, run) -> Outcome:
    """Plans and (unless ``--dry-run``) makes one run; never raises for a failed run."""
    try:
        action = plan(job, args.profile, extra, args.reevaluate)
    except (ValueError, SystemExit) as exc:
        action = f"conflict: bad flags ({exc})"
    if action == "done" or action.startswith("conflict") or args.dry_run:
        status = f"would {action}" if args.dry_run and action in ("fresh", "resume") else action
        if action == "done" and not args.dry_run:
            status = "done (skipped)"
            _ensure_figures(analysis, job.out, args.data_dir)
        return Outcome(job.model, job.dataset, job.seeds_text, status, 0.0, job.out)
    argv = [job.model, job.dataset, "--profile", args.profile, *job.flags(), "--out", str(job.out), *extra]
    if action == "resume":
        argv.append("--resume")
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.no_progress:
        argv.append("--no-progress")
    print(f"\n=== {job.model} on {job.dataset}, seed {job.seeds_text}: "
          f"{'resuming' if action == 'resume' else 'training'} (python -m experiments.run {' '.join(argv)})", flush=True)
    started = time.perf_counter()
    try:
        rc = run.main(argv)
    except KeyboardInterrupt:
        raise
    except Exception:  # noqa: BLE001 - one broken run must not stop the sweep
        traceback.print_exc()
        rc = 1
    seconds = time.perf_counter() - started
    if rc == 0:
        _ensure_figures(analysis, job.out, args.data_dir)
        status = "resumed" if action == "resume" else "trained"
    else:
        status = f"failed (exit {rc})"
    return Outcome(job.model, job.dataset, job.seeds_text, status, seconds, job.out)


def _ensure_figures(analysis, out: Path, data_dir: Optional[str]) -> None:
    """Interpolations/progression for runs made before the runner wrote them (cheap; never fatal)."""
    if (out / analysis.INTERPOLATIONS / analysis.INDEX).exists() and (out / "samples" / analysis.PROGRESSION_PNG).exists():
        return
    if not (out / "config.json").exists():
        return
    try:
        analysis.figures_for_run(out, data_dir)
    except Exception as exc:  # noqa: BLE001 - figures are a convenience here
        print(f"warning: could not write the figures of {out}: {exc}", file=sys.stderr)


def summary(outcomes: list[Outcome], no_data: dict) -> str:
    """The table printed at the end of a sweep, and the datasets that had no data."""
    lines = ["", "summary:"]
    if outcomes:
        width = max(len(str(o.out)) for o in outcomes)
        lines.append(f"  {'model':<9} {'dataset':<8} {'seed':>5}  {'status':<28} {'time':>8}  {'directory':<{width}}")
        for o in outcomes:
            took = f"{o.seconds / 60:.1f} min" if o.seconds else "—"
            lines.append(f"  {o.model:<9} {o.dataset:<8} {o.seeds:>5}  {o.status:<28} {took:>8}  {str(o.out):<{width}}")
            results = o.out / "results.json"
            if o.status in ("trained", "resumed", "done (skipped)") and results.exists():
                try:
                    r = json.loads(results.read_text())
                except json.JSONDecodeError:
                    continue
                if isinstance(r.get("mean"), dict):  # an ensemble: the mean over its members
                    r = r["mean"]
                shown = [f"{k}={r[k]:.3f}" for k in ("test_nll", "test_neg_elbo", "test_fid", "test_d_loss")
                         if isinstance(r.get(k), (int, float))]
                if shown:
                    lines.append(f"  {'':<9} {'':<8} {'':>5}  {', '.join(shown)}")
    for dataset, (root, missing, download_error) in no_data.items():
        lines.append(f"  {dataset}: skipped, no data: {', '.join(missing)} not in {root}.")
        lines.append(f"    Put {', '.join(fdata.get_spec(dataset).raw_files)} there (or pass --data-dir / set "
                     "FGM_DATA_DIR, or add --download on a machine with internet), then rerun this command.")
        if download_error:
            lines.append(f"    Download failed: {download_error}")
    if outcomes:
        lines.append("  next: python -m experiments.report   (writes reports/REPORT.md from the run directories)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
