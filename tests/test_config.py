"""The settings table as users meet it: every setting's range, boundary values, integers, and the seeds.

The ranges below are written out by hand (they are what ``--help`` promises), not read from the table,
so that a loosened or tightened bound in ``experiments/config.py`` makes a test fail.
"""

import math

import pytest

from experiments import config as cfg
from experiments import models, run, rundir, train

INT, FLOAT, LIST = "an integer", "a finite number", "a list of integers such as [512,256] or 512,256"
# name: (kind, low, high, optional)
RANGES = {
    "epochs": (INT, 1, None, False),
    "batch_size": (INT, 1, None, False),
    "lr": (FLOAT, 1e-12, 1.0, False),
    "lr_final_fraction": (FLOAT, 0.0, 1.0, False),
    "sample_every": (INT, 1, None, False),
    "train_limit": (INT, 1, None, True),
    "val_limit": (INT, 1, None, True),
    "test_limit": (INT, 2, None, True),
    "nll_samples": (INT, 0, None, False),
    "fid_samples": (INT, 0, None, False),
    "fid_reference_count": (INT, 2, None, True),
    "fid_every": (INT, 0, None, False),
    "fid_val_samples": (INT, 2, None, False),
    "fid_val_reference_count": (INT, 2, None, True),
    "interpolation_points": (INT, 1, None, False),
    "latent_dim": (INT, 1, None, False),
    "width": (INT, 1, None, False),
    "flow_layers": (INT, 2, None, False),
    "pseudo_inputs": (INT, 1, None, False),
    "d_steps": (INT, 1, None, False),
    "b1": (FLOAT, 0.0, 0.999, False),
    "b2": (FLOAT, 0.0, 0.99999, False),
    "gp_weight": (FLOAT, 0.0, None, False),
    "ema_decay": (FLOAT, 0.0, 0.9999, True),
    "d_lr": (FLOAT, 1e-12, 1.0, True),
    "ema_batch_stats": (INT, 0, None, False),
    "hidden": (LIST, 1, None, False),
    "flow_hidden": (LIST, 1, None, False),
    "g_hidden": (LIST, 1, None, False),
    "d_hidden": (LIST, 1, None, False),
}
CHOICES = {
    "lr_schedule": ("constant", "cosine"),
    "arch": ("auto", "conv", "mlp"),
    "loss": ("non_saturating", "hinge", "minimax", "wgan_gp"),
}
BOOLS = ("classifier_metrics", "compile", "compile_nll", "cuda_graph", "g_batchnorm", "d_spectral_norm")


def refused(name, text, value=None):
    """``parse_value`` refuses ``text`` with the table's message (``value``: how the message shows it)."""
    s = cfg.setting(name)
    with pytest.raises(ValueError) as caught:
        cfg.parse_value(s, text, "--x")
    shown = repr(value) if value is not None else None
    assert str(caught.value).startswith("--x: ") and "is not allowed; expected" in str(caught.value)
    if shown is not None:
        assert str(caught.value) == f"--x: {shown} is not allowed; expected {s.allowed()}"


def test_every_setting_is_described_here():
    """A new setting gets its range written into this file (and so a boundary test)."""
    assert set(models.MODELS) >= {"vae_std", "vae_flow", "gan"}
    known = set(cfg.RUN_SETTINGS) | set(cfg.MODEL_SETTINGS)
    assert known == set(RANGES) | set(CHOICES) | set(BOOLS)


@pytest.mark.parametrize("name", sorted(RANGES))
def test_the_range_in_words(name):
    kind, low, high, optional = RANGES[name]
    bounds = f" >= {low:g}" + (f" <= {high:g}" if high is not None else "")
    assert cfg.setting(name).allowed() == kind + bounds + (" (or null)" if optional else "")


@pytest.mark.parametrize("name", sorted(RANGES))
def test_boundaries_are_accepted_and_just_outside_refused(name):
    kind, low, high, optional = RANGES[name]
    s = cfg.setting(name)
    if kind == LIST:
        assert cfg.parse_value(s, f"[{low},{low + 7}]") == [low, low + 7]
        assert cfg.parse_value(s, f"{low},{low + 7}") == [low, low + 7]
        refused(name, f"[{low - 1}]")
        refused(name, "[2.5]")
        refused(name, "[]", [])
        return
    assert cfg.parse_value(s, repr(low)) == low and type(cfg.parse_value(s, repr(low))) is (
        int if kind == INT else float
    )
    below = low - 1 if kind == INT else math.nextafter(low, -math.inf)
    refused(name, repr(below), below)
    if high is not None:
        assert cfg.parse_value(s, repr(high)) == high
        above = math.nextafter(high, math.inf)
        refused(name, repr(above), above)
    if kind == INT:
        refused(name, f"{low}.5", low + 0.5)  # integers only
        assert cfg.parse_value(s, f"{low + 3}.0") == low + 3  # a whole number written as a float is that integer
    else:
        inside = low + 0.5 * ((high if high is not None else low + 2) - low)
        assert cfg.parse_value(s, repr(inside)) == inside
        assert type(cfg.parse_value(s, str(math.ceil(low)))) is float  # an integer is a number too
        for bad in ("nan", "inf", "-inf"):
            refused(name, bad)
    if optional:
        assert cfg.parse_value(s, "null") is None
    else:
        refused(name, "null", None)
    refused(name, "true", True)  # a bool is no number
    refused(name, "abc", "abc")


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_choices_are_accepted_and_others_refused(name):
    for choice in CHOICES[name]:
        assert cfg.parse_value(cfg.setting(name), choice) == choice
    refused(name, "nope", "nope")
    refused(name, "3", 3)
    assert cfg.setting(name).allowed() == "one of: " + ", ".join(cfg.setting(name).choices)
    assert set(cfg.setting(name).choices) == set(CHOICES[name])


@pytest.mark.parametrize("name", BOOLS)
def test_bools_are_true_or_false_only(name):
    s = cfg.setting(name)
    assert cfg.parse_value(s, "true") is True and cfg.parse_value(s, "false") is False
    assert s.allowed() == "true or false"
    for text, shown in (("1", 1), ("0", 0), ("yes", "yes"), ("null", None)):
        refused(name, text, shown)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "2.5"], "--epochs: 2.5 is not allowed; expected an integer >= 1"),
        (["--lr", "1e-13"], "--lr: 1e-13 is not allowed; expected a finite number >= 1e-12 <= 1"),
        (["--lr", "1.5"], "--lr: 1.5 is not allowed; expected a finite number >= 1e-12 <= 1"),
        (["--test-limit", "1"], "--test-limit: 1 is not allowed; expected an integer >= 2 (or null)"),
        (["--set", "b2=1"], "--set b2: 1.0 is not allowed; expected a finite number >= 0 <= 0.99999"),
        (["--set", "d_steps=1.5"], "--set d_steps: 1.5 is not allowed; expected an integer >= 1"),
    ],
)
def test_the_command_line_refuses_a_value_out_of_range(flags, message, capsys, monkeypatch):
    monkeypatch.setattr(train, "train", lambda *args: pytest.fail("the value was accepted: training started"))
    assert run.main(["gan", "mnist", *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"


def resolve(*argv):
    args = cfg.train_parser(sorted(models.MODELS), ["mnist"]).parse_args(["gan", "mnist", *argv])
    return cfg.resolve(args, models.MODELS["gan"])


def test_the_command_line_accepts_the_boundary_values():
    config = resolve("--lr", "1e-12", "--epochs", "1", "--test-limit", "2", "--set", "b1=0", "--set", "b2=0.99999")
    assert (config["lr"], config["epochs"], config["test_limit"], config["b1"], config["b2"]) == (
        1e-12,
        1,
        2,
        0.0,
        0.99999,
    )
    assert resolve("--lr", "1")["lr"] == 1.0 and resolve("--nll-samples", "0", "--fid-samples", "0")["fid_samples"] == 0


def test_seeds_are_the_first_seed_and_the_ones_after_it():
    assert resolve("--seed", "3", "--seeds", "2")["seeds"] == [3, 4]
    config = resolve("--seed", "3")
    assert (config["seed"], config["seeds"]) == (3, [3])
    with pytest.raises(ValueError, match=r"^--seeds must be >= 1, got 0$"):
        resolve("--seeds", "0")


@pytest.mark.parametrize(
    "seed, seeds",
    [(1, [0, 1]), (0, []), (0, None), (0, [0, True]), (0, [0, 1.0]), (None, [0]), (0, 0), ("0", [0])],
)
def test_a_config_whose_seed_and_seeds_disagree_is_refused(seed, seeds, tmp_path):
    config = {**resolve(), "seed": seed, "seeds": seeds}
    with pytest.raises(ValueError) as caught:
        cfg.check_config(config)
    assert str(caught.value) == f"config keys 'seed'/'seeds' are inconsistent: {seed!r}, {seeds!r}"
    rundir.write_json(tmp_path / rundir.CONFIG, config)  # a config.json read back: refused, naming the file
    with pytest.raises(ValueError, match=r"config.json is corrupt or from another version: config keys 'seed'/'seeds'"):
        rundir.read_config(tmp_path)


def test_a_consistent_config_is_accepted_as_it_is():
    config = resolve("--seed", "5", "--seeds", "3")
    assert cfg.check_config(dict(config)) == config and config["seeds"] == [5, 6, 7]
    assert cfg.check_config({**config, "seed": 0, "seeds": [0, 9, 4]})["seeds"] == [0, 9, 4]  # any list, first first


@pytest.mark.parametrize("key", ["model", "dataset", "profile"])
def test_a_config_without_its_identity_is_refused(key):
    with pytest.raises(ValueError, match=f"^config key '{key}' is missing or not a string$"):
        cfg.check_config({k: v for k, v in resolve().items() if k != key})
    with pytest.raises(ValueError, match=f"^config key '{key}' is missing or not a string$"):
        cfg.check_config({**resolve(), key: 3})
    with pytest.raises(ValueError, match="^a config is a JSON object, got list$"):
        cfg.check_config([])


def test_a_config_value_out_of_range_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"^config key 'epochs': 0 is not allowed; expected an integer >= 1$"):
        cfg.check_config({**resolve(), "epochs": 0})
    with pytest.raises(ValueError, match=r"^unknown setting 'nope'; known: "):
        cfg.check_config({**resolve(), "nope": 1})


# --------------------------------------------------------------------------- the table itself, flags and eval-only

FLAGS = {  # the flags of README's usage; the other settings are set with --set (or by the profile)
    "epochs",
    "batch_size",
    "lr",
    "sample_every",
    "train_limit",
    "val_limit",
    "test_limit",
    "nll_samples",
    "fid_samples",
    "fid_reference_count",
    "fid_every",
    "fid_val_samples",
    "fid_val_reference_count",
    "interpolation_points",
}
EVAL_ONLY = {  # a resumed run may change these: they cannot change the trained state
    "test_limit",
    "nll_samples",
    "fid_samples",
    "fid_reference_count",
    "classifier_metrics",
    "fid_every",
    "fid_val_samples",
    "fid_val_reference_count",
    "interpolation_points",
    "compile_nll",
    "ema_batch_stats",
    "cuda_graph",
}


def test_the_table_builder_gives_the_documented_settings():
    """The table as built (a fresh call, so a mutation tool that switches code after import sees it too)."""
    built = {s.name: s for s in cfg._run_settings()}
    assert built == cfg.RUN_SETTINGS
    assert {n for n, s in built.items() if s.flag} == FLAGS  # --compile is a switch of its own
    assert {n for n, s in {**built, **cfg.MODEL_SETTINGS}.items() if s.eval_only} == EVAL_ONLY
    for name, s in built.items():
        assert s.name == name and s.help and not s.help.startswith(" ")
        if name in RANGES:
            kind, low, high, optional = RANGES[name]
            assert s.allowed() == kind + f" >= {low:g}" + (f" <= {high:g}" if high is not None else "") + (
                " (or null)" if optional else ""
            )
        elif name in CHOICES:
            assert s.type is str and s.choices == CHOICES[name] and s.allowed() == "one of: " + ", ".join(s.choices)
        else:
            assert name in BOOLS and s.type is bool and s.allowed() == "true or false"


def test_the_command_line_has_a_flag_per_flag_setting_and_the_fixed_options():
    parser = cfg.train_parser(["gan", "vae_std"], ["mnist", "svhn"])
    args = parser.parse_args(["gan", "mnist"])
    assert (args.model, args.dataset, args.profile, args.seed, args.seeds) == ("gan", "mnist", "default", 0, 1)
    assert (args.set, args.imports, args.device, args.data_dir, args.out) == ([], [], "auto", None, None)
    assert (args.resume, args.no_progress, args.compile) == (False, False, False)
    assert all(getattr(args, name) is None for name in FLAGS)  # unset: the profile decides
    argv = ["gan", "mnist", "--profile", "smoke", "--seed", "3", "--seeds", "2", "--resume", "--no-progress"]
    argv += ["--compile", "--set", "a=1", "--set", "b=2", "--import", "m1", "--import=m2", "--device", "cpu"]
    argv += [
        "--data-dir",
        "d",
        "--out",
        "o",
        *[x for name in sorted(FLAGS) for x in (f"--{name.replace('_', '-')}", name)],
    ]
    args = parser.parse_args(argv)
    assert (args.profile, args.seed, args.seeds, args.resume, args.no_progress, args.compile) == (
        "smoke",
        3,
        2,
        True,
        True,
        True,
    )
    assert (args.set, args.imports, args.device, args.data_dir, args.out) == (
        ["a=1", "b=2"],
        ["m1", "m2"],
        "cpu",
        "d",
        "o",
    )
    assert all(getattr(args, name) == name for name in FLAGS)  # each flag sets its own setting, as text
    for name in set(cfg.RUN_SETTINGS) - FLAGS - {"compile"}:
        with pytest.raises(SystemExit):
            parser.parse_args(["gan", "mnist", f"--{name.replace('_', '-')}", "1"])
    text = parser.format_help()
    for name in FLAGS:
        s = cfg.RUN_SETTINGS[name]
        assert f"--{name.replace('_', '-')} V" in text and s.allowed().split(" (")[0] in " ".join(text.split())


def test_a_value_is_the_profile_then_the_models_default_then_the_override_then_set_then_the_flag():
    gan = models.MODELS["gan"]
    base = cfg.defaults(gan, "mnist", "default")
    assert base == {**cfg.PROFILES["default"], **gan.defaults, **gan.overrides[("mnist", "default")]}
    assert base["lr"] == 4e-4 and base["width"] == 80 and base["epochs"] == 4  # the override wins
    assert cfg.defaults(gan, "svhn", "full")["epochs"] == 25
    assert cfg.defaults(models.MODELS["vae_std"], "svhn", "full")["epochs"] == 200  # no override
    with pytest.raises(ValueError, match="^unknown profile 'huge'; choose from: smoke, default, full, report$"):
        cfg.defaults(gan, "mnist", "huge")
    assert resolve("--set", "lr=0.5")["lr"] == 0.5  # --set over the override
    assert resolve("--set", "lr=0.5", "--lr", "0.1")["lr"] == 0.1  # the flag over --set
    assert resolve("--lr", "0.1", "--set", "lr=0.5")["lr"] == 0.1  # whatever the order
    assert resolve("--compile")["compile"] is True and "compile" not in resolve()  # absent: the profile's (off)
    config = resolve("--profile", "smoke", "--set", "loss=hinge")
    assert (config["profile"], config["loss"], config["epochs"], config["train_limit"]) == ("smoke", "hinge", 2, 1024)
    assert list(config)[:5] == ["model", "dataset", "profile", "seed", "seeds"]


@pytest.mark.parametrize("item", ["lr", "nope=1", "=1"])
def test_set_needs_a_known_key_and_a_value(item):
    with pytest.raises(ValueError) as caught:
        resolve("--set", item)
    known = ", ".join(sorted([*models.MODELS["gan"].defaults, *cfg.RUN_SETTINGS]))
    assert str(caught.value) == f"--set {item!r}: expected KEY=VALUE with KEY one of: {known}"


def test_an_unknown_setting_lists_the_known_ones():
    with pytest.raises(ValueError) as caught:
        cfg.setting("nope")
    assert (
        str(caught.value)
        == f"unknown setting 'nope'; known: {', '.join(sorted({**cfg.RUN_SETTINGS, **cfg.MODEL_SETTINGS}))}"
    )
    assert cfg.setting("lr") is cfg.RUN_SETTINGS["lr"] and cfg.setting("loss") is cfg.MODEL_SETTINGS["loss"]


def test_changed_settings_are_the_training_settings_that_differ():
    saved = resolve()
    assert cfg.changed_settings(saved, dict(saved)) == []
    changed = {**saved, "lr": 0.1, "fid_samples": 5, "nll_samples": 7, "loss": "hinge", "new_key": 1}
    assert cfg.changed_settings(saved, changed) == ["loss", "lr", "new_key"]  # eval-only ones may change
    assert cfg.changed_settings({k: v for k, v in saved.items() if k != "epochs"}, saved) == ["epochs"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "python -m experiments.run gan mnist"),
        (
            ["--profile", "smoke", "--seed", "3", "--seeds", "2"],
            "python -m experiments.run gan mnist --profile smoke --seed 3 --seeds 2",
        ),
        (["--epochs", "5", "--compile"], "python -m experiments.run gan mnist --epochs 5 --compile"),
        (
            ["--set", "loss=hinge", "--set", "g_hidden=8,4"],
            'python -m experiments.run gan mnist --set g_hidden=[8,4] --set loss="hinge"',
        ),
        (
            ["--set", "lr_schedule=cosine", "--test-limit", "9"],
            'python -m experiments.run gan mnist --set lr_schedule="cosine" --test-limit 9',
        ),
    ],
)
def test_the_reproduce_command_names_what_differs_from_the_defaults_and_gives_the_config_back(argv, expected):
    config = resolve(*argv)
    command = cfg.reproduce_command(config, models.MODELS["gan"])
    words = command.split()
    assert sorted(words) == sorted(expected.split()) and words[:5] == expected.split()[:5]
    assert resolve(*[w.replace('"', "") for w in words[5:]]) == config  # the shell removes the quotes


def test_every_option_of_the_command_line_is_described():
    """``--help`` names the program, describes every option and shows the placeholders of README's usage."""
    parser = cfg.train_parser(["gan", "vae_std"], ["mnist", "svhn"])
    assert parser.prog == "python -m experiments.run" and parser.description == "Train and evaluate a model."
    for action in parser._actions:
        assert action.help and action.help.strip() == action.help, action.dest
    usage = " ".join(parser.format_usage().split())
    for shown in (
        "--seeds N",
        "--set KEY=VALUE",
        "--import MODULE",
        "--epochs V",
        "--device DEVICE",
        "--profile PROFILE",
    ):
        assert shown in usage, shown
    text = " ".join(parser.format_help().split())
    assert "one of: gan, vae_std" in text and "one of: mnist, svhn" in text
    assert "one of: smoke, default, full, report" in text and f"one of: {cfg.DEVICES}" in text


@pytest.mark.parametrize(
    "text, shown",
    [
        ("inf", "inf"),
        ("-inf", "-inf"),
        ("INF", "inf"),
        ("Infinity", "inf"),
        ("-INF", "-inf"),
        ("infinity", "inf"),
        ("nan", "nan"),
    ],
)
def test_a_non_finite_number_is_refused_as_a_number(text, shown):
    with pytest.raises(ValueError) as caught:
        cfg.parse_value(cfg.setting("lr"), text)
    assert str(caught.value) == f"--lr: {shown} is not allowed; expected a finite number >= 1e-12 <= 1"


def test_a_list_has_no_null_elements_and_plain_words_and_lists_say_so():
    with pytest.raises(ValueError, match=r"^--set hidden: None is not allowed; expected an integer >= 1$"):
        cfg.parse_value(cfg.setting("hidden"), "[8,null]", "--set hidden")
    assert cfg.Setting("name", str, "a name").allowed() == "a word"
    assert cfg.Setting("name", str, "a name", optional=True).allowed() == "a word (or null)"
    assert cfg.Setting("widths", list, "widths", low=2, optional=True).allowed() == f"{LIST} >= 2 (or null)"
    assert cfg.check_value(cfg.Setting("name", str, "a name"), "anything") == "anything"
    optional = cfg.Setting("widths", list, "widths", low=2, optional=True)  # the list may be null, not its elements
    assert cfg.check_value(optional, None) is None and cfg.check_value(optional, [2, 3]) == [2, 3]
    with pytest.raises(ValueError, match=r"^widths: None is not allowed; expected an integer >= 2$"):
        cfg.check_value(optional, [2, None])
    with pytest.raises(ValueError, match=r"^epochs: 0 is not allowed; expected an integer >= 1$"):
        cfg.check_value(cfg.setting("epochs"), 0)  # without a place: the setting's name


def test_set_splits_at_the_first_equals_sign():
    with pytest.raises(ValueError, match=r"^--set lr: '=0.1' is not allowed; expected a finite number"):
        resolve("--set", "lr==0.1")


@pytest.mark.parametrize(
    "argv, shown, hidden",
    [
        (["--fid-samples", "0"], "--fid-samples 0", None),  # a falsy value that is not the default is shown
        (["--set", "compile=false"], None, "--compile"),  # compile off is not --compile
        (["--set", "d_spectral_norm=true"], "--set d_spectral_norm=true", None),
        (["--train-limit", "null", "--profile", "smoke"], "--train-limit null", None),
    ],
)
def test_the_reproduce_command_shows_falsy_values_and_no_compile_when_off(argv, shown, hidden):
    config = resolve(*argv)
    command = cfg.reproduce_command(config, models.MODELS["gan"])
    assert (shown is None or shown in command) and (hidden is None or hidden not in command)
    assert resolve(*command.split()[5:]) == {k: v for k, v in config.items() if (k, v) != ("compile", False)}


def test_devices_by_name_with_mps_and_several_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert cfg.resolve_device("auto") == torch.device("mps") and cfg.resolve_device("mps") == torch.device("mps")
    with pytest.raises(ValueError) as caught:
        cfg.resolve_device("cuda")
    assert str(caught.value) == (
        "--device cuda: no such CUDA device (this machine has 0 CUDA device(s) and MPS); use --device cpu or auto"
    )
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError) as caught:
        cfg.resolve_device("mps")
    assert str(caught.value) == (
        "--device mps: MPS is not available (this machine has 0 CUDA device(s)); use --device cpu or auto"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert cfg.resolve_device("cuda") == torch.device("cuda", 0)  # no index: the first GPU
    assert [cfg.resolve_device(f"cuda:{i}") for i in range(3)] == [torch.device("cuda", i) for i in range(3)]
    assert cfg.resolve_device("auto") == torch.device("cuda") and cfg.resolve_device("cpu") == torch.device("cpu")


def test_a_plugin_models_config_records_its_module_and_reproduces_with_import():
    """A model registered by another module: the config names it, the reproduce command imports it."""
    plugin = models.MODELS["vae_std"]._replace(module="my_models")
    args = cfg.train_parser(sorted(models.MODELS), ["mnist"]).parse_args(["vae_std", "mnist", "--profile", "smoke"])
    config = cfg.resolve(args, plugin)
    assert config["import"] == "my_models" and "import" not in cfg.resolve(args, models.MODELS["vae_std"])
    assert cfg.check_config(config)["import"] == "my_models"
    command = cfg.reproduce_command(config, plugin)
    assert command.startswith("python -m experiments.run vae_std mnist --import my_models")
    assert "--import" not in cfg.reproduce_command({**config, "import": None}, plugin)
    # where the model comes from is not what it trains: a resume may add or drop the key
    assert cfg.changed_settings(config, {k: v for k, v in config.items() if k != "import"}) == []
    with pytest.raises(ValueError) as caught:
        cfg.check_config({**config, "import": 3})
    assert str(caught.value) == "config key 'import' is not a module name: 3"
