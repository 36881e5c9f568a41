"""The submission archive: one zip with the code and the report, named from the parameters."""

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from experiments import run, submission

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("submission")
    assert run.main(["submission", "--vunetid", "abc123", "--assignment", "3", "--out", str(out)]) == 0
    return out / "abc123_3.zip"


def test_the_archive_holds_the_code_and_the_report_with_every_figure(archive):
    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None  # every entry reads back with its CRC
        names = set(z.namelist())
        report = z.read("abc123_3/reports/REPORT.md").decode()
    assert all(n.startswith("abc123_3/") for n in names)
    files = {n.removeprefix("abc123_3/") for n in names}
    for required in ("README.md", "pyproject.toml", "Makefile", "reports/summary.json", "reports/RESULTS.md"):
        assert required in files
    code = {p.relative_to(ROOT).as_posix() for d in ("fgm", "experiments", "tests") for p in (ROOT / d).rglob("*.py")}
    code = {c for c in code if "__pycache__" not in c}
    assert code <= files, sorted(code - files)[:5]
    figures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", report)
    assert figures, "the report shows figures"
    assert {f"reports/{f}" for f in figures} <= files
    leaked = [f for f in files if f.split("/")[0] in {".git", ".venv", "runs", "data"} or "__pycache__" in f]
    assert not leaked, leaked[:5]


def test_the_same_files_give_the_same_bytes(archive, tmp_path):
    again = submission.write_archive("abc123", "3", tmp_path)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(archive.read_bytes()).digest()


@pytest.mark.parametrize(
    "flags", [["--vunetid", "abc/123", "--assignment", "3"], ["--vunetid", "x", "--assignment", ""]]
)
def test_a_name_that_cannot_name_a_file_is_refused(flags, tmp_path, capsys):
    assert run.main(["submission", *flags, "--out", str(tmp_path)]) == 2
    assert "letters and digits only" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_report_with_a_missing_figure_is_refused(tmp_path):
    for name in submission.REQUIRED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    (tmp_path / "reports" / "REPORT.md").write_text("![curves](mnist/curves.png)")
    with pytest.raises(ValueError, match="mnist/curves.png"):
        submission.write_archive("abc123", "3", tmp_path / "out", root=tmp_path)
    (tmp_path / "reports" / "mnist").mkdir()
    (tmp_path / "reports" / "mnist" / "curves.png").write_bytes(b"png")
    path = submission.write_archive("abc123", "3", tmp_path / "out", root=tmp_path)
    with zipfile.ZipFile(path) as z:
        assert "abc123_3/reports/mnist/curves.png" in z.namelist()
        assert not any("/out/" in n for n in z.namelist())  # the archive's own folder holds only zips
