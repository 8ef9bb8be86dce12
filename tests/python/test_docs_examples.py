"""Every example in README.md and docs/*.md runs as written.

Each ``python`` and ``sh`` block is preceded by a tag: ``<!-- doc-test: run -->``
(run here, verbatim, in a fresh folder holding a copy of ``examples/``) or
``<!-- doc-test: skip (why) -->``. An untagged block fails the suite, so a new
example is either tested or says why not. Rust blocks of the README are
compiled by ``cargo test`` (``src/lib.rs`` includes the README as doctests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_micropython

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TAG = re.compile(r"<!-- doc-test: (run|skip \(.+\)) -->")
CHECKED = ("python", "sh", "bash", "shell")


def blocks() -> list[tuple[str, int, str, str, str]]:
    """(file, line, language, tag, code) of every fenced block."""
    out = []
    for path in DOCS:
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^```(\w*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            lang, start = m.group(1), i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            tag = TAG.fullmatch(lines[start - 1].strip()) if start > 0 else None
            code = "\n".join(lines[start + 1 : j]) + "\n"
            out.append((path.name, start + 1, lang, tag.group(1) if tag else "", code))
            i = j + 1
    return out


def test_every_python_and_shell_example_is_tagged() -> None:
    untagged = [f"{f}:{line}" for f, line, lang, tag, _ in blocks() if lang in CHECKED and not tag]
    assert not untagged, f"examples without a doc-test tag (run or skip (why)): {untagged}"


RUN = [(f, line, lang, code) for f, line, lang, tag, code in blocks() if lang in CHECKED and tag == "run"]


def _uota_on_path() -> str:
    found = shutil.which("uota")
    assert found, "the uota command is not on PATH (pip install the package first)"
    return found


@needs_micropython
@pytest.mark.parametrize(("doc", "line", "lang", "code"), RUN, ids=[f"{f}:{line}" for f, line, _, _ in RUN])
def test_example_runs_verbatim(doc: str, line: int, lang: str, code: str, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ)
    if lang == "python":
        cmd = [sys.executable, "-c", code]
    else:
        _uota_on_path()
        cmd = ["bash", "-e", "-c", code]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, f"{doc}:{line} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    # Nothing the example started is left behind (a virtual device, say).
    if lang != "python":
        left = subprocess.run(["pgrep", "-f", f"uota sim --root ./vdev"], capture_output=True, text=True)
        assert not left.stdout.strip(), f"{doc}:{line} left a virtual device running"
