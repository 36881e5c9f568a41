"""The GPU path without per-step overhead: the fused Philox kernel and the CUDA-graph update.

CI has no GPU: the CUDA tests skip there and run on a GPU machine
(``python -m pytest tests/test_cuda_graph.py``); what a CPU can check (the
refusals) runs everywhere.
"""

from __future__ import annotations

import functools

import optree
import pytest
import torch

from fgm import optim, random, train
from fgm.models import gan as G
from fgm.models import networks
from fgm.models import vae as V

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_graph_refuses_cpu_tensors():
    graphed = train.cuda_graph(lambda x, y: x + y["b"])
    with pytest.raises(ValueError, match=r"every argument must be a CUDA tensor, not 0, 1/b \(a step counter"):
        graphed(torch.zeros(3, device="meta"), {"b": torch.zeros(3)})


def test_make_update_refuses_an_unknown_compile_mode():
    with pytest.raises(ValueError, match="compile must be False, True or 'cuda_graph', got 'fast'"):
        train.make_update(lambda p, x: ((p["w"] * x).sum(), {}), optim.adam(1e-3), compile="fast")


@pytest.mark.parametrize("num_words", [1, 5, 1000])
def test_the_gpu_kernels_arithmetic_gives_the_cpu_words(num_words):
    """The function the GPU compiles, run eagerly on the CPU: the C kernel's words (CI has no GPU)."""
    for seed in (0, 1, 2**40 + 7):
        k = random.fold_in(random.key(seed), num_words)
        key_words = torch.tensor([k.value & 0xFFFFFFFF, k.value >> 32, random._M0, random._M1])
        words = random._philox_stream(key_words, -(-num_words // 4))[:num_words]
        assert torch.equal(words, random.bits(k, num_words))


@cuda
@pytest.mark.parametrize("num_words", [1, 3, 4, 5, 1000, 4096 * 3 + 1])
def test_fused_gpu_philox_equals_the_cpu_words(num_words):
    for seed in (0, 1, 2**40 + 7):
        k = random.fold_in(random.key(seed), num_words)
        assert torch.equal(random.bits(k, num_words, "cuda").cpu(), random.bits(k, num_words))
        assert torch.equal(random.uniform(k, (num_words,), device="cuda").cpu(), random.uniform(k, (num_words,)))
        probs = random.uniform(random.fold_in(k, 1), (num_words,))
        assert torch.equal(random.bernoulli(k, probs.cuda()).cpu(), random.bernoulli(k, probs))
    assert not random._FUSED_FAILED  # the compiled kernel ran, not the fallback


@cuda
def test_cuda_graph_replays_a_function_on_new_arguments():
    graphed = train.cuda_graph(lambda x, y: {"sum": x + y, "prod": x * y})
    for i in range(4):
        x, y = torch.full((5,), float(i), device="cuda"), torch.arange(5.0, device="cuda")
        out = graphed(x, y)
        assert torch.equal(out["sum"], x + y) and torch.equal(out["prod"], x * y)
    with pytest.raises(ValueError, match="differ from the captured call's"):
        graphed(torch.zeros(6, device="cuda"), torch.zeros(6, device="cuda"))


def _vae_trainer():
    vae = V.make_vae(
        functools.partial(networks.mnist_mlp_encoder, 8, (64,)),
        functools.partial(networks.mnist_mlp_decoder, 8, (64,)),
        V.bernoulli_likelihood(),
        8,
        (1, 28, 28),
    )
    return V.build(vae, optim.adam(optim.cosine_decay_schedule(1e-3, 50)))


def _run(trainer, compile, steps, inputs_of):
    """``steps`` donated updates on the GPU; the final state and every step's loss."""
    update = trainer.make_update(donate=True, compile=compile)
    state = train.to_device(trainer.init(random.key(0)), "cuda")
    params, opt_state, model_state = state.params, state.opt_state, state.model_state
    losses = []
    for i in range(steps):
        params, opt_state, model_state, metrics = update(params, opt_state, model_state, *inputs_of(i))
        losses.append(metrics["loss"])
    return (params, opt_state, model_state), torch.stack(losses)


def _assert_trees_equal(a, b):
    for x, y in zip(optree.tree_leaves(a), optree.tree_leaves(b), strict=True):
        assert torch.equal(x.cpu(), y.cpu())


@cuda
def test_cuda_graph_vae_update_equals_eager_bit_for_bit():
    trainer = _vae_trainer()
    images = random.randint(random.key(3), 0, 256, (6, 32, 1, 28, 28)).to(torch.uint8).cuda()

    def inputs_of(i):
        x = random.bernoulli(random.fold_in(random.key(4), i), images[i % 6].float() / 255)
        return trainer.inputs(x, random.fold_in(random.key(5), i))

    eager, eager_losses = _run(trainer, False, 8, inputs_of)
    graphed, graphed_losses = _run(trainer, "cuda_graph", 8, inputs_of)
    assert torch.equal(eager_losses, graphed_losses)
    _assert_trees_equal(eager, graphed)


def _gan_trainer(batchnorm: bool):
    gan = G.make_gan(
        functools.partial(networks.mnist_conv_generator, 16, width=8, batchnorm=batchnorm),
        functools.partial(networks.mnist_conv_discriminator, width=8, spectral=True),
        16,
        (1, 28, 28),
    )
    opt = optim.adam(2e-4, b1=0.5, b2=0.999)
    return G.build(gan, G.get_loss("non_saturating"), opt, opt, ema_decay=0.9)


def _gan_inputs(trainer):
    images = random.randint(random.key(3), 0, 256, (4, 16, 1, 28, 28)).to(torch.uint8).cuda()
    return lambda i: trainer.inputs(G.scale_pixels(images[i % 4]), random.fold_in(random.key(5), i))


@cuda
def test_cuda_graph_gan_update_with_spectral_norm_equals_eager():
    trainer = _gan_trainer(batchnorm=False)
    eager, eager_losses = _run(trainer, False, 5, _gan_inputs(trainer))
    graphed, graphed_losses = _run(trainer, "cuda_graph", 5, _gan_inputs(trainer))
    assert torch.equal(eager_losses, graphed_losses)
    # Not bit for bit: cuDNN may take another convolution kernel inside a capture (seen on an H200:
    # equal losses, a few weights a rounding apart after five steps). The VAEs' matrix products are.
    pairs = list(zip(optree.tree_leaves(eager), optree.tree_leaves(graphed), strict=True))
    for x, y in pairs:
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)
    print(f"leaves not bitwise equal: {sum(not torch.equal(x, y) for x, y in pairs)} of {len(pairs)}")


@cuda
def test_cuda_graph_refuses_batchnorm_step_counters_on_the_cpu():
    trainer = _gan_trainer(batchnorm=True)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        _run(trainer, "cuda_graph", 1, _gan_inputs(trainer))


def test_the_runner_refuses_cuda_graph_off_a_gpu(tmp_path, capsys):
    from experiments import run

    out = tmp_path / "run"
    command = ["vae_std", "mnist", "--profile", "smoke", "--set", "cuda_graph=true", "--device", "cpu"]
    assert run.main([*command, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cuda_graph=true needs a CUDA device, one seed and no --compile (device cpu, 1 seed(s)" in err
    assert "Traceback" not in err and not (out / "checkpoint.pt").exists()


def test_trainers_refuse_a_graph_of_stacked_seeds_and_unknown_modes():
    for trainer in (_vae_trainer(), _gan_trainer(batchnorm=True)):
        with pytest.raises(ValueError, match="compile='cuda_graph' replays one model's update; stacked seeds take"):
            trainer.make_update(compile="cuda_graph", stacked=True)
        with pytest.raises(ValueError, match="compile must be False, True or 'cuda_graph', got 'fast'"):
            trainer.make_update(compile="fast", stacked=True)
