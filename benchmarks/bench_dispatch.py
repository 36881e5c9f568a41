"""Counts what one training step of the runner dispatches: aten operators and host reads.

Run from the repository root::

    python -m benchmarks.bench_dispatch [--models vae_std,vae_flow,gan] [--steps 5]

A GPU step whose work is ~1 GFLOP is bound by what the host does per step:
every aten operator is a kernel launch (or several), and every host read
(``float(t)``, ``bool(t)``, ``.item()``: ``aten::_local_scalar_dense``)
of a tensor on the device waits until the device has finished all queued
work. Reads of the integer step counters (Adam's count, the schedule's) are
not counted as host reads: they stay on the CPU in a GPU run
(``fgm.train.to_device``), so they wait for nothing. This counts both, on
the CPU, with a ``TorchDispatchMode``, for one step as
``python -m experiments.run`` trains it: the inputs (dynamic binarisation
and noise from Philox keys), the update (``ensemble.member_step``, donated),
and the loop's per-step bookkeeping, in two versions:

* **now**: the Philox words from the compiled kernel (``fgm._native``), the
  loop's non-finite check kept on the device (``fgm.train.first_nonfinite_step``),
  read once per ``experiments.train.HOST_READ_EVERY`` steps;
* **before** (this repository before issue 31): the Philox rounds as torch
  integer ops (``FGM_NATIVE=0``'s path) and the loop's two host reads per
  step (``bool(isfinite(loss).all())`` and the progress bar's
  ``float(loss.mean())``), as the loop did them.

Counts are per step, averaged over ``--steps`` steps after one warm-up step;
they do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import collections
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.bench_steps import mnist_config
from experiments import models
from experiments import train as loop
from fgm import ensemble, random
from fgm import train as ftrain

HOST_READS = {"aten::_local_scalar_dense"}


class Count(TorchDispatchMode):
    """Counts every aten operator dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func._schema.name)
        if name in HOST_READS and not args[0].is_floating_point() and args[0].dtype != torch.bool:
            name += " (step counter)"  # integer counters stay on the CPU in a GPU run (fgm.train.to_device)
        self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def philox_as_torch_ops(on: bool):
    """``fgm.random`` with the torch-op Philox rounds (``on``) or as it is."""
    original = random._native_on
    if on:
        random._native_on = lambda device: None
    try:
        yield
    finally:
        random._native_on = original


def count_steps(name: str, steps: int, before: bool) -> tuple[float, float]:
    """``(aten operators, host reads)`` per training step of model ``name``."""
    config = mnist_config(name)
    experiment = models.build(config)
    trainer = experiment.trainer
    step = ensemble.member_step(trainer, 1)
    state, first_bad, sums = trainer.init(random.key(0)), None, {}
    totals = collections.Counter()
    with philox_as_torch_ops(before):
        for t in range(steps + 1):
            n = models.images_per_update(config)
            batch = random.randint(random.key(10 + t), 0, 256, (n, 1, 28, 28)).to(torch.uint8)  # raw pixels
            counter = Count()
            with counter:
                k_input, k_noise = random.split(random.key(100 + t))
                inputs = trainer.inputs(experiment.train_input(batch, k_input), k_noise)
                state, metrics = step(state, [tuple(inputs)])
                if before:
                    bool(torch.isfinite(metrics["loss"]).all())
                    float(metrics["loss"].mean())
                else:
                    first_bad = ftrain.first_nonfinite_step(first_bad, metrics["loss"], state.step)
                    if (t + 1) % loop.HOST_READ_EVERY == 0:
                        loop.check_finite(first_bad, metrics, 1, [0])
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value.double()
            if t:  # the first step is a warm-up
                totals.update(counter.ops)
    ops = sum(totals.values()) / steps
    reads = sum(v for k, v in totals.items() if k in HOST_READS) / steps
    return ops, reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vae_std,vae_flow,gan")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"per training step, mean of {args.steps} steps (MNIST, default profile); host reads of 'now' are")
    print(f"1/{loop.HOST_READ_EVERY} per step in a run (one every experiments.train.HOST_READ_EVERY steps)")
    print(f"{'model':10} {'ops before':>11} {'ops now':>9} {'reads before':>13} {'reads now':>10}")
    for name in args.models.split(","):
        ops_before, reads_before = count_steps(name, args.steps, before=True)
        ops_now, reads_now = count_steps(name, args.steps, before=False)
        print(f"{name:10} {ops_before:11.1f} {ops_now:9.1f} {reads_before:13.2f} {reads_now:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
