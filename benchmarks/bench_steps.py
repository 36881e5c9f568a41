"""Times each functional train step against the usual ``nn.Module`` + ``torch.optim`` version.

Run from the repository root::

    python -m benchmarks.bench_steps [--models vae_std,vae_flow,gan,gan_mlp] [--rounds 100] [--warmup 10]
        [--threads N] [--compile] [--profile N] [--batch-size B] [--no-check]

Each model is the registered one (``experiments.models``) with its MNIST
settings of the default profile (``experiments.config.defaults``): batch 128
for the VAEs; batch 64 for the GAN, whose default networks are the DCGAN-style
ConvNets (``fgm.models.networks.mnist_conv_generator``/``_discriminator``, width
80, BatchNorm in G). ``gan_mlp`` is the same GAN with ``arch=mlp``, the MLP
pair that was the default before.

* **fgm**: the trainer's pure update (``trainer.make_update()``) driven by
  ``fgm.train.step_from_update``: ``functional_call`` over a parameter pytree,
  ``torch.autograd.grad``, the pure ``fgm.optim.adam``, noise from the key
  (``trainer.inputs``); for the GAN the layer state (BatchNorm statistics)
  goes in and out beside the parameters.
* **fgm donate**: the same update built with ``donate=True`` (the new state
  reuses the old one's buffers: parameters and Adam moments are updated in
  place, as ``torch.optim`` does; bitwise the same values). This is what
  ``python -m experiments.run`` trains with.
* **fgm compile** (``--compile``, VAEs): forward and backward compiled with
  ``torch.compile`` (``make_update(donate=True, compile=True)``), the
  optimizer eager and donated. Compilation time is reported separately. The
  GAN's update refuses ``compile``.
* **torch**: the same networks as ``nn.Module`` s holding the same initial
  weights (and layer state), in training mode, ``torch.optim.Adam(foreach=True)``,
  ``zero_grad(); loss.backward(); opt.step()``, noise from ``torch.randn``
  with a generator. The flow prior is an ``nn.Module`` RealNVP with the same
  conditioners. For the GAN both networks stay in training mode in the D and
  the G step, as in fgm's (G's BatchNorm normalises with batch statistics and
  updates its running statistics whenever G runs, also when it draws the
  D step's fakes without a graph), and there are two versions: the PyTorch
  DCGAN tutorial's (the G step's ``backward()`` also fills the
  discriminator's ``.grad``, unused) and one with ``backward(inputs=G's
  parameters)``, which, like the functional step, differentiates only what
  it updates; the ratio is taken to the faster one.

Before timing, each model is checked: one fgm step and one torch step from
the same weights on the same batch and noise must give the same losses and
the same new weights (and layer state) to float32 rounding; the largest
differences are printed, and a mismatch stops the benchmark.

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

import optree
import torch
import torch.nn.functional as F
from torch import nn

from experiments import config as cfg
from experiments import models
from fgm import bijectors, random, train
from fgm.tree import TensorTree

LOG_2PI = math.log(2 * math.pi)

# A name on the command line -> (registered model, settings over its MNIST defaults).
CASES: dict[str, tuple[str, dict]] = {
    "vae_std": ("vae_std", {}),
    "vae_flow": ("vae_flow", {}),
    "gan": ("gan", {}),  # the registry's MNIST GAN: DCGAN ConvNets, BatchNorm in G
    "gan_mlp": ("gan", {"arch": "mlp"}),  # the MLP pair (G 64-256-512-784, D 784-512-256-1)
}


def mnist_config(case: str, batch_size: int | None = None, total_steps: int = 10_000) -> dict:
    """The checked config of ``case`` on MNIST, default profile (what ``experiments.run`` would train).

    Args:
      case: a key of :data:`CASES`.
      batch_size: instead of the profile's (quick checks).
      total_steps: the length of the learning-rate schedule.
    """
    if case not in CASES:
        raise ValueError(f"unknown model {case!r}; choose from: {', '.join(CASES)}")
    model, overrides = CASES[case]
    config = {"model": model, "dataset": "mnist", "profile": "default", "seed": 0, "seeds": [0]}
    config.update(models.defaults(model, "mnist", "default"))
    config.update(overrides, total_steps=total_steps)
    if batch_size is not None:
        config["batch_size"] = batch_size
    return cfg.check_config(config)


def fake_batch(config: dict, key: random.Key) -> torch.Tensor:
    """One update's model input of random data: binarised pixels (VAEs) or pixels in [-1, 1] (GAN)."""
    n = config["batch_size"] * config.get("d_steps", 1)
    if config["model"] == "gan":
        return random.uniform(key, (n, 1, 28, 28)) * 2 - 1
    return random.bernoulli(key, torch.full((n, 1, 28, 28), 0.13))


def module_with(template: nn.Module, variables: dict[str, torch.Tensor]) -> nn.Module:
    """A real ``nn.Module`` copy of a meta-device template holding ``variables`` (cloned), in training mode.

    ``variables`` are the parameters merged with the layer state (a
    ``state_dict``); loading is strict, so the module has exactly fgm's
    architecture. ``fgm.nn.stateful`` replaces the forwards of BatchNorm and
    spectral-norm layers on its templates by pure ones; the copy gets
    torch's own back (in-place buffer updates, as ``nn.Module`` users have).
    """
    module = copy.deepcopy(template)
    for sub in module.modules():
        sub.__dict__.pop("forward", None)
    module = module.to_empty(device="cpu")
    module.load_state_dict({k: v.clone() for k, v in variables.items()}, strict=True)
    return module.train()


def fgm_step(experiment: models.Experiment, **make_update) -> tuple[Callable, object]:
    """``(step(state, batch, key) -> (state, metrics), initial state)`` of the trainer's update."""
    trainer = experiment.trainer
    update = trainer.make_update(**make_update)
    step = train.step_from_update(update, trainer.inputs)
    return step, trainer.init(random.key(0))


def fgm_steps(experiment: models.Experiment, batch: torch.Tensor, compile_step: bool) -> dict[str, Callable[[], None]]:
    """The trainer's pure update, its donating twin and (optionally) the compiled one, each on its own state."""
    variants = {"fgm": {}, "fgm donate": {"donate": True}}
    if compile_step:
        variants["fgm compile"] = {"donate": True, "compile": True}
    fns = {}
    for name, kwargs in variants.items():
        try:
            step, state = fgm_step(experiment, **kwargs)
        except ValueError as e:  # the GAN refuses compile
            print(f"{name}: skipped ({e})")
            continue
        box = [state]

        def run(step=step, box=box):
            box[0], _ = step(box[0], batch, train.step_key(box[0]))

        fns[name] = run
    return fns


def max_abs_diff(a: TensorTree, b: TensorTree) -> float:
    """The largest ``|a - b|`` over two trees of the same structure (dict keys must match)."""
    leaves_a, spec_a = optree.tree_flatten(a)
    leaves_b, spec_b = optree.tree_flatten(b)
    if spec_a != spec_b:
        raise ValueError(f"the two trees differ in structure: {spec_a} vs {spec_b}")
    return max(
        (float((x.double() - y.double()).abs().max()) for x, y in zip(leaves_a, leaves_b, strict=True)), default=0.0
    )


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


class TorchVAE:
    """The usual PyTorch VAE with an experiment's architecture and weights: ``step(x, eps) -> loss``."""

    def __init__(self, experiment: models.Experiment, config: dict, params: dict):
        self.encoder = module_with(experiment.networks["encoder"][0], params["encoder"])
        self.decoder = module_with(experiment.networks["decoder"][0], params["decoder"])
        self.couplings = nn.ModuleList()
        if params["prior"]:
            masks = bijectors.alternating_masks(config["latent_dim"], config["flow_layers"])
            for i, mask in enumerate(masks):
                with torch.device("meta"):
                    template = bijectors._conditioner(config["latent_dim"], tuple(config["flow_hidden"]))
                self.couplings.append(TorchCoupling(module_with(template, params["prior"][str(i)]), mask))
        modules = nn.ModuleList([self.encoder, self.decoder, self.couplings])
        self.opt = torch.optim.Adam(modules.parameters(), lr=config["lr"], foreach=True)

    def step(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * eps
        rec = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").flatten(1).sum(-1)
        if self.couplings:  # Monte-Carlo KL: log q(z|x) - log p(z), p a RealNVP prior
            log_q = -0.5 * (eps.square() + log_var + LOG_2PI).sum(-1)
            u, log_det = z, torch.zeros(z.shape[0])
            for coupling in reversed(self.couplings):
                u, ld = coupling.inverse(u)
                log_det = log_det + ld
            kl = log_q - (-0.5 * (u.square() + LOG_2PI).sum(-1) + log_det)
        else:
            kl = 0.5 * (mean.square() + torch.expm1(log_var) - log_var).sum(-1)
        loss = (rec + kl).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()

    def params(self) -> dict:
        """The weights in fgm's layout ``{"encoder", "decoder", "prior"}``."""
        prior = {str(i): dict(c.net.state_dict()) for i, c in enumerate(self.couplings)}
        return {"encoder": dict(self.encoder.state_dict()), "decoder": dict(self.decoder.state_dict()), "prior": prior}


# --------------------------------------------------------------------------- GAN


class TorchGAN:
    """Alternating D and G steps the usual PyTorch way: ``step(reals, d_latents, z_g) -> (d_loss, g_loss)``.

    Both networks in training mode throughout (see the module docstring);
    ``only_g`` differentiates the G step's loss with respect to G's parameters only.
    """

    def __init__(self, experiment: models.Experiment, config: dict, variables: dict, only_g: bool):
        if config["loss"] != "non_saturating":
            raise ValueError(f"the torch GAN reference implements the non_saturating loss, not {config['loss']!r}")
        self.g = module_with(experiment.networks["generator"][0], variables["generator"])
        self.d = module_with(experiment.networks["discriminator"][0], variables["discriminator"])
        betas = (config["b1"], config["b2"])
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=config["lr"], betas=betas, foreach=True)
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=config["lr"], betas=betas, foreach=True)
        self.only_g = only_g

    def step(self, reals, d_latents, z_g) -> tuple[torch.Tensor, torch.Tensor]:
        for real, z in zip(reals, d_latents, strict=True):
            with torch.no_grad():
                fake = self.g(z)  # training mode: batch statistics, running statistics move
            d_loss = (F.softplus(-self.d(real).squeeze(-1)) + F.softplus(self.d(fake).squeeze(-1))).mean()
            self.d_opt.zero_grad()
            d_loss.backward()
            self.d_opt.step()
        g_loss = F.softplus(-self.d(self.g(z_g)).squeeze(-1)).mean()
        self.g_opt.zero_grad()
        g_loss.backward(inputs=list(self.g.parameters()) if self.only_g else None)
        self.g_opt.step()
        return d_loss.detach(), g_loss.detach()

    def variables(self) -> dict:
        """Parameters and layer state in fgm's layout (``fgm.models.gan.variables``)."""
        return {"generator": dict(self.g.state_dict()), "discriminator": dict(self.d.state_dict())}


# --------------------------------------------------------------------------- cases


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs() / b.abs().clamp(min=1.0))


def check_agreement(experiment: models.Experiment, config: dict, batch: torch.Tensor) -> dict[str, float]:
    """One fgm step and one torch step from the same weights on the same batch and noise.

    Returns:
      ``{what: difference}``: the losses' relative differences and the largest
      absolute difference of the new weights (and layer state).
    """
    step, state = fgm_step(experiment)
    key = train.step_key(state)
    inputs = experiment.trainer.inputs(batch, key)
    new_state, metrics = step(state, batch, key)
    if config["model"] == "gan":
        net = TorchGAN(experiment, config, experiment.trainer.variables(state), only_g=False)
        reals, d_noise, z_g = inputs
        d_loss, g_loss = net.step(reals, [z for z, *_ in d_noise], z_g)
        return {
            "d_loss": _relative(metrics["d_loss"], d_loss),
            "g_loss": _relative(metrics["g_loss"], g_loss),
            "variables": max_abs_diff(experiment.trainer.variables(new_state), net.variables()),
        }
    net = TorchVAE(experiment, config, state.params)
    loss = net.step(*inputs)
    return {"loss": _relative(metrics["loss"], loss), "params": max_abs_diff(new_state.params, net.params())}


def torch_steps(experiment: models.Experiment, config: dict, batch: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The torch reference(s), each on its own copy of fgm's initial weights, noise from ``torch.randn``."""
    state = experiment.trainer.init(random.key(0))
    gen = torch.Generator().manual_seed(0)
    if config["model"] != "gan":
        net = TorchVAE(experiment, config, state.params)
        latent = (batch.shape[0], config["latent_dim"])
        return {"torch": lambda: net.step(batch, torch.randn(latent, generator=gen))}
    reals = batch.chunk(config.get("d_steps", 1))
    latent = (reals[0].shape[0], config["latent_dim"])
    fns = {}
    for name, only_g in (("torch", False), ("torch inputs=G", True)):
        net = TorchGAN(experiment, config, experiment.trainer.variables(state), only_g)

        def run(net=net):
            net.step(reals, [torch.randn(latent, generator=gen) for _ in reals], torch.randn(latent, generator=gen))

        fns[name] = run
    return fns


def build_case(
    case: str, compile_step: bool, check: bool = True, batch_size: int | None = None
) -> tuple[dict[str, Callable[[], None]], dict]:
    """``({implementation: run one step}, config)`` of one model; ``check`` first compares fgm with torch."""
    config = mnist_config(case, batch_size)
    experiment = models.build(config)
    batch = fake_batch(config, random.key(1))
    if check:
        diffs = check_agreement(experiment, config, batch)
        shown = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        print(f"{case}: one step, fgm vs torch from the same weights and noise, largest difference: {shown}")
        if max(diffs.values()) > 1e-3:
            raise RuntimeError(f"{case}: the torch reference does not compute fgm's step: {diffs}")
    return {**fgm_steps(experiment, batch, compile_step), **torch_steps(experiment, config, batch)}, config


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
    parser.add_argument("--models", default="vae_std,vae_flow,gan", help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant (VAEs)")
    parser.add_argument("--profile", type=int, metavar="N", help="also profile N steps of each implementation")
    parser.add_argument("--batch-size", type=int, help="instead of the profile's (128 VAEs, 64 GAN); quick checks")
    parser.add_argument("--no-check", action="store_true", help="skip the one-step fgm vs torch agreement check")
    args = parser.parse_args(argv)
    cases = args.models.split(",")
    for case in cases:
        mnist_config(case, args.batch_size)  # an unknown name or a bad batch size fails before anything runs
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for case in cases:
        started = time.perf_counter()
        fns, config = build_case(case, args.compile, not args.no_check, args.batch_size)
        if "fgm compile" in fns:
            t0 = time.perf_counter()
            fns["fgm compile"]()  # the first call compiles
            print(f"{case}: torch.compile took {time.perf_counter() - t0:.1f} s")
        medians = time_interleaved(fns, args.rounds, args.warmup)
        base = min((k for k in medians if k.startswith("torch")), key=lambda k: medians[k][0])
        print(f"\n{case} (batch {config['batch_size']}), {time.perf_counter() - started:.0f} s")
        print_table(medians, base, "ratio to torch")
        if args.profile:
            profile(fns, args.profile)


if __name__ == "__main__":
    main()
