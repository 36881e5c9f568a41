"""The report's validation FID against training time: per seed, the mean over seeds, the equal-time comparison.

Run directories are written by hand (config, results, metrics.jsonl) with known ``epoch_seconds`` and
``val_fid``, so every number can be worked out on paper:

* ``vae_std-mnist-s0x2``: seeds 0 and 1 trained together, 4 epochs of 30, 30, 60, 60 s (cumulative
  0.5, 1, 2, 3 min), FIDs at epochs 2 and 4: seed 0 100, 60; seed 1 80, 40 (mean 90, 50).
* ``gan-mnist-s0`` and ``gan-mnist-s1``: one seed each, 2 epochs, FIDs every epoch: seed 0 after
  36 + 36 s (0.6, 1.2 min) 70, 30; seed 1 after 24 + 48 s (0.4, 1.2 min) 50, 20 (mean 0.5, 1.2 min; 60, 25).
* ``vae_flow-mnist-s0``: no validation FID at all.

The shorter budget is the GAN's 1.2 min; vae_std's mean curve there, between (1 min, 90) and
(3 min, 50): 90 + (1.2 − 1) / (3 − 1) × (50 − 90) = 86.
"""

import json
import statistics

import pytest

from experiments import config as cfg
from experiments import models, run, rundir
from fgm import figures

N = 2000  # validation FID samples of every fake run


def fake_run(root, name, model, seeds, epochs, seconds, fids, fid_every=1):
    """A finished run: ``seconds[e]`` the epoch's training seconds, ``fids[seed][k]`` the k-th FID of a seed."""
    argv = [model, "mnist", "--profile", "smoke", "--seed", str(seeds[0]), "--seeds", str(len(seeds))]
    argv += ["--epochs", str(epochs), "--fid-every", str(fid_every), "--fid-val-samples", str(N)]
    config = cfg.resolve(cfg.train_parser(sorted(models.MODELS), ["mnist"]).parse_args(argv), models.MODELS[model])
    history = []
    for epoch in range(1, epochs + 1):
        members = [{"seed": s, "val_loss": 1.0 / epoch} for s in seeds]
        if fids and epoch % fid_every == 0:
            for member in members:
                member.update(val_fid=fids[member["seed"]][epoch // fid_every - 1], val_fid_samples=N)
        mean, std = rundir.mean_std(members)
        history.append(dict(epoch=epoch, step=10 * epoch, members=members, mean=mean, std=std))
        history[-1] |= {"epoch_seconds": seconds[epoch - 1], "validation_seconds": 1.0}
    results = {
        "members": [{"seed": s, "test_fid": 10.0 + s} for s in seeds],
        "train_seconds_total": sum(seconds),
        "members_trained_together": len(seeds),
        "parameters": {"net": 5},
        "code": "abc1234",
    }
    rundir.write_json(root / name / rundir.CONFIG, {**config, "total_steps": 10 * epochs})
    rundir.write_json(root / name / rundir.RESULTS, results)
    rundir.write_metrics(root / name, history)


@pytest.fixture
def report(tmp_path):
    """``(summary, RESULTS.md, out folder)`` of the report of the four fake runs."""
    root, out = tmp_path / "runs", tmp_path / "out"
    fake_run(root, "vae_std-mnist-s0x2", "vae_std", [0, 1], 4, [30, 30, 60, 60], {0: [100, 60], 1: [80, 40]}, 2)
    fake_run(root, "gan-mnist-s0", "gan", [0], 2, [36, 36], {0: [70, 30]})
    fake_run(root, "gan-mnist-s1", "gan", [1], 2, [24, 48], {1: [50, 20]})
    fake_run(root, "vae_flow-mnist-s0", "vae_flow", [0], 2, [30, 30], None)
    assert run.main(["report", "--runs", str(root), "--out", str(out), "--data-dir", str(tmp_path / "none")]) == 0
    return json.loads((out / "summary.json").read_text()), (out / "RESULTS.md").read_text(), out


def test_each_seed_has_its_cumulative_training_minutes_and_fids(report):
    summary, _, _ = report
    vae, gan = (summary["datasets"]["mnist"][m]["fid_vs_time"] for m in ("vae_std", "gan"))
    assert [(m["seed"], m["run"], m["trained_together"]) for m in vae["members"]] == [
        (0, "vae_std-mnist-s0x2", 2),
        (1, "vae_std-mnist-s0x2", 2),
    ]
    # the seeds trained together share the run's time: (30 + 30) s and (30 + 30 + 60 + 60) s
    assert [m["minutes"] for m in vae["members"]] == [pytest.approx([1.0, 3.0])] * 2
    assert [m["epochs"] for m in vae["members"]] == [[2, 4]] * 2
    assert [m["fid"] for m in vae["members"]] == [[100, 60], [80, 40]]
    assert [m["minutes"] for m in gan["members"]] == [pytest.approx([0.6, 1.2]), pytest.approx([0.4, 1.2])]
    assert vae["samples"] == gan["samples"] == [N] and gan["members"][0]["samples"] == [N]


def test_the_mean_over_seeds(report):
    summary, _, _ = report
    vae, gan = (summary["datasets"]["mnist"][m]["fid_vs_time"] for m in ("vae_std", "gan"))
    assert vae["epochs"] == [2, 4] and vae["minutes"] == pytest.approx([1.0, 3.0])
    assert vae["fid_mean"] == pytest.approx([90, 50])
    assert vae["fid_std"] == pytest.approx([statistics.stdev([100, 80]), statistics.stdev([60, 40])])
    assert gan["minutes"] == pytest.approx([0.5, 1.2]) and gan["fid_mean"] == pytest.approx([60, 25])
    assert gan["fid_min"] == [50, 20] and gan["fid_max"] == [70, 30]


def test_equal_time_is_the_shorter_budget_read_off_the_mean_curves(report):
    summary, text, _ = report
    equal = summary["equal_time"]["mnist"]
    assert equal["minutes"] == pytest.approx(1.2) and equal["samples"] == [N]
    assert list(equal["rows"]) == ["vae_std", "gan"]  # vae_flow has no validation FID
    vae, gan = equal["rows"]["vae_std"], equal["rows"]["gan"]
    assert vae["fid_at_T"] == pytest.approx(86.0) and not vae["before_first_point"]
    assert vae["final_fid"] == pytest.approx(50) and vae["final_minutes"] == pytest.approx(3.0)
    assert gan["fid_at_T"] == pytest.approx(25) and gan["final_minutes"] == pytest.approx(1.2)
    assert vae["trained_together"] == [2] and gan["trained_together"] == [1]
    assert "| vae_std | 86.00 | 50.00 | 3.0 | 2000 | 2 |" in text
    assert "| gan | 25.00 | 25.00 | 1.2 | 2000 | 1 |" in text
    assert "T = 1.2 min" in text and "vae_flow |" not in text.split("T = 1.2 min")[1].split("\n\n")[1]
    assert "Validation FIDs of 2,000 samples against as many validation images (not the test protocol)" in text


def test_the_figure_is_written_and_linked_and_a_row_without_fids_is_left_out(report):
    summary, text, out = report
    assert (out / "mnist" / "fid-vs-time.png").stat().st_size > 0
    assert "![fid vs time](mnist/fid-vs-time.png)" in text
    assert "fid_vs_time" not in summary["datasets"]["mnist"]["vae_flow"]


def test_a_point_before_the_first_recorded_one_is_the_first_and_marked():
    slow = figures.fid_time_curve(
        [dict(seed=0, trained_together=1, epochs=[2, 4], minutes=[1, 3], fid=[9, 5], samples=[N])]
    )
    fast = figures.fid_time_curve([dict(seed=0, trained_together=1, epochs=[1], minutes=[0.5], fid=[7], samples=[N])])
    equal = figures.equal_time({"slow": slow, "fast": fast})
    assert equal["minutes"] == 0.5
    assert equal["rows"]["slow"] | {"samples": None} == dict(
        fid_at_T=9, before_first_point=True, final_fid=5, final_minutes=3, samples=None, trained_together=[1]
    )
    assert figures.equal_time({"slow": slow}) is None and figures.equal_time({"slow": slow, "none": {}}) is None
    assert figures.value_at([1, 3], [9, 5], 2.5) == (6.0, False) and figures.value_at([1, 3], [9, 5], 3) == (5, False)


def test_points_after_an_epoch_of_unknown_time_are_left_out():
    history = [
        {"epoch": 1, "epoch_seconds": 60, "members": [{"seed": 3, "val_fid": 50.0, "val_fid_samples": 500}]},
        {"epoch": 2, "members": [{"seed": 3, "val_fid": 40.0, "val_fid_samples": 500}]},  # written before the time
        {"epoch": 3, "epoch_seconds": 60, "members": [{"seed": 3, "val_fid": 30.0, "val_fid_samples": 500}]},
    ]
    assert figures.fid_time_series(history) == [
        dict(seed=3, trained_together=1, epochs=[1], minutes=[1.0], fid=[50.0], samples=[500])
    ]
    assert figures.fid_time_series(history[:1] * 0) == [] and figures.fid_time_curve([])["epochs"] == []


def test_rows_of_different_n_are_drawn_and_said_to_differ(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, dpi: titles.append(fig.axes[0].get_title()) or path)
    a = figures.fid_time_curve([dict(seed=0, trained_together=1, epochs=[1], minutes=[1], fid=[9], samples=[250])])
    b = figures.fid_time_curve([dict(seed=0, trained_together=1, epochs=[1], minutes=[2], fid=[7], samples=[2000])])
    assert figures.plot_fid_vs_time([("a", "tab:blue", a), ("b", "tab:green", b)], tmp_path / "x.png", 1.0)
    assert figures.plot_fid_vs_time([("a", "tab:blue", a)], tmp_path / "y.png")
    assert "not comparable" in titles[0] and "not comparable" not in titles[1]
    assert figures.plot_fid_vs_time([("c", "tab:red", figures.fid_time_curve([]))], tmp_path / "z.png") is None
