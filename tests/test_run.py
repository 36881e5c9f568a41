"""End-to-end: the one pipeline on a real MNIST subset, for one and several seeds; resume; bad input."""

import json
import re
from typing import Any, NamedTuple

import optree
import pytest
import torch

from experiments import config as cfg
from experiments import models, run, rundir
from fgm import checkpoint, ensemble, random
from fgm import data as fdata
from fgm.tree import tree_allclose, tree_equal
from tests.svhn_fixture import svhn_root  # noqa: F401 - a fixture

SMOKE = ["--profile", "smoke", "--no-progress", "--train-limit", "512", "--val-limit", "200", "--test-limit", "200"]


def cli(*args):
    return run.main([*args])


def train_then_kill(argv, after_epoch, monkeypatch):
    """Runs ``argv`` and stops it right after the checkpoint of ``after_epoch``, as a crash would."""
    original = checkpoint.save

    class Killed(Exception):
        pass

    def save_then_die(path, state, metadata):
        original(path, state, metadata)
        if metadata["epoch"] == after_epoch:
            raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        cli(*argv)
    monkeypatch.setattr(checkpoint, "save", original)


def test_smoke_run_writes_everything(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    assert cli("vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "encoder:" in printed and "decoder:" in printed and "total:" in printed
    records = rundir.read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2] and [m["seed"] for m in records[0]["members"]] == [0]
    for r in records:
        for k in ("train_neg_elbo", "train_recon", "train_kl", "val_neg_elbo", "val_recon", "val_kl"):
            assert torch.isfinite(torch.tensor(r["mean"][k])) and r["mean"][k] == r["members"][0][k]
    assert records[1]["mean"]["train_neg_elbo"] < records[0]["mean"]["train_neg_elbo"]  # it learns
    results = json.loads((out / "results.json").read_text())
    assert results["num_test"] == 200 and results["seeds"] == [0] and results["std"]["test_neg_elbo"] is None
    assert results["members"][0]["test_neg_elbo"] == results["mean"]["test_neg_elbo"] > 0
    assert results["nll_samples"] == 10 and results["members_trained_together"] == 1
    for name in (
        "curves.png",
        "samples/epoch_0002.png",
        "samples/progression.gif",
        "samples/progression.png",
        "interpolations/index.json",
        "interpolations/prior_noise.png",
        "interpolations/test_latent.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert rundir.read_config(out)["epochs"] == 2
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("seeds", [1, 2])
def test_resume_equals_uninterrupted(tmp_path, mnist_root, monkeypatch, seeds):
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--seeds", str(seeds)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*common, "--out", str(straight)) == 0
    train_then_kill([*common, "--out", str(split)], after_epoch=1, monkeypatch=monkeypatch)
    assert checkpoint.read_metadata(split / "checkpoint.pt")["epoch"] == 1
    assert cli(*common, "--out", str(split), "--resume") == 0
    a, b = rundir.load_run(straight), rundir.load_run(split)
    assert a.state.step == b.state.step and tree_equal(a.state.params, b.state.params)
    assert tree_equal(a.state.opt_state, b.state.opt_state)
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_seconds")}  # noqa: E731 - wall times differ
    assert [strip(r) for r in rundir.read_metrics(straight)] == [strip(r) for r in rundir.read_metrics(split)]


# The state layouts checkpoints had before every update took a layer state (written out here, not imported,
# so that a change to the loader's copy of them is caught).
OldTrainState = NamedTuple(  # noqa: UP014 - the type name "TrainState" is part of a checkpoint's structure
    "TrainState", [("params", Any), ("opt_state", Any), ("step", int), ("key", Any)]
)
OldEnsembleState = NamedTuple(  # noqa: UP014 - as above
    "EnsembleState", [("params", Any), ("opt_state", Any), ("step", int), ("keys", Any)]
)
OldStatefulEnsembleState = NamedTuple(  # noqa: UP014 - as above
    "StatefulEnsembleState", [("params", Any), ("opt_state", Any), ("model_state", Any), ("step", int), ("keys", Any)]
)


def rewrite_in_old_layout(path):
    """Rewrites a run's checkpoint as the code before the one update signature wrote it."""
    run_ = rundir.load_run(path)
    state, meta = run_.state, checkpoint.read_metadata(path / "checkpoint.pt")
    if isinstance(state, ensemble.EnsembleState) and optree.tree_leaves(state.model_state):
        old = OldStatefulEnsembleState(state.params, state.opt_state, state.model_state, state.step, state.keys)
    elif isinstance(state, ensemble.EnsembleState):
        old = OldEnsembleState(state.params, state.opt_state, state.step, state.keys)
    else:
        assert not optree.tree_leaves(state.model_state)
        old = OldTrainState(state.params, state.opt_state, state.step, state.key)
    checkpoint.save(path / "checkpoint.pt", old, meta)
    with pytest.raises(checkpoint.CheckpointError, match="does not match"):  # the new layout differs
        checkpoint.load(path / "checkpoint.pt", rundir.state_template(run_.experiment, run_.config))
    return run_.state


@pytest.mark.parametrize("seeds", [1, 2])
def test_a_run_in_the_old_state_layout_resumes_and_equals_uninterrupted(tmp_path, mnist_root, monkeypatch, seeds):
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--seeds", str(seeds)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(*common, "--out", str(straight)) == 0
    train_then_kill([*common, "--out", str(split)], after_epoch=1, monkeypatch=monkeypatch)
    rewrite_in_old_layout(split)
    assert cli(*common, "--out", str(split), "--resume") == 0
    a, b = rundir.load_run(straight), rundir.load_run(split)
    assert type(a.state) is type(b.state) and a.state.step == b.state.step
    assert tree_equal((a.state.params, a.state.opt_state), (b.state.params, b.state.opt_state))


def test_a_gan_ensemble_in_the_old_state_layout_loads(tmp_path, mnist_root):
    out = tmp_path / "gan"
    assert (
        cli("gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--epochs", "1", "--seeds", "2", "--out", str(out))
        == 0
    )
    before = rewrite_in_old_layout(out)
    after = rundir.load_run(out).state
    assert type(after) is ensemble.EnsembleState and tree_equal(after, before)


@pytest.mark.parametrize("model", ["vae_std", "gan"])
def test_member_i_equals_the_single_run_with_seed_i(tmp_path, mnist_root, model):
    """Members draw exactly the single runs' keys, batches and noise; their numbers agree to vmap's rounding.

    Bit-for-bit equality of the parameters is not reachable with vmap: batched matrix products round
    differently from unbatched ones (even vmap over 1 member differs from 2), so the float32 results are
    compared to a tolerance, and the inputs (where a copied key schedule would go wrong) bit for bit.
    """
    common = [model, "mnist", *SMOKE, "--data-dir", str(mnist_root), "--epochs", "1"]
    together, single = tmp_path / "together", tmp_path / "single"
    assert cli(*common, "--seed", "4", "--seeds", "2", "--out", str(together)) == 0
    assert cli(*common, "--seed", "5", "--out", str(single)) == 0
    a, b = rundir.load_run(together), rundir.load_run(single)
    # Adam divides by the gradient's scale, so where a gradient is near 0 a rounding difference can flip the
    # sign of a whole step (lr): the GAN's BatchNorm (batch statistics under vmap) reaches that regime.
    atol = 2e-4 if model == "vae_std" else 2 * a.config["lr"] * a.config["total_steps"]
    assert a.config["seeds"] == [4, 5] and tree_allclose(a.params[1], b.params[0], rtol=2e-3, atol=atol)
    assert not tree_allclose(a.params[0], a.params[1])  # the members differ from each other
    member, alone = (json.loads((p / "results.json").read_text()) for p in (together, single))
    for name in member["members"][1]:
        if name.startswith("test_") and not name.endswith("fid"):
            assert member["members"][1][name] == pytest.approx(alone["members"][0][name], rel=2e-3, abs=1e-4), name
    # the same inputs, bit for bit: each member's step keys, batches and noise are its single run's
    keys = [rundir.run_keys(s) for s in (4, 5)]
    images = fdata.load_images("mnist", "train", str(mnist_root))[:512]
    experiment = a.experiment
    for t, (batch_a, batch_b) in enumerate(
        zip(
            fdata.batches(images, 64, random.fold_in(keys[1].data, 1)),
            fdata.batches(images, 64, random.fold_in(rundir.run_keys(5).data, 1)),
            strict=True,
        )
    ):
        ka, kb = rundir.step_keys(keys[1], t), rundir.step_keys(rundir.run_keys(5), t)
        assert tree_equal(
            experiment.trainer.inputs(experiment.train_input(batch_a, ka[0]), ka[1]),
            experiment.trainer.inputs(experiment.train_input(batch_b, kb[0]), kb[1]),
        )
    assert (together / "interpolations" / "s5" / "prior_noise.png").exists()  # figures for every member
    assert (together / "samples" / "progression.png").exists()


def test_keys_of_a_run_are_unique_and_steps_have_their_own_namespace():
    for seed in (0, 1, 2):
        keys = rundir.run_keys(seed)
        fixed = [
            *keys,
            *random.split(keys.init, 3),
            random.fold_in(keys.test, 1),
            random.fold_in(keys.test, 2),
            *(random.fold_in(keys.data, e) for e in range(1, 201)),
            random.fold_in(keys.evaluation, 1),
        ]
        step_keys = [k for t in range(5000) for k in (random.fold_in(keys.steps, t), *rundir.step_keys(keys, t))]
        values = [k.value for k in fixed + step_keys]
        assert len(values) == len(set(values))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["vae_nope", "mnist"], "unknown model 'vae_nope'; choose from: .*vae_std"),
        (["vae_std", "cifar"], "unknown dataset 'cifar'; choose from: mnist, svhn"),
        (
            ["vae_std", "mnist", "--profile", "huge"],
            "unknown profile 'huge'; choose from: smoke, default, full, report",
        ),
        (
            ["vae_std", "mnist", "--set", "latent_dim=abc"],
            r"--set latent_dim: 'abc' is not allowed; expected an integer >= 1",
        ),
        (
            ["vae_std", "mnist", "--set", "latent_dim=-3"],
            r"--set latent_dim: -3 is not allowed; expected an integer >= 1",
        ),
        (["vae_std", "mnist", "--lr", "nan"], r"--lr: nan is not allowed; expected a finite number"),
        (["vae_std", "mnist", "--epochs", "0"], r"--epochs: 0 is not allowed; expected an integer >= 1"),
        (["vae_std", "mnist", "--seeds", "0"], r"--seeds must be >= 1"),
        (["gan", "mnist", "--set", "loss=nope"], r"--set loss: 'nope' is not allowed; expected one of: non_saturating"),
        (["vae_flow", "mnist", "--set", "nope=1"], r"KEY one of: .*flow_layers"),
        (["vae_flow", "mnist", "--set", "flow_layers=1"], r"flow_layers: 1 is not allowed; expected an integer >= 2"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(argv, message, capsys):
    assert cli(*argv, "--no-progress") == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err


def test_missing_data_names_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        fdata.torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline"))
    )
    assert cli("vae_std", "mnist", *SMOKE, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "empty") in err


def test_existing_run_kept_corrupt_checkpoint_and_config_refused(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--epochs", "1"]
    assert cli(*common) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert cli(*common) == 2 and "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before
    config = (out / "config.json").read_text()
    (out / "config.json").write_text(config.replace('"batch_size": 64', '"batch_size": "sixty-four"'))
    assert cli(*common, "--resume") == 2 and "config.json is corrupt" in capsys.readouterr().err
    (out / "config.json").write_text(config[:-20])
    assert cli(*common, "--resume") == 2 and "config.json is corrupt" in capsys.readouterr().err
    (out / "config.json").write_text(config)
    (out / "checkpoint.pt").write_bytes(before[:-50])
    assert cli(*common, "--resume") == 2 and "corrupt" in capsys.readouterr().err
    assert cli(*common, "--resume", "--lr", "0.5") == 2


def test_resume_with_a_different_config_is_refused(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--epochs", "1"]
    assert cli(*common) == 0
    assert cli(*common, "--resume", "--lr", "0.5") == 2
    assert "lr: 0.001 -> 0.5" in capsys.readouterr().err
    assert cli(*common, "--resume", "--nll-samples", "3") == 0  # evaluation-only settings may change


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, mnist_root, capsys, monkeypatch):
    """A model whose loss turns NaN from step 20 (epoch 2, with 16 steps per epoch)."""

    def build(spec, config):
        experiment = models.vae_std(spec, config)
        make_update = experiment.trainer.make_update

        def nan_after_20(**kwargs):
            update, calls = make_update(**kwargs), []

            def wrapped(params, opt_state, model_state, *inputs):
                calls.append(1)
                params, opt_state, model_state, metrics = update(params, opt_state, model_state, *inputs)
                return (
                    params,
                    opt_state,
                    model_state,
                    {**metrics, "loss": metrics["loss"] * (float("nan") if len(calls) >= 20 else 1)},
                )

            return wrapped

        return experiment._replace(trainer=experiment.trainer._replace(make_update=nan_after_20))

    monkeypatch.setitem(models.MODELS, "vae_nan", models.MODELS["vae_std"]._replace(build=build))
    out = tmp_path / "run"
    assert (
        cli(
            "vae_nan",
            "mnist",
            *SMOKE,
            "--data-dir",
            str(mnist_root),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "32",
        )
        == 3
    )
    err = capsys.readouterr().err
    assert "step 20" in err and "epoch 2" in err
    assert checkpoint.read_metadata(out / "checkpoint.pt")["epoch"] == 1
    assert len(rundir.read_metrics(out)) == 1


@pytest.mark.parametrize("model", ["vae_std", "vae_flow"])
def test_svhn_end_to_end_on_the_format_exact_fixture(model, svhn_root, tmp_path):
    out = tmp_path / model
    assert cli(model, "svhn", *SMOKE, "--data-dir", str(svhn_root), "--out", str(out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0 < results["mean"]["test_bits_per_dim"] < 16
    assert (out / "samples" / "epoch_0002.png").exists()


def test_vae_flow_set_overrides_and_the_reproduce_command(tmp_path, mnist_root, capsys):
    out = tmp_path / "flow"
    argv = [
        "vae_flow",
        "mnist",
        *SMOKE,
        "--data-dir",
        str(mnist_root),
        "--out",
        str(out),
        "--set",
        "flow_layers=2",
        "--set",
        "flow_hidden=8",
        "--epochs",
        "1",
        "--fid-every",
        "0",
        "--set",
        "lr_schedule=cosine",
    ]
    assert cli(*argv) == 0
    assert "prior:" in capsys.readouterr().out
    config = rundir.read_config(out)
    assert config["flow_layers"] == 2 and config["flow_hidden"] == [8] and config["lr_schedule"] == "cosine"
    command = cfg.reproduce_command(config, models.get_model("vae_flow"))
    assert "--set flow_layers=2" in command and "--epochs 1" in command and "--train-limit 512" in command
    words = command.split()[3:]  # what follows "python -m experiments.run"
    again = cfg.resolve(cfg.train_parser(["vae_flow"], ["mnist"]).parse_args(words), models.get_model("vae_flow"))
    assert again == {k: v for k, v in config.items() if k != "total_steps"}


@pytest.mark.parametrize(
    "shape, likelihood, kind",
    [
        ((1, 28, 28), "bernoulli", "conv"),
        ((1, 16, 16), "bernoulli", "mlp"),
        ((3, 20, 12), "bernoulli", "mlp"),
        ((3, 32, 32), "discretized_logistic", "conv"),
        ((1, 32, 32), "discretized_logistic", "conv"),
    ],
)
def test_built_in_models_fit_any_registered_shape(shape, likelihood, kind):
    from fgm import nn as fnn
    from fgm.models import gan as gan_lib
    from fgm.models import vae as vae_lib

    spec = fdata.DatasetSpec("toy", shape, 10, likelihood, loader=lambda root, split, download: None)
    vae = models.build_vae(spec, models.MODELS["vae_std"].defaults)
    params = vae_lib.init(vae, random.key(0))
    loss, _ = vae_lib.loss(vae, params, torch.zeros(2, *shape), vae_lib.latent_noise(vae, random.key(1), 2))
    assert torch.isfinite(loss)
    assert vae_lib.generate(vae, params, random.normal(random.key(2), (2, vae.latent_dim))).shape == (2, *shape)
    if shape == (1, 28, 28):  # MNIST's networks are unchanged by the generalisation
        assert {k: fnn.count_params(v) for k, v in params.items()} == {
            "encoder": 549_696,
            "decoder": 542_224,
            "prior": 0,
        }
    gan = models.build_gan(spec, models.MODELS["gan"].defaults)
    gan_params = gan_lib.init(gan, random.key(3))
    state = gan_lib.init_model_state(gan, gan_params, random.key(3))
    z = random.normal(random.key(4), (2, gan.latent_dim))
    fake, _ = gan.generate(gan_params["generator"], state["generator"], z, train=False)
    logits, _ = gan.discriminate(gan_params["discriminator"], state["discriminator"], fake, train=False)
    assert fake.shape == (2, *shape) and logits.shape == (2,)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in gan.generator.modules()) == (kind == "conv")


def test_gan_arch_selects_the_networks_and_refuses_a_conv_that_does_not_fit():
    mnist, toy = fdata.get_spec("mnist"), fdata.DatasetSpec("toy", (1, 16, 16), 10, "bernoulli", loader=None)
    defaults = models.MODELS["gan"].defaults
    conv = models.build_gan(mnist, defaults)
    mlp = models.build_gan(mnist, {**defaults, "arch": "mlp"})
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in conv.generator.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in mlp.discriminator.modules())
    plain = models.build_gan(mnist, {**defaults, "g_batchnorm": False, "d_spectral_norm": True})
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.generator.modules())
    assert any(hasattr(m, "parametrizations") for m in plain.discriminator.modules())
    with pytest.raises(ValueError, match=r"no built-in ConvNet for shape \(1, 16, 16\).*arch=mlp"):
        models.build_gan(toy, {**defaults, "arch": "conv"})


@pytest.mark.parametrize("model", ["vae_std", "vae_flow"])
def test_vae_arch_conv_is_the_conv_gans_shapes_at_a_matched_size(model):
    """arch=conv on MNIST: the conv GAN's convolutions, within 25% of the MLP VAE's weights; the MLP stays default."""
    from fgm import nn as fnn
    from fgm.models import vae as vae_lib

    mnist = fdata.get_spec("mnist")
    config = models.defaults(model, "mnist", "default")
    mlp = models.build_vae(mnist, config)
    conv = models.build_vae(mnist, {**config, "arch": "conv"})
    assert not any(isinstance(m, torch.nn.Conv2d) for m in mlp.encoder.modules())
    assert [type(m) for m in conv.encoder.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)] == [
        torch.nn.Conv2d,
        torch.nn.Conv2d,
        torch.nn.Linear,
    ]
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in conv.decoder.modules()) == 2
    counts = {name: fnn.count_params(vae_lib.init(v, random.key(0))) for name, v in (("mlp", mlp), ("conv", conv))}
    assert abs(counts["conv"] - counts["mlp"]) <= 0.25 * counts["mlp"], counts
    params = vae_lib.init(conv, random.key(0))
    x = (random.uniform(random.key(1), (3, 1, 28, 28)) > 0.5).float()
    loss, _ = vae_lib.loss(conv, params, x, vae_lib.latent_noise(conv, random.key(2), 3))
    assert torch.isfinite(loss)
    assert vae_lib.generate(conv, params, random.normal(random.key(3), (2, conv.latent_dim))).shape == (2, 1, 28, 28)
    toy = fdata.DatasetSpec("toy", (1, 18, 18), 10, "bernoulli", loader=None)
    with pytest.raises(ValueError, match=r"divisible by 4, got \(1, 18, 18\)"):
        models.build_vae(toy, {**config, "arch": "conv"})
    svhn = fdata.get_spec("svhn")
    with pytest.raises(ValueError, match="arch=mlp is for binarised data"):
        models.build_vae(svhn, {**config, "arch": "mlp"})


def test_built_in_models_refuse_other_shapes_naming_them():
    spec = fdata.DatasetSpec("big", (3, 64, 64), 10, "discretized_logistic", loader=lambda root, split, download: None)
    with pytest.raises(ValueError, match=r"vae: no built-in architecture for dataset 'big' of shape \(3, 64, 64\)"):
        models.build_vae(spec, models.MODELS["vae_std"].defaults)
    with pytest.raises(ValueError, match=r"gan: .*'big' of shape \(3, 64, 64\)"):
        models.build_gan(spec, models.MODELS["gan"].defaults)


def test_compile_with_several_seeds_compiles_the_members_gradient_not_silently_eager(tmp_path, mnist_root, monkeypatch):
    """``--compile --seeds N`` compiles the vmapped gradient of all members (fgm.ensemble.make_update)."""
    compiled, built = [], []
    # record what is compiled and run it eagerly: the compiled arithmetic itself is tested in test_ensemble.py
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(fn) or fn)
    stacked_update = ensemble.make_update
    monkeypatch.setattr(ensemble, "make_update", lambda *a, **k: built.append(k) or stacked_update(*a, **k))
    out = tmp_path / "run"
    argv = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--compile", "--seeds", "2"]
    assert cli(*argv, "--epochs", "1") == 0
    assert built[-1] == {"donate": True, "compile": True} and len(compiled) >= 1  # the first call is the pre-check
    assert (out / "checkpoint.pt").exists()


@pytest.mark.slow
def test_compiled_gan_seeds_agree_with_eager_seeds(tmp_path, mnist_root):
    """``gan --compile --seeds 2``: one compiled graph per player for both members, member i as the eager run's."""
    common = ["gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--epochs", "1", "--train-limit", "256"]
    compiled, eager = tmp_path / "compiled", tmp_path / "eager"
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert cli(*common, "--seeds", "2", "--compile", "--out", str(compiled)) == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # D's and G's gradient, all members
    assert cli(*common, "--seeds", "2", "--out", str(eager)) == 0
    a, b = rundir.load_run(compiled), rundir.load_run(eager)
    assert a.config["compile"] and a.state.step == b.state.step == 4
    # float32 and fused kernels: a rounding difference can flip the sign of an Adam step where a gradient
    # is near 0 (see test_member_i_equals_the_single_run_with_seed_i), hence an absolute tolerance of steps × lr
    atol = 2 * a.config["lr"] * a.config["total_steps"]
    for i in range(2):  # each member's variables: parameters, BatchNorm statistics
        assert tree_allclose(a.params[i], b.params[i], rtol=2e-3, atol=atol), i
    member, alone = (json.loads((p / "results.json").read_text())["members"] for p in (compiled, eager))
    for i in range(2):
        for name in member[i]:
            if name.startswith("test_") and not name.endswith("fid"):
                assert member[i][name] == pytest.approx(alone[i][name], rel=2e-3, abs=1e-4), (i, name)


def test_compile_flag_is_refused_for_a_loss_without_it(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    argv = ["gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out), "--compile"]
    assert cli(*argv, "--set", "loss=wgan_gp") == 2
    assert "wgan_gp loss needs the autograd backend" in capsys.readouterr().err
    assert not out.exists()


def test_every_model_has_the_same_surface():
    spec = fdata.get_spec("mnist")
    for name, entry in models.MODELS.items():
        config = {**models.defaults(name, "mnist", "smoke"), "total_steps": 4}
        experiment = entry.build(spec, config)
        state = experiment.trainer.init(random.key(0))
        x = experiment.train_input(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), random.key(1))
        trainer, inputs = experiment.trainer, experiment.trainer.inputs(x, random.key(2))
        params, opt_state, model_state, metrics = trainer.make_update()(
            state.params, state.opt_state, state.model_state, *inputs
        )
        if name == "gan":
            assert not tree_equal(model_state, state.model_state)  # BatchNorm's statistics moved
        else:
            assert tree_equal(model_state, state.model_state)  # no layer state: it comes back as it went in
        stepped = state._replace(params=params, opt_state=opt_state, model_state=model_state)
        assert torch.isfinite(metrics["loss"]) and not tree_equal(params, state.params)
        variables = trainer.variables(stepped)
        values = trainer.evaluate(variables, x, random.key(3))
        assert experiment.objective in values and all(v.shape == (4,) for v in values.values())
        images = trainer.generate(variables, trainer.noise(random.key(4), 3))
        assert images.shape == (3, 1, 28, 28) and 0 <= float(images.min()) <= float(images.max()) <= 1


def test_import_graph_has_no_cycle():
    """Every import of fgm and experiments, function-local ones included, points one way."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    graph = {}
    for package in ("fgm", "experiments"):
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            edges = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    # `from fgm import random` imports the module fgm.random (and fgm's __init__ first)
                    edges |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                elif isinstance(node, ast.Import):
                    edges |= {a.name for a in node.names}
            graph[name] = edges
    # a package's __init__ importing its own submodules is not a cycle: drop edges into one's own ancestors
    graph = {m: {e for e in edges if e in graph and e != m and not m.startswith(e + ".")} for m, edges in graph.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for e in graph[m]:
            assert state.get(e) != "open", f"import cycle: {' -> '.join(stack + [m, e])}"
            if e not in state:
                visit(e, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])
    assert not any("experiments.run" in edges for edges in graph.values())  # nothing imports the dispatcher


def test_code_version_names_the_checkouts_commit(tmp_path, monkeypatch):
    import re
    import subprocess

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    version = rundir.code_version()
    assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", version) and version.split("+")[0] == head
    monkeypatch.setattr(rundir, "__file__", str(tmp_path / "rundir.py"))  # outside any checkout
    assert rundir.code_version() is None


@pytest.mark.parametrize(
    ("profile", "extra", "compiled"),
    [("smoke", [], False), ("report", [], True), ("smoke", ["--set", "compile_nll=true"], True)],
)
def test_compile_nll_compiles_the_test_nll_only(monkeypatch, profile, extra, compiled):
    """The report profile's test NLL is the compiled IWAE (chunks of 50) while training stays eager."""
    args = cfg.train_parser(sorted(models.MODELS), ["mnist"]).parse_args(
        ["vae_flow", "mnist", "--profile", profile, *extra]
    )
    config = cfg.resolve(args, models.get_model("vae_flow")) | {"total_steps": 10}
    calls = []
    monkeypatch.setattr(models.nll_lib, "iwae_log_likelihood", lambda *a, **k: calls.append((a[5], k["compile"])))
    models.build(config).log_likelihood(None, None, None, 5000)
    assert calls == [(models.IWAE_CHUNK[compiled], compiled)] and not config.get("compile")
