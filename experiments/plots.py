"""Pictures of a run: learning curves and image grids."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Saves ``[N, C, H, W]`` images in ``[0, 1]`` as one PNG grid."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(images.clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=1.0)


def read_metrics(path: str | Path) -> list[dict]:
    """The per-epoch records of a ``metrics.jsonl`` file."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(records: list[dict], path: str | Path, title: str = "") -> None:
    """Plots every ``train_*`` / ``val_*`` metric pair, one panel per metric."""
    if not records:
        return
    names = {k.split("_", 1)[1] for r in records for k in r
             if k.startswith(("train_", "val_")) and not k.endswith("_samples")}  # counts are not curves
    # the objective first, its parts after
    names = sorted(names, key=lambda n: (n not in ("neg_elbo", "loss"), n))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    epochs = [r["epoch"] for r in records]
    for ax, name in zip(axes[0], names):
        for split, style in (("train", "-"), ("val", "--")):
            # Some metrics (validation FID) exist only every few epochs: join the epochs that have them.
            points = [(e, r[f"{split}_{name}"]) for e, r in zip(epochs, records) if r.get(f"{split}_{name}") is not None]
            if points:
                ax.plot(*zip(*points), style, marker="o", markersize=3, label=split)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
