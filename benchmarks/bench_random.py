"""Times one ``vae_std`` training step's random draws: ``fgm.random`` (Philox) against ``torch.Generator``.

Run from the repository root::

    python -m benchmarks.bench_random [--rounds 300] [--batch-size 128] [--threads N] [--device cpu]

A ``vae_std`` step on MNIST draws the dynamic binarisation of its batch
(``uniform [B, 784] < pixels / 255``) and the reparameterisation noise
(``normal [B, 32]``), each from its own key. Timed, interleaved in a random
order per round (so background load hits them alike), median per call:

* **philox**: those draws with ``fgm.random`` (Philox-4x32-10 over torch integer ops);
* **torch.Generator**: the same draws the way ``fgm.random`` made them before,
  ``torch.rand`` / ``torch.randn`` on a fresh generator seeded with the key;
* **philox bits** and **torch.rand**: the binarisation's raw part alone;
* **vae_std step**: the whole training step (binarisation, noise, forward,
  backward, Adam), as ``experiments`` trains it, with the Philox draws.

The ratios printed are the draws against the step and against each other;
the target is Philox draws within 2% of a step. On a shared machine use
``--threads 1``.
"""

from __future__ import annotations

import argparse
import random as pyrandom
import statistics
import time
from collections.abc import Callable

import torch

from experiments import models
from fgm import data as fdata
from fgm import random


def draws_philox(images: torch.Tensor, latent_dim: int, k: random.Key) -> tuple[torch.Tensor, torch.Tensor]:
    k_bin, k_eps = random.split(k)
    x = random.bernoulli(k_bin, images.to(torch.float32) / 255.0)
    eps = random.normal(k_eps, (images.shape[0], latent_dim), device=images.device)
    return x, eps


def draws_torch_generator(images: torch.Tensor, latent_dim: int, k: random.Key) -> tuple[torch.Tensor, torch.Tensor]:
    k_bin, k_eps = random.split(k)
    probs = images.to(torch.float32) / 255.0
    u = torch.rand(probs.shape, generator=random.generator(k_bin, images.device), device=images.device)
    x = (u < probs).to(torch.float32)
    eps = torch.randn(
        (images.shape[0], latent_dim), generator=random.generator(k_eps, images.device), device=images.device
    )
    return x, eps


def vae_std_step(images: torch.Tensor) -> tuple[Callable[[random.Key], None], int]:
    """One training step of the registered ``vae_std`` (default MNIST settings) and its latent size."""
    entry = models.get_model("vae_std")
    config = {**entry.defaults, "lr": 1e-3, "lr_schedule": "cosine", "lr_final_fraction": 0.1, "total_steps": 10_000}
    experiment = entry.build(fdata.get_spec("mnist"), config)
    trainer = experiment.trainer
    update = trainer.make_update()
    state = [trainer.init(random.key(0))]

    def step(k: random.Key) -> None:
        k_bin, k_eps = random.split(k)
        s = state[0]
        x = experiment.train_input(images, k_bin)
        params, opt_state, _, _ = update(s.params, s.opt_state, s.model_state, *trainer.inputs(x, k_eps))
        state[0] = s._replace(params=params, opt_state=opt_state, step=s.step + 1)

    return step, config["latent_dim"]


def time_interleaved(fns: dict[str, Callable[[random.Key], object]], rounds: int, warmup: int, device) -> dict:
    """``{name: median seconds per call}``; each call gets a fresh key, calls interleaved in random order."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    root = random.key(1)
    for fn in fns.values():
        for i in range(warmup):
            fn(random.fold_in(root, i))
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = pyrandom.Random(0)
    for r in range(rounds):
        k = random.fold_in(root, warmup + r)
        for name in order.sample(list(fns), len(fns)):
            t0 = time.perf_counter()
            fns[name](k)
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="draws only: the step runs on the CPU")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = random.randint(random.key(2), 0, 256, (args.batch_size, 1, 28, 28)).to(torch.uint8)
    step, latent_dim = vae_std_step(images)
    dev_images = images.to(args.device)
    n = dev_images.numel()
    fns = {
        "philox": lambda k: draws_philox(dev_images, latent_dim, k),
        "torch.Generator": lambda k: draws_torch_generator(dev_images, latent_dim, k),
        "philox bits": lambda k: random.bits(k, n, args.device),
        "torch.rand": lambda k: torch.rand(n, generator=random.generator(k, args.device), device=args.device),
    }
    if args.device == "cpu":
        fns["vae_std step"] = step
    t = time_interleaved(fns, args.rounds, args.warmup, args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"batch {args.batch_size}: binarisation [{args.batch_size}, 784] + normal [{args.batch_size}, {latent_dim}]"
    )
    for name, seconds in t.items():
        print(f"  {name:<16} {seconds * 1e3:8.3f} ms")
    print(f"philox / torch.Generator draws: {t['philox'] / t['torch.Generator']:.2f}x")
    if "vae_std step" in t:
        s = t["vae_std step"]
        print(f"philox draws / vae_std step:          {t['philox'] / s:6.1%}  (target <= 2%)")
        print(f"torch.Generator draws / vae_std step: {t['torch.Generator'] / s:6.1%}")
        print(f"added per step by philox:             {(t['philox'] - t['torch.Generator']) / s:6.1%}")


if __name__ == "__main__":
    main()
