"""GAN: pure game iterations (the Trainer's update), the adversarial losses, sizes, monitor and the CLI."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import models, run, rundir
from fgm import checkpoint, optim, random, train
from fgm import data as fdata
from fgm import nn as fnn
from fgm.models import gan as G
from fgm.models import networks
from fgm.tree import tree_clone, tree_equal

LATENT = 4
SHAPE = (1, 28, 28)


def small_gan(shape=SHAPE):
    return G.make_gan(
        lambda: networks.mnist_mlp_generator(LATENT, (16, 32), shape),
        lambda: networks.mnist_mlp_discriminator((32, 16), shape),
        LATENT,
        shape,
    )


def small_conv_gan():
    return G.make_gan(
        lambda: networks.svhn_conv_generator(LATENT, 4, 3),
        lambda: networks.svhn_conv_discriminator(4, 3),
        LATENT,
        (3, 32, 32),
    )


def adam(lr=1e-4):
    return optim.adam(lr, b1=0.5, b2=0.999)


def setup(key, loss="non_saturating", lr=1e-4, gan=None):
    gan = gan or small_gan()
    opt = adam(lr)
    return gan, G.get_loss(loss), opt, G.init_state(gan, opt, opt, key)


def real_batch(key, n=16, shape=SHAPE):
    """A stand-in for data in [-1, 1]: bright blobs on a dark background."""
    return (random.uniform(key, (n, *shape)) ** 4) * 2 - 1


def iterate(gan, adv, state, reals, d_noise, z_g, g_opt, d_opt=None):
    """One game iteration of the public path (``build(...).make_update()``) on the given inputs."""
    update = G.build(gan, adv, g_opt, d_opt or g_opt).make_update()
    params, opt_state, model_state, metrics = update(
        state.params, state.opt_state, state.model_state, reals, d_noise, z_g
    )
    return state._replace(params=params, opt_state=opt_state, model_state=model_state), metrics


def by_hand(gan, adv, opt, state, reals, d_noise, z_g):
    """The same iteration from the public objectives and the optimizer: a D step per real batch, then a G step."""

    def step(params, opt_state, player, objective):
        _, grads = train.value_and_grad(objective)(params[player])
        updates, player_state = opt.update(grads, opt_state[player], params[player])
        params = {**params, player: optim.apply_updates(params[player], updates)}
        return params, {**opt_state, player: player_state}

    params, opt_state = state.params, state.opt_state
    g_params = params["generator"]  # fixed during the D steps
    for real, noise in zip(reals, d_noise, strict=True):  # each objective is called at once, in its own iteration

        def d_objective(d, real=real, noise=noise):  # this iteration's batch, bound now
            return G.discriminator_objective(gan, adv, d, g_params, real, *noise)

        params, opt_state = step(params, opt_state, "discriminator", d_objective)
    d_params = params["discriminator"]
    return step(params, opt_state, "generator", lambda g: G.generator_objective(gan, adv, g, d_params, z_g))


def sigmoid_fake(gan, params, z):
    fake, _ = gan.generate(params["generator"], {}, z, train=True)
    return torch.sigmoid(gan.discriminate(params["discriminator"], {}, fake, train=True)[0]).mean()


# --------------------------------------------------------------------------- purity and determinism


def test_steps_do_not_mutate_their_inputs(key):
    gan, loss, opt, state = setup(key)
    x, z = real_batch(random.fold_in(key, 1)), G.latent_noise(gan, random.fold_in(key, 2), 16)
    # one step first, so the Adam moments are non-zero and would show an in-place write
    state, _ = G.make_gan_step(gan, loss, opt, opt)(state, x, random.fold_in(key, 3))
    before = tree_clone((state.params, state.opt_state, x, z))
    iterate(gan, loss, state, (x,), ((z,),), z, opt)
    G.make_gan_step(gan, loss, opt, opt)(state, x, random.fold_in(key, 4))
    assert tree_equal(before, (state.params, state.opt_state, x, z))


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "wgan_gp"])
def test_same_key_gives_bitwise_the_same_step(key, loss):
    gan, adv, opt, state = setup(key, loss)
    step = G.make_gan_step(gan, adv, opt, opt, d_steps_per_g_step=2)
    x = real_batch(random.fold_in(key, 1))
    a, ma = step(state, x, random.key(7))
    b, mb = step(state, x, random.key(7))
    c, _ = step(state, x, random.key(8))
    assert tree_equal((a.params, a.opt_state, ma), (b.params, b.opt_state, mb))
    assert not tree_equal(a.params, c.params)  # the key does drive the noise
    assert a.step == state.step + 1


def test_d_step_leaves_the_generator_alone_and_vice_versa(key):
    """With one player's learning rate at 0, a game iteration moves the other player's parameters only."""
    gan, loss, opt, state = setup(key)
    x, z = real_batch(random.fold_in(key, 1)), G.latent_noise(gan, random.fold_in(key, 2), 16)
    frozen = adam(0.0)
    for g_opt, d_opt, moved, still in (
        (frozen, opt, "discriminator", "generator"),
        (opt, frozen, "generator", "discriminator"),
    ):
        start = G.init_state(gan, g_opt, d_opt, key)
        new, _ = iterate(gan, loss, start, (x,), ((z,),), z, g_opt, d_opt)
        assert tree_equal(new.params[still], start.params[still])
        assert not tree_equal(new.params[moved], start.params[moved])
        assert new.step == start.step  # the update does not count: the step function does


def test_d_steps_per_g_step_counts_optimizer_updates(key):
    gan, loss, opt, state = setup(key)
    state, _ = G.make_gan_step(gan, loss, opt, opt, d_steps_per_g_step=3)(state, real_batch(key, n=48), key)
    count = lambda s: int(s[0].count)  # noqa: E731  (adam state = (ScaleByAdamState, lr state))
    assert count(state.opt_state["discriminator"]) == 3 and count(state.opt_state["generator"]) == 1
    with pytest.raises(ValueError, match="d_steps_per_g_step"):
        G.make_gan_step(gan, loss, opt, opt, d_steps_per_g_step=0)


@pytest.mark.parametrize("loss", ["non_saturating", "wgan_gp"])
def test_each_d_step_takes_its_own_real_batch(key, loss):
    """Two D steps and a G step, from one batch of 2B images, equal the player steps on its two halves."""
    gan, adv, opt, state = setup(key, loss)
    x, step_key = real_batch(random.fold_in(key, 1), n=32), random.fold_in(key, 2)
    reals, d_noise, z_g = G.gan_inputs(gan, adv, d_steps_per_g_step=2)(x, step_key)
    assert [r.shape[0] for r in reals] == [16, 16] and z_g.shape[0] == 16
    expected, expected_opt = by_hand(gan, adv, opt, state, (x[:16], x[16:]), d_noise, z_g)
    stepped, _ = G.make_gan_step(gan, adv, opt, opt, d_steps_per_g_step=2)(state, x, step_key)
    assert tree_equal(stepped.params, expected) and tree_equal(stepped.opt_state, expected_opt)
    with pytest.raises(ValueError, match="cannot be split into 3"):
        G.gan_inputs(gan, adv, d_steps_per_g_step=3)(x, step_key)


# --------------------------------------------------------------------------- each step plays its own side


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32), loss=st.sampled_from(["non_saturating", "hinge", "minimax"]))
def test_one_d_step_decreases_the_d_loss_on_fixed_data_and_noise(seed, loss):
    k = random.key(seed)
    gan, adv, opt, state = setup(k, loss)
    x, z = real_batch(random.fold_in(k, 1)), G.latent_noise(gan, random.fold_in(k, 2), 16)
    d_loss = lambda d: G.discriminator_objective(gan, adv, d, state.params["generator"], x, z)[0]  # noqa: E731 - a one-line function beside its only use
    new, metrics = iterate(gan, adv, state, (x,), ((z,),), z, opt)
    assert torch.equal(metrics["d_loss"], d_loss(state.params["discriminator"]))  # from before the update
    assert d_loss(new.params["discriminator"]) < d_loss(state.params["discriminator"])  # against the G it played


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_one_g_step_raises_d_of_g_z_for_fixed_noise(seed):
    k = random.key(seed)
    gan, adv, opt, state = setup(k, "non_saturating")
    x, z = real_batch(random.fold_in(k, 1)), G.latent_noise(gan, random.fold_in(k, 2), 16)
    new, metrics = iterate(gan, adv, state, (x,), ((z,),), z, opt)
    before_g = {"generator": state.params["generator"], "discriminator": new.params["discriminator"]}  # after D's step
    assert sigmoid_fake(gan, new.params, z) > sigmoid_fake(gan, before_g, z)
    assert (
        G.generator_objective(gan, adv, new.params["generator"], new.params["discriminator"], z)[0] < metrics["g_loss"]
    )


@pytest.mark.parametrize("loss", ["hinge", "minimax", "wgan_gp"])
def test_one_g_step_decreases_each_generator_loss(key, loss):
    gan, adv, opt, state = setup(key, loss)
    x, z = real_batch(random.fold_in(key, 1)), G.latent_noise(gan, random.fold_in(key, 2), 16)
    d_noise = ((z, G.interpolation_weights(random.fold_in(key, 3), 16)),) if adv.gradient_penalty else ((z,),)
    new, metrics = iterate(gan, adv, state, (x,), d_noise, z, opt)
    assert (
        G.generator_objective(gan, adv, new.params["generator"], new.params["discriminator"], z)[0] < metrics["g_loss"]
    )


def test_step_metrics(key):
    gan, loss, opt, state = setup(key)
    _, metrics = G.make_gan_step(gan, loss, opt, opt)(state, real_batch(key), key)
    assert set(metrics) == {"loss", "d_loss", "g_loss", "d_real", "d_fake"}
    assert all(m.dim() == 0 and torch.isfinite(m) for m in metrics.values())
    assert torch.equal(metrics["loss"], metrics["d_loss"] + metrics["g_loss"])
    assert 0 < metrics["d_real"] < 1 and 0 < metrics["d_fake"] < 1


# --------------------------------------------------------------------------- losses


LOG2 = math.log(2.0)


def test_losses_at_zero_logits_are_log_2_terms():
    zero = torch.zeros(3)
    assert torch.allclose(G.bce_discriminator_loss(zero, zero), torch.full((3,), 2 * LOG2))
    assert torch.allclose(G.non_saturating_generator_loss(zero), torch.full((3,), LOG2))
    assert torch.allclose(G.minimax_generator_loss(zero), torch.full((3,), -LOG2))
    assert torch.allclose(G.hinge_discriminator_loss(zero, zero), torch.full((3,), 2.0))


def test_hinge_and_wasserstein_known_values():
    real = torch.tensor([0.5, 2.0, -1.0])
    fake = torch.tensor([-0.25, -3.0, 0.5])
    # relu(1 - r) + relu(1 + f)
    assert torch.allclose(G.hinge_discriminator_loss(real, fake), torch.tensor([0.5 + 0.75, 0.0, 2.0 + 1.5]))
    assert torch.equal(G.critic_generator_loss(fake), torch.tensor([0.25, 3.0, -0.5]))
    assert torch.allclose(G.wasserstein_critic_loss(real, fake), torch.tensor([-0.75, -5.0, 1.5]))


def test_cross_entropy_losses_known_values():
    # D(x) = log 3 -> σ = 3/4; D(G(z)) = -log 3 -> σ = 1/4.
    r, f = torch.tensor([math.log(3.0)]), torch.tensor([-math.log(3.0)])
    assert torch.allclose(G.bce_discriminator_loss(r, f), torch.tensor([-2 * math.log(0.75)]))
    assert torch.allclose(G.non_saturating_generator_loss(f), torch.tensor([-math.log(0.25)]))
    assert torch.allclose(G.minimax_generator_loss(f), torch.tensor([math.log(0.75)]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=2, max_size=8))
def test_cross_entropy_losses_match_their_log_sigmoid_form(values):
    t = torch.tensor(values, dtype=torch.float64)
    r, f = t, t.flip(0)
    # 1 - σ(f) written as σ(-f): in float64 ``1 - sigmoid(20)`` has lost 8 digits already.
    s_r, s_f, one_minus_s_f = torch.sigmoid(r), torch.sigmoid(f), torch.sigmoid(-f)
    assert torch.allclose(
        G.bce_discriminator_loss(r, f), -torch.log(s_r) - torch.log(one_minus_s_f), rtol=1e-9, atol=1e-12
    )
    assert torch.allclose(G.non_saturating_generator_loss(f), -torch.log(s_f), rtol=1e-9, atol=1e-12)
    assert torch.allclose(G.minimax_generator_loss(f), torch.log(one_minus_s_f), rtol=1e-9, atol=1e-12)


def test_cross_entropy_losses_are_finite_for_extreme_logits():
    big = torch.tensor([-200.0, 200.0])
    for value in (
        G.bce_discriminator_loss(big, big.flip(0)),
        G.non_saturating_generator_loss(big),
        G.minimax_generator_loss(big),
    ):
        assert torch.isfinite(value).all()
    assert torch.allclose(G.non_saturating_generator_loss(big), torch.tensor([200.0, 0.0]))


def test_wgan_gp_step_reports_and_differentiates_the_penalty(key):
    gan, adv, opt, state = setup(key, "wgan_gp")
    x, z = real_batch(key), G.latent_noise(gan, random.fold_in(key, 2), 16)
    alpha = G.interpolation_weights(random.fold_in(key, 3), 16)
    total, metrics = G.discriminator_objective(
        gan, adv, state.params["discriminator"], state.params["generator"], x, z, alpha
    )
    assert torch.allclose(total, metrics["d_loss"] + 10.0 * metrics["gradient_penalty"])
    # the penalty reaches the parameters' gradient (create_graph=True)
    no_gp = adv._replace(gradient_penalty=0.0)
    grad = lambda a: train.value_and_grad(  # noqa: E731 - a one-line function beside its only use
        lambda p: G.discriminator_objective(gan, a, p, state.params["generator"], x, z, alpha)
    )(state.params["discriminator"])[1]
    assert not tree_equal(grad(adv), grad(no_gp))
    with pytest.raises(ValueError, match="alpha"):
        G.discriminator_objective(gan, adv, state.params["discriminator"], state.params["generator"], x, z)
    _, step_metrics = G.make_gan_step(gan, adv, opt, opt)(state, x, key)
    assert "gradient_penalty" in step_metrics and torch.isfinite(step_metrics["loss"])


def test_unknown_loss_is_a_value_error_listing_the_choices():
    with pytest.raises(ValueError, match="hinge.*minimax.*non_saturating.*wgan_gp"):
        G.get_loss("least_squares")
    config = dict(models.MODELS["gan"].defaults, loss="least_squares", lr=2e-4)
    with pytest.raises(ValueError, match="non_saturating"):
        models.gan(fdata.get_spec("mnist"), config)
    assert models.MODELS["gan"].defaults["loss"] == "non_saturating"
    assert G.get_loss("hinge").name == "hinge" and G.get_loss("wgan_gp", gp_weight=5.0).gradient_penalty == 5.0


# --------------------------------------------------------------------------- model pieces


def test_init_is_deterministic_and_leaves_global_rng_alone(key):
    gan = small_conv_gan()
    rng = torch.get_rng_state().clone()
    assert tree_equal(G.init(gan, key), G.init(gan, key))
    assert not tree_equal(G.init(gan, key), G.init(gan, random.fold_in(key, 1)))
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("make, shape", [(small_gan, SHAPE), (small_conv_gan, (3, 32, 32))])
def test_shapes_ranges_and_evaluate(make, shape, key):
    gan = make()
    params = G.init(gan, key)
    z = G.latent_noise(gan, key, 5)
    assert gan.generate(params["generator"], {}, z, train=False)[0].shape == (5, *shape)
    images = G.generate(gan, params, z)
    assert images.shape == (5, *shape) and images.min() >= 0 and images.max() <= 1
    values = G.evaluate(gan, G.non_saturating(), params, real_batch(key, 5, shape), z)
    assert set(values) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(v.shape == (5,) for v in values.values())


def test_pixel_scaling_round_trip():
    levels = torch.tensor([0, 127, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    x = G.scale_pixels(levels)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.allclose(G.to_unit_interval(x) * 255, levels.float(), atol=1e-4)


def test_gan_state_checkpoint_round_trip(tmp_path, key):
    gan, loss, opt, state = setup(key)
    state, _ = G.make_gan_step(gan, loss, opt, opt)(state, real_batch(key), key)
    checkpoint.save(tmp_path / "c.pt", state)
    loaded, _ = checkpoint.load(tmp_path / "c.pt", G.init_state(gan, opt, opt, random.key(1)))
    assert tree_equal(loaded.params, state.params) and tree_equal(loaded.opt_state, state.opt_state)


@pytest.mark.parametrize("dataset", ["mnist", "svhn"])
def test_parameter_count_within_25_percent_of_the_vae(dataset):
    spec = fdata.get_spec(dataset)
    from fgm.models import vae as V

    vae_count = fnn.count_params(V.init(models.build_vae(spec, models.MODELS["vae_std"].defaults), random.key(0)))
    config = {**models.defaults("gan", dataset, "default"), "total_steps": 1}
    recipe = models.gan(spec, config)
    params = recipe.trainer.init(random.key(0)).params
    gan_count = fnn.count_params(params)
    assert abs(gan_count - vae_count) <= 0.25 * vae_count, (gan_count, vae_count)
    # the parameter table's networks are these very parameter trees
    for name, (template, shape) in recipe.networks.items():
        assert sum(n for *_, n in fnn.describe(template, shape)) == fnn.count_params(params[name])


# --------------------------------------------------------------------------- monitor


def test_monitor_fires_after_patience_steps_of_d_fake_near_zero():
    watch = G.discriminator_won_monitor(threshold=1e-3, patience=5)()
    ok, lost = {"d_fake": torch.tensor(0.3)}, {"d_fake": torch.tensor(1e-5)}
    assert watch(ok, 1) is None
    assert [watch(lost, s) for s in range(2, 6)] == [None] * 4  # 4 steps: not yet
    assert watch(ok, 6) is None  # the streak is broken
    messages = [watch(lost, s) for s in range(7, 13)]
    assert messages[:4] == [None] * 4
    assert messages[4] is not None and "step 7" in messages[4] and "discriminator" in messages[4]
    assert messages[5] == messages[4]  # one message per streak, so the runner records it once
    fresh = G.discriminator_won_monitor(threshold=1e-3, patience=5)()
    assert [fresh(lost, s) for s in range(1, 5)] == [None] * 4  # each factory call starts afresh


# --------------------------------------------------------------------------- CLI

SMOKE = ["--profile", "smoke", "--no-progress", "--train-limit", "512", "--val-limit", "200", "--test-limit", "200"]
KEYS = [f"{split}_{name}" for split in ("train", "val") for name in ("d_loss", "g_loss", "d_real", "d_fake")]


def test_cli_smoke_run(tmp_path, mnist_root, capsys):
    out = tmp_path / "gan"
    assert run.main(["gan", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "generator:" in printed and "discriminator:" in printed and "total:" in printed
    records = [
        json.loads(line)["mean"] | {"epoch": json.loads(line)["epoch"]}
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert all(math.isfinite(r[k]) for k in KEYS)
        assert 0 < r["val_d_real"] < 1 and 0 < r["val_d_fake"] < 1
    assert (out / "samples" / "epoch_0002.png").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["num_test"] == 200 and math.isfinite(results["mean"]["test_d_loss"])
    assert set(results["parameters"]) == {"generator", "discriminator"}
    assert json.loads((out / "config.json").read_text())["loss"] == "non_saturating"


def test_cli_d_steps_takes_a_batch_per_d_step_and_both_schedules_span_the_run(tmp_path, mnist_root, monkeypatch):
    spans = []
    real_adam = models.adam
    record = lambda config, total, *args, **kw: spans.append(total) or real_adam(config, total, *args, **kw)  # noqa: E731 (a spy)
    monkeypatch.setattr(models, "adam", record)
    out = tmp_path / "d2"
    args = ["gan", "mnist", *SMOKE, "--epochs", "1", "--data-dir", str(mnist_root), "--out", str(out)]
    assert run.main([*args, "--set", "d_steps=2", "--set", "lr_schedule=cosine"]) == 0
    iterations = 512 // (64 * 2)  # 512 images, two batches of 64 per game iteration
    assert json.loads((out / "config.json").read_text())["total_steps"] == iterations
    assert spans == [iterations, 2 * iterations]  # G counts iterations, D counts its updates
    state = rundir.load_run(out).state
    count = lambda tree: int(tree[0].count)  # noqa: E731  (adam state = (ScaleByAdamState, lr state))
    assert (count(state.opt_state["generator"]), count(state.opt_state["discriminator"])) == (iterations, 8)


def test_cli_selects_the_loss_with_set(tmp_path, mnist_root, capsys):
    out = tmp_path / "hinge"
    args = ["gan", "mnist", *SMOKE, "--epochs", "1", "--data-dir", str(mnist_root)]
    assert run.main([*args, "--out", str(out), "--set", "loss=hinge"]) == 0  # a bare word is a string
    assert json.loads((out / "config.json").read_text())["loss"] == "hinge"
    assert run.main([*args, "--out", str(tmp_path / "bad"), "--set", 'loss="nope"']) == 2
    assert "non_saturating" in capsys.readouterr().err


from tests.svhn_fixture import svhn_root  # noqa: E402,F401 - a pytest fixture, imported beside the SVHN tests


def test_svhn_smoke_run_on_the_format_exact_fixture(svhn_root, tmp_path):
    out = tmp_path / "gan-svhn"
    assert run.main(["gan", "svhn", *SMOKE, "--epochs", "1", "--data-dir", str(svhn_root), "--out", str(out)]) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["mean"]
    assert all(math.isfinite(record[k]) for k in KEYS)
    assert (out / "samples" / "epoch_0001.png").exists()
