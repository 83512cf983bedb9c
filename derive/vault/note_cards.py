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
non-blank line, as the plugin reads it, or an ID line that was moved
higher in the block; a block that holds several keeps the last one and
lists the others in ``extra_ids``. A key line whose ``START`` was deleted
still heads its card, up to its ``END`` or ID line (``missing_start``).

>>> card = "<!-- card: a/x -->\\nSTART\\nQ\\n<!--ID: 7-->\\nEND\\n"
>>> [(i.kind, i.key, i.note_id) for i in scan(card)]
[('card', 'a/x', 7)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from derive.deck.cards import NOTE_TYPES

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
    missing_start: bool = False
    extra_ids: tuple[str, ...] = ()

    @property
    def note_id(self) -> int | None:
        """The Anki note ID the item holds, if any."""
        found = ID_RE.search(self.id_line) if self.id_line else None
        return int(found.group(1)) if found else None

    @property
    def complete(self) -> str:
        """The item's text, with its ``START`` and ``END`` lines restored if they were missing.

        >>> Item("card", "a/x", "<!-- card: a/x -->\\nBasic\\nQ\\n", 1,
        ...      missing_start=True, missing_end=True).complete
        '<!-- card: a/x -->\\nSTART\\nBasic\\nQ\\nEND\\n'
        """
        text = self.text
        if self.missing_start:
            key_line, rest = text.split("\n", 1)
            text = f"{key_line}\n{self.lead}START\n{rest[len(self.lead):]}"
        return text + "END\n" if self.missing_end else text


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


def _end_follows(lines: list[str], k: int) -> bool:
    """Whether the block's own ``END`` comes at or after ``lines[k]`` (below an ID line).

    It does when only the block's own lines (its tags, more ID lines) stand
    between; not when a key line, ``START`` or ``DELETE`` comes first, nor
    when text and then another ID line do (that ID is another card's).
    """
    text_seen = False
    for line in lines[k:]:
        if line.startswith("END"):
            return True
        if _is_start(line) or KEY_RE.fullmatch(_bare(line)) or _bare(line).strip() == "DELETE":
            return False
        if is_id_line(line):
            if text_seen:
                return False
        elif line.strip():
            text_seen = True
    return False


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
        if is_id_line(line) and not _end_follows(lines, j + 1):
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


def _ids_of(body: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """A block's ID line and its other ID lines.

    The ID line is the block's last non-blank line, as the plugin reads it;
    an ID line elsewhere in the block (moved above the tags) still belongs
    to the block. When a block holds several, the last one is its ID.
    """
    found = [line for line in body if is_id_line(line)]
    return (found[-1], tuple(found[:-1])) if found else (None, ())


def _lead_size(body: list[str]) -> int:
    """Lines above a block's note type line (a block whose START was deleted)."""
    return next((i for i, line in enumerate(body) if _bare(line).strip() in NOTE_TYPES), 0)


def _block(lines: list[str], first: int, start: int, key: str | None) -> tuple[Item, int]:
    """The block whose START is ``lines[start]`` (its key line at ``first``), and where it ends."""
    end, missing = _block_end(lines, start)
    body = lines[start + 1 : end - (0 if missing else 1)]
    id_line, extra = _ids_of(body)
    return Item("card" if key else "note", key, "".join(lines[first:end]), first + 1,
                lead="".join(lines[first + 1 : start]), id_line=id_line, extra_ids=extra,
                front=_front(body), missing_end=missing), end


def _startless(lines: list[str], first: int, key: str) -> tuple[Item, int]:
    """The card of the key line ``lines[first]`` whose START line was deleted."""
    end, missing = _block_end(lines, first)
    body = lines[first + 1 : end - (0 if missing else 1)]
    lead = _lead_size(body)
    id_line, extra = _ids_of(body)
    return Item("card", key, "".join(lines[first:end]), first + 1,
                lead="".join(body[:lead]), id_line=id_line, extra_ids=extra,
                front=_front(body[lead:]), missing_end=missing, missing_start=True), end


def _ends_lead(line: str) -> bool:
    """Whether ``line`` ends the lines a user put between a key line and its START."""
    return (_is_start(line) or KEY_RE.fullmatch(_bare(line)) is not None or is_id_line(line)
            or _bare(line) == "DELETE" or line.startswith("END"))


def _keyed(lines: list[str], first: int) -> tuple[Item | None, int]:
    """The card of the key line ``lines[first]``; None for a key line with no card below."""
    found = KEY_RE.fullmatch(_bare(lines[first]))
    assert found is not None
    start = first + 1
    while start < len(lines) and not _ends_lead(lines[start]):
        start += 1
    if start == len(lines):
        return None, first + 1
    if _is_start(lines[start]):
        return _block(lines, first, start, found.group(1))
    if is_id_line(lines[start]) or lines[start].startswith("END"):
        return _startless(lines, first, found.group(1))
    return None, first + 1  # a key line with no card below it: derive's text


def _item_at(lines: list[str], i: int) -> tuple[Item | None, int]:
    """The item that begins at ``lines[i]`` (None: none does), and the index after it."""
    bare = _bare(lines[i])
    if KEY_RE.fullmatch(bare):
        return _keyed(lines, i)
    if _is_start(lines[i]):
        return _block(lines, i, i, None)
    if bare.rstrip(" \t") == "DELETE" and i + 1 < len(lines) and is_id_line(lines[i + 1]):
        return Item("delete", None, "".join(lines[i : i + 2]), i + 1, id_line=lines[i + 1]), i + 2
    if is_id_line(lines[i]):
        return Item("id", None, lines[i], i + 1, id_line=lines[i]), i + 1
    return None, i + 1


def scan(text: str) -> list[Item]:
    """The items of a region's content ``text``, in order.

    >>> text = ("<!-- card: a/x -->\\nSTART\\nQ\\n"
    ...         "<!-- card: a/y -->\\nSTART\\nR\\n<!--ID: 9-->\\nEND\\n")
    >>> [(i.key, i.note_id, i.missing_end) for i in scan(text)]
    [('a/x', None, True), ('a/y', 9, False)]
    >>> startless = "<!-- card: a/x -->\\nBasic\\nQ\\n<!--ID: 7-->\\nEND\\n"
    >>> [(i.key, i.note_id, i.missing_start) for i in scan(startless)]
    [('a/x', 7, True)]
    """
    lines = text.splitlines(keepends=True)
    items: list[Item] = []
    i = 0
    while i < len(lines):
        item, i = _item_at(lines, i)
        if item is not None:
            items.append(item)
    return items
