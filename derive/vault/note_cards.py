"""The cards in a region of an existing note, read as editors leave them.

A region of a note that the user (and the Obsidian_to_Anki plugin) has had
in hand is read into :class:`Item` values, one per thing that matters to
regeneration; everything else in a region is derive's own text:

- ``card``: a ``<!-- card: KEY -->`` line, any lines the user put between it
  and ``START`` (kept as the card's ``lead``), then ``START`` ... ``END``;
- ``note``: a ``START`` ... ``END`` block with no key line (the key line was
  deleted, or the user wrote the card);
- ``delete``: the plugin's ``DELETE`` line with the ID line below it (the
  plugin deletes that Anki note at its next sync);
- ``id``: an ID line alone, outside any block.

Editors' habits are tolerated: trailing spaces or tabs and doubled spaces in
marker and key lines, CRLF line ends. A block runs to the first line that
starts with ``END`` (the plugin's rule), except that a block whose ``END``
was deleted ends after its own ID line, or where the next card, block or
``DELETE`` line begins, so it never takes another card's ID
(``missing_end`` is then set). A block's ID line is its last
non-blank line, as the plugin reads it.

>>> card = "<!-- card: a/x -->\\nSTART\\nQ\\n<!--ID: 7-->\\nEND\\n"
>>> [(i.kind, i.key, i.note_id) for i in scan(card)]
[('card', 'a/x', 7)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[A-Za-z0-9][A-Za-z0-9_./-]*"
KEY_RE = re.compile(rf"<!--\s+card:\s+({_NAME})\s+-->[ \t]*")
ID_RE = re.compile(r"(?:<!--)?ID: (\d+)")
_ID_LINE_RE = re.compile(r"[ \t]*(?:<!--)?ID: \d+(?:-->)?[ \t]*")
_START_RE = re.compile(r"START[ \t]*")
#: Lines that end a block's first field (the next field, or the tags).
_LATER_FIELDS = ("Back:", "Extra:", "Back Extra:", "Tags:")


@dataclass(frozen=True)
class Item:
    """One card, keyless block, DELETE pair or lone ID line found in a region.

    ``text`` is the item's lines verbatim; ``line`` the 1-based line of its
    first line within the scanned text; ``front`` the block's first field.

    >>> Item("id", None, "<!--ID: 5-->\\n", 3, id_line="<!--ID: 5-->\\n").note_id
    5
    """

    kind: str
    key: str | None
    text: str
    line: int
    lead: str = ""
    id_line: str | None = None
    front: str = ""
    missing_end: bool = False

    @property
    def note_id(self) -> int | None:
        """The Anki note ID the item holds, if any."""
        found = ID_RE.search(self.id_line) if self.id_line else None
        return int(found.group(1)) if found else None

    @property
    def complete(self) -> str:
        """The item's text, with an ``END`` line restored if it was missing."""
        return self.text + "END\n" if self.missing_end else self.text


def _bare(line: str) -> str:
    return line.rstrip("\r\n")


def _is_start(line: str) -> bool:
    return _START_RE.fullmatch(_bare(line)) is not None


def is_id_line(line: str) -> bool:
    """Whether ``line`` is an Anki ID line alone (``<!--ID: n-->`` or ``ID: n``).

    >>> is_id_line("<!--ID: 12-->  \\n"), is_id_line("see ID: 12 above")
    (True, False)
    """
    return _ID_LINE_RE.fullmatch(_bare(line)) is not None


def _block_end(lines: list[str], start: int) -> tuple[int, bool]:
    """Index after the block opened at ``start`` (its START line), and whether END is missing.

    Without its END a block ends after its ID line (a block's last line), or
    before the next key line, ``START`` or ``DELETE`` line.
    """
    j = start + 1
    while j < len(lines):
        line = lines[j]
        if line.startswith("END"):
            return j + 1, False
        if _is_start(line) or KEY_RE.fullmatch(_bare(line)) or _bare(line).strip() == "DELETE":
            return j, True
        if is_id_line(line):
            rest = next((later for later in lines[j + 1 :] if later.strip()), "")
            if not rest.startswith("END"):
                return j + 1, True
        j += 1
    return j, True


def _front(body: list[str]) -> str:
    """A block's first field: the lines after its note type, up to the next field."""
    lines = [_bare(line).strip() for line in body]
    lines = [line for line in lines if line and not is_id_line(line)]
    field: list[str] = []
    for line in lines[1:]:
        if line.startswith(_LATER_FIELDS):
            break
        field.append(line)
    return "\n".join(field)


def _id_of(body: list[str]) -> str | None:
    filled = [line for line in body if line.strip()]
    return filled[-1] if filled and ID_RE.search(filled[-1]) else None


def scan(text: str) -> list[Item]:
    """The items of a region's content ``text``, in order.

    >>> text = ("<!-- card: a/x -->\\nSTART\\nQ\\n"
    ...         "<!-- card: a/y -->\\nSTART\\nR\\n<!--ID: 9-->\\nEND\\n")
    >>> [(i.key, i.note_id, i.missing_end) for i in scan(text)]
    [('a/x', None, True), ('a/y', 9, False)]
    """
    lines = text.splitlines(keepends=True)
    items: list[Item] = []
    i = 0
    while i < len(lines):
        bare = _bare(lines[i])
        key = KEY_RE.fullmatch(bare)
        if key or _is_start(lines[i]):
            start = i
            if key:
                start = i + 1
                while (start < len(lines) and not _is_start(lines[start])
                       and not KEY_RE.fullmatch(_bare(lines[start]))
                       and not is_id_line(lines[start]) and _bare(lines[start]) != "DELETE"
                       and not lines[start].startswith("END")):
                    start += 1
                if start == len(lines) or not _is_start(lines[start]):
                    i += 1  # a key line with no card below it: derive's text
                    continue
            end, missing = _block_end(lines, start)
            body = lines[start + 1 : end - (0 if missing else 1)]
            items.append(Item(
                "card" if key else "note", key.group(1) if key else None,
                "".join(lines[i:end]), i + 1, lead="".join(lines[i + 1 : start]),
                id_line=_id_of(body), front=_front(body), missing_end=missing,
            ))
            i = end
        elif bare.rstrip(" \t") == "DELETE" and i + 1 < len(lines) and is_id_line(lines[i + 1]):
            items.append(Item("delete", None, "".join(lines[i : i + 2]), i + 1,
                              id_line=lines[i + 1]))
            i += 2
        elif is_id_line(lines[i]):
            items.append(Item("id", None, lines[i], i + 1, id_line=lines[i]))
            i += 1
        else:
            i += 1
    return items
