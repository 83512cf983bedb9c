"""Pages that fit: the PDF compiles with no box wider than the page, and no Markdown
syntax leaks into the LaTeX (backticks) or into code a reader pastes (``alpha\\*F(x)``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import derive.studynotes.writer as notes_mod
from derive.rendering.render import md_prose, tex_columns, tex_prose

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

#: An overfull box wider than this (points) fails the test.
TOLERANCE_PT = 3.0


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pages") / "output"
    notes_mod.notes(folder, formats=("latex", "markdown", "obsidian"), depth=4)
    return folder


def _overfull(log: str) -> list[tuple[float, str]]:
    """Every overfull box of a pdflatex log: (points too wide, where)."""
    return [(float(m[1]), m[0]) for m in
            re.finditer(r"Overfull \\[hv]box \(([0-9.]+)pt too \w+\)[^\n]*", log)]


def test_the_log_parser_finds_overfull_boxes():
    log = ("Overfull \\hbox (119.98595pt too wide) in paragraph at lines 153--164\n"
           "Underfull \\hbox (badness 10000) in paragraph\n"
           "Overfull \\hbox (0.5pt too wide) in alignment at lines 3--4\n")
    assert [w for w, _ in _overfull(log)] == [119.98595, 0.5]


def test_the_pdf_has_no_box_wider_than_the_page(out):
    if not all(shutil.which(t) for t in ("pdflatex",)):
        if os.environ.get("CI"):
            pytest.fail("CI must install pdflatex")
        pytest.skip("pdflatex not installed")
    folder = out / "latex"
    for _ in range(2):  # the second run sets the table of contents and the references
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               "notes.tex"], cwd=folder, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-2000:]
    log = (folder / "notes.log").read_text(encoding="latin-1")
    wide = [(w, where) for w, where in _overfull(log) if w > TOLERANCE_PT]
    assert not wide, wide
    assert (folder / "notes.pdf").read_bytes().startswith(b"%PDF-")


def test_no_markdown_leaks_into_any_output(out):
    files = [out / "latex/notes.tex", out / "markdown/notes.md",
             *sorted((out / "obsidian").glob("*.md"))]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "\\*" not in text, path.name
        if path.suffix == ".tex":
            assert "`" not in text, path.name
    tex = (out / "latex/notes.tex").read_text(encoding="utf-8")
    # the code a reader pastes into --block, and the option's two hyphens
    assert "\\texttt{x + alpha*F(x)}" in tex
    assert "\\texttt{derive variance -{}-block NAME}" in tex
    md = (out / "markdown/notes.md").read_text(encoding="utf-8")
    assert "`x + alpha*F(x)`" in md


def test_code_spans_and_columns():
    assert tex_prose("run `a --b c*d` & go") == "run \\texttt{a -{}-b c*d} \\& go"
    assert md_prose("a*b, `x*y`, $u*v$") == "a\\*b, `x*y`, $u*v$"
    # a short table keeps its columns; a long cell wraps in an X column
    assert tex_columns(("a", "b"), (("1", "2"),)).count("X") == 1
    spec = tex_columns(("preset", "source"), (("none", "He et al. 2016; UDL 11.2"),))
    assert spec == "l>{\\raggedright\\arraybackslash}X"
