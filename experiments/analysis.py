"""Figures of one trained run: latent interpolations and the sample progression.

Interpolations. Two latent points ``a`` and ``b`` are joined by images at
``STEPS`` (10) evenly spaced weights ``w = 0, 1/9, ..., 1``, endpoints
included: ``w = 0`` is exactly ``a`` and ``w = 1`` exactly ``b``. The path is
linear, ``(1 - w) a + w b``; for Gaussian noise a spherical path
(:func:`slerp`) is drawn as well, because a straight line between two draws of
``N(0, I)`` in ``d`` dimensions passes through points of norm ``≈ √(d/2)``,
not ``≈ √d``, where the prior puts almost no mass.

Each model's recipe supplies ``interpolate(params, noise_a, noise_b,
images_a, images_b, weights) -> {kind: Strip}`` (see
:func:`vae_interpolations`, :func:`gan_interpolations`). The kinds:

* ``prior_noise``: the Gaussian noise the model samples from, interpolated
  linearly (the GAN's ``z``; ``vae_std``'s ``z``; ``vae_flow``'s *base*
  ``u``, then ``z = f(u)``).
* ``prior_noise_slerp``: the same pairs on the spherical path.
* ``prior_latent`` (flow prior only): the *latent* points ``z = f(u_a)``,
  ``f(u_b)`` of the same pairs, interpolated linearly in ``z``.
* ``test_latent`` (VAEs): posterior means ``μ(x_a)``, ``μ(x_b)`` of two
  test images, interpolated linearly in ``z``; the real images are shown at
  both ends of the strip (framed in red).
* ``test_base`` (flow prior only): the same encodings mapped to the base
  space, ``f⁻¹(μ)``, interpolated there and pushed back through ``f``.

The pairs come from one fixed key (:data:`INTERPOLATION_SEED`), independent
of the run's seed: models with the same latent size (``vae_std`` and
``vae_flow``, 32) get the same noise pairs, and every VAE on a dataset gets
the same test-image pairs, so the strips can be compared side by side. The
GAN (latent size 64) draws its own pairs from the same key.

    python -m experiments.analysis runs/vae_std-mnist-s0 [runs/...]   # (re)writes the figures of finished runs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import torch

from experiments import plots
from fgm import random

if TYPE_CHECKING:  # registry imports this module; avoid the cycle at run time
    from experiments.registry import Recipe

INTERPOLATION_SEED = 6  # fixed across runs and seeds: the same pairs everywhere
STEPS = 10
PAIRS = 6
INTERPOLATIONS = "interpolations"
INDEX = "index.json"
PROGRESSION_GIF = "progression.gif"
PROGRESSION_PNG = "progression.png"
_REAL_FRAME = (1.0, 0.0, 0.0)  # red


class Strip(NamedTuple):
    """One kind of interpolation for several pairs.

    Attributes:
      images: ``[P, W, C, H, W']`` generated images in ``[0, 1]``; pair ``p``'s
        strip runs from its first point (column 0, weight 0) to its second
        (column ``W - 1``, weight 1).
      caption: what was interpolated, in which space, and how.
      real_a: ``[P, C, H, W']`` the real images whose encodings start the
        strips (shown before column 0), or ``None``.
      real_b: ``[P, C, H, W']`` the real images at the other end, or ``None``.
    """

    images: torch.Tensor
    caption: str
    real_a: Optional[torch.Tensor] = None
    real_b: Optional[torch.Tensor] = None


# --------------------------------------------------------------------------- paths


def interpolation_weights(steps: int = STEPS) -> torch.Tensor:
    """``[steps]`` evenly spaced weights from 0 to 1, both included."""
    return torch.linspace(0.0, 1.0, steps)


def lerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear paths ``(1 - w) a + w b``.

    Exact at the ends: ``w = 0`` gives ``a`` and ``w = 1`` gives ``b`` bit for bit.

    Args:
      a: ``[P, d]`` start points.
      b: ``[P, d]`` end points.
      weights: ``[W]`` in ``[0, 1]``.

    Returns:
      ``[P, W, d]``.
    """
    w = weights.to(a.dtype)[None, :, None]
    return (1.0 - w) * a[:, None, :] + w * b[:, None, :]


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical paths (Shoemake), for Gaussian noise.

    ``sin((1 - w) Ω) / sin Ω · a + sin(w Ω) / sin Ω · b`` with ``Ω`` the angle
    between ``a`` and ``b``; the norm moves smoothly between ``|a|`` and ``|b|``
    instead of dipping in the middle. Nearly parallel pairs fall back to
    :func:`lerp`. Exact at ``w = 0`` and ``w = 1``.

    Args:
      a: ``[P, d]``.
      b: ``[P, d]``.
      weights: ``[W]`` in ``[0, 1]``.

    Returns:
      ``[P, W, d]``.
    """
    w = weights.to(a.dtype)[None, :, None]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)[:, None, None]
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    path = torch.sin((1.0 - w) * omega) / safe * a[:, None, :] + torch.sin(w * omega) / safe * b[:, None, :]
    return torch.where(parallel, lerp(a, b, weights), path)


def _weights_text(weights: torch.Tensor) -> str:
    return f"{weights.numel()} evenly spaced weights from 0 to 1, endpoints included"


# --------------------------------------------------------------------------- model hooks


def vae_interpolations(
    vae,
    params,
    noise_a: torch.Tensor,
    noise_b: torch.Tensor,
    images_a: Optional[torch.Tensor],
    images_b: Optional[torch.Tensor],
    weights: torch.Tensor,
    flow=None,
) -> dict[str, Strip]:
    """Interpolations of a :class:`fgm.models.vae.VAE`, decoded to the likelihood's mean.

    Args:
      vae: the model definition.
      params: ``{"encoder", "decoder", "prior"}``.
      noise_a: ``[P, d]`` base noise of the first points (what ``generate`` takes).
      noise_b: ``[P, d]`` base noise of the second points.
      images_a: ``[P, C, H, W]`` test images in model-input form (or ``None``).
      images_b: ``[P, C, H, W]`` the second test images (or ``None``).
      weights: ``[W]`` interpolation weights.
      flow: the prior's bijector ``f`` (``z = f(u)``) for a flow prior: adds
        the latent-space path of the noise pairs and the base-space path of the
        encodings; ``None`` for the standard normal prior, whose base and latent
        spaces coincide.

    Returns:
      ``{kind: Strip}``; see the module docstring for the kinds.
    """
    p, w = noise_a.shape[0], weights.numel()
    shape = tuple(vae.image_shape)

    def decode(z):  # [P, W, d] -> [P, W, C, H, W]
        return vae.likelihood.mean(vae.decode(params["decoder"], z.reshape(p * w, -1))).reshape(p, w, *shape)

    def push(u):  # base -> latent, z = f(u), on [P, W, d]
        return vae.prior.sample(params["prior"], u.reshape(p * w, -1)).reshape(p, w, -1)

    how = _weights_text(weights)
    strips: dict[str, Strip] = {}
    with torch.no_grad():
        if flow is None:
            space = "latent space z (the prior is N(0, I): base and latent space coincide)"
            strips["prior_noise"] = Strip(decode(lerp(noise_a, noise_b, weights)),
                                          f"two prior draws z ~ N(0, I), linear path in {space}; {how}")
            strips["prior_noise_slerp"] = Strip(decode(slerp(noise_a, noise_b, weights)),
                                                f"the same prior draws, spherical path (slerp) in {space}; {how}")
        else:
            strips["prior_noise"] = Strip(
                decode(push(lerp(noise_a, noise_b, weights))),
                f"two base draws u ~ N(0, I), linear path in the flow's base space u, decoded at z = f(u); {how}")
            strips["prior_noise_slerp"] = Strip(
                decode(push(slerp(noise_a, noise_b, weights))),
                f"the same base draws, spherical path (slerp) in base space u, decoded at z = f(u); {how}")
            z_a = vae.prior.sample(params["prior"], noise_a)
            z_b = vae.prior.sample(params["prior"], noise_b)
            strips["prior_latent"] = Strip(
                decode(lerp(z_a, z_b, weights)),
                f"the same draws mapped to latent space, z = f(u), linear path in latent space z; {how}")
        if images_a is not None and images_b is not None:
            real_a, real_b = _display(vae, images_a), _display(vae, images_b)
            mu_a, _ = vae.encode(params["encoder"], images_a)
            mu_b, _ = vae.encode(params["encoder"], images_b)
            strips["test_latent"] = Strip(
                decode(lerp(mu_a, mu_b, weights)),
                f"posterior means μ(x) of two test images (shown framed at both ends), linear path in latent "
                f"space z; {how}", real_a, real_b)
            if flow is not None:
                u_a = flow.inverse_and_log_det(params["prior"], mu_a)[0]
                u_b = flow.inverse_and_log_det(params["prior"], mu_b)[0]
                strips["test_base"] = Strip(
                    decode(push(lerp(u_a, u_b, weights))),
                    f"the same posterior means mapped to base space, u = f⁻¹(μ(x)), linear path in base space u, "
                    f"decoded at z = f(u); {how}", real_a, real_b)
    return strips


def _display(vae, x: torch.Tensor) -> torch.Tensor:
    """Model-input images as ``[0, 1]`` pictures (binarised MNIST as is; ``[-1, 1]`` pixels rescaled)."""
    if vae.likelihood.name == "bernoulli":
        return x.float()
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def gan_interpolations(
    gan,
    params,
    noise_a: torch.Tensor,
    noise_b: torch.Tensor,
    images_a: Optional[torch.Tensor],
    images_b: Optional[torch.Tensor],
    weights: torch.Tensor,
) -> dict[str, Strip]:
    """Interpolations of a :class:`fgm.models.gan.GAN` between latent draws (no encoder: no real images).

    Args: as :func:`vae_interpolations` (``images_a``/``images_b`` are ignored).

    Returns:
      ``{"prior_noise", "prior_noise_slerp"}``.
    """
    from fgm.models import gan as gan_lib

    p, w = noise_a.shape[0], weights.numel()

    def generate(z):
        return gan_lib.generate(gan, params, z.reshape(p * w, -1)).reshape(p, w, *gan.image_shape)

    how = _weights_text(weights)
    with torch.no_grad():
        return {
            "prior_noise": Strip(generate(lerp(noise_a, noise_b, weights)),
                                 f"two latent draws z ~ N(0, I), linear path in latent space z; {how}"),
            "prior_noise_slerp": Strip(generate(slerp(noise_a, noise_b, weights)),
                                       f"the same latent draws, spherical path (slerp) in latent space z; {how}"),
        }


# --------------------------------------------------------------------------- smoothness


def path_statistics(images: torch.Tensor) -> dict[str, float]:
    """How evenly a strip changes, in pixel space.

    With ``s_i = mean |x_{i+1} - x_i|`` the mean absolute pixel change of step
    ``i`` of a strip (``W - 1`` steps):

    * ``mean_step``: ``s_i`` averaged over steps and pairs;
    * ``max_step_ratio``: ``max_i s_i / mean_i s_i``, averaged over pairs:
      1 when every step changes the image equally, ``W - 1`` when the whole
      change happens in one step (an abrupt jump);
    * ``path_ratio``: ``Σ_i s_i / mean |x_{W-1} - x_0|``, averaged over pairs:
      1 for a pixel-wise cross-fade, larger when the path passes through
      images unlike either end.

    Args:
      images: ``[P, W, C, H, W']``.
    """
    x = images.double()
    steps = (x[:, 1:] - x[:, :-1]).abs().flatten(2).mean(-1)  # [P, W-1]
    direct = (x[:, -1] - x[:, 0]).abs().flatten(1).mean(-1)  # [P]
    mean = steps.mean(1)
    return {
        "mean_step": float(steps.mean()),
        "max_step_ratio": float((steps.max(1).values / mean.clamp_min(1e-12)).mean()),
        "path_ratio": float((steps.sum(1) / direct.clamp_min(1e-12)).mean()),
    }


# --------------------------------------------------------------------------- figures


def _frame(images: torch.Tensor, colour=_REAL_FRAME) -> torch.Tensor:
    """RGB copies of ``[N, C, H, W]`` images with a 1-pixel coloured frame."""
    x = images.expand(-1, 3, -1, -1).clone() if images.shape[1] == 1 else images.clone()
    c = torch.tensor(colour, dtype=x.dtype)[None, :, None]
    x[:, :, 0, :] = c
    x[:, :, -1, :] = c
    x[:, :, :, 0] = c
    x[:, :, :, -1] = c
    return x


def _strip_grid(strip: Strip) -> tuple[torch.Tensor, int]:
    """``([N, C, H, W], images per row)`` of a strip, real ends framed."""
    p, w = strip.images.shape[:2]
    images = strip.images
    if strip.real_a is None:
        return images.reshape(p * w, *images.shape[2:]), w
    gen = images.expand(-1, -1, 3, -1, -1) if images.shape[2] == 1 else images
    rows = torch.cat([_frame(strip.real_a)[:, None], gen, _frame(strip.real_b)[:, None]], dim=1)
    return rows.reshape(p * (w + 2), *rows.shape[2:]), w + 2


def test_pairs(num_images: int, pairs: int = PAIRS, key: random.Key | None = None) -> tuple[list[int], list[int]]:
    """Fixed indices ``(a, b)`` of ``pairs`` pairs of distinct test images."""
    if num_images < 2:
        raise ValueError("need at least two test images to interpolate between")
    key = key if key is not None else random.key(INTERPOLATION_SEED)
    perm = random.permutation(random.fold_in(key, 2), num_images).tolist()
    # consecutive entries of a permutation: distinct even when the list wraps around
    return [perm[(2 * i) % num_images] for i in range(pairs)], [perm[(2 * i + 1) % num_images] for i in range(pairs)]


def write_interpolations(
    recipe: "Recipe",
    params: Any,
    out: str | Path,
    test_inputs: torch.Tensor | None = None,
    key: random.Key | None = None,
    pairs: int = PAIRS,
    steps: int = STEPS,
) -> dict[str, Path]:
    """Writes ``out/interpolations/<kind>.png`` (one row per pair) and ``index.json``.

    Args:
      recipe: the model's recipe; nothing is written when it has no ``interpolate``.
      params: trained parameters.
      out: the run directory.
      test_inputs: ``[N, C, H, W]`` test images in model-input form, for the
        encodings (VAEs); ``None`` skips those.
      key: fixes the pairs; default :data:`INTERPOLATION_SEED` (the same for every run).
      pairs: rows per figure.
      steps: images per strip, endpoints included.

    Returns:
      ``{kind: path}`` of the PNGs written.
    """
    interpolate = getattr(recipe, "interpolate", None)
    if interpolate is None:
        return {}
    shared_key = key is None
    key = key if key is not None else random.key(INTERPOLATION_SEED)
    weights = interpolation_weights(steps)
    noise_a = recipe.noise(random.fold_in(key, 0), pairs)
    noise_b = recipe.noise(random.fold_in(key, 1), pairs)
    images_a = images_b = None
    index_a = index_b = None
    if test_inputs is not None and test_inputs.shape[0] >= 2:
        index_a, index_b = test_pairs(test_inputs.shape[0], pairs, key)
        images_a, images_b = test_inputs[index_a], test_inputs[index_b]
    strips = interpolate(params, noise_a, noise_b, images_a, images_b, weights)
    folder = Path(out) / INTERPOLATIONS
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    index: dict[str, Any] = {
        "weights": [round(float(v), 6) for v in weights],
        "pairs": pairs,
        "seed": INTERPOLATION_SEED if shared_key else None,
        "test_indices": {"a": index_a, "b": index_b} if index_a is not None else None,
        "kinds": {},
    }
    for kind, strip in strips.items():
        grid, nrow = _strip_grid(strip)
        path = folder / f"{kind}.png"
        plots.save_grid(grid, path, nrow=nrow)
        written[kind] = path
        index["kinds"][kind] = {
            "file": path.name,
            "caption": strip.caption,
            "real_ends": strip.real_a is not None,
            **path_statistics(strip.images),
        }
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
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image, ImageDraw

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
    fig, axes = plt.subplots(1, len(columns), figsize=(col * len(columns) + 0.3, col * height / width + 0.7),
                             squeeze=False)
    for ax, (epoch, image) in zip(axes[0], columns):
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"epoch {epoch}", fontsize=8)
    fig.suptitle("same latents through training", fontsize=9)
    fig.tight_layout()
    png = folder / PROGRESSION_PNG
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [gif, png]


def write_run_figures(
    recipe: "Recipe",
    params: Any,
    out: str | Path,
    test_inputs: torch.Tensor | None = None,
    key: random.Key | None = None,
) -> dict[str, Path]:
    """Interpolations and the progression of a finished run.

    Args:
      recipe: the model's recipe.
      params: trained parameters.
      out: the run directory (with its ``samples/epoch_*.png``).
      test_inputs: test images in model-input form (for the VAEs' encodings).
      key: fixes the pairs; default the shared :data:`INTERPOLATION_SEED`.

    Returns:
      ``{name: path}``: ``interpolations/<kind>`` for each kind and
      ``progression.gif`` / ``progression.png``.
    """
    files = {f"{INTERPOLATIONS}/{kind}": path for kind, path in write_interpolations(recipe, params, out, test_inputs, key).items()}
    files.update({path.name: path for path in write_progression(out)})
    return files


# --------------------------------------------------------------------------- existing runs


def figures_for_run(run_dir: str | Path, data_dir: str | None = None) -> dict[str, Path]:
    """Rebuilds a run from ``config.json`` + ``checkpoint.pt`` and writes its figures.

    For runs made before the runner wrote them. Loads the test split (for the
    encodings) with the run's ``test_limit``. For a seed ensemble (a config
    with ``seeds``), the interpolations are those of its first member.
    """
    from experiments import registry, trainer
    from fgm import checkpoint
    from fgm import data as fdata

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    spec = fdata.get_spec(config["dataset"])
    recipe = registry.get_model(config["model"]).build(spec, config)
    if config.get("seeds"):
        from fgm import ensemble

        template = ensemble.stack_states([recipe.init(random.key(s)) for s in config["seeds"]])
        state, _ = checkpoint.load(run_dir / trainer.CHECKPOINT, template)
        params = ensemble.member(state.params, 0)
    else:
        state, _ = checkpoint.load(run_dir / trainer.CHECKPOINT, recipe.init(random.key(config["seed"])))
        params = state.params
    test = fdata.load_images(config["dataset"], "test", data_dir)
    if config.get("test_limit") is not None:
        test = test[: config["test_limit"]]
    eval_input = recipe.eval_input or (lambda imgs: fdata.to_eval_input(config["dataset"], imgs))
    return write_run_figures(recipe, params, run_dir, eval_input(test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.analysis",
                                     description="(Re)write interpolation and progression figures of finished runs.")
    parser.add_argument("runs", nargs="+", help="run directories (with config.json and checkpoint.pt)")
    parser.add_argument("--data-dir", help="dataset root (default: $FGM_DATA_DIR, else ./data)")
    args = parser.parse_args(argv)
    from fgm import checkpoint
    from fgm import data as fdata

    status = 0
    for run_dir in args.runs:
        try:
            files = figures_for_run(run_dir, args.data_dir)
        except (OSError, ValueError, KeyError, fdata.DataError, checkpoint.CheckpointError) as exc:
            print(f"{run_dir}: error: {exc}", file=sys.stderr)
            status = 2
            continue
        print(f"{run_dir}: {len(files)} figures ({', '.join(sorted(files))})")
    return status


if __name__ == "__main__":
    sys.exit(main())
