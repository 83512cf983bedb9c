"""A user's --templates with faults: one line naming the template file and line, exit 2,
nothing written (not half the notes, not a single note)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from derive.commands.cli import main
from derive.rendering.render import template_dir
from derive.rendering.template_faults import TemplateFault

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

#: fault -> (template to break, text put on its line 3, what the message must say)
FAULTS = {
    "syntax": ("notes.md.j2", "{% for x in %}\n", "Expected an expression"),
    "undefined": ("notes.md.j2", "{{ no_such_name.title }}\n", "'no_such_name' is undefined"),
    "exception": ("notes.md.j2", "{{ 1 // 0 }}\n", "ZeroDivisionError"),
    "include": ("notes.md.j2", '{% include "missing.md.j2" %}\n',
                "includes 'missing.md.j2', which is not in the templates folder"),
    "not-utf8": ("notes.md.j2", "caf\xe9\n", "not UTF-8 text (byte 0xe9)"),
    "obsidian": ("obsidian.md.j2", "{{ section.no_such_field }}\n", "no_such_field"),
    "included": ("derivation.md.j2", "{{ derivation.nope }}\n", "nope"),
}


def broken_templates(tmp_path: Path, fault: str) -> tuple[Path, Path]:
    folder = tmp_path / "templates"
    shutil.copytree(template_dir(), folder)
    name, line, _ = FAULTS[fault]
    path = folder / name
    lines = path.read_bytes().split(b"\n")
    lines.insert(2, line.rstrip("\n").encode("latin-1"))
    path.write_bytes(b"\n".join(lines))
    return folder, path


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_template_fault_is_one_line_naming_file_and_line(fault, tmp_path, capsys) -> None:
    folder, path = broken_templates(tmp_path, fault)
    fmt = "obsidian" if fault == "obsidian" else "markdown"
    out = tmp_path / "vault"
    main_args = ["notes", "--format", fmt, "--depth", "2", "--out", str(out)]
    with pytest.raises(SystemExit):  # a vault derive wrote before, with the good templates
        main(main_args)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([*main_args, "--templates", str(folder)])
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                  if not line.endswith(" ...\n"))
    assert done.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"template {path}, line 3: " in err and FAULTS[fault][2] in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_api_raises_template_fault(tmp_path) -> None:
    import derive

    folder, path = broken_templates(tmp_path, "undefined")
    with pytest.raises(TemplateFault, match=f"template {path}, line 3: ") as caught:
        derive.notes(tmp_path / "never", formats="markdown", depth=2, templates=folder)
    assert isinstance(caught.value, derive.DeriveError)
    assert not (tmp_path / "never").exists()
