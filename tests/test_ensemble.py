"""Seed ensembles: stacking, the vmap-able optimizer path, donation, and members equal to single runs."""

import functools
from collections.abc import Callable
from typing import NamedTuple

import optree
import pytest
import torch

from experiments import models
from fgm import bijectors, checkpoint, ensemble, optim, random, train
from fgm import data as fdata
from fgm.models import gan as G
from fgm.models import networks
from fgm.models import vae as vae_lib
from fgm.tree import tree_allclose, tree_clone, tree_equal


def _double(tree):
    return optree.tree_map(lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, tree)


def _tree(seed, shapes=({"w": (3, 4), "b": (4,)}, (2,))):
    gen = torch.Generator().manual_seed(seed)
    return optree.tree_map(
        lambda s: torch.randn(s, generator=gen, dtype=torch.float64),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x),
    )


# --------------------------------------------------------------------------- stacking


def test_stack_unstack_round_trip():
    trees = [_tree(s) for s in range(3)]
    stacked = ensemble.stack(trees)
    assert stacked[0]["w"].shape == (3, 3, 4) and stacked[1].shape == (3, 2)
    assert ensemble.num_members(stacked) == 3
    assert all(tree_equal(a, b) for a, b in zip(ensemble.unstack(stacked), trees, strict=True))
    assert tree_equal(ensemble.member(stacked, 1), trees[1])
    # new memory: stacking copies, so the members' trees stay independent
    stacked[0]["w"].zero_()
    assert not torch.equal(trees[0][0]["w"], torch.zeros(3, 4))


def test_stack_rejects_mismatched_structures():
    with pytest.raises(ValueError, match="structure"):
        ensemble.stack([{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    with pytest.raises(ValueError, match="at least one"):
        ensemble.stack([])


def test_stack_states_round_trip_keeps_keys_steps_and_optimizer_state():
    opt = optim.adam(optim.cosine_decay_schedule(1e-2, 10))
    states = []
    for s in range(3):
        params = _tree(s)
        state = train.init_state(params, opt, random.key(s))
        updates, opt_state = opt.update(_tree(10 + s), state.opt_state, params)
        states.append(state._replace(params=optim.apply_updates(params, updates), opt_state=opt_state, step=1))
    stacked = ensemble.stack_states(states)
    assert stacked.step == 1 and stacked.keys == tuple(random.key(s) for s in range(3))
    assert stacked.opt_state[0].count.tolist() == [1, 1, 1]
    back = ensemble.unstack_states(stacked)
    assert all(tree_equal(a, b) for a, b in zip(back, states, strict=True))
    assert ensemble.step_keys(stacked) == [train.step_key(s) for s in states]
    with pytest.raises(ValueError, match="same step"):
        ensemble.stack_states([states[0], states[1]._replace(step=2)])


def test_stacked_state_checkpoints(tmp_path):
    opt = optim.adam(1e-2)
    stacked = ensemble.stack_states([train.init_state(_tree(s), opt, random.key(s)) for s in range(2)])
    checkpoint.save(tmp_path / "c.pt", stacked, {"epoch": 1})
    loaded, meta = checkpoint.load(tmp_path / "c.pt", stacked)
    assert tree_equal(loaded, stacked) and meta["epoch"] == 1


# --------------------------------------------------------------------------- optimizer under vmap, donation


def _transforms():
    return {
        "adam": optim.adam(1e-2),
        "adam-schedule": optim.adam(optim.cosine_decay_schedule(1e-2, 10)),
        "scale_by_adam": optim.scale_by_adam(0.5, 0.9, 1e-6),
        "clip-adamw": optim.chain(
            optim.clip_by_global_norm(0.5),
            optim.scale_by_adam(),
            optim.add_decayed_weights(1e-2),
            optim.scale_by_learning_rate(optim.exponential_decay(1e-2, 0.5, 3)),
        ),
    }


@pytest.mark.parametrize("name", list(_transforms()))
def test_vmapped_optimizer_equals_each_member(name):
    """Inside vmap the per-leaf path runs; it must agree with the _foreach path member by member."""
    tx = _transforms()[name]
    update = ensemble.vmap_update(lambda p, s, m, g: (*_step(tx, p, s, g), m, {}))
    params = [_tree(s) for s in range(3)]
    states = [tx.init(p) for p in params]
    stacked_p, stacked_s = ensemble.stack(params), ensemble.stack(states)
    for k in range(4):
        grads = [_tree(100 * k + s) for s in range(3)]
        stacked_p, stacked_s, _, _ = update(stacked_p, stacked_s, {}, ensemble.stack(grads))
        for i in range(3):
            params[i], states[i] = _step(tx, params[i], states[i], grads[i])
    for i in range(3):
        got = (ensemble.member(stacked_p, i), ensemble.member(stacked_s, i))
        if name == "clip-adamw":  # Tensor.norm and _foreach_norm may sum in another order
            assert tree_allclose(got, (params[i], states[i]), rtol=1e-13, atol=0)
        else:
            assert tree_equal(got, (params[i], states[i]))


def _step(tx, params, state, grads, donate=False):
    updates, state = tx.update(grads, state, params, **({"donate": True} if donate else {}))
    return optim.apply_updates(params, updates, donate=donate), state


def test_counters_must_be_shared():
    tx = optim.adam(1e-2)
    update = ensemble.vmap_update(lambda p, s, m, g: (*_step(tx, p, s, g), m, {}))
    stacked = ensemble.stack([tx.init(_tree(0)), tx.init(_tree(1))])
    stacked = (stacked[0]._replace(count=torch.tensor([0, 1])), stacked[1])
    with pytest.raises(ValueError, match="step counters"):
        update(ensemble.stack([_tree(0), _tree(1)]), stacked, ensemble.stack([_tree(2), _tree(3)]))


@pytest.mark.parametrize("name", [*_transforms(), "sgd"])
def test_donation_is_bitwise_the_pure_update_and_reuses_buffers(name):
    tx = _transforms().get(name) or optim.scale_by_learning_rate(0.1)
    pure_p, don_p = _tree(0), _tree(0)
    pure_s, don_s = tx.init(pure_p), tx.init(don_p)
    for k in range(4):
        grads = _tree(10 + k)
        pure_p, pure_s = _step(tx, pure_p, pure_s, grads)
        old = {t.data_ptr() for t in optree.tree_leaves((don_p, don_s)) if t.is_floating_point() and t.numel()}
        don_p, don_s = _step(tx, don_p, don_s, grads, donate=True)
        new = {t.data_ptr() for t in optree.tree_leaves((don_p, don_s)) if t.is_floating_point() and t.numel()}
        assert new == old  # parameters and moments were updated where they were
        assert tree_equal((pure_p, pure_s), (don_p, don_s))


@pytest.mark.parametrize("name", ["adam", "adam-schedule", "clip-adamw"])
def test_donated_gradients_become_the_updates(name):
    tx = _transforms()[name]
    params = _tree(0)
    grads = _tree(1)
    updates, _ = tx.update(grads, tx.init(params), params, donate=True)
    assert [u.data_ptr() for u in optree.tree_leaves(updates)] == [g.data_ptr() for g in optree.tree_leaves(grads)]


def test_donation_does_not_write_into_shared_or_expanded_gradients():
    # autograd may hand one gradient tensor to two leaves, or an expanded one
    g = torch.ones(3, dtype=torch.float64)
    params = {"a": torch.zeros(3, dtype=torch.float64), "b": torch.zeros(3, dtype=torch.float64)}
    for grads in (
        {"a": g, "b": g},
        {"a": torch.ones((), dtype=torch.float64).expand(3), "b": torch.ones(3, dtype=torch.float64)},
    ):
        before = tree_clone(grads)
        for tx in [*_transforms().values(), optim.scale_by_learning_rate(0.1)]:
            pure, _ = tx.update(grads, tx.init(params), params)
            donated, _ = tx.update(grads, tx.init(params), params, donate=True)
            assert tree_equal(grads, before) and tree_equal(pure, donated)


# --------------------------------------------------------------------------- members equal single runs


class Setup(NamedTuple):
    """One model's pieces in float64, so that comparisons test the bookkeeping, not float32 rounding."""

    init: Callable  # key -> TrainState
    make_update: Callable  # (backend=..., donate=...) -> update
    make_inputs: Callable  # (batch, key) -> inputs
    data: Callable  # (seed, t) -> batch


_VAE_CONFIG = {
    "latent_dim": 4,
    "hidden": [24, 12],
    "width": 8,
    "flow_layers": 2,
    "flow_hidden": [8],
    "lr": 3e-3,
    "lr_schedule": "cosine",
    "lr_final_fraction": 0.1,
    "total_steps": 6,
}


def _vae_setup(flow: bool) -> Setup:
    trainer = (models.vae_flow if flow else models.vae_std)(fdata.get_spec("mnist"), _VAE_CONFIG).trainer
    return Setup(
        init=lambda key: _double(trainer.init(key)),
        make_update=trainer.make_update,
        make_inputs=lambda x, key: _double(trainer.inputs(x, key)),
        data=lambda seed, t: random.bernoulli(
            random.fold_in(random.key(100 + seed), t), torch.full((8, 1, 28, 28), 0.3)
        ),
    )


def _gan_setup() -> Setup:
    shape = (1, 28, 28)
    gan = G.make_gan(
        lambda: networks.mnist_mlp_generator(4, (8, 16), shape),
        lambda: networks.mnist_mlp_discriminator((16, 8), shape),
        4,
        shape,
    )
    opt = optim.adam(2e-3, b1=0.5)
    trainer = G.build(gan, G.get_loss("non_saturating"), opt, opt, d_steps_per_g_step=2)
    return Setup(
        init=lambda key: _double(trainer.init(key)),
        make_update=trainer.make_update,
        make_inputs=lambda x, key: _double(trainer.inputs(x, key)),
        data=lambda seed, t: random.uniform(random.fold_in(random.key(100 + seed), t), (8, *shape)) * 2 - 1,
    )


@pytest.mark.parametrize("model", ["vae_std", "vae_flow", "gan"])
@pytest.mark.parametrize("donate", [False, True])
def test_ensemble_members_equal_separate_runs(model, donate):
    setup = _gan_setup() if model == "gan" else _vae_setup(model == "vae_flow")
    seeds = [3, 5, 7]
    singles = [setup.init(random.key(s)) for s in seeds]
    single_step = train.step_from_update(setup.make_update(), setup.make_inputs)  # autograd, no vmap
    ens = ensemble.stack_states(singles)
    ens_step = ensemble.make_ensemble_step(setup.make_update(backend="func", donate=donate), setup.make_inputs)
    for t in range(3):
        batches = [setup.data(s, t) for s in seeds]
        ens, metrics = ens_step(ens, batches, ensemble.step_keys(ens))
        for i in range(len(seeds)):
            singles[i], m = single_step(singles[i], batches[i], train.step_key(singles[i]))
            for name, value in m.items():
                torch.testing.assert_close(metrics[name][i], value, rtol=1e-10, atol=1e-12)
    assert ens.step == 3 and all(s.step == 3 for s in singles)
    for member, single in zip(ensemble.unstack_states(ens, type(singles[0])), singles, strict=True):
        assert type(member) is type(single) and member.key == single.key
        assert tree_allclose(
            (member.params, member.opt_state, member.model_state),
            (single.params, single.opt_state, single.model_state),
            rtol=1e-9,
            atol=1e-12,
        )


def test_shared_inputs_are_broadcast_to_all_members():
    tx = optim.adam(1e-2)
    update = lambda p, s, m, g: (*_step(tx, p, s, g), m, {})  # noqa: E731 - a one-line function beside its only use
    params = ensemble.stack([_tree(0), _tree(1)])
    state = ensemble.stack([tx.init(_tree(0)), tx.init(_tree(1))])
    grads = _tree(2)
    shared = ensemble.vmap_update(update, input_dims=None)(params, state, {}, grads)
    stacked = ensemble.vmap_update(update)(params, state, {}, ensemble.stack([grads, grads]))
    assert tree_equal(shared, stacked)


def test_ensemble_step_checks_its_arguments():
    setup = _vae_setup(flow=False)
    ens = ensemble.stack_states([setup.init(random.key(s)) for s in (0, 1)])
    step = ensemble.make_ensemble_step(setup.make_update(backend="func"), setup.make_inputs)
    with pytest.raises(ValueError, match="2 members need 2 batches"):
        step(ens, [setup.data(0, 0)], ensemble.step_keys(ens))


@pytest.mark.parametrize("model", ["vae_std", "gan"])
def test_recipe_step_is_its_update_and_donation_changes_nothing(model):
    setup = _gan_setup() if model == "gan" else _vae_setup(flow=False)
    pure = train.step_from_update(setup.make_update(), setup.make_inputs)
    donating = train.step_from_update(setup.make_update(donate=True), setup.make_inputs)
    a = setup.init(random.key(0))
    b = a._replace(params=tree_clone(a.params), opt_state=tree_clone(a.opt_state))
    for t in range(3):
        a, ma = pure(a, setup.data(0, t), train.step_key(a))
        b, mb = donating(b, setup.data(0, t), train.step_key(b))
        assert tree_equal(ma, mb)
    assert tree_equal(a, b)


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_compiled_update_equals_eager():
    setup = _vae_setup(flow=False)
    eager = train.step_from_update(setup.make_update(), setup.make_inputs)
    compiled = train.step_from_update(setup.make_update(compile=True, donate=True), setup.make_inputs)
    a = setup.init(random.key(0))
    b = a._replace(params=tree_clone(a.params), opt_state=tree_clone(a.opt_state))
    for t in range(3):
        a, ma = eager(a, setup.data(0, t), train.step_key(a))
        b, mb = compiled(b, setup.data(0, t), train.step_key(b))
        # inductor fuses and reorders float64 arithmetic: equal to rounding
        assert tree_allclose(ma, mb, rtol=1e-10, atol=1e-10)
    assert tree_allclose((a.params, a.opt_state), (b.params, b.opt_state), rtol=1e-9, atol=1e-12)


def _stacked_run(setup, update, steps=3, members=2):
    """``steps`` updates of ``members`` stacked members, each on its own data and noise."""
    states = ensemble.stack_states([setup.init(random.key(s)) for s in range(members)])
    params, opt_state, model_state, history = states.params, states.opt_state, states.model_state, []
    for t in range(steps):
        keys = [random.fold_in(random.key(50 + m), t) for m in range(members)]
        inputs = ensemble.stack([tuple(setup.make_inputs(setup.data(m, t), k)) for m, k in enumerate(keys)])
        params, opt_state, model_state, metrics = update(params, opt_state, model_state, *inputs)
        history.append(metrics)
    return params, opt_state, history


@pytest.mark.parametrize("flow", [False, True])
def test_stacked_update_is_the_vmapped_update(flow):
    """The trainer's ``stacked`` update (gradient vmapped, then the optimizer) is the whole update vmapped."""
    setup = _vae_setup(flow)
    whole = ensemble.vmap_update(setup.make_update(backend="func"))
    split = ensemble.make_update(*_loss_and_optimizer(flow))
    a, b = _stacked_run(setup, whole), _stacked_run(setup, split)
    assert tree_equal(a, b)


@pytest.mark.slow
def test_compiled_stacked_update_equals_eager():
    """``--compile --seeds N``: one compiled graph for all members' gradients, equal to eager in float64."""
    setup = _vae_setup(flow=True)
    eager = _stacked_run(setup, setup.make_update(stacked=True))
    compiled = _stacked_run(setup, setup.make_update(stacked=True, compile=True, donate=True))
    assert tree_allclose(eager, compiled, rtol=1e-9, atol=1e-12)


def test_compiled_stacked_gan_update_is_offered_except_for_wgan_gp():
    """The GAN's compiled members are tested in test_gan_state.py; WGAN-GP's penalty differentiates twice."""
    config = {**models.defaults("gan", "mnist", "smoke"), "total_steps": 4}
    models.gan(fdata.get_spec("mnist"), config).trainer.make_update(stacked=True, compile=True)
    trainer = models.gan(fdata.get_spec("mnist"), {**config, "loss": "wgan_gp"}).trainer
    with pytest.raises(ValueError, match="wgan_gp loss needs the autograd backend"):
        trainer.make_update(stacked=True, compile=True)


def _loss_and_optimizer(flow: bool):
    """The loss and optimizer of ``_vae_setup(flow)``'s trainer, built as ``experiments.models`` does."""
    c = _VAE_CONFIG
    prior = vae_lib.flow_prior(bijectors.realnvp(c["latent_dim"], c["flow_layers"], tuple(c["flow_hidden"])))
    vae = models.build_vae(fdata.get_spec("mnist"), c, prior=prior if flow else None)
    return functools.partial(vae_lib.loss, vae), models.adam(c, c["total_steps"])


def test_first_nonfinite_step_keeps_each_members_first_bad_step():
    first = None
    losses = {3: [1.0, 2.0, 3.0], 4: [float("nan"), 1.0, 2.0], 5: [1.0, float("inf"), float("nan")], 6: [1.0] * 3}
    for step, loss in losses.items():
        first = train.first_nonfinite_step(first, torch.tensor(loss), step)
    assert first.tolist() == [4, 5, 5] and first.dtype == torch.int64
