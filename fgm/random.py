"""Explicit, splittable random keys.

Every random draw in ``fgm`` takes a :class:`Key`; no library function reads
or changes torch's global RNG. A key is an immutable 64-bit integer. Keys are
derived with :func:`split` and :func:`fold_in` through the SplitMix64 mixing
function, and a sampler turns a key into a private ``torch.Generator`` seeded
with that integer, so the same key gives the same tensor, bit for bit, on CPU.

Typical use, in the style of JAX/equinox::

    key = fgm.random.key(0)
    key, sub = fgm.random.split(key)
    eps = fgm.random.normal(sub, (batch, dim))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

__all__ = [
    "Key",
    "bernoulli",
    "fold_in",
    "generator",
    "key",
    "normal",
    "permutation",
    "randint",
    "split",
    "uniform",
]

_MASK64 = (1 << 64) - 1


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
      A new :class:`Key`, a deterministic function of ``(k, data)``.
    """
    return Key(_splitmix64(k.value ^ _splitmix64((data & _MASK64) ^ 0xD1B54A32D192ED03)))


def split(k: Key, num: int = 2) -> tuple[Key, ...]:
    """Splits a key into ``num`` new, independent keys.

    Args:
      k: the key to split; do not use it again afterwards.
      num: how many keys, >= 1.

    Returns:
      A tuple of ``num`` keys, e.g. ``key, sub = split(key)``.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    base = _splitmix64(k.value ^ 0x632BE59BD9B4E019)
    return tuple(Key(_splitmix64(base ^ _splitmix64(i + 1))) for i in range(num))


def generator(k: Key, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded from ``k`` (never the global one).

    Args:
      k: the key; its 64-bit value is the seed.
      device: device of the generator (CUDA generators give other bits than CPU ones).

    Returns:
      A new generator, for any ``torch`` sampler's ``generator=`` argument.
    """
    g = torch.Generator(device=device)
    g.manual_seed(k.value)
    return g


def normal(
    k: Key,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal samples of the given shape.

    Args:
      k: the key.
      shape: output shape, e.g. ``(batch, dim)``.
      dtype: floating dtype.
      device: output device.

    Returns:
      ``[*shape]`` draws from ``N(0, 1)``.
    """
    return torch.randn(tuple(shape), generator=generator(k, device), dtype=dtype, device=device)


def uniform(
    k: Key,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniform samples on ``[0, 1)`` of the given shape.

    Args:
      k: the key.
      shape: output shape.
      dtype: floating dtype.
      device: output device.

    Returns:
      ``[*shape]`` draws from ``U[0, 1)``.
    """
    return torch.rand(tuple(shape), generator=generator(k, device), dtype=dtype, device=device)


def bernoulli(k: Key, probs: torch.Tensor) -> torch.Tensor:
    """Bernoulli samples with success probabilities ``probs``.

    Args:
      k: the key.
      probs: ``[...]`` probabilities in ``[0, 1]``.

    Returns:
      ``[...]`` (the shape of ``probs``) of 0./1. in ``probs.dtype``, on ``probs.device``.
    """
    u = uniform(k, probs.shape, dtype=probs.dtype, device=probs.device)
    return (u < probs).to(probs.dtype)


def permutation(k: Key, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random permutation of ``range(n)``.

    Args:
      k: the key.
      n: length.
      device: output device (and generator device).

    Returns:
      ``int64 [n]``.
    """
    return torch.randperm(n, generator=generator(k, device), device=device)


def randint(k: Key, low: int, high: int, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform integers in ``[low, high)``.

    Args:
      k: the key.
      low: smallest value.
      high: one past the largest value.
      shape: output shape.
      device: output device.

    Returns:
      ``int64 [*shape]``.
    """
    return torch.randint(low, high, tuple(shape), generator=generator(k, device), device=device)
