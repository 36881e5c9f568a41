"""The compiled Philox kernel (fgm._native) against fgm.random's torch integer ops: the same bits."""

import contextlib
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgm import _native, random

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@contextlib.contextmanager
def torch_ops_only():
    """fgm.random with its torch integer ops on the CPU too (the kernel switched off)."""
    original = random._native_on
    random._native_on = lambda device: None
    try:
        yield
    finally:
        random._native_on = original


def test_the_kernel_builds_where_there_is_a_compiler():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: fgm.random uses its torch ops")
    assert _native.library() is not None  # else every equality below compares the torch ops with themselves


@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=3000),
    st.sampled_from(DTYPES),
)
@settings(max_examples=60, deadline=None)
def test_kernel_draws_equal_the_torch_ops(value, n, dtype):
    k = random.Key(value)
    fast = (random.bits(k, n), random.uniform(k, (n,), dtype), random.normal(k, (n,), dtype))
    fast_bernoulli = random.bernoulli(k, torch.linspace(0, 1, n, dtype=dtype))
    with torch_ops_only():
        slow = (random.bits(k, n), random.uniform(k, (n,), dtype), random.normal(k, (n,), dtype))
        slow_bernoulli = random.bernoulli(k, torch.linspace(0, 1, n, dtype=dtype))
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(fast_bernoulli, slow_bernoulli)


def test_kernel_draws_equal_the_torch_ops_for_a_batch_of_mnist_size():
    k = random.key(7)
    fast = random.uniform(k, (128, 1, 28, 28)), random.uniform(k, (128, 784), torch.float64)
    with torch_ops_only():
        slow = random.uniform(k, (128, 1, 28, 28)), random.uniform(k, (128, 784), torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))


def test_the_kernel_is_off_with_fgm_native_0_or_without_a_working_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("FGM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FGM_NATIVE", "0")
    assert _native.library.__wrapped__() is None
    monkeypatch.setenv("FGM_NATIVE", "1")
    monkeypatch.setenv("CC", "false")  # a compiler that fails: no library, no exception
    assert _native.library.__wrapped__() is None
    assert not list(tmp_path.rglob("*.so"))


def test_other_devices_use_the_torch_ops():
    assert random._native_on("meta") is None
    assert random.uniform(random.key(0), (5,), device="meta").device.type == "meta"


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=1, max_value=999))
@settings(max_examples=30, deadline=None)
def test_bernoulli_is_strictly_below_its_own_uniforms(value, n):
    """``bernoulli(k, p)`` is ``u < p`` with ``u = uniform(k)``: at ``p = u`` it fails, just above it succeeds."""
    k = random.Key(value)
    u = random.uniform(k, (n,))
    assert not random.bernoulli(k, u).any()
    assert random.bernoulli(k, torch.nextafter(u, torch.ones_like(u))).all()


def test_cpu_draws_take_the_kernel_not_the_torch_ops(monkeypatch):
    """Where the kernel builds, every CPU sampler takes it: the torch-op rounds are never run (they are slower)."""
    if _native.library() is None:
        pytest.skip("no C compiler: fgm.random uses its torch ops")

    def torch_ops(*args, **kwargs):
        raise AssertionError("the torch-op Philox rounds ran on the CPU")

    monkeypatch.setattr(random, "_philox_blocks", torch_ops)
    k = random.key(3)
    random.bits(k, 9), random.uniform(k, (9,)), random.uniform(k, (9,), torch.float64), random.normal(k, (9,))
    random.bernoulli(k, torch.full((9,), 0.5)), random.permutation(k, 9), random.randint(k, 0, 5, (9,))


def test_the_kernel_refuses_draws_past_the_counter_like_the_torch_ops(monkeypatch):
    """One draw may use at most _MAX_WORDS words (the counter's first word): float64 takes two per value."""
    monkeypatch.setattr(random, "_MAX_WORDS", 8)
    k = random.key(0)
    assert random.uniform(k, (8,)).shape == (8,) and random.uniform(k, (4,), torch.float64).shape == (4,)
    for draw in (lambda: random.uniform(k, (9,)), lambda: random.uniform(k, (5,), torch.float64)):
        with pytest.raises(ValueError, match="fold_in"):
            draw()
    with pytest.raises(ValueError, match="fold_in"):
        random.bernoulli(k, torch.full((9,), 0.5))
