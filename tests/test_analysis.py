"""Interpolations and the sample progression (experiments/analysis.py)."""

import json

import optree
import pytest
import torch
from PIL import Image

from experiments import analysis, plots, registry, run
from fgm import data as fdata
from fgm import random
from fgm.models import vae as vae_lib


def build(model, dataset="mnist"):
    config = run.resolve_config(run.parse_args([model, dataset, "--profile", "smoke"]))
    config["total_steps"] = 10
    return registry.get_model(model).build(fdata.get_spec(dataset), config), config


def params_of(recipe, seed=0):
    return recipe.init(random.key(seed)).params


def perturbed(params, scale=0.2):
    """Parameters with a non-identity flow prior (a fresh RealNVP prior is exactly the identity)."""
    leaves, spec = optree.tree_flatten(params["prior"])
    noisy = [leaf + scale * random.normal(random.key(100 + i), leaf.shape) for i, leaf in enumerate(leaves)]
    return {**params, "prior": optree.tree_unflatten(spec, noisy)}


def binary_images(n, seed=1):
    return random.bernoulli(random.key(seed), torch.full((n, 1, 28, 28), 0.3))


def test_paths_are_exact_at_the_ends():
    a, b = random.normal(random.key(0), (5, 32)), random.normal(random.key(1), (5, 32))
    w = analysis.interpolation_weights(10)
    assert w.numel() == 10 and w[0] == 0 and w[-1] == 1
    assert torch.allclose(w[1:] - w[:-1], torch.full((9,), 1 / 9))
    for path in (analysis.lerp(a, b, w), analysis.slerp(a, b, w)):
        assert path.shape == (5, 10, 32)
        assert torch.equal(path[:, 0], a) and torch.equal(path[:, -1], b)


def test_slerp_keeps_the_norm_that_lerp_loses():
    a = random.normal(random.key(0), (64, 32))
    b = random.normal(random.key(1), (64, 32))
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms
    w = torch.tensor([0.5])
    mid_s, mid_l = analysis.slerp(a, b, w)[:, 0], analysis.lerp(a, b, w)[:, 0]
    assert torch.allclose(mid_s.norm(dim=1), a.norm(dim=1), rtol=1e-5)
    assert (mid_l.norm(dim=1) < 0.9 * a.norm(dim=1)).float().mean() > 0.9  # near-orthogonal draws: ~1/√2
    same = analysis.slerp(a, a, analysis.interpolation_weights(4))  # parallel: falls back to lerp
    assert torch.allclose(same, a[:, None].expand(-1, 4, -1))


@pytest.mark.parametrize("model", ["vae_std", "vae_flow", "gan"])
def test_interpolation_endpoints_are_the_generated_images(model):
    recipe, config = build(model)
    params = params_of(recipe)
    if model == "vae_flow":
        params = perturbed(params)
    na, nb = recipe.noise(random.key(3), 4), recipe.noise(random.key(4), 4)
    xa, xb = binary_images(4, 5), binary_images(4, 6)
    w = analysis.interpolation_weights(10)
    strips = recipe.interpolate(params, na, nb, xa, xb, w)
    with torch.no_grad():
        ga, gb = recipe.generate(params, na), recipe.generate(params, nb)
    for kind in ("prior_noise", "prior_noise_slerp"):
        images = strips[kind].images
        assert images.shape == (4, 10, 1, 28, 28)
        # weight 0 and 1 give the two latent points' own images (batching may round in the last bit)
        torch.testing.assert_close(images[:, 0], ga, rtol=0, atol=1e-6)
        torch.testing.assert_close(images[:, -1], gb, rtol=0, atol=1e-6)
        assert "endpoints included" in strips[kind].caption
    if model == "gan":
        assert set(strips) == {"prior_noise", "prior_noise_slerp"}
        return
    vae = registry.build_vae(fdata.get_spec("mnist"), config)  # same encoder/decoder functions
    with torch.no_grad():
        ra, rb = vae_lib.reconstruct(vae, params, xa), vae_lib.reconstruct(vae, params, xb)
    enc = strips["test_latent"]
    torch.testing.assert_close(enc.images[:, 0], ra, rtol=0, atol=1e-6)
    torch.testing.assert_close(enc.images[:, -1], rb, rtol=0, atol=1e-6)
    assert torch.equal(enc.real_a, xa) and torch.equal(enc.real_b, xb)  # binarised inputs shown as they are
    expected = {"prior_noise", "prior_noise_slerp", "test_latent"}
    if model == "vae_flow":
        expected |= {"prior_latent", "test_base"}
    assert set(strips) == expected


def test_flow_base_and_latent_space_paths_agree_at_the_ends_only():
    recipe, _ = build("vae_flow")
    params = perturbed(params_of(recipe))
    na, nb = recipe.noise(random.key(3), 4), recipe.noise(random.key(4), 4)
    xa, xb = binary_images(4, 5), binary_images(4, 6)
    strips = recipe.interpolate(params, na, nb, xa, xb, analysis.interpolation_weights(10))
    for base, latent in (("prior_noise", "prior_latent"), ("test_base", "test_latent")):
        b, z = strips[base].images, strips[latent].images
        torch.testing.assert_close(b[:, [0, -1]], z[:, [0, -1]], rtol=0, atol=1e-5)
        assert (b[:, 1:-1] - z[:, 1:-1]).abs().max() > 1e-3  # a non-linear flow: different paths between
        assert "base space" in strips[base].caption and "latent space" in strips[latent].caption


def test_std_prior_paths_are_in_latent_space():
    recipe, _ = build("vae_std")
    params = params_of(recipe)
    na, nb = recipe.noise(random.key(3), 2), recipe.noise(random.key(4), 2)
    w = analysis.interpolation_weights(5)
    strips = recipe.interpolate(params, na, nb, None, None, w)
    assert set(strips) == {"prior_noise", "prior_noise_slerp"}  # no test images: no encodings
    with torch.no_grad():
        direct = recipe.generate(params, analysis.lerp(na, nb, w).reshape(10, -1)).reshape(2, 5, 1, 28, 28)
    torch.testing.assert_close(strips["prior_noise"].images, direct, rtol=0, atol=1e-6)


def test_path_statistics():
    ramp = torch.linspace(0, 1, 10)[None, :, None, None, None].expand(2, 10, 1, 4, 4)  # even cross-fade
    s = analysis.path_statistics(ramp)
    assert s["max_step_ratio"] == pytest.approx(1.0) and s["path_ratio"] == pytest.approx(1.0)
    jump = torch.zeros(2, 10, 1, 4, 4)
    jump[:, 5:] = 1.0  # all change in one step
    assert analysis.path_statistics(jump)["max_step_ratio"] == pytest.approx(9.0)


def test_test_pairs_are_fixed_and_distinct():
    a, b = analysis.test_pairs(100, 6)
    assert (a, b) == analysis.test_pairs(100, 6)
    assert len(set(a + b)) == 12
    a, b = analysis.test_pairs(3, 6)  # fewer images than needed: reused, never paired with itself
    assert all(i != j for i, j in zip(a, b))


def test_write_run_figures(tmp_path):
    recipe, _ = build("vae_flow")
    params = perturbed(params_of(recipe))
    for epoch in (1, 2, 3):
        plots.save_grid(torch.rand(64, 1, 28, 28), tmp_path / "samples" / f"epoch_{epoch:04d}.png")
    files = analysis.write_run_figures(recipe, params, tmp_path, binary_images(20))
    kinds = {"prior_noise", "prior_noise_slerp", "prior_latent", "test_latent", "test_base"}
    assert set(files) == {f"interpolations/{k}" for k in kinds} | {"progression.gif", "progression.png"}
    assert all(p.exists() for p in files.values())
    index = json.loads((tmp_path / "interpolations" / "index.json").read_text())
    assert index["weights"][0] == 0.0 and index["weights"][-1] == 1.0 and len(index["weights"]) == 10
    assert index["seed"] == analysis.INTERPOLATION_SEED and len(index["test_indices"]["a"]) == analysis.PAIRS
    assert index["kinds"]["test_latent"]["real_ends"] and not index["kinds"]["prior_noise"]["real_ends"]
    with Image.open(tmp_path / "interpolations" / "test_latent.png") as im:  # 10 + 2 real images per row
        assert im.size == (12 * 30 + 2, analysis.PAIRS * 30 + 2)
    with Image.open(tmp_path / "interpolations" / "prior_noise.png") as im:
        assert im.size == (10 * 30 + 2, analysis.PAIRS * 30 + 2)
    # the same fixed key gives the same pairs in every run
    again = analysis.write_interpolations(recipe, params, tmp_path / "again", binary_images(20))
    assert (again["prior_noise"].read_bytes() == files["interpolations/prior_noise"].read_bytes())


def test_write_progression(tmp_path):
    assert analysis.write_progression(tmp_path) == []
    for epoch in (5, 10, 15, 20):
        plots.save_grid(torch.full((64, 1, 28, 28), epoch / 20), tmp_path / "samples" / f"epoch_{epoch:04d}.png")
    gif, png = analysis.write_progression(tmp_path, max_columns=3)
    with Image.open(gif) as im:
        assert im.n_frames == 4  # every grid
    assert [e for e, _ in analysis.sample_epochs(tmp_path)] == [5, 10, 15, 20]
    assert png.exists()
