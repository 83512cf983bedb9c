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
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from derive.anki import Card, card_blocks, card_units, check_name
from derive.errors import DeriveError


class BrokenNote(DeriveError):
    """An existing note's region markers are broken (unclosed, unmatched, repeated).

    A caller that was told to overwrite (``--force``) may catch it and write
    the generated note instead.

    >>> isinstance(BrokenNote("x"), ValueError)
    True
    """


#: Name of the region that keeps cards which are no longer generated.
ORPHANS = "orphaned-cards"
ORPHANS_HEADER = (
    "derive no longer generates these cards; they keep their Anki IDs. "
    "Remove a block (or use the plugin's DELETE line) when you no longer need it.\n"
)
_NAME = r"[A-Za-z0-9][A-Za-z0-9_./-]*"
_BEGIN_RE = re.compile(rf"<!-- derive:begin ({_NAME}) -->")
_END_RE = re.compile(rf"<!-- derive:end ({_NAME}) -->")


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


def split_regions(text: str) -> list[str | _Region]:
    """Split a note into outside text (str) and regions; raise on broken markers.

    >>> [type(part).__name__ for part in split_regions("a\\n" + region("r", "x"))]
    ['str', '_Region']
    """
    parts: list[str | _Region] = []
    outside: list[str] = []
    inside: list[str] | None = None
    name = begin = ""
    names: set[str] = set()
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        opened, closed = _BEGIN_RE.fullmatch(bare), _END_RE.fullmatch(bare)
        if inside is None and opened:
            name, begin, inside = opened.group(1), line, []
            if name in names:
                raise BrokenNote(f"note has two regions named {name!r}")
            names.add(name)
            parts.append("".join(outside))
            outside = []
        elif inside is None:
            if closed:
                raise BrokenNote(f"region end {bare!r} without its begin marker")
            outside.append(line)
        elif closed and closed.group(1) == name:
            parts.append(_Region(name, begin, "".join(inside), line))
            inside = None
        elif opened or closed:
            raise BrokenNote(f"region {name!r} is not closed before {bare!r}")
        else:
            inside.append(line)
    if inside is not None:
        raise BrokenNote(f"region {name!r} has no end marker <!-- derive:end {name} -->")
    parts.append("".join(outside))
    return [part for part in parts if part != ""]


def _with_ids(content: str, ids: dict[str, str]) -> str:
    """Region content with each card's kept ID line put back before its END."""
    out: list[str] = []
    done = 0
    for key, unit, id_line in card_units(content):
        if key in ids and id_line is None:
            start = content.index(unit, done)
            head, end_line = unit.rsplit("END", 1)
            out += [content[done:start], head, ids[key], "END", end_line]
            done = start + len(unit)
    out.append(content[done:])
    return "".join(out)


@dataclass(frozen=True)
class MergeResult:
    """The merged note; ``orphaned``: keys of cards kept only for their Anki IDs.

    ``base`` is the text merged from (None when there was nothing to merge
    with): pass it to :func:`derive.files.write_files` as ``merged_from``.

    >>> MergeResult("x", (), None).changed
    True
    """

    text: str
    orphaned: tuple[str, ...]
    base: str | None

    @property
    def changed(self) -> bool:
        """Whether the merged text differs from the existing note."""
        return self.text != self.base


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
    try:
        old = split_regions(existing)
    except BrokenNote as err:
        raise BrokenNote(f"the existing note: {err}; fix the markers or pass --force") from None
    if not any(isinstance(part, _Region) for part in old):
        return MergeResult(generated, (), None)
    new_keys = {key for name in order for key, _, _ in card_units(new[name])}

    ids: dict[str, str] = {}
    orphans: dict[str, str] = {}
    orphan_home = None
    for part in old:
        if isinstance(part, _Region):
            for key, unit, id_line in card_units(part.content):
                if id_line is None:
                    continue
                if key in new_keys and key not in ids:
                    ids[key] = id_line
                elif unit not in orphans:  # a second ID for one key is kept, not dropped
                    orphans[unit] = key
                    if part.name != ORPHANS and orphan_home is None:
                        orphan_home = part.name

    out: list[str | _Region] = []
    placed: set[str] = set()
    for part in old:
        if not isinstance(part, _Region) or part.name == ORPHANS:
            out.append(part)
        elif part.name in new:
            out.append(_Region(part.name, part.begin, _with_ids(new[part.name], ids), part.end))
            placed.add(part.name)
    for index, name in enumerate(order):
        if name not in placed:
            after = [n for n in order[:index] if n in placed]
            _insert(out, name, _with_ids(new[name], ids), after[-1] if after else None)
            placed.add(name)
    orphan_content = ORPHANS_HEADER + "".join("\n" + unit for unit in orphans)
    existing_orphans = [p for p in out if isinstance(p, _Region) and p.name == ORPHANS]
    if existing_orphans:
        slot = out.index(existing_orphans[0])
        if orphans:
            part = existing_orphans[0]
            out[slot] = _Region(ORPHANS, part.begin, orphan_content, part.end)
        else:
            del out[slot]
            before, after = out[slot - 1 : slot], out[slot : slot + 1]
            if (before and isinstance(before[0], str) and before[0].endswith("\n")
                    and after and isinstance(after[0], str) and after[0].startswith("\n")):
                out[slot] = after[0][1:]  # the blank line that set the region apart
    elif orphans:
        home = orphan_home if orphan_home in placed else None
        _insert(out, ORPHANS, orphan_content, home, at_end=home is None)
    return MergeResult(_join(out), tuple(dict.fromkeys(orphans.values())), existing)


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
