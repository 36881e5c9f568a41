import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgm import random


@given(st.integers(min_value=-(2**70), max_value=2**70))
@settings(max_examples=50, deadline=None)
def test_same_key_same_numbers(seed):
    k = random.key(seed)
    assert torch.equal(random.normal(k, (3, 4)), random.normal(k, (3, 4)))
    assert torch.equal(random.uniform(k, (5,)), random.uniform(k, (5,)))


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=2, max_value=8))
@settings(max_examples=50, deadline=None)
def test_split_gives_distinct_keys(seed, num):
    k = random.key(seed)
    children = random.split(k, num)
    assert len(set(children)) == num
    assert k not in children
    assert random.split(k, num) == children  # deterministic


def test_fold_in_distinct_and_deterministic(key):
    folded = [random.fold_in(key, i) for i in range(100)]
    assert len(set(folded)) == 100
    assert folded == [random.fold_in(key, i) for i in range(100)]


def test_samplers_do_not_touch_global_rng(key):
    torch.manual_seed(123)
    before = torch.get_rng_state().clone()
    random.normal(key, (10,))
    random.uniform(key, (10,))
    random.bernoulli(key, torch.full((10,), 0.5))
    random.permutation(key, 10)
    random.randint(key, 0, 5, (10,))
    assert torch.equal(before, torch.get_rng_state())


def test_normal_statistics(key):
    x = random.normal(key, (200_000,), dtype=torch.float64)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01


def test_keys_decorrelated(key):
    a, b = random.split(key)
    x, y = random.normal(a, (100_000,)), random.normal(b, (100_000,))
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1]) < 0.02


def test_bad_key_values():
    import pytest

    with pytest.raises(ValueError):
        random.Key(-1)
    with pytest.raises(TypeError):
        random.key(1.5)
