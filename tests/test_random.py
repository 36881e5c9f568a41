import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode

from fgm import random

M32 = 0xFFFFFFFF

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, expected output).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


# --------------------------------------------------------------------------- keys


@given(st.integers(min_value=-(2**70), max_value=2**70))
@settings(max_examples=50, deadline=None)
def test_same_key_same_numbers(seed):
    k = random.key(seed)
    assert torch.equal(random.normal(k, (3, 4)), random.normal(k, (3, 4)))
    assert torch.equal(random.uniform(k, (5,)), random.uniform(k, (5,)))
    assert torch.equal(random.permutation(k, 9), random.permutation(k, 9))
    assert torch.equal(random.randint(k, -5, 5, (7,)), random.randint(k, -5, 5, (7,)))


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


def test_bad_key_values():
    with pytest.raises(ValueError):
        random.Key(-1)
    with pytest.raises(TypeError):
        random.key(1.5)


# --------------------------------------------------------------------------- Philox-4x32-10


@pytest.mark.parametrize("counter, k, expected", PHILOX_KAT)
def test_philox_known_answers(counter, k, expected):
    assert random.philox4x32(counter, k) == expected
    # the same bijection on int64 tensors, where the 32x32-bit products wrap modulo 2**64
    out = random.philox4x32([torch.tensor([c]) for c in counter], k)
    assert [int(x) for x in out] == list(expected)


def test_stream_is_philox_of_the_key():
    """Word 4b + i of a key's stream is output word i of Philox(counter=(b, 0, 0, 0), key=(low, high) words)."""
    assert tuple(random.bits(random.Key(0), 4).tolist()) == PHILOX_KAT[0][2]
    k = (0xA4093822, 0x299F31D0)
    key = random.Key(k[0] | k[1] << 32)
    blocks = torch.tensor([0, 1, 2, 3, 1000])
    want = torch.stack(random.philox4x32((blocks, 0, 0, 0), k), dim=1)
    got = random.bits(key, 4 * 1001).view(1001, 4)
    assert torch.equal(got[blocks], want)
    # the last block of the largest draw: the counter's first word runs to 2**32 - 1
    last = torch.stack(random.philox4x32((torch.tensor([2**32 - 1]), 0, 0, 0), k), dim=1)
    assert tuple(last[0].tolist()) != tuple(want[0].tolist())
    assert random.bits(key, 4 * 2**32, "meta").shape == (4 * 2**32,)


def test_fast_path_equals_reference_for_random_keys():
    for seed in range(20):
        k = random.key(seed)
        blocks = torch.arange(257)
        want = torch.stack(random.philox4x32((blocks, 0, 0, 0), (k.value & M32, k.value >> 32)), dim=1)
        assert torch.equal(random.bits(k, 4 * 257).view(257, 4), want)


def test_bits_are_32_bit_words(key):
    w = random.bits(key, 100_003)
    assert w.dtype == torch.int64 and w.shape == (100_003,)
    assert 0 <= int(w.min()) and int(w.max()) <= M32
    assert int(w.max()) > 2**31  # the top bit is used
    # each of the 32 bits is set about half the time
    freq = torch.stack([(w >> b) & 1 for b in range(32)]).double().mean(1)
    assert torch.all((freq - 0.5).abs() < 5 * 0.5 / math.sqrt(w.numel()))


def test_too_many_words_is_a_clear_error(key):
    with pytest.raises(ValueError, match="fold_in"):
        random.bits(key, 4 * 2**32 + 1, device="meta")


# --------------------------------------------------------------------------- all 64 bits count


@pytest.mark.parametrize("high", [1, 2**31, 2**32 - 1])
def test_keys_differing_only_in_high_bits_draw_different_numbers(high):
    a, b = random.Key(0x12345678), random.Key(0x12345678 | high << 32)
    assert not torch.equal(random.uniform(a, (64,)), random.uniform(b, (64,)))
    assert not torch.equal(random.normal(a, (64,)), random.normal(b, (64,)))
    assert not torch.equal(random.permutation(a, 64), random.permutation(b, 64))
    assert not torch.equal(random.randint(a, 0, 1000, (64,)), random.randint(b, 0, 1000, (64,)))
    assert not torch.equal(random.bernoulli(a, torch.full((64,), 0.5)), random.bernoulli(b, torch.full((64,), 0.5)))


def test_keys_differing_only_in_low_bits_draw_different_numbers():
    a, b = random.Key(5 << 32), random.Key(5 << 32 | 1)
    assert not torch.equal(random.uniform(a, (64,)), random.uniform(b, (64,)))


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_draws_depend_on_flat_position_only(key, dtype):
    """Designed: a draw is the first ``n`` values of the key's stream, so reshaping or truncating commutes with it."""
    for sampler in (random.uniform, random.normal):
        flat = sampler(key, (4 * 9 * 5,), dtype)
        assert flat.dtype == dtype
        assert torch.equal(sampler(key, (4, 9, 5), dtype), flat.view(4, 9, 5))
        for m in (1, 2, 3, 7, 33, 179):  # odd lengths cut a Box-Muller pair or a Philox block
            assert torch.equal(sampler(key, (m,), dtype), flat[:m])
    ints = random.randint(key, 0, 100, (60,))
    assert torch.equal(random.randint(key, 0, 100, (3, 4, 5)), ints.view(3, 4, 5))
    assert torch.equal(random.randint(key, 0, 100, (13,)), ints[:13])


def test_uniform_is_the_top_bits_of_the_stream(key):
    w = random.bits(key, 1000)
    assert torch.equal(random.uniform(key, (1000,)), (w >> 8).float() / 2**24)
    assert torch.equal(random.uniform(key, (1000,), torch.float16), ((w >> 21).float() / 2**11).half())
    w2 = w.view(500, 2)
    want = ((w2[:, 0] >> 5) * 2**26 + (w2[:, 1] >> 6)).double() / 2**53
    assert torch.equal(random.uniform(key, (500,), torch.float64), want)


def test_empty_and_scalar_shapes(key):
    assert random.uniform(key, (0, 3)).shape == (0, 3)
    assert random.normal(key, ()).shape == ()
    assert random.permutation(key, 0).shape == (0,)
    assert random.randint(key, 0, 2, (2, 0)).shape == (2, 0)


# --------------------------------------------------------------------------- distributions


def test_uniform_statistics(key):
    n = 400_000
    for dtype in (torch.float32, torch.float64):
        u = random.uniform(key, (n,), dtype).double()
        assert 0 <= u.min() and u.max() < 1
        # mean 1/2, variance 1/12; five standard errors
        assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
        assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
    assert stats.kstest(random.uniform(key, (100_000,)).numpy(), "uniform").pvalue > 1e-3


def test_uniform_chi_square(key):
    u = random.uniform(random.fold_in(key, 1), (256_000,))
    counts = torch.bincount((u * 256).long(), minlength=256).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_normal_statistics(key):
    n = 400_000
    for dtype in (torch.float32, torch.float64):
        x = random.normal(key, (n,), dtype).double()
        assert torch.isfinite(x).all()
        assert abs(x.mean()) < 5 / math.sqrt(n)
        assert abs(x.var() - 1) < 5 * math.sqrt(2 / n)
        # third and fourth moments: 0 and 3
        assert abs((x**3).mean()) < 5 * math.sqrt(15 / n)
        assert abs((x**4).mean() - 3) < 5 * math.sqrt(96 / n)
    x = random.normal(random.fold_in(key, 2), (100_000,))
    assert stats.kstest(x.numpy(), "norm").pvalue > 1e-3
    # the cos and sin halves of each Box-Muller pair are each normal and uncorrelated
    pairs = random.normal(random.fold_in(key, 3), (100_000, 2)).double()
    assert abs(torch.corrcoef(pairs.T)[0, 1]) < 5 / math.sqrt(100_000)
    assert stats.kstest(pairs[:, 1].numpy(), "norm").pvalue > 1e-3


def test_normal_is_finite_and_bounded():
    """float32 radii come from 24-bit uniforms: |x| <= sqrt(2 · 24 ln 2)."""
    k = random.Key(0)
    z = random.normal(k, (4 * 2**16,))
    assert torch.isfinite(z).all()
    assert z.abs().max() <= math.sqrt(2 * 24 * math.log(2)) + 1e-5


def test_normal_never_takes_log_of_zero(monkeypatch):
    """Extreme stream words: all ones (the smallest 1 - u) and all zeros (radius 0)."""
    monkeypatch.setattr(random, "_native_on", lambda device: None)  # the words come from `bits`
    monkeypatch.setattr(random, "bits", lambda k, n, device="cpu": torch.full((n,), M32, dtype=torch.int64))
    assert torch.isfinite(random.normal(random.key(0), (8,))).all()
    assert torch.isfinite(random.normal(random.key(0), (8,), torch.float64)).all()
    monkeypatch.setattr(random, "bits", lambda k, n, device="cpu": torch.zeros((n,), dtype=torch.int64))
    assert torch.equal(random.normal(random.key(0), (8,)), torch.zeros(8))


def test_keys_decorrelated(key):
    a, b = random.split(key)
    x, y = random.normal(a, (100_000,)), random.normal(b, (100_000,))
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1]) < 0.02


def test_bernoulli(key):
    probs = torch.tensor([0.0, 1.0, 0.25, 0.875]).repeat(50_000)  # exact in float16
    x = random.bernoulli(key, probs)
    assert x.dtype == probs.dtype and set(x.unique().tolist()) <= {0.0, 1.0}
    means = x.view(50_000, 4).mean(0)
    assert means[0] == 0 and means[1] == 1
    assert abs(means[2] - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 50_000)
    assert abs(means[3] - 0.875) < 5 * math.sqrt(0.875 * 0.125 / 50_000)
    assert torch.equal(x, (random.uniform(key, probs.shape) < probs).float())
    half = random.bernoulli(key, probs.half())
    assert half.dtype == torch.float16 and torch.equal(half.float(), x)


def test_permutation_is_a_permutation(key):
    for n in (1, 2, 10, 55_000):
        p = random.permutation(random.fold_in(key, n), n)
        assert p.dtype == torch.int64
        assert torch.equal(torch.sort(p).values, torch.arange(n))
    # every position is uniform: first elements of many permutations of 5
    firsts = torch.tensor([int(random.permutation(random.fold_in(key, i), 5)[0]) for i in range(5000)])
    assert stats.chisquare(torch.bincount(firsts, minlength=5).numpy()).pvalue > 1e-3


def test_randint_range_and_uniformity(key):
    x = random.randint(key, -3, 7, (100_000,))
    assert x.dtype == torch.int64 and int(x.min()) == -3 and int(x.max()) == 6
    assert stats.chisquare(torch.bincount(x + 3, minlength=10).numpy()).pvalue > 1e-3
    big = random.randint(key, -(2**62), 2**62, (10_000,))
    assert big.min() < -(2**61) and big.max() > 2**61  # the whole range is reached
    top = random.randint(key, -(2**63), 0, (1000,))  # a range of 2**63: no modulo
    assert top.min() < -(2**62) and top.max() > -(2**62)
    with pytest.raises(ValueError):
        random.randint(key, 3, 3, (2,))
    with pytest.raises(ValueError):
        random.randint(key, -(2**63), 2**63, (2,))


def test_rejects_non_float_dtypes(key):
    with pytest.raises(TypeError):
        random.uniform(key, (2,), torch.int64)
    with pytest.raises(TypeError):
        random.normal(key, (2,), torch.int32)


# --------------------------------------------------------------------------- devices and global state


def test_samplers_do_not_touch_global_rng(key):
    torch.manual_seed(123)
    before = torch.get_rng_state().clone()
    random.normal(key, (10,))
    random.uniform(key, (10,))
    random.bernoulli(key, torch.full((10,), 0.5))
    random.permutation(key, 10)
    random.randint(key, 0, 5, (10,))
    assert torch.equal(before, torch.get_rng_state())


class _DeviceLog(TorchDispatchMode):
    """Records the device of every tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.devices = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.devices.add(t.device.type)
        return out


def test_draws_are_computed_on_the_requested_device(key):
    """On ``meta``, every intermediate tensor is on ``meta``: nothing is computed on the CPU and moved."""
    with _DeviceLog() as log:
        outs = [
            random.uniform(key, (3, 5), device="meta"),
            random.uniform(key, (3, 5), torch.float64, device="meta"),
            random.normal(key, (4, 3), torch.float16, device="meta"),
            random.permutation(key, 11, device="meta"),
            random.randint(key, 0, 9, (2, 2), device="meta"),
            random.bernoulli(key, torch.full((6,), 0.5, device="meta")),
        ]
    assert log.devices == {"meta"}
    assert [o.device.type for o in outs] == ["meta"] * len(outs)
    assert [o.shape for o in outs] == [(3, 5), (3, 5), (4, 3), (11,), (2, 2), (6,)]
    assert [o.dtype for o in outs] == [
        torch.float32,
        torch.float64,
        torch.float16,
        torch.int64,
        torch.int64,
        torch.float32,
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_equal_cpu_draws(key):
    assert torch.equal(random.bits(key, 10_001, "cuda").cpu(), random.bits(key, 10_001))
    assert torch.equal(random.uniform(key, (999,), device="cuda").cpu(), random.uniform(key, (999,)))
    assert torch.equal(random.permutation(key, 999, device="cuda").cpu(), random.permutation(key, 999))
    assert torch.equal(random.randint(key, 0, 7, (999,), device="cuda").cpu(), random.randint(key, 0, 7, (999,)))
    torch.testing.assert_close(random.normal(key, (999,), device="cuda").cpu(), random.normal(key, (999,)))


def test_legacy_generator_is_seeded_from_the_key(key):
    g = random.generator(key)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=random.generator(key)))


# --------------------------------------------------------------------------- half precision and the edges


def test_bfloat16_and_float16_uniforms_are_the_top_bits_and_below_one(key, monkeypatch):
    w = random.bits(key, 1000)
    u = random.uniform(key, (1000,), torch.bfloat16)
    assert u.dtype == torch.bfloat16 and torch.equal(u, ((w >> 24).float() / 2**8).bfloat16())
    assert 0 <= float(u.min()) and float(u.max()) < 1 and len(set(u.tolist())) > 200  # all 256 levels in use
    # the largest stream word: the largest value is 1 - 2**-b, exact in the dtype (1 is never drawn); words
    # are fed through `bits`, which the torch-op path reads (the C kernel computes the same: test_random_native)
    monkeypatch.setattr(random, "_native_on", lambda device: None)
    monkeypatch.setattr(random, "bits", lambda k, n, device="cpu": torch.full((n,), M32, dtype=torch.int64))
    assert random.uniform(key, (3,), torch.bfloat16).tolist() == [1 - 2**-8] * 3
    assert random.uniform(key, (3,), torch.float16).tolist() == [1 - 2**-11] * 3
    assert random.uniform(key, (3,), torch.float32).tolist() == [1 - 2**-24] * 3
    assert random.uniform(key, (3,), torch.float64).tolist() == [1 - 2**-53] * 3


def test_bfloat16_uniform_known_values():
    """Pinned: the first draws of key(0), so a change of the bit layout is seen."""
    w = random.bits(random.key(0), 4)
    assert random.uniform(random.key(0), (4,), torch.bfloat16).tolist() == [int(x) / 256 for x in (w >> 24)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_bernoulli_at_zero_and_one_even_at_the_extreme_uniforms(key, monkeypatch, dtype):
    """``p = 0`` never succeeds, even when ``u = 0`` is drawn; ``p = 1`` always does, even at the largest ``u``."""
    probs = torch.tensor([0.0, 1.0] * 8, dtype=dtype)
    expected = torch.tensor([0.0, 1.0] * 8, dtype=dtype)
    assert torch.equal(random.bernoulli(key, probs), expected)
    monkeypatch.setattr(random, "_native_on", lambda device: None)  # words through `bits` (torch-op path)
    for word in (0, M32):  # the smallest and the largest uniform
        monkeypatch.setattr(random, "bits", lambda k, n, device="cpu", w=word: torch.full((n,), w, dtype=torch.int64))
        assert torch.equal(random.bernoulli(key, probs), expected)
    monkeypatch.setattr(random, "bits", lambda k, n, device="cpu": torch.zeros((n,), dtype=torch.int64))
    assert torch.equal(random.bernoulli(key, torch.full((4,), 2**-24, dtype=dtype)), torch.ones(4, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_probabilities_keep_float32_resolution(key, dtype):
    """The draws for half-precision ``probs`` are those for the same values in float32 (24-bit uniforms).

    With uniforms of the half dtype (11 or 8 bits), ``p = 2**-12`` would succeed as often as ``u == 0``:
    at 2**-11 or 2**-8 instead of 2**-12.
    """
    probs = torch.tensor([2**-12, 0.3, 1 - 2**-8], dtype=dtype).repeat(40_000)
    draws = random.bernoulli(key, probs)
    assert draws.dtype == dtype and torch.equal(draws.float(), random.bernoulli(key, probs.float()))
    rare = draws[0::3].double().mean()
    assert abs(rare - 2**-12) < 5 * (2**-12 / 40_000) ** 0.5


# --------------------------------------------------------------------------- the key schedule, pinned
# Every run's numbers follow from key(seed) through split and fold_in: changing a constant silently changes
# every result, so the derivations are written out here and checked against SplitMix64's published outputs.

MASK64 = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15


def splitmix64_stream(seed, n):
    """Vigna's SplitMix64 generator (the public-domain C code), in Python: ``n`` outputs from state ``seed``."""
    out = []
    for _ in range(n):
        seed = (seed + GOLDEN) & MASK64
        z = ((seed ^ (seed >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


def mix(x):
    """SplitMix64's output from state ``x``: the mixing function of fgm.random."""
    return splitmix64_stream(x, 1)[0]


def test_the_splitmix64_reference_reproduces_its_published_outputs():
    assert splitmix64_stream(0, 4) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    assert splitmix64_stream(1234567, 3) == [6457827717110365317, 3203168211198807973, 9817491932198370423]


@pytest.mark.parametrize("seed", [0, 1, 7, 2**32, 2**63 + 5, 2**64 - 1, 2**64 + 3, -1])
def test_key_is_splitmix64_of_the_seed(seed):
    assert random.key(seed).value == mix(seed & MASK64)
    assert random.key(0).value == 0xE220A8397B1DCDAF  # SplitMix64's first output from state 0


@pytest.mark.parametrize("seed", [0, 3, 2**40 + 1])
def test_split_and_fold_in_follow_their_documented_formulas(seed):
    k = random.key(seed)
    base = mix(k.value ^ 0x632BE59BD9B4E019)
    assert [c.value for c in random.split(k, 5)] == [mix(base ^ mix(i + 1)) for i in range(5)]
    for data in (0, 1, 99, -1, 2**64 + 7):
        assert random.fold_in(k, data).value == mix(k.value ^ mix((data & MASK64) ^ 0xD1B54A32D192ED03))


def test_known_keys_and_draws():
    """Pinned values: the first numbers a run with seed 0 draws."""
    k = random.key(0)
    assert random.split(k)[0].value == mix(mix(0xE220A8397B1DCDAF ^ 0x632BE59BD9B4E019) ^ mix(1))
    assert random.bits(random.Key(0), 4).tolist() == list(PHILOX_KAT[0][2])


# --------------------------------------------------------------------------- every sampler against its formula


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_is_box_muller_of_the_uniforms_in_the_working_precision(key, dtype):
    n = 101  # odd: the last pair is cut
    u = random.uniform(key, (51, 2), dtype)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))
    angle = (2 * math.pi) * u[:, 1]
    want = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1).view(-1)[:n]
    assert torch.equal(random.normal(key, (n,), dtype), want)
    half = random.normal(key, (n,), torch.float16)  # half precision: the float32 draws, rounded
    assert torch.equal(half, random.normal(key, (n,), torch.float32).half())


def test_float64_bernoulli_uses_53_bit_uniforms(key):
    probs = torch.tensor([2**-30, 0.3, 1 - 2**-30], dtype=torch.float64).repeat(1000)
    draws = random.bernoulli(key, probs)
    assert draws.dtype == torch.float64 and torch.equal(
        draws, (random.uniform(key, (3000,), torch.float64) < probs).double()
    )


def test_randint_and_permutation_use_63_bit_integers_from_two_words(key):
    w = random.bits(key, 2 * 500).view(500, 2)
    v = ((w[:, 0] & 0x7FFFFFFF) << 32) | w[:, 1]
    assert torch.equal(random.randint(key, 0, 2**63, (500,)), v)  # a range of 2**63: the integers themselves
    assert torch.equal(random.randint(key, -7, 1000, (500,)), v % 1007 - 7)
    assert torch.equal(random.permutation(key, 500), torch.argsort(v, stable=True))
    assert int(v.max()) >= 2**62 and int(v.min()) >= 0  # all 63 bits used, never negative


def test_permutation_keeps_index_order_on_ties(key, monkeypatch):
    monkeypatch.setattr(random, "bits", lambda k, n, device="cpu": torch.zeros((n,), dtype=torch.int64))
    assert torch.equal(random.permutation(key, 5000), torch.arange(5000))


def test_randint_range_limits(key):
    assert random.randint(key, 2**63 - 10, 2**63, (100,)).min() >= 2**63 - 10  # the top of int64 is allowed
    assert random.randint(key, -(2**63), -(2**63) + 3, (100,)).max() < -(2**63) + 3  # and the bottom
    for low, high in ((-(2**63) - 5, -(2**63) + 1), (2**63 - 2, 2**63 + 1)):
        with pytest.raises(ValueError) as caught:
            random.randint(key, low, high, (2,))
        assert str(caught.value) == f"randint: [{low}, {high}) does not fit int64 with a range <= 2**63"


def test_bad_arguments_are_named_in_the_errors(key):
    cases = [
        (lambda: random.key(1.5), TypeError, "seed must be an int, got float"),
        (lambda: random.split(key, 0), ValueError, "num must be >= 1, got 0"),
        (lambda: random.permutation(key, -1), ValueError, "n must be >= 0, got -1"),
        (lambda: random.randint(key, 3, 3, (2,)), ValueError, "randint needs low < high, got [3, 3)"),
        (lambda: random.bits(key, -1), ValueError, "num_words must be >= 0, got -1"),
        (
            lambda: random.uniform(key, (2,), torch.int64),
            TypeError,
            "expected one of torch.float16, torch.bfloat16, torch.float32, torch.float64, got torch.int64",
        ),
        (lambda: random.Key(-1), ValueError, "Key value must be an int in [0, 2**64), got -1"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value) == message


def test_every_64_bit_value_is_a_key():
    assert random.Key(0).value == 0 and random.Key(2**64 - 1).value == 2**64 - 1
    assert random.uniform(random.Key(2**64 - 1), (4,)).shape == (4,)
    with pytest.raises(ValueError, match=r"^Key value must be an int in \[0, 2\*\*64\), got 18446744073709551616$"):
        random.Key(2**64)
    with pytest.raises(ValueError, match=r"got 1.0$"):
        random.Key(1.0)
