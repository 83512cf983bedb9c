"""Marked regions in generated notes, regenerated without losing the user's work.

Generated notes (Obsidian Markdown) mark derive's content as regions, each
marker alone on its line::

    <!-- derive:begin NAME -->
    ...content that derive owns and rewrites...
    <!-- derive:end NAME -->

The ``# anki`` section of a note holds the region ``anki`` made by
:func:`cards_region`. :func:`merge_note` rewrites the regions of an existing
note and keeps everything else byte for byte:

- text outside regions (the user's) stays where it is;
- every card's plugin ID line (``<!--ID: ...-->``) stays with its card,
  matched by the card's key, wherever the card now sits;
- text typed *inside* a region is derive's and is replaced;
- a region that is no longer generated is removed; a new one is inserted
  after the region that precedes it in the generated note;
- a card that holds an ID but is no longer generated is not dropped: it moves,
  verbatim, to the region ``orphaned-cards`` (the plugin keeps syncing it) and
  its key is reported in :attr:`MergeResult.orphaned` until the user removes
  it; if it is generated again it returns, with its ID, to its region;
- nothing changed -> the existing text comes back byte-identical.

Editors' habits are read as intended (see :mod:`derive.vault.note_cards`): a
byte-order mark stays, CRLF line ends come back as LF, trailing spaces and
doubled spaces in marker lines are tolerated. What the merge does beyond
regenerating is said in one line each in :attr:`MergeResult.notices`:

- a card whose key line was deleted gets its ID back by its front (the
  first field), when exactly one generated card has that front;
- a block that derive did not write (no key line, no matching front) is
  moved verbatim out of the region to just below it, so it keeps syncing
  and derive never touches it again;
- lines the user put between a card's key line and its ``START`` stay there;
- a card whose ``END`` line was deleted ends where the next card begins (it
  never takes the next card's ID) and gets its ``END`` back; a card whose
  ``START`` line was deleted gets it back, and keeps its ID;
- a second block of a card (a copy, with the card's ID or another) and a
  card that another note generates are moved verbatim out of the region to
  just below it; an Anki ID that two cards of the note hold is reported
  with both cards and their lines;
- the plugin's ``DELETE`` line with its ID line, and a lone ID line, are kept
  in ``orphaned-cards`` until the plugin removes them.

A note without any region (the user's own note of that name) gets derive's
regions below its text, which stays as it was. What :class:`Kept` keeps and
says is in :mod:`derive.vault.kept`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from derive.deck.cards import Card, card_blocks, check_name
from derive.errors import DeriveError
from derive.vault.duplicates import repeated_in_note
from derive.vault.kept import ORPHANS, Kept
from derive.vault.note_cards import Item, scan


class BrokenNote(DeriveError):
    """An existing note's region markers are broken (unclosed, unmatched, repeated).

    The message names the line and the fix. Overwriting would lose the
    user's text and the cards' IDs, so no option overrides it.

    >>> isinstance(BrokenNote("x"), ValueError)
    True
    """


ORPHANS_HEADER = (
    "derive no longer generates these cards; they keep their Anki IDs and the plugin keeps "
    "syncing them. Delete a card's lines when you no longer need it. To delete its note in "
    "Anki too, replace its lines from START to END by two lines, DELETE and then its ID "
    "line: derive keeps those two lines until the plugin deletes the note at its next sync.\n"
)
_NAME = r"[A-Za-z0-9][A-Za-z0-9_./-]*"
_BEGIN_RE = re.compile(rf"<!--\s+derive:begin\s+({_NAME})\s+-->[ \t]*")
_END_RE = re.compile(rf"<!--\s+derive:end\s+({_NAME})\s+-->[ \t]*")
_BOM = "\ufeff"


def region(name: str, content: str) -> str:
    """Wrap ``content`` as the derive region ``name`` (markers on their own lines).

    >>> print(region("summary", "Two terms."), end="")
    <!-- derive:begin summary -->
    Two terms.
    <!-- derive:end summary -->
    """
    check_name(name, "region name")
    if content and not content.endswith("\n"):
        content += "\n"
    for line in content.split("\n"):
        if _BEGIN_RE.fullmatch(line) or _END_RE.fullmatch(line):
            raise DeriveError(f"region {name!r}: content holds a region marker {line!r}")
    return f"<!-- derive:begin {name} -->\n{content}<!-- derive:end {name} -->\n"


def cards_region(cards: Iterable[Card], name: str = "anki") -> str:
    """The region ``name`` holding the blocks of ``cards`` (for the ``# anki`` section).

    >>> cards_region([Card("a/x", "Q", "A")]).splitlines()[0]
    '<!-- derive:begin anki -->'
    """
    return region(name, card_blocks(cards))


@dataclass(frozen=True)
class _Region:
    name: str
    begin: str  # the marker lines exactly as found (with their newline, if any)
    content: str
    end: str
    line: int = 0  # the begin marker's line in the note (1-based)


def split_regions(text: str) -> list[str | _Region]:
    """Split a note into outside text (str) and regions; raise on broken markers.

    Marker lines may carry trailing spaces and doubled spaces; a broken
    marker raises :class:`BrokenNote` naming its line and the fix.

    >>> [type(part).__name__ for part in split_regions("a\\n" + region("r", "x"))]
    ['str', '_Region']
    >>> split_regions("a\\n<!-- derive:begin r -->\\nx\\n")
    Traceback (most recent call last):
    ...
    derive.vault.regions.BrokenNote: line 2: region 'r' has no end marker; add the line ...
    """
    parts: list[str | _Region] = []
    outside: list[str] = []
    inside: list[str] | None = None
    name = begin = ""
    opened_at = 0
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        bare = line.rstrip("\r\n")
        opened, closed = _BEGIN_RE.fullmatch(bare), _END_RE.fullmatch(bare)
        if inside is None and opened:
            name, begin, inside, opened_at = opened.group(1), line, [], number
            if name in seen:
                raise BrokenNote(
                    f"line {number}: a second region {name!r} (the first begins on line "
                    f"{seen[name]}); delete one of the two, markers included")
            seen[name] = number
            parts.append("".join(outside))
            outside = []
        elif inside is None:
            if closed:
                raise BrokenNote(
                    f"line {number}: end marker of region {closed.group(1)!r} without its "
                    f"begin marker; put <!-- derive:begin {closed.group(1)} --> back where "
                    "the region begins, or delete this line")
            outside.append(line)
        elif closed and closed.group(1) == name:
            parts.append(_Region(name, begin, "".join(inside), line, opened_at))
            inside = None
        elif opened or closed:
            raise BrokenNote(
                f"line {number}: region {name!r} (begun on line {opened_at}) is not closed "
                f"before this marker; add the line <!-- derive:end {name} --> above it")
        else:
            inside.append(line)
    if inside is not None:
        raise BrokenNote(
            f"line {opened_at}: region {name!r} has no end marker; add the line "
            f"<!-- derive:end {name} --> where the region's text ends")
    parts.append("".join(outside))
    return [part for part in parts if part != ""]


def _with_ids(content: str, ids: dict[str, str], leads: dict[str, str]) -> str:
    """Generated region content with each card's kept ID line and lead lines put back."""
    out: list[str] = []
    done = 0
    for item in scan(content):
        if item.kind != "card" or item.key is None:
            continue
        lead, id_line = leads.get(item.key, ""), ids.get(item.key)
        if not lead and (id_line is None or item.id_line is not None):
            continue
        start = content.index(item.text, done)
        key_line, rest = item.text.split("\n", 1)
        if id_line is not None and item.id_line is None:
            head, end_line = rest.rsplit("END", 1)
            rest = head + id_line + "END" + end_line
        out += [content[done:start], key_line, "\n", lead, rest]
        done = start + len(item.text)
    out.append(content[done:])
    return "".join(out)


@dataclass(frozen=True)
class MergeResult:
    """The merged note; ``orphaned``: keys of cards kept only for their Anki IDs.

    ``base`` is the text merged from (None when there was nothing to merge
    with): pass it to :func:`derive.files.writes.write_files` as ``merged_from``.
    ``notices``: one line for each thing the merge did beyond regenerating
    (an ID matched by content, a card moved out of a region, an END restored),
    and for each Anki ID that two cards of the note hold.

    >>> MergeResult("x", (), None).changed
    True
    """

    text: str
    orphaned: tuple[str, ...]
    base: str | None
    notices: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether the merged text differs from the existing note."""
        return self.text != self.base


@dataclass(frozen=True)
class _Generated:
    """The regions of a generated note: content by name, and their order."""

    content: dict[str, str]
    order: list[str]

    @classmethod
    def of(cls, generated: str) -> _Generated:
        regions = [part for part in split_regions(generated) if isinstance(part, _Region)]
        if any(part.name == ORPHANS for part in regions):
            raise DeriveError(f"generated notes must not hold the region {ORPHANS!r}")
        return cls({part.name: part.content for part in regions},
                   [part.name for part in regions])

    def with_ids(self, name: str, kept: Kept) -> str:
        """The region ``name`` as generated, with the cards' kept IDs and lead lines."""
        return _with_ids(self.content[name], kept.ids, kept.leads)


def merge_note(existing: str | None, generated: str,
               elsewhere: Mapping[str, str] | None = None) -> MergeResult:
    """Regenerate a note: new regions, the user's text and the cards' IDs kept.

    ``elsewhere`` maps the card keys of the other notes to those notes'
    titles, so a card copied here from another note is named as such. A note
    without any of derive's regions (the user's own) gets them added below
    its text.

    >>> old = "My notes.\\n" + cards_region([Card("a/x", "Q", "A")])
    >>> synced = old.replace("END\\n", "<!--ID: 42-->\\nEND\\n")
    >>> result = merge_note(synced, cards_region([Card("a/x", "Q?", "A")]))
    >>> "My notes." in result.text, "<!--ID: 42-->" in result.text, result.orphaned
    (True, True, ())
    >>> merge_note(synced, cards_region([Card("a/x", "Q", "A")])).text == synced
    True
    """
    fresh = _Generated.of(generated)
    if existing is None:
        return MergeResult(generated, (), None)
    bom = _BOM if existing.startswith(_BOM) else ""
    text = existing[len(bom):].replace("\r\n", "\n")  # written back with LF
    old = split_regions(text)
    if not any(isinstance(part, _Region) for part in old):
        return _into_own_note(existing, bom, text, generated)
    kept = _keep(old, fresh, elsewhere)
    out = _rebuild(old, fresh, kept)
    merged = _join(out)
    notices = (*kept.notices, *repeated_in_note(merged, kept.copied))
    return MergeResult(bom + merged, kept.orphaned, existing, notices)


def _into_own_note(existing: str, bom: str, text: str, generated: str) -> MergeResult:
    """The user's own note (no region of derive's) with derive's regions added below its text."""
    keyed = [item for item in scan(text) if item.kind == "card"]
    if keyed:
        raise BrokenNote(
            f"line {keyed[0].line}: card {keyed[0].key!r} is derive's, but the note has none "
            "of derive's region markers; put them back around derive's text, or delete the "
            "card's key line to make the card your own")
    if not text.strip():
        return MergeResult(bom + generated, (), existing)
    own = text if text.endswith("\n") else text + "\n"
    return MergeResult(bom + own + "\n" + generated, (), existing,
                       ("derive's regions added below your text, which is kept as it was",))


def _keep(old: list[str | _Region], fresh: _Generated,
          elsewhere: Mapping[str, str] | None) -> Kept:
    """Read the old regions: what the merge keeps from them, and what it says."""
    kept = Kept({item.key: item for name in fresh.order for item in scan(fresh.content[name])
                 if item.kind == "card" and item.key is not None}, elsewhere)
    keyless: list[tuple[Item, str]] = []
    for part in old:
        if not isinstance(part, _Region):
            continue
        for found in scan(part.content):
            item = replace(found, line=found.line + part.line)  # the line in the note
            if item.kind == "card":
                kept.card(item, part.name)
            elif item.kind == "note":
                keyless.append((item, part.name))
            else:
                kept.lone(item, part.name)
    for item, name in keyless:
        kept.keyless(item, name)
    return kept


def _rebuild(old: list[str | _Region], fresh: _Generated, kept: Kept) -> list[str | _Region]:
    """The note's parts: the user's text as it was, derive's regions regenerated."""
    out: list[str | _Region] = []
    placed: set[str] = set()
    for part in old:
        if not isinstance(part, _Region) or part.name == ORPHANS:
            out.append(part)
        elif part.name in fresh.content:
            out.append(replace(part, content=fresh.with_ids(part.name, kept)))
            placed.add(part.name)
        if isinstance(part, _Region) and part.name in kept.moved:
            out.append("\n" + "\n".join(kept.moved[part.name]))
    for index, name in enumerate(fresh.order):
        if name not in placed:
            after = [n for n in fresh.order[:index] if n in placed]
            _insert(out, name, fresh.with_ids(name, kept), after[-1] if after else None)
            placed.add(name)
    _place_orphans(out, kept, placed)
    return out


def _place_orphans(out: list[str | _Region], kept: Kept, placed: set[str]) -> None:
    """Write the orphaned-cards region (or remove it when nothing is orphaned)."""
    content = ORPHANS_HEADER + "".join("\n" + text for text in kept.orphans)
    slot = next((i for i, part in enumerate(out)
                 if isinstance(part, _Region) and part.name == ORPHANS), None)
    found = out[slot] if slot is not None else None
    if isinstance(found, _Region) and slot is not None and kept.orphans:
        out[slot] = replace(found, content=content)
    elif slot is not None:
        _remove(out, slot)
    elif kept.orphans:
        home = kept.orphan_home if kept.orphan_home in placed else None
        _insert(out, ORPHANS, content, home, at_end=home is None)


def _remove(parts: list[str | _Region], slot: int) -> None:
    """Remove the region at ``slot``, and the blank line :func:`_insert` set above it."""
    del parts[slot]
    before = parts[slot - 1] if slot > 0 else None
    if not isinstance(before, str):
        return
    after_region = slot >= 2 and isinstance(parts[slot - 2], _Region)
    if before.endswith("\n\n") or (before == "\n" and after_region):
        parts[slot - 1] = before[:-1]


def _insert(parts: list[str | _Region], name: str, content: str, after: str | None,
            at_end: bool = False) -> None:
    """Insert a new region after the region ``after`` (else before the first region).

    Below another region, or at the end, one blank line sets it apart (the
    line :func:`_remove` takes away with it).
    """
    names = [p.name if isinstance(p, _Region) else None for p in parts]
    if after is not None:
        slot = names.index(after) + 1
    elif at_end or not any(names):
        slot = len(parts)
    else:
        slot = next(i for i, name in enumerate(names) if name)
    new = _Region(name, f"<!-- derive:begin {name} -->\n", content,
                  f"<!-- derive:end {name} -->\n")
    if after is not None:
        parts[slot:slot] = ["\n", new]
    elif slot < len(parts):
        parts[slot:slot] = [new, "\n"]
    else:
        head = _join(parts)
        if head:
            parts.append("\n" if head.endswith("\n") else "\n\n")
        parts.append(new)


def _join(parts: list[str | _Region]) -> str:
    return "".join(
        p if isinstance(p, str) else p.begin + p.content + p.end for p in parts
    )
