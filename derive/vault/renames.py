"""derive's notes in a vault: a note the user renamed (or moved) is found and kept.

Obsidian renames a note's file when the user renames the note, and updates
the links to it. Writing the note under its old name again would make a
second copy whose cards have no IDs, which the Obsidian_to_Anki plugin then
rejects as duplicates at every sync. So before writing, a note whose file is
missing is looked for among the other Markdown files of the output folder
and its sub-folders (not hidden ones such as Obsidian's ``.trash``), by
derive's own markers: its card keys (``<!-- card: KEY -->``), which belong
to one note each. The file that holds most of the missing note's
keys is that note, renamed; it is regenerated in place, and the links in the
other notes point to its new name.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "notes").mkdir()
>>> card = "<!-- card: ln/x -->\\nSTART\\nQ\\nEND\\n"
>>> _ = (root / "notes" / "LN.md").write_text(
...     "<!-- derive:begin anki -->\\n" + card + "<!-- derive:end anki -->\\n")
>>> generated = {"notes/Layer norm.md": card}
>>> find_renamed(root, generated)
{'notes/Layer norm.md': 'notes/LN.md'}
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from derive.vault.note_cards import scan
from derive.vault.regions import BrokenNote, split_regions


def _card_keys(text: str) -> set[str]:
    return {item.key for item in scan(text) if item.kind == "card" and item.key}


def _markdown_files(root: Path) -> list[str]:
    """Relative paths (``a/b.md``) of the Markdown files under ``root``: no links, no hidden."""
    found = []
    for current, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(current) / name
            if name.endswith(".md") and not name.startswith(".") and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def _keys_of_note(path: Path) -> set[str]:
    """The card keys inside derive's regions of the note at ``path`` (none if unreadable)."""
    try:
        text = path.read_bytes().decode("utf-8")
        parts = split_regions(text.lstrip("\ufeff").replace("\r\n", "\n"))
    except (OSError, UnicodeDecodeError, BrokenNote):
        return set()
    keys: set[str] = set()
    for part in parts:
        if not isinstance(part, str):
            keys |= _card_keys(part.content)
    return keys


def find_renamed(root: Path, generated: Mapping[str, str]) -> dict[str, str]:
    """Generated note path -> the path of the existing note it was renamed to.

    Only notes whose own file is missing are looked for; a file is given to
    one note at most, the one whose keys it holds most of (ties: none).
    """
    missing = {rel: _card_keys(text) for rel, text in generated.items()
               if not (root / rel).exists()}
    missing = {rel: keys for rel, keys in missing.items() if keys}
    if not missing or not root.is_dir():
        return {}
    candidates = {rel: _keys_of_note(root / rel) for rel in _markdown_files(root)
                  if rel not in generated}
    found: dict[str, str] = {}
    taken: set[str] = set()
    for rel, keys in sorted(missing.items()):
        scores = sorted(((len(keys & held), other) for other, held in candidates.items()
                         if other not in taken and keys & held), reverse=True)
        if scores and (len(scores) == 1 or scores[0][0] > scores[1][0]):
            found[rel] = scores[0][1]
            taken.add(scores[0][1])
    return found


def relink(text: str, renamed: Mapping[str, str]) -> str:
    """``text`` with wikilinks to renamed notes pointing at their new names.

    >>> relink("see [[Layer norm]] and [[Layer norm|LN]]", {"Layer norm": "LN notes"})
    'see [[LN notes]] and [[LN notes|LN]]'
    """
    for old, new in renamed.items():
        text = re.sub(r"\[\[" + re.escape(old) + r"(?=[\]|#])", lambda _m, n=new: f"[[{n}", text)
    return text


def title(rel: str) -> str:
    """A note's title (what wikilinks name) from its relative path.

    >>> title("obsidian/ml/LN notes.md")
    'LN notes'
    """
    return PurePosixPath(rel).stem
