"""Latent interpolations: paths, strips and their statistics (fgm/interpolate.py)."""

import optree
import pytest
import torch

from experiments import config as cfg
from experiments import models
from fgm import data as fdata
from fgm import interpolate, random
from fgm.models import vae as vae_lib


def build(model, dataset="mnist"):
    """The model's Experiment and config, as ``python -m experiments.run MODEL DATASET --profile smoke`` resolves
    them."""
    args = cfg.train_parser(sorted(models.MODELS), list(fdata.DATASETS)).parse_args(
        [model, dataset, "--profile", "smoke"]
    )
    config = cfg.resolve(args, models.get_model(model))
    config["total_steps"] = 10
    return models.build(config), config


def params_of(experiment, seed=0):
    """What evaluation reads at initialisation: parameters, with layer state for a stateful model."""
    return experiment.trainer.variables(experiment.trainer.init(random.key(seed)))


def perturbed(params, scale=0.2):
    """Parameters with a non-identity flow prior (a fresh RealNVP prior is exactly the identity)."""
    leaves, spec = optree.tree_flatten(params["prior"])
    noisy = [leaf + scale * random.normal(random.key(100 + i), leaf.shape) for i, leaf in enumerate(leaves)]
    return {**params, "prior": optree.tree_unflatten(spec, noisy)}


def binary_images(n, seed=1):
    return random.bernoulli(random.key(seed), torch.full((n, 1, 28, 28), 0.3))


def test_paths_are_exact_at_the_ends():
    a, b = random.normal(random.key(0), (5, 32)), random.normal(random.key(1), (5, 32))
    w = interpolate.interpolation_weights(10)
    assert w.numel() == 12 and w[0] == 0 and w[-1] == 1  # 10 interior points and both ends
    assert torch.allclose(w[1:] - w[:-1], torch.full((11,), 1 / 11))
    for path in (interpolate.lerp(a, b, w), interpolate.slerp(a, b, w)):
        assert path.shape == (5, 12, 32)
        assert torch.equal(path[:, 0], a) and torch.equal(path[:, -1], b)


def test_weights_default_to_ten_interior_points_and_refuse_none():
    w = interpolate.interpolation_weights()
    assert interpolate.INTERIOR_POINTS == 10 and w.numel() == 12
    assert torch.equal(w, torch.linspace(0, 1, 12))
    assert ((w[1:-1] > 0) & (w[1:-1] < 1)).all() and w[1:-1].numel() == 10  # strictly between the ends
    assert interpolate.interpolation_weights(3).tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    with pytest.raises(ValueError, match="at least one interior point"):
        interpolate.interpolation_weights(0)


def test_slerp_keeps_the_norm_that_lerp_loses():
    a = random.normal(random.key(0), (64, 32))
    b = random.normal(random.key(1), (64, 32))
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms
    w = torch.tensor([0.5])
    mid_s, mid_l = interpolate.slerp(a, b, w)[:, 0], interpolate.lerp(a, b, w)[:, 0]
    assert torch.allclose(mid_s.norm(dim=1), a.norm(dim=1), rtol=1e-5)
    assert (mid_l.norm(dim=1) < 0.9 * a.norm(dim=1)).float().mean() > 0.9  # near-orthogonal draws: ~1/√2
    w = interpolate.interpolation_weights(2)
    same = interpolate.slerp(a, a, w)  # parallel: falls back to lerp
    assert torch.allclose(same, a[:, None].expand(-1, 4, -1))


@pytest.mark.parametrize("model", ["vae_std", "vae_flow", "gan"])
def test_interpolation_endpoints_are_the_generated_images(model):
    experiment, config = build(model)
    trainer = experiment.trainer
    params = params_of(experiment)
    if model == "vae_flow":
        params = perturbed(params)
    na, nb = trainer.noise(random.key(3), 4), trainer.noise(random.key(4), 4)
    xa, xb = binary_images(4, 5), binary_images(4, 6)
    w = interpolate.interpolation_weights(10)
    strips = experiment.interpolate(params, na, nb, xa, xb, w)
    with torch.no_grad():
        ga, gb = trainer.generate(params, na), trainer.generate(params, nb)
    for kind in ("prior_noise", "prior_noise_slerp"):
        images = strips[kind].images
        assert images.shape == (4, 12, 1, 28, 28)
        # weight 0 and 1 give the two latent points' own images: exactly, when decoded in the same batch ...
        path = (interpolate.lerp if kind == "prior_noise" else interpolate.slerp)(na, nb, w)
        with torch.no_grad():
            whole = trainer.generate(params, path.reshape(4 * 12, -1)).reshape(images.shape)
        assert torch.equal(images, whole)
        assert torch.equal(path[:, 0], na) and torch.equal(path[:, -1], nb)
        # ... and up to rounding when the two points are decoded alone (a batch of 4, not 48: other
        # matmul blockings; a perturbed flow prior amplifies the last bits to ~2e-6)
        torch.testing.assert_close(images[:, 0], ga, rtol=0, atol=1e-5)
        torch.testing.assert_close(images[:, -1], gb, rtol=0, atol=1e-5)
        assert "10 evenly spaced points between the two ends, both ends shown" in strips[kind].caption
    if model == "gan":
        assert set(strips) == {"prior_noise", "prior_noise_slerp"}
        return
    vae = models.build_vae(fdata.get_spec("mnist"), config)  # same encoder/decoder functions
    with torch.no_grad():
        ra, rb = vae_lib.reconstruct(vae, params, xa), vae_lib.reconstruct(vae, params, xb)
    enc = strips["test_latent"]
    assert enc.images.shape == (4, 12, 1, 28, 28)
    torch.testing.assert_close(enc.images[:, 0], ra, rtol=0, atol=1e-5)
    torch.testing.assert_close(enc.images[:, -1], rb, rtol=0, atol=1e-5)
    assert torch.equal(enc.real_a, xa) and torch.equal(enc.real_b, xb)  # binarised inputs shown as they are
    expected = {"prior_noise", "prior_noise_slerp", "test_latent"}
    if model == "vae_flow":
        expected |= {"prior_latent", "test_base"}
    assert set(strips) == expected


@pytest.mark.parametrize("model", ["vae_std", "gan"])
def test_a_strip_has_twelve_images_by_default(model):
    experiment, _ = build(model)
    trainer = experiment.trainer
    params = params_of(experiment)
    na, nb = trainer.noise(random.key(3), 2), trainer.noise(random.key(4), 2)
    strips = experiment.interpolate(
        params, na, nb, binary_images(2, 5), binary_images(2, 6), interpolate.interpolation_weights()
    )
    assert all(s.images.shape[:2] == (2, 12) for s in strips.values())  # 10 interior points + both ends
    few = experiment.interpolate(params, na, nb, None, None, interpolate.interpolation_weights(3))
    assert all(s.images.shape[:2] == (2, 5) for s in few.values())
    assert all("3 evenly spaced points" in s.caption for s in few.values())


def test_flow_base_and_latent_space_paths_agree_at_the_ends_only():
    experiment, _ = build("vae_flow")
    trainer = experiment.trainer
    params = perturbed(params_of(experiment))
    na, nb = trainer.noise(random.key(3), 4), trainer.noise(random.key(4), 4)
    xa, xb = binary_images(4, 5), binary_images(4, 6)
    strips = experiment.interpolate(params, na, nb, xa, xb, interpolate.interpolation_weights(10))
    for base, latent in (("prior_noise", "prior_latent"), ("test_base", "test_latent")):
        b, z = strips[base].images, strips[latent].images
        # the same ends up to rounding (test_base's ends go through f(f⁻¹(μ)): ~1.5e-5 after decoding)
        torch.testing.assert_close(b[:, [0, -1]], z[:, [0, -1]], rtol=0, atol=1e-4)
        assert (b[:, 1:-1] - z[:, 1:-1]).abs().max() > 1e-3  # a non-linear flow: different paths between
        assert "base space" in strips[base].caption and "latent space" in strips[latent].caption


def test_std_prior_paths_are_in_latent_space():
    experiment, _ = build("vae_std")
    trainer = experiment.trainer
    params = params_of(experiment)
    na, nb = trainer.noise(random.key(3), 2), trainer.noise(random.key(4), 2)
    w = interpolate.interpolation_weights(3)  # 5 weights
    strips = experiment.interpolate(params, na, nb, None, None, w)
    assert set(strips) == {"prior_noise", "prior_noise_slerp"}  # no test images: no encodings
    with torch.no_grad():
        direct = trainer.generate(params, interpolate.lerp(na, nb, w).reshape(10, -1)).reshape(2, 5, 1, 28, 28)
    torch.testing.assert_close(strips["prior_noise"].images, direct, rtol=0, atol=1e-6)


def test_path_statistics():
    ramp = torch.linspace(0, 1, 10)[None, :, None, None, None].expand(2, 10, 1, 4, 4)  # even cross-fade
    s = interpolate.path_statistics(ramp)
    assert s["max_step_ratio"] == pytest.approx(1.0) and s["path_ratio"] == pytest.approx(1.0)
    assert s["mean_step"] == pytest.approx(1 / 9)
    jump = torch.zeros(2, 10, 1, 4, 4)
    jump[:, 5:] = 1.0  # all change in one step
    assert interpolate.path_statistics(jump)["max_step_ratio"] == pytest.approx(9.0)
    detour = torch.zeros(2, 3, 1, 4, 4)
    detour[:, 1] = 1.0  # 0 -> 1 -> 0 ... to an end that differs by 0.5
    detour[:, 2] = 0.5
    assert interpolate.path_statistics(detour)["path_ratio"] == pytest.approx(3.0)


def test_test_pairs_are_fixed_and_distinct():
    a, b = interpolate.test_pairs(100, 6)
    assert (a, b) == interpolate.test_pairs(100, 6)
    assert len(set(a + b)) == 12
    a, b = interpolate.test_pairs(3, 6)  # fewer images than needed: reused, never paired with itself
    assert all(i != j for i, j in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="at least two test images"):
        interpolate.test_pairs(1)
