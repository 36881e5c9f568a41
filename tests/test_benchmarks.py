"""The benchmark scripts stay runnable: each imports, and each main runs with its smallest settings.

The benchmarks import the experiments and fgm APIs but no other test does,
so a rename there used to break them silently (``experiments.registry``).
These runs check wiring, not speed: one round, tiny batches; the printed
ratios mean nothing here.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import benchmarks

MODULES = sorted(f"benchmarks.{m.name}" for m in pkgutil.iter_modules(benchmarks.__path__))

# module -> the arguments of its quickest run (seconds at most, one thread)
QUICK = {
    "benchmarks.bench_adam": "--reps 2 --warmup 1",
    "benchmarks.bench_dispatch": "--models vae_std --steps 1",
    "benchmarks.bench_devices": "--device cpu --models vae_std,gan --datasets mnist --steps 1 --cpu-steps 1"
    " --iwae-images 1 --inception-images 0",
    "benchmarks.bench_eval": "--samples 6 --reference 6 --cold --no-classifier --random-weights",
    "benchmarks.bench_ensemble": "--models vae_std,vae_flow,gan,gan_mlp --members 2 --rounds 1 --warmup 0"
    " --batch-size 4",
    "benchmarks.bench_nll": "--num-samples 10 --points 2 --loop-points 1",  # and --data-dir: real MNIST
    "benchmarks.bench_random": "--rounds 2 --warmup 1 --batch-size 8",
    "benchmarks.bench_steps": "--models vae_std,vae_flow,gan,gan_mlp --rounds 1 --warmup 0 --batch-size 8",
    "benchmarks.bench_vae_step": "--rounds 1 --warmup 0 --batch-size 8",
}
# module -> why its main is not run here (it is still imported)
IMPORT_ONLY = {
    "benchmarks.bench_fid": "Inception on 299×299 images and the TorchScript reference: minutes, extra weights",
    "benchmarks.bench_small_ops": "fixed 300-call loops in two fresh Python subprocesses",
}


def test_every_benchmark_is_covered():
    """A new benchmark gets a quick run here, or a reason why not."""
    assert MODULES, "no modules found under benchmarks/"
    assert set(QUICK) | set(IMPORT_ONLY) == set(MODULES)
    assert not set(QUICK) & set(IMPORT_ONLY)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_imports(name):
    module = importlib.import_module(name)
    assert callable(getattr(module, "main", None)), f"{name} has no main()"


@pytest.mark.parametrize("name", sorted(QUICK))
def test_benchmark_main_runs_quickly(name, request, capsys):
    argv = QUICK[name].split()
    if name in ("benchmarks.bench_nll", "benchmarks.bench_eval"):  # they read real MNIST images
        argv += ["--data-dir", str(request.getfixturevalue("mnist_root"))]
    importlib.import_module(name).main(argv)
    assert capsys.readouterr().out.strip(), f"{name} printed nothing"


def test_a_training_step_reads_nothing_back_but_step_counters():
    """Inputs, update and the loop's per-step bookkeeping: no float/bool read of a device tensor (a GPU sync)."""
    from benchmarks import bench_dispatch

    for name in ("vae_std", "vae_flow", "gan"):
        assert bench_dispatch.count_steps(name, 1, before=False)[1] == 0, name
    assert bench_dispatch.count_steps("vae_std", 1, before=True)[1] == 2  # the old loop's two reads are seen
