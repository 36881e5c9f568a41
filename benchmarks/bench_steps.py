"""Times each functional train step against the usual ``nn.Module`` + ``torch.optim`` version.

Run from the repository root::

    python -m benchmarks.bench_steps [--models vae_std,vae_flow,gan] [--rounds 100] [--threads N] [--compile]

For each model (the MNIST default architectures; batch 128 for the VAEs, 64
for the GAN, as their default profiles):

* **fgm**: the registry's step, ``step(state, batch, key) -> (state,
  metrics)``: ``functional_call`` over a parameter pytree,
  ``torch.autograd.grad``, the pure ``fgm.optim.adam``, noise from the key.
* **fgm donate**: the same step built with ``donate=True`` (the new state
  reuses the old one's buffers: parameters and Adam moments are updated in
  place, as ``torch.optim`` does; bitwise the same values).
* **fgm compile** (``--compile``): forward and backward compiled with
  ``torch.compile`` (``fgm.train.make_update(..., compile=True)``), the
  optimizer eager and donated. Compilation time is reported separately.
* **torch**: the same architecture as ``nn.Module`` s holding the same
  initial weights, ``torch.optim.Adam(foreach=True)``, ``zero_grad();
  loss.backward(); opt.step()``, noise from ``torch.randn`` with a generator.
  The flow prior is an ``nn.Module`` RealNVP with the same conditioners. For
  the GAN, two versions: the PyTorch DCGAN tutorial's (the G step's
  ``backward()`` also fills the discriminator's ``.grad``, unused) and one
  with ``backward(inputs=G's parameters)``, which, like the functional step,
  differentiates only what it updates; the ratio is taken to the faster one.

All implementations run in this process, interleaved (one step each per
round, in a fresh random order), so background load hits them alike; the
table shows the median per step, the ratio to torch, and the minor page
faults per step (``getrusage``): on the CPU a fresh multi-megabyte buffer
costs a page fault per 4 KiB, which is where the pure step used to lose
(see ``fgm.optim``). ``--profile N`` also prints ``torch.profiler``'s top
operators over N steps of each implementation.

On a shared machine use ``--threads 1``: with two threads, a second busy
process makes small ops tens of times slower and the ratios meaningless.
"""

from __future__ import annotations

import argparse
import copy
import math
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from experiments import registry
from fgm import bijectors, random, train
from fgm import data as fdata

LOG_2PI = math.log(2 * math.pi)


def _module_with(template: nn.Module, params: dict) -> nn.Module:
    """A real copy of a meta-device template holding ``params`` (cloned)."""
    module = copy.deepcopy(template).to_empty(device="cpu")
    module.load_state_dict({k: v.clone() for k, v in params.items()})
    return module


def _fgm_steps(recipe: registry.Recipe, batch: torch.Tensor, compile_step: bool) -> dict[str, Callable[[], None]]:
    """The registry's step, its donating twin and (optionally) the compiled one, each on its own state."""
    steps = {
        "fgm": recipe.step,
        "fgm donate": train.step_from_update(recipe.make_update(donate=True), recipe.make_inputs),
    }
    if compile_step:
        steps["fgm compile"] = train.step_from_update(recipe.make_update(donate=True, compile=True), recipe.make_inputs)
    fns = {}
    for name, step in steps.items():
        box = [recipe.init(random.key(0))]

        def run(step=step, box=box):
            box[0], _ = step(box[0], batch, train.step_key(box[0]))

        fns[name] = run
    return fns


# --------------------------------------------------------------------------- VAEs


class TorchCoupling(nn.Module):
    """RealNVP affine coupling as an ``nn.Module`` (the maths of ``fgm.bijectors.affine_coupling``)."""

    def __init__(self, conditioner: nn.Module, mask: torch.Tensor, scale_bound: float = 2.0):
        super().__init__()
        self.net = conditioner
        self.register_buffer("mask", mask)
        self.scale_bound = scale_bound

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(y * self.mask).chunk(2, dim=-1)
        s = self.scale_bound * torch.tanh(s / self.scale_bound) * (1 - self.mask)
        t = t * (1 - self.mask)
        return (y - t) * torch.exp(-s), -s.sum(-1)


def torch_vae_step(recipe: registry.Recipe, config: dict, batch: torch.Tensor) -> Callable[[], None]:
    """The usual PyTorch VAE step with the recipe's architecture and initial weights."""
    params = recipe.init(random.key(0)).params
    encoder = _module_with(recipe.networks["encoder"][0], params["encoder"])
    decoder = _module_with(recipe.networks["decoder"][0], params["decoder"])
    couplings = nn.ModuleList()
    if params["prior"]:
        masks = bijectors.alternating_masks(config["latent_dim"], config["flow_layers"])
        for i, mask in enumerate(masks):
            template = bijectors._conditioner(config["latent_dim"], tuple(config["flow_hidden"])).to("meta")
            couplings.append(TorchCoupling(_module_with(template, params["prior"][str(i)]), mask))
    modules = nn.ModuleList([encoder, decoder, couplings])
    opt = torch.optim.Adam(modules.parameters(), lr=config["lr"], foreach=True)
    gen = torch.Generator().manual_seed(0)

    def step():
        mean, log_var = encoder(batch).chunk(2, dim=-1)
        eps = torch.randn(mean.shape, generator=gen)
        z = mean + torch.exp(0.5 * log_var) * eps
        rec = F.binary_cross_entropy_with_logits(decoder(z), batch, reduction="none").flatten(1).sum(-1)
        if couplings:  # Monte-Carlo KL: log q(z|x) - log p(z), p a RealNVP prior
            log_q = -0.5 * (eps.square() + log_var + LOG_2PI).sum(-1)
            u, log_det = z, torch.zeros(z.shape[0])
            for coupling in reversed(couplings):
                u, ld = coupling.inverse(u)
                log_det = log_det + ld
            kl = log_q - (-0.5 * (u.square() + LOG_2PI).sum(-1) + log_det)
        else:
            kl = 0.5 * (mean.square() + torch.expm1(log_var) - log_var).sum(-1)
        loss = (rec + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def vae_case(model: str, batch_size: int, compile_step: bool) -> dict[str, Callable[[], None]]:
    config = {**registry.get_model(model).defaults, "lr": 1e-3, "lr_schedule": "cosine", "total_steps": 10_000}
    recipe = registry.get_model(model).build(fdata.get_spec("mnist"), config)
    x = random.bernoulli(random.key(1), torch.full((batch_size, 1, 28, 28), 0.13))
    return {**_fgm_steps(recipe, x, compile_step), "torch": torch_vae_step(recipe, config, x)}


# --------------------------------------------------------------------------- GAN


def torch_gan_steps(recipe: registry.Recipe, config: dict, batch: torch.Tensor) -> dict[str, Callable[[], None]]:
    """Alternating D and G steps the usual PyTorch way, in the two variants described above."""
    steps = {}
    for name, only_g in (("torch", False), ("torch inputs=G", True)):
        params = recipe.init(random.key(0)).params
        g = _module_with(recipe.networks["generator"][0], params["generator"])
        d = _module_with(recipe.networks["discriminator"][0], params["discriminator"])
        betas = (config["b1"], config["b2"])
        g_opt = torch.optim.Adam(g.parameters(), lr=config["lr"], betas=betas, foreach=True)
        d_opt = torch.optim.Adam(d.parameters(), lr=config["lr"], betas=betas, foreach=True)
        gen = torch.Generator().manual_seed(0)
        n, latent = batch.shape[0], config["latent_dim"]

        def step(g=g, d=d, g_opt=g_opt, d_opt=d_opt, gen=gen, only_g=only_g):
            with torch.no_grad():
                fake = g(torch.randn(n, latent, generator=gen))
            d_loss = (F.softplus(-d(batch).squeeze(-1)) + F.softplus(d(fake).squeeze(-1))).mean()
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            g_loss = F.softplus(-d(g(torch.randn(n, latent, generator=gen))).squeeze(-1)).mean()
            g_opt.zero_grad()
            g_loss.backward(inputs=list(g.parameters()) if only_g else None)
            g_opt.step()

        steps[name] = step
    return steps


def gan_case(batch_size: int, compile_step: bool) -> dict[str, Callable[[], None]]:
    config = {**registry.get_model("gan").defaults, "lr": 2e-4, "total_steps": 10_000}
    recipe = registry.gan(fdata.get_spec("mnist"), config)
    x = random.uniform(random.key(1), (batch_size, 1, 28, 28)) * 2 - 1
    # make_gan_update has no compile flag (each player step is its own autograd call)
    return {**_fgm_steps(recipe, x, False), **torch_gan_steps(recipe, config, x)}


# --------------------------------------------------------------------------- timing


def time_interleaved(
    fns: dict[str, Callable[[], None]], rounds: int, warmup: int, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """``{name: (median seconds per call, minor page faults per call)}``, calls interleaved in random order."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    faults = dict.fromkeys(fns, 0)
    names = list(fns)
    shuffler = torch.Generator().manual_seed(seed)
    for _ in range(rounds):
        # whoever runs after whom inherits warm caches: shuffle every round
        for i in torch.randperm(len(names), generator=shuffler).tolist():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            fns[names[i]]()
            times[names[i]].append(time.perf_counter() - t0)
            faults[names[i]] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {name: (statistics.median(ts), faults[name] / rounds) for name, ts in times.items()}


def print_table(medians: dict[str, tuple[float, float]], base: str, label: str) -> None:
    """One line per implementation: ms per call, ratio to ``base``'s, page faults per call."""
    ref = medians[base][0]
    print(f"{'implementation':<18} {'ms/step':>9} {label:>20} {'faults/step':>12}")
    for name, (m, faults) in medians.items():
        print(f"{name:<18} {m * 1e3:>9.2f} {m / ref:>20.3f} {faults:>12.0f}")


def profile(fns: dict[str, Callable[[], None]], steps: int, rows: int = 15) -> None:
    """``torch.profiler``'s operators by self CPU time over ``steps`` calls of each function."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, fn in fns.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                fn()
        print(f"\n--- {name}: {steps} steps")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vae_std,vae_flow,gan")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant (VAEs)")
    parser.add_argument("--profile", type=int, metavar="N", help="also profile N steps of each implementation")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for model in args.models.split(","):
        started = time.perf_counter()
        fns = gan_case(64, args.compile) if model == "gan" else vae_case(model, 128, args.compile)
        if "fgm compile" in fns:
            t0 = time.perf_counter()
            fns["fgm compile"]()  # the first call compiles
            print(f"{model}: torch.compile took {time.perf_counter() - t0:.1f} s")
        medians = time_interleaved(fns, args.rounds, args.warmup)
        base = min((k for k in medians if k.startswith("torch")), key=lambda k: medians[k][0])
        print(f"\n{model} (batch {64 if model == 'gan' else 128}), {time.perf_counter() - started:.0f} s")
        print_table(medians, base, "ratio to torch")
        if args.profile:
            profile(fns, args.profile)


if __name__ == "__main__":
    main()
