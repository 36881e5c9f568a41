"""Times one step of an M-member seed ensemble against M single steps, in one process.

Run from the repository root::

    python -m benchmarks.bench_ensemble [--models vae_std,vae_flow,gan,gan_mlp] [--members 4] [--rounds 30]
        [--threads N] [--batch-size B] [--compile]

For each model (the registered MNIST models with their default-profile
settings, as in ``benchmarks/bench_steps.py``: batch 128 for the VAEs, 64 for
the GAN, whose default networks are the DCGAN ConvNets with BatchNorm in G;
``gan_mlp`` is the MLP GAN), with ``M`` members, each on its own batch and
noise:

* **sequential**: ``M`` calls of the single-model step (the trainer's pure
  update through ``fgm.train.step_from_update``: what ``M`` separate runs
  do, one after the other);
* **sequential donate**: the same with the donating step;
* **vmap**: one call of ``fgm.ensemble.make_ensemble_step`` over the stacked
  members (``torch.func.vmap`` of the ``"func"``-backend update; for the GAN
  the members' layer state is stacked and threaded too);
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

from benchmarks.bench_steps import fake_batch, mnist_config, print_table, profile, time_interleaved
from experiments import models
from fgm import ensemble, random, train


def build(
    case: str, members: int, batch_size: int | None = None, compile: bool = False
) -> tuple[dict[str, Callable[[], None]], dict]:
    """``({variant: run one ensemble step}, config)`` of ``case`` (``bench_steps.CASES``), each with its own states.

    With ``compile``: also **sequential compile**, ``M`` calls of the
    compiled single-model step (``--compile``), and **vmap compile**, the
    trainer's stacked update with the members' gradient compiled as one
    graph (the GAN: one per player; ``--compile --seeds M``); both donate.
    """
    config = mnist_config(case, batch_size)
    trainer = models.build(config).trainer
    batches = [fake_batch(config, random.key(10 + i)) for i in range(members)]
    seeds = range(members)
    fns = {}
    sequential = [("sequential", {}), ("sequential donate", {"donate": True})]
    for name, options in sequential + ([("sequential compile", {"donate": True, "compile": True})] if compile else []):
        step = train.step_from_update(trainer.make_update(**options), trainer.inputs)
        states = [trainer.init(random.key(s)) for s in seeds]

        def run(step=step, states=states):
            for i, x in enumerate(batches):
                states[i], _ = step(states[i], x, train.step_key(states[i]))

        fns[name] = run
    for name, donate in (("vmap", False), ("vmap donate", True)):
        update = trainer.make_update(backend="func", donate=donate)
        step = ensemble.make_ensemble_step(update, trainer.inputs)
        box = [ensemble.stack_states([trainer.init(random.key(s)) for s in seeds])]

        def run(step=step, box=box):
            box[0], _ = step(box[0], batches, ensemble.step_keys(box[0]))

        fns[name] = run
    if compile:
        update = trainer.make_update(donate=True, compile=True, stacked=True)
        step = ensemble.make_ensemble_step(update, trainer.inputs, stacked=True)
        box = [ensemble.stack_states([trainer.init(random.key(s)) for s in seeds])]

        def run(step=step, box=box):
            box[0], _ = step(box[0], batches, ensemble.step_keys(box[0]))

        fns["vmap compile"] = run
    return fns, config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vae_std,vae_flow,gan", help="comma-separated; see bench_steps.CASES")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, help="per member, instead of the profile's; quick checks")
    parser.add_argument("--profile", type=int, metavar="N", help="also profile N ensemble steps of each implementation")
    parser.add_argument(
        "--compile", action="store_true", help="also the compiled steps, single and stacked (each model's --compile)"
    )
    args = parser.parse_args(argv)
    cases = args.models.split(",")
    for case in cases:
        mnist_config(case, args.batch_size)  # an unknown name fails before anything runs
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.members} members, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for case in cases:
        started = time.perf_counter()
        fns, config = build(case, args.members, args.batch_size, args.compile)
        medians = time_interleaved(fns, args.rounds, args.warmup)
        print(f"\n{case} (batch {config['batch_size']} per member), {time.perf_counter() - started:.0f} s")
        print_table(medians, "sequential", "ratio to sequential")
        if args.profile:
            profile(fns, args.profile)


if __name__ == "__main__":
    main()
