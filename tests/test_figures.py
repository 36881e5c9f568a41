"""The pictures of a run: interpolation strips, the sample progression (fgm/figures.py, train.write_figures)."""

import json

import pytest
import torch
from PIL import Image

from experiments import run, train
from fgm import figures, interpolate

from .test_interpolate import binary_images, build, params_of, perturbed

KINDS_FLOW = {"prior_noise", "prior_noise_slerp", "prior_latent", "test_latent", "test_base"}


def test_write_interpolations(tmp_path):
    experiment, _ = build("vae_flow")
    params = perturbed(params_of(experiment))
    folder = tmp_path / "interpolations"
    files = figures.write_interpolations(experiment, params, folder, binary_images(20))
    assert set(files) == KINDS_FLOW
    assert all(p.exists() and p.parent == folder for p in files.values())
    index = json.loads((folder / figures.INDEX).read_text())
    # 12 images per strip by default: 10 interior points and both ends
    assert len(index["weights"]) == 12 and index["weights"][0] == 0.0 and index["weights"][-1] == 1.0
    assert index["seed"] == interpolate.INTERPOLATION_SEED and index["pairs"] == interpolate.PAIRS
    assert len(index["test_indices"]["a"]) == interpolate.PAIRS
    assert index["kinds"]["test_latent"]["real_ends"] and not index["kinds"]["prior_noise"]["real_ends"]
    assert set(index["kinds"]) == KINDS_FLOW
    assert all({"mean_step", "max_step_ratio", "path_ratio"} <= set(k) for k in index["kinds"].values())
    with Image.open(folder / "test_latent.png") as im:  # 12 + 2 real images per row
        assert im.size == (14 * 30 + 2, interpolate.PAIRS * 30 + 2)
    with Image.open(folder / "prior_noise.png") as im:
        assert im.size == (12 * 30 + 2, interpolate.PAIRS * 30 + 2)
    # the same fixed key gives the same pairs in every run
    again = figures.write_interpolations(experiment, params, tmp_path / "again", binary_images(20))
    assert again["prior_noise"].read_bytes() == files["prior_noise"].read_bytes()


def test_write_interpolations_points_and_pairs(tmp_path):
    experiment, _ = build("gan")
    params = params_of(experiment)
    files = figures.write_interpolations(experiment, params, tmp_path, None, interior=3, pairs=2)
    assert set(files) == {"prior_noise", "prior_noise_slerp"}
    index = json.loads((tmp_path / figures.INDEX).read_text())
    assert index["weights"] == [0.0, 0.25, 0.5, 0.75, 1.0] and index["test_indices"] is None
    with Image.open(files["prior_noise"]) as im:
        assert im.size == (5 * 30 + 2, 2 * 30 + 2)
    assert figures.write_interpolations(experiment._replace(interpolate=None), params, tmp_path / "none") == {}
    assert not (tmp_path / "none").exists()


def test_write_figures_one_folder_per_member(tmp_path):
    experiment, config = build("vae_std")
    params = [params_of(experiment, 0), params_of(experiment, 1)]
    for epoch in (1, 2):
        figures.save_grid(torch.rand(64, 1, 28, 28), tmp_path / "samples" / f"epoch_{epoch:04d}.png")
    test = binary_images(20)
    # one seed: interpolations/ itself
    train.write_figures(experiment, {**config, "seeds": [0]}, tmp_path / "one", params[:1], test)
    assert (tmp_path / "one" / "interpolations" / figures.INDEX).exists()
    # M seeds: interpolations/s<seed>/, one folder per member, each of its own parameters
    out = tmp_path / "two"
    (out / "samples").mkdir(parents=True)
    for path in (tmp_path / "samples").iterdir():
        (out / "samples" / path.name).write_bytes(path.read_bytes())
    train.write_figures(experiment, {**config, "seeds": [3, 4], "interpolation_points": 4}, out, params, test)
    folders = sorted(p.name for p in (out / "interpolations").iterdir())
    assert folders == ["s3", "s4"]
    for seed in ("s3", "s4"):
        index = json.loads((out / "interpolations" / seed / figures.INDEX).read_text())
        assert len(index["weights"]) == 6
    first, second = ((out / "interpolations" / s / "prior_noise.png").read_bytes() for s in ("s3", "s4"))
    assert first != second  # different members, different images
    assert (out / "samples" / figures.PROGRESSION_GIF).exists() and (out / "samples" / figures.PROGRESSION_PNG).exists()


def test_write_progression(tmp_path):
    assert figures.write_progression(tmp_path) == []
    for epoch in (5, 10, 15, 20):
        figures.save_grid(torch.full((64, 1, 28, 28), epoch / 20), tmp_path / "samples" / f"epoch_{epoch:04d}.png")
    gif, png = figures.write_progression(tmp_path, max_columns=3)
    with Image.open(gif) as im:
        assert im.n_frames == 4  # every grid
    assert [e for e, _ in figures.sample_epochs(tmp_path)] == [5, 10, 15, 20]
    assert png.exists()


def test_interpolation_points_is_a_setting_of_the_run(tmp_path, mnist_root):
    """``--set interpolation_points=3``: strips of 5 images (3 interior points + both ends), also when rewritten."""
    out = tmp_path / "run"
    assert (
        run.main(
            [
                "vae_std",
                "mnist",
                "--profile",
                "smoke",
                "--epochs",
                "1",
                "--train-limit",
                "128",
                "--val-limit",
                "64",
                "--test-limit",
                "64",
                "--no-progress",
                "--data-dir",
                str(mnist_root),
                "--set",
                "interpolation_points=3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["interpolation_points"] == 3
    folder = out / "interpolations"
    index = json.loads((folder / figures.INDEX).read_text())
    assert index["weights"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    with Image.open(folder / "prior_noise.png") as im:
        assert im.size == (5 * 30 + 2, interpolate.PAIRS * 30 + 2)
    with Image.open(folder / "test_latent.png") as im:  # and the two real images
        assert im.size == (7 * 30 + 2, interpolate.PAIRS * 30 + 2)
    assert "3 evenly spaced points" in index["kinds"]["prior_noise"]["caption"]
    # `python -m experiments.run figures RUN` redraws them from the checkpoint with the run's setting
    for path in folder.iterdir():
        path.unlink()
    assert run.main(["figures", str(out), "--data-dir", str(mnist_root)]) == 0
    assert json.loads((folder / figures.INDEX).read_text())["weights"] == index["weights"]
    assert (folder / "prior_noise.png").exists()


@pytest.mark.parametrize("value", ["0", "2.5", "x"])
def test_interpolation_points_refuses_bad_values(tmp_path, mnist_root, capsys, value):
    out = tmp_path / "run"
    assert (
        run.main(
            [
                "vae_std",
                "mnist",
                "--profile",
                "smoke",
                "--no-progress",
                "--data-dir",
                str(mnist_root),
                "--set",
                f"interpolation_points={value}",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "interpolation_points" in capsys.readouterr().err
    assert not out.exists()
