"""The report pools seeds only across runs trained alike; a seed held twice is refused, naming the runs.

Run directories are written by hand here (config, results): the pooling reads nothing else.
"""

import json

import pytest

from experiments import config as cfg
from experiments import models, run, rundir


def fake_run(root, name, model="gan", profile="smoke", seed=0, seeds=1, flags=()):
    """A finished run directory: the config the command line would resolve, and one FID per member."""
    argv = [model, "mnist", "--profile", profile, "--seed", str(seed), "--seeds", str(seeds), *flags]
    config = cfg.resolve(cfg.train_parser(sorted(models.MODELS), ["mnist"]).parse_args(argv), models.MODELS[model])
    members = [{"seed": s, "test_fid": 10.0 + s} for s in config["seeds"]]
    results = {
        "members": members,
        "train_seconds_total": 60.0,
        "members_trained_together": seeds,
        "parameters": {"generator": 5, "discriminator": 7},
        "code": "abc1234",
    }
    rundir.write_json(root / name / rundir.CONFIG, {**config, "total_steps": 10})
    rundir.write_json(root / name / rundir.RESULTS, results)
    return root / name


def report(root, tmp_path, *flags):
    out = tmp_path / "out"
    code = run.main(["report", "--runs", str(root), "--out", str(out), "--data-dir", str(tmp_path / "none"), *flags])
    summary = json.loads((out / "summary.json").read_text()) if code == 0 else None
    return code, summary, out


def test_a_seed_in_two_runs_trained_alike_is_refused_naming_both(tmp_path, capsys):
    root = tmp_path / "runs"
    one = fake_run(root, "gan-mnist-s0")
    two = fake_run(root, "gan-mnist-s0x2", seeds=2)
    code, _, out = report(root, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not out.exists()
    assert err.startswith(f"error: mnist/gan: seed 0 is in 2 runs trained alike: {one}, {two}. ")
    assert "--exclude 'gan-mnist-s0'" in err and "--select GLOB" in err and "--runs" in err
    # what the message says to do works: one run per seed
    code, summary, _ = report(root, tmp_path, "--exclude", "gan-mnist-s0")
    assert code == 0 and summary["datasets"]["mnist"]["gan"]["seeds"] == [0, 1]
    code, summary, _ = report(root, tmp_path, "--select", "gan-mnist-s0")
    assert code == 0 and summary["datasets"]["mnist"]["gan"]["seeds"] == [0]


def test_runs_of_different_profiles_are_rows_of_their_own(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "a", profile="smoke")
    fake_run(root, "b", profile="default", flags=["--epochs", "3"])  # seed 0 again: another experiment
    fake_run(root, "c", profile="default", seed=1, flags=["--epochs", "3"])
    code, summary, out = report(root, tmp_path)
    rows = summary["datasets"]["mnist"]
    # the default profile's row names the setting changed from that profile (the GAN's default is 4 epochs)
    assert list(rows) == ["gan (profile default, epochs 3)", "gan (profile smoke)"]
    assert rows["gan (profile smoke)"]["seeds"] == [0] and rows["gan (profile default, epochs 3)"]["seeds"] == [0, 1]
    assert rows["gan (profile default, epochs 3)"]["metrics"]["test_fid"]["values"] == [10.0, 11.0]
    assert {r["model"] for r in rows.values()} == {"gan"}
    text = (out / "RESULTS.md").read_text()
    assert "| gan (profile smoke) | 0 |" in text and "| gan (profile default, epochs 3) | 0, 1 |" in text


def test_runs_differing_in_a_training_setting_are_rows_named_by_it(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "a", flags=["--lr", "0.001"])
    fake_run(root, "b", flags=["--set", "loss=hinge"])
    code, summary, _ = report(root, tmp_path)
    assert code == 0
    assert sorted(summary["datasets"]["mnist"]) == [
        'gan (loss "hinge", lr 0.0002)',
        'gan (loss "non_saturating", lr 0.001)',
    ]


def test_seeds_trained_alike_pool_whatever_their_eval_only_settings(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "gan-mnist-s0", flags=["--nll-samples", "5"])
    fake_run(root, "gan-mnist-s1x2", seed=1, seeds=2, flags=["--fid-samples", "100"])
    code, summary, _ = report(root, tmp_path)
    gan = summary["datasets"]["mnist"]["gan"]
    assert code == 0 and list(summary["datasets"]["mnist"]) == ["gan"] and gan["label"] is None
    assert gan["seeds"] == [0, 1, 2] and gan["metrics"]["test_fid"]["values"] == [10.0, 11.0, 12.0]
    assert [r["dir"] for r in gan["runs"]] == ["gan-mnist-s0", "gan-mnist-s1x2"]


def test_a_seed_repeated_within_one_of_two_rows_is_refused(tmp_path, capsys):
    root = tmp_path / "runs"
    fake_run(root, "smoke-a")
    fake_run(root, "smoke-b")
    fake_run(root, "default-a", profile="default")
    assert report(root, tmp_path)[0] == 2
    err = capsys.readouterr().err
    assert "mnist/gan (profile smoke): seed 0 is in 2 runs trained alike" in err and "default-a" not in err


@pytest.mark.parametrize("flags", [["--exclude", "*"], ["--select", "nothing*"]])
def test_selecting_no_run_reports_nothing(tmp_path, flags):
    root = tmp_path / "runs"
    fake_run(root, "gan-mnist-s0")
    code, summary, _ = report(root, tmp_path, *flags)
    assert code == 0 and summary["datasets"] == {}


def test_rows_of_one_model_get_figures_of_their_own(tmp_path):
    from experiments import report

    members = [{"seed": 0, "class_histogram": [10 + 90 * (i == 3) for i in range(10)]}]
    rows = [
        report.Group("mnist", "gan", [(tmp_path, {}, {"members": members}, [])], f"gan (epochs {e})") for e in (2, 4)
    ]
    colour = report.row_colours(rows + [report.Group("mnist", "vae_std", [])])
    assert len(set(colour.values())) == 3 and colour["vae_std"] == "tab:blue"
    assert [g.slug for g in rows] == ["gan-epochs-2", "gan-epochs-4"]
    assert report.classes_figure(rows, tmp_path / "classes.png").stat().st_size > 0
