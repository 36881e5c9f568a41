"""Times small elementwise ops and the flow prior with 1 and 2 intra-op threads.

    python -m benchmarks.bench_small_ops

Why: ``vae_flow``'s prior works on ``[batch, latent] = [128, 32]`` tensors.
PyTorch splits unary math ops (``exp``, ``tanh``, ...) across threads from a
small size on, and on a 2-core machine the split can cost more than the work.
Each configuration runs in a fresh subprocess (the thread count is set once).
"""

from __future__ import annotations

import subprocess
import sys

import torch

CHILD = r"""
import statistics, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from fgm import bijectors, random
from fgm.models import vae
def median_ms(fn, n=300):
    for _ in range(20): fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3
x = torch.randn(128, 32)
flow = bijectors.realnvp(32, 4, (128,), identity_init=False)
params = flow.init(random.key(0))
prior = vae.flow_prior(flow)
print(median_ms(lambda: torch.tanh(x)), median_ms(lambda: torch.exp(x)), median_ms(lambda: prior.log_prob(params, x)))
"""


def main():
    print(f"torch {torch.__version__}; [128, 32] float32 tensors; median ms over 300 calls")
    print(f"{'threads':>7} {'tanh':>9} {'exp':>9} {'flow log_prob':>14}")
    for threads in (1, 2):
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads)], capture_output=True, text=True, check=True)
        tanh, exp, log_prob = map(float, out.stdout.split())
        print(f"{threads:>7} {tanh:>9.4f} {exp:>9.4f} {log_prob:>14.3f}")


if __name__ == "__main__":
    main()
