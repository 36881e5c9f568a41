"""The comparison report: ``reports/REPORT.md`` and its figures, built from run directories.

    python -m experiments.report                       # runs/ -> reports/
    python -m experiments.report --runs runs --out reports

Every number in the report is read from the runs (``results.json``,
``metrics.jsonl``, ``config.json``, ``interpolations/index.json`` and the
sample grids) and formatted here; the prose is templated, and its comparative
words ("lower", "higher") follow the numbers. Run directories of one
(model, dataset, configuration) that differ only in the seed are aggregated:
the tables then show mean ± sample standard deviation over the seeds. A
``results.json`` that holds several members (a seed ensemble: a list under
``members``, ``per_seed``, ``seed_results`` or ``runs``) counts as one run per
member.

Layout of the output::

    reports/REPORT.md
    reports/<dataset>/curves.png              learning curves of all models
    reports/<dataset>/samples.png             final sample grids side by side
    reports/<dataset>/interp-<kind>.png       interpolations side by side
    reports/<dataset>/progression-<model>.png / .gif
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional

import numpy as np

from experiments import analysis, plots
from fgm import data as fdata

plt = plots.plt

MODEL_ORDER = ("vae_std", "vae_flow", "gan")
VAE_MODELS = ("vae_std", "vae_flow")
# config keys that do not change what a run trains (seeds are aggregated over)
_NOT_CONFIG = {"seed", "seeds", "out", "data_dir"}
_MEMBER_LISTS = ("members", "per_seed", "seed_results", "runs")
# flags of experiments.run that set a config key
_FLAGS = {
    "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "sample_every": "--sample-every",
    "train_limit": "--train-limit", "val_limit": "--val-limit", "test_limit": "--test-limit",
    "nll_samples": "--nll-samples", "fid_samples": "--fid-samples", "fid_reference_count": "--fid-reference-count",
}
KIND_TITLES = {
    "prior_noise": "Prior draws, linear path in the Gaussian noise space",
    "prior_noise_slerp": "Prior draws, spherical path (slerp) in the Gaussian noise space",
    "prior_latent": "vae_flow: the same draws, linear path in latent space z = f(u)",
    "test_latent": "Two test images: linear path between their posterior means (latent space)",
    "test_base": "vae_flow: two test images, linear path in base space u = f⁻¹(μ(x))",
}


# --------------------------------------------------------------------------- reading runs


class Member(NamedTuple):
    """One trained model (one seed).

    Attributes:
      run_dir: the directory holding its results (shared by ensemble members).
      results: its ``results.json`` entries (an ensemble member's merged over the shared ones).
      config: the run's ``config.json`` (``{}`` when absent).
      seed: its seed, if known.
      metrics: its per-epoch records (``[]`` when unknown).
      figures_dir: where its ``samples/`` and ``interpolations/`` live, or ``None``.
      ensemble: the number of members trained together with it (1 for a single run).
    """

    run_dir: Path
    results: dict
    config: dict
    seed: Optional[int]
    metrics: list
    figures_dir: Optional[Path]
    ensemble: int = 1


class Group(NamedTuple):
    """The members of one (dataset, model, configuration)."""

    dataset: str
    model: str
    members: list

    @property
    def seeds(self) -> list:
        return sorted((m.seed for m in self.members if m.seed is not None))

    @property
    def first(self) -> Member:
        """The member whose figures are shown (lowest seed)."""
        return sorted(self.members, key=lambda m: (m.seed is None, m.seed or 0, str(m.run_dir)))[0]

    def values(self, key: str) -> list[float]:
        out = []
        for m in self.members:
            v = _get(m.results, key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def mean(self, key: str) -> Optional[float]:
        vals = self.values(key)
        return statistics.fmean(vals) if vals else None

    def std(self, key: str) -> Optional[float]:
        vals = self.values(key)
        return statistics.stdev(vals) if len(vals) > 1 else None


def _get(results: dict, key: str) -> Any:
    """``results[key]``, also looking in ``final_val`` and summing ``parameters``."""
    if key == "parameters_total":
        params = results.get("parameters")
        return sum(v for v in params.values() if isinstance(v, (int, float))) if isinstance(params, dict) else None
    if key in results:
        return results[key]
    return (results.get("final_val") or {}).get(key)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _members_of(run_dir: Path, results: dict, config: dict) -> list[Member]:
    """One member per seed of a run directory (several for a seed ensemble, ``experiments/ensemble.py``).

    An ensemble's ``results.json`` lists its members under ``members`` (each
    with ``seed``, its ``test_*`` and ``final_val``) beside the shared entries
    (``epochs``, ``num_test``, ``parameters_per_member``, the ensemble's
    training time...); its ``metrics.jsonl`` records hold a ``members`` list
    per epoch.
    """
    records = plots.read_metrics(run_dir / "metrics.jsonl")
    shared = {k: v for k, v in results.items() if k not in (*_MEMBER_LISTS, "mean", "std")}
    if "parameters" not in shared and isinstance(shared.get("parameters_per_member"), dict):
        shared["parameters"] = shared["parameters_per_member"]
    for name in _MEMBER_LISTS:
        listed = results.get(name)
        if isinstance(listed, dict) and listed and all(isinstance(v, dict) for v in listed.values()):
            listed = [{"seed": _as_int(k), **v} for k, v in listed.items()]
        if not (isinstance(listed, list) and listed and all(isinstance(v, dict) for v in listed)):
            continue
        members = []
        for i, entry in enumerate(listed):
            sub = _member_dir(run_dir, entry)
            if sub is not None:
                metrics = plots.read_metrics(sub / "metrics.jsonl")
            else:
                metrics = [
                    {"epoch": r.get("epoch"), **r["members"][i], "epoch_seconds": r.get("epoch_seconds")}
                    for r in records
                    if isinstance(r.get("members"), list) and len(r["members"]) > i and isinstance(r["members"][i], dict)
                ]
            members.append(Member(run_dir, {**shared, **entry}, config, _as_int(entry.get("seed")), metrics,
                                  sub or (run_dir if i == 0 else None), len(listed)))
        return members
    seed = _as_int(results.get("seed", config.get("seed")))
    return [Member(run_dir, shared, config, seed, records, run_dir, 1)]


def _member_dir(run_dir: Path, entry: dict) -> Optional[Path]:
    """A member's own directory, when its entry names one that exists."""
    for where in ("run_dir", "out", "path", "dir"):
        if isinstance(entry.get(where), str):
            for candidate in (Path(entry[where]), run_dir / entry[where], run_dir / Path(entry[where]).name):
                if candidate.is_dir():
                    return candidate
    return None


def _as_int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def discover(runs_root: str | Path) -> list[Member]:
    """Every trained model under ``runs_root`` (directories with a ``results.json``)."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    members: list[Member] = []
    ensembles: list[Path] = []
    for path in sorted(root.rglob("results.json")):
        run_dir = path.parent
        if any(run_dir != e and e in run_dir.parents for e in ensembles):
            continue  # a member directory of an ensemble already counted
        results = _read_json(path)
        config = _read_json(run_dir / "config.json")
        if not (results.get("model") or config.get("model")) or not (results.get("dataset") or config.get("dataset")):
            continue
        results.setdefault("model", config.get("model"))
        results.setdefault("dataset", config.get("dataset"))
        found = _members_of(run_dir, results, config)
        if len(found) > 1:
            ensembles.append(run_dir)
            members = [m for m in members if run_dir not in m.run_dir.parents]
        members.extend(found)
    return members


def _fingerprint(member: Member) -> str:
    if member.config:
        return json.dumps({k: v for k, v in member.config.items() if k not in _NOT_CONFIG}, sort_keys=True, default=str)
    return json.dumps({"epochs": member.results.get("epochs")})


def group_runs(members: Iterable[Member]) -> tuple[dict, list]:
    """``({(dataset, model): Group}, [other groups])``.

    Members of the same (dataset, model) and configuration form a group; when
    a model has several configurations, the one with the most seeds (then the
    newest) is compared and the others are listed separately.
    """
    by_config: dict[tuple, list[Member]] = {}
    # single runs first: a seed trained both alone and in an ensemble counts once, as the single run
    for m in sorted(members, key=lambda m: m.ensemble > 1):
        same = by_config.setdefault((m.results["dataset"], m.results["model"], _fingerprint(m)), [])
        if m.seed is None or all(o.seed != m.seed for o in same):
            same.append(m)
    chosen: dict[tuple, Group] = {}
    others: list[Group] = []
    candidates: dict[tuple, list[Group]] = {}
    for (dataset, model, _), ms in by_config.items():
        candidates.setdefault((dataset, model), []).append(Group(dataset, model, ms))

    def newest(g: Group) -> float:
        return max((m.run_dir / "results.json").stat().st_mtime if (m.run_dir / "results.json").exists() else 0.0
                   for m in g.members)

    for key, groups in candidates.items():
        groups = sorted(groups, key=lambda g: (len(g.members), newest(g)), reverse=True)
        chosen[key] = groups[0]
        others.extend(groups[1:])
    return chosen, others


# --------------------------------------------------------------------------- formatting


def fmt_number(value: Optional[float], digits: int = 2) -> str:
    """``value`` with ``digits`` decimals and thousands separators; ``—`` when absent."""
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def fmt_stat(group: Group, key: str, digits: int = 2) -> str:
    """Mean (± sample standard deviation over seeds when there are several) of ``key``."""
    vals = group.values(key)
    if not vals:
        return "—"
    if len(vals) == 1:
        return fmt_number(vals[0], digits)
    return f"{fmt_number(statistics.fmean(vals), digits)} ± {fmt_number(statistics.stdev(vals), digits)}"


def fmt_count(value) -> str:
    return "—" if value is None else f"{int(value):,}"


def fmt_minutes(seconds: Optional[float]) -> str:
    """``"5.5 min"``; under a minute ``"42 s"``."""
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _unique(group: Group, key: str) -> list:
    seen = []
    for m in group.members:
        v = _get(m.results, key)
        if v is not None and v not in seen:
            seen.append(v)
    return seen


def _seeds_text(group: Group) -> str:
    seeds = group.seeds
    return ", ".join(map(str, seeds)) if seeds else "?"


def _nll_unit(dataset: str) -> tuple[str, str, int]:
    """``(results key suffix, unit, digits)`` of the NLL / −ELBO columns of ``dataset``."""
    spec = fdata.get_spec(dataset)
    if spec.likelihood == "discretized_logistic":
        return "bits_per_dim", "bits/dim", 3
    return "", "nats", 2


# --------------------------------------------------------------------------- tables


def results_table(dataset: str, groups: list[Group]) -> list[str]:
    """The main table of ``dataset``: one row per model."""
    suffix, unit, digits = _nll_unit(dataset)
    nll_key = "test_nll_bits_per_dim" if suffix else "test_nll"
    elbo_key = "test_bits_per_dim" if suffix else "test_neg_elbo"
    lines = [
        f"| model | seeds | epochs | training time | parameters | test FID ↓ | FID samples vs reference "
        f"| test NLL ↓ ({unit}) | NLL: K, test images | test −ELBO ↓ ({unit}) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for g in groups:
        fid_n = _unique(g, "fid_samples")
        fid_ref = _unique(g, "fid_reference")
        fid_what = (f"{', '.join(fmt_count(n) for n in fid_n)} vs {', '.join(map(str, fid_ref)) or '?'}"
                    if g.values("test_fid") else "not computed")
        ks = _unique(g, "nll_samples")
        n_test = _unique(g, "num_test")
        if g.values(nll_key):
            nll_what = f"K = {', '.join(fmt_count(k) for k in ks)}, {', '.join(fmt_count(n) for n in n_test)} images"
        else:
            nll_what = "no likelihood" if g.model == "gan" else "not computed"
        lines.append(
            f"| {g.model} | {_seeds_text(g)} | {', '.join(fmt_count(e) for e in _unique(g, 'epochs'))} "
            f"| {fmt_minutes(g.mean('train_seconds_total'))} | {fmt_count(g.mean('parameters_total'))} "
            f"| {fmt_stat(g, 'test_fid', 2)} | {fid_what} | {fmt_stat(g, nll_key, digits)} | {nll_what} "
            f"| {fmt_stat(g, elbo_key, digits)} |"
        )
    return lines


def vae_terms_table(groups: list[Group]) -> list[str]:
    """The VAEs' test objective in nats per image: −ELBO = recon + KL, and its gap to the NLL."""
    vaes = [g for g in groups if g.values("test_neg_elbo")]
    if not vaes:
        return []
    lines = [
        "| model | test −ELBO (nats) | reconstruction −E[log p(x\\|z)] | KL(q(z\\|x) ‖ p(z)) | test NLL (nats) | −ELBO − NLL |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g in vaes:
        gaps = [m.results["test_neg_elbo"] - m.results["test_nll"] for m in g.members
                if isinstance(m.results.get("test_neg_elbo"), (int, float)) and isinstance(m.results.get("test_nll"), (int, float))]
        gap = "—" if not gaps else (fmt_number(gaps[0]) if len(gaps) == 1 else
                                    f"{fmt_number(statistics.fmean(gaps))} ± {fmt_number(statistics.stdev(gaps))}")
        lines.append(f"| {g.model} | {fmt_stat(g, 'test_neg_elbo')} | {fmt_stat(g, 'test_recon')} | "
                     f"{fmt_stat(g, 'test_kl')} | {fmt_stat(g, 'test_nll')} | {gap} |")
    return lines


def gan_table(groups: list[Group]) -> list[str]:
    gans = [g for g in groups if g.values("test_d_loss")]
    if not gans:
        return []
    lines = ["| model | test D(x) | test D(G(z)) | test D loss | test G loss |", "| --- | ---: | ---: | ---: | ---: |"]
    for g in gans:
        lines.append(f"| {g.model} | {fmt_stat(g, 'test_d_real', 3)} | {fmt_stat(g, 'test_d_fake', 3)} | "
                     f"{fmt_stat(g, 'test_d_loss', 3)} | {fmt_stat(g, 'test_g_loss', 3)} |")
    return lines


# --------------------------------------------------------------------------- figures


def _series(group: Group, key: str) -> tuple[list[int], np.ndarray, Optional[np.ndarray]]:
    """Epochs, mean and (with several seeds) std of a metric over the group's members."""
    per_epoch: dict[int, list[float]] = {}
    for m in group.members:
        for r in m.metrics:
            v = r.get(key)
            if isinstance(v, (int, float)) and "epoch" in r:
                per_epoch.setdefault(int(r["epoch"]), []).append(float(v))
    epochs = sorted(per_epoch)
    mean = np.array([statistics.fmean(per_epoch[e]) for e in epochs])
    std = (np.array([statistics.stdev(per_epoch[e]) if len(per_epoch[e]) > 1 else 0.0 for e in epochs])
           if len(group.members) > 1 else None)
    return epochs, mean, std


def _plot(ax, group: Group, key: str, label: str, style: str, colour) -> bool:
    epochs, mean, std = _series(group, key)
    if not epochs:
        return False
    ax.plot(epochs, mean, style, color=colour, marker="o", markersize=2.5, label=label)
    if std is not None:
        ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    return True


def curves_figure(groups: list[Group], path: Path) -> Optional[Path]:
    """Learning curves of every model of a dataset in one figure.

    Top row: the VAEs overlaid (negative ELBO, reconstruction, KL; validation
    solid, training dashed) and the validation FID of any model that logged
    it. Bottom row: the GAN (D and G losses, D(x) and D(G(z)) on training and
    validation data). With several seeds: mean line, ±1 std band.
    """
    colours = {"vae_std": "tab:blue", "vae_flow": "tab:orange", "gan": "tab:green"}
    vaes = [g for g in groups if g.model in VAE_MODELS or any("val_neg_elbo" in r for m in g.members for r in m.metrics)]
    gans = [g for g in groups if any("val_d_loss" in r for m in g.members for r in m.metrics)]
    fids = [g for g in groups if any("val_fid" in r for m in g.members for r in m.metrics)]
    rows = [r for r in (("vae", vaes), ("gan", gans)) if r[1]]
    if not rows and not fids:
        return None
    ncols = 4 if fids else 3
    fig, axes = plt.subplots(max(len(rows), 1), ncols, figsize=(4.0 * ncols, 3.2 * max(len(rows), 1)), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for i, (kind, gs) in enumerate(rows):
        if kind == "vae":
            panels = [("neg_elbo", "negative ELBO (nats)"), ("recon", "reconstruction (nats)"), ("kl", "KL (nats)")]
            for ax, (name, title) in zip(axes[i], panels):
                drawn = False
                for g in gs:
                    c = colours.get(g.model)
                    drawn |= _plot(ax, g, f"val_{name}", f"{g.model} val", "-", c)
                    drawn |= _plot(ax, g, f"train_{name}", f"{g.model} train", "--", c)
                _finish(ax, title, drawn)
        else:
            for g in gs[:1]:
                c = colours.get(g.model, "tab:green")
                ax = axes[i][0]
                drawn = _plot(ax, g, "val_d_loss", "D loss val", "-", "tab:red")
                drawn |= _plot(ax, g, "train_d_loss", "D loss train", "--", "tab:red")
                drawn |= _plot(ax, g, "val_g_loss", "G loss val", "-", "tab:purple")
                drawn |= _plot(ax, g, "train_g_loss", "G loss train", "--", "tab:purple")
                _finish(ax, f"{g.model}: losses", drawn)
                ax = axes[i][1]
                drawn = _plot(ax, g, "val_d_real", "D(x) val", "-", "tab:blue")
                drawn |= _plot(ax, g, "train_d_real", "D(x) train", "--", "tab:blue")
                drawn |= _plot(ax, g, "val_d_fake", "D(G(z)) val", "-", c)
                drawn |= _plot(ax, g, "train_d_fake", "D(G(z)) train", "--", c)
                _finish(ax, f"{g.model}: discriminator outputs", drawn)
    if fids:
        ax = axes[0][ncols - 1]
        drawn = False
        for g in fids:
            drawn |= _plot(ax, g, "val_fid", g.model, "-", colours.get(g.model))
        _finish(ax, "validation FID (small N: a trend)", drawn)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finish(ax, title: str, drawn: bool) -> None:
    ax.set_visible(True)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def side_by_side(panels: list[tuple[str, Path]], path: Path, width: float = 4.0) -> Optional[Path]:
    """Images next to each other, each titled; ``None`` when there is nothing to show."""
    panels = [(t, p) for t, p in panels if p is not None and p.exists()]
    if not panels:
        return None
    images = [(t, _read_image(p)) for t, p in panels]
    aspect = max(im.shape[0] / im.shape[1] for _, im in images)
    fig, axes = plt.subplots(1, len(images), figsize=(width * len(images), width * aspect + 0.5), squeeze=False)
    for ax, (title, image) in zip(axes[0], images):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def final_grid(member: Member) -> tuple[Optional[int], Optional[Path]]:
    """``(epoch, path)`` of the member's last sample grid."""
    if member.figures_dir is None:
        return None, None
    grids = analysis.sample_epochs(member.figures_dir)
    return grids[-1] if grids else (None, None)


def interpolation_index(member: Member) -> dict:
    if member.figures_dir is None:
        return {}
    return _read_json(member.figures_dir / analysis.INTERPOLATIONS / analysis.INDEX)


# --------------------------------------------------------------------------- image statistics


def grid_tiles(path: Path, shape: tuple[int, int, int], nrow: int = 8, padding: int = 2) -> Optional[np.ndarray]:
    """The images of a ``save_grid`` PNG as ``float [N, C, H, W]`` in ``[0, 1]``."""
    c, h, w = shape
    image = _read_image(path).astype(np.float64) / 255.0
    rows = (image.shape[0] - padding) // (h + padding)
    cols = (image.shape[1] - padding) // (w + padding)
    if rows < 1 or cols < 1 or cols != nrow:
        return None
    tiles = []
    for i in range(rows):
        for j in range(cols):
            y, x = padding + i * (h + padding), padding + j * (w + padding)
            tile = image[y : y + h, x : x + w].transpose(2, 0, 1)
            tiles.append(tile[:1] if c == 1 else tile)
    return np.stack(tiles)


def sample_statistics(tiles: np.ndarray) -> dict[str, float]:
    """Simple, model-agnostic measures of a set of samples ``[N, C, H, W]`` in ``[0, 1]``.

    * ``midtone``: share of pixel values strictly between 0.1 and 0.9 (for
      binarised data, how soft/blurry the images are);
    * ``edge``: mean absolute difference between horizontally and vertically
      neighbouring pixels (high for sharp strokes, and for noisy artefacts);
    * ``near_duplicates``: pairs of samples closer (L2) than a quarter of the
      median pairwise distance, a crude sign of repeated samples (mode collapse);
    * ``pairs``: the number of pairs.
    """
    x = tiles.astype(np.float64)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    sq = (flat**2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0))
    upper = dist[np.triu_indices(n, 1)]
    median = float(np.median(upper)) if upper.size else 0.0
    edge = 0.5 * (np.abs(np.diff(x, axis=-1)).mean() + np.abs(np.diff(x, axis=-2)).mean())
    return {
        "midtone": float(((x > 0.1) & (x < 0.9)).mean()),
        "edge": float(edge),
        "near_duplicates": int((upper < 0.25 * median).sum()) if median > 0 else 0,
        "pairs": int(upper.size),
    }


# --------------------------------------------------------------------------- prose


def _by(d: float, unit: str, digits: int = 2) -> str:
    """``"2.50 nats lower"``, ``"0.30 nats higher"`` or ``"unchanged"`` (at the shown precision)."""
    if round(abs(d), digits) == 0:
        return "unchanged"
    return f"{_num(abs(d), digits)} {unit} {'lower' if d < 0 else 'higher'}".replace("  ", " ")


def _num(v: Optional[float], digits: int = 2) -> str:
    return fmt_number(v, digits)


def _spread_note(a: Group, b: Group, key: str, diff: float, digits: int) -> str:
    sa, sb = a.std(key), b.std(key)
    spreads = [s for s in (sa, sb) if s is not None]
    if not spreads:
        return " (one seed each, so the seed-to-seed spread is unknown)"
    largest = max(spreads)
    verdict = "larger" if abs(diff) > 2 * largest else "not clearly larger"
    return (f"; the difference is {verdict} than twice the larger seed standard deviation "
            f"({_num(largest, digits)})")


def likelihood_paragraph(dataset: str, g: dict[str, Group]) -> list[str]:
    std, flow = g.get("vae_std"), g.get("vae_flow")
    if not (std and flow):
        return []
    suffix, unit, digits = _nll_unit(dataset)
    nll_key = "test_nll_bits_per_dim" if suffix else "test_nll"
    out = []
    a, b = flow.mean(nll_key), std.mean(nll_key)
    if a is not None and b is not None:
        d = a - b
        k = ", ".join(fmt_count(v) for v in _unique(flow, "nll_samples"))
        n = ", ".join(fmt_count(v) for v in _unique(flow, "num_test"))
        out.append(
            f"**Likelihood.** vae_flow's test NLL is {_by(d, unit, digits)} than vae_std's "
            f"({_num(a, digits)} vs {_num(b, digits)} {unit}; IWAE bound with K = {k} on {n} test images)"
            f"{_spread_note(flow, std, nll_key, d, digits)}. "
            + ("On this measure the flow prior helps." if d < 0 else "On this measure the flow prior does not help here.")
        )
    e_f, e_s = flow.mean("test_neg_elbo"), std.mean("test_neg_elbo")
    k_f, k_s = flow.mean("test_kl"), std.mean("test_kl")
    r_f, r_s = flow.mean("test_recon"), std.mean("test_recon")
    if None not in (e_f, e_s, k_f, k_s, r_f, r_s):
        dk, dr = k_f - k_s, r_f - r_s
        text = (
            f"Its negative ELBO is {_by(e_f - e_s, 'nats')} ({_num(e_f)} vs {_num(e_s)}). "
            f"The KL term is {_by(dk, 'nats')} ({_num(k_f)} vs {_num(k_s)}) and the reconstruction "
            f"term {_by(dr, 'nats')} ({_num(r_f)} vs {_num(r_s)}), so "
        )
        if abs(dk) >= abs(dr):
            text += ("most of the difference sits in the KL term, the term a prior acts on: a learned flow prior can "
                     "follow the aggregate posterior q(z) = E_x[q(z|x)] instead of pulling every encoding towards "
                     "N(0, I)" + (", so encoding an image costs fewer nats with the same kind of decoder." if dk < 0 else
                                  "; here that freedom did not make the encodings cheaper."))
        else:
            text += ("most of the difference sits in the reconstruction term: a prior that is cheaper to match "
                     "leaves the encoder room for posteriors that carry more information about x.")
        out.append(text)
    gf = [m.results["test_neg_elbo"] - m.results["test_nll"] for m in flow.members
          if isinstance(m.results.get("test_nll"), (int, float)) and isinstance(m.results.get("test_neg_elbo"), (int, float))]
    gs = [m.results["test_neg_elbo"] - m.results["test_nll"] for m in std.members
          if isinstance(m.results.get("test_nll"), (int, float)) and isinstance(m.results.get("test_neg_elbo"), (int, float))]
    if gf and gs:
        out.append(f"The gap between the negative ELBO and the NLL estimate is {_num(statistics.fmean(gf))} nats for "
                   f"vae_flow and {_num(statistics.fmean(gs))} for vae_std: "
                   + ("the flow's bound is the tighter one." if statistics.fmean(gf) < statistics.fmean(gs)
                      else "the flow does not tighten the bound."))
    p_f, p_s = flow.mean("parameters_total"), std.mean("parameters_total")
    t_f, t_s = _per_epoch_seconds(flow), _per_epoch_seconds(std)
    if p_f and p_s:
        text = (f"The cost: the flow adds {fmt_count(p_f - p_s)} parameters ({_num(100 * (p_f - p_s) / p_s, 1)}% "
                f"of vae_std's {fmt_count(p_s)})")
        if t_f and t_s:
            text += (f", and a training epoch took {_num(t_f / t_s, 2)}× as long ({_num(t_f, 1)} s vs {_num(t_s, 1)} s "
                     f"on average)")
        out.append(text + ".")
    return [" ".join(out)] if out else []


def _per_epoch_seconds(group: Group) -> Optional[float]:
    """Mean seconds per training epoch of one model: from single runs only when there are any.

    An ensemble's epoch trains all its members at once, so its time is not one model's.
    """
    singles = [m for m in group.members if m.ensemble == 1] or group.members
    vals = [r["epoch_seconds"] / m.ensemble for m in singles for r in m.metrics
            if isinstance(r.get("epoch_seconds"), (int, float))]
    return statistics.fmean(vals) if vals else None


def fid_paragraph(g: dict[str, Group]) -> list[str]:
    have = [(name, grp.mean("test_fid")) for name, grp in g.items() if grp.mean("test_fid") is not None]
    if not have:
        return ["**FID.** No run here has a test FID (it is computed when `--fid-samples` is above 0; "
                "the `smoke` profile skips it), so sample quality is judged from the figures and the pixel "
                "statistics below only."]
    have.sort(key=lambda t: t[1])
    ranking = " < ".join(f"{name} ({_num(v)})" for name, v in have)
    ns = {name: tuple(_unique(g[name], "fid_samples")) for name, _ in have}
    refs = {name: tuple(_unique(g[name], "fid_reference")) for name, _ in have}
    same = len(set(ns.values())) == 1 and len(set(refs.values())) == 1
    n_text = ", ".join(fmt_count(n) for n in next(iter(ns.values())))
    ref_text = ", ".join(map(str, next(iter(refs.values()))))
    text = (f"**FID.** Lower is better: FID compares the mean and covariance of Inception features of samples and "
            f"test images, so it penalises both poor images and missing variety. The ranking is {ranking}")
    text += (f", all with {n_text} samples against {ref_text}." if same else
             "; the models were scored with different numbers of samples or references, and FID is biased upwards "
             "at small N, so this ranking is only indicative.")
    if len(have) > 1 and "gan" in dict(have):
        best_vae = min((v for n, v in have if n in VAE_MODELS), default=None)
        if best_vae is not None:
            gan_fid = dict(have)["gan"]
            text += (" The GAN's samples are closer to the data in this feature space than the best VAE's "
                     f"({_num(gan_fid)} vs {_num(best_vae)})." if gan_fid < best_vae else
                     f" Here the best VAE beats the GAN ({_num(best_vae)} vs {_num(gan_fid)}).")
    if "vae_std" in dict(have) and "vae_flow" in dict(have):
        d = dict(have)["vae_flow"] - dict(have)["vae_std"]
        text += f" vae_flow's FID is {_by(d, '')} than vae_std's." if round(d, 2) else " vae_flow's FID equals vae_std's."
    return [text]


def sample_paragraph(dataset: str, stats: dict[str, dict]) -> list[str]:
    if not stats:
        return []
    binary = fdata.get_spec(dataset).likelihood == "bernoulli"
    names = [n for n in MODEL_ORDER if n in stats] + [n for n in stats if n not in MODEL_ORDER]
    edge = ", ".join(f"{n} {_num(stats[n]['edge'], 3)}" for n in names)
    n_samples = ", ".join(sorted({str(int(round((1 + math.sqrt(1 + 8 * s['pairs'])) / 2))) for s in stats.values()}))
    text = (f"**Blurriness and artefacts.** Measured on the {n_samples} samples of each final grid, the mean absolute "
            f"difference between neighbouring pixels (edge contrast) is {edge}")
    if binary:
        mid = ", ".join(f"{n} {_num(100 * stats[n]['midtone'], 1)}%" for n in names)
        text += f"; the share of grey pixels (strictly between 0.1 and 0.9) is {mid}"
    text += ". "
    vaes = [n for n in names if n in VAE_MODELS]
    if vaes:
        text += ("The VAE grids show the decoder's mean (the Bernoulli pixel probabilities"
                 if binary else "The VAE grids show the decoder's mean (the logistic locations")
        text += ("), not a sample of pixels: it averages over the images compatible with z, so VAE samples are "
                 "expected to look smooth and blurry rather than broken. ")
    if "gan" in stats and vaes:
        sharper = all(stats["gan"]["edge"] > stats[v]["edge"] for v in vaes)
        text += ("The GAN's samples have the higher edge contrast here, as expected of a generator trained only "
                 "to fool a discriminator, which punishes blur; " if sharper else
                 "The GAN's samples do not have the higher edge contrast here, unusual for a GAN; ")
        text += ("its typical failure is artefacts instead (isolated specks, broken or doubled strokes, shapes "
                 "that are no digit), which raise edge contrast too, so the grids below are the judge of which "
                 "it is.")
    if binary and len(vaes) == 2:
        d = stats["vae_flow"]["midtone"] - stats["vae_std"]["midtone"]
        text += (f" The flow prior changes the share of grey pixels by {_num(100 * abs(d), 1)} percentage points "
                 f"({'fewer' if d < 0 else 'more'} for vae_flow): it reshapes where samples land in latent "
                 "space, not the decoder's averaging, so it is not expected to remove the blur.")
    return [text]


def diversity_paragraph(g: dict[str, Group], stats: dict[str, dict]) -> list[str]:
    parts = []
    if stats:
        names = [n for n in MODEL_ORDER if n in stats] + [n for n in stats if n not in MODEL_ORDER]
        dup = ", ".join(f"{n} {stats[n]['near_duplicates']}" for n in names)
        pairs = ", ".join(sorted({fmt_count(s["pairs"]) for s in stats.values()}))
        text = (f"**Diversity and mode coverage.** Pairs of final samples closer than a quarter of the median "
                f"pairwise distance (near-duplicates, out of {pairs} pairs): {dup}.")
        if "gan" in stats:
            others = [stats[n]["near_duplicates"] for n in names if n != "gan"]
            if others and stats["gan"]["near_duplicates"] >= max(5, 3 * max(others)):
                text += (" The GAN has several times as many near-duplicates as the VAEs: a hint of partial mode "
                         "collapse (look for repeated digits in its grid).")
            else:
                text += " No model stands out on this crude measure: no clear sign of mode collapse."
        parts.append(text)
    gan = g.get("gan")
    if gan is not None:
        real, fake = gan.mean("test_d_real"), gan.mean("test_d_fake")
        if real is not None and fake is not None:
            gap = real - fake
            verdict = ("clearly tells real from generated images" if gap > 0.3 else
                       "is close to chance" if gap < 0.1 else "separates real from generated images only partly")
            parts.append(f"At the end of training the discriminator gives test images D(x) = {_num(real, 3)} and "
                         f"samples D(G(z)) = {_num(fake, 3)}: it {verdict}.")
        warned = sorted({w for m in gan.members for r in m.metrics for w in r.get("warnings", [])})
        epochs_warned = sum(1 for m in gan.members for r in m.metrics if r.get("warnings"))
        if warned:
            parts.append(f"The training monitor warned in {epochs_warned} epoch(s): “{warned[0]}”.")
        else:
            parts.append("The training monitor raised no warning (the discriminator never won outright).")
    if parts and not parts[0].startswith("**"):
        parts[0] = "**Diversity and mode coverage.** " + parts[0]
    if g.get("vae_std") or g.get("vae_flow"):
        if not parts:
            parts.append("**Diversity and mode coverage.**")
        parts.append("The VAEs are trained by maximum likelihood, which charges every training image they cannot "
                     "explain, so they tend to cover all digit classes at the cost of sharpness; the GAN's loss has "
                     "no such term, so styles it never produces go unnoticed by its losses. FID (above) is the "
                     "quantitative check on coverage here; counting the classes of samples with a digit classifier "
                     "would be a sharper one and is not part of this report.")
    return [" ".join(parts)] if parts else []


def interpolation_paragraph(indexes: dict[str, dict]) -> list[str]:
    def stat(model, kind, name="max_step_ratio"):
        return (indexes.get(model, {}).get("kinds", {}).get(kind) or {}).get(name)

    have = [m for m in MODEL_ORDER if stat(m, "prior_noise") is not None]
    if not have:
        return []
    weights = next(iter(indexes.values())).get("weights") or []
    steps = max(len(weights) - 1, 1)
    text = (f"**Interpolations.** Each strip has {len(weights)} images ({steps} steps). The largest step's pixel "
            f"change over the mean step (1 = perfectly even, {steps} = one jump), averaged over the pairs, is for "
            "the linear path between prior draws: "
            + ", ".join(f"{m} {_num(stat(m, 'prior_noise'))}" for m in have) + "; ")
    slerp = [m for m in have if stat(m, "prior_noise_slerp") is not None]
    if slerp:
        text += "on the spherical path: " + ", ".join(f"{m} {_num(stat(m, 'prior_noise_slerp'))}" for m in slerp) + ". "
    smoothest = min(have, key=lambda m: stat(m, "prior_noise"))
    text += f"By this measure {smoothest}'s prior interpolations are the most even. "
    base, latent = stat("vae_flow", "prior_noise"), stat("vae_flow", "prior_latent")
    if base is not None and latent is not None:
        pb, pl = stat("vae_flow", "prior_noise", "path_ratio"), stat("vae_flow", "prior_latent", "path_ratio")
        text += (f"For vae_flow, the path in the flow's base space has ratio {_num(base)} (pixel path length over "
                 f"the direct distance {_num(pb)}), the straight path in latent space {_num(latent)} "
                 f"({_num(pl)}): the {'base' if base < latent else 'latent'}-space path changes more evenly. "
                 "A straight line in one space is a curve in the other. The flow maps N(0, I) onto where the "
                 "encodings lie, so a base-space path stays in regions of high prior density, while a straight "
                 "latent path may cut across low-density regions between them; ")
        text += ("the base-space path being the more even one fits that picture. " if base < latent else
                 "that the latent path is the more even one here says that those regions still decode to "
                 "gradually changing images (even steps in pixel space do not guarantee digit-like images "
                 "along the way; the figures show whether they are). ")
    enc = [m for m in VAE_MODELS if stat(m, "test_latent") is not None]
    if enc:
        text += ("Between the encodings of two test images (latent space): "
                 + ", ".join(f"{m} {_num(stat(m, 'test_latent'))}" for m in enc))
        if stat("vae_flow", "test_base") is not None:
            text += f", and vae_flow in base space {_num(stat('vae_flow', 'test_base'))}"
        text += (". VAE interpolations are smooth by construction (the decoder is a continuous function trained "
                 "on noisy codes), so their strips morph gradually; whether the intermediate images look like "
                 "digits is what the figures show.")
    return [text]


def training_paragraph(g: dict[str, Group]) -> list[str]:
    out = []
    for name in [n for n in MODEL_ORDER if n in g] + [n for n in g if n not in MODEL_ORDER]:
        grp = g[name]
        key = "neg_elbo" if any(f"val_neg_elbo" in r for m in grp.members for r in m.metrics) else "d_loss"
        epochs, mean, _ = _series(grp, f"val_{key}")
        if len(epochs) < 2:
            continue
        label = "negative ELBO" if key == "neg_elbo" else "discriminator loss"
        tail = max(1, len(epochs) // 5)
        recent = mean[-1] - mean[-1 - tail]
        text = (f"{name}'s validation {label} went from {_num(mean[0])} after epoch {epochs[0]} to {_num(mean[-1])} "
                f"after epoch {epochs[-1]}")
        if key == "neg_elbo":
            text += (f"; over its last {tail} epoch(s) it changed by {_num(recent)} nats, "
                     + ("so it was still improving when training stopped" if recent < -0.05 * tail
                        else "so it had about levelled off"))
            _, train_mean, _ = _series(grp, "train_neg_elbo")
            if len(train_mean):
                gap = mean[-1] - train_mean[-1]
                text += f"; validation minus training at the end: {_num(gap)} nats"
        else:
            text += (" (for the cross-entropy losses, 2 log 2 ≈ 1.386 means a balanced game, values towards 0 a "
                     "winning discriminator)")
        out.append(text + ".")
    return ["**Training.** " + " ".join(out)] if out else []


def flow_summary(dataset: str, g: dict[str, Group], stats: dict[str, dict], indexes: dict[str, dict]) -> list[str]:
    std, flow = g.get("vae_std"), g.get("vae_flow")
    if not (std and flow):
        return []
    suffix, unit, digits = _nll_unit(dataset)
    nll_key = "test_nll_bits_per_dim" if suffix else "test_nll"
    helps, not_helps = [], []
    a, b = flow.mean(nll_key), std.mean(nll_key)
    if a is not None and b is not None:
        (helps if a < b else not_helps).append(f"test NLL ({_num(a, digits)} vs {_num(b, digits)} {unit})")
    a, b = flow.mean("test_kl"), std.mean("test_kl")
    if a is not None and b is not None:
        (helps if a < b else not_helps).append(f"KL term ({_num(a)} vs {_num(b)} nats)")
    a, b = flow.mean("test_fid"), std.mean("test_fid")
    if a is not None and b is not None:
        (helps if a < b else not_helps).append(f"test FID ({_num(a)} vs {_num(b)})")
    a, b = stat_of(indexes, "vae_flow", "prior_noise"), stat_of(indexes, "vae_std", "prior_noise")
    if a is not None and b is not None:
        (helps if a < b else not_helps).append(f"evenness of prior interpolations ({_num(a)} vs {_num(b)})")
    if "vae_flow" in stats and "vae_std" in stats and fdata.get_spec(dataset).likelihood == "bernoulli":
        a, b = stats["vae_flow"]["midtone"], stats["vae_std"]["midtone"]
        (helps if a < b else not_helps).append(f"share of grey pixels in samples ({_num(100 * a, 1)}% vs {_num(100 * b, 1)}%)")
    t_f, t_s = _per_epoch_seconds(flow), _per_epoch_seconds(std)
    if t_f and t_s:
        (helps if t_f < t_s else not_helps).append(f"training time per epoch ({_num(t_f, 1)} s vs {_num(t_s, 1)} s)")
    lines = ["**Where the flow prior helps and where it does not** (vae_flow vs vae_std, lower is better in each):"]
    lines += [f"- better with the flow prior: {x}" for x in helps] or ["- better with the flow prior: nothing measured here"]
    lines += [f"- not better: {x}" for x in not_helps]
    return ["\n".join(lines)]


def stat_of(indexes, model, kind, name="max_step_ratio"):
    return (indexes.get(model, {}).get("kinds", {}).get(kind) or {}).get(name)


# --------------------------------------------------------------------------- commands and machine


def reconstruct_command(member: Member, runs_root: Path) -> str:
    """The ``experiments.run`` command that made a run, rebuilt from its ``config.json``."""
    r, c = member.results, member.config
    model, dataset = r.get("model"), r.get("dataset")
    if not c:
        return f"python -m experiments.run {model} {dataset}  # (no config.json: flags unknown)"
    parts = ["python -m experiments.run", model, dataset]
    profile = c.get("profile", "default")
    if profile != "default":
        parts += ["--profile", profile]
    if c.get("seed", 0) != 0:
        parts += ["--seed", str(c["seed"])]
    ensemble = len(c["seeds"]) if isinstance(c.get("seeds"), list) else None
    if ensemble:
        parts += ["--seeds", str(ensemble)]
    try:
        from experiments import profiles, registry

        base = {**profiles.resolve(model, dataset, profile), **registry.get_model(model).defaults}
        defaults = registry.get_model(model).defaults
    except (ValueError, KeyError):
        base, defaults = {}, {}
    for key, flag in _FLAGS.items():
        if key in c and key in base and c[key] != base[key] and c[key] is not None:
            parts += [flag, str(c[key])]
    for key in defaults:
        if key in c and c[key] != base.get(key):
            value = c[key] if isinstance(c[key], str) else json.dumps(c[key], separators=(",", ":"))
            parts += ["--set", f"{key}={value}"]
    default_out = Path("runs") / f"{model}-{dataset}-s{c.get('seed', 0)}{f'x{ensemble}' if ensemble else ''}"
    try:
        rel = member.run_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        rel = member.run_dir
    if Path(rel) != default_out:
        parts += ["--out", str(rel)]
    return " ".join(parts)


def machine_lines() -> list[str]:
    import torch

    lines = [
        f"- platform: {platform.platform()} ({platform.machine()})",
        f"- CPU cores visible: {os.cpu_count()}; torch threads: {torch.get_num_threads()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name(0)}")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parents[1])
        if commit.returncode == 0 and commit.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=10, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
            lines.append(f"- code: git commit {commit.stdout.strip()}" + (" plus uncommitted changes" if dirty else ""))
    except (OSError, subprocess.SubprocessError):
        pass
    return lines


# --------------------------------------------------------------------------- the report


def _copy(src: Optional[Path], dst: Path) -> Optional[Path]:
    if src is None or not src.exists():
        return None
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def dataset_section(dataset: str, groups: dict[str, Group], others: list[Group], out: Path, runs_root: Path) -> list[str]:
    """The Markdown of one dataset (figures written under ``out/<dataset>/``)."""
    title = dataset.upper()
    spec = fdata.get_spec(dataset)
    lines = [f"## {title}", ""]
    if not groups:
        lines += [
            f"**The {title} half of the comparison was not run on this machine**: no {title} run directory was "
            f"found under `{runs_root}`" + (" (this machine has no SVHN data)." if dataset == "svhn" else "."),
            "",
            "To produce it, put the data files where `fgm.data` looks for them (`--data-dir`, else "
            f"`$FGM_DATA_DIR`, else `./data`): {', '.join(f'`{f}`' for f in spec.raw_files)}; then run",
            "",
            "```",
            f"python -m experiments.run all --datasets {dataset}",
            "python -m experiments.report",
            "```",
            "",
        ]
        return lines
    ordered = [groups[n] for n in MODEL_ORDER if n in groups] + [g for n, g in sorted(groups.items()) if n not in MODEL_ORDER]
    folder = out / dataset
    suffix, unit, _ = _nll_unit(dataset)
    missing = [m for m in MODEL_ORDER if m not in groups]

    lines += ["### Results", ""]
    lines += results_table(dataset, ordered)
    notes = []
    if any(len(g.members) > 1 for g in ordered):
        notes.append("With several seeds a cell reads mean ± sample standard deviation over the seeds.")
    notes.append("Training time is the sum of the epochs' training seconds (evaluation excluded), mean over seeds; "
                 "parameters count every network of the model.")
    together = sorted({m.ensemble for g in ordered for m in g.members if m.ensemble > 1})
    if together:
        notes.append(f"Seeds trained together as an ensemble (vmap; {', '.join(map(str, together))} members per run) "
                     "report the time of the whole ensemble, not of one member.")
    if suffix:
        notes.append("NLL and −ELBO in bits per sub-pixel (3×32×32 values per image), the SVHN convention.")
    else:
        notes.append("NLL and −ELBO in nats per image on the fixed binarisation of the test set.")
    weights = sorted({str(w) for g in ordered for w in _unique(g, "fid_weights")})
    if weights:
        notes.append(f"FID features: {', '.join(weights)}.")
    lines += ["", " ".join(notes), ""]
    if missing:
        lines += ["Not run on this dataset: " + ", ".join(
            f"{m} (`python -m experiments.run {m} {dataset}`)" for m in missing) + ".", ""]
    terms = vae_terms_table(ordered)
    if terms:
        lines += ["VAE test objective in nats per image (−ELBO = reconstruction + KL):", ""] + terms + [""]
    gtable = gan_table(ordered)
    if gtable:
        lines += ["GAN discriminator on the test set (D outputs are probabilities that the input is real):", ""] + gtable + [""]

    curves = curves_figure(ordered, folder / "curves.png")
    if curves:
        lines += ["### Learning curves", "",
                  f"![learning curves]({_rel(curves, out)})", "",
                  "Validation solid, training dashed" + ("; mean over seeds with a ±1 std band." if any(len(g.members) > 1 for g in ordered) else "."),
                  ""]

    panels = []
    for g in ordered:
        epoch, path = final_grid(g.first)
        if path is not None:
            panels.append((f"{g.model} (epoch {epoch}, seed {g.first.seed})", path))
    stats: dict[str, dict] = {}
    for g in ordered:
        epoch, path = final_grid(g.first)
        if path is not None:
            tiles = grid_tiles(path, spec.shape)
            if tiles is not None and tiles.shape[0] > 1:
                stats[g.model] = sample_statistics(tiles)
    samples = side_by_side(panels, folder / "samples.png")
    if samples:
        lines += ["### Samples", "", f"![final samples]({_rel(samples, out)})", "",
                  "The last sample grid of each model, from the fixed latent noise used through training "
                  "(VAEs: the decoder's mean image; GAN: the generator's output).", ""]

    prog = []
    for g in ordered:
        fd = g.first.figures_dir
        if fd is None:
            continue
        png = _copy(fd / "samples" / analysis.PROGRESSION_PNG, folder / f"progression-{g.model}.png")
        gif = _copy(fd / "samples" / analysis.PROGRESSION_GIF, folder / f"progression-{g.model}.gif")
        if png:
            prog.append(f"**{g.model}** ([animation]({_rel(gif, out)}))" if gif else f"**{g.model}**")
            prog.append("")
            prog.append(f"![{g.model} progression]({_rel(png, out)})")
            prog.append("")
    if prog:
        lines += ["### Progression through training", "",
                  "The same latents decoded at each saved epoch (left column of each sample grid).", ""] + prog

    indexes = {g.model: interpolation_index(g.first) for g in ordered}
    indexes = {k: v for k, v in indexes.items() if v}
    kinds = [k for k in KIND_TITLES if any(k in idx.get("kinds", {}) for idx in indexes.values())]
    if kinds:
        lines += ["### Interpolations", ""]
        first_index = next(iter(indexes.values()))
        n_w = len(first_index.get("weights") or [])
        lines += [f"Each row joins two points with {n_w} images at evenly spaced weights from 0 to 1, endpoints "
                  "included (w = 0 is the first point exactly, w = 1 the second); paths are linear unless marked "
                  "slerp. All runs use the same fixed key for the pairs: vae_std and vae_flow (both with a "
                  "32-dimensional latent) start from the same noise pairs, and the VAEs encode the same test-image "
                  "pairs, shown in red frames at both ends of those strips. The GAN draws its own pairs (its "
                  "latent has another size) from the same key.", ""]
        for kind in kinds:
            kpanels = []
            captions = []
            for g in ordered:
                entry = indexes.get(g.model, {}).get("kinds", {}).get(kind)
                if entry and g.first.figures_dir is not None:
                    kpanels.append((g.model, g.first.figures_dir / analysis.INTERPOLATIONS / entry["file"]))
                    captions.append(f"{g.model}: {entry['caption']}")
            fig = side_by_side(kpanels, folder / f"interp-{kind}.png", width=5.0)
            if fig:
                lines += [f"#### {KIND_TITLES[kind]}", "", f"![{kind}]({_rel(fig, out)})", ""]
                lines += [f"- {c}" for c in captions] + [""]

    lines += ["### Analysis", ""]
    paragraphs = (training_paragraph(groups) + likelihood_paragraph(dataset, groups) + fid_paragraph(groups)
                  + sample_paragraph(dataset, stats) + diversity_paragraph(groups, stats)
                  + interpolation_paragraph(indexes) + flow_summary(dataset, groups, stats, indexes))
    for p in paragraphs:
        lines += [p, ""]

    mine = [g for g in others if g.dataset == dataset]
    if mine:
        lines += ["### Other runs found (not in the comparison above)", "",
                  "| model | run directories | epochs | differs from the compared configuration in |",
                  "| --- | --- | ---: | --- |"]
        for g in mine:
            ref = groups.get(g.model)
            diff = _config_diff(ref.first.config if ref else {}, g.first.config)
            dirs = ", ".join(sorted({f"`{m.run_dir.name}`" for m in g.members}))
            lines.append(f"| {g.model} | {dirs} | {', '.join(fmt_count(e) for e in _unique(g, 'epochs'))} | {diff} |")
        lines.append("")
    return lines


def _config_diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if k not in _NOT_CONFIG and k != "total_steps" and a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys) or "—"


def build_report(runs_root: str | Path = "runs", out: str | Path = "reports") -> Path:
    """Writes ``out/REPORT.md`` and its figures from the runs under ``runs_root``; returns the Markdown's path."""
    runs_root, out = Path(runs_root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    members = discover(runs_root)
    chosen, others = group_runs(members)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    compared = [m for g in chosen.values() for m in g.members]
    lines = [
        "# vae_std vs vae_flow vs gan on MNIST and SVHN",
        "",
        f"Built by `python -m experiments.report --runs {runs_root} --out {out}` on {now} from "
        f"{len(members)} trained model(s) in `{runs_root}`. Every number below is read from the runs "
        "(`results.json`, `metrics.jsonl`, `config.json`, the sample grids and `interpolations/index.json`); "
        "the sentences of the analyses are templates whose comparisons follow those numbers.",
        "",
        "## How it was made",
        "",
        "Report built on:",
        "",
        *machine_lines(),
        "",
    ]
    if compared:
        by_dir: dict[Path, list[Member]] = {}
        for m in compared:
            by_dir.setdefault(m.run_dir, []).append(m)
        total = sum(ms[0].results.get("train_seconds_total") or 0.0 for ms in by_dir.values())
        profiles_used = sorted({str(m.config.get("profile")) for m in compared if m.config.get("profile")})
        seeds_used = sorted({m.seed for m in compared if m.seed is not None})
        sweep = "python -m experiments.run all"
        if len(profiles_used) == 1 and profiles_used[0] != "default":
            sweep += f" --profile {profiles_used[0]}"
        if seeds_used and seeds_used != [0]:
            if seeds_used == list(range(seeds_used[0], seeds_used[-1] + 1)):
                sweep += (f" --seed {seeds_used[0]}" if seeds_used[0] else "") + (
                    f" --seeds {len(seeds_used)}" if len(seeds_used) > 1 else "")
        lines += [
            f"To reproduce: `{sweep}` trains every (model, dataset) pair it has data for (resuming interrupted "
            "runs, skipping finished ones), then `python -m experiments.report` writes this report. One command "
            "per run directory, rebuilt from its `config.json`, with the training time its `metrics.jsonl` records:",
            "",
            "| run directory | seeds | command (rebuilt from config.json) | epochs | training time | mean epoch |",
            "| --- | ---: | --- | ---: | ---: | ---: |",
        ]

        def order(item):
            r = item[1][0].results
            return r.get("dataset"), MODEL_ORDER.index(r["model"]) if r.get("model") in MODEL_ORDER else 9, str(item[0])

        for run_dir, ms in sorted(by_dir.items(), key=order):
            m = ms[0]
            seeds = ", ".join(str(x.seed) for x in ms if x.seed is not None) or "?"
            secs = [r["epoch_seconds"] for r in m.metrics if isinstance(r.get("epoch_seconds"), (int, float))]
            lines.append(
                f"| `{run_dir.name}` | {seeds} | `{reconstruct_command(m, runs_root)}` "
                f"| {fmt_count(m.results.get('epochs'))} | {fmt_minutes(m.results.get('train_seconds_total'))} "
                f"| {fmt_number(statistics.fmean(secs), 1) + ' s' if secs else '—'} |")
        lines += [
            "",
            f"Total training time of the compared runs: {fmt_minutes(total)} (the sum of the epochs' training "
            "seconds; evaluation, test NLL and FID come on top).",
            "",
        ]
    datasets = list(fdata.DATASETS)
    for dataset in datasets:
        groups = {model: g for (d, model), g in chosen.items() if d == dataset}
        lines += dataset_section(dataset, groups, others, out, runs_root)
    path = out / "REPORT.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="directory holding the run directories (default: runs)")
    parser.add_argument("--out", default="reports", help="output directory (default: reports)")
    args = parser.parse_args(argv)
    if not Path(args.runs).is_dir():
        print(f"error: no run directory {args.runs}; train first (python -m experiments.run all)", file=sys.stderr)
        return 2
    path = build_report(args.runs, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
