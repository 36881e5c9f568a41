"""Pictures of a training run, written to files: learning curves, sample grids, interpolations, progression.

Every function here takes numbers or images and writes files, except the
few that compute the numbers of a figure (quality against training time:
:func:`fid_time_series`, :func:`fid_time_curve`, :func:`equal_time`); the
maths of the interpolation paths is in :mod:`fgm.interpolate`. The command line
(``experiments``) selects matplotlib's file-only backend; here the backend
is left to the caller (a notebook keeps its own).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw

from fgm import interpolate, random

__all__ = [
    "INDEX",
    "PROGRESSION_GIF",
    "PROGRESSION_PNG",
    "equal_time",
    "fid_time_curve",
    "fid_time_series",
    "plot_curves",
    "plot_fid_vs_time",
    "sample_epochs",
    "save_figure",
    "save_grid",
    "side_by_side",
    "value_at",
    "write_interpolations",
    "write_progression",
]

INDEX = "index.json"  # an interpolations folder's list of strips: {"kinds": {kind: {"file", "caption"}}}
PROGRESSION_GIF = "progression.gif"  # every sample grid of a run, one frame per grid
PROGRESSION_PNG = "progression.png"  # the grids side by side, at most max_columns of them


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Saves ``[N, C, H, W]`` images in ``[0, 1]`` as one PNG grid."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(images.detach().cpu().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=1.0)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lays out a matplotlib figure, writes it as ``path`` (folders made) and closes it."""
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Plots every ``train_*`` / ``val_*`` metric pair, one panel per metric (the mean over members)."""
    records = [{"epoch": r["epoch"], **r["mean"]} for r in history]
    if not records:
        return
    names = {
        k.split("_", 1)[1]
        for r in records
        for k in r
        if k.startswith(("train_", "val_")) and not k.endswith("_samples")
    }  # counts are not curves
    # the objective first, its parts after
    names = sorted(names, key=lambda n: (n not in ("neg_elbo", "loss"), n))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    epochs = [r["epoch"] for r in records]
    for ax, name in zip(axes[0], names, strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            # Some metrics (validation FID) exist only every few epochs: join the epochs that have them.
            points = [
                (e, r[f"{split}_{name}"])
                for e, r in zip(epochs, records, strict=True)
                if r.get(f"{split}_{name}") is not None
            ]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=split)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def write_interpolations(
    experiment: Any,
    params: Any,
    folder: str | Path,
    test_inputs: torch.Tensor | None = None,
    interior: int = interpolate.INTERIOR_POINTS,
    pairs: int = interpolate.PAIRS,
) -> dict[str, Path]:
    """Writes ``folder/<kind>.png`` (one row per pair) and ``folder/index.json``.

    Args:
      experiment: the model's :class:`experiments.models.Experiment`; nothing
        is written when it has no ``interpolate``.
      params: trained parameters.
      folder: where the figures go.
      test_inputs: ``[N, C, H, W]`` test images in model-input form, for the
        encodings (VAEs); ``None`` skips those.
      interior: points strictly between the two ends of each strip.
      pairs: rows per figure.

    Returns:
      ``{kind: path}`` of the PNGs written.
    """
    if experiment.interpolate is None:
        return {}
    key = random.key(interpolate.INTERPOLATION_SEED)
    weights = interpolate.interpolation_weights(interior)
    device = test_inputs.device if test_inputs is not None else torch.device("cpu")
    weights = weights.to(device)
    noise_a, noise_b = (experiment.trainer.noise(random.fold_in(key, i), pairs, device) for i in (0, 1))
    images_a = images_b = index_a = index_b = None
    if test_inputs is not None and test_inputs.shape[0] >= 2:
        index_a, index_b = interpolate.test_pairs(test_inputs.shape[0], pairs, key)
        images_a, images_b = test_inputs[index_a], test_inputs[index_b]
    strips = experiment.interpolate(params, noise_a, noise_b, images_a, images_b, weights)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    test_indices = {"a": index_a, "b": index_b} if index_a is not None else None
    weights_list = [round(float(v), 6) for v in weights]
    index = dict(weights=weights_list, pairs=pairs, seed=interpolate.INTERPOLATION_SEED, test_indices=test_indices)
    index["kinds"] = {}
    for kind, strip in strips.items():
        grid, nrow = interpolate.strip_grid(strip)
        path = folder / f"{kind}.png"
        save_grid(grid, path, nrow=nrow)
        written[kind] = path
        entry = {"file": path.name, "caption": strip.caption, "real_ends": strip.real_a is not None}
        index["kinds"][kind] = entry | interpolate.path_statistics(strip.images)
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return written


# --------------------------------------------------------------------------- progression

_EPOCH_FILE = re.compile(r"epoch_(\d+)\.png$")


def sample_epochs(out: str | Path) -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of a run's ``samples/epoch_*.png``, by epoch."""
    found = []
    for path in (Path(out) / "samples").glob("epoch_*.png"):
        match = _EPOCH_FILE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _grid_tile(width: int, height: int, nrow: int = 8, padding: int = 2) -> tuple[int, int, int] | None:
    """``(tile width, tile height, rows)`` of a ``save_grid`` PNG, or ``None`` if it does not fit."""
    tw = (width - padding) / nrow - padding
    if tw <= 0 or tw != int(tw):
        return None
    for rows in range(1, 65):
        th = (height - padding) / rows - padding
        if th == tw:
            return int(tw), int(th), rows
    return None


def write_progression(out: str | Path, max_columns: int = 12, nrow: int = 8) -> list[Path]:
    """The sample grids of a run through training, as a GIF and a labelled strip.

    The grids (``samples/epoch_*.png``) all decode the same fixed latent
    noise, so each image position follows one latent point through training.

    * ``samples/progression.gif``: every grid, one frame per epoch, labelled.
    * ``samples/progression.png``: one column per epoch (at most
      ``max_columns``, evenly chosen, first and last always in): the left
      column of each grid (``nrow`` images from the same latents), the epoch
      written under it.

    Returns:
      The files written (none without sample grids).
    """
    epochs = sample_epochs(out)
    if not epochs:
        return []
    folder = Path(out) / "samples"
    frames = []
    for epoch, path in epochs:
        with Image.open(path) as im:
            grid = im.convert("RGB")
        labelled = Image.new("RGB", (grid.width, grid.height + 14), "white")
        labelled.paste(grid, (0, 0))
        ImageDraw.Draw(labelled).text((4, grid.height + 1), f"epoch {epoch}", fill="black")
        frames.append(labelled)
    gif = folder / PROGRESSION_GIF
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=700, loop=0)

    if len(epochs) > max_columns:
        keep = sorted({round(i * (len(epochs) - 1) / (max_columns - 1)) for i in range(max_columns)})
        epochs = [epochs[i] for i in keep]
    columns = []
    for epoch, path in epochs:
        with Image.open(path) as im:
            grid = np.asarray(im.convert("RGB"))
        tile = _grid_tile(grid.shape[1], grid.shape[0], nrow)
        if tile is not None:
            tw, _, _ = tile
            grid = grid[:, : tw + 4]  # the first column of images with its padding
        columns.append((epoch, grid))
    height, width = columns[0][1].shape[:2]
    col = 0.8  # inches per column
    size = (col * len(columns) + 0.3, col * height / width + 0.7)
    fig, axes = plt.subplots(1, len(columns), figsize=size, squeeze=False)
    for ax, (epoch, image) in zip(axes[0], columns, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        ax.set_xlabel(f"epoch {epoch}", fontsize=8)
    fig.suptitle("same latents through training", fontsize=9)
    return [gif, save_figure(fig, folder / PROGRESSION_PNG)]


def side_by_side(panels: list[tuple[str, Path | None]], path: str | Path, width: float = 4.0) -> Path | None:
    """Images next to each other, each titled; ``None`` when there is nothing to show (missing files skipped)."""
    panels = [(t, p) for t, p in panels if p is not None and Path(p).exists()]
    if not panels:
        return None
    images = []
    for title, p in panels:
        with Image.open(p) as im:
            images.append((title, np.asarray(im.convert("RGB"))))
    aspect = max(im.shape[0] / im.shape[1] for _, im in images)
    fig, axes = plt.subplots(1, len(images), figsize=(width * len(images), width * aspect + 0.5), squeeze=False)
    for ax, (title, image) in zip(axes[0], images, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- quality against training time


def fid_time_series(history: list[dict]) -> list[dict]:
    """Each member's validation FIDs of one run against the run's training minutes so far.

    ``history`` is a run's ``metrics.jsonl``: one record per epoch, in order,
    with ``epoch_seconds`` (the epoch's update steps only; validation, its FID
    and the sample grid are not in it) and per member ``val_fid`` with
    ``val_fid_samples`` at the epochs that measured it. A point's minutes are
    the sum of ``epoch_seconds`` up to and including its epoch, over 60.
    Members trained together (``--seeds N``, vmapped) share one
    ``epoch_seconds``: their minutes are the time of all N together, as
    ``results.json``'s ``members_trained_together`` says. Points after an
    epoch without ``epoch_seconds`` are left out (their time is not known).

    Returns:
      ``[{"seed", "trained_together", "epochs", "minutes", "fid", "samples"}]``,
      one per member with at least one point; ``samples``: the distinct
      numbers of generated (and real validation) images of its FIDs.
    """
    series: dict[int, dict] = {}
    seconds: float | None = 0.0
    for record in history:
        spent = record.get("epoch_seconds")
        seconds = None if seconds is None or spent is None else seconds + spent
        for member in record["members"]:
            fid = member.get("val_fid")
            if seconds is None or not isinstance(fid, (int, float)) or not math.isfinite(fid):
                continue
            together = len(record["members"])
            entry = series.setdefault(
                member["seed"],
                dict(seed=member["seed"], trained_together=together, epochs=[], minutes=[], fid=[], samples=set()),
            )
            entry["epochs"].append(record["epoch"])
            entry["minutes"].append(seconds / 60)
            entry["fid"].append(float(fid))
            entry["samples"].add(member.get("val_fid_samples"))
    return [entry | {"samples": sorted(n for n in entry["samples"] if n is not None)} for entry in series.values()]


def fid_time_curve(members: list[dict]) -> dict:
    """The members' validation FID against training minutes, and their mean at the epochs they all measured.

    Args:
      members: :func:`fid_time_series` entries (of one or several runs trained alike).

    Returns:
      ``{"samples", "members", "epochs", "minutes", "fid_mean", "fid_std", "fid_min", "fid_max"}``:
      ``samples`` the distinct validation FID sizes N (FIDs of different N
      are not comparable); at each shared epoch the members' mean minutes
      and the mean, sample std (``ddof = 1``; ``None`` for one member),
      minimum and maximum of their FIDs.
    """
    shared = sorted(set.intersection(*(set(m["epochs"]) for m in members))) if members else []
    index = [{epoch: i for i, epoch in enumerate(m["epochs"])} for m in members]
    minutes = [[m["minutes"][at[e]] for m, at in zip(members, index, strict=True)] for e in shared]
    fids = [[m["fid"][at[e]] for m, at in zip(members, index, strict=True)] for e in shared]
    return {
        "samples": sorted({n for m in members for n in m["samples"]}),
        "members": members,
        "epochs": shared,
        "minutes": [statistics.fmean(v) for v in minutes],
        "fid_mean": [statistics.fmean(v) for v in fids],
        "fid_std": [statistics.stdev(v) if len(v) > 1 else None for v in fids],
        "fid_min": [min(v) for v in fids],
        "fid_max": [max(v) for v in fids],
    }


def value_at(xs: list[float], ys: list[float], x: float) -> tuple[float, bool]:
    """``(y at x, before the first point)``: linear between the two points around ``x`` (``xs`` increasing).

    Before the first point it is the first ``y`` (flagged ``True``); after the last, the last ``y``.
    """
    if x < xs[0]:
        return float(ys[0]), True
    return float(np.interp(x, xs, ys)), False


def equal_time(curves: dict[str, dict]) -> dict | None:
    """Rows compared at equal training time and at their own ends; ``None`` with fewer than two rows to compare.

    Args:
      curves: ``{row: fid_time_curve(...)}``; rows without a mean point are left out.

    Returns:
      ``{"minutes": T, "samples": [N...], "rows": {row: {"fid_at_T", "before_first_point", "final_fid",
      "final_minutes", "samples", "trained_together"}}}``: ``T`` is the shortest final time of the
      rows (the mean over seeds of the minutes at the last shared epoch); ``fid_at_T`` the row's mean
      validation FID read off its mean curve at ``T`` by linear interpolation (its first point, with
      ``before_first_point``, when ``T`` falls before it); ``final_*`` the last mean point.
    """
    curves = {name: c for name, c in curves.items() if c and c["minutes"]}
    if len(curves) < 2:
        return None
    t = min(c["minutes"][-1] for c in curves.values())
    rows = {}
    for name, c in curves.items():
        fid, before = value_at(c["minutes"], c["fid_mean"], t)
        together = sorted({m["trained_together"] for m in c["members"]})
        rows[name] = dict(fid_at_T=fid, before_first_point=before, final_fid=c["fid_mean"][-1])
        rows[name] |= dict(final_minutes=c["minutes"][-1], samples=c["samples"], trained_together=together)
    return {"minutes": t, "samples": sorted({n for c in curves.values() for n in c["samples"]}), "rows": rows}


def plot_fid_vs_time(
    curves: list[tuple[str, str, dict]], path: str | Path, minutes: float | None = None
) -> Path | None:
    """Validation FID against training minutes, one colour per row; ``None`` when no row has a point.

    Args:
      curves: ``(row name, colour, fid_time_curve(...))``: thin lines per
        seed, a bold line for the mean over seeds, a band from the minimum
        to the maximum over seeds. The legend gives each row's N and seeds;
        when the rows' N differ, the title says their FIDs are not comparable.
      path: the PNG to write.
      minutes: the equal-time budget ``T`` (a dotted line), if any.
    """
    curves = [(name, colour, c) for name, colour, c in curves if c and c["members"]]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, colour, c in curves:
        for member in c["members"]:
            ax.plot(member["minutes"], member["fid"], color=colour, linewidth=0.8, alpha=0.5)
        ax.fill_between(c["minutes"], c["fid_min"], c["fid_max"], color=colour, alpha=0.2, linewidth=0)
        seeds = len(c["members"])
        label = f"{name} (N = {', '.join(map(str, c['samples'])) or '?'}, {seeds} seed{'s' if seeds > 1 else ''})"
        ax.plot(c["minutes"], c["fid_mean"], color=colour, linewidth=2.2, marker="o", markersize=3, label=label)
    if minutes is not None:
        ax.axvline(minutes, color="0.4", linestyle=":", linewidth=1, label=f"equal time T = {minutes:.1f} min")
    sizes = {n for *_, c in curves for n in c["samples"]}
    title = "validation FID against training time (bold: mean over seeds; band: min–max)"
    if len(sizes) > 1:
        title += "\nN differs between rows: their FIDs are not comparable"
    ax.set(xlabel="training minutes (update steps; seeds trained together: all of them)", title=title)
    # a linear axis: a straight segment between two points is what equal_time's linear reading assumes
    ax.set(ylabel="validation FID ↓")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)
