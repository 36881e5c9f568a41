"""The one table of settings: flags, profiles and per-model settings, with types and ranges.

Everything that reads a setting reads it here: the command-line parser
(:func:`train_parser`), ``--set KEY=VALUE`` (:func:`parse_value`), the check
of a ``config.json`` before a resume (:func:`check_config`), and the report's
command to reproduce a run (:func:`reproduce_command`). A value is resolved
in this order, later winning: the profile, the model's defaults, the model's
override for (dataset, profile) (both from its registration,
:func:`experiments.models.register_model`), ``--set``, then explicit flags.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any, NamedTuple, Protocol

import torch


class Setting(NamedTuple):
    """One configuration key.

    Attributes:
      name: the config key (``batch_size``); its flag is ``--batch-size``.
      type: ``int``, ``float``, ``str``, ``bool`` or ``list`` (of ints).
      help: one line for ``--help``.
      low: the smallest allowed value (lists: of every element), or ``None``.
      high: the largest allowed value, or ``None``.
      choices: the allowed strings, or ``None``.
      optional: ``None`` is allowed (e.g. "no limit").
      flag: has its own ``--flag`` (else only the profile or ``--set`` sets it).
      eval_only: changing it cannot change the trained state, so a resumed run may.
    """

    name: str
    type: type
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    flag: bool = True
    eval_only: bool = False

    def allowed(self) -> str:
        """What values are allowed, in words."""
        if self.choices:
            text = f"one of: {', '.join(self.choices)}"
        else:
            kind = {int: "an integer", float: "a finite number", str: "a word", bool: "true or false"}.get(
                self.type, "a list of integers such as [512,256] or 512,256"
            )
            bounds = [f">= {self.low:g}"] if self.low is not None else []
            text = " ".join([kind, *bounds, *([f"<= {self.high:g}"] if self.high is not None else [])])
        return text + (" (or null)" if self.optional else "")


def _run_settings() -> list[Setting]:
    return [
        Setting("epochs", int, "passes over the training set", low=1),
        Setting("batch_size", int, "images per step (GAN: per D step)", low=1),
        Setting("lr", float, "Adam's learning rate", low=1e-12, high=1.0),
        Setting("lr_schedule", str, "learning-rate schedule", choices=("constant", "cosine"), flag=False),
        Setting("lr_final_fraction", float, "cosine: final rate as a fraction of lr", low=0.0, high=1.0, flag=False),
        Setting("sample_every", int, "write a sample grid every N epochs", low=1),
        Setting("train_limit", int, "use only the first N training images", low=1, optional=True),
        Setting("val_limit", int, "use only the first N validation images", low=1, optional=True),
        Setting("test_limit", int, "use only the first N test images", low=2, optional=True, eval_only=True),
        Setting("nll_samples", int, "importance samples K for the test NLL (0 skips it)", low=0, eval_only=True),
        Setting("fid_samples", int, "generated images for the test FID (0 skips it)", low=0, eval_only=True),
        Setting("fid_reference_count", int, "test images of the FID (null: all)", 2, optional=True, eval_only=True),
        Setting("classifier_metrics", bool, "the dataset classifier's view of the samples", flag=False, eval_only=True),
        Setting("fid_every", int, "validation FID every N epochs (0: never)", low=0, eval_only=True),
        Setting("fid_val_samples", int, "generated images per validation FID", low=2, eval_only=True),
        Setting(
            "fid_val_reference_count",
            int,
            "validation images per validation FID (null: all)",
            2,
            optional=True,
            eval_only=True,
        ),
        Setting("interpolation_points", int, "interior points per strip (plus both ends)", low=1, eval_only=True),
        Setting(
            "compile",
            bool,
            "torch.compile the loss and its gradient (GAN: each player's) and the IWAE chunks",
            flag=False,
        ),
        Setting(
            "cuda_graph",
            bool,
            "replay each update's gradient as one CUDA graph (a CUDA device, one seed, without --compile)",
            flag=False,
            eval_only=True,  # bitwise the eager update (tests/test_cuda_graph.py): a resume may switch it
        ),
        Setting(
            "compile_nll",
            bool,
            "torch.compile the IWAE chunks only (the test NLL; training stays eager, so --seeds N works)",
            flag=False,
            eval_only=True,
        ),
    ]


RUN_SETTINGS: dict[str, Setting] = {s.name: s for s in _run_settings()}
# Model settings are declared by the models (experiments.models.register_model).
MODEL_SETTINGS: dict[str, Setting] = {}

_BASE = {
    "lr_schedule": "constant",
    "lr_final_fraction": 0.1,
    "train_limit": None,
    "val_limit": None,
    "test_limit": None,
    "fid_reference_count": None,
    "fid_every": 0,
    "classifier_metrics": False,
    "fid_val_samples": 250,
    "fid_val_reference_count": 250,
    "interpolation_points": 10,
    "compile_nll": False,
}
_VAL_FID_2K = {"fid_every": 25, "fid_val_samples": 2000, "fid_val_reference_count": None}
# the report-scale evaluation: NLL with K = 5000, FID of 10,000 samples against the whole test set
_FULL = {
    **_BASE,
    "epochs": 200,
    "batch_size": 128,
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "lr_final_fraction": 0.05,
    "sample_every": 10,
    "nll_samples": 5000,
    "fid_samples": 10_000,
    "classifier_metrics": True,
}
PROFILES: dict[str, dict] = {
    # seconds, data subsets, no FID: checks the pipeline end to end
    "smoke": {
        **_BASE,
        "epochs": 2,
        "batch_size": 64,
        "lr": 1e-3,
        "train_limit": 1024,
        "val_limit": 256,
        "test_limit": 256,
        "sample_every": 1,
        "nll_samples": 10,
        "fid_samples": 0,
    },
    # the CPU run the README promises; FID of 1,000 samples is biased upwards: compare at equal N only
    "default": {
        **_BASE,
        "epochs": 40,
        "batch_size": 128,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "sample_every": 5,
        "nll_samples": 100,
        "fid_samples": 1000,
        "classifier_metrics": True,
        "fid_reference_count": 1000,
    },
    "full": _FULL,
    # the study of reports/ (issue 18): the full evaluation protocol (10k samples against the whole test
    # set, IWAE K = 5000, compiled) with training cut to fit about 4 hours for 3 seeds of 3 models on
    # 2 cores; reports/REPORT.md gives the time of each part. Quality against training time (issue 30):
    # a validation FID of 2,000 samples against the 5,000 validation images (cached) at four points.
    "report": {**_FULL, "epochs": 100, "compile_nll": True, **_VAL_FID_2K},
}
# Identity and bookkeeping keys of a config.json, not settings ("import": the module that registers the model).
_IDENTITY = ("model", "dataset", "profile", "seed", "seeds", "total_steps", "import")


class ModelDefaults(Protocol):
    """What the table reads of a registered model (an :class:`experiments.models.ModelEntry`)."""

    defaults: dict  # the model's settings at their defaults
    overrides: dict  # {(dataset, profile): {key: value}}
    module: str | None  # the module to --import for it (None: built in)


def setting(name: str) -> Setting:
    """The :class:`Setting` of ``name``; a ValueError listing the known keys otherwise."""
    found = RUN_SETTINGS.get(name) or MODEL_SETTINGS.get(name)
    if found is None:
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted({**RUN_SETTINGS, **MODEL_SETTINGS}))}")
    return found


def check_value(s: Setting, value: Any, where: str = "") -> Any:
    """``value`` if it is allowed for ``s``; a ValueError saying what is allowed otherwise."""
    where = where or s.name

    def bad() -> ValueError:
        return ValueError(f"{where}: {value!r} is not allowed; expected {s.allowed()}")

    if value is None:
        if s.optional:
            return None
        raise bad()
    if s.type is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if s.type is list:
        if not isinstance(value, list) or not value:
            raise bad()
        return [check_value(s._replace(type=int, optional=False), v, where) for v in value]
    if s.type is str:
        if not isinstance(value, str) or (s.choices and value not in s.choices):
            raise bad()
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad()
    if s.type is int and (not isinstance(value, int) and not float(value).is_integer()):
        raise bad()
    value = s.type(value)
    if not math.isfinite(value) or (s.low is not None and value < s.low) or (s.high is not None and value > s.high):
        raise bad()
    return value


def parse_value(s: Setting, raw: str, where: str = "") -> Any:
    """Parses a command-line string for ``s`` (JSON, a bare word, or ``a,b`` for lists) and checks it."""
    text = raw.strip()
    if s.type is list and not text.startswith("["):
        text = f"[{text}]"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = raw  # a bare word, e.g. --set loss=hinge
    if s.type is float and isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity"):
        value = float(value)
    return check_value(s, value, where or f"--{s.name.replace('_', '-')}")


def add_import_flag(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable): the dispatcher imports it first, so its models and datasets exist."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it may register models and datasets)",
    )


DEVICES = "auto, cpu, cuda, cuda:N, mps"


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the networks run (:func:`resolve_device`)."""
    parser.add_argument("--device", default="auto", help=f"one of: {DEVICES} (default auto: a GPU if there is one)")


def resolve_device(name: str) -> torch.device:
    """The device ``--device name`` names; a ValueError saying what is allowed and what this machine has.

    ``auto`` is the first CUDA GPU, else Apple's MPS, else the CPU.
    """
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    here = f"this machine has {torch.cuda.device_count()} CUDA device(s){' and MPS' if mps else ''}"
    if name == "cpu":
        return torch.device("cpu")
    found = re.fullmatch(r"cuda(?::(\d+))?", name)
    if found:
        index = int(found.group(1) or 0)
        if not cuda or index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: no such CUDA device ({here}); use --device cpu or auto")
        return torch.device("cuda", index)
    if name == "mps":
        if not mps:
            raise ValueError(f"--device mps: MPS is not available ({here}); use --device cpu or auto")
        return torch.device("mps")
    raise ValueError(f"--device {name!r} is not allowed; expected one of: {DEVICES}")


def train_parser(models: list[str], datasets: list[str]) -> argparse.ArgumentParser:
    """The parser of ``python -m experiments.run MODEL DATASET ...``, built from the table."""
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description="Train and evaluate a model.")
    parser.add_argument("model", help=f"one of: {', '.join(models)}")
    parser.add_argument("dataset", help=f"one of: {', '.join(datasets)}")
    parser.add_argument("--profile", default="default", help=f"one of: {', '.join(PROFILES)}")
    parser.add_argument("--seed", type=int, default=0, help="the (first) seed")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="train seeds seed .. seed+N-1 together (vmap) and report mean ± std",
    )
    for s in RUN_SETTINGS.values():
        if s.flag:
            parser.add_argument(
                f"--{s.name.replace('_', '-')}", dest=s.name, metavar="V", help=f"{s.help} ({s.allowed()})"
            )
    parser.add_argument("--compile", action="store_true", help=RUN_SETTINGS["compile"].help)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting of the model or the run, e.g. --set flow_layers=6",
    )
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    parser.add_argument("--out", help="run directory (default: runs/<model>-<dataset>-s<seed>[x<N>])")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_device_flag(parser)
    add_import_flag(parser)
    return parser


def defaults(model: ModelDefaults, dataset: str, profile: str) -> dict:
    """The profile's settings, the model's defaults, then the model's override for ``(dataset, profile)``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    return {**PROFILES[profile], **model.defaults, **model.overrides.get((dataset, profile), {})}


def resolve(args: argparse.Namespace, model: ModelDefaults) -> dict:
    """The run's config from parsed arguments: defaults, then ``--set``, then flags; every value checked."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    config = {
        "model": args.model,
        "dataset": args.dataset,
        "profile": args.profile,
        "seed": args.seed,
        "seeds": list(range(args.seed, args.seed + args.seeds)),
    }
    if model.module:  # a run of it names the module to import (experiments.rundir.read_config)
        config["import"] = model.module
    config.update(defaults(model, args.dataset, args.profile))
    for item in args.set:
        name, sep, raw = item.partition("=")
        if not sep or (name not in RUN_SETTINGS and name not in model.defaults):
            raise ValueError(
                f"--set {item!r}: expected KEY=VALUE with KEY one of: "
                f"{', '.join(sorted([*model.defaults, *RUN_SETTINGS]))}"
            )
        config[name] = parse_value(setting(name), raw, f"--set {name}")
    for s in RUN_SETTINGS.values():
        raw = getattr(args, s.name, None)
        if s.flag and raw is not None:
            config[s.name] = parse_value(s, raw)
    if args.compile:
        config["compile"] = True
    check_config(config)
    return config


def check_config(config: dict) -> dict:
    """Checks every key of a config (e.g. a ``config.json`` read back); a ValueError names the bad one."""
    if not isinstance(config, dict):
        raise ValueError(f"a config is a JSON object, got {type(config).__name__}")
    for key in ("model", "dataset", "profile"):
        if not isinstance(config.get(key), str):
            raise ValueError(f"config key {key!r} is missing or not a string")
    seeds = config.get("seeds")
    if not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        and config.get("seed") == seeds[0]
    ):
        raise ValueError(f"config keys 'seed'/'seeds' are inconsistent: {config.get('seed')!r}, {seeds!r}")
    if not isinstance(config.get("import", ""), str):
        raise ValueError(f"config key 'import' is not a module name: {config['import']!r}")
    for key, value in config.items():
        if key not in _IDENTITY:
            check_value(setting(key), value, f"config key {key!r}")
    return config


def changed_settings(saved: dict, config: dict) -> list[str]:
    """Keys whose values differ between two configs and that change the trained state."""
    keys = (set(saved) | set(config)) - {"import"}  # where the model comes from, not what it trains
    return sorted(
        k for k in keys if saved.get(k) != config.get(k) and not (k in RUN_SETTINGS and RUN_SETTINGS[k].eval_only)
    )


def reproduce_command(config: dict, model: ModelDefaults) -> str:
    """The command that makes a run with ``config``: every setting that differs from its defaults."""
    base = defaults(model, config["dataset"], config["profile"])
    words = ["python -m experiments.run", config["model"], config["dataset"]]
    if config.get("import"):
        words += ["--import", config["import"]]
    if config["profile"] != "default":
        words += ["--profile", config["profile"]]
    if config["seed"] != 0:
        words += ["--seed", str(config["seed"])]
    if len(config["seeds"]) > 1:
        words += ["--seeds", str(len(config["seeds"]))]
    for key, value in config.items():
        if key in _IDENTITY or base.get(key) == value or (key == "compile" and not value):
            continue
        text = json.dumps(value, separators=(",", ":"))
        if key == "compile":
            words.append("--compile")
        elif key in RUN_SETTINGS and RUN_SETTINGS[key].flag:
            words += [f"--{key.replace('_', '-')}", text]
        else:
            words += ["--set", f"{key}={text}"]
    return " ".join(words)
