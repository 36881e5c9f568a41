import functools
import itertools
import math
import warnings

import optree
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgm import optim

ADAM_SETTINGS = [
    pytest.param(1e-3, (0.9, 0.999), 1e-8, id="lr1e-3-default-betas"),
    pytest.param(3e-2, (0.5, 0.9), 1e-6, id="lr3e-2-b0.5-0.9"),
    pytest.param(1e-1, (0.0, 0.99), 1e-3, id="lr1e-1-b0-0.99"),
]
SHAPES = {"enc": {"w": (5, 3), "b": (3,)}, "dec": {"w": (3, 4), "b": (4,), "gain": ()}, "scale": (2, 1, 3)}


def _tree(shapes, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return optree.tree_map(
        lambda s: torch.randn(s, generator=gen, dtype=dtype), shapes, is_leaf=lambda x: isinstance(x, tuple)
    )


def _clone(tree):
    return optree.tree_map(lambda t: t.clone(), tree)


def _tree_equal(a, b):
    la, sa = optree.tree_flatten(a)
    lb, sb = optree.tree_flatten(b)
    return sa == sb and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(la, lb, strict=True))


def _max_abs_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(optree.tree_leaves(a), optree.tree_leaves(b), strict=True))


@functools.cache
def _target(i, shape, dtype):
    return 20.0 + 3.0 * i + 0.1 * torch.arange(math.prod(shape), dtype=dtype).reshape(shape)


def _loss(params):
    """Quadratic bowls far from the start plus sine ripples and a cross-leaf term.

    The minima lie further away than 150 Adam steps can travel, so the
    trajectories never settle into Adam's sign-flipping oscillation around a
    minimum, where rounding differences are amplified chaotically. That keeps
    the comparison with torch a test of the arithmetic, not of chaos.
    """
    total, coupling = 0.0, 0.0
    for i, x in enumerate(optree.tree_leaves(params)):
        target = _target(i, x.shape, x.dtype)
        total = total + 0.5 * (1 + 0.2 * i) * ((x - target) ** 2).sum() + torch.sin(3 * x + i).sum()
        coupling = coupling + x.sum()
    return total + torch.sin(0.1 * coupling)


def _grads(params):
    leaves, spec = optree.tree_flatten(params)
    leaves = [p.detach().requires_grad_(True) for p in leaves]
    grads = torch.autograd.grad(_loss(optree.tree_unflatten(spec, leaves)), leaves)
    return optree.tree_unflatten(spec, list(grads))


def _run_against_torch(tx, torch_opt_fn, steps=150, dtype=torch.float64):
    """Runs ``tx`` and a torch optimizer from the same start; returns the max abs diff seen."""
    params = _tree(SHAPES, 0, dtype)
    leaves, spec = optree.tree_flatten(params)
    torch_params = [p.clone().requires_grad_(True) for p in leaves]
    opt, sched = torch_opt_fn(torch_params)
    state = tx.init(params)
    worst = 0.0
    for _ in range(steps):
        opt.zero_grad()
        _loss(optree.tree_unflatten(spec, torch_params)).backward()
        opt.step()
        if sched is not None:
            sched.step()
        updates, state = tx.update(_grads(params), state, params)
        params = optim.apply_updates(params, updates)
        worst = max(worst, _max_abs_diff(params, torch_params))
    # The comparison means something only if every parameter really moved
    # (about lr per step, as the gradients keep their signs).
    start = optree.tree_leaves(_tree(SHAPES, 0, dtype))
    assert min((p - q).abs().min().item() for p, q in zip(optree.tree_leaves(params), start, strict=True)) > 0.1
    return worst, state


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "for-loop"])
@pytest.mark.parametrize("lr, betas, eps", ADAM_SETTINGS)
def test_adam_matches_torch_adam(lr, betas, eps, foreach):
    worst, state = _run_against_torch(
        optim.adam(lr, *betas, eps),
        lambda ps: (torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps, foreach=foreach), None),
    )
    assert worst <= 1e-10
    adam_state, lr_state = state
    assert isinstance(adam_state, optim.ScaleByAdamState) and isinstance(lr_state, optim.EmptyState)
    assert adam_state.count.dtype == torch.int64 and int(adam_state.count) == 150


@pytest.mark.parametrize(
    "schedule, factor",
    [
        pytest.param(optim.exponential_decay(3e-2, 0.5, 40), lambda k: 0.5 ** (k / 40), id="exponential"),
        pytest.param(
            optim.cosine_decay_schedule(3e-2, 100, alpha=0.1),
            lambda k: 0.9 * 0.5 * (1 + math.cos(math.pi * min(k, 100) / 100)) + 0.1,
            id="cosine",
        ),
    ],
)
def test_adam_schedule_matches_torch_lambdalr(schedule, factor):
    # LambdaLR sets lr = base_lr * factor(k) for the (k+1)-th step: the
    # schedule must be read at the count of updates done *before* this one.
    worst, state = _run_against_torch(
        optim.adam(schedule, 0.8, 0.95, 1e-7),
        lambda ps: (
            opt := torch.optim.Adam(ps, lr=3e-2, betas=(0.8, 0.95), eps=1e-7, foreach=True),
            torch.optim.lr_scheduler.LambdaLR(opt, factor),
        ),
    )
    assert worst <= 1e-10
    assert int(state[1].count) == 150


def test_schedule_is_read_at_the_update_count():
    seen = []

    def schedule(count):
        seen.append(count)
        return 0.1 * (count + 1)

    tx = optim.scale_by_learning_rate(schedule)
    grads = {"a": torch.ones(3, dtype=torch.float64), "b": torch.full((2, 2), 2.0, dtype=torch.float64)}
    state = tx.init(grads)
    for k in range(5):
        updates, state = tx.update(grads, state)
        assert torch.equal(updates["a"], torch.full((3,), -0.1 * (k + 1), dtype=torch.float64))
        assert torch.equal(updates["b"], torch.full((2, 2), -0.1 * (k + 1) * 2.0, dtype=torch.float64))
    assert seen == [0, 1, 2, 3, 4]
    assert int(state.count) == 5
    updates, _ = optim.scale_by_learning_rate(0.5, flip_sign=False).update(grads, optim.EmptyState())
    assert torch.equal(updates["a"], torch.full((3,), 0.5, dtype=torch.float64))


def test_schedule_values():
    const = optim.constant_schedule(0.3)
    assert [const(k) for k in (0, 1, 1000)] == [0.3, 0.3, 0.3]

    exp = optim.exponential_decay(2.0, 0.1, 10)
    assert exp(0) == 2.0
    assert math.isclose(exp(10), 0.2, rel_tol=1e-15)
    assert math.isclose(exp(5), 2.0 * 0.1**0.5, rel_tol=1e-15)
    assert exp(torch.tensor(10)) == exp(10)
    stair = optim.exponential_decay(2.0, 0.1, 10, staircase=True)
    assert stair(9) == 2.0 and math.isclose(stair(10), 0.2, rel_tol=1e-15)

    cos = optim.cosine_decay_schedule(1.0, 100, alpha=0.2)
    assert cos(0) == 1.0
    assert math.isclose(cos(50), 0.6, rel_tol=1e-15)
    assert math.isclose(cos(100), 0.2, rel_tol=1e-15) and cos(500) == cos(100)
    values = [cos(k) for k in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))

    with pytest.raises(ValueError):
        optim.exponential_decay(1.0, 0.5, 0)
    with pytest.raises(ValueError):
        optim.cosine_decay_schedule(1.0, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("learning_rate", [1e-2, optim.exponential_decay(1e-2, 0.3, 7)], ids=["constant", "schedule"])
def test_adam_is_bitwise_the_explicit_chain(learning_rate, dtype):
    explicit = optim.chain(optim.scale_by_adam(0.7, 0.9, 1e-6), optim.scale_by_learning_rate(learning_rate))
    fused = optim.adam(learning_rate, 0.7, 0.9, 1e-6)
    params = _tree(SHAPES, 0, dtype)
    s_explicit, s_fused = explicit.init(params), fused.init(params)
    assert _tree_equal(s_explicit, s_fused)
    for k in range(20):
        grads = _tree(SHAPES, 100 + k, dtype)
        u_explicit, s_explicit = explicit.update(grads, s_explicit, params)
        u_fused, s_fused = fused.update(grads, s_fused, params)
        assert _tree_equal(u_explicit, u_fused)
        assert _tree_equal(s_explicit, s_fused)
        params = optim.apply_updates(params, u_fused)


def test_scale_by_adam_first_step_is_sign_like():
    # At step 1 the bias corrections give m_hat = g and v_hat = g^2, so the
    # direction is g / (|g| + eps): a check of the equations independent of torch.
    g = {"a": torch.tensor([3.0, -0.5, 0.0, 1e-3], dtype=torch.float64)}
    tx = optim.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    u, state = tx.update(g, tx.init(g))
    expected = g["a"] / (g["a"].abs() + 1e-8)
    torch.testing.assert_close(u["a"], expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(state.mu["a"], 0.1 * g["a"], rtol=1e-14, atol=0)
    torch.testing.assert_close(state.nu["a"], 0.001 * g["a"] ** 2, rtol=1e-14, atol=0)


def test_zero_gradient_leaf():
    params = {"used": torch.ones(3), "unused": torch.full((2, 2), 5.0)}
    tx = optim.adam(0.1)
    state = tx.init(params)
    for _ in range(3):
        grads = {"used": torch.tensor([1.0, -2.0, 0.5]), "unused": torch.zeros(2, 2)}
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        assert torch.equal(updates["unused"], torch.zeros(2, 2))
        assert torch.isfinite(updates["used"]).all()
    assert torch.equal(params["unused"], torch.full((2, 2), 5.0))
    assert torch.equal(state[0].nu["unused"], torch.zeros(2, 2))
    assert (params["used"] != 1.0).all()


def _global_norm(tree):
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in optree.tree_leaves(tree)))


def test_clip_by_global_norm():
    tx = optim.clip_by_global_norm(1.5)
    big = {"a": torch.tensor([3.0, 4.0]), "b": {"c": torch.full((2, 3), 2.0)}}
    clipped, state = tx.update(big, tx.init(big))
    assert _global_norm(clipped) <= 1.5 * (1 + 1e-6)
    assert math.isclose(_global_norm(clipped), 1.5, rel_tol=1e-6)
    ratio = _global_norm(big) / _global_norm(clipped)
    for x, y in zip(optree.tree_leaves(big), optree.tree_leaves(clipped), strict=True):
        torch.testing.assert_close(x / ratio, y, rtol=1e-6, atol=0)

    small = {"a": torch.tensor([0.3, -0.4]), "b": {"c": torch.full((2, 3), 0.1)}}
    assert _global_norm(small) < 1.5
    unchanged, _ = tx.update(small, state)
    assert _tree_equal(unchanged, small)

    zeros = {"a": torch.zeros(2)}
    out, _ = tx.update(zeros, tx.init(zeros))
    assert torch.equal(out["a"], torch.zeros(2))

    with pytest.raises(ValueError):
        optim.clip_by_global_norm(0.0)


def test_chain_applies_in_order():
    grads = {"a": torch.tensor([3.0, 4.0], dtype=torch.float64)}  # norm 5
    clip_then_scale = optim.chain(optim.clip_by_global_norm(1.0), optim.scale(10.0))
    scale_then_clip = optim.chain(optim.scale(10.0), optim.clip_by_global_norm(1.0))
    u1, s1 = clip_then_scale.update(grads, clip_then_scale.init(grads))
    u2, _ = scale_then_clip.update(grads, scale_then_clip.init(grads))
    torch.testing.assert_close(u1["a"], torch.tensor([6.0, 8.0], dtype=torch.float64), rtol=1e-15, atol=0)
    torch.testing.assert_close(u2["a"], torch.tensor([0.6, 0.8], dtype=torch.float64), rtol=1e-15, atol=0)
    assert s1 == (optim.EmptyState(), optim.EmptyState())

    tx = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(optim.constant_schedule(0.1)))
    state = tx.init(grads)
    assert isinstance(state, tuple) and len(state) == 2
    assert isinstance(state[0], optim.ScaleByAdamState) and isinstance(state[1], optim.ScaleByScheduleState)
    with pytest.raises(ValueError):
        tx.update(grads, state[:1])


def test_add_decayed_weights():
    params = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    grads = {"w": torch.tensor([0.5, 0.5], dtype=torch.float64)}
    tx = optim.add_decayed_weights(0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    torch.testing.assert_close(updates["w"], torch.tensor([0.6, 0.3], dtype=torch.float64), rtol=1e-15, atol=0)
    with pytest.raises(ValueError):
        tx.update(grads, tx.init(params))


def test_state_for_other_params_is_rejected():
    tx = optim.adam(0.1)
    state = tx.init({"a": torch.zeros(2), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="structure"):
        tx.update({"a": torch.zeros(2), "c": torch.zeros(3)}, state)
    with pytest.raises(ValueError, match="structure"):
        optim.apply_updates({"a": torch.zeros(2)}, {"b": torch.zeros(2)})


def _transforms():
    return {
        "adam": optim.adam(1e-2),
        "adam-schedule": optim.adam(optim.cosine_decay_schedule(1e-2, 10)),
        "scale_by_adam": optim.scale_by_adam(0.5, 0.9, 1e-6),
        "clip-adamw": optim.chain(
            optim.clip_by_global_norm(0.5),
            optim.scale_by_adam(),
            optim.add_decayed_weights(1e-2),
            optim.scale_by_learning_rate(1e-2),
        ),
        "sgd-schedule": optim.scale_by_learning_rate(optim.exponential_decay(0.1, 0.5, 3)),
        "sgd": optim.scale_by_learning_rate(0.1),
        "clip": optim.clip_by_global_norm(1.0),
        "weight-decay": optim.add_decayed_weights(0.1),
    }


@pytest.mark.parametrize("name", list(_transforms()))
def test_update_and_apply_do_not_mutate_inputs(name):
    tx = _transforms()[name]
    params = _tree(SHAPES, 0)
    state = tx.init(params)
    for k in range(3):  # later steps have non-zero moments and counts
        grads = _tree(SHAPES, 10 + k)
        before = _clone((params, grads, state))
        updates, new_state = tx.update(grads, state, params)
        assert _tree_equal((params, grads, state), before)
        updates_before = _clone(updates)
        new_params = optim.apply_updates(params, updates)
        assert _tree_equal((params, updates), (before[0], updates_before))
        # New state tensors are new storage, never the old state's.
        old_ptrs = {t.data_ptr() for t in optree.tree_leaves(state)}
        assert not old_ptrs & {t.data_ptr() for t in optree.tree_leaves(new_state)}
        assert not {t.data_ptr() for t in optree.tree_leaves(params)} & {
            t.data_ptr() for t in optree.tree_leaves(new_params)
        }
        params, state = new_params, new_state


def test_apply_updates_keeps_requires_grad_without_history():
    params = {"a": torch.ones(2, requires_grad=True), "b": torch.ones(3)}
    new = optim.apply_updates(params, {"a": torch.full((2,), 0.5), "b": torch.full((3,), -1.0)})
    assert new["a"].requires_grad and new["a"].is_leaf and new["a"].grad_fn is None
    assert not new["b"].requires_grad
    assert torch.equal(new["a"].detach(), torch.full((2,), 1.5)) and torch.equal(new["b"], torch.zeros(3))


def test_adam_converges_on_parabola():
    target = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    params = {"x": torch.zeros(3, dtype=torch.float64)}
    tx = optim.adam(0.1)
    state = tx.init(params)
    for _ in range(500):
        grads = {"x": 2 * (params["x"] - target)}
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    torch.testing.assert_close(params["x"], target, rtol=0, atol=1e-2)


def test_adam_converges_on_rosenbrock():
    a, b = 1.0, 100.0

    def grad(p):
        x, y = p["x"], p["y"]
        return {"x": -2 * (a - x) - 4 * b * x * (y - x**2), "y": 2 * b * (y - x**2)}

    params = {"x": torch.tensor(0.0, dtype=torch.float64), "y": torch.tensor(0.0, dtype=torch.float64)}
    tx = optim.adam(2e-2)
    state = tx.init(params)
    for _ in range(3000):
        updates, state = tx.update(grad(params), state, params)
        params = optim.apply_updates(params, updates)
    assert abs(float(params["x"]) - a) < 1e-3 and abs(float(params["y"]) - a**2) < 1e-3


@st.composite
def _trees(draw):
    n = draw(st.integers(1, 4))
    shapes = {f"k{i}": tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))) for i in range(n)}
    nested = {"outer": shapes, "extra": (2,)} if draw(st.booleans()) else shapes
    seed = draw(st.integers(0, 2**31 - 1))
    params, grads = _tree(nested, seed), _tree(nested, seed + 1)
    if draw(st.booleans()):  # a leaf whose gradient is exactly zero
        leaves, spec = optree.tree_flatten(grads)
        leaves[0] = torch.zeros_like(leaves[0])
        grads = optree.tree_unflatten(spec, leaves)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    grads = optree.tree_map(lambda g: g * scale, grads)
    return params, grads


@pytest.mark.parametrize("name", list(_transforms()))
@given(trees=_trees(), steps=st.integers(1, 3))
@settings(max_examples=10, deadline=None)
def test_update_is_deterministic_and_pure(name, trees, steps):
    params, grads = trees
    tx = _transforms()[name]
    state = tx.init(params)
    for _ in range(steps - 1):
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    before = _clone((params, grads, state))
    out1 = tx.update(grads, state, params)
    out2 = tx.update(grads, state, params)
    assert _tree_equal(out1, out2)
    assert _tree_equal((params, grads, state), before)
    assert _tree_equal(optim.apply_updates(params, out1[0]), optim.apply_updates(params, out2[0]))
    assert all(torch.isfinite(t).all() for t in optree.tree_leaves(out1))


def test_empty_tree():
    for tx in _transforms().values():
        state = tx.init({})
        updates, state = tx.update({}, state, {})
        assert updates == {} and optim.apply_updates({}, updates) == {}


def test_mixed_dtypes_keep_their_dtypes():
    params = {"a": torch.ones((), dtype=torch.float32), "b": torch.ones(3, dtype=torch.float64)}
    grads = {"a": torch.tensor(3.0, dtype=torch.float32), "b": torch.full((3,), 4.0, dtype=torch.float64)}
    for tx in _transforms().values():
        state = tx.init(params)
        for _ in range(2):
            updates, state = tx.update(grads, state, params)
            params = optim.apply_updates(params, updates)
            assert updates["a"].dtype == torch.float32 and updates["a"].shape == ()
            assert updates["b"].dtype == torch.float64
            assert params["a"].dtype == torch.float32 and params["b"].dtype == torch.float64


@pytest.mark.parametrize("name", ["adam", "adam-schedule", "scale_by_adam", "sgd-schedule"])
def test_mixed_dtype_tree_equals_separate_trees(name):
    # Each leaf must see its scalars in its own dtype: a float64 leaf next to
    # a float32 one must not get float32-rounded hyperparameters.
    def run(keys):
        params = {k: torch.linspace(-1, 1, 5, dtype=dt) for k, dt in keys.items()}
        tx = _transforms()[name]
        state = tx.init(params)
        for k in range(3):
            grads = {key: torch.cos(p * (k + 2)) for key, p in params.items()}
            updates, state = tx.update(grads, state, params)
            params = optim.apply_updates(params, updates)
        return params

    mixed = run({"a": torch.float32, "b": torch.float64})
    assert torch.equal(mixed["a"], run({"a": torch.float32})["a"])
    assert torch.equal(mixed["b"], run({"b": torch.float64})["b"])


def test_donated_apply_updates_with_aliased_leaves_equals_the_pure_result():
    """Two leaves viewing one buffer (tied weights stored twice) must not get the update twice.

    ``donate=True`` then copies, like the pure call, instead of adding into the shared storage.
    """

    def aliased():
        w = torch.arange(4.0)
        return {"a": w, "b": w.view(2, 2), "c": torch.ones(3)}

    updates = {"a": torch.full((4,), 0.5), "b": torch.full((2, 2), 0.25), "c": torch.full((3,), 2.0)}
    pure = optim.apply_updates(aliased(), updates)
    donated = optim.apply_updates(aliased(), updates, donate=True)
    assert _tree_equal(donated, pure)
    assert torch.equal(donated["a"], torch.arange(4.0) + 0.5)
    assert torch.equal(donated["b"], torch.arange(4.0).view(2, 2) + 0.25)
    # a slice of another leaf aliases too
    w = torch.zeros(4)
    sliced = optim.apply_updates({"a": w, "b": w[1:3]}, {"a": torch.ones(4), "b": torch.ones(2)}, donate=True)
    assert torch.equal(sliced["a"], torch.ones(4)) and torch.equal(sliced["b"], torch.ones(2))


def test_donated_apply_updates_adds_in_place_when_leaves_are_separate():
    params = {"a": torch.arange(4.0), "b": torch.ones(2, 2), "empty": torch.zeros(0), "none": torch.zeros(0)}
    ptrs = {k: v.data_ptr() for k, v in params.items()}
    new = optim.apply_updates(params, optree.tree_map(torch.ones_like, params), donate=True)
    assert new is params and {k: v.data_ptr() for k, v in new.items()} == ptrs
    assert torch.equal(new["a"], torch.arange(4.0) + 1) and torch.equal(new["b"], torch.full((2, 2), 2.0))


# --------------------------------------------------------------------------- donation and vmap


def _ptrs(tree):
    """Buffer addresses of the floating-point leaves (step counters are new scalars every step)."""
    return [t.data_ptr() for t in optree.tree_leaves(tree) if t.is_floating_point()]


@pytest.mark.parametrize("name", list(_transforms()))
def test_donated_steps_equal_pure_steps_and_reuse_the_buffers(name):
    """``donate=True`` gives bitwise the pure values and writes into the donated buffers.

    The updates take the gradients' buffers, Adam's moments are updated in place, and the
    parameters are added into: a donating step allocates no parameter-sized tensor.
    """
    tx = _transforms()[name]
    pure_p, pure_s = _tree(SHAPES, 0), tx.init(_tree(SHAPES, 0))
    don_p, don_s = _tree(SHAPES, 0), tx.init(_tree(SHAPES, 0))
    for k in range(3):
        grads = _tree(SHAPES, 20 + k)
        updates, pure_s = tx.update(_clone(grads), pure_s, pure_p)
        pure_p = optim.apply_updates(pure_p, updates)
        state_ptrs, grad_ptrs, param_ptrs = _ptrs(don_s), _ptrs(grads), _ptrs(don_p)
        updates, don_s = tx.update(grads, don_s, don_p, donate=True)
        assert _ptrs(updates) == grad_ptrs and _ptrs(don_s) == state_ptrs
        don_p = optim.apply_updates(don_p, updates, donate=True)
        assert _ptrs(don_p) == param_ptrs
        assert _tree_equal(don_p, pure_p) and _tree_equal(don_s, pure_s)


@pytest.mark.parametrize("name", list(_transforms()))
def test_donated_gradients_that_share_memory_are_not_written(name):
    """Autograd may hand one tensor to two leaves, or an expanded one: those are read, never written."""
    tx = _transforms()[name]
    shared, wide = torch.linspace(-1, 1, 3, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    params = {
        "a": torch.ones(3, dtype=torch.float64),
        "b": torch.zeros(3, dtype=torch.float64),
        "c": torch.ones(4, dtype=torch.float64),
    }
    for grads in (
        {"a": shared, "b": shared, "c": torch.ones(4, dtype=torch.float64)},
        {"a": shared.clone(), "b": shared.clone(), "c": wide.expand(4)},
    ):
        before = _clone(grads)
        pure, _ = tx.update(_clone(grads), tx.init(params), params)
        donated, _ = tx.update(grads, tx.init(params), params, donate=True)
        assert _tree_equal(donated, pure) and _tree_equal(grads, before)


def _stack(trees):
    return optree.tree_map(lambda *xs: torch.stack(xs), *trees)


def _member(tree, i):
    return optree.tree_map(lambda t: t[i], tree)


@pytest.mark.parametrize("donate", [False, True])
@pytest.mark.parametrize("name", list(_transforms()))
def test_steps_under_vmap_equal_member_by_member_steps(name, donate):
    """Inside ``torch.func.vmap`` (a seed ensemble) the leaf-by-leaf path gives each member's own steps."""
    tx, members = _transforms()[name], 3
    params = _stack([_tree(SHAPES, m) for m in range(members)])
    grads = [_stack([_tree(SHAPES, 10 * k + m) for m in range(members)]) for k in range(3)]

    def run(p, *gs):
        state = tx.init(p)  # moments batched like p; the step count stays a plain tensor
        for g in gs:
            updates, state = tx.update(g, state, p, **({"donate": True} if donate else {}))
            p = optim.apply_updates(p, updates, donate=donate)
        return p

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the per-member fallback's performance warning stays hidden
        batched = torch.func.vmap(run)(_clone(params), *_clone(grads))
    for m in range(members):
        single = run(_member(params, m), *(_member(g, m) for g in grads))
        assert _max_abs_diff(_member(batched, m), single) < 1e-12


def test_adam_under_vmap_with_any_shared_operand():
    """Gradients and the first moment may be batched or shared (``in_dims=None``) independently.

    The second moment must be batched: ``addcmul_`` writes a batched gradient into it in place.
    """
    tx, members = optim.scale_by_adam(), 2
    params = _tree(SHAPES, 0)
    grads = _stack([_tree(SHAPES, 1 + m) for m in range(members)])
    warm = tx.update(_member(grads, 0), tx.init(params), params)[1]  # non-zero moments
    stacked = warm._replace(mu=_stack([warm.mu] * members), nu=_stack([warm.nu] * members))
    for g_dim, mu_dim, nu_dim in [(None, None, 0), (0, None, 0), (None, 0, 0), (0, 0, 0)]:
        state = stacked._replace(mu=stacked.mu if mu_dim == 0 else warm.mu, nu=stacked.nu if nu_dim == 0 else warm.nu)
        g = grads if g_dim == 0 else _member(grads, 1)
        in_dims = (g_dim, optim.ScaleByAdamState(None, mu_dim, nu_dim))
        updates, _ = torch.func.vmap(lambda gr, st: tx.update(gr, st), in_dims=in_dims)(g, state)
        for m in range(members):
            want, _ = tx.update(_member(grads, m if g_dim == 0 else 1), warm)
            assert _max_abs_diff(_member(updates, m), want) < 1e-12


def test_apply_updates_under_vmap_with_one_side_shared():
    params, updates = _stack([_tree(SHAPES, 0), _tree(SHAPES, 1)]), _tree(SHAPES, 2)
    out = torch.func.vmap(optim.apply_updates, in_dims=(0, None))(params, updates)
    assert _max_abs_diff(_member(out, 1), optim.apply_updates(_member(params, 1), updates)) == 0
    out = torch.func.vmap(optim.apply_updates, in_dims=(None, 0))(updates, params)
    assert _max_abs_diff(_member(out, 1), optim.apply_updates(updates, _member(params, 1))) == 0


def test_transforms_run_on_meta_tensors():
    """Shape-only (meta) tensors take the Python-number path for scalars: no CPU scalar tensors."""
    params = {"a": torch.empty(3, device="meta"), "b": torch.empty(2, 2, device="meta", dtype=torch.float64)}
    for name, tx in _transforms().items():
        updates, state = tx.update(params, tx.init(params), params)
        new = optim.apply_updates(params, updates)
        assert all(t.device.type == "meta" for t in optree.tree_leaves((updates, new))), name
        assert {k: t.dtype for k, t in new.items()} == {"a": torch.float32, "b": torch.float64}


def test_defaults_and_counters():
    params, grads = _tree(SHAPES, 0), _tree(SHAPES, 1)
    for default, explicit in [
        (optim.scale_by_adam(), optim.scale_by_adam(0.9, 0.999, 1e-8)),
        (optim.adam(0.1), optim.adam(0.1, 0.9, 0.999, 1e-8)),
    ]:
        s_default, s_explicit = default.init(params), explicit.init(params)
        for _ in range(2):  # the second step has non-zero moments, where b1 matters
            a, s_default = default.update(grads, s_default)
            b, s_explicit = explicit.update(grads, s_explicit)
            assert _tree_equal(a, b) and _tree_equal(s_default, s_explicit)
    count = optim.scale_by_adam().init(params).count
    assert count.dtype == torch.int64 and count.shape == () and count.device.type == "cpu"
    # the one-step schedules: transition / decay over a single step
    assert optim.exponential_decay(1.0, 0.5, 1)(2) == 0.25
    assert optim.cosine_decay_schedule(2.0, 1)(0) == 2.0 and optim.cosine_decay_schedule(2.0, 1)(1) == 0.0
    assert optim.cosine_decay_schedule(1.0, 10)(10) == 0.0  # alpha defaults to 0


def test_error_messages_name_the_problem():
    tx = optim.scale_by_adam()
    params = {"a": torch.zeros(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"^state\.mu has structure"):
        tx.update(params, state._replace(mu={"b": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"^state\.nu has structure"):
        tx.update(params, state._replace(nu={"b": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"^updates has structure"):
        optim.apply_updates(params, {"b": torch.zeros(2)})
    with pytest.raises(ValueError, match="chain of 2 transformations got a state of length 1"):
        optim.chain(tx, optim.scale(1.0)).update(params, (state,))
    with pytest.raises(ValueError, match="max_norm must be > 0, got 0"):
        optim.clip_by_global_norm(0)
    with pytest.raises(ValueError, match="transition_steps must be > 0, got 0"):
        optim.exponential_decay(1.0, 0.5, 0)
    with pytest.raises(ValueError, match="decay_steps must be > 0, got 0"):
        optim.cosine_decay_schedule(1.0, 0)
