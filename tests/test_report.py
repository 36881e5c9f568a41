"""The comparison report and the sweep, on tiny real runs (experiments/report.py, experiments/sweep.py)."""

import json
import re
import statistics

import pytest

from experiments import analysis, report, run, sweep, trainer
from tests.svhn_fixture import svhn_root  # noqa: F401

TINY = ["--profile", "smoke", "--train-limit", "128", "--val-limit", "64", "--test-limit", "64", "--epochs", "1",
        "--no-progress"]
MODELS = ("vae_std", "vae_flow", "gan")


def train_tiny(out, model, dataset, data_dir):
    assert run.main([model, dataset, *TINY, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    if not (out / analysis.INTERPOLATIONS / analysis.INDEX).exists():  # until the runner writes them itself
        analysis.figures_for_run(out, str(data_dir))


@pytest.fixture(scope="module")
def mnist_runs(tmp_path_factory, mnist_root):
    runs = tmp_path_factory.mktemp("runs")
    for model in MODELS:
        train_tiny(runs / f"{model}-mnist-s0", model, "mnist", mnist_root)
    return runs


def section(text, title):
    """The Markdown between ``## title`` and the next ``## ``."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def table_rows(text, first_header_cell):
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return lines[start], rows


def formatted(results):
    """Every string the results table may show for one run, formatted from its results.json."""
    r = results
    seconds = r["train_seconds_total"]
    out = {f"{r['epochs']:,}", f"{seconds:.0f}" if seconds < 60 else f"{seconds / 60:.1f}", f"{sum(r['parameters'].values()):,}",
           f"{r['num_test']:,}"}
    for key, digits in (("test_neg_elbo", 2), ("test_nll", 2), ("test_fid", 2), ("test_bits_per_dim", 3),
                        ("test_nll_bits_per_dim", 3)):
        if isinstance(r.get(key), (int, float)):
            out.add(f"{r[key]:,.{digits}f}")
    for key in ("nll_samples", "fid_samples", "fid_reference_count"):
        if isinstance(r.get(key), int):
            out.add(f"{r[key]:,}")
    return out


NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def test_report_from_tiny_real_runs(mnist_runs, tmp_path):
    out = tmp_path / "reports"
    assert report.main(["--runs", str(mnist_runs), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    mnist = section(text, "MNIST")
    header, rows = table_rows(mnist, "model")
    assert "test FID" in header and "test NLL ↓ (nats)" in header and "parameters" in header
    assert [r[0] for r in rows] == list(MODELS)
    for row in rows:
        results = json.loads((mnist_runs / f"{row[0]}-mnist-s0" / "results.json").read_text())
        allowed = formatted(results) | {str(results.get("config_seed", 0)), "0"}
        for cell in row[1:]:
            for number in NUMBER.findall(cell):
                assert number in allowed, f"{row[0]}: {number!r} in {cell!r} is not formatted from results.json"
        if row[0] != "gan":
            assert f"{results['test_nll']:.2f}" in row and f"{results['test_neg_elbo']:.2f}" in row
            assert f"K = {results['nll_samples']}, {results['num_test']} images" in row
        assert f"{sum(results['parameters'].values()):,}" in row
    # every figure the report links exists
    links = re.findall(r"\]\(([^)]+\.(?:png|gif))\)", text)
    assert links and all((out / link).exists() for link in links)
    for name in ("mnist/curves.png", "mnist/samples.png", "mnist/interp-prior_noise.png",
                 "mnist/interp-test_latent.png", "mnist/interp-test_base.png", "mnist/progression-gan.png"):
        assert name in links
    # the prose compares the two VAEs with the numbers of their runs
    std = json.loads((mnist_runs / "vae_std-mnist-s0" / "results.json").read_text())
    flow = json.loads((mnist_runs / "vae_flow-mnist-s0" / "results.json").read_text())
    d = flow["test_nll"] - std["test_nll"]
    assert f"vae_flow's test NLL is {abs(d):.2f} nats {'lower' if d < 0 else 'higher'} than vae_std's" in mnist
    assert "endpoints included" in mnist and "### Analysis" in mnist
    # the machine, the commands, and the SVHN half that was not run
    assert "torch" in text and "CPU cores" in text
    assert "python -m experiments.run vae_std mnist --profile smoke" in text
    svhn = section(text, "SVHN")
    assert "was not run on this machine" in svhn and "python -m experiments.run all --datasets svhn" in svhn


def fake_run(root, name, seed, results, **config):
    d = root / name
    d.mkdir(parents=True)
    base = {"model": results["model"], "dataset": results["dataset"], "profile": "default", "seed": seed, "epochs": 40}
    (d / "config.json").write_text(json.dumps({**base, **config}))
    (d / "results.json").write_text(json.dumps(results))
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "val_neg_elbo": 100.0 - e - seed, "train_neg_elbo": 99.0 - e, "epoch_seconds": 10.0}) + "\n"
        for e in (1, 2, 3)))
    return d


def vae_results(model, nll, elbo, seconds, seed=None):
    r = {"model": model, "dataset": "mnist", "epochs": 40, "num_test": 10000, "nll_samples": 100,
         "test_nll": nll, "test_neg_elbo": elbo, "test_recon": elbo - 25.0, "test_kl": 25.0,
         "train_seconds_total": seconds, "parameters": {"encoder": 10, "decoder": 20, "prior": 0}}
    if seed is not None:
        r["seed"] = seed
    return r


def test_seeds_are_aggregated_as_mean_and_std(tmp_path):
    runs = tmp_path / "runs"
    nlls, elbos, secs = [90.1, 90.5, 89.6], [93.0, 93.4, 92.9], [300.0, 330.0, 315.0]
    for seed in range(3):
        fake_run(runs, f"vae_std-mnist-s{seed}", seed, vae_results("vae_std", nlls[seed], elbos[seed], secs[seed]))
    # another configuration of the same model is listed apart, not averaged in
    fake_run(runs, "vae_std-mnist-wide", 0, vae_results("vae_std", 80.0, 85.0, 1.0), latent_dim=64)
    # an ensemble run (experiments/ensemble.py): one results.json and metrics.jsonl with a member per seed
    members = [{"seed": s, "test_nll": v, "test_neg_elbo": v + 3, "test_recon": v - 20, "test_kl": 23.0,
                "final_val": {"val_neg_elbo": v + 3.5}} for s, v in enumerate([87.0, 87.6])]
    ens = {"model": "vae_flow", "dataset": "mnist", "seeds": [0, 1], "epochs": 40, "num_test": 10000,
           "nll_samples": 100, "members": members, "mean": {"test_nll": 87.3}, "std": {"test_nll": 0.42},
           "train_seconds_total": 900.0, "parameters_per_member": {"encoder": 10, "decoder": 20, "prior": 5}}
    d = fake_run(runs, "vae_flow-mnist-s0x2", 0, ens, seeds=[0, 1])
    (d / "metrics.jsonl").write_text("".join(json.dumps(
        {"epoch": e, "members": [{"seed": s, "val_neg_elbo": 99.0 - e - s} for s in (0, 1)], "epoch_seconds": 20.0}) + "\n"
        for e in (1, 2, 3)))
    out = tmp_path / "reports"
    assert report.main(["--runs", str(runs), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    _, rows = table_rows(section(text, "MNIST"), "model")
    by_model = {r[0]: r for r in rows}
    assert set(by_model) == {"vae_std", "vae_flow"}
    std_row = by_model["vae_std"]
    assert std_row[1] == "0, 1, 2"
    assert f"{statistics.fmean(nlls):.2f} ± {statistics.stdev(nlls):.2f}" in std_row
    assert f"{statistics.fmean(elbos):.2f} ± {statistics.stdev(elbos):.2f}" in std_row
    assert f"{statistics.fmean(secs) / 60:.1f} min" in std_row
    flow_row = by_model["vae_flow"]
    assert flow_row[1] == "0, 1" and f"{statistics.fmean([87.0, 87.6]):.2f} ± {statistics.stdev([87.0, 87.6]):.2f}" in flow_row
    assert "15.0 min" in flow_row and "35" in flow_row  # the ensemble's time; parameters per member
    assert "report the time of the whole ensemble" in text
    assert "mean ± sample standard deviation" in text
    assert "vae_std-mnist-wide" in section(text, "MNIST").split("### Other runs")[1]
    assert "latent_dim" in text
    d = statistics.fmean([87.0, 87.6]) - statistics.fmean(nlls)
    assert f"vae_flow's test NLL is {abs(d):.2f} nats lower than vae_std's" in text
    assert "twice the larger seed standard deviation" in text


def test_svhn_half_of_the_report(svhn_root, tmp_path):  # noqa: F811
    runs = tmp_path / "runs"
    train_tiny(runs / "vae_std-svhn-s0", "vae_std", "svhn", svhn_root)
    out = tmp_path / "reports"
    assert report.main(["--runs", str(runs), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    svhn = section(text, "SVHN")
    assert "not run on this machine" not in svhn
    header, rows = table_rows(svhn, "model")
    assert "(bits/dim)" in header and rows[0][0] == "vae_std"
    results = json.loads((runs / "vae_std-svhn-s0" / "results.json").read_text())
    assert f"{results['test_nll_bits_per_dim']:.3f}" in rows[0] and f"{results['test_bits_per_dim']:.3f}" in rows[0]
    assert "Not run on this dataset: vae_flow" in svhn
    assert "was not run on this machine" in section(text, "MNIST")


def test_sweep_trains_resumes_skips_and_reports_missing_data(tmp_path, mnist_root, capsys, monkeypatch):
    runs = tmp_path / "runs"
    argv = ["--models", "vae_std", "--datasets", "mnist,svhn", "--profile", "smoke", "--runs", str(runs),
            "--data-dir", str(mnist_root), "--no-progress", "--",
            "--train-limit", "128", "--val-limit", "64", "--test-limit", "64", "--epochs", "2"]
    original = trainer.checkpoint.save

    class Killed(Exception):
        pass

    def save_then_die(path, state, metadata=None):
        original(path, state, metadata)
        if metadata and metadata.get("epoch") == 1:
            raise Killed("simulated kill after epoch 1")

    monkeypatch.setattr(trainer.checkpoint, "save", save_then_die)
    assert sweep.main(argv) == 1  # the run was killed: reported, not raised
    printed = capsys.readouterr()
    assert "failed" in printed.out
    assert "svhn: skipped, no data" in printed.out and "train_32x32.mat" in printed.out
    monkeypatch.setattr(trainer.checkpoint, "save", original)

    assert sweep.main(argv) == 0  # interrupted -> resumed from epoch 1
    printed = capsys.readouterr().out
    assert "resumed" in printed and "--resume" in printed
    out = runs / "vae_std-mnist-s0"
    assert json.loads((out / "results.json").read_text())["epochs"] == 2
    assert (out / "interpolations" / "index.json").exists()

    assert sweep.main(argv) == 0  # finished -> skipped
    assert "done (skipped)" in capsys.readouterr().out

    assert sweep.main([*argv[:argv.index("--")], "--profile", "default"]) == 0  # another profile: left alone
    assert "conflict" in capsys.readouterr().out
    assert sweep.main(["--models", "nope"]) == 2


def test_sweep_plans_ensembles_and_separate_seeds(tmp_path, mnist_root, capsys):
    common = ["--profile", "smoke", "--runs", str(tmp_path), "--data-dir", str(mnist_root), "--dry-run",
              "--datasets", "mnist", "--seeds", "2"]
    assert sweep.main([*common, "--models", "vae_std"]) == 0
    assert "vae_std-mnist-s0x2" in capsys.readouterr().out  # seeds trained together (vmap)
    assert sweep.main([*common, "--models", "vae_std", "--separate-seeds", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "vae_std-mnist-s3" in printed and "vae_std-mnist-s4" in printed and "would fresh" in printed
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    assert sweep.main([*common, "--", "--seeds", "3"]) == 2  # the sweep owns --seeds
