"""The generator's exponential moving average: the update against torch's AveragedModel, in the game, in
ensembles, through checkpoints, and what sampling reads."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fgm import checkpoint, ensemble, optim, random, train
from fgm.models import gan as G
from fgm.models import networks
from fgm.tree import tree_allclose, tree_equal
from tests.test_gan_state import data, dcgan, double  # the same small DCGAN (BatchNorm in G, spectral norm in D)

LR, DECAY = 2e-3, 0.9


def test_decay_warms_up_like_tensorflow_then_stays_at_beta():
    n = torch.arange(0.0, 200.0)
    beta = G.ema_decay_at(0.95, n)
    torch.testing.assert_close(beta[:3], torch.tensor([1 / 10, 2 / 11, 3 / 12]))
    assert bool((beta <= 0.95).all()) and float(beta[-1]) == pytest.approx(0.95)
    assert bool((beta[1:] >= beta[:-1]).all())


def test_ema_update_equals_torch_averaged_model():
    """AveragedModel with the same per-update decay (its first update copies, as ema_init does)."""
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    decays = []

    def avg_fn(averaged, current, num_averaged):  # num_averaged = 1 on our update 0
        beta = float(G.ema_decay_at(DECAY, torch.tensor(float(num_averaged) - 1.0, dtype=torch.float64)))
        decays.append(beta)
        return beta * averaged + (1.0 - beta) * current

    reference = AveragedModel(module, avg_fn=avg_fn)
    reference.update_parameters(module)
    ema = G.ema_init(dict(module.named_parameters()))
    for t in range(12):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(random.normal(random.key(t), p.shape, dtype=torch.float64))
        reference.update_parameters(module)
        ema = G.ema_update(ema, dict(module.named_parameters()), DECAY)
    averaged = dict(reference.module.named_parameters())
    for name, value in ema["params"].items():
        torch.testing.assert_close(value, averaged[name], rtol=1e-12, atol=1e-12)
    assert float(ema["updates"]) == 12 and len(set(decays)) > 1  # the warm-up was exercised


def test_ema_update_is_pure_and_detached():
    g = {"w": torch.ones(3, requires_grad=True)}
    ema = G.ema_init({"w": torch.zeros(3)})
    new = G.ema_update(ema, g, 0.5)
    assert not new["params"]["w"].requires_grad
    assert torch.equal(ema["params"]["w"], torch.zeros(3)) and float(ema["updates"]) == 0
    torch.testing.assert_close(new["params"]["w"], torch.full((3,), 0.9))  # β₀ = 0.1


def setup(ema=True):
    gan, loss, opt = dcgan(), G.get_loss("non_saturating"), optim.adam(LR, b1=0.5, b2=0.999)
    state = double(G.init_state(gan, opt, opt, random.key(0), ema=ema))
    inputs = G.gan_inputs(gan, loss)
    return gan, loss, opt, state, lambda x, k: double(inputs(x, k))


def test_the_average_follows_g_and_changes_nothing_else():
    """Training with an average takes the same D and G steps; the average is the closed form of G's path."""
    gan, loss, opt, state, make_inputs = setup()
    plain = state._replace(model_state={k: v for k, v in state.model_state.items() if k != G.EMA})
    with_ema = train.step_from_update(G.build(gan, loss, opt, opt, ema_decay=DECAY).make_update(), make_inputs)
    without = train.step_from_update(G.build(gan, loss, opt, opt).make_update(), make_inputs)
    expected = dict(state.params["generator"])
    for t in range(4):
        batch = double(data(t))
        state, _ = with_ema(state, batch, train.step_key(state))
        plain, _ = without(plain, batch, train.step_key(plain))
        beta = float(G.ema_decay_at(DECAY, torch.tensor(float(t), dtype=torch.float64)))
        expected = {k: beta * v + (1 - beta) * state.params["generator"][k] for k, v in expected.items()}
    assert tree_equal(state.params, plain.params)
    assert tree_equal({k: state.model_state[k] for k in ("generator", "discriminator")}, plain.model_state)
    assert tree_allclose(state.model_state[G.EMA]["params"], expected, rtol=1e-12, atol=1e-14)
    assert not tree_allclose(state.model_state[G.EMA]["params"], state.params["generator"])


def test_generate_samples_from_the_average_and_evaluate_plays_with_g():
    gan, loss, opt, state, make_inputs = setup()
    step = train.step_from_update(G.build(gan, loss, opt, opt, ema_decay=DECAY).make_update(), make_inputs)
    for t in range(3):
        state, _ = step(state, double(data(t)), train.step_key(state))
    variables = G.variables(state)
    z = double(G.latent_noise(gan, random.key(5), 4))
    raw = {"generator": variables["generator"], "discriminator": variables["discriminator"]}
    averaged = {"generator": variables[G.EMA], "discriminator": variables["discriminator"]}
    assert torch.equal(G.generate(gan, variables, z), G.generate(gan, averaged, z))
    assert not torch.allclose(G.generate(gan, variables, z), G.generate(gan, raw, z))
    # the average shares G's BatchNorm statistics
    assert variables[G.EMA]["2.running_mean"] is variables["generator"]["2.running_mean"]
    x = double(data(9, 4))
    assert tree_equal(G.evaluate(gan, loss, variables, x, z), G.evaluate(gan, loss, raw, x, z))


def test_a_state_and_an_update_that_disagree_are_refused():
    gan, loss, opt, state, make_inputs = setup(ema=True)
    inputs = make_inputs(double(data(0)), random.key(1))
    with pytest.raises(ValueError, match="no ema_decay"):
        G.build(gan, loss, opt, opt).make_update()(state.params, state.opt_state, state.model_state, *inputs)
    _, _, _, plain, _ = setup(ema=False)
    with pytest.raises(ValueError, match="holds no average"):
        update = G.build(gan, loss, opt, opt, ema_decay=0.9).make_update()
        update(plain.params, plain.opt_state, plain.model_state, *inputs)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        G.build(gan, loss, opt, opt, ema_decay=1.0).make_update()


def test_resume_with_the_average_is_bit_identical(tmp_path):
    gan, loss, opt = dcgan(), G.get_loss("non_saturating"), optim.adam(LR, b1=0.5, b2=0.999)
    state = G.init_state(gan, opt, opt, random.key(0), ema=True)
    step = G.make_gan_step(gan, loss, opt, opt, ema_decay=DECAY)

    def run(state, start, stop):
        for t in range(start, stop):
            state, _ = step(state, data(t), train.step_key(state))
        return state

    straight = run(state, 0, 4)
    checkpoint.save(tmp_path / "c.pt", run(state, 0, 2))
    resumed, _ = checkpoint.load(tmp_path / "c.pt", G.init_state(gan, opt, opt, random.key(7), ema=True))
    assert tree_equal(straight, run(resumed, 2, 4))
    with pytest.raises(checkpoint.CheckpointError):  # a checkpoint without the average does not load into one with it
        checkpoint.save(tmp_path / "plain.pt", G.init_state(gan, opt, opt, random.key(0)))
        checkpoint.load(tmp_path / "plain.pt", state)


def test_ensemble_members_with_the_average_equal_single_runs():
    gan, loss, opt, _, make_inputs = setup()
    singles = [double(G.init_state(gan, opt, opt, random.key(s), ema=True)) for s in (3, 5)]
    trainer = G.build(gan, loss, opt, opt, ema_decay=DECAY)
    single_step = train.step_from_update(trainer.make_update(), make_inputs)
    ens = ensemble.stack_states(singles)
    update = trainer.make_update(backend="func")
    ens_step = ensemble.make_ensemble_step(update, make_inputs)
    for t in range(3):
        batches = [double(data(10 * s + t)) for s in (3, 5)]
        ens, _ = ens_step(ens, batches, ensemble.step_keys(ens))
        for i in range(2):
            singles[i], _ = single_step(singles[i], batches[i], train.step_key(singles[i]))
    for member, single in zip(ensemble.unstack_states(ens, G.GANState), singles, strict=True):
        assert tree_allclose(member.model_state[G.EMA], single.model_state[G.EMA], rtol=1e-8, atol=1e-11)


# --------------------------------------------------------------------------- the average's own BatchNorm statistics


def test_recomputed_batch_stats_equal_torch_batchnorm_reset_and_run_in_training_mode():
    """``recompute_batch_stats`` is ``reset_running_stats()`` then training-mode forwards of nn.BatchNorm2d."""
    gan = dcgan()
    state = double(G.init_state(gan, optim.adam(1e-3), optim.adam(1e-3), random.key(0), ema=True))
    g_params = state.params["generator"]
    # weights other than G's (as an average's are) and statistics that are not the reset values
    other = {
        k: v + 0.05 * random.normal(random.fold_in(random.key(7), i), v.shape, torch.float64)
        for i, (k, v) in enumerate(g_params.items())
    }
    g_state = {k: (v + 0.5 if v.is_floating_point() else v + 3) for k, v in state.model_state["generator"].items()}
    key = random.key(3)
    new = G.recompute_batch_stats(gan, other, g_state, key, num_batches=4, batch_size=16)

    module = networks.mnist_conv_generator(8, 4, True).double()
    module.load_state_dict({**other, **g_state})
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
    module.train()
    with torch.no_grad():
        for i in range(4):
            module(G.latent_noise(gan, random.fold_in(key, i), 16).double())
    expected = {k: v for k, v in module.state_dict().items() if k in g_state}
    assert set(new) == set(g_state) and int(new["2.num_batches_tracked"]) == 4
    assert tree_allclose(new, expected, rtol=1e-12, atol=1e-12)
    # and the average's variables carry them, G's stay
    variables = G.ema_variables_with_batch_stats(
        gan, {"generator": {**g_params, **g_state}, G.EMA: {**other, **g_state}}, key, 4, 16
    )
    assert tree_allclose({k: variables[G.EMA][k] for k in g_state}, new, rtol=0, atol=0)
    assert tree_equal({k: variables["generator"][k] for k in g_state}, g_state)
