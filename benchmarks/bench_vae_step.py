"""Times one VAE train step: ``fgm``'s functional step against the usual PyTorch way.

Run from the repository root::

    python -m benchmarks.bench_vae_step [--rounds 200] [--warmup 20] [--batch-size 128]

* **fgm**: ``step(state, batch, key) -> (state, metrics)``: the registered
  ``vae_std``'s pure update (``experiments.models``, ``trainer.make_update()``)
  driven by ``fgm.train.step_from_update`` (functional_call over a parameter
  pytree, ``torch.autograd.grad``, ``fgm.optim.adam``, noise drawn from the key).
* **fgm (func)**: the same step differentiated with ``torch.func.grad_and_value``.
* **fgm donate**: the default step built with ``donate=True`` (parameters and Adam moments
  updated in place, the updates written into the gradients' buffers; bitwise the same values).
* **fgm vae_flow**: the ``vae_flow`` step (same encoder/decoder, 4-layer RealNVP prior).
* **torch**: the same encoder/decoder as ``nn.Module``s, ``torch.optim.Adam(foreach=True)``,
  ``zero_grad(); loss.backward(); opt.step()``, noise from ``torch.randn``.

Same architecture (MNIST MLP 784-512-256-32), same batch, same process, torch's default thread
count; Adam at a constant 1e-3 for all (the default profile's cosine schedule is left out, as
the torch step has none).
Implementations run interleaved (one step each per round, in a random order) so background load
hits them alike; the table shows the median per step and the ratio to torch.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from experiments import config as cfg
from experiments import models
from fgm import data as fdata
from fgm import random, train


def mnist_config(model: str) -> dict:
    """``model``'s MNIST config of the default profile, with a constant learning rate."""
    config = {"model": model, "dataset": "mnist", "profile": "default", "seed": 0, "seeds": [0]}
    config.update(models.defaults(model, "mnist", "default"))
    config.update(lr=1e-3, lr_schedule="constant", total_steps=10_000)
    return cfg.check_config(config)


def build(batch_size: int):
    spec = fdata.get_spec("mnist")
    config = mnist_config("vae_std")
    vae = models.build_vae(spec, config)
    trainer = models.vae_experiment(spec, config, vae).trainer
    state = trainer.init(random.key(0))
    x = random.bernoulli(random.key(1), torch.full((batch_size, 1, 28, 28), 0.13))

    def stepper(trainer, update, state):
        step, box = train.step_from_update(update, trainer.inputs), [state]

        def run():
            box[0], _ = step(box[0], x, train.step_key(box[0]))

        return run

    # fgm, autograd backend (the default)
    fgm_step = stepper(trainer, trainer.make_update(), state)
    # fgm, torch.func backend
    fgm_func_step = stepper(trainer, trainer.make_update(backend="func"), state)
    # fgm, donating step: the loop drops the old state, so its buffers are reused
    fgm_donate_step = stepper(trainer, trainer.make_update(donate=True), trainer.init(random.key(0)))

    # the usual way: modules hold their weights, the optimizer mutates them
    encoder = copy.deepcopy(vae.encoder).to_empty(device="cpu")
    decoder = copy.deepcopy(vae.decoder).to_empty(device="cpu")
    encoder.load_state_dict(state.params["encoder"])
    decoder.load_state_dict(state.params["decoder"])
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, foreach=True)
    gen = torch.Generator().manual_seed(0)

    def torch_step():
        mean, log_var = encoder(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn(mean.shape, generator=gen)
        logits = decoder(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
        kl = 0.5 * (mean.square() + torch.expm1(log_var) - log_var).sum(-1)
        loss = (rec + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    # vae_flow: the same encoder/decoder with the default RealNVP prior
    flow_trainer = models.get_model("vae_flow").build(spec, mnist_config("vae_flow")).trainer
    fgm_flow_step = stepper(flow_trainer, flow_trainer.make_update(), flow_trainer.init(random.key(0)))

    return {
        "fgm": fgm_step,
        "fgm (func)": fgm_func_step,
        "fgm donate": fgm_donate_step,
        "fgm vae_flow": fgm_flow_step,
        "torch": torch_step,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    steps = build(args.batch_size)
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    times = {name: [] for name in steps}
    order = list(steps)
    shuffler = torch.Generator().manual_seed(0)
    for _ in range(args.rounds):
        # A fresh order every round: whoever runs after whom inherits caches.
        for i in torch.randperm(len(order), generator=shuffler).tolist():
            name, fn = order[i], steps[order[i]]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["torch"])
    print(
        f"VAE train step, MNIST MLP 784-512-256-32, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds"
    )
    print(f"{'implementation':<14} {'ms/step':>9} {'ratio to torch':>15}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:<14} {m * 1e3:>9.3f} {m / base:>15.3f}")


if __name__ == "__main__":
    main()
