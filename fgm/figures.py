"""Pictures of a training run, written to files: learning curves, sample grids, interpolations, progression.

Every function here takes numbers or images and writes files; the maths of
the interpolation paths is in :mod:`fgm.interpolate`. The command line
(``experiments``) selects matplotlib's file-only backend; here the backend
is left to the caller (a notebook keeps its own).
"""

from __future__ import annotations

import json
import re
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
    "plot_curves",
    "sample_epochs",
    "save_figure",
    "save_grid",
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
