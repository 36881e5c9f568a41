"""scripts/mutation.py without running mutmut: targets, their tests, the mutant names, the table."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutation", ROOT / "scripts" / "mutation.py")
mutation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutation)


def test_every_module_of_fgm_and_experiments_is_a_target_with_tests():
    modules = mutation.modules()
    assert {"fgm/random.py", "fgm/checkpoint.py", "experiments/config.py", "experiments/report.py"} <= set(modules)
    assert all(m.startswith(("fgm/", "experiments/")) and m.endswith(".py") for m in modules)
    assert "experiments/__init__.py" not in modules  # no code
    for m in modules:
        assert mutation.tests_of(mutation.target(m)), m
    assert "tests/test_kid.py" in mutation.importing_tests("fgm/metrics/kid.py")
    assert "tests/test_random.py" not in mutation.importing_tests("fgm/metrics/kid.py")
    with pytest.raises(SystemExit, match="unknown target 'fgm/nope.py'"):
        mutation.target("fgm/nope.py")


def test_a_part_names_the_mutants_of_its_functions_only(tmp_path):
    part = mutation.Target("fgm/metrics/fid.py", ("tests/test_fid.py",), ("cached_features", "Stats.read"))
    assert mutation.mutant_globs(part) == [
        "fgm.metrics.fid.x_cached_features__mutmut_*",
        "fgm.metrics.fid.xǁStatsǁread__mutmut_*",
    ]
    meta = tmp_path / "mutants" / "fgm" / "metrics" / "fid.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {
        "fgm.metrics.fid.x_cached_features__mutmut_1": 1,
        "fgm.metrics.fid.x_cached_features__mutmut_2": 0,
        "fgm.metrics.fid.x_cached_features__mutmut_3": 36,
        "fgm.metrics.fid.xǁStatsǁread__mutmut_1": None,
        "fgm.metrics.fid.x_other__mutmut_1": 0,  # not in the part
    }
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    counted = mutation.count(tmp_path, part)
    assert (counted["total"], counted["killed"], counted["survived"], counted["timeout"]) == (4, 1, 1, 1)
    assert counted["other"] == {"not checked": 1}
    assert counted["not_killed"] == sorted(k for k, v in codes.items() if v != 1 and "other" not in k)


def test_the_mutmut_section_names_the_module_and_its_tests():
    text = mutation.mutmut_config(mutation.TARGETS["fgm/random.py"])
    assert 'only_mutate = ["fgm/random.py"]' in text
    assert (
        'pytest_add_cli_args_test_selection = ["tests/test_random.py", "tests/test_random_native.py", '
        '"tests/test_properties.py"]' in text
    )
    assert '"--hypothesis-seed=0"' in text and 'process_isolation = "forkserver"' in text


def test_the_table_has_a_row_per_target_and_the_commands():
    entry = {
        "module": "fgm/random.py",
        "part": None,
        "functions": None,
        "tests": ["tests/test_random.py"],
        "commit": "abc",
        "command": "python scripts/mutation.py run fgm/random.py --max-children 1",
        "seconds": 420,
        "stopped": None,
        "total": 10,
        "killed": 8,
        "survived": 1,
        "timeout": 0,
        "other": {"not checked": 1},
        "not_killed": [],
    }
    stopped = {**entry, "module": "fgm/optim.py", "stopped": "stopped after 60 s", "seconds": 45}
    lines = mutation.table_lines({"fgm/random.py": entry, "fgm/optim.py": stopped})
    assert lines[2] == "| `fgm/random.py` | 10 | 8 | 1 | 0 | 1 not checked | 88.9% | 7 min | `abc` |"
    assert lines[3].startswith("| `fgm/optim.py` — **stopped after 60 s** | 10 |") and "| 45 s |" in lines[3]
    assert f"- `{entry['command']}`: tests `tests/test_random.py`" in lines


def test_the_table_replaces_its_block_only(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{mutation.BEGIN}\nold\n{mutation.END}\nafter\n")
    monkeypatch.setattr(mutation, "load_results", lambda: {})
    mutation.main(["table", "--write", str(doc)])
    text = doc.read_text()
    assert text.startswith(f"before\n{mutation.BEGIN}\n| module |") and text.endswith(f"{mutation.END}\nafter\n")
    assert "old" not in text
