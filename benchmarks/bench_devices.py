"""What a training epoch and the report-scale evaluation cost on a device, for every model on MNIST and SVHN.

Run from the repository root::

    python -m benchmarks.bench_devices [--device cuda] [--models vae_std,vae_flow,gan]
        [--datasets mnist,svhn] [--steps 30] [--cpu-steps 3] [--iwae-images 20]

For each (model, dataset) it builds the registered model with the default
profile's settings (``experiments.config.defaults``), moves the state to
``--device`` (:func:`fgm.train.to_device`) and times ``--steps`` donated
updates on random ``uint8`` batches of the dataset's shape (timing does not
depend on the pixels), the same thing the runner does per step, batch copy
from the CPU included. The epoch cost is that step time times the
training split's updates per epoch (MNIST 55,000 and SVHN 68,257 images
after the validation hold-out; GAN: one update per ``d_steps`` batches).
``--cpu-steps`` steps on the CPU, in the same process, give the ratio.

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


def step_seconds(experiment: models.Experiment, config: dict, device: torch.device, steps: int) -> float:
    """Median seconds of one donated update on ``device`` (batch copied from the CPU each step)."""
    spec = fdata.get_spec(config["dataset"])
    step = ensemble.member_step(experiment.trainer, 1)
    state = ftrain.to_device(experiment.trainer.init(random.key(0)), device)
    images = torch.randint(0, 256, (models.images_per_update(config), *spec.shape), dtype=torch.uint8)
    if device.type == "cuda":
        images = images.pin_memory()
    times = []
    for i in range(steps + 3):  # three warm-up steps
        sync(device)
        t0 = time.perf_counter()
        batch = images.to(device, non_blocking=True)
        inputs = experiment.trainer.inputs(experiment.train_input(batch, random.key(i)), random.key(10_000 + i))
        state, metrics = step(state, [tuple(inputs)])
        float(metrics["loss"].mean())  # the runner's NaN guard reads the loss every step
        sync(device)
        times.append(time.perf_counter() - t0)
    times = sorted(times[3:])
    return times[len(times) // 2]


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
    args = parser.parse_args(argv)
    device = cfg.resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}); torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    header = f"{'model':<9} {'dataset':<6} {'batch':>5} {'ms/step':>8} {'epoch s':>8} "
    print(header + f"{'CPU ms/step':>11} {'CPU/dev':>7} {'IWAE K=5000 test set, min':>26}")
    for dataset in args.datasets.split(","):
        for model in args.models.split(","):
            experiment, config = build(model, dataset)
            per_update = models.images_per_update(config)
            seconds = step_seconds(experiment, config, device, args.steps)
            epoch = seconds * (TRAIN_IMAGES[dataset] // per_update)
            cpu = step_seconds(experiment, config, torch.device("cpu"), args.cpu_steps) if args.cpu_steps else None
            cpu_text = f"{cpu * 1e3:11.1f} {cpu / seconds:7.1f}" if cpu else f"{'-':>11} {'-':>7}"
            line = f"{model:<9} {dataset:<6} {per_update:>5} {seconds * 1e3:8.2f} {epoch:8.1f} {cpu_text}"
            if experiment.log_likelihood is not None and args.iwae_images:
                iwae = iwae_seconds(experiment, config, device, args.iwae_images)
                line += f" {iwae / args.iwae_images * TEST_IMAGES[dataset] / 60:26.1f}"
            print(line, flush=True)
    if args.inception_images:
        seconds = inception_seconds(device, args.inception_images)
        print(f"Inception pool3 features of {args.inception_images} MNIST-shaped images: {seconds:.1f} s")


if __name__ == "__main__":
    main()
