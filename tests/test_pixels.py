"""Images leave the models in [0, 1] whatever the networks output: the clamps of the pixel ranges."""

from types import SimpleNamespace

import torch
from torch import nn

from fgm import random
from fgm.metrics import samples
from fgm.models import gan as G
from fgm.models import vae as V


def test_gan_images_are_mapped_to_the_unit_interval_and_clamped():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 3.0])
    assert torch.equal(G.to_unit_interval(x), torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]))


def test_discretized_logistic_mean_clamps_the_locations():
    """Channels ``[0, C)`` are the locations, ``[C, 2C)`` the log-scales (which the mean ignores)."""
    loc = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 2, 3)
    out = torch.cat([loc, torch.full_like(loc, 5.0)], dim=1)
    mean = V.discretized_logistic_likelihood().mean(out)
    assert torch.equal(mean, torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]).view(1, 1, 2, 3))


def test_a_vae_whose_decoder_overshoots_still_generates_images_in_the_unit_interval(key):
    latent, shape = 2, (1, 2, 2)
    vae = V.make_vae(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 2 * latent)),
        lambda: nn.Sequential(nn.Linear(latent, 8), nn.Unflatten(1, (2, 2, 2))),  # unbounded locations
        V.discretized_logistic_likelihood(),
        latent,
        shape,
    )
    params = V.init(vae, key)
    params["decoder"] = {k: 50 * v for k, v in params["decoder"].items()}
    eps = random.normal(key, (64, latent))
    loc = vae.decode(params["decoder"], eps)[:, :1]  # the prior is N(0, I): z = eps
    assert loc.min() < -1 and loc.max() > 1  # it does overshoot
    images = V.generate(vae, params, eps)
    assert images.shape == (64, *shape) and images.min() == 0 and images.max() == 1
    torch.testing.assert_close(images, (loc.clamp(-1, 1) + 1) / 2, rtol=0, atol=0)


def test_generated_batches_for_the_metrics_are_clamped_to_the_unit_interval(key):
    """A registered model's ``generate`` may overshoot [0, 1]; the FID/KID inputs never do."""
    trainer = SimpleNamespace(
        noise=lambda k, n, device="cpu": random.normal(k, (n, 3), device=device),
        generate=lambda params, z: (z * 4).view(-1, 1, 1, 3),
    )
    batches = list(samples.generated_batches(trainer, {"w": torch.zeros(1)}, key, 10, batch_size=4))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    images = torch.cat(batches)
    raw = torch.cat([(trainer.noise(random.fold_in(key, i), n) * 4).view(-1, 1, 1, 3) for i, n in enumerate((4, 4, 2))])
    assert raw.min() < 0 and raw.max() > 1 and torch.equal(images, raw.clamp(0, 1))
