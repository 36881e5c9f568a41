"""The GAN with layer state: DCGAN networks for MNIST, BatchNorm in G and spectral norm in D threaded as model state.

The reference for the game itself is the plain PyTorch loop a DCGAN user
writes (``nn.Module`` networks in training mode, ``torch.optim.Adam``,
in-place buffers), run in float64 side by side with fgm's pure update.
"""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments import models
from fgm import checkpoint, ensemble, optim, random, train
from fgm import data as fdata
from fgm import nn as fnn
from fgm.models import gan as G
from fgm.models import networks
from fgm.tree import tree_allclose, tree_clone, tree_equal, tree_map

LATENT, WIDTH, LR = 8, 4, 2e-3


def dcgan(batchnorm=True, spectral=True, latent=LATENT, width=WIDTH):
    return G.make_gan(
        functools.partial(networks.mnist_conv_generator, latent, width, batchnorm),
        functools.partial(networks.mnist_conv_discriminator, width, spectral),
        latent,
        (1, 28, 28),
    )


def double(tree):
    return tree_map(lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, tree)


def data(t, n=8):
    return random.uniform(random.key(1000 + t), (n, 1, 28, 28)) * 2 - 1


def setup(dtype=torch.float64, d_steps=1, **kw):
    gan, loss, opt = dcgan(**kw), G.get_loss("non_saturating"), optim.adam(LR, b1=0.5, b2=0.999)
    state = G.init_state(gan, opt, opt, random.key(0))
    if dtype == torch.float64:
        state = double(state)
    inputs = G.gan_inputs(gan, loss, d_steps)
    make_inputs = (lambda x, k: double(inputs(x, k))) if dtype == torch.float64 else inputs
    return gan, loss, opt, state, make_inputs


# --------------------------------------------------------------------------- the networks


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("spectral", [False, True])
def test_dcgan_shapes_ranges_and_the_state_each_flag_adds(batchnorm, spectral):
    gan = dcgan(batchnorm, spectral)
    key = random.key(0)
    state = G.init_state(gan, optim.adam(LR), optim.adam(LR), key)
    g_state, d_state = state.model_state["generator"], state.model_state["discriminator"]
    assert any(k.endswith("running_mean") for k in g_state) == batchnorm and (g_state == {}) == (not batchnorm)
    assert all(k.endswith(("_u", "_v")) for k in d_state) and (d_state != {}) == spectral
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in gan.generator.modules()) == 2
    assert sum(isinstance(m, nn.Conv2d) for m in gan.discriminator.modules()) == 2
    z = G.latent_noise(gan, key, 5)
    x, _ = gan.generate(state.params["generator"], g_state, z, train=True)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    logits, _ = gan.discriminate(state.params["discriminator"], d_state, x, train=True)
    assert logits.shape == (5,)
    images = G.generate(gan, G.variables(state), z)
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    values = G.evaluate(gan, G.non_saturating(), G.variables(state), x, z)
    assert set(values) == {"d_loss", "g_loss", "d_real", "d_fake"} and all(v.shape == (5,) for v in values.values())
    # the parameter table counts the very parameter trees (spectral norm's weights included)
    for name, shape in (("generator", (1, LATENT)), ("discriminator", (1, 1, 28, 28))):
        rows = fnn.describe(getattr(gan, name), shape)
        assert sum(n for *_, n in rows) == fnn.count_params(state.params[name])


@pytest.mark.parametrize("batchnorm, spectral", [(True, False), (True, True), (False, True), (False, False)])
def test_dcgan_parameter_count_within_25_percent_of_the_vae(batchnorm, spectral):
    spec = fdata.get_spec("mnist")
    from fgm.models import vae as V

    vae_count = fnn.count_params(V.init(models.build_vae(spec, models.MODELS["vae_std"].defaults), random.key(0)))
    gan = dcgan(batchnorm, spectral, latent=64, width=80)  # the networks' defaults, with the GAN's latent size
    gan_count = fnn.count_params(G.init(gan, random.key(0)))
    assert abs(gan_count - vae_count) <= 0.25 * vae_count, (gan_count, vae_count)


# --------------------------------------------------------------------------- the game against a torch loop


def torch_twins(gan, state):
    """The two networks as ordinary float64 nn.Modules (training mode) holding fgm's parameters and buffers."""
    builds = {
        "generator": lambda: networks.mnist_conv_generator(LATENT, WIDTH, True),
        "discriminator": lambda: networks.mnist_conv_discriminator(WIDTH, True),
    }
    nets = []
    for name, build in builds.items():
        module = build().double()
        module.load_state_dict(G.variables(state)[name])  # variables are state_dicts
        nets.append(module.train())
    return nets


def test_stateful_game_equals_a_torch_module_loop():
    """BatchNorm in G and spectral norm in D, three iterations of two D steps and a G step, in float64."""
    gan, loss, opt, state, make_inputs = setup(d_steps=2)
    net_g, net_d = torch_twins(gan, state)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=LR, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=LR, betas=(0.5, 0.999))
    step = train.step_from_update(G.build(gan, loss, opt, opt).make_update(), make_inputs)
    for t in range(3):
        key = train.step_key(state)
        reals, d_noise, z_g = make_inputs(double(data(t, 16)), key)
        state, metrics = step(state, double(data(t, 16)), key)
        for real, (z,) in zip(
            reals, d_noise, strict=True
        ):  # the D steps: G draws fakes in training mode, without a graph
            with torch.no_grad():
                fake = net_g(z)
            d_loss = (F.softplus(-net_d(real).squeeze(-1)) + F.softplus(net_d(fake).squeeze(-1))).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        g_loss = F.softplus(-net_d(net_g(z_g)).squeeze(-1)).mean()  # the G step, D in training mode too
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        torch.testing.assert_close(metrics["d_loss"], d_loss.detach(), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(metrics["g_loss"], g_loss.detach(), rtol=1e-9, atol=1e-12)
        for name, net in (("generator", net_g), ("discriminator", net_d)):
            assert tree_allclose(G.variables(state)[name], dict(net.state_dict()), rtol=1e-8, atol=1e-10), (name, t)
    # G ran once per D step and once in the G step: three BatchNorm updates per iteration
    assert int(state.model_state["generator"]["2.num_batches_tracked"]) == 3 * 3


def test_d_step_moves_both_networks_state_but_only_the_d_parameters():
    """Each player's objective moves both networks' layer state; a frozen player's parameters stay."""
    gan, loss, opt, state, make_inputs = setup()
    reals, ((z,),), z_g = make_inputs(double(data(0)), random.key(5))
    params, model_state = state.params, state.model_state
    _, (_, after_d) = G.discriminator_objective_and_state(
        gan, loss, params["discriminator"], params["generator"], model_state, reals[0], z
    )
    assert not tree_equal(after_d["generator"], model_state["generator"])  # G draws the fakes in training mode
    assert not tree_equal(after_d["discriminator"], model_state["discriminator"])
    _, (_, after_g) = G.generator_objective_and_state(
        gan, loss, params["generator"], params["discriminator"], model_state, z_g
    )
    assert not tree_equal(after_g["discriminator"], model_state["discriminator"])  # D judges in training mode
    frozen = optim.adam(0.0)
    for g_opt, d_opt, still in ((frozen, opt, "generator"), (opt, frozen, "discriminator")):
        start = double(G.init_state(gan, g_opt, d_opt, random.key(0)))
        params, _, model_state, _ = G.build(gan, loss, g_opt, d_opt).make_update()(
            start.params, start.opt_state, start.model_state, reals, ((z,),), z_g
        )
        assert tree_equal(params[still], start.params[still])
        assert not tree_equal(model_state[still], start.model_state[still])


def test_steps_do_not_mutate_their_inputs():
    gan, loss, opt, state, make_inputs = setup(torch.float32)
    step = G.make_gan_step(gan, loss, opt, opt)
    state, _ = step(state, data(0), random.key(1))
    trees = lambda s: (s.params, s.opt_state, s.model_state)  # noqa: E731
    before = tree_clone(trees(state))
    x = data(1)
    step(state, x, random.key(2))
    reals, d_noise, z_g = make_inputs(x, random.key(3))
    G.build(gan, loss, opt, opt).make_update()(state.params, state.opt_state, state.model_state, reals, d_noise, z_g)
    G.generate(gan, G.variables(state), z_g)
    assert tree_equal(before, trees(state))


def test_generate_and_evaluate_use_the_running_statistics():
    """Sampling is evaluation mode: torch's G.eval() with the same state_dict, and the state is untouched."""
    gan, loss, opt, state, make_inputs = setup()
    step = train.step_from_update(G.build(gan, loss, opt, opt).make_update(), make_inputs)
    state, _ = step(state, double(data(0)), random.key(1))
    net_g, _ = torch_twins(gan, state)
    z = double(G.latent_noise(gan, random.key(2), 6))
    before = tree_clone(state.model_state)
    images = G.generate(gan, G.variables(state), z)
    torch.testing.assert_close(images, G.to_unit_interval(net_g.eval()(z)).detach(), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(images, G.to_unit_interval(net_g.train()(z)).detach())  # batch statistics differ
    assert tree_equal(before, state.model_state)
    one = G.generate(gan, G.variables(state), z[:1])  # a batch of one: fine with running statistics
    torch.testing.assert_close(one, images[:1], rtol=1e-12, atol=1e-12)
    net_g, net_d = torch_twins(gan, state)  # afresh: the train-mode call above moved net_g's statistics
    values = G.evaluate(gan, loss, G.variables(state), double(data(3, 6)), z)
    with torch.no_grad():
        want = torch.sigmoid(net_d.eval()(net_g.eval()(z)).squeeze(-1))  # D's stored u, v: no power iteration
    torch.testing.assert_close(values["d_fake"], want, rtol=1e-12, atol=1e-12)
    assert tree_equal(before, state.model_state)


# --------------------------------------------------------------------------- checkpoints, resume, ensembles


def test_checkpoint_round_trips_the_model_state_and_refuses_another_architecture(tmp_path):
    gan, loss, opt, state, _ = setup(torch.float32)
    state, _ = G.make_gan_step(gan, loss, opt, opt)(state, data(0), random.key(1))
    checkpoint.save(tmp_path / "c.pt", state)
    loaded, _ = checkpoint.load(tmp_path / "c.pt", G.init_state(gan, opt, opt, random.key(9)))
    assert tree_equal(loaded, state)
    plain = dcgan(batchnorm=False, spectral=False)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(tmp_path / "c.pt", G.init_state(plain, opt, opt, random.key(9)))


def test_resume_is_bit_identical(tmp_path):
    """N steps straight equal k steps, a checkpoint save and load, and N - k steps, bit for bit."""
    gan, loss, opt, state, _ = setup(torch.float32)
    step = G.make_gan_step(gan, loss, opt, opt)

    def run(state, start, stop):
        for t in range(start, stop):
            state, _ = step(state, data(t), train.step_key(state))
        return state

    straight = run(state, 0, 5)
    checkpoint.save(tmp_path / "c.pt", run(state, 0, 2))
    resumed, _ = checkpoint.load(tmp_path / "c.pt", G.init_state(gan, opt, opt, random.key(7)))
    resumed = run(resumed, 2, 5)
    assert tree_equal(straight, resumed)
    assert int(straight.model_state["generator"]["2.num_batches_tracked"]) == 2 * 5


@pytest.mark.parametrize("donate", [False, True])
def test_ensemble_members_equal_single_runs(donate):
    """Two members vmapped (func backend, stacked params, optimizer and layer state) against two single runs."""
    gan, loss, opt, _, make_inputs = setup()
    singles = [double(G.init_state(gan, opt, opt, random.key(s))) for s in (3, 5)]
    trainer = G.build(gan, loss, opt, opt)
    single_step = train.step_from_update(trainer.make_update(), make_inputs)
    ens = ensemble.stack_states(singles)
    assert isinstance(ens, ensemble.EnsembleState) and ens.model_state["generator"]
    update = trainer.make_update(backend="func", donate=donate)
    ens_step = ensemble.make_ensemble_step(update, make_inputs)
    for t in range(3):
        batches = [double(data(10 * s + t)) for s in (3, 5)]
        ens, metrics = ens_step(ens, batches, ensemble.step_keys(ens))
        for i in range(2):
            singles[i], m = single_step(singles[i], batches[i], train.step_key(singles[i]))
            for name, value in m.items():
                torch.testing.assert_close(metrics[name][i], value, rtol=1e-9, atol=1e-12)
    for member, single in zip(ensemble.unstack_states(ens, G.GANState), singles, strict=True):
        assert tree_allclose(member, single, rtol=1e-8, atol=1e-11)
    # the loop's form: the update over the stacked trees (vmap_update), as experiments' member step
    mapped = trainer.make_update(stacked=True)
    inputs = ensemble.stack([make_inputs(double(data(99)), k) for k in ensemble.step_keys(ens)])
    params, opt_state, model_state, metrics = mapped(ens.params, ens.opt_state, ens.model_state, *inputs)
    assert metrics["loss"].shape == (2,) and int(model_state["generator"]["2.num_batches_tracked"][1]) == 2 * 4


def test_trainer_surface_for_the_loop():
    gan, loss, opt = dcgan(), G.get_loss("hinge"), optim.adam(LR)
    trainer = G.build(gan, loss, opt, opt)
    state = trainer.init(random.key(0))
    assert set(trainer.variables(state)) == {"generator", "discriminator"}
    update = trainer.make_update()
    params, opt_state, model_state, metrics = update(
        state.params, state.opt_state, state.model_state, *trainer.inputs(data(0), random.key(1))
    )
    state = state._replace(params=params, opt_state=opt_state, model_state=model_state, step=1)
    z = trainer.noise(random.key(2), 3)
    assert trainer.generate(trainer.variables(state), z).shape == (3, 1, 28, 28)
    assert trainer.evaluate(trainer.variables(state), data(1, 3), random.key(3))["d_loss"].shape == (3,)


@pytest.mark.slow
def test_compiled_update_equals_eager():
    """torch.compile of each player's objective and gradient (BatchNorm in G, spectral norm in D, the average of G)."""
    gan, loss, opt, state, make_inputs = setup()
    state = double(G.init_state(gan, opt, opt, random.key(0), ema=True))
    trainer = G.build(gan, loss, opt, opt, ema_decay=0.9)
    eager = train.step_from_update(trainer.make_update(), make_inputs)
    update = trainer.make_update(donate=True, compile=True)
    compiled = train.step_from_update(update, make_inputs)
    a, b = state, double(G.init_state(gan, opt, opt, random.key(0), ema=True))  # donation consumes b
    for t in range(3):
        a, ma = eager(a, double(data(t)), train.step_key(a))
        b, mb = compiled(b, double(data(t)), train.step_key(b))
        assert tree_allclose(ma, mb, rtol=1e-10, atol=1e-12)
    assert tree_allclose(a, b, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="autograd backend"):
        G.build(gan, G.get_loss("wgan_gp"), opt, opt).make_update(compile=True)


# --------------------------------------------------------------------------- compiled seed ensembles


def _stacked_game(trainer, update, members=2, steps=3, d_steps=2):
    """``steps`` updates of ``members`` stacked float64 members, each with its own real batches and noise."""
    ens = ensemble.stack_states([double(trainer.init(random.key(s))) for s in range(members)])
    params, opt_state, model_state, history = ens.params, ens.opt_state, ens.model_state, []
    for t in range(steps):
        batches = [double(data(100 * m + t, n=8 * d_steps)) for m in range(members)]  # one real batch per D step
        keys = [random.fold_in(random.key(50 + m), t) for m in range(members)]
        inputs = ensemble.stack([trainer.inputs(x, k) for x, k in zip(batches, keys, strict=True)])
        params, opt_state, model_state, metrics = update(params, opt_state, model_state, *inputs)
        history.append(metrics)
    return params, opt_state, model_state, history


def _ensemble_trainer(d_steps=2, ema_decay=0.9):
    """BatchNorm in G, spectral norm in D, two D steps per G step, the average of G: float64 inputs."""
    gan, loss, opt = dcgan(), G.get_loss("non_saturating"), optim.adam(LR, b1=0.5)
    trainer = G.build(gan, loss, opt, optim.adam(LR / 2, b1=0.5), d_steps, ema_decay)
    return trainer._replace(inputs=lambda x, k: double(trainer.inputs(x, k)))


@pytest.mark.parametrize("donate", [False, True])
def test_stacked_update_is_the_vmapped_update(monkeypatch, donate):
    """``--compile --seeds N`` with torch.compile taken out: each player's gradient vmapped, then its optimizer
    and the average mapped, is the whole single-model update vmapped, bit for bit."""
    trainer = _ensemble_trainer()
    whole = _stacked_game(trainer, trainer.make_update(stacked=True))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    split = _stacked_game(trainer, trainer.make_update(stacked=True, compile=True, donate=donate))
    assert tree_equal(whole, split)
    params, opt_state, model_state, _ = split
    assert int(model_state["generator"]["2.num_batches_tracked"][1]) == 3 * (2 + 1)  # 2 D steps' fakes, 1 G step
    assert model_state[G.EMA]["updates"].tolist() == [3.0, 3.0]
    assert opt_state["discriminator"][0].count.tolist() == [6, 6] and opt_state["generator"][0].count.tolist() == [3, 3]


@pytest.mark.slow
def test_compiled_stacked_update_equals_eager():
    """One compiled graph per player for all members (the D steps share theirs), equal to eager to float64 rounding.

    Not bit for bit: inductor fuses and reorders the float64 arithmetic (differences ~1e-14), as for the VAEs.
    """
    trainer = _ensemble_trainer()
    eager = _stacked_game(trainer, trainer.make_update(stacked=True))
    stats = torch._dynamo.utils.counters
    torch._dynamo.reset()  # no cache entries from other tests' graphs (they count towards the recompile limit)
    stats.clear()
    compiled = _stacked_game(trainer, trainer.make_update(stacked=True, compile=True, donate=True))
    assert tree_allclose(eager, compiled, rtol=1e-9, atol=1e-12)
    assert stats["stats"]["unique_graphs"] == 2 and not stats["graph_break"]  # D's and G's, nothing eager
