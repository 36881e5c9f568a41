"""Philox-4x32-10 as a small C kernel: the same words as :mod:`fgm.random`'s torch ops, in one pass.

The torch version in :mod:`fgm.random` runs the ten rounds as ~60 integer
passes over ``[num_blocks]`` int64 tensors; on a CPU that costs more than the
rest of a ``vae_std`` step's input pipeline (BENCHMARKS.md). This module
compiles the same arithmetic as one C loop (``gcc -O3``, built once per
machine and cached) and calls it through ``ctypes`` on CPU tensors. Integer
arithmetic and the exact float conversions (``m * 2**-b`` for ``m < 2**b``)
give the same bits as the torch ops; the tests hold the two equal over keys
and sizes.

No compiler, a failed build, or ``FGM_NATIVE=0``: :func:`library` returns
``None`` and :mod:`fgm.random` keeps its torch ops (the same numbers, slower).
The cache lives in ``$FGM_CACHE_DIR/native`` (default ``~/.cache/fgm/native``),
keyed by the source, the compiler command and the CPU's feature flags.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = ["enabled", "library", "philox_bernoulli", "philox_uniform", "philox_words"]

SOURCE = r"""
#include <stdint.h>

#define M0 0xD2511F53u
#define M1 0xCD9E8D57u
#define W0 0x9E3779B9u
#define W1 0xBB67AE85u

/* Philox-4x32-10 of the counter (block, 0, 0, 0) under the key (k0, k1), as fgm.random.philox4x32. */
static inline void philox_block(uint32_t block, uint32_t k0, uint32_t k1, uint32_t out[4]) {
    uint32_t x0 = block, x1 = 0, x2 = 0, x3 = 0;
    for (int r = 0; r < 10; r++) {
        if (r) { k0 += W0; k1 += W1; }
        uint64_t p0 = (uint64_t)x0 * M0, p1 = (uint64_t)x2 * M1;
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0, y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x1 = (uint32_t)p1; x3 = (uint32_t)p0; x0 = y0; x2 = y2;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
}

/* Words 0 .. n-1 of the stream: word w is lane w % 4 of block w / 4. */
void fgm_philox_words(uint64_t key, int64_t n, int64_t *out) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32), w[4];
    int64_t full = n / 4;
    for (int64_t b = 0; b < full; b++) {
        philox_block((uint32_t)b, k0, k1, w);
        for (int j = 0; j < 4; j++) out[4 * b + j] = w[j];
    }
    if (full * 4 < n) {
        philox_block((uint32_t)full, k0, k1, w);
        for (int64_t i = full * 4; i < n; i++) out[i] = w[i - full * 4];
    }
}

/* Uniforms on [0, 1) with b <= 24 bits, one word each: (word >> (32 - b)) * 2**-b, exact in float32. */
void fgm_philox_uniform_f32(uint64_t key, int64_t n, int b, float *out) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32), w[4];
    float scale = 1.0f / (float)(1u << b);
    int shift = 32 - b;
    int64_t full = n / 4;
    for (int64_t blk = 0; blk < full; blk++) {
        philox_block((uint32_t)blk, k0, k1, w);
        for (int j = 0; j < 4; j++) out[4 * blk + j] = (float)(w[j] >> shift) * scale;
    }
    if (full * 4 < n) {
        philox_block((uint32_t)full, k0, k1, w);
        for (int64_t i = full * 4; i < n; i++) out[i] = (float)(w[i - full * 4] >> shift) * scale;
    }
}

/* Bernoulli draws in float32: out[i] = u_i < probs[i] (1 or 0), u_i the 24-bit uniform above, in one pass. */
void fgm_philox_bernoulli_f32(uint64_t key, int64_t n, const float *probs, float *out) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32), w[4];
    const float scale = 1.0f / 16777216.0f;  /* 2**-24 */
    int64_t full = n / 4;
    for (int64_t blk = 0; blk < full; blk++) {
        philox_block((uint32_t)blk, k0, k1, w);
        for (int j = 0; j < 4; j++) out[4 * blk + j] = (float)(w[j] >> 8) * scale < probs[4 * blk + j] ? 1.0f : 0.0f;
    }
    if (full * 4 < n) {
        philox_block((uint32_t)full, k0, k1, w);
        for (int64_t i = full * 4; i < n; i++) out[i] = (float)(w[i - full * 4] >> 8) * scale < probs[i] ? 1.0f : 0.0f;
    }
}

/* Uniforms on [0, 1) with 53 bits from words 2i, 2i+1: ((w0 >> 5) * 2**26 + (w1 >> 6)) * 2**-53, exact. */
void fgm_philox_uniform_f64(uint64_t key, int64_t n, double *out) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32), w[4];
    const double scale = 1.0 / 9007199254740992.0;  /* 2**-53 */
    int64_t pairs = 2 * n;
    for (int64_t blk = 0; 4 * blk < pairs; blk++) {
        philox_block((uint32_t)blk, k0, k1, w);
        for (int j = 0; j < 2; j++) {
            int64_t i = 2 * blk + j;
            if (i < n) out[i] = (double)(((uint64_t)(w[2 * j] >> 5) << 26) + (w[2 * j + 1] >> 6)) * scale;
        }
    }
}
"""
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-std=c99"]


def _cpu_features() -> str:
    """The CPU's feature flags: a library built with ``-march=native`` runs only where they match."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    return Path(os.environ.get("FGM_CACHE_DIR") or Path.home() / ".cache" / "fgm") / "native"


def _build(compiler: str) -> Path:
    """Compiles :data:`SOURCE` into the cache (atomically: concurrent builders agree) and returns its path."""
    digest = hashlib.sha256("\0".join([SOURCE, compiler, *_FLAGS, _cpu_features()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"philox-{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        source = Path(scratch) / "philox.c"
        source.write_text(SOURCE)
        built = Path(scratch) / target.name
        subprocess.run([compiler, *_FLAGS, str(source), "-o", str(built)], check=True, capture_output=True, timeout=120)
        os.replace(built, target)
    return target


def enabled() -> bool:
    """False when ``FGM_NATIVE=0`` turns the compiled kernels off (this C loop, and :mod:`fgm.random`'s GPU kernel)."""
    return os.environ.get("FGM_NATIVE", "1") != "0"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, or ``None`` (``FGM_NATIVE=0``, no C compiler, or a failed build)."""
    if os.environ.get("FGM_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.fgm_philox_words.argtypes = [ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p]
    lib.fgm_philox_uniform_f32.argtypes = [ctypes.c_uint64, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p]
    lib.fgm_philox_uniform_f64.argtypes = [ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p]
    lib.fgm_philox_bernoulli_f32.argtypes = [ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    kernels = (lib.fgm_philox_words, lib.fgm_philox_uniform_f32, lib.fgm_philox_uniform_f64)
    for fn in (*kernels, lib.fgm_philox_bernoulli_f32):
        fn.restype = None
    return lib


def philox_words(lib: ctypes.CDLL, key: int, n: int) -> torch.Tensor:
    """``int64 [n]``: words ``0 .. n - 1`` of the key's stream, as :func:`fgm.random.bits` on the CPU."""
    out = torch.empty(n, dtype=torch.int64)
    if n:
        lib.fgm_philox_words(key, n, out.data_ptr())
    return out


def philox_uniform(lib: ctypes.CDLL, key: int, n: int, significand_bits: int) -> torch.Tensor:
    """``[n]`` uniforms as :func:`fgm.random.uniform` makes them: float32 for ``b <= 24`` bits, else float64."""
    if significand_bits > 32:
        out = torch.empty(n, dtype=torch.float64)
        if n:
            lib.fgm_philox_uniform_f64(key, n, out.data_ptr())
        return out
    out = torch.empty(n, dtype=torch.float32)
    if n:
        lib.fgm_philox_uniform_f32(key, n, significand_bits, out.data_ptr())
    return out


def philox_bernoulli(lib: ctypes.CDLL, key: int, probs: torch.Tensor) -> torch.Tensor:
    """``(uniform < probs)`` as :func:`fgm.random.bernoulli` makes it, for float32 ``probs`` on the CPU."""
    probs = probs.contiguous()
    out = torch.empty_like(probs)
    if probs.numel():
        lib.fgm_philox_bernoulli_f32(key, probs.numel(), probs.data_ptr(), out.data_ptr())
    return out
