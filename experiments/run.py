"""The command line: the one entry point of ``experiments`` (nothing imports this module).

    python -m experiments.run vae_std mnist                  # train and test one model (default profile)
    python -m experiments.run vae_std mnist --profile smoke  # seconds, data subsets
    python -m experiments.run vae_std mnist --resume         # continue an interrupted run
    python -m experiments.run vae_std mnist --seeds 3        # seeds 0-2 trained together (vmap), mean ± std
    python -m experiments.run my_vae mnist --import my_models  # a model registered in your own module
    python -m experiments.run all [--profile P --seeds N]    # every model on every dataset with data
    python -m experiments.run report                         # reports/RESULTS.md, summary.json, figures
    python -m experiments.run fid runs/gan-mnist-s0 mnist:test   # FID of any two image sets
    python -m experiments.run figures runs/vae_std-mnist-s0  # rewrite a run's figures
    python -m experiments.run submission --vunetid abc123 --assignment 3   # abc123_3.zip: code and report

Exit codes: 0 done, 1 a run of a sweep failed, 2 bad input (names, values,
data, checkpoint, config), 3 non-finite loss (the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from experiments import config as cfg
from experiments import fid, models, report, rundir, submission, sweep, train
from fgm import checkpoint
from fgm import data as fdata
from fgm.metrics import fid as fid_lib
from fgm.metrics import inception

ERRORS = (
    ValueError,
    fdata.DataError,
    checkpoint.CheckpointError,
    inception.InceptionWeightsError,
    fid_lib.StatisticsCacheError,
)


def import_plugins(argv: list[str]) -> None:
    """Imports the ``--import MODULE`` modules of ``argv`` so their registrations exist before parsing."""
    names = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--import"]
    names += [arg.partition("=")[2] for arg in argv if arg.startswith("--import=")]
    for name in filter(None, names):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"--import {name}: {exc}") from exc


def train_command(argv: list[str]) -> int:
    """``MODEL DATASET [flags]``: resolve the config, then :func:`experiments.train.train`."""
    args = cfg.train_parser(sorted(models.MODELS), list(fdata.DATASETS)).parse_args(argv)
    entry = models.get_model(args.model)
    fdata.get_spec(args.dataset)  # fail on a bad name before anything else
    config = cfg.resolve(args, entry)
    out = Path(args.out) if args.out else rundir.default_dir(args.model, args.dataset, config["seeds"])
    device = cfg.resolve_device(args.device)
    return train.train(config, out, args.resume, args.data_dir, not args.no_progress, device)


def figures_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run figures", description="Rewrite runs' figures.")
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    cfg.add_device_flag(parser)
    cfg.add_import_flag(parser)
    args = parser.parse_args(argv)
    device = cfg.resolve_device(args.device)
    for path in args.runs:
        train.rewrite_figures(Path(path), args.data_dir, device)
        print(f"{path}: figures written")
    return 0


COMMANDS = {
    "all": sweep.main,
    "report": report.main,
    "fid": fid.main,
    "figures": figures_command,
    "submission": submission.main,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        import_plugins(argv)  # every command knows the models and datasets a plugin registers
        return command(argv[1:]) if command else train_command(argv)
    except ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
