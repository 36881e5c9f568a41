"""Times the IWAE test NLL: ``fgm.metrics.nll`` against the per-data-point loop.

Run from the repository root::

    python -m benchmarks.bench_nll [--num-samples 5000] [--points 100] [--loop-points 10]

* **fgm**: :func:`fgm.metrics.nll.iwae_log_likelihood` on batches of 100 test
  images: the encoder runs once per image, the ``K`` decoder passes are
  batched with ``torch.func.vmap`` over chunks of 100 samples, float64
  running log-sum-exp (this is what ``python -m experiments.run`` does).
* **loop**: the straightforward estimator found in many VAE repositories: for
  each test image, repeat it ``K`` times, run the *whole* model (encoder and
  decoder) on the copies in chunks, then ``logsumexp`` the ``K`` log-weights.

Both use the MNIST ``vae_std`` architecture (784-512-256-32 MLP). Timings are
per test image; the full-test-set figure (10,000 images) is extrapolated from
``--points``/``--loop-points`` images, which the output states. The two
estimators are also checked to agree given the *same* noise.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from experiments import models
from fgm import data as fdata
from fgm import distributions as D
from fgm import random
from fgm.metrics import nll as nll_lib
from fgm.models import vae as vae_lib


def loop_log_likelihood(vae, params, x: torch.Tensor, eps: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Per-data-point IWAE: ``x [B, ...]``, ``eps [K, B, d]`` -> ``[B]`` (float64)."""
    out = []
    num_samples = eps.shape[0]
    with torch.no_grad():
        for i in range(x.shape[0]):
            log_w = []
            for start in range(0, num_samples, chunk_size):
                e = eps[start : start + chunk_size, i]
                xs = x[i : i + 1].expand(e.shape[0], *x.shape[1:])
                mean, log_var = vae.encode(params["encoder"], xs)  # the encoder runs once per copy
                z = vae_lib.reparameterize(mean, log_var, e)
                log_lik = vae.likelihood.log_prob(vae.decode(params["decoder"], z), xs)
                log_w.append(
                    log_lik + vae.prior.log_prob(params["prior"], z) - D.diag_normal_log_prob(z, mean, log_var)
                )
            log_w = torch.cat(log_w).double()
            out.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.stack(out)


def cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 GEMM rate in FLOP/s: the best of ``repeats`` ``n × n @ n × n`` products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def iwae_flops(vae, params, k: int) -> float:
    """FLOPs of the linear layers per image and importance sample: the decoder's, plus the encoder's once per image."""

    def linear_flops(tree) -> int:
        return sum(2 * v.numel() for name, v in tree.items() if name.endswith("weight") and v.ndim == 2)

    return linear_flops(params["decoder"]) + linear_flops(params["encoder"]) / k


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=5000, help="K")
    parser.add_argument("--points", type=int, default=100, help="test images timed for fgm")
    parser.add_argument("--loop-points", type=int, default=10, help="test images timed for the loop")
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--compile", action="store_true", help="also time iwae_log_likelihood(compile=True)")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n×n×n GEMM that measures the peak")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)

    spec = fdata.get_spec("mnist")
    config = models.defaults("vae_std", "mnist", "default")
    vae = models.build_vae(spec, config)
    params = vae_lib.init(vae, random.key(0))
    test = fdata.to_eval_input("mnist", fdata.load_images("mnist", "test", args.data_dir))
    k, chunk = args.num_samples, args.chunk_size

    # Agreement on identical noise (small K, a few points).
    x = test[:4]
    key = random.key(1)
    ours = nll_lib.iwae_log_likelihood(vae, params, x, key, num_samples=250, chunk_size=chunk)
    eps = torch.cat(
        [
            random.normal(random.fold_in(key, c), (min(chunk, 250 - s), 4, vae.latent_dim))
            for c, s in enumerate(range(0, 250, chunk))
        ]
    )
    theirs = loop_log_likelihood(vae, params, x, eps, chunk)
    diff = float((ours - theirs).abs().max())
    print(f"agreement on identical noise (K=250, 4 images): max |diff| = {diff:.2e} nats")
    if not diff < 1e-3:
        raise RuntimeError(f"the two estimators disagree on identical noise by {diff:.2e} nats")

    x = test[: args.points]

    def time_fgm(compile: bool) -> float:
        if compile:  # compile outside the timing, and check it against the eager estimate on the same noise
            eager = nll_lib.iwae_log_likelihood(vae, params, test[:100], key, 250, chunk)
            compiled = nll_lib.iwae_log_likelihood(vae, params, test[:100], key, 250, chunk, compile=True)
            diff = float((compiled - eager).abs().max())
            print(f"compiled vs eager (K=250, 100 images, same noise): max |diff| = {diff:.2e} nats")
        started = time.perf_counter()
        for i, start in enumerate(range(0, x.shape[0], 100)):
            nll_lib.iwae_log_likelihood(vae, params, x[start : start + 100], random.fold_in(key, i), k, chunk, compile)
        return (time.perf_counter() - started) / x.shape[0]

    ours_per_image = time_fgm(False)
    compiled_per_image = time_fgm(True) if args.compile else None

    x = test[: args.loop_points]
    eps = random.normal(key, (k, x.shape[0], vae.latent_dim))
    started = time.perf_counter()
    loop_log_likelihood(vae, params, x, eps, chunk)
    loop_per_image = (time.perf_counter() - started) / x.shape[0]

    n_test = 10_000
    peak = matmul_peak(args.peak_size)
    flops = iwae_flops(vae, params, k)
    print(f"K={k}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu_capability()}")
    print(
        f"float32 matmul peak ({args.peak_size}³ GEMM, this run): {peak / 1e9:.0f} GFLOP/s; "
        f"IWAE: {flops / 1e6:.2f} MFLOP per image and sample (linear layers), "
        f"{flops * k * n_test / 1e12:.1f} TFLOP for the test set, {flops * k * n_test / peak / 60:.1f} min at peak"
    )
    print(f"{'method':<8} {'images timed':>12} {'ms / image':>11} {'10k test set (extrapolated)':>28}")
    rows = [("fgm", ours_per_image, args.points), ("loop", loop_per_image, args.loop_points)]
    if compiled_per_image is not None:
        rows.insert(1, ("fgm compile", compiled_per_image, args.points))
    for name, per, n in rows:
        print(f"{name:<12} {n:>12} {1e3 * per:>11.1f} {per * n_test / 60:>24.1f} min")
    print(f"ratio fgm / loop: {ours_per_image / loop_per_image:.2f}")
    for name, per, _ in rows[:-1]:
        print(f"{name} reaches {flops * k / per / peak:.1%} of the peak")


if __name__ == "__main__":
    main()
