"""What a training epoch and the report-scale evaluation cost on a device, for every model on MNIST and SVHN.

Run from the repository root::

    python -m benchmarks.bench_devices [--device cuda] [--models vae_std,vae_flow,gan]
        [--datasets mnist,svhn] [--steps 30] [--cpu-steps 3] [--iwae-images 20] [--graph] [--launches]

For each (model, dataset) it builds the registered model with the default
profile's settings (``experiments.config.defaults``), moves the state to
``--device`` (:func:`fgm.train.to_device`) and times ``--steps`` donated
updates on random ``uint8`` batches of the dataset's shape that live on the
device (timing does not depend on the pixels): the binarisation, the noise,
the update and the NaN guard's bookkeeping, with one host read at the end
(the runner reads every 50 steps). ``--graph`` times the update a second
time with its gradient replayed as one CUDA graph (``compile="cuda_graph"``,
:func:`fgm.train.cuda_graph`), ``--launches`` counts kernel launches, graph
launches, copies and synchronisations per step with ``torch.profiler``. The
epoch cost is that step time times the training split's updates per epoch
(MNIST 55,000 and SVHN 68,257 images after the validation hold-out; GAN: one
update per ``d_steps`` batches). ``--cpu-steps`` steps on the CPU, in the
same process, give the ratio.

For the VAEs it also times the IWAE estimate with K = 5,000 on
``--iwae-images`` test-shaped images and extrapolates to the full test set
(MNIST 10,000, SVHN 26,032 images): the report-scale NLL. The Inception
features of 10,000 images (one sample set of the report-scale FID) are timed
with random weights in the FID network's architecture
(:func:`fgm.metrics.inception.build_network`, fp32, channels-last, the
extractor's preprocessing): the time does not depend on the weights, and the
TF-FID weights (87 MB) need not be on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from experiments import config as cfg
from experiments import models, train
from fgm import data as fdata
from fgm import ensemble, random
from fgm import train as ftrain
from fgm.metrics import inception

TRAIN_IMAGES = {"mnist": 55_000, "svhn": 68_257}
TEST_IMAGES = {"mnist": 10_000, "svhn": 26_032}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(model: str, dataset: str) -> tuple[models.Experiment, dict]:
    config = {**models.defaults(model, dataset, "default"), "seeds": [0]}
    config |= {"model": model, "dataset": dataset, "total_steps": 10_000}
    return models.build(config), config


def _stepper(experiment: models.Experiment, config: dict, device: torch.device, mode: bool | str):
    """``(one(i), state)``: step ``i`` of a donated update on ``device``, as the runner takes it.

    Eight distinct batches live on the device (the runner's ``--device cuda``
    copies each from page-locked memory; a resident training set saves even
    that); the binarisation and the update's noise are drawn there. No host
    read: the runner reads its losses once per 50 steps.
    """
    spec = fdata.get_spec(config["dataset"])
    step = ensemble.member_step(experiment.trainer, 1, mode)
    per_update = models.images_per_update(config)
    images = torch.randint(0, 256, (8 * per_update, *spec.shape), dtype=torch.uint8).to(device)
    holder = {"state": ftrain.to_device(experiment.trainer.init(random.key(0)), device), "first": None}

    def one(i: int) -> None:
        batch = images[(i % 8) * per_update : (i % 8 + 1) * per_update]
        inputs = experiment.trainer.inputs(experiment.train_input(batch, random.key(i)), random.key(10_000 + i))
        holder["state"], metrics = step(holder["state"], [tuple(inputs)])
        holder["first"] = ftrain.first_nonfinite_step(holder["first"], metrics["loss"], i)

    return one, holder


def step_seconds(
    experiment: models.Experiment, config: dict, device: torch.device, steps: int, mode: bool | str = False
) -> float:
    """Mean seconds of one donated update on ``device`` over ``steps`` steps after three warm-up steps.

    ``mode`` is the update's ``compile`` (``False``: eager; ``"cuda_graph"``:
    the gradient replayed as one CUDA graph, captured in the warm-up).
    """
    one, holder = _stepper(experiment, config, device, mode)
    for i in range(3):
        one(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(3, 3 + steps):
        one(i)
    int(holder["first"].max())  # the NaN guard's read, once, as the runner does every 50 steps
    sync(device)
    return (time.perf_counter() - t0) / steps


def launches_per_step(experiment: models.Experiment, config: dict, device: torch.device, mode: bool | str) -> dict:
    """Kernel launches, graph launches and copies per step, counted by ``torch.profiler`` over 10 steps."""
    one, _ = _stepper(experiment, config, device, mode)
    for i in range(3):
        one(i)
    sync(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(3, 13):
            one(i)
        sync(device)
    counts = {"kernel": 0, "graph": 0, "memcpy": 0, "sync": 0}
    for event in prof.events():
        name = event.name
        if name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"):
            counts["kernel"] += 1
        elif name in ("cudaGraphLaunch", "cuGraphLaunch"):
            counts["graph"] += 1
        elif name.startswith("cudaMemcpy") or name.startswith("cuMemcpy"):
            counts["memcpy"] += 1
        elif "Synchronize" in name:
            counts["sync"] += 1
    return {k: v / 10 for k, v in counts.items()}


def iwae_seconds(experiment: models.Experiment, config: dict, device: torch.device, images: int) -> float:
    """Seconds of the K = 5,000 IWAE estimate of ``images`` test-shaped images on ``device``."""
    spec = fdata.get_spec(config["dataset"])
    params = ftrain.to_device(experiment.trainer.init(random.key(0)), device).params
    x = experiment.eval_input(torch.randint(0, 256, (images, *spec.shape), dtype=torch.uint8)).to(device)
    with torch.no_grad():
        experiment.log_likelihood(params, x[:2], random.key(0), 100)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        train.mean_log_likelihood(experiment, params, x, random.key(1), 5000, progress=False)
        sync(device)
    return time.perf_counter() - t0


def inception_seconds(device: torch.device, images: int, batch_size: int = 250) -> float:
    """Seconds of pool3 features of ``images`` MNIST-shaped images on ``device`` (random weights)."""
    net = inception.build_network().to_empty(device=device).eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.01)
    x = torch.rand(batch_size, 1, 28, 28)
    with torch.inference_mode():
        net(inception.preprocess(x.to(device)).contiguous(memory_format=torch.channels_last))  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(images // batch_size):
            net(inception.preprocess(x.to(device)).contiguous(memory_format=torch.channels_last)).cpu()
        sync(device)
    return (time.perf_counter() - t0) * images / (images // batch_size * batch_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help=f"one of: {cfg.DEVICES}")
    parser.add_argument("--models", default="vae_std,vae_flow,gan")
    parser.add_argument("--datasets", default="mnist,svhn")
    parser.add_argument("--steps", type=int, default=30, help="timed steps on the device")
    parser.add_argument("--cpu-steps", type=int, default=3, help="timed steps on the CPU, for the ratio (0: none)")
    parser.add_argument("--iwae-images", type=int, default=20, help="images of the timed K = 5,000 IWAE (0: skip)")
    parser.add_argument("--inception-images", type=int, default=10_000, help="images of the timed features (0: skip)")
    parser.add_argument("--graph", action="store_true", help="also time the update with its gradient as a CUDA graph")
    parser.add_argument("--launches", action="store_true", help="count launches per step with torch.profiler")
    args = parser.parse_args(argv)
    device = cfg.resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}); torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    modes = [False, "cuda_graph"] if args.graph and device.type == "cuda" else [False]
    header = f"{'model':<9} {'dataset':<6} {'batch':>5} {'mode':>10} {'ms/step':>8} {'epoch s':>8} "
    print(header + f"{'CPU ms/step':>11} {'CPU/dev':>7} {'IWAE K=5000 test set, min':>26}")
    for dataset in args.datasets.split(","):
        for model in args.models.split(","):
            experiment, config = build(model, dataset)
            per_update = models.images_per_update(config)
            cpu = step_seconds(experiment, config, torch.device("cpu"), args.cpu_steps) if args.cpu_steps else None
            for mode in modes:
                try:
                    seconds = step_seconds(experiment, config, device, args.steps, mode)
                except (RuntimeError, ValueError) as error:  # a mode a model does not offer: say so, go on
                    print(f"{model:<9} {dataset:<6} {per_update:>5} {mode or 'eager':>10} failed: {error}")
                    continue
                epoch = seconds * (TRAIN_IMAGES[dataset] // per_update)
                cpu_text = f"{cpu * 1e3:11.1f} {cpu / seconds:7.1f}" if cpu else f"{'-':>11} {'-':>7}"
                label = mode or "eager"
                line = f"{model:<9} {dataset:<6} {per_update:>5} {label:>10} {seconds * 1e3:8.2f} {epoch:8.1f} "
                line += cpu_text
                if experiment.log_likelihood is not None and args.iwae_images and not mode:
                    iwae = iwae_seconds(experiment, config, device, args.iwae_images)
                    line += f" {iwae / args.iwae_images * TEST_IMAGES[dataset] / 60:26.1f}"
                print(line, flush=True)
                if args.launches and device.type == "cuda":
                    print(f"    launches per step ({label}): {launches_per_step(experiment, config, device, mode)}")
    if args.inception_images:
        seconds = inception_seconds(device, args.inception_images)
        print(f"Inception pool3 features of {args.inception_images} MNIST-shaped images: {seconds:.1f} s")


if __name__ == "__main__":
    main()
