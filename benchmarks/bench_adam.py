"""Times one Adam step of ``fgm.optim`` against ``torch.optim.Adam``.

Run from the repository root::

    python -m benchmarks.bench_adam [--reps 300] [--warmup 50]

Ours is the functional step ``updates, state = tx.update(grads, state,
params); params = apply_updates(params, updates)``; torch's is ``opt.step()``
with ``.grad`` already set (``foreach=True``, and for reference the default
CPU for-loop implementation). Both run in this process on the same float32
parameter shapes with torch's default thread count. The implementations are
timed in interleaved order, one step each per round, so a noisy neighbour
slows all of them alike; the table reports the median over the rounds.

Where the gap comes from (see fgm/optim.py): torch updates ``exp_avg``,
``exp_avg_sq`` and the parameters in place, allocating one temporary per
step; a pure step must write new moments, new updates and new parameters,
so it touches about eight parameter-sized buffers instead of five and asks
the allocator for four. With few large leaves that memory traffic (and the
page faults of glibc returning freed memory to the OS and faulting it back
in) dominates; with many small leaves the per-kernel overhead does, and
there the functional step has fewer Python-level costs than ``opt.step()``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable

import optree
import torch

from fgm import optim

Shapes = dict  # a nested dict whose leaves are shape tuples


def vae_mlp_shapes() -> Shapes:
    """An MNIST MLP VAE: encoder 784-512-256-(2x32), decoder 32-256-512-784."""

    def dense(n_in: int, n_out: int) -> dict:
        return {"w": (n_out, n_in), "b": (n_out,)}

    return {
        "encoder": {"l0": dense(784, 512), "l1": dense(512, 256), "mu": dense(256, 32), "logvar": dense(256, 32)},
        "decoder": {"l0": dense(32, 256), "l1": dense(256, 512), "l2": dense(512, 784)},
    }


def many_small_shapes(layers: int = 150, width: int = 24) -> Shapes:
    """``layers`` small dense layers: 2 * ``layers`` tensors."""
    return {f"layer{i:03d}": {"w": (width, width), "b": (width,)} for i in range(layers)}


def _is_shape(x) -> bool:
    return isinstance(x, tuple)


def make_tree(shapes: Shapes, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return optree.tree_map(lambda s: torch.randn(s, generator=gen), shapes, is_leaf=_is_shape)


def ours_step(params, grads, lr: float) -> Callable[[], None]:
    tx = optim.adam(lr)
    state = tx.init(params)

    def step() -> None:
        nonlocal params, state
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)

    return step


def torch_step(params, grads, lr: float, foreach: bool) -> Callable[[], None]:
    leaves = [p.clone().requires_grad_(True) for p in optree.tree_leaves(params)]
    for p, g in zip(leaves, optree.tree_leaves(grads), strict=True):
        p.grad = g.clone()
    opt = torch.optim.Adam(leaves, lr=lr, foreach=foreach)
    return opt.step


def time_interleaved(fns: dict[str, Callable[[], None]], reps: int, warmup: int) -> dict[str, float]:
    """Median wall time in ms of each function, run round-robin ``reps`` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    gc.collect()
    gc.disable()
    try:
        for _ in range(reps):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)

    lr = 1e-3
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"median of {args.reps} steps (load average {load})"
    )
    header = (
        f"{'case':<12} {'tensors':>7} {'params':>9} {'ours ms':>8} {'torch ms':>9} {'ours/torch':>10} "
        f"{'torch for-loop ms':>18}"
    )
    print(header)
    print("-" * len(header))
    for case, shapes in [("vae-mlp", vae_mlp_shapes()), ("many-small", many_small_shapes())]:
        params, grads = make_tree(shapes, 0), make_tree(shapes, 1)
        leaves = optree.tree_leaves(params)
        ms = time_interleaved(
            {
                "ours": ours_step(params, grads, lr),
                "torch": torch_step(params, grads, lr, foreach=True),
                "loop": torch_step(params, grads, lr, foreach=False),
            },
            args.reps,
            args.warmup,
        )
        n = sum(p.numel() for p in leaves)
        print(
            f"{case:<12} {len(leaves):>7} {n:>9} {ms['ours']:>8.3f} {ms['torch']:>9.3f} "
            f"{ms['ours'] / ms['torch']:>10.2f} {ms['loop']:>18.3f}"
        )


if __name__ == "__main__":
    main()
