"""Explicit, splittable random keys and a counter-based generator.

Every random draw in ``fgm`` takes a :class:`Key`; no library function reads
or changes torch's global RNG. A key is an immutable 64-bit integer. Keys are
derived with :func:`split` and :func:`fold_in` through the SplitMix64 mixing
function. Samplers turn a key into numbers with **Philox-4x32-10** (Salmon et
al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the generator of
Random123, JAX and cuRAND), written over torch integer ops:

* the key's 64 bits are the Philox key (low word, high word), so distinct keys
  give distinct streams (all 64 bits count);
* the 128-bit counter is ``(block, 0, 0, 0)``: block ``b`` yields the stream's
  words ``4b .. 4b+3``, and a draw of ``n`` numbers uses the first words of the
  stream. A draw therefore depends on the key and on the flat position only:
  ``uniform(k, (a, b)) == uniform(k, (a * b,)).reshape(a, b)`` and
  ``uniform(k, (m,)) == uniform(k, (n,))[:m]`` for ``m <= n`` (same for every
  sampler, per dtype). Samplers called with the same key share the stream
  (``uniform(k, ...)`` and ``normal(k, ...)`` are dependent): split first;
* the arithmetic is the same on every device (exact integer ops on tensors
  created on the requested device), so the raw words, uniforms, Bernoulli
  draws, permutations and integers are identical bit for bit on CPU and GPU;
  normals go through ``log``/``cos``/``sin``, whose CUDA and CPU versions may
  differ in the last bits.

Typical use, in the style of JAX/equinox::

    key = fgm.random.key(0)
    key, sub = fgm.random.split(key)
    eps = fgm.random.normal(sub, (batch, dim))
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence

import torch

from fgm import _native

__all__ = [
    "Key",
    "bernoulli",
    "bits",
    "fold_in",
    "generator",
    "key",
    "normal",
    "permutation",
    "philox4x32",
    "randint",
    "split",
    "uniform",
]

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1

# Philox-4x32 constants (Random123): round multipliers and the Weyl key increments.
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_ROUNDS = 10
# One draw may use at most 2**32 blocks: the block index fills the counter's first word.
_MAX_WORDS = 4 << 32
_SIGNIFICAND_BITS = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}


def _splitmix64(x: int) -> int:
    """One SplitMix64 step: a bijective, well-mixing map on 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclasses.dataclass(frozen=True)
class Key:
    """An immutable random key: a 64-bit unsigned integer.

    Build one with :func:`key`; derive new ones with :func:`split` or
    :func:`fold_in`. Using the same key twice gives the same numbers twice,
    which is the point: split before every independent use.
    """

    value: int

    def __post_init__(self):
        if not isinstance(self.value, int) or not 0 <= self.value <= _MASK64:
            raise ValueError(f"Key value must be an int in [0, 2**64), got {self.value!r}")


def key(seed: int) -> Key:
    """Creates a key from an integer seed.

    Args:
      seed: any Python int (reduced mod 2**64, then mixed by SplitMix64).

    Returns:
      A :class:`Key`; the same seed always gives the same key.

    Raises:
      TypeError: ``seed`` is not an int.
    """
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return Key(_splitmix64(seed & _MASK64))


def fold_in(k: Key, data: int) -> Key:
    """Derives a new key from ``k`` and an integer (e.g. a step or member index).

    Args:
      k: the parent key.
      data: any int; different values give independent keys.

    Returns:
      A new :class:`Key`, a deterministic function of ``(k, data)``:
      ``mix(k ^ mix((data mod 2**64) ^ 0xD1B54A32D192ED03))``, ``mix`` one
      SplitMix64 output (the tests pin it: every run's numbers follow from it).
    """
    return Key(_splitmix64(k.value ^ _splitmix64((data & _MASK64) ^ 0xD1B54A32D192ED03)))


def split(k: Key, num: int = 2) -> tuple[Key, ...]:
    """Splits a key into ``num`` new, independent keys.

    ``split(k, n)[i]`` does not depend on ``n`` (``split(k, 2)[0] ==
    split(k, 3)[0]``): give each purpose its own parent key rather than
    relying on ``num`` to separate them.

    Args:
      k: the key to split; do not use it again afterwards.
      num: how many keys, >= 1.

    Returns:
      A tuple of ``num`` keys, e.g. ``key, sub = split(key)``: key ``i`` is
      ``mix(mix(k ^ 0x632BE59BD9B4E019) ^ mix(i + 1))`` (pinned by the tests).
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    base = _splitmix64(k.value ^ 0x632BE59BD9B4E019)
    return tuple(Key(_splitmix64(base ^ _splitmix64(i + 1))) for i in range(num))


# --------------------------------------------------------------------------- Philox-4x32-10


def _mulhilo(a, m: int):
    """``(hi, lo)`` 32-bit words of ``a * m`` for ``a`` in [0, 2**32) (an int or an int64 tensor).

    The int64 product of two 32-bit words wraps modulo 2**64 (two's complement,
    on every torch backend), which keeps all 64 bits of the unsigned product;
    the arithmetic shift sign-extends, so ``hi`` is masked back to 32 bits.
    """
    p = a * m
    if isinstance(p, int):
        return p >> 32, p & _MASK32
    return (p >> 32) & _MASK32, p & _MASK32


def philox4x32(counter: Sequence, k: tuple[int, int], rounds: int = _ROUNDS) -> tuple:
    """The Philox-4x32 bijection of Random123, on Python ints or int64 tensors.

    Each of the four counter words is an int or an int64 tensor (broadcastable
    to the others) holding values in [0, 2**32); constant words stay Python
    ints until a round mixes them with a tensor, which saves work in the first
    rounds when only one word varies.

    Args:
      counter: ``(c0, c1, c2, c3)``, 32-bit words.
      k: ``(k0, k1)``, the 32-bit key words.
      rounds: 10 for Philox-4x32-10.

    Returns:
      ``(x0, x1, x2, x3)``: the output words, ints or int64 tensors in [0, 2**32).
    """
    x0, x1, x2, x3 = counter
    k0, k1 = k
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(x0, _M0)
        hi1, lo1 = _mulhilo(x2, _M1)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return x0, x1, x2, x3


def _philox_blocks(k: Key, num_blocks: int, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """The four output lanes of blocks ``0 .. num_blocks - 1``: int64 ``[num_blocks]`` each, in [0, 2**32).

    A fast path of :func:`philox4x32` for the counter ``(block, 0, 0, 0)``
    (the tests hold them equal): the same maths with the first two rounds
    partly on constants, ops writing into six buffers allocated once, and
    the 32-bit masks of the low product words left to the next round's mask.
    """
    k0, k1 = k.value & _MASK32, k.value >> 32
    x0 = torch.arange(num_blocks, dtype=torch.int64, device=device)
    x2 = torch.empty_like(x0)
    products0 = (torch.empty_like(x0), torch.empty_like(x0))  # ping-pong: the last one is x3
    products1 = (torch.empty_like(x0), torch.empty_like(x0))  # the last one is x1
    # Round 1: x1 = x2 = x3 = 0, so the second product is 0.
    p0 = torch.mul(x0, _M0, out=products0[0])
    torch.bitwise_right_shift(p0, 32, out=x2).bitwise_and_(_MASK32).bitwise_xor_(k1)
    c0, x3 = k0, p0  # x0' = k0, x1' = 0: still constants
    # Round 2: x0 and x1 are constants.
    k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    hi0, lo0 = _mulhilo(c0, _M0)
    p1 = torch.mul(x2, _M1, out=products1[0])
    torch.bitwise_right_shift(p1, 32, out=x0).bitwise_xor_(k0).bitwise_and_(_MASK32)
    torch.bitwise_xor(x3, hi0 ^ k1, out=x2).bitwise_and_(_MASK32)
    x1, x3 = p1, lo0
    for r in range(2, _ROUNDS):
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        p0 = torch.mul(x0, _M0, out=products0[(r + 1) % 2])
        p1 = torch.mul(x2, _M1, out=products1[(r + 1) % 2])
        # the masks also drop the high halves of the unmasked x1 and x3
        torch.bitwise_right_shift(p1, 32, out=x0).bitwise_xor_(x1).bitwise_xor_(k0).bitwise_and_(_MASK32)
        torch.bitwise_right_shift(p0, 32, out=x2).bitwise_xor_(x3).bitwise_xor_(k1).bitwise_and_(_MASK32)
        x1, x3 = p1, p0
    return x0, x1 & _MASK32, x2, x3 & _MASK32


def _native_on(device: torch.device | str):
    """The compiled Philox kernel for draws on the CPU (:mod:`fgm._native`), else ``None`` (torch's integer ops)."""
    return _native.library() if torch.device(device).type == "cpu" else None


def _philox_stream(key_words: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """``int64 [4 * num_blocks]``: the stream's words, with the key's 32-bit words in a tensor.

    The arithmetic of :func:`philox4x32` for the counters ``(block, 0, 0,
    0)``; on a GPU :func:`_fused_on` compiles it into one kernel, and a key
    that lives in a tensor lets that kernel serve every key without
    recompiling. ``key_words`` also holds the two round multipliers: read
    from memory, they stay 64-bit integers in the generated code (written as
    constants, the compiler folds the first product into a 32-bit index
    expression, where they overflow).

    Args:
      key_words: ``int64 [4]``: ``k0, k1, M0, M1``.
      num_blocks: blocks of four words.
    """
    k0, k1, m0, m1 = key_words.unbind()
    x0 = torch.arange(num_blocks, dtype=torch.int64, device=key_words.device)
    x1 = x2 = x3 = torch.zeros_like(x0)
    for r in range(_ROUNDS):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        p0, p1 = x0 * m0, x2 * m1
        x0, x1, x2, x3 = ((p1 >> 32) & _MASK32) ^ x1 ^ k0, p1 & _MASK32, ((p0 >> 32) & _MASK32) ^ x3 ^ k1, p0 & _MASK32
    return torch.stack([x0, x1, x2, x3], dim=1).view(-1)


@functools.cache
def _fused_stream():
    return torch.compile(_philox_stream, dynamic=True, fullgraph=True)


def _fused_on(device: torch.device | str):
    """The compiled :func:`_philox_stream` for draws on a CUDA device, else ``None`` (torch's integer ops).

    ``FGM_NATIVE=0`` turns it off with the C kernel. A compiler that fails
    (no Triton, say) is reported once and the torch ops take over.
    """
    if torch.device(device).type != "cuda" or not _native.enabled() or _FUSED_FAILED:
        return None
    return _guarded_stream


_FUSED_FAILED: list[str] = []


def _guarded_stream(key_words: torch.Tensor, num_blocks: int) -> torch.Tensor:
    try:
        return _fused_stream()(key_words, num_blocks)
    except Exception as error:  # noqa: BLE001 - any compiler failure: fall back to the same words, slower
        _FUSED_FAILED.append(repr(error))
        warnings.warn(f"fgm.random: the fused GPU Philox kernel failed ({error!r}); using torch's ops", stacklevel=3)
        return _philox_stream(key_words, num_blocks)


def _num_blocks(num_words: int) -> int:
    if num_words > _MAX_WORDS:
        raise ValueError(
            f"one draw can use at most 2**34 32-bit words, asked for {num_words}; draw in pieces from fold_in(key, i)"
        )
    return -(-num_words // 4)


def bits(k: Key, num_words: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The first ``num_words`` 32-bit words of the key's Philox-4x32-10 stream.

    Word ``w`` is output word ``w % 4`` of Philox-4x32-10 with key
    ``(k.value mod 2**32, k.value >> 32)`` and counter ``(w // 4, 0, 0, 0)``.

    Args:
      k: the key.
      num_words: how many words, ``<= 2**34``.
      device: output device; the words are computed there.

    Returns:
      ``int64 [num_words]`` in ``[0, 2**32)``, the same on every device.
    """
    if num_words < 0:
        raise ValueError(f"num_words must be >= 0, got {num_words}")
    num_blocks = _num_blocks(num_words)
    native = _native_on(device)
    if native is not None:  # the same words from one C loop (fgm._native)
        return _native.philox_words(native, k.value, num_words)
    fused = _fused_on(device)
    if fused is not None:  # the same words from one generated GPU kernel
        key_words = torch.tensor([k.value & _MASK32, k.value >> 32, _M0, _M1], dtype=torch.int64)
        # a pageable host-to-device copy of 32 bytes is staged at once: no wait for the device
        return fused(key_words.to(device, non_blocking=True), num_blocks)[:num_words]
    lanes = _philox_blocks(k, num_blocks, device)
    return torch.stack(lanes, dim=1).view(-1)[:num_words]


def _float_bits(dtype: torch.dtype) -> int:
    """Random bits per uniform of ``dtype``: its significand width (24 for float32)."""
    if dtype not in _SIGNIFICAND_BITS:
        raise TypeError(f"expected one of {', '.join(map(str, _SIGNIFICAND_BITS))}, got {dtype}")
    return _SIGNIFICAND_BITS[dtype]


def uniform(
    k: Key,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniform samples on ``[0, 1)`` of the given shape.

    Each value is ``m / 2**b`` with ``m`` a uniform integer of ``b`` bits, ``b``
    the dtype's significand width, so every value is exact and ``1`` is never
    drawn: float32 takes the top 24 bits of one stream word; float64 takes
    27 + 26 bits of two words (53 bits); float16 and bfloat16 the top 11 and 8
    bits of one word.

    Args:
      k: the key.
      shape: output shape.
      dtype: floating dtype.
      device: output device.

    Returns:
      ``[*shape]`` draws from ``U[0, 1)``.
    """
    shape = tuple(shape)
    b = _float_bits(dtype)
    n = math.prod(shape)
    native = _native_on(device)
    if native is not None:  # the same values from one C loop (fgm._native)
        _num_blocks((2 if b > 32 else 1) * n)
        return _native.philox_uniform(native, k.value, n, b).to(dtype).view(shape)
    if b > 32:  # float64: two words per value
        w = bits(k, 2 * n, device).view(n, 2)
        m = (w[:, 0] >> 5) * (1 << 26) + (w[:, 1] >> 6)
        return (m.to(torch.float64) * 2.0**-53).to(dtype).view(shape)
    m = bits(k, n, device) >> (32 - b)
    return (m.to(torch.float32) * 2.0**-b).to(dtype).view(shape)


def normal(
    k: Key,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal samples of the given shape (Box–Muller).

    Pair ``j`` of outputs (positions ``2j``, ``2j + 1``) comes from two
    uniforms ``u1`` in ``(0, 1]`` and ``u2`` in ``[0, 1)`` (uniforms ``2j`` and
    ``2j + 1`` of the key's stream, as :func:`uniform` makes them):
    ``r = sqrt(-2 log u1)``, outputs ``r cos(2π u2)`` and ``r sin(2π u2)``.
    ``u1 > 0``, so no ``log(0)``; the largest ``|x|`` is ``sqrt(2 · 24 ln 2) =
    5.8`` in float32 (a tail of probability 1e-8 is cut) and 8.6 in float64.
    float16/bfloat16 are computed in float32 and rounded.

    Args:
      k: the key.
      shape: output shape, e.g. ``(batch, dim)``.
      dtype: floating dtype.
      device: output device.

    Returns:
      ``[*shape]`` draws from ``N(0, 1)``.
    """
    shape = tuple(shape)
    _float_bits(dtype)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    n = math.prod(shape)
    pairs = -(-n // 2)
    u = uniform(k, (pairs, 2), work, device)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))  # log(1 - u), 1 - u in (0, 1]
    angle = (2 * math.pi) * u[:, 1]
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1).view(-1)
    return z[:n].to(dtype).view(shape)


def bernoulli(k: Key, probs: torch.Tensor) -> torch.Tensor:
    """Bernoulli samples with success probabilities ``probs``: ``u < probs``, ``u`` from :func:`uniform`.

    ``u`` is float32 (float64 for float64 ``probs``), whatever the dtype of
    ``probs``, so half-precision probabilities keep 24-bit resolution.

    Args:
      k: the key.
      probs: ``[...]`` probabilities in ``[0, 1]``.

    Returns:
      ``[...]`` (the shape of ``probs``) of 0./1. in ``probs.dtype``, on ``probs.device``.
    """
    native = _native_on(probs.device)
    if native is not None and probs.dtype == torch.float32:  # draw and compare in one C loop (fgm._native)
        _num_blocks(probs.numel())
        return _native.philox_bernoulli(native, k.value, probs)
    work = torch.float64 if probs.dtype == torch.float64 else torch.float32
    u = uniform(k, probs.shape, dtype=work, device=probs.device)
    return (u < probs).to(probs.dtype)


def _uint63(k: Key, n: int, device) -> torch.Tensor:
    """``n`` uniform 63-bit integers (int64, non-negative) from two stream words each."""
    w = bits(k, 2 * n, device).view(n, 2)
    return ((w[:, 0] & 0x7FFFFFFF) << 32) | w[:, 1]


def permutation(k: Key, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random permutation of ``range(n)``: the stable argsort of ``n`` random 63-bit integers.

    Every order is equally likely up to ties, which need two of ``n`` 63-bit
    draws to coincide: probability below ``n² / 2**64`` (2e-10 for the 55,000
    MNIST training images); a tie keeps index order (the sort is stable).

    Args:
      k: the key.
      n: length.
      device: output device.

    Returns:
      ``int64 [n]``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return torch.argsort(_uint63(k, n, device), stable=True)


def randint(k: Key, low: int, high: int, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform integers in ``[low, high)``: ``low + (v mod (high - low))``, ``v`` a random 63-bit integer.

    The modulo is biased by at most ``(high - low) / 2**63`` relative per value
    (3e-17 for 256 values): each value has probability ``floor(2**63 / r)`` or
    ``ceil(2**63 / r)`` over ``2**63``, ``r = high - low``.

    Args:
      k: the key.
      low: smallest value.
      high: one past the largest value; ``high - low <= 2**63``.
      shape: output shape.
      device: output device.

    Returns:
      ``int64 [*shape]``.
    """
    r = high - low
    if r <= 0:
        raise ValueError(f"randint needs low < high, got [{low}, {high})")
    if r > 1 << 63 or low < -(1 << 63) or high > 1 << 63:
        raise ValueError(f"randint: [{low}, {high}) does not fit int64 with a range <= 2**63")
    shape = tuple(shape)
    v = _uint63(k, math.prod(shape), device)
    if r < 1 << 63:
        v = torch.remainder(v, r)
    return (v + low).view(shape)


def generator(k: Key, device: torch.device | str = "cpu") -> torch.Generator:
    """Legacy: a fresh ``torch.Generator`` seeded from ``k`` (never the global one).

    No sampler of ``fgm`` uses it (they use Philox, above). Its one user is
    :func:`fgm.data.split_indices`, whose train/validation split is part of
    the dataset's definition and keeps the permutation it had before the
    samplers moved to Philox; it also serves code that needs a ``generator=``
    argument for a torch sampler fgm does not wrap. Its draws differ by device, and the CPU
    generator (mt19937) keeps only the low 32 bits of the seed, so keys that
    differ only in their high 32 bits give the same generator.

    Args:
      k: the key; its 64-bit value is the seed.
      device: device of the generator.

    Returns:
      A new generator, for any ``torch`` sampler's ``generator=`` argument.
    """
    g = torch.Generator(device=device)
    g.manual_seed(k.value)
    return g
