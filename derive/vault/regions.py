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
  never takes the next card's ID) and gets its ``END`` back;
- the plugin's ``DELETE`` line with its ID line, and a lone ID line, are kept
  in ``orphaned-cards`` until the plugin removes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from derive.deck.cards import Card, card_blocks, check_name
from derive.errors import DeriveError
from derive.vault.note_cards import Item, scan


class BrokenNote(DeriveError):
    """An existing note's region markers are broken (unclosed, unmatched, repeated).

    The message names the line and the fix. Overwriting would lose the
    user's text and the cards' IDs, so no option overrides it.

    >>> isinstance(BrokenNote("x"), ValueError)
    True
    """


#: Name of the region that keeps cards which are no longer generated.
ORPHANS = "orphaned-cards"
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
    (an ID matched by content, a card moved out of a region, an END restored).

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


def _id_of(item: Item) -> str:
    return f"ID {item.note_id}" if item.note_id is not None else "no ID"


class _Kept:
    """What a merge keeps from the old regions: IDs, lead lines, orphans, moved text."""

    def __init__(self, new_cards: dict[str, Item]) -> None:
        self.new_cards = new_cards
        self.ids: dict[str, str] = {}
        self.leads: dict[str, str] = {}
        self.orphans: dict[str, str | None] = {}  # verbatim text -> card key (or None)
        self.orphan_home: str | None = None
        self.moved: dict[str, list[str]] = {}  # region name -> text moved out below it
        self.notices: list[str] = []

    def orphan(self, text: str, key: str | None, region_name: str) -> None:
        if text not in self.orphans:  # a second ID for one key is kept, not dropped
            self.orphans[text] = key
            if region_name != ORPHANS and self.orphan_home is None:
                self.orphan_home = region_name

    def card(self, item: Item, region_name: str) -> None:
        key = item.key or ""
        if item.missing_end:
            self.notices.append(f"line {item.line}: card {key!r} had no END line; "
                                "restored it (the card keeps its own ID, if any)")
        if key in self.new_cards:
            if item.id_line is not None:
                if key in self.ids:
                    self.orphan(item.complete, key, region_name)
                else:
                    self.ids[key] = item.id_line
            if item.lead.strip() and key not in self.leads:
                self.leads[key] = item.lead
        elif item.id_line is not None:
            self.orphan(item.complete, key, region_name)
        elif item.lead.strip():
            self.move(item.lead, region_name, f"line {item.line + 1}: your lines above the "
                      f"card {key!r}, no longer generated")

    def move(self, text: str, region_name: str, what: str) -> None:
        self.moved.setdefault(region_name, []).append(text)
        self.notices.append(f"{what}: moved out of region {region_name!r} to just below "
                            "it, where derive leaves it alone")

    def keyless(self, item: Item, region_name: str) -> None:
        """A block with no key line: derive's card by its front, else the user's."""
        matches = [key for key, card in self.new_cards.items()
                   if card.front == item.front and item.front]
        key = matches[0] if len(matches) == 1 else None
        if key is not None and item.id_line is None:
            return  # derive's own card without its key line and without an ID: regenerated
        if key is not None and key not in self.ids and item.id_line is not None:
            self.ids[key] = item.id_line
            self.notices.append(f"line {item.line}: a card without its key line holds "
                                f"{_id_of(item)}; matched to card {key!r} by its front, "
                                "ID kept")
            return
        if key is not None:  # derive's card a second time, with another ID: kept, not dropped
            self.orphan(item.complete, key, region_name)
            self.notices.append(f"line {item.line}: a second card {key!r} without its key "
                                f"line holds {_id_of(item)}; kept in region {ORPHANS!r}")
            return
        self.move(item.complete, region_name,
                  f"line {item.line}: a card that derive did not write ({_id_of(item)})")


def merge_note(existing: str | None, generated: str) -> MergeResult:
    """Regenerate a note: new regions, the user's text and the cards' IDs kept.

    >>> old = "My notes.\\n" + cards_region([Card("a/x", "Q", "A")])
    >>> synced = old.replace("END\\n", "<!--ID: 42-->\\nEND\\n")
    >>> result = merge_note(synced, cards_region([Card("a/x", "Q?", "A")]))
    >>> "My notes." in result.text, "<!--ID: 42-->" in result.text, result.orphaned
    (True, True, ())
    >>> merge_note(synced, cards_region([Card("a/x", "Q", "A")])).text == synced
    True
    """
    fresh = split_regions(generated)
    new = {part.name: part.content for part in fresh if isinstance(part, _Region)}
    order = [part.name for part in fresh if isinstance(part, _Region)]
    if ORPHANS in new:
        raise DeriveError(f"generated notes must not hold the region {ORPHANS!r}")
    if existing is None:
        return MergeResult(generated, (), None)
    bom = _BOM if existing.startswith(_BOM) else ""
    old = split_regions(existing[len(bom):].replace("\r\n", "\n"))  # written back with LF
    if not any(isinstance(part, _Region) for part in old):
        return MergeResult(generated, (), None)
    kept = _Kept({item.key: item for name in order for item in scan(new[name])
                  if item.kind == "card" and item.key is not None})
    keyless: list[tuple[Item, str]] = []
    for part in old:
        if isinstance(part, _Region):
            for found in scan(part.content):
                item = replace(found, line=found.line + part.line)  # the line in the note
                if item.kind == "card":
                    kept.card(item, part.name)
                elif item.kind == "note":
                    keyless.append((item, part.name))
                else:
                    kept.orphan(item.text, None, part.name)
                    if item.kind == "delete":
                        kept.notices.append(
                            f"line {item.line}: {_id_of(item)} is marked DELETE; "
                            f"kept in region {ORPHANS!r} until the plugin deletes the note")
    for item, name in keyless:
        kept.keyless(item, name)

    out: list[str | _Region] = []
    placed: set[str] = set()
    for part in old:
        if not isinstance(part, _Region) or part.name == ORPHANS:
            out.append(part)
        elif part.name in new:
            content = _with_ids(new[part.name], kept.ids, kept.leads)
            out.append(_Region(part.name, part.begin, content, part.end, part.line))
            placed.add(part.name)
        if isinstance(part, _Region) and part.name in kept.moved:
            out.append("\n" + "\n".join(kept.moved[part.name]))
    for index, name in enumerate(order):
        if name not in placed:
            after = [n for n in order[:index] if n in placed]
            _insert(out, name, _with_ids(new[name], kept.ids, kept.leads),
                    after[-1] if after else None)
            placed.add(name)
    _place_orphans(out, kept, placed)
    orphaned = tuple(dict.fromkeys(key for key in kept.orphans.values() if key is not None))
    return MergeResult(bom + _join(out), orphaned, existing, tuple(kept.notices))


def _place_orphans(out: list[str | _Region], kept: _Kept, placed: set[str]) -> None:
    """Write the orphaned-cards region (or remove it when nothing is orphaned)."""
    orphan_content = ORPHANS_HEADER + "".join("\n" + text for text in kept.orphans)
    existing_orphans = [p for p in out if isinstance(p, _Region) and p.name == ORPHANS]
    if existing_orphans:
        slot = out.index(existing_orphans[0])
        if kept.orphans:
            part = existing_orphans[0]
            out[slot] = _Region(ORPHANS, part.begin, orphan_content, part.end, part.line)
        else:
            del out[slot]
            before, after = out[slot - 1 : slot], out[slot : slot + 1]
            if (before and isinstance(before[0], str) and before[0].endswith("\n")
                    and after and isinstance(after[0], str) and after[0].startswith("\n")):
                out[slot] = after[0][1:]  # the blank line that set the region apart
    elif kept.orphans:
        home = kept.orphan_home if kept.orphan_home in placed else None
        _insert(out, ORPHANS, orphan_content, home, at_end=home is None)


def _insert(parts: list[str | _Region], name: str, content: str, after: str | None,
            at_end: bool = False) -> None:
    """Insert a new region after the region ``after`` (else before the first region)."""
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
        return
    if slot < len(parts):
        parts[slot:slot] = [new, "\n"]
        return
    head = _join(parts)
    if head and not head.endswith("\n"):
        parts.append("\n\n")
    elif head and not head.endswith("\n\n"):
        parts.append("\n")
    parts.append(new)


def _join(parts: list[str | _Region]) -> str:
    return "".join(
        p if isinstance(p, str) else p.begin + p.content + p.end for p in parts
    )
