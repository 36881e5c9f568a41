"""Data-parallel training over torch.distributed (gloo, 2 processes on the CPU): fgm.distributed and the runner."""

import os
import socket
from pathlib import Path

import optree
import pytest
import torch
import torch.multiprocessing as mp

from experiments import models, rundir
from fgm import data as fdata
from fgm import distributed, random, tree
from tests.test_run import SMOKE

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_group(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank))
    os.environ["LOCAL_RANK"] = str(rank)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def to_float64(value):
    return optree.tree_map(lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t, value)


def build(name: str) -> models.Experiment:
    model, extra = ("gan", {"arch": "mlp"}) if name == "gan_mlp" else (name, {})
    config = {**models.defaults(model, "mnist", "smoke"), **extra, "total_steps": 10}
    return models.MODELS[model].build(fdata.get_spec("mnist"), config)


def train_float64(name: str, steps: int = 3, batch: int = 8):
    """``steps`` updates in float64 on global batches of ``batch`` images, this process's rows of each."""
    experiment = build(name)
    trainer = experiment.trainer
    state = to_float64(trainer.init(random.key(0)))
    update = trainer.make_update()
    for t in range(steps):
        generator = torch.Generator().manual_seed(t)
        images = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, generator=generator)
        inputs = trainer.inputs(experiment.train_input(images, random.key(100 + t)), random.key(200 + t))
        inputs = to_float64(distributed.shard(tuple(inputs)))
        # the MLP GAN's layer state is empty, like a VAE's: nothing per-rank to average
        params, opt_state, _, metrics = update(state.params, state.opt_state, state.model_state, *inputs)
        state = state._replace(params=params, opt_state=opt_state)
    return state.params, distributed.all_mean(metrics)


def step_worker(rank: int, port: int, out: str, name: str) -> None:
    join_group(rank, port)
    distributed.initialize()
    params, metrics = train_float64(name)
    if rank == 0:
        torch.save((params, metrics), out)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("name", ["vae_std", "gan_mlp"])
def test_two_processes_take_the_one_process_step_in_float64(tmp_path, name):
    out = tmp_path / "two.pt"
    mp.spawn(step_worker, args=(free_port(), str(out), name), nprocs=WORLD)
    two_params, two_metrics = torch.load(out, weights_only=False)
    one_params, one_metrics = train_float64(name)  # no process group: the whole batch, no all-reduce
    assert tree.tree_allclose(two_params, one_params, rtol=1e-10, atol=1e-13)
    assert tree.tree_allclose(two_metrics, one_metrics, rtol=1e-10, atol=1e-13)
    assert not tree.tree_equal(two_params, to_float64(build(name).trainer.init(random.key(0)).params))


def test_shard_takes_equal_rows_and_refuses_uneven_batches():
    x = torch.arange(12).reshape(6, 2)
    parts = [distributed.shard((x, {"z": x[:, 0]}), i, 3) for i in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(parts[1][1]["z"], x[2:4, 0])
    with pytest.raises(ValueError, match="a global batch of 6 cannot be split into 4 equal slices"):
        distributed.shard(x, 0, 4)
    assert distributed.shard(x) is x and distributed.world_size() == 1 and distributed.is_main()


class Killed(SystemExit):
    pass


def cli_worker(rank: int, port: int, argv: list[str], kill_at_step: int | None) -> None:
    """``python -m experiments.run ARGV`` as rank ``rank``; both die at step ``kill_at_step``, as a crash would."""
    join_group(rank, port)
    if kill_at_step is not None:
        original = rundir.step_keys

        def die_at(keys, step):
            if step == kill_at_step:
                os._exit(17)
            return original(keys, step)

        rundir.step_keys = die_at
    from experiments import run

    code = run.main(argv)
    torch.distributed.destroy_process_group()
    if code:
        raise SystemExit(code)


def run_ranks(argv: list[str], kill_at_step: int | None = None) -> None:
    mp.spawn(cli_worker, args=(free_port(), argv, kill_at_step), nprocs=WORLD)


def test_a_two_process_run_resumes_after_a_crash_and_matches_one_process(tmp_path, mnist_root):
    common = ["vae_std", "mnist", *SMOKE, "--data-dir", str(mnist_root), "--device", "cpu"]
    straight, split, single = tmp_path / "straight", tmp_path / "split", tmp_path / "single"
    run_ranks([*common, "--out", str(straight)])
    steps_per_epoch = 512 // 64
    with pytest.raises(mp.ProcessExitedException, match="exit code 17"):
        run_ranks([*common, "--out", str(split)], kill_at_step=steps_per_epoch)  # right after epoch 1's checkpoint
    assert rundir.read_json(split / rundir.CONFIG) and not (split / rundir.RESULTS).exists()
    run_ranks([*common, "--out", str(split), "--resume"])
    a, b = rundir.load_run(straight), rundir.load_run(split)
    assert a.state.step == b.state.step == 2 * steps_per_epoch
    assert tree.tree_equal(a.state.params, b.state.params) and tree.tree_equal(a.state.opt_state, b.state.opt_state)
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_seconds")}  # noqa: E731 - wall times differ
    assert [strip(r) for r in rundir.read_metrics(straight)] == [strip(r) for r in rundir.read_metrics(split)]
    # One process on the same global batches: the same run up to float32 summation order.
    from experiments import run

    assert run.main([*common, "--out", str(single)]) == 0
    two, one = (rundir.read_json(p / rundir.RESULTS)["mean"]["test_neg_elbo"] for p in (straight, single))
    assert abs(two - one) < 0.05 * abs(one) / 100  # within 0.05%
    assert not list(Path(straight).glob("*.tmp"))
