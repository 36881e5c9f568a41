"""Mutation testing with mutmut 3, one module at a time, resumable, and the table of docs/testing.md.

    python scripts/mutation.py run                        # every module of fgm/ and experiments/ (hours)
    python scripts/mutation.py run fgm/random.py experiments/config.py
    python scripts/mutation.py run fgm/metrics/fid.py:caches   # a part: only the functions it names
    python scripts/mutation.py list                       # the targets and the tests each one runs
    python scripts/mutation.py table --write docs/testing.md   # the results as a table in the docs

``make mutation`` runs ``run`` in the background at ``nice 19`` (``MODULES=...`` to choose). Each
target is tested in its own scratch copy of the last commit (``git archive HEAD``, so uncommitted
changes are not tested and nothing is written into the checkout but the results file), under
``$FGM_MUTATION_DIR`` (default ``/tmp/fgm-mutmut``), with a ``[tool.mutmut]`` section appended to
the copy's ``pyproject.toml``. Resumable: a target already in the results file for this commit
(or for an earlier one when nothing under ``fgm/`` and ``experiments/``, and none of its test files, changed since)
is skipped, and an interrupted target resumes in its scratch copy (mutmut keeps each mutant's
result). ``--timeout`` stops a target that takes too long and records it as stopped, with the
counts reached.

Results, one entry per target: ``docs/mutation-results.json`` (killed, survived, timeout,
total, the other mutmut states, the surviving mutants' names, the command, the commit, the
wall time). Tests per target: the test files that import the module, unless ``TARGETS`` below
says otherwise (fast selections for modules whose importers train models end to end).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import fnmatch
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "mutation-results.json"
MUTMUT_VERSION = "3.8.1"
# pytest arguments of every run: hypothesis draws the same examples for every mutant
PYTEST_ARGS = ["-p", "no:cacheprovider", "-q", "--hypothesis-seed=0"]
# what the tests read besides fgm/ and experiments/ (mutmut copies tests/ and pyproject.toml itself)
ALSO_COPY = ["benchmarks", "reports", "docs", "README.md", "BENCHMARKS.md", "Makefile", "scripts"]
# what a result depends on besides its target's test files (a change makes the result stale)
CODE = ["fgm", "experiments", "tests/conftest.py", "pyproject.toml"]

# mutmut's exit codes (mutmut.stats.status_by_exit_code, copied: importing mutmut reads the cwd's config)
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    2: "interrupted",
    None: "not checked",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "caught by type check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
}


class Target(NamedTuple):
    """What one run mutates and which tests it runs.

    Attributes:
      path: the module, relative to the repository.
      tests: pytest selections (files or node ids); ``None``: the test files that import ``path``.
      functions: for a part of a module, the functions (and ``Class.method``) to mutate; ``None``: all.
      pytest_args: more pytest arguments.
    """

    path: str
    tests: tuple[str, ...] | None = None
    functions: tuple[str, ...] | None = None
    pytest_args: tuple[str, ...] = ()


NO_REAL_INCEPTION = ("-k", "not real_inception")
TARGETS: dict[str, Target] = {
    # the configuration is read by every training test; these are the ones that check it
    "experiments/config.py": Target(
        "experiments/config.py",
        (
            "tests/test_config.py",
            "tests/test_report_pooling.py",
            "tests/test_run.py::test_bad_input_is_a_clear_error_with_exit_2",
            "tests/test_devices.py::test_device_names_resolve_or_say_what_is_allowed",
            "tests/test_devices.py::test_every_command_refuses_a_bad_device_with_exit_2",
        ),
    ),
    "fgm/checkpoint.py": Target("fgm/checkpoint.py", ("tests/test_checkpoint.py",)),
    "fgm/random.py": Target(
        "fgm/random.py", ("tests/test_random.py", "tests/test_random_native.py", "tests/test_properties.py")
    ),
    # the disk caches of fgm.metrics.fid: statistics and features, their keys, paths and checks
    "fgm/metrics/fid.py:caches": Target(
        "fgm/metrics/fid.py",
        ("tests/test_fid.py", "tests/test_features.py"),
        (
            "image_fingerprint",
            "statistics_key",
            "_key_json",
            "cache_path",
            "_open_cache",
            "_read_cache",
            "cached_statistics",
            "_atomic_save",
            "_tensor_sha256",
            "_stats_sha256",
            "features_cache_path",
            "_read_features",
            "cached_features",
        ),
        NO_REAL_INCEPTION,
    ),
    "fgm/metrics/frechet.py": Target(
        "fgm/metrics/frechet.py", ("tests/test_frechet.py", "tests/test_fid.py"), pytest_args=NO_REAL_INCEPTION
    ),
}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


@functools.cache
def modules() -> list[str]:
    """Every module of fgm/ and experiments/ (``__init__`` files without code left out)."""
    paths = sorted(git("ls-files", "fgm/*.py", "fgm/**/*.py", "experiments/*.py").split())
    return [p for p in dict.fromkeys(paths) if _has_code(ROOT / p)]


def _has_code(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)


@functools.cache
def _imported_modules(test: Path) -> frozenset[str]:
    """The dotted names a test file imports (``from fgm import random`` gives ``fgm.random``)."""
    found = set()
    for node in ast.walk(ast.parse(test.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return frozenset(found)


def _dotted(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def importing_tests(path: str) -> tuple[str, ...]:
    """The test files that import the module ``path`` (``fgm/metrics/kid.py`` is ``fgm.metrics.kid``).

    A module no test imports gets the tests of the modules that import it.
    """
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    found = [str(t.relative_to(ROOT)) for t in tests if _dotted(path) in _imported_modules(t)]
    if not found:
        sources = sorted(str(f.relative_to(ROOT)) for d in ("fgm", "experiments") for f in (ROOT / d).rglob("*.py"))
        # packages' __init__ files too: tests import fgm.models.gan, which imports its modules
        users = [m for m in sources if m != path and _dotted(path) in _imported_modules(ROOT / m)]
        found = sorted({t for m in users for t in importing_tests(m)})
    return tuple(found)


def target(name: str) -> Target:
    if name in TARGETS:
        return TARGETS[name]
    if ":" in name or not (ROOT / name).is_file():
        raise SystemExit(
            f"unknown target {name!r}: a module path such as fgm/random.py, or one of {', '.join(TARGETS)}"
        )
    return Target(name)


def tests_of(t: Target) -> tuple[str, ...]:
    return t.tests if t.tests is not None else importing_tests(t.path)


def mutant_globs(t: Target) -> list[str]:
    """mutmut's names of the mutants of the target's functions (``fgm.random.x_uniform__mutmut_3``)."""
    if t.functions is None:
        return []
    module = t.path.removesuffix(".py").replace("/", ".")
    globs = []
    for f in t.functions:
        cls, _, name = f.rpartition(".")
        globs.append(f"{module}.{f'xǁ{cls}ǁ' if cls else 'x_'}{name}__mutmut_*")
    return globs


def mutmut_config(t: Target) -> str:
    toml = lambda values: "[" + ", ".join(json.dumps(v) for v in values) + "]"  # noqa: E731 - TOML lists of strings
    return (
        "\n[tool.mutmut]\n"
        f'source_paths = ["fgm", "experiments"]\n'
        f"also_copy = {toml(ALSO_COPY)}\n"
        f"only_mutate = {toml([t.path])}\n"
        f"pytest_add_cli_args_test_selection = {toml(tests_of(t))}\n"
        f"pytest_add_cli_args = {toml([*PYTEST_ARGS, *t.pytest_args])}\n"
        'process_isolation = "forkserver"\n'
    )


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_results(results: dict) -> None:
    RESULTS.write_text(json.dumps(dict(sorted(results.items())), indent=2, ensure_ascii=False) + "\n")


def up_to_date(name: str, entry: dict | None, commit: str) -> bool:
    """Done for this commit, or for an earlier one with the code, the target's tests and their selection unchanged."""
    if not entry or entry.get("stopped") or entry["tests"] != list(tests_of(target(name))):
        return False
    if entry["commit"] == commit:
        return True
    paths = [*CODE, *{t.partition("::")[0] for t in entry["tests"]}]
    return subprocess.run(["git", "diff", "--quiet", entry["commit"], commit, "--", *paths], cwd=ROOT).returncode == 0


def scratch_copy(name: str, commit: str, t: Target) -> Path:
    """The target's scratch copy of ``commit`` (made once; an existing one is resumed)."""
    root = Path(os.environ.get("FGM_MUTATION_DIR", "/tmp/fgm-mutmut"))
    folder = root / commit / name.replace("/", "_").replace(":", "-")
    if not (folder / "pyproject.toml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        with open(folder / "pyproject.toml", "a") as f:
            f.write(mutmut_config(t))
    return folder


def mutmut() -> str:
    found = Path(sys.executable).with_name("mutmut")
    if not found.exists():
        raise SystemExit(f"mutmut is not installed in {sys.prefix}: pip install mutmut=={MUTMUT_VERSION}")
    return str(found)


def count(folder: Path, t: Target) -> dict:
    """Mutants by state (of the target's functions only, for a part) and the names of those not killed."""
    meta = folder / "mutants" / (t.path + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    globs = mutant_globs(t)
    if globs:
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in globs)}
    states: dict[str, int] = {}
    for code in codes.values():
        state = STATUS.get(code, "suspicious")
        states[state] = states.get(state, 0) + 1
    return {
        "total": len(codes),
        "killed": states.get("killed", 0),
        "survived": states.get("survived", 0),
        "timeout": states.get("timeout", 0),
        "other": {s: n for s, n in sorted(states.items()) if s not in ("killed", "survived", "timeout")},
        "not_killed": sorted(k for k, v in codes.items() if STATUS.get(v, "suspicious") != "killed"),
    }


def run_target(name: str, commit: str, max_children: int, timeout: float | None, command: str) -> dict:
    t = target(name)
    folder = scratch_copy(name, commit, t)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if "FGM_DATA_DIR" in env:  # the scratch copy is elsewhere: a relative path would not be found
        env["FGM_DATA_DIR"] = str(Path(env["FGM_DATA_DIR"]).resolve())
    argv = [mutmut(), "run", "--max-children", str(max_children), *mutant_globs(t)]
    print(f"== {name}: {len(tests_of(t))} test selection(s), in {folder}", flush=True)
    start = time.monotonic()
    with open(folder / "mutmut.log", "a") as log:
        process = subprocess.Popen(
            argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(timeout=timeout)
            stopped = None
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)  # mutmut and its workers: the session it leads
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            stopped = f"stopped after {timeout:.0f} s"
    seconds = round(time.monotonic() - start)
    entry = {
        "module": t.path,
        "part": name.partition(":")[2] or None,
        "functions": list(t.functions) if t.functions else None,
        "tests": list(tests_of(t)),
        "commit": commit,
        "command": command,
        "mutmut": MUTMUT_VERSION,
        "max_children": max_children,
        "seconds": seconds,
        "date": datetime.date.today().isoformat(),
        "stopped": stopped,
        **count(folder, t),
    }
    if process.returncode not in (0, None) and not stopped:
        entry["stopped"] = f"mutmut exited with {process.returncode} (see {folder / 'mutmut.log'})"
    print(
        f"   {entry['killed']} killed, {entry['survived']} survived, {entry['timeout']} timeout of {entry['total']}"
        f" in {seconds} s{'; ' + entry['stopped'] if entry['stopped'] else ''}",
        flush=True,
    )
    return entry


def run(args: argparse.Namespace) -> int:
    if args.nice:
        os.nice(max(0, args.nice - os.nice(0)))
    commit = git("rev-parse", "--short=12", "HEAD")
    if git("status", "--porcelain", "--", *CODE, "tests"):
        print("note: uncommitted changes under fgm/, experiments/ or tests/ are not tested (the last commit is)")
    names = args.targets or modules()
    results = load_results()
    for name in names:
        if not args.force and up_to_date(name, results.get(name), commit):
            print(f"== {name}: done for this code ({results[name]['commit']}), skipped", flush=True)
            continue
        command = shlex.join(["python", "scripts/mutation.py", "run", name, "--max-children", str(args.max_children)])
        results[name] = run_target(name, commit, args.max_children, args.timeout, command)
        save_results(results)  # after every target: an interruption loses at most the one running
    return 0


def table_lines(results: dict) -> list[str]:
    """The results as Markdown: a row per target, then the commands and the mutants not killed."""
    lines = [
        "| module | mutants | killed | survived | timeout | other | killed % | wall time | commit |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for e in results.values():
        other = ", ".join(f"{n} {s}" for s, n in e["other"].items()) or "—"
        checked = e["total"] - e["other"].get("not checked", 0)
        score = f"{100 * e['killed'] / checked:.1f}%" if checked else "—"
        label = f"`{e['module']}`" + (f" ({e['part']}: {len(e['functions'])} functions)" if e["part"] else "")
        if e["stopped"]:
            label += f" — **{e['stopped']}**"
        minutes = f"{e['seconds'] / 60:.0f} min" if e["seconds"] >= 60 else f"{e['seconds']} s"
        lines.append(
            f"| {label} | {e['total']} | {e['killed']} | {e['survived']} | {e['timeout']} | {other} | {score} "
            f"| {minutes} | `{e['commit']}` |"
        )
    lines += ["", "Commands (each in a scratch copy of its commit; mutmut " + MUTMUT_VERSION + "):", ""]
    lines += [f"- `{e['command']}`: tests {', '.join(f'`{t}`' for t in e['tests'])}" for e in results.values()]
    return lines


BEGIN, END = "<!-- mutation-table: generated by scripts/mutation.py table -->", "<!-- /mutation-table -->"


def table(args: argparse.Namespace) -> int:
    text = "\n".join(table_lines(load_results()))
    if not args.write:
        print(text)
        return 0
    doc = Path(args.write).read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{args.write} has no {BEGIN} ... {END} block to replace")
    head, _, rest = doc.partition(BEGIN)
    Path(args.write).write_text(head + BEGIN + "\n" + text + "\n" + END + rest.partition(END)[2])
    print(f"{args.write}: table of {len(load_results())} target(s) written")
    return 0


def list_targets(args: argparse.Namespace) -> int:
    results = load_results()
    commit = git("rev-parse", "--short=12", "HEAD")
    for name in sorted({*modules(), *TARGETS}):
        t = target(name)
        state = "done" if up_to_date(name, results.get(name), commit) else "to run"
        print(f"{name:40} {state:7} {' '.join(tests_of(t)) or '(no test imports it)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="mutation-test targets (default: every module), skipping those done")
    p.add_argument("targets", nargs="*", help="module paths or parts (default: every module of fgm/ and experiments/)")
    p.add_argument("--max-children", type=int, default=1, help="mutmut workers (default 1: the machine is shared)")
    p.add_argument("--timeout", type=float, help="stop a target after this many seconds (recorded as stopped)")
    p.add_argument("--force", action="store_true", help="run targets even if done for this code")
    p.add_argument("--nice", type=int, default=19, help="niceness to run at (default 19; 0 leaves it)")
    p.set_defaults(func=run)
    p = sub.add_parser("table", help="the results as a Markdown table")
    p.add_argument("--write", metavar="FILE", help=f"replace the {BEGIN} block of FILE")
    p.set_defaults(func=table)
    sub.add_parser("list", help="the targets, whether each is done, and their tests").set_defaults(func=list_targets)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
