"""Run profiles: how long and how big a run is.

``smoke`` checks the pipeline end to end in seconds (data subsets);
``default`` is the 10-minute CPU run the README promises; ``full`` trains
longer for the numbers in reports. Model-specific entries override the
shared ones; command-line flags override both.
"""

from __future__ import annotations

PROFILES: dict[str, dict] = {
    "smoke": {
        "epochs": 2,
        "batch_size": 64,
        "lr": 1e-3,
        "lr_schedule": "constant",
        "train_limit": 1024,
        "val_limit": 256,
        "test_limit": 256,
        "sample_every": 1,
        "nll_samples": 10,
        "fid_samples": 0,  # Inception at 299x299 costs seconds per few images on a CPU
        "fid_reference_count": None,
    },
    "default": {
        "epochs": 40,
        "batch_size": 128,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "lr_final_fraction": 0.1,
        "train_limit": None,
        "val_limit": None,
        "test_limit": None,
        "sample_every": 5,
        "nll_samples": 100,
        # FID on 2 CPU cores runs at ~10 images/s (BENCHMARKS.md), so the
        # default compares 1,000 samples with the first 1,000 test images
        # (cached). FID is biased upwards at small N: compare values at equal N only.
        "fid_samples": 1000,
        "fid_reference_count": 1000,
    },
    "full": {
        "epochs": 200,
        "batch_size": 128,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "lr_final_fraction": 0.05,
        "train_limit": None,
        "val_limit": None,
        "test_limit": None,
        "sample_every": 10,
        "nll_samples": 5000,
        "fid_samples": 10_000,
        "fid_reference_count": None,  # the whole test split
    },
}

# (model, dataset, profile) -> overrides, for when one size does not fit all.
OVERRIDES: dict[tuple[str, str, str], dict] = {}


def resolve(model: str, dataset: str, profile: str) -> dict:
    """The profile's settings for ``(model, dataset)``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    config = dict(PROFILES[profile])
    config.update(OVERRIDES.get((model, dataset, profile), {}))
    return config

# GAN: Adam at 2e-4 (DCGAN's rate) with a constant rate, since a decaying one
# freezes the game wherever it happens to be rather than at an equilibrium.
# Batch 64: on 2 cores a step at 64 costs ~70% of one at 128 (fixed per-step
# costs dominate), and at equal epochs the twice as many updates gave more
# varied, cleaner digits than batch 128 (25 epochs, ~21k steps, ~8 minutes).
# Validation FID every few epochs follows the game (the losses cannot); at
# 250 samples it is strongly biased upwards, so it is a trend, not a score.
OVERRIDES[("gan", "mnist", "default")] = {"epochs": 25, "batch_size": 64, "lr": 2e-4, "lr_schedule": "constant",
                                         "fid_every": 5, "fid_val_samples": 250}
OVERRIDES[("gan", "mnist", "full")] = {"epochs": 100, "batch_size": 64, "lr": 2e-4, "lr_schedule": "constant",
                                      "fid_every": 10, "fid_val_samples": 1000}
# SVHN's DCGAN step is ~135 ms at batch 64 on 2 cores (~2.4 min per epoch of
# 68k images): 4 epochs (~4.3k steps) fit the 10-minute default.
OVERRIDES[("gan", "svhn", "default")] = {"epochs": 4, "batch_size": 64, "lr": 2e-4, "lr_schedule": "constant", "sample_every": 1}
OVERRIDES[("gan", "svhn", "full")] = {"epochs": 25, "batch_size": 64, "lr": 2e-4, "lr_schedule": "constant", "sample_every": 5}
OVERRIDES[("gan", "mnist", "smoke")] = {"lr": 2e-4}
OVERRIDES[("gan", "svhn", "smoke")] = {"lr": 2e-4}
