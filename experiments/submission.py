"""The submission archive: the code and the report (figures included) in one zip.

    python -m experiments.run submission --vunetid abc123 --assignment 3   # -> abc123_3.zip

The archive holds one folder, named like the zip, with the project as it is on
disk: the library, the experiments, the tests, the benchmarks, the docs and
``reports/`` (``REPORT.md``, ``RESULTS.md``, ``summary.json`` and every
figure). Left out: hidden folders (``.git``, ``.venv``, caches), run
directories, datasets, build outputs and earlier archives. The same files give
the same bytes (fixed timestamps, sorted entries), so two archives can be
compared by hash. A report whose figure links point at missing files is
refused: the reader of the archive could not see them.
"""

from __future__ import annotations

import argparse
import os
import re
import zipfile
from pathlib import Path

from experiments import config as cfg

ROOT = Path(__file__).resolve().parents[1]
# folders of the project that are outputs or inputs, not code or report
EXCLUDED_DIRS = {"runs", "data", "build", "dist", "node_modules", "__pycache__"}
EXCLUDED_SUFFIXES = (".zip", ".pyc", ".pt", ".egg-info")
REQUIRED = ("README.md", "pyproject.toml", "reports/REPORT.md", "reports/summary.json", "fgm/__init__.py")
_NAME = re.compile(r"[A-Za-z0-9]+")
_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def archive_name(vunetid: str, assignment: str) -> str:
    """``<vunetid>_<assignment>`` (letters and digits only: the name goes into a file name)."""
    for what, value in (("--vunetid", vunetid), ("--assignment", assignment)):
        if not _NAME.fullmatch(value or ""):
            raise ValueError(f"{what} must be letters and digits only (it names the zip), got {value!r}")
    return f"{vunetid}_{assignment}"


def project_files(root: Path = ROOT) -> list[Path]:
    """Every file of the project that goes into the archive, relative to ``root``, sorted."""

    def excluded(name: str) -> bool:
        return name.startswith(".") or name in EXCLUDED_DIRS or name.endswith(EXCLUDED_SUFFIXES)

    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not excluded(d)]  # pruned: .venv and runs/ are never walked
        files += [(Path(folder) / n).relative_to(root) for n in names if not excluded(n)]
    return sorted(files)


def missing_figures(root: Path = ROOT) -> list[str]:
    """The image links of ``reports/*.md`` whose files do not exist."""
    missing = []
    for page in sorted((root / "reports").glob("*.md")):
        for target in _LINK.findall(page.read_text()):
            if "://" not in target and not (page.parent / target).is_file():
                missing.append(f"{page.relative_to(root)}: {target}")
    return missing


def write_archive(vunetid: str, assignment: str, out_dir: Path | str = ".", root: Path = ROOT) -> Path:
    """Writes ``<out_dir>/<vunetid>_<assignment>.zip``; returns its path.

    Raises:
      ValueError: a bad name, a required file missing, or a report figure missing.
    """
    name = archive_name(vunetid, assignment)
    absent = [f for f in REQUIRED if not (root / f).is_file()]
    if absent:
        raise ValueError(f"cannot build the submission: {', '.join(absent)} missing under {root}")
    broken = missing_figures(root)
    if broken:
        raise ValueError("the report links figures that do not exist: " + "; ".join(broken))
    out = Path(out_dir) / f"{name}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in project_files(root):
            info = zipfile.ZipInfo(f"{name}/{relative.as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((root / relative).stat().st_mode & 0o777 | 0o100000) << 16
            archive.writestr(info, (root / relative).read_bytes())
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run submission", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vunetid", required=True, help="your VUnetID (letters and digits)")
    parser.add_argument("--assignment", required=True, help="the assignment number")
    parser.add_argument("--out", default=".", help="folder for the zip (default: the current folder)")
    cfg.add_import_flag(parser)  # accepted as by every command; the archive needs no model
    args = parser.parse_args(argv)
    path = write_archive(args.vunetid, args.assignment, args.out)
    with zipfile.ZipFile(path) as archive:
        count = len(archive.namelist())
    print(f"{path}: {count} files ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
