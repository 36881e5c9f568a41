"""The documentation runs: every Python block in README.md and docs/*.md, and every public name is documented.

Snippets. A fenced block whose info string starts with ``python`` is a
snippet. Each snippet runs on its own, in a fresh namespace (``__name__`` is
``"__docs__"``), so every example in the docs is self-contained and can be
copied alone. Line numbers in tracebacks are those of the Markdown file, and a
failure names the file and the snippet's first line.

Skipping. A snippet is skipped only by an explicit marker in its info string,
```` ```python skip ```` (for an API that does not exist yet); each one is
reported as its own skipped test with its location, so ``pytest -rs`` lists
them and the summary counts them. Blocks in other languages (``bash``, plain
```` ``` ````) are not run.

Side effects are contained: snippets run in a temporary working directory,
``$FGM_DATA_DIR`` points at the real MNIST when it is not already set, and the
model registry of ``experiments.models`` (with the model settings it adds to
``experiments.config.MODEL_SETTINGS``) and the dataset registry of ``fgm.data``
are restored after each snippet, so a snippet that registers a model or a
dataset does not leak it into other tests. Snippets
run with one intra-op thread (restored afterwards).

Public API. Every module of ``fgm`` declares ``__all__`` (the exceptions are
listed in ``WITHOUT_ALL``), and every public function, class, public method and
property has a docstring; constants and type aliases, which cannot carry one,
are named in their module's docstring or commented where they are assigned.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import fgm

from .conftest import mnist_dir

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


class Snippet(NamedTuple):
    path: Path
    line: int  # 1-based line of the first line of code
    code: str
    skip: bool

    @property
    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"


def extract_snippets(path: Path) -> list[Snippet]:
    """The Python blocks of a Markdown file, with their first code line and skip flag."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened or (opened["fence"][0] == "`" and "`" in opened["info"]):  # inline code, as in CommonMark
            i += 1
            continue
        indent, fence, words = opened["indent"], opened["fence"], opened["info"].split()
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body_start = i + 1
        j = body_start
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: code fence is never closed")
        if words and words[0] == "python":
            unknown = set(words[1:]) - {"skip"}
            if unknown:
                raise ValueError(f"{path}:{i + 1}: unknown snippet marker(s) {sorted(unknown)}; only 'skip' exists")
            body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[body_start:j]]
            snippets.append(Snippet(path, body_start + 1, "\n".join(body) + "\n", "skip" in words[1:]))
        i = j + 1
    return snippets


SNIPPETS = [s for path in DOC_FILES for s in extract_snippets(path)]


@pytest.fixture
def doc_sandbox(tmp_path, monkeypatch):
    """A scratch working directory, the data directory, and the model and dataset registries restored afterwards."""
    monkeypatch.chdir(tmp_path)
    if not os.environ.get("FGM_DATA_DIR"):
        monkeypatch.setenv("FGM_DATA_DIR", str(mnist_dir()))
    from experiments import config, models
    from fgm import data

    saved = dict(models.MODELS)
    saved_settings = dict(config.MODEL_SETTINGS)
    saved_datasets = dict(data.DATASETS)
    threads = torch.get_num_threads()
    # The snippets' models are tiny: a second intra-op thread gains nothing, and on a
    # busy machine (other jobs on the cores) it makes small ops many times slower.
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        models.MODELS.clear()
        models.MODELS.update(saved)
        config.MODEL_SETTINGS.clear()
        config.MODEL_SETTINGS.update(saved_settings)
        if data.DATASETS != saved_datasets:
            data.DATASETS.clear()
            data.DATASETS.update(saved_datasets)
            data.clear_cache()  # splits of the snippet's datasets (read from its temporary directories)


def run_snippet(snippet: Snippet) -> None:
    """Executes one snippet; a failure names the file and lines, with the traceback."""
    # Leading newlines make the compiled line numbers those of the Markdown file.
    source = "\n" * (snippet.line - 1) + snippet.code
    filename = str(snippet.path)
    try:
        exec(compile(source, filename, "exec"), {"__name__": "__docs__"})
        return
    except BaseException as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
        failed_at = f", line {frames[-1].lineno}" if frames else ""
        message = f"the snippet at {snippet.where} raised {type(exc).__name__}{failed_at}: {exc}"
        details = "".join(traceback.format_exception(exc))
    pytest.fail(f"{message}\n\n{details}", pytrace=False)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, doc_sandbox):
    if snippet.skip:
        pytest.skip(f"{snippet.where} is marked 'python skip'")
    run_snippet(snippet)


def test_docs_have_snippets():
    """The files whose examples must stay runnable do have some (a broken extractor finds none)."""
    files = {s.path.name for s in SNIPPETS}
    assert {"README.md", "api.md"} <= files, files
    assert len([s for s in SNIPPETS if s.path.name == "api.md" and not s.skip]) >= 8


def test_extractor_handles_markers_and_other_languages(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n"
        "```python\nx = 1\n```\n"
        "```bash\nexit 1\n```\n"
        "- item\n\n  ```python skip\n  fid(a, b)\n  ```\n"
        "````python\nprint('```')\n````\n"
        "```` ```python skip ```` in prose\n"
    )
    got = extract_snippets(doc)
    assert [(s.line, s.code, s.skip) for s in got] == [
        (3, "x = 1\n", False),
        (11, "fid(a, b)\n", True),
        (14, "print('```')\n", False),
    ]
    (tmp_path / "bad.md").write_text("```python typo\nx\n```\n")
    with pytest.raises(ValueError, match="unknown snippet marker"):
        extract_snippets(tmp_path / "bad.md")


def test_failure_names_file_and_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n\n```python\nx = 1\nraise RuntimeError('boom')\n```\n")
    (snippet,) = extract_snippets(doc)
    with pytest.raises(pytest.fail.Exception) as failure:
        run_snippet(snippet)
    message = str(failure.value)
    assert f"{doc}:4" in message and "line 5" in message and "boom" in message


# --------------------------------------------------------------------------- public API


def _fgm_modules() -> list[str]:
    names = ["fgm"]
    for info in pkgutil.walk_packages(fgm.__path__, prefix="fgm."):
        names.append(info.name)
    return sorted(names)


# Modules that do not declare ``__all__`` yet (their public names are then the
# functions and classes they define). Remove a module from this set when it
# gains an ``__all__``; the test below fails until you do.
WITHOUT_ALL: set[str] = set()


def test_modules_declare_all():
    missing = {name for name in _fgm_modules() if not hasattr(importlib.import_module(name), "__all__")}
    assert missing == WITHOUT_ALL, (
        f"modules without __all__: {sorted(missing)}; expected exactly {sorted(WITHOUT_ALL)} "
        "(declare the public names with __all__, then update WITHOUT_ALL)"
    )


def _public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__
    ]


def _undocumented(module) -> list[str]:
    """Public names of ``module`` without a docstring of their own."""
    gaps = []
    module_doc = module.__doc__ or ""
    for name in _public_names(module):
        value = getattr(module, name)  # an AttributeError here is a stale __all__
        if inspect.ismodule(value):
            if not (value.__doc__ or "").strip():
                gaps.append(f"{name} (module)")
        elif inspect.isfunction(value) or inspect.isclass(value):
            if not (value.__doc__ or "").strip():
                gaps.append(name)
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if attr.startswith("_"):
                        continue
                    target = member.fget if isinstance(member, property) else member
                    if (inspect.isfunction(target) or isinstance(member, property)) and not (
                        target.__doc__ or ""
                    ).strip():
                        gaps.append(f"{name}.{attr}")
        elif not (re.search(rf"\b{re.escape(name)}\b", module_doc) or _has_comment(module, name)):
            # Constants and type aliases cannot carry a docstring: the module's docstring
            # names them, or a comment sits on or just above their assignment.
            gaps.append(f"{name} (constant: neither in the module docstring nor commented)")
    return gaps


def _has_comment(module, name: str) -> bool:
    lines = inspect.getsource(module).splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", line):
            return "#" in line or (i > 0 and lines[i - 1].lstrip().startswith("#"))
    return False


@pytest.mark.parametrize("module_name", _fgm_modules())
def test_public_names_have_docstrings(module_name):
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    assert _undocumented(module) == [], f"{module_name}: public names without a docstring"
