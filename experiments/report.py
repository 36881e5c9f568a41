"""The generated half of the report: tables, figures and ``summary.json`` from run directories.

    python -m experiments.run report                     # runs/ -> reports/
    python -m experiments.run report --runs runs --out reports
    python -m experiments.run report --exclude 'gan-mnist-s0'     # leave a run out (globs on folder names)

Runs of one (dataset, model) are pooled over seeds only when they were
trained alike: the same profile and the same settings, eval-only settings
aside (:func:`experiments.config.changed_settings`). Runs trained otherwise
get rows of their own, named by what sets them apart (``gan (profile
full)``, ``gan (epochs 12)``). A seed that two runs of one row both hold is
refused (exit 2) with the runs' names: which one to report is the
researcher's choice (``--exclude``/``--select``, or another ``--runs``).

Writes numbers and pictures only: ``reports/RESULTS.md`` (tables: mean ± std
over seeds, N and K with every value, the difference between models and
whether it exceeds twice the larger std; the command that made each run),
``reports/summary.json`` (every number, machine-readable: the hand-written
``reports/REPORT.md`` is checked against it by the tests; per row
``fid_vs_time``, per dataset ``equal_time``: the validation FID against
training minutes, :func:`time_lines`) and ``reports/<dataset>/*.png``.
The analysis is written by a person who looked at the figures, in
``REPORT.md``.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import math
import platform
import re
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from experiments import config as cfg
from experiments import models, rundir
from fgm import data as fdata
from fgm import figures

plt = figures.plt
# (results key, column title, digits): every model's test metrics; a model's own (its objective's parts)
# come from its registration (experiments.models.Metric)
METRICS = (
    ("test_fid", "test FID ↓", 2),
    ("floor_fid", "real-data floor FID", 2),
    ("floor_precision", "floor precision", 3),
    ("floor_recall", "floor recall", 3),
    ("test_kid_mean", "KID ↓", 4),
    ("test_precision", "precision ↑", 3),
    ("test_recall", "recall ↑", 3),
    ("class_kl", "class KL ↓ (nats)", 3),
    ("class_rarest_share", "rarest class", 3),
    ("class_most_common_share", "commonest class", 3),
    ("class_confidence", "classifier confidence", 3),
    ("classifier_fid", "classifier FID ↓", 2),
    ("test_nll", "test NLL ↓ (nats)", 2),
    ("test_nll_bits_per_dim", "test NLL ↓ (bits/dim)", 3),
)
GAP_FROM_EPOCH = 5
NOT_COMPARED = ("floor_fid", "floor_precision", "floor_recall")  # the floor is the data's, the same for every model
# colours of the models whose registration names none, in the report's order (those no model has)
SPARE_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "tab:red")


def model_order(names) -> list[str]:
    """Models in the report's order: by their registered ``order``, then the others in registration order."""
    position, order = list(models.MODELS), {name: models.get_model(name).order for name in names}
    return sorted(names, key=lambda name: (order[name] is None, order[name] or 0, position.index(name)))


def colours(names) -> dict[str, str]:
    """Each model's colour: its registered one, else the next spare colour (in the order given)."""
    names, taken = list(names), {entry.colour for entry in models.MODELS.values()}
    spare = iter([c for c in SPARE_COLOURS if c not in taken] * len(names) or SPARE_COLOURS)  # enough to go round
    return {name: models.get_model(name).colour or next(spare) for name in names}


def metrics_of(names) -> tuple[tuple[str, str, int], ...]:
    """The table's metrics for these models: :data:`METRICS`, then each model's own, once each."""
    own = [(f"test_{m.name}", m.title, m.digits) for name in names for m in models.get_model(name).metrics]
    return tuple(dict.fromkeys([*METRICS, *own]))


def not_compared(names) -> set[str]:
    """Metrics the report does not compare between models: the floor and the models' own uncompared ones."""
    own = {f"test_{m.name}" for name in names for m in models.get_model(name).metrics if not m.compared}
    return {*NOT_COMPARED, *own}


# rows of a model that has several (different profiles or settings): colours of their own, in order
_MORE_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


class Group(NamedTuple):
    """One row of the report: runs of one (dataset, model) trained alike, every member pooled.

    ``label``: the row's name when the model has runs trained otherwise as
    well (``gan (profile full)``); ``None`` when it is the model's only row.
    """

    dataset: str
    model: str
    runs: list  # [(path, config, results, history)]
    label: str | None = None

    @property
    def name(self) -> str:
        """The row's name: the label, else the model."""
        return self.label or self.model

    @property
    def slug(self) -> str:
        """The row's name in file names (the model, for a model's only row)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")

    @property
    def members(self) -> list[dict]:
        return [m for _, _, results, _ in self.runs for m in results["members"]]

    def values(self, key: str) -> list[float]:
        return [float(m[key]) for m in self.members if isinstance(m.get(key), (int, float))]

    def common(self, key: str) -> list:
        """The distinct values of a per-run or per-member field (``fid_samples``, ``nll_samples``...)."""
        found = [r.get(key) for _, _, r, _ in self.runs] + [m.get(key) for m in self.members]
        return sorted({json.dumps(v) for v in found if v is not None})


# Keys of a config that are no setting (the run's identity, or derived from its settings).
_NOT_COMPARED_KEYS = ("seed", "seeds", "total_steps")


def training_differences(a: dict, b: dict) -> list[str]:
    """The profile and settings in which two runs' training differs (eval-only settings and seeds aside)."""
    return [k for k in cfg.changed_settings(a, b) if k not in _NOT_COMPARED_KEYS]


def _selected(name: str, select: Sequence[str], exclude: Sequence[str]) -> bool:
    return (not select or any(fnmatch.fnmatch(name, g) for g in select)) and not any(
        fnmatch.fnmatch(name, g) for g in exclude
    )


def collect(runs_root: Path, select: Sequence[str] = (), exclude: Sequence[str] = ()) -> dict[str, dict[str, Group]]:
    """``{dataset: {row name: Group}}`` of every finished run (``results.json``) under ``runs_root``.

    Args:
      runs_root: the folder of run directories.
      select: globs on run directory names; when given, only matching runs are read.
      exclude: globs on run directory names; matching runs are left out.

    Raises:
      ValueError: two runs of one row hold the same seed (the message names them and how to choose).
    """
    found: dict[tuple[str, str], list] = {}
    for path in sorted(p.parent for p in Path(runs_root).glob("*/" + rundir.RESULTS)):
        if not _selected(path.name, select, exclude):
            continue
        config, results = rundir.read_config(path), rundir.read_json(path / rundir.RESULTS)
        found.setdefault((config["dataset"], config["model"]), []).append(
            (path, config, results, rundir.read_metrics(path))
        )
    groups: dict[str, dict[str, Group]] = {}
    for (dataset, model), runs in found.items():
        for group in _rows(dataset, model, runs):
            _refuse_repeated_seeds(group)
            groups.setdefault(dataset, {})[group.name] = group
    return groups


def _rows(dataset: str, model: str, runs: list) -> list[Group]:
    """The runs of one (dataset, model) split into groups trained alike, each labelled when there are several."""
    alike: list[list] = []
    for run in runs:
        row = next((r for r in alike if not training_differences(r[0][1], run[1])), None)
        if row is None:
            alike.append([run])
        else:
            row.append(run)
    if len(alike) == 1:
        return [Group(dataset, model, alike[0])]
    configs = [row[0][1] for row in alike]
    keys = sorted({k for a, b in itertools.combinations(configs, 2) for k in training_differences(a, b)})
    labels = [_label(model, c, keys) for c in configs]
    if len(set(labels)) < len(labels):  # every differing setting, then
        labels = [f"{model} ({', '.join(_setting_text(k, c.get(k)) for k in keys)})" for c in configs]
    return [Group(dataset, model, row, label) for row, label in zip(alike, labels, strict=True)]


def _setting_text(key: str, value) -> str:
    return f"profile {value}" if key == "profile" else f"{key} {json.dumps(value, separators=(',', ':'))}"


def _label(model: str, config: dict, keys: list[str]) -> str:
    """``model (what sets this row apart)``: the profile when profiles differ, with the settings changed from it."""
    if "profile" in keys:
        base = models.defaults(model, config["dataset"], config["profile"])
        keys = ["profile"] + [k for k in keys if k != "profile" and config.get(k) != base.get(k)]
    return f"{model} ({', '.join(_setting_text(k, config.get(k)) for k in keys)})"


def _refuse_repeated_seeds(group: Group) -> None:
    """A ValueError naming the runs when a seed appears in two runs of one row."""
    holders: dict[int, list[Path]] = {}
    for path, config, _, _ in group.runs:
        for seed in config["seeds"]:
            holders.setdefault(seed, []).append(path)
    repeated = {seed: paths for seed, paths in holders.items() if len(paths) > 1}
    if not repeated:
        return
    lines = [
        f"{group.dataset}/{group.name}: seed {seed} is in {len(paths)} runs trained alike: "
        + ", ".join(str(p) for p in paths)
        for seed, paths in sorted(repeated.items())
    ]
    first = next(iter(repeated.values()))
    raise ValueError(
        "; ".join(lines)
        + ". Pooling them would count a seed twice; report one run per seed: leave the others out with "
        + f"--exclude GLOB (e.g. --exclude '{first[0].name}'), keep only some with --select GLOB (globs on "
        + "run directory names, repeatable), or point --runs at a folder holding only the runs to report"
    )


def stat(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "values": values,
    }


def fmt(s: dict | None, digits: int) -> str:
    if not s:
        return "—"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else "")


def summarize(group: Group) -> dict:
    """Every number of a group: metrics per seed with mean and std, their N and K, times, commands."""
    return {
        "model": group.model,
        "label": group.label,
        "seeds": [m["seed"] for m in group.members],
        "runs": [
            {
                "dir": path.name,
                "seeds": c["seeds"],
                "epochs": c["epochs"],
                "command": cfg.reproduce_command(c, models.get_model(c["model"])),
                "train_seconds": r["train_seconds_total"],
                "code": r.get("code"),
                "members_trained_together": r["members_trained_together"],
                "seconds_per_epoch": r["train_seconds_total"] / max(len(h), 1),
                "parameters": r["parameters"],
                "parameters_total": sum(r["parameters"].values()),
            }
            for path, c, r, h in group.runs
        ],
        "metrics": {key: stat(group.values(key)) for key, _, _ in metrics_of([group.model]) if group.values(key)},
        "compute": compute(group),
        "curves": curve_points(group),
        "class_shares": class_share_stats(group),
        "fid_samples": group.common("fid_samples"),
        "fid_reference": group.common("fid_reference"),
        "fid_floor_images": group.common("fid_floor_images"),
        "fid_weights": group.common("fid_weights"),
        "nll_samples": group.common("nll_samples"),
        "num_test": group.common("num_test"),
    } | fid_vs_time(group)


def fid_vs_time(group: Group) -> dict:
    """``{"fid_vs_time": ...}``: the row's validation FIDs against training minutes, ``{}`` without any.

    Per member (seed) its points (:func:`fgm.figures.fid_time_series`: minutes
    of update steps so far, shared by members trained together) and across
    members their mean at the epochs all of them measured
    (:func:`fgm.figures.fid_time_curve`).
    """
    members = [m | {"run": path.name} for path, _, _, h in group.runs for m in figures.fid_time_series(h)]
    return {"fid_vs_time": figures.fid_time_curve(members)} if members else {}


def class_share_stats(group: Group) -> dict | None:
    """Per class: the mean and sample std over members of the share of samples, and every member's shares."""
    shares = class_shares(group)
    if shares is None:
        return None
    std = shares.std(axis=0, ddof=1).tolist() if len(shares) > 1 else None
    return {"mean": shares.mean(axis=0).tolist(), "std": std, "values": shares.tolist()}


def curve_points(group: Group, every: int = 10) -> dict:
    """The learning curves at a few epochs, so that what the report says of them is checkable.

    Returns ``{"epochs": [1, every, 2 * every, ..., last], key: [mean over members at each epoch]}``
    for every logged ``train_*`` and ``val_*`` value, and ``val_minus_train``: the last epoch's
    validation minus training value of each quantity logged for both (the generalisation gap).
    """
    histories = [h for _, _, _, h in group.runs]
    logged_keys = {k for h in histories for r in h for m in r["members"] for k in m}
    keys = sorted(k for k in logged_keys if k.startswith(("train_", "val_")))
    series = {key: dict(zip(*_series(histories, key)[:2], strict=True)) for key in keys}
    logged = sorted({e for s in series.values() for e in s})
    if not logged:
        return {}
    epochs = sorted({logged[0], logged[-1], *(e for e in logged if e % every == 0)})
    points: dict = {"epochs": epochs}
    for key, by_epoch in series.items():
        points[key] = [float(by_epoch[e]) if e in by_epoch else None for e in epochs]
    last = logged[-1]
    both = [key[4:] for key in keys if key.startswith("val_") and "train_" + key[4:] in series]
    points["val_minus_train"] = {
        name: float(series["val_" + name][last] - series["train_" + name][last])
        for name in both
        if last in series["val_" + name] and last in series["train_" + name]
    }
    return points


def compute(group: Group) -> dict:
    """Seconds of wall time by part, summed over the group's runs and members.

    ``training``: the epochs' update steps (members trained together share
    them); ``validation``: the per-epoch evaluation, validation FID and sample
    grid, summed over the epochs that recorded it (``validation_epochs``:
    how many did, of how many; ``None`` when none did: epochs written before
    the record existed, or by a process started before it); then each
    part of every member's test evaluation (``eval_seconds``: the test
    objective, the IWAE NLL, sampling, Inception features of the samples and
    of real images not yet cached, the metrics, the classifier). ``total`` is
    their sum. ``per_member`` keeps each member's evaluation parts.
    """
    histories = [h for _, _, _, h in group.runs]
    epochs = [r for h in histories for r in h]
    validation = [r["validation_seconds"] for r in epochs if r.get("validation_seconds") is not None]
    parts: dict[str, float] = {
        "training": sum(r["train_seconds_total"] for _, _, r, _ in group.runs),
        "validation": sum(validation) if validation else None,
    }
    per_member = [{"seed": m["seed"], **m.get("eval_seconds", {})} for m in group.members]
    for member in per_member:
        for part, seconds in member.items():
            if part != "seed":
                parts[part] = parts.get(part, 0.0) + seconds
    parts = {k: (round(v, 1) if v is not None else None) for k, v in parts.items()}
    return {
        "seconds": parts,
        "total_seconds": round(sum(v for v in parts.values() if v is not None), 1),
        "validation_epochs": [len(validation), len(epochs)],
        "per_member": per_member,
    }


def compute_lines(summary: dict) -> list[str]:
    """A table of minutes by part per model, and the dataset's total."""
    parts = list(dict.fromkeys(p for s in summary.values() for p in s["compute"]["seconds"]))
    lines = [
        "Compute (wall minutes by part, all seeds; test parts summed over members):",
        "",
        "| model | " + " | ".join(p.replace("_", " ") for p in parts) + " | total |",
        "| --- " + "| ---: " * (len(parts) + 1) + "|",
    ]
    for model, s in summary.items():
        seconds = s["compute"]["seconds"]
        cells = ["—" if seconds.get(p) is None else f"{seconds[p] / 60:.1f}" for p in parts]
        recorded, epochs = s["compute"]["validation_epochs"]
        if "validation" in parts and 0 < recorded < epochs:  # a partial sum says so
            cells[parts.index("validation")] += f" ({recorded} of {epochs} epochs)"
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {s['compute']['total_seconds'] / 60:.1f} |")
    by_part = compute_by_part(summary)
    cells = ["—" if by_part.get(p) is None else f"{by_part[p] / 60:.1f}" for p in parts]
    total = sum(s["compute"]["total_seconds"] for s in summary.values())
    lines.append("| **all models** | " + " | ".join(cells) + f" | {total / 60:.1f} |")
    return lines + [
        "",
        f"Total: {total / 60:.1f} min ({total / 3600:.2f} h). Validation: only the epochs that recorded its time "
        "(— when none did).",
        "",
    ]


def compute_by_part(summary: dict) -> dict[str, float | None]:
    """Seconds per part summed over a dataset's models (``None``: no model recorded that part)."""
    parts = list(dict.fromkeys(p for s in summary.values() for p in s["compute"]["seconds"]))
    recorded = {p: [s["compute"]["seconds"].get(p) for s in summary.values()] for p in parts}
    return {
        p: (round(sum(v for v in values if v is not None), 1) if any(v is not None for v in values) else None)
        for p, values in recorded.items()
    }


def differences(models_: dict[str, dict]) -> list[dict]:
    """Pairwise differences of the mean test metrics, and whether each exceeds twice the larger std."""
    names = list(dict.fromkeys(s["model"] for s in models_.values()))  # rows -> their models
    rows, skipped = [], not_compared(names)
    for (a, sa), (b, sb) in itertools.combinations(models_.items(), 2):
        for key, _, digits in metrics_of(names):
            if key in sa["metrics"] and key in sb["metrics"] and key not in skipped:
                ma, mb = sa["metrics"][key], sb["metrics"][key]
                stds = [s for s in (ma["std"], mb["std"]) if s is not None]
                larger = max(stds) if len(stds) == 2 else None
                diff = mb["mean"] - ma["mean"]
                exceeds = None if larger is None else abs(diff) > 2 * larger
                row = dict(metric=key, a=a, b=b, difference=diff, larger_std=larger, exceeds_two_std=exceeds)
                rows.append(row | {"digits": digits})
    return rows


def results_lines(dataset: str, summary: dict) -> list[str]:
    own = metrics_of(list(dict.fromkeys(s["model"] for s in summary.values())))
    shown = [(k, t, d) for k, t, d in own if any(k in s["metrics"] for s in summary.values())]
    lines = [
        f"## {dataset.upper()}",
        "",
        "| model | seeds | epochs | training time | parameters | " + " | ".join(t for _, t, _ in shown) + " |",
    ]
    lines.append("| --- " * 5 + "| ---: " * len(shown) + "|")
    for model, s in summary.items():
        times = ", ".join(
            f"{r['train_seconds'] / 60:.1f} min"
            + (f" ({r['members_trained_together']} seeds together)" if r["members_trained_together"] > 1 else "")
            for r in s["runs"]
        )
        lines.append(
            f"| {model} | {', '.join(map(str, s['seeds']))} | {', '.join(str(r['epochs']) for r in s['runs'])} "
            f"| {times} | {s['runs'][0]['parameters_total']:,} | "
            + " | ".join(fmt(s["metrics"].get(k), d) for k, _, d in shown)
            + " |"
        )
    lines += [
        "",
        "Mean ± sample standard deviation over seeds (one seed: the value). Training time: the epochs' "
        "training seconds of the run (seeds trained together share it).",
        "",
    ]
    for model, s in summary.items():
        parts = []
        if s["fid_samples"]:
            floor = f"; floor: {', '.join(s['fid_floor_images'])} vs the same" if s["fid_floor_images"] else ""
            parts.append(
                f"FID, KID and precision/recall (k = 3) from {', '.join(s['fid_samples'])} samples vs "
                f"{', '.join(s['fid_reference'])} ({', '.join(s['fid_weights'])} Inception weights){floor}"
            )
        if s["nll_samples"]:
            parts.append(f"NLL: IWAE with K = {', '.join(s['nll_samples'])} on {', '.join(s['num_test'])} test images")
        if parts:
            lines.append(f"- {model}: " + "; ".join(parts).replace('"', ""))
    lines += ["", *compute_lines(summary)]
    lines += [
        "",
        "Differences between models (b − a; 'yes' when |b − a| > 2 × the larger std over seeds):",
        "",
        "| metric | a | b | b − a | larger std | > 2 std |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for d in differences(summary):
        verdict = {True: "yes", False: "no", None: "— (one seed)"}[d["exceeds_two_std"]]
        larger = "—" if d["larger_std"] is None else f"{d['larger_std']:.{d['digits']}f}"
        diff = f"{d['difference']:+.{d['digits']}f}"
        lines.append(f"| {d['metric']} | {d['a']} | {d['b']} | {diff} | {larger} | {verdict} |")
    lines += ["", "Commands (and the commit that wrote the results):", ""]
    runs = [r for s in summary.values() for r in s["runs"]]
    lines += [f"- `{r['dir']}`: `{r['command']}` ({r['code'] or 'commit not recorded'})" for r in runs]
    return lines + [""]


def _per_epoch(histories: list[list[dict]], value_of):
    """Per logged epoch, the mean and std over members of ``value_of(member record)`` (``None``: skipped)."""
    per_epoch: dict[int, list[float]] = {}
    for history in histories:
        for record in history:
            for m in record["members"]:
                value = value_of(m)
                if value is not None:
                    per_epoch.setdefault(record["epoch"], []).append(value)
    epochs = sorted(per_epoch)
    mean = np.array([statistics.fmean(per_epoch[e]) for e in epochs])
    std = np.array([statistics.stdev(per_epoch[e]) if len(per_epoch[e]) > 1 else 0.0 for e in epochs])
    return epochs, mean, std


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _series(histories: list[list[dict]], key: str):
    return _per_epoch(histories, lambda m: _number(m.get(key)))


def _gap_series(histories: list[list[dict]], name: str):
    """Per epoch, mean and std over members of ``val_<name> − train_<name>``."""

    def gap(m):
        val, train = _number(m.get(f"val_{name}")), _number(m.get(f"train_{name}"))
        return None if val is None or train is None else val - train

    return _per_epoch(histories, gap)


def row_colours(groups: list[Group]) -> dict[str, str]:
    """Each row's colour: the model's own (:func:`colours`) for a model's only row, else one of the extra colours."""
    extra = iter(_MORE_COLOURS * (1 + len(groups) // len(_MORE_COLOURS)))
    own = colours(list(dict.fromkeys(g.model for g in groups)))
    return {g.name: own[g.model] if g.label is None else next(extra) for g in groups}


def curves_figure(groups: list[Group], path: Path) -> Path | None:
    """Train (dashed) and validation (solid) curves of every model of a dataset; mean with a ±1 std band."""
    own = [(m.name, m.curve) for g in groups for m in models.get_model(g.model).metrics if m.curve]
    panels = [*dict.fromkeys(own), ("fid", "validation FID (small N: a trend)")]
    colour_of = row_colours(groups)
    drawn_panels = []
    for name, title in panels:
        lines = []
        for g in groups:
            for split, style in (("val", "-"), ("train", "--")):
                epochs, mean, std = _series([h for *_, h in g.runs], f"{split}_{name}")
                if epochs:
                    lines.append((f"{g.name} {split}", style, colour_of[g.name], epochs, mean, std))
        if lines:
            drawn_panels.append((title, lines))
    # over- or under-fitting is read from this difference, too small to see on the curves' scale; the
    # first epochs are left out: there the training average (over an epoch of a fast-improving model)
    # lags the end-of-epoch validation value by tens of nats
    gaps = []
    for g in groups:
        epochs, gap, gap_std = _gap_series([h for *_, h in g.runs], "neg_elbo")
        keep = [i for i, e in enumerate(epochs) if e >= GAP_FROM_EPOCH]
        if keep:
            line = ([epochs[i] for i in keep], gap[keep], gap_std[keep])
            gaps.append((f"{g.name} val − train", "-", colour_of[g.name], *line))
    if gaps:
        drawn_panels.insert(1, (f"generalisation gap, val − train −ELBO (from epoch {GAP_FROM_EPOCH})", gaps))
    if not drawn_panels:
        return None
    cols = 4
    rows = math.ceil(len(drawn_panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(drawn_panels) :]:
        ax.set_visible(False)
    for ax, (title, lines) in zip(axes.flat, drawn_panels, strict=False):
        for label, style, colour, epochs, mean, std in lines:
            ax.plot(epochs, mean, style, color=colour, marker="o", markersize=2.5, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figures.save_figure(fig, path, dpi=100)


def time_lines(dataset: str, groups: list[Group], rows: dict, out: Path) -> list[str]:
    """``out/<dataset>/fid-vs-time.png`` and the equal-time table (:func:`fgm.figures.equal_time`), as Markdown."""
    curves = {name: s["fid_vs_time"] for name, s in rows.items() if "fid_vs_time" in s}
    equal, colour = figures.equal_time(curves), row_colours(groups)
    drawn = [(name, colour[name], c) for name, c in curves.items()]
    if not figures.plot_fid_vs_time(drawn, out / dataset / "fid-vs-time.png", equal and equal["minutes"]):
        return []
    sizes = " or ".join(f"{n:,}" for n in sorted({n for c in curves.values() for n in c["samples"]})) or "?"
    lines = ["### Validation FID against training time", "", f"![fid vs time]({dataset}/fid-vs-time.png)", ""]
    lines += [
        f"Validation FIDs of {sizes} samples against as many validation images (not the test protocol), at the "
        "epochs that measured them; minutes: the update steps so far (seeds trained together: the time of all of "
        "them together). Bold: mean over seeds, band: min–max."
        + (" The rows' N differ: their FIDs are not comparable." if " or " in sizes else ""),
        "",
    ]
    if equal:
        lines += [f"At equal training time T = {equal['minutes']:.1f} min (the shortest final time) and at the end:"]
        lines += ["", "| model | FID at T | final FID | final minutes | N | seeds trained together |"]
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, r in equal["rows"].items():
            at = f"{r['fid_at_T']:.2f}" + (" (first point, after T)" if r["before_first_point"] else "")
            n, together = (", ".join(map(str, r[k])) or "?" for k in ("samples", "trained_together"))
            cells = [at, f"{r['final_fid']:.2f}", f"{r['final_minutes']:.1f}", n, together]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def class_shares(group: Group) -> np.ndarray | None:
    """``[members, classes]``: each member's share of samples per class, ``None`` without histograms."""
    rows = [np.asarray(m["class_histogram"], float) for m in group.members if m.get("class_histogram")]
    return np.stack([r / r.sum() for r in rows]) if rows else None


def classes_figure(groups: list[Group], path: Path, reference: list[float] | None = None) -> Path | None:
    """Each model's class shares of its samples (mean over seeds, ±1 std bars), by the dataset classifier.

    ``reference``: the test labels' shares, drawn as a line. The band marks 7–13%, the issue's target
    for every class. ``None`` when no run has a class histogram.
    """
    colour_of = row_colours(groups)
    shares = {g.name: class_shares(g) for g in groups}
    shares = {model: rows for model, rows in shares.items() if rows is not None}
    if not shares:
        return None
    classes = np.arange(next(iter(shares.values())).shape[1])
    width = 0.8 / len(shares)
    fig, ax = plt.subplots(figsize=(9, 3.4))
    ax.axhspan(0.07, 0.13, color="0.92", label="7–13%")
    for i, (model, rows) in enumerate(shares.items()):
        std = rows.std(axis=0, ddof=1) if len(rows) > 1 else None
        ax.bar(
            classes + (i - (len(shares) - 1) / 2) * width,
            rows.mean(axis=0),
            width,
            yerr=std,
            capsize=2,
            color=colour_of[model],
            label=f"{model} ({len(rows)} seed{'s' if len(rows) > 1 else ''})",
        )
    if reference is not None:
        ax.step(
            np.append(classes, classes[-1] + 1) - 0.5,
            np.append(reference, reference[-1]),
            where="post",
            color="black",
            linewidth=1,
            label="test labels",
        )
    top = max(float((rows.mean(axis=0) + (rows.std(axis=0) if len(rows) > 1 else 0)).max()) for rows in shares.values())
    ax.set_ylim(0, 1.3 * max(top, 0.13))  # room for the legend above the bars
    ax.set(xticks=classes, xlabel="class (the dataset classifier's reading)", ylabel="share of samples")
    ax.legend(fontsize=7, ncol=len(shares) + 2)
    return figures.save_figure(fig, path, dpi=110)


def test_label_shares(dataset: str, data_dir: str | None = None) -> list[float] | None:
    """The test labels' class shares; ``None`` when the dataset is not on this machine (the line is left out)."""
    try:
        labels = fdata.load(dataset, "test", data_dir).labels
    except fdata.DataError:
        return None
    counts = np.bincount(np.asarray(labels)).astype(float)
    return list(counts / counts.sum())


def figure_lines(dataset: str, groups: list[Group], out: Path, data_dir: str | None = None) -> list[str]:
    """The dataset's figures, written under ``out/<dataset>/``, as Markdown image links."""
    folder, lines = out / dataset, []
    firsts = [(g.name, g.runs[0][0], g.runs[0][1]) for g in groups]  # the figures of each row's first run
    slugs = {g.name: g.slug for g in groups}
    if curves_figure(groups, folder / "curves.png"):
        lines += ["### Learning curves", "", f"![learning curves]({dataset}/curves.png)", ""]

    def grid_title(model: str, seeds: list[int], epoch: int) -> str:  # a run's grid holds every member's rows
        rows = 8 // len(seeds) if len(seeds) <= 8 else 0
        split = f", {rows} rows each" if 1 < len(seeds) <= 8 else ""
        return f"{model} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}{split}, epoch {epoch})"

    if classes_figure(groups, folder / "classes.png", test_label_shares(dataset, data_dir)):
        lines += [
            "### Class coverage of the samples",
            "",
            "The dataset classifier's class of each sample; bars are the mean share over seeds (±1 std), "
            "the line the test labels' shares.",
            "",
            f"![classes]({dataset}/classes.png)",
            "",
        ]
    grids = [
        (grid_title(m, c["seeds"], figures.sample_epochs(p)[-1][0]), figures.sample_epochs(p)[-1][1])
        for m, p, c in firsts
        if figures.sample_epochs(p)
    ]
    if figures.side_by_side(grids, folder / "samples.png"):
        lines += ["### Samples (the same fixed latents per model)", "", f"![samples]({dataset}/samples.png)", ""]
    return lines + interpolation_lines(dataset, firsts, folder) + progression_lines(dataset, firsts, slugs, folder)


def interpolation_lines(dataset: str, firsts: list, folder: Path) -> list[str]:
    """Each interpolation kind's strips of every row's first run side by side, as Markdown."""
    kinds: dict[str, list] = {}
    for model, path, c in firsts:
        sub = path / rundir.INTERPOLATIONS / (f"s{c['seeds'][0]}" if len(c["seeds"]) > 1 else "")
        index = rundir.read_json(sub / figures.INDEX) if (sub / figures.INDEX).exists() else {"kinds": {}}
        for kind, info in index["kinds"].items():
            kinds.setdefault(kind, []).append((model, sub / info["file"], info["caption"]))
    lines = ["### Interpolations", ""] if kinds else []
    for kind, entries in kinds.items():
        figures.side_by_side([(m, p) for m, p, _ in entries], folder / f"interp-{kind}.png")
        lines += [
            f"**{kind}**: " + "; ".join(f"{m}: {caption}" for m, _, caption in entries),
            "",
            f"![{kind}]({dataset}/interp-{kind}.png)",
            "",
        ]
    return lines


def progression_lines(dataset: str, firsts: list, slugs: dict[str, str], folder: Path) -> list[str]:
    """Each row's sample progression (PNG and GIF copied beside the report), as Markdown."""
    lines = []
    for model, path, _ in firsts:
        for name in (figures.PROGRESSION_PNG, figures.PROGRESSION_GIF):
            if (path / "samples" / name).exists():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(
                    path / "samples" / name, folder / f"{Path(name).stem}-{slugs[model]}{Path(name).suffix}"
                )
        if (folder / f"progression-{slugs[model]}.png").exists():
            lines += [
                f"Progression of {model} (the same latents through training; the GIF has every grid):",
                "",
                f"![progression {model}]({dataset}/progression-{slugs[model]}.png)",
                "",
            ]
    return lines


def build_report(
    runs_root: str | Path = "runs",
    out: str | Path = "reports",
    data_dir: str | None = None,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> dict:
    """Writes ``RESULTS.md``, ``summary.json`` and the figures; returns the summary.

    ``select``/``exclude``: globs on run directory names (:func:`collect`).
    """
    runs_root, out = Path(runs_root), Path(out)
    groups = collect(runs_root, select, exclude)
    chosen = "".join(f" --select '{g}'" for g in select) + "".join(f" --exclude '{g}'" for g in exclude)
    import torch

    summary = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "datasets": {},
    }
    lines = [
        "# Results (generated)",
        "",
        f"Generated by `python -m experiments.run report --runs {runs_root} --out {out}{chosen}` from the run "
        "directories; numbers and pictures only. The analysis is in [REPORT.md](REPORT.md).",
        "",
    ]
    for dataset, by_model in groups.items():
        rank = {m: i for i, m in enumerate(model_order(list(dict.fromkeys(g.model for g in by_model.values()))))}
        ordered = sorted(by_model.values(), key=lambda g: (rank[g.model], g.name))
        summary["datasets"][dataset] = {g.name: summarize(g) for g in ordered}
        rows = summary["datasets"][dataset]
        lines += results_lines(dataset, rows) + time_lines(dataset, ordered, rows, out)
        lines += figure_lines(dataset, ordered, out, data_dir)
    summary["compute_seconds"] = {
        dataset: round(sum(s["compute"]["total_seconds"] for s in by_model.values()), 1)
        for dataset, by_model in summary["datasets"].items()
    }
    summary["compute_by_part"] = {
        dataset: compute_by_part(by_model) for dataset, by_model in summary["datasets"].items()
    }
    summary["differences"] = {dataset: differences(by_model) for dataset, by_model in summary["datasets"].items()}
    summary["equal_time"] = {
        dataset: figures.equal_time({n: s["fid_vs_time"] for n, s in rows.items() if "fid_vs_time" in s})
        for dataset, rows in summary["datasets"].items()
    }
    summary["test_label_shares"] = {dataset: test_label_shares(dataset, data_dir) for dataset in groups}
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text("\n".join(lines))
    rundir.write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="folder of run directories (default: runs)")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--data-dir", help="dataset root, for the test labels' shares (default: $FGM_DATA_DIR)")
    cfg.add_import_flag(parser)
    for flag, text in (("--select", "report only the run directories named so"), ("--exclude", "leave them out")):
        parser.add_argument(flag, action="append", default=[], metavar="GLOB", help=f"{text} (a glob, repeatable)")
    args = parser.parse_args(argv)
    summary = build_report(args.runs, args.out, args.data_dir, args.select, args.exclude)
    print(
        f"{Path(args.out) / 'RESULTS.md'} and summary.json: {sum(len(m) for m in summary['datasets'].values())} "
        f"row(s) on {', '.join(summary['datasets']) or 'no dataset'}"
    )
    return 0
