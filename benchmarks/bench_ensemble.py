"""Times one step of an M-member seed ensemble against M single steps, in one process.

Run from the repository root::

    python -m benchmarks.bench_ensemble [--models vae_std,vae_flow,gan] [--members 4] [--rounds 30] [--threads N]

For each model (the MNIST default architectures; batch 128 for the VAEs, 64
for the GAN), with ``M`` members, each on its own batch and noise:

* **sequential**: ``M`` calls of the registry's single-model step (what
  ``M`` separate runs do, one after the other);
* **sequential donate**: the same with the donating step;
* **vmap**: one call of ``fgm.ensemble.make_ensemble_step`` over the stacked
  members (``torch.func.vmap`` of the ``"func"``-backend update);
* **vmap donate**: the same, updating the stacked state in place (what
  ``python -m experiments.run ... --seeds M`` runs).

Noise drawing and input stacking are included in every variant. The
implementations run interleaved (fresh random order per round) and the table
shows the median time per ensemble step (all ``M`` members), its ratio to
**sequential** and the minor page faults per step.

What to expect on a CPU: ``vmap`` does the same arithmetic in fewer, larger
kernels. That saves per-op overhead (Python, dispatch, thread start-up),
which matters for models made of many small ops (the flow prior) and when
two threads fight a busy neighbour; for models dominated by large matrix
products it saves little, and batched elementwise passes over ``M`` times
larger buffers lose some cache locality. Use ``--threads 1`` on a shared
machine (see ``benchmarks/bench_steps.py``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks.bench_steps import print_table, profile, time_interleaved
from experiments import registry
from fgm import data as fdata
from fgm import ensemble, random, train


def build(model: str, members: int) -> dict[str, Callable[[], None]]:
    """The four variants for ``model``, each with its own states."""
    config = {**registry.get_model(model).defaults, "total_steps": 10_000}
    config.update({"lr": 2e-4} if model == "gan" else {"lr": 1e-3, "lr_schedule": "cosine"})
    recipe = registry.get_model(model).build(fdata.get_spec("mnist"), config)
    batch_size = 64 if model == "gan" else 128
    if model == "gan":
        batches = [random.uniform(random.key(10 + i), (batch_size, 1, 28, 28)) * 2 - 1 for i in range(members)]
    else:
        batches = [
            random.bernoulli(random.key(10 + i), torch.full((batch_size, 1, 28, 28), 0.13)) for i in range(members)
        ]
    seeds = range(members)
    fns = {}
    for name, step in (
        ("sequential", recipe.step),
        ("sequential donate", train.step_from_update(recipe.make_update(donate=True), recipe.make_inputs)),
    ):
        states = [recipe.init(random.key(s)) for s in seeds]

        def run(step=step, states=states):
            for i, x in enumerate(batches):
                states[i], _ = step(states[i], x, train.step_key(states[i]))

        fns[name] = run
    for name, donate in (("vmap", False), ("vmap donate", True)):
        step = ensemble.make_ensemble_step(recipe.make_update(backend="func", donate=donate), recipe.make_inputs)
        box = [ensemble.stack_states([recipe.init(random.key(s)) for s in seeds])]

        def run(step=step, box=box):
            box[0], _ = step(box[0], batches, ensemble.step_keys(box[0]))

        fns[name] = run
    return fns


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vae_std,vae_flow,gan")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--profile", type=int, metavar="N", help="also profile N ensemble steps of each implementation")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.members} members, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for model in args.models.split(","):
        started = time.perf_counter()
        fns = build(model, args.members)
        medians = time_interleaved(fns, args.rounds, args.warmup)
        print(f"\n{model} (batch {64 if model == 'gan' else 128} per member), {time.perf_counter() - started:.0f} s")
        print_table(medians, "sequential", "ratio to sequential")
        if args.profile:
            profile(fns, args.profile)


if __name__ == "__main__":
    main()
