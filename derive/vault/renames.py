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
other notes point to its new name. When two files hold them equally (a
copy made by "Make a copy", a sync conflict), the note is not written at
all: writing it again would give its cards without their IDs.

A note that is not found by its cards but whose name a note of the vault
already has (the user's own note, in any folder) is that note: derive's
regions are added to it (see :func:`derive.vault.regions.merge_note`).

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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from derive.vault.note_cards import scan
from derive.vault.regions import BrokenNote, split_regions


def card_keys(text: str) -> set[str]:
    """The card keys (``<!-- card: KEY -->``) of a note's text.

    >>> sorted(card_keys("<!-- card: a/x -->\\nSTART\\nQ\\nEND\\n"))
    ['a/x']
    """
    return {item.key for item in scan(text) if item.kind == "card" and item.key}


def markdown_files(root: Path) -> list[str]:
    """Relative paths (``a/b.md``) of the Markdown files under ``root``: no links, no hidden."""
    found = []
    for current, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(current) / name
            if name.endswith(".md") and not name.startswith(".") and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def read_notes(root: Path) -> dict[str, str]:
    """The vault's Markdown notes under ``root`` (relative path -> text); unreadable ones left out.

    >>> import tempfile
    >>> read_notes(Path(tempfile.mkdtemp()))
    {}
    """
    notes = {}
    for rel in markdown_files(root):
        try:
            notes[rel] = (root / rel).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return notes


def _keys_in_regions(text: str) -> set[str]:
    """The card keys inside derive's regions of a note's text (none if its markers are broken)."""
    try:
        parts = split_regions(text.lstrip("\ufeff").replace("\r\n", "\n"))
    except BrokenNote:
        return set()
    keys: set[str] = set()
    for part in parts:
        if not isinstance(part, str):
            keys |= card_keys(part.content)
    return keys


def _holders(keys: set[str], candidates: Mapping[str, set[str]],
             taken: set[str]) -> list[str]:
    """The files that hold most of ``keys`` (several on a tie; none if none holds any)."""
    scores = sorted(((len(keys & held), other) for other, held in candidates.items()
                     if other not in taken and keys & held), reverse=True)
    return sorted(other for score, other in scores if score == scores[0][0]) if scores else []


@dataclass(frozen=True)
class Placement:
    """Where each generated note goes.

    ``paths``: generated path -> the file to merge it with (itself, the file it
    was renamed to, or the user's note of that name); ``renamed``: those of
    them found under another name; ``skipped``: generated path -> the line
    that says why it is not written.
    """

    paths: dict[str, str]
    renamed: dict[str, str]
    skipped: dict[str, str]


def place_notes(root: Path, generated: Mapping[str, str],
                notes: Mapping[str, str]) -> Placement:
    """Where each of the ``generated`` notes goes, among the vault's ``notes`` (see above).

    >>> from derive.vault.regions import region
    >>> card = "<!-- card: a/x -->\\nSTART\\nQ\\nEND\\n"
    >>> copies = {"LN.md": region("anki", card), "LN 1.md": region("anki", card)}
    >>> print(place_notes(Path("v"), {"Layer norm.md": card}, copies).skipped["Layer norm.md"])
    ... # doctest: +ELLIPSIS
    v/Layer norm.md: not written: the cards of the note 'Layer norm' are in v/LN 1.md and ...
    """
    candidates = {rel: _keys_in_regions(text) for rel, text in notes.items()
                  if rel not in generated}
    by_title: dict[str, list[str]] = {}
    for rel in notes:
        if rel not in generated:
            by_title.setdefault(title(rel).casefold(), []).append(rel)
    out = Placement({}, {}, {})
    taken: set[str] = set()
    for rel, text in sorted(generated.items()):
        if (root / rel).exists():
            out.paths[rel] = rel
            continue
        holders = _holders(card_keys(text), candidates, taken)
        same_name = [n for n in by_title.get(title(rel).casefold(), []) if n not in taken]
        found = _choose(root, rel, holders, same_name, out)
        if found is not None:
            out.paths[rel] = found
            taken.add(found)
            if holders and title(found) != title(rel):
                out.renamed[rel] = found
    return out


def _choose(root: Path, rel: str, holders: list[str], same_name: list[str],
            out: Placement) -> str | None:
    """The file a missing note goes to (None: not written, said in ``out.skipped``)."""
    if len(holders) > 1:
        out.skipped[rel] = (
            f"{root / rel}: not written: the cards of the note {title(rel)!r} are in "
            f"{' and '.join(str(root / h) for h in holders)} (a copy, or a sync conflict?); "
            "writing it again would give its cards without their IDs: keep one of them "
            "and run derive again")
        return None
    if holders:
        return holders[0]
    if len(same_name) > 1:
        out.skipped[rel] = (
            f"{root / rel}: not written: the vault holds {len(same_name)} notes named "
            f"{title(rel)!r} ({', '.join(str(root / n) for n in same_name)}), which links "
            "cannot tell apart: keep one of that name and run derive again")
        return None
    return same_name[0] if same_name else rel


def find_renamed(root: Path, generated: Mapping[str, str]) -> dict[str, str]:
    """Generated note path -> the path of the existing note it was renamed to.

    Only notes whose own file is missing are looked for; a file is given to
    one note at most, the one whose keys it holds most of (ties: none).
    """
    if not root.is_dir():
        return {}
    return place_notes(root, generated, read_notes(root)).renamed



def relink(text: str, renamed: Mapping[str, str]) -> str:
    """``text`` with wikilinks to renamed notes pointing at their new names.

    >>> relink("see [[Layer norm]] and [[Layer norm|LN]]", {"Layer norm": "LN notes"})
    'see [[LN notes]] and [[LN notes|LN]]'
    """
    for old, new in renamed.items():
        def link(_match: re.Match[str], name: str = new) -> str:
            return f"[[{name}"

        text = re.sub(r"\[\[" + re.escape(old) + r"(?=[\]|#])", link, text)
    return text


def title(rel: str) -> str:
    """A note's title (what wikilinks name) from its relative path.

    >>> title("obsidian/ml/LN notes.md")
    'LN notes'
    """
    return PurePosixPath(rel).stem
