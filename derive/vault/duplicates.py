"""Anki IDs that two cards hold: in one note, or in two notes of the vault.

The Obsidian_to_Anki plugin ties a ``START`` ... ``END`` block to its Anki
note by the ID line the block ends with. Two blocks with one ID (a card
copied with its ID, a note copied by "Make a copy" or by a sync conflict)
make the plugin update one Anki note from both, each sync undoing the other.
derive never picks one of them silently: each such ID is reported in one line
that names the notes, the cards and their lines.

>>> card = "<!-- card: a/x -->\\nSTART\\nBasic\\nQ\\nBack:\\nA\\n<!--ID: 7-->\\nEND\\n"
>>> print(repeated_in_note(card + "\\n" + card)[0])  # doctest: +ELLIPSIS
ID 7 is on 2 cards of this note: card 'a/x' (line 1), card 'a/x' (line 10); the plugin ...
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from derive.vault.note_cards import scan


def _advice(count: int) -> str:
    them = "both" if count == 2 else "all of them"
    return (f"the plugin updates one Anki note from {them}: keep one (delete the others, "
            "or their ID lines to make them notes of their own)")


@dataclass(frozen=True)
class Held:
    """One block that holds an Anki ID: the ID, the card's name, its line.

    >>> Held(7, "card 'a/x'", 3, True).card
    "card 'a/x'"
    """

    note_id: int
    card: str
    line: int
    keyed: bool


def held_ids(text: str) -> list[Held]:
    """Every ``START`` ... ``END`` block of ``text`` that holds an ID, in order.

    >>> [(h.note_id, h.card) for h in held_ids("START\\nBasic\\nMy Q\\n<!--ID: 5-->\\nEND\\n")]
    [(5, "the card 'My Q'")]
    """
    if "ID: " not in text:
        return []
    held = []
    for item in scan(text.lstrip("\ufeff").replace("\r\n", "\n")):
        if item.kind in ("card", "note") and item.note_id is not None:
            front = item.front.split("\n", 1)[0]
            name = f"card {item.key!r}" if item.key else \
                f"the card {front[:40] + ('...' if len(front) > 40 else '')!r}"
            held.append(Held(item.note_id, name, item.line, item.key is not None))
    return held


def repeated_in_note(text: str, moved: Collection[int] = ()) -> list[str]:
    """One line for each Anki ID that two or more blocks of the note ``text`` hold.

    ``moved``: IDs whose copy the merge just moved out of its region.
    """
    by_id: dict[int, list[Held]] = {}
    for held in held_ids(text):
        by_id.setdefault(held.note_id, []).append(held)
    lines = []
    for note_id, blocks in sorted(by_id.items()):
        if len(blocks) < 2:
            continue
        where = ", ".join(f"{b.card} (line {b.line})" for b in blocks)
        done = (" (derive moved the copy out of its region, to just below it)"
                if note_id in moved else "")
        lines.append(f"ID {note_id} is on {len(blocks)} cards of this note: "
                     f"{where}{done}; {_advice(len(blocks))}")
    return lines


def _in_each(note_id: int, blocks: list[Held]) -> str:
    """A card held in several notes under one ID, and its line in each."""
    name = next((b.card for b in blocks if b.keyed), blocks[0].card)
    lines = (f"line {blocks[0].line} in each" if len({b.line for b in blocks}) == 1
             else "lines " + " and ".join(str(b.line) for b in blocks))
    return f"{name} (ID {note_id}, {lines})"


def repeated_across(root: str | os.PathLike[str], texts: Mapping[str, str],
                    ours: Collection[str] = ()) -> list[str]:
    """One line for each pair of notes that hold the same Anki IDs, naming the cards.

    ``texts``: the vault's notes (path relative to ``root`` -> text), those
    derive writes as it writes them. Only IDs of derive's cards, or in a note
    of ``ours``, are reported: the user's own notes are the user's business.

    >>> card = "<!-- card: a/x -->\\nSTART\\nBasic\\nQ\\n<!--ID: 7-->\\nEND\\n"
    >>> print(repeated_across("v", {"A.md": card, "B.md": "x\\n" + card})[0])
    ... # doctest: +ELLIPSIS
    v/A.md and v/B.md hold the same Anki ID on card 'a/x' (ID 7, lines 1 and 2); the plugin ...
    """
    where: dict[int, dict[str, Held]] = {}
    for rel in sorted(texts):
        for held in held_ids(texts[rel]):
            where.setdefault(held.note_id, {}).setdefault(rel, held)
    pairs: dict[tuple[str, ...], list[str]] = {}
    for note_id, by_note in sorted(where.items()):
        blocks = list(by_note.values())
        if len(by_note) > 1 and (set(by_note) & set(ours) or any(b.keyed for b in blocks)):
            pairs.setdefault(tuple(by_note), []).append(_in_each(note_id, blocks))
    return [f"{' and '.join(str(Path(root) / rel) for rel in notes)} hold the same Anki "
            f"ID on {', '.join(cards)}; {_advice(len(notes))}" for notes, cards in pairs.items()]
