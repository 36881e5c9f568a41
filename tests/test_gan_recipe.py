"""The GAN recipe's levers in the runner: a rate per player (TTUR), the average's own BatchNorm statistics."""

from __future__ import annotations

import optree
import torch

from experiments import models, rundir
from fgm import data as fdata
from fgm import ensemble, random
from fgm.models import gan as gan_lib


def _experiment(**settings):
    config = {**models.defaults("gan", "mnist", "smoke"), "width": 8, "seeds": [0], **settings}
    config |= {"model": "gan", "dataset": "mnist", "total_steps": 10}
    return models.build(config), config


def _one_update(experiment):
    """The initial state and the state after one donated update (the initial one built twice: the update donates)."""
    images = random.randint(random.key(1), 0, 256, (64, 1, 28, 28)).to(torch.uint8)
    inputs = experiment.trainer.inputs(experiment.train_input(images, random.key(2)), random.key(3))
    new, _ = ensemble.member_step(experiment.trainer, 1)(experiment.trainer.init(random.key(0)), [tuple(inputs)])
    return experiment.trainer.init(random.key(0)), new


def _largest_move(old, new, player):
    return max(
        float((b - a).abs().max())
        for a, b in zip(optree.tree_leaves(old.params[player]), optree.tree_leaves(new.params[player]), strict=True)
    )


def test_each_player_takes_its_own_learning_rate():
    # Adam's first step moves every weight with a gradient by its learning rate (to ~1e-3 relative).
    experiment, _ = _experiment(lr=1e-4, d_lr=1e-3)
    old, new = _one_update(experiment)
    assert abs(_largest_move(old, new, "discriminator") - 1e-3) < 1e-6
    assert abs(_largest_move(old, new, "generator") - 1e-4) < 1e-7
    experiment, _ = _experiment(lr=1e-4, d_lr=None)  # null: the run's lr for both
    old, new = _one_update(experiment)
    assert abs(_largest_move(old, new, "discriminator") - 1e-4) < 1e-7


def test_the_run_evaluates_the_average_with_its_own_batchnorm_statistics():
    experiment, config = _experiment(ema_decay=0.9, ema_batch_stats=3)
    _, state = _one_update(experiment)
    (evaluated,) = rundir.member_variables(experiment, state, 1)
    plain = experiment.trainer.variables(state)
    gan = models.build_gan(fdata.get_spec("mnist"), config)
    expected = gan_lib.ema_variables_with_batch_stats(gan, plain, random.key(models.EMA_STATS_KEY), 3)
    ema_stats = [k for k in plain[gan_lib.EMA] if k.endswith("running_mean")]
    assert ema_stats, "the MNIST conv generator has BatchNorm"
    for name in ema_stats:
        assert torch.equal(evaluated[gan_lib.EMA][name], expected[gan_lib.EMA][name])
        assert not torch.equal(evaluated[gan_lib.EMA][name], plain[gan_lib.EMA][name])  # not G's statistics
    assert all(torch.equal(evaluated["generator"][k], v) for k, v in plain["generator"].items())  # G untouched


def test_without_the_setting_or_the_average_the_variables_are_the_states():
    for settings in ({"ema_decay": 0.9, "ema_batch_stats": 0}, {"ema_decay": None, "ema_batch_stats": 5}):
        experiment, _ = _experiment(**settings)
        assert experiment.evaluation_variables is None
