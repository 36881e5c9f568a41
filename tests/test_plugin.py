"""A model of one's own through ``--import``: docs/api.md §9's module, run by every command.

The module is the documented one, cut from the §9 snippet at its ``end of
my_models.py`` line and written to a temporary folder on ``sys.path``; the
commands run through ``experiments.run.main`` as the command line runs them,
and once as a real ``python -m experiments.run`` process.
"""

import json
import os
import subprocess
import sys

import pytest

from experiments import config, models, report, run
from tests.test_docs import ROOT, extract_snippets
from tests.test_fid_cli import fake_extractor

LIMITS = ["--epochs", "1", "--train-limit", "128", "--val-limit", "64", "--test-limit", "64", "--no-progress"]
END_OF_MODULE = "# --- end of my_models.py ---"


def documented_module() -> str:
    """The code of docs/api.md §9's snippet above its end-of-module line."""
    (snippet,) = [s for s in extract_snippets(ROOT / "docs" / "api.md") if '"tiny_vae"' in s.code]
    assert END_OF_MODULE in snippet.code, "docs/api.md §9 lost the line that ends my_models.py"
    return snippet.code.split(END_OF_MODULE)[0]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """``my_models.py`` in a folder on ``sys.path``; the registries and ``sys.modules`` restored afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_models.py").write_text(documented_module())
    monkeypatch.syspath_prepend(str(folder))
    saved, saved_settings = dict(models.MODELS), dict(config.MODEL_SETTINGS)
    yield folder
    forget_plugin(saved, saved_settings)


def forget_plugin(saved: dict, saved_settings: dict) -> None:
    """As a fresh process without ``--import my_models``: the model unregistered, the module not imported."""
    models.MODELS.clear()
    models.MODELS.update(saved)
    config.MODEL_SETTINGS.clear()
    config.MODEL_SETTINGS.update(saved_settings)
    sys.modules.pop("my_models", None)


def test_a_plugin_model_goes_through_every_command(plugin, tmp_path, mnist_root, monkeypatch, capsys):
    runs, out, data = tmp_path / "runs", tmp_path / "reports", ["--data-dir", str(mnist_root)]
    first = runs / "tiny_vae-mnist-s0"
    train = ["tiny_vae", "mnist", "--import", "my_models", "--profile", "smoke", *LIMITS, *data, "--out", str(first)]
    assert run.main(train) == 0
    saved = json.loads((first / "config.json").read_text())
    assert saved["import"] == "my_models" and saved["lr"] == 2e-3  # where it came from; its override
    sweep = ["all", "--import", "my_models", "--models", "tiny_vae", "--datasets", "mnist", "--profile", "smoke"]
    assert run.main([*sweep, "--seed", "1", "--runs", str(runs), "--no-progress", *data, "--", *LIMITS]) == 0
    assert (runs / "tiny_vae-mnist-s1" / "results.json").exists()

    assert run.main(["report", "--import", "my_models", "--runs", str(runs), "--out", str(out), *data]) == 0
    summary = json.loads((out / "summary.json").read_text())["datasets"]["mnist"]["tiny_vae"]
    assert summary["seeds"] == [0, 1] and set(summary["metrics"]) >= {"test_nll", "test_neg_elbo", "test_kl"}
    assert summary["runs"][0]["command"].startswith("python -m experiments.run tiny_vae mnist --import my_models")
    text = (out / "RESULTS.md").read_text()
    assert "| tiny_vae | 0, 1 |" in text and "test −ELBO" in text and (out / "mnist" / "curves.png").exists()
    # no colour or order registered: a spare colour, after every model that has an order
    taken = {entry.colour for entry in models.MODELS.values()}
    colours = report.colours(["gan", "tiny_vae"])
    assert colours["gan"] == "tab:green" and colours["tiny_vae"] in set(report.SPARE_COLOURS) - taken
    assert report.model_order(["tiny_vae", "gan", "vae_std"]) == ["vae_std", "gan", "tiny_vae"]

    assert run.main(["figures", str(first), "--import", "my_models", *data]) == 0
    from fgm.metrics import inception

    monkeypatch.setattr(inception, "make_feature_extractor", fake_extractor)
    monkeypatch.setenv("FGM_CACHE_DIR", str(tmp_path / "cache"))
    fid = ["fid", str(first), "mnist:test:40", "--samples", "30", "--no-progress", *data]
    assert run.main([*fid, "--import", "my_models"]) == 0
    submission = ["submission", "--import", "my_models", "--vunetid", "not a name", "--assignment", "3"]
    assert run.main(submission) == 2 and "--vunetid must be letters" in capsys.readouterr().err  # parsed

    # a fresh process, as the docs run it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "experiments.run", "report", "--runs", str(runs), "--out", str(tmp_path / "again")]
    done = subprocess.run([*argv, "--import", "my_models"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "tiny_vae" in (tmp_path / "again" / "RESULTS.md").read_text()


def test_a_run_of_a_model_not_imported_names_the_module(plugin, tmp_path, mnist_root, capsys):
    out = tmp_path / "runs" / "tiny"
    argv = ["tiny_vae", "mnist", "--import", "my_models", "--profile", "smoke", *LIMITS, "--out", str(out)]
    assert run.main([*argv, "--data-dir", str(mnist_root), "--set", "nll_samples=0"]) == 0
    forget_plugin({k: v for k, v in models.MODELS.items() if k != "tiny_vae"}, dict(config.MODEL_SETTINGS))
    capsys.readouterr()
    for command in (["report", "--runs", str(out.parent), "--out", str(tmp_path / "r")], ["figures", str(out)]):
        assert run.main([*command, "--data-dir", str(mnist_root)]) == 2
        err = capsys.readouterr().err
        assert "model 'tiny_vae', which is not registered" in err and "pass --import my_models" in err, err
    assert run.main([*argv[:2], "--resume", "--out", str(out), "--data-dir", str(mnist_root)]) == 2
    assert "unknown model 'tiny_vae'" in (err := capsys.readouterr().err) and "--import" in err


def test_the_registration_is_checked_and_is_what_the_pipeline_reads(plugin):
    import my_models  # noqa: F401 - registers tiny_vae

    entry = models.get_model("tiny_vae")
    assert entry.module == "my_models" and entry.metrics == models.VAE_METRICS
    assert models.defaults("tiny_vae", "mnist", "smoke")["lr"] == 2e-3  # its override, there only
    assert models.defaults("tiny_vae", "mnist", "default")["lr"] == config.PROFILES["default"]["lr"]
    assert models.defaults("tiny_vae", "svhn", "smoke")["lr"] == config.PROFILES["smoke"]["lr"]
    for overrides, message in (
        ({("mnist", "nope"): {}}, "override for unknown profile 'nope'"),
        ({("mnist", "smoke"): {"widht": 3}}, "override of 'widht' for \\(mnist, smoke\\) is not a setting of it"),
        ({("mnist", "smoke"): {"lr": 0}}, "override lr for \\(mnist, smoke\\): 0.0 is not allowed"),
    ):
        with pytest.raises(ValueError, match=message):
            models.register_model("bad", settings={"width": (8, None)}, overrides=overrides)(entry.build)
    assert "bad" not in models.MODELS
    models.register_model("twice", images_per_update=lambda c: 2 * c["batch_size"])(entry.build)
    assert models.images_per_update({"model": "twice", "batch_size": 8}) == 16  # an epoch has half the steps
    assert models.images_per_update({"model": "tiny_vae", "batch_size": 8}) == 8
