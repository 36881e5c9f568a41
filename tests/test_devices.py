"""Devices: every pure function keeps its tensors on its inputs' device; ``--device``; checkpoints load anywhere.

No GPU is available to CI, so the pure functions run on PyTorch's ``meta``
device: a function that silently builds a tensor on the CPU (a ``torch.zeros``
without ``device=``, noise drawn with the default device, a ``.cpu()``) either
fails there (CPU and meta tensors do not mix) or returns a CPU leaf, which
the tests catch. The arithmetic is the same code that runs on a GPU.
"""

import pytest
import torch

from experiments import config as cfg
from experiments import models, rundir
from fgm import checkpoint, ensemble, random, train, tree
from fgm import data as fdata
from fgm.metrics import nll as nll_lib

META = torch.device("meta")
MODELS = ["vae_std", "vae_flow", "gan", "gan_mlp_wgan_gp"]


def build(name: str) -> models.Experiment:
    model, extra = (name, {}) if name != "gan_mlp_wgan_gp" else ("gan", {"arch": "mlp", "loss": "wgan_gp"})
    config = {**models.defaults(model, "mnist", "smoke"), **extra, "total_steps": 4}
    return models.MODELS[model].build(fdata.get_spec("mnist"), config)


def devices_of(value, floats_only: bool = False) -> set[torch.device]:
    """The devices of the tensor leaves (only the floating-point ones: step counters stay on the host)."""
    leaves = [leaf for leaf in tree.tree_leaves(value) if isinstance(leaf, torch.Tensor)]
    return {leaf.device for leaf in leaves if leaf.is_floating_point() or not floats_only}


def meta_inputs(experiment: models.Experiment, batch: int = 4) -> tuple:
    images = torch.empty(batch, 1, 28, 28, dtype=torch.uint8, device=META)
    x = experiment.train_input(images, random.key(1))
    assert x.device == META
    return x, experiment.trainer.inputs(x, random.key(2))


def step(experiment: models.Experiment, state, inputs, backend: str):
    update = experiment.trainer.make_update(backend=backend)
    return update(state.params, state.opt_state, state.model_state, *inputs)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("backend", ["autograd", "func"])
def test_a_train_step_on_meta_tensors_stays_on_meta(name, backend):
    if name == "gan_mlp_wgan_gp" and backend == "func":
        pytest.skip("WGAN-GP's penalty needs the autograd backend (refused with a ValueError, tested in test_gan)")
    experiment = build(name)
    state = train.to_device(experiment.trainer.init(random.key(0)), META)
    x, inputs = meta_inputs(experiment)
    assert devices_of(inputs) == {META}  # the noise is drawn where the data is
    outputs = step(experiment, state, inputs, backend)
    assert devices_of(outputs, floats_only=True) == {META}


@pytest.mark.parametrize("name", MODELS)
def test_evaluation_generation_and_likelihood_stay_on_meta(name):
    experiment = build(name)
    trainer = experiment.trainer
    variables = tree.tree_to(trainer.variables(trainer.init(random.key(0))), META)
    x, _ = meta_inputs(experiment)
    assert devices_of(trainer.evaluate(variables, x, random.key(3))) == {META}
    noise = trainer.noise(random.key(4), 3, META)
    assert devices_of(noise) == {META}
    assert trainer.generate(variables, noise).device == META
    if experiment.log_likelihood is not None:
        assert experiment.log_likelihood(variables, x, random.key(5), 7).device == META
    if experiment.interpolate is not None:
        weights = torch.linspace(0, 1, 4, device=META)
        images = None if name.startswith("gan") else x[:2]
        strips = experiment.interpolate(variables, noise[:2], noise[1:], images, images, weights)
        assert strips and devices_of([s.images for s in strips.values()]) == {META}


def test_iwae_chunks_stay_on_meta():
    experiment = build("vae_flow")
    variables = tree.tree_to(experiment.trainer.init(random.key(0)).params, META)
    x, _ = meta_inputs(experiment, batch=3)
    vae = experiment.interpolate.args[0]
    assert nll_lib.iwae_log_likelihood(vae, variables, x, random.key(1), 10, 4).device == META


def test_a_seed_ensemble_step_stays_on_meta():
    experiment = build("vae_std")
    states = [experiment.trainer.init(random.key(s)) for s in (0, 1)]
    stacked = train.to_device(ensemble.stack_states(states), META)
    inputs = ensemble.stack([meta_inputs(experiment)[1] for _ in states])
    update = ensemble.vmap_update(experiment.trainer.make_update(backend="func"))
    stepped = update(stacked.params, stacked.opt_state, stacked.model_state, *inputs)
    assert devices_of(stepped, floats_only=True) == {META}


def test_noise_is_the_same_numbers_wherever_it_is_drawn():
    experiment = build("gan")
    # Philox runs on the requested device: meta gives the shape, the CPU the numbers; a GPU gives the same numbers.
    assert experiment.trainer.noise(random.key(9), 5, META).shape == (5, 64)
    assert torch.equal(experiment.trainer.noise(random.key(9), 5), random.normal(random.key(9), (5, 64)))


def test_a_checkpoint_loads_onto_the_templates_device(tmp_path):
    experiment = build("gan")
    config = {**models.defaults("gan", "mnist", "smoke"), "seeds": [0]}
    state = rundir.state_template(experiment, config)
    checkpoint.save(tmp_path / "c.pt", state, {"epoch": 1})
    on_meta, _ = checkpoint.load(tmp_path / "c.pt", rundir.state_template(experiment, config, META))
    assert devices_of(on_meta, floats_only=True) == {META}
    assert on_meta.opt_state["generator"][0].count.device == torch.device("cpu")  # counters stay on the host
    back, _ = checkpoint.load(tmp_path / "c.pt", state)
    assert devices_of(back) == {torch.device("cpu")} and tree.tree_equal(back, state)


def test_batches_move_one_at_a_time_and_keep_their_order():
    images = torch.arange(40, dtype=torch.uint8).reshape(10, 1, 2, 2)
    plain = list(fdata.batches(images, 3, random.key(0)))
    assert [b.device for b in plain] == [torch.device("cpu")] * 3
    if torch.cuda.is_available():  # page-locked batches: the same values, copied asynchronously
        pinned = list(fdata.batches(images, 3, random.key(0), pin_memory=True))
        assert all(b.is_pinned() for b in pinned) and all(torch.equal(a, b) for a, b in zip(plain, pinned, strict=True))


def test_device_names_resolve_or_say_what_is_allowed(monkeypatch):
    assert cfg.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert cfg.resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(ValueError, match=rf"--device {name}: .*use --device cpu or auto"):
            cfg.resolve_device(name)
    with pytest.raises(ValueError, match=r"'tpu' is not allowed; expected one of: auto, cpu, cuda, cuda:N, mps"):
        cfg.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cfg.resolve_device("auto") == torch.device("cuda")
    assert cfg.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"--device cuda:2: no such CUDA device \(this machine has 2"):
        cfg.resolve_device("cuda:2")


@pytest.mark.parametrize("command", [["vae_std", "mnist"], ["all", "--dry-run"], ["fid", "a.npy", "b.npy"]])
def test_every_command_refuses_a_bad_device_with_exit_2(command, capsys):
    from experiments import run

    assert run.main([*command, "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err
    assert "error: --device cuda:99: no such CUDA device" in err and "Traceback" not in err


# --------------------------------------------------------------------------- on a GPU (skipped where there is none)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_philox_draws_the_same_numbers_on_the_gpu():
    for k in (random.key(0), random.key(2**40 + 3)):
        assert torch.equal(random.bits(k, 1001, "cuda").cpu(), random.bits(k, 1001))
        assert torch.equal(random.uniform(k, (7, 9), device="cuda").cpu(), random.uniform(k, (7, 9)))
        assert torch.equal(random.permutation(k, 500, "cuda").cpu(), random.permutation(k, 500))
        # normals go through log/cos, which the GPU rounds differently in the last bit
        assert torch.allclose(random.normal(k, (300,), device="cuda").cpu(), random.normal(k, (300,)), atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("name", MODELS)
def test_a_gpu_step_matches_the_cpu_step(name, monkeypatch):
    # cuDNN convolutions default to TF32 (10-bit mantissa: ~1e-3 relative error); this test is about the code
    # path, so it asks for full float32 as the CPU computes (docs/devices.md)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    experiment = build(name)
    state = experiment.trainer.init(random.key(0))
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    outputs = []
    for device in ("cpu", "cuda"):
        x = experiment.train_input(images.to(device), random.key(1))
        inputs = experiment.trainer.inputs(x, random.key(2))
        outputs.append(tree.tree_to(step(experiment, train.to_device(state, device), inputs, "autograd"), "cpu"))
    # TF32 is off by default for float32 matmuls, so only summation order differs: the
    # gradients (in Adam's moments), layer state and metrics agree to float tolerance. The first Adam
    # step moves each parameter by about ±lr (m̂ / √v̂ = sign g), so a gradient within rounding of 0
    # may step the other way on the other device: parameters agree to 2·lr.
    (cpu_params, cpu_opt, *cpu_rest), (gpu_params, gpu_opt, *gpu_rest) = outputs
    if name.startswith("gan"):  # G's gradient goes through the D that has just stepped by ±lr: compare D's
        cpu_opt, gpu_opt = cpu_opt["discriminator"], gpu_opt["discriminator"]
    assert tree.tree_allclose([cpu_opt, *cpu_rest], [gpu_opt, *gpu_rest], rtol=1e-3, atol=1e-5)
    lr = cfg.PROFILES["smoke"]["lr"]  # the largest of the smoke profile's rates (the GAN's is 2e-4)
    diffs = [
        float((a - b).abs().max())
        for a, b in zip(tree.tree_leaves(cpu_params), tree.tree_leaves(gpu_params), strict=True)
    ]
    assert max(diffs) <= 2 * lr + 1e-6


@needs_cuda
def test_a_gpu_run_resumes_on_the_cpu(tmp_path, mnist_root, monkeypatch):
    from experiments import run
    from tests.test_run import SMOKE, train_then_kill

    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run.main([*common, "--out", str(straight), "--device", "cuda"]) == 0
    train_then_kill([*common, "--out", str(split), "--device", "cuda"], after_epoch=1, monkeypatch=monkeypatch)
    assert run.main([*common, "--out", str(split), "--resume", "--device", "cpu"]) == 0
    a, b = rundir.load_run(straight), rundir.load_run(split, "cpu")
    assert a.state.step == b.state.step and tree.tree_allclose(a.state.params, b.state.params, rtol=1e-3, atol=1e-4)
    gpu, cpu = (rundir.read_json(p / rundir.RESULTS) for p in (straight, split))
    assert gpu["device"] == "cuda:0" and cpu["device"] == "cpu"
    assert abs(gpu["mean"]["test_neg_elbo"] - cpu["mean"]["test_neg_elbo"]) < 0.05
