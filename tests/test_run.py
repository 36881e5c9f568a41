"""End-to-end: the CLI on a real MNIST subset, resume, and bad input."""

import json

import pytest
import torch

from experiments import registry, run
from fgm import checkpoint, random, train
from fgm import data as fdata
from fgm.tree import tree_equal

SMOKE = ["--profile", "smoke", "--no-progress", "--train-limit", "512", "--val-limit", "200", "--test-limit", "200"]


def cli(*args):
    return run.main([*args])


def load_state(out, model="vae_std", dataset="mnist", **overrides):
    args = run.parse_args([model, dataset, *SMOKE])
    config = run.resolve_config(args)
    config.update(overrides)
    config["total_steps"] = config["epochs"] * fdata.num_batches(config["train_limit"], config["batch_size"])
    recipe = registry.get_model(model).build(fdata.get_spec(dataset), config)
    template = recipe.init(random.key(0))
    return checkpoint.load(out / "checkpoint.pt", template)


def test_smoke_run_writes_everything(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    assert cli("vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "encoder:" in printed and "decoder:" in printed and "total:" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        for k in ("train_neg_elbo", "train_recon", "train_kl", "val_neg_elbo", "val_recon", "val_kl"):
            assert torch.isfinite(torch.tensor(r[k]))
    assert records[1]["train_neg_elbo"] < records[0]["train_neg_elbo"]  # it learns
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "samples" / "epoch_0001.png").exists() and (out / "samples" / "epoch_0002.png").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["num_test"] == 200 and results["test_neg_elbo"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "vae_std" and config["epochs"] == 2
    assert not list(out.glob("*.tmp"))


def test_resume_equals_uninterrupted(tmp_path, mnist_root):
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*common, "--out", str(straight), "--epochs", "2") == 0
    # Interrupt after epoch 1: run one epoch of a 2-epoch run, then resume it.
    assert _run_partial(common + ["--out", str(split), "--epochs", "2"], stop_after_epoch=1) == 0
    state_1, meta_1 = load_state(split)
    assert meta_1["epoch"] == 1
    assert cli(*common, "--out", str(split), "--epochs", "2", "--resume") == 0
    a, meta_a = load_state(straight)
    b, meta_b = load_state(split)
    assert meta_a["epoch"] == meta_b["epoch"] == 2
    assert tree_equal(a.params, b.params) and tree_equal(a.opt_state, b.opt_state) and a.step == b.step
    assert _same_metrics(straight, split)


def _same_metrics(a, b):
    ra = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k != "epoch_seconds"}  # noqa: E731
    return [strip(r) for r in ra] == [strip(r) for r in rb]


def _run_partial(argv, stop_after_epoch):
    """Runs the CLI but simulates a kill right after ``stop_after_epoch`` is checkpointed."""
    from experiments import trainer

    original = trainer.checkpoint.save

    class Killed(Exception):
        pass

    def save_then_die(path, state, metadata):
        original(path, state, metadata)
        if metadata["epoch"] == stop_after_epoch:
            raise Killed

    trainer.checkpoint.save = save_then_die
    try:
        run.main(argv)
    except Killed:
        return 0
    finally:
        trainer.checkpoint.save = original
    return 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["vae_nope", "mnist"], "unknown model 'vae_nope'; choose from: .*vae_std"),
        (["vae_std", "cifar"], "unknown dataset 'cifar'; choose from: mnist, svhn"),
        (["vae_std", "mnist", "--profile", "huge"], "unknown profile 'huge'; choose from: smoke, default, full"),
    ],
)
def test_bad_names_list_the_choices(argv, message, capsys):
    assert cli(*argv, "--no-progress") == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_missing_data_names_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fdata.torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline")))
    assert cli("vae_std", "mnist", *SMOKE, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "empty") in err


def test_existing_run_is_not_overwritten_and_corrupt_checkpoint_refused(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--epochs", "1"]
    assert cli(*common) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert cli(*common) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before
    (out / "checkpoint.pt").write_bytes(before[:-50])
    assert cli(*common, "--resume") == 2
    assert "corrupt" in capsys.readouterr().err


def test_resume_with_a_different_config_is_refused(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--epochs", "1"]
    assert cli(*common) == 0
    assert cli(*common, "--resume", "--lr", "0.5") == 2
    assert "lr" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, mnist_root, capsys, monkeypatch):
    """A model whose loss turns NaN at step 20 (epoch 2 with 16 steps per epoch)."""

    def build(spec, config):
        recipe = registry.vae_std(spec, config)

        def step(state, batch, key):
            state, metrics = recipe.step(state, batch, key)
            if state.step >= 20:
                metrics = {**metrics, "loss": torch.tensor(float("nan"))}
            return state, metrics

        # The runner trains with make_update/make_inputs when a recipe has them (the same step,
        # donating buffers); a recipe that wraps `step` must drop them so the wrapper is used.
        return recipe._replace(step=step, make_update=None, make_inputs=None)

    monkeypatch.setitem(registry.MODELS, "vae_nan", registry.ModelEntry(build, registry.MODELS["vae_std"].defaults))
    out = tmp_path / "run"
    code = cli("vae_nan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--epochs", "3", "--batch-size", "32")
    assert code == 3
    err = capsys.readouterr().err
    assert "step 20" in err and "epoch 2" in err
    meta = checkpoint.read_metadata(out / "checkpoint.pt")
    assert meta["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


from tests.svhn_fixture import svhn_root  # noqa: E402,F401


@pytest.mark.parametrize("model", ["vae_std", "vae_flow"])
def test_svhn_end_to_end_on_the_format_exact_fixture(model, svhn_root, tmp_path):  # noqa: F811
    out = tmp_path / model
    assert cli(model, "svhn", *SMOKE, "--data-dir", str(svhn_root), "--out", str(out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0 < results["test_bits_per_dim"] < 16
    assert (out / "samples" / "epoch_0002.png").exists()


def test_vae_flow_smoke_and_set_overrides(tmp_path, mnist_root, capsys):
    out = tmp_path / "flow"
    assert cli("vae_flow", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out),
               "--set", "flow_layers=2", "--set", "flow_hidden=[8]", "--epochs", "1") == 0
    assert "prior:" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["flow_layers"] == 2 and config["flow_hidden"] == [8]
    assert cli("vae_flow", "mnist", *SMOKE, "--set", "nope=1") == 2
    assert "flow_layers" in capsys.readouterr().err


@pytest.mark.parametrize(
    "shape, likelihood, kind",
    [((1, 28, 28), "bernoulli", "mlp"), ((1, 16, 16), "bernoulli", "mlp"), ((3, 20, 12), "bernoulli", "mlp"),
     ((3, 32, 32), "discretized_logistic", "conv"), ((1, 32, 32), "discretized_logistic", "conv")],
)
def test_built_in_models_fit_any_registered_shape(shape, likelihood, kind):
    from fgm import nn as fnn
    from fgm.models import gan as gan_lib, vae as vae_lib

    spec = fdata.DatasetSpec("toy", shape, 10, likelihood, loader=lambda root, split, download: None)
    vae_config = {**registry.MODELS["vae_std"].defaults, "total_steps": 1}
    vae = registry.build_vae(spec, vae_config)
    params = vae_lib.init(vae, random.key(0))
    x = torch.zeros(2, *shape)
    loss, _ = vae_lib.loss(vae, params, x, vae_lib.latent_noise(vae, random.key(1), 2))
    assert torch.isfinite(loss)
    assert vae_lib.generate(vae, params, random.normal(random.key(2), (2, vae.latent_dim))).shape == (2, *shape)
    if shape == (1, 28, 28):  # MNIST's networks are unchanged by the generalisation
        assert {k: fnn.count_params(v) for k, v in params.items()} == {"encoder": 549_696, "decoder": 542_224, "prior": 0}

    gan = registry.build_gan(spec, registry.MODELS["gan"].defaults)
    gan_params = gan_lib.init(gan, random.key(3))
    fake = gan.generate(gan_params["generator"], random.normal(random.key(4), (2, gan.latent_dim)))
    assert fake.shape == (2, *shape) and gan.discriminate(gan_params["discriminator"], fake).shape == (2,)
    convolutional = any(isinstance(m, torch.nn.ConvTranspose2d) for m in gan.generator.modules())
    assert convolutional == (kind == "conv")


def test_built_in_models_refuse_other_shapes_naming_them():
    spec = fdata.DatasetSpec("big", (3, 64, 64), 10, "discretized_logistic", loader=lambda root, split, download: None)
    with pytest.raises(ValueError, match=r"vae: no built-in architecture for dataset 'big' of shape \(3, 64, 64\)"):
        registry.build_vae(spec, registry.MODELS["vae_std"].defaults)
    with pytest.raises(ValueError, match=r"gan: .*'big' of shape \(3, 64, 64\)"):
        registry.build_gan(spec, registry.MODELS["gan"].defaults)


def test_compile_flag_is_refused_for_models_without_it(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    assert cli("gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--compile") == 2
    assert "--compile is not offered for gan" in capsys.readouterr().err
    assert not out.exists()
