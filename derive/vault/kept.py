"""What regenerating a note keeps from its old regions, and what it says about each thing.

:func:`derive.vault.regions.merge_note` reads the old regions of a note into
:class:`Kept`, item by item (:mod:`derive.vault.note_cards`): each card's
Anki ID line and the lines the user put above its ``START``, the blocks
kept only for their IDs (the region ``orphaned-cards``), and the blocks
moved, verbatim, out of a region to just below it. Whatever it does beyond
regenerating is said in one line in :attr:`Kept.notices`, naming the line
and the card; no ID moves or disappears without such a line:

- a card's first block with an ID gives the card its ID; a second block of
  the same card (a copy) is moved out of the region, never dropped;
- a card that another note generates, found here, is moved out of the
  region and named with its note;
- a card that is no longer generated but holds an ID goes to
  ``orphaned-cards`` (the only case :attr:`Kept.orphaned` lists);
- a card whose ``START`` or ``END`` line was deleted gets it back, with its
  own ID; a second ID line in one block is kept on a line of its own;
- a lone ID line, and the plugin's ``DELETE`` line with its ID line, are kept
  in ``orphaned-cards``.

>>> from derive.vault.note_cards import scan
>>> kept = Kept({"a/x": scan("<!-- card: a/x -->\\nSTART\\nQ\\nEND\\n")[0]})
>>> for item in scan("<!-- card: a/x -->\\nQ\\n<!--ID: 7-->\\nEND\\n"):
...     kept.card(item, "anki")
>>> kept.ids["a/x"]
'<!--ID: 7-->\\n'
>>> kept.notices[0].split("; ")[1]
'restored it (the card keeps ID 7)'
"""

from __future__ import annotations

from collections.abc import Mapping

from derive.vault.note_cards import Item

#: Name of the region that keeps cards which are no longer generated.
ORPHANS = "orphaned-cards"


def id_words(item: Item) -> str:
    """``ID n`` or ``no ID``: what an item holds, in a notice.

    >>> id_words(Item("id", None, "<!--ID: 5-->\\n", 1, id_line="<!--ID: 5-->\\n"))
    'ID 5'
    """
    return f"ID {item.note_id}" if item.note_id is not None else "no ID"


def _id_of_line(line: str) -> str:
    return id_words(Item("id", None, line, 0, id_line=line))


class Kept:
    """What a merge keeps from the old regions: IDs, lead lines, orphans, moved text.

    ``new_cards``: the cards the note now generates, by key; ``elsewhere``:
    card key -> the title of the other note that generates it.
    """

    def __init__(self, new_cards: Mapping[str, Item],
                 elsewhere: Mapping[str, str] | None = None) -> None:
        self.new_cards = new_cards
        self.elsewhere = dict(elsewhere or {})
        self.ids: dict[str, str] = {}
        self.id_at: dict[str, int] = {}  # card key -> the line of the block it took its ID from
        self.leads: dict[str, str] = {}
        self.orphans: dict[str, str | None] = {}  # verbatim text -> card key (or None)
        self.orphan_home: str | None = None
        self.moved: dict[str, list[str]] = {}  # region name -> text moved out below it
        self.copied: set[int] = set()  # IDs of copies moved out beside their card
        self.notices: list[str] = []

    @property
    def orphaned(self) -> tuple[str, ...]:
        """Keys of the cards kept in ``orphaned-cards`` because they are no longer generated."""
        return tuple(dict.fromkeys(key for key in self.orphans.values() if key is not None))

    def orphan(self, text: str, key: str | None, region_name: str) -> None:
        """Keep ``text`` in the region ``orphaned-cards``."""
        if text not in self.orphans:
            self.orphans[text] = key
            if region_name != ORPHANS and self.orphan_home is None:
                self.orphan_home = region_name

    def move(self, text: str, region_name: str, what: str, advice: str = "") -> None:
        """Move ``text`` out of the region, to just below it, and say so."""
        self.moved.setdefault(region_name, []).append(text)
        self.notices.append(f"{what}: moved out of region {region_name!r} to just below "
                            f"it, where derive leaves it alone{advice}")

    def _take_id(self, key: str, item: Item) -> None:
        """Give card ``key`` the ID of ``item``, whose text derive regenerates."""
        assert item.id_line is not None
        self.ids[key], self.id_at[key] = item.id_line, item.line
        for extra in item.extra_ids:
            self.orphan(extra, None, ORPHANS)
            self.notices.append(
                f"line {item.line}: card {key!r} held two ID lines; it keeps "
                f"{id_words(item)} (its last, the one the plugin reads) and "
                f"{_id_of_line(extra)} is kept on a line of its own in region {ORPHANS!r}")

    def _repairs(self, item: Item, key: str) -> None:
        if item.missing_start:
            self.notices.append(
                f"line {item.line}: card {key!r} had no START line, so the plugin no longer "
                f"saw it; restored it (the card keeps {id_words(item)})")
        if item.missing_end:
            self.notices.append(f"line {item.line}: card {key!r} had no END line; "
                                "restored it (the card keeps its own ID, if any)")

    def card(self, item: Item, region_name: str) -> None:
        """A block with a key line, found in the region ``region_name``."""
        key = item.key or ""
        self._repairs(item, key)
        if key in self.new_cards:
            self._generated(item, key, region_name)
        elif key in self.elsewhere:
            self.move(item.complete, region_name,
                      f"line {item.line}: card {key!r} ({id_words(item)}) is the card of the "
                      f"note {self.elsewhere[key]!r}")
        elif item.id_line is not None:
            self.orphan(item.complete, key, region_name)
        elif item.lead.strip():
            self.move(item.lead, region_name, f"line {item.line + 1}: your lines above the "
                      f"card {key!r}, no longer generated")

    def _generated(self, item: Item, key: str, region_name: str) -> None:
        if item.id_line is not None:
            if key in self.ids:
                self._second(item, f"card {key!r}", key, region_name)
            else:
                self._take_id(key, item)
        if item.lead.strip() and key not in self.leads:
            self.leads[key] = item.lead

    def _second(self, item: Item, what: str, key: str, region_name: str) -> None:
        """A second block of card ``key``, which holds an ID already: moved out, never dropped."""
        held = _id_of_line(self.ids[key])
        if item.note_id is not None and id_words(item) == held:
            self.copied.add(item.note_id)  # said once, where the note's repeated IDs are
            self.moved.setdefault(region_name, []).append(item.complete)
            return
        self.move(item.complete, region_name,
                  f"line {item.line}: a second block of {what} holds {id_words(item)} "
                  f"(the card keeps {held}, of line {self.id_at[key]})",
                  "; each ID is an Anki note: delete the block you do not need")

    def keyless(self, item: Item, region_name: str) -> None:
        """A block with no key line: derive's card by its front, else the user's."""
        matches = [key for key, card in self.new_cards.items()
                   if card.front == item.front and item.front]
        key = matches[0] if len(matches) == 1 else None
        if key is None:
            self.move(item.complete, region_name,
                      f"line {item.line}: a card that derive did not write ({id_words(item)})")
        elif item.id_line is None:
            return  # derive's own card without its key line and without an ID: regenerated
        elif key not in self.ids:
            self._take_id(key, item)
            self.notices.append(f"line {item.line}: a card without its key line holds "
                                f"{id_words(item)}; matched to card {key!r} by its front, "
                                "ID kept")
        else:
            self._second(item, f"card {key!r}, without its key line,", key, region_name)

    def lone(self, item: Item, region_name: str) -> None:
        """A lone ID line, or the plugin's ``DELETE`` line with its ID line."""
        self.orphan(item.text, None, region_name)
        if item.kind == "delete":
            self.notices.append(
                f"line {item.line}: {id_words(item)} is marked DELETE; "
                f"kept in region {ORPHANS!r} until the plugin deletes the note")
        elif region_name != ORPHANS:
            self.notices.append(
                f"line {item.line}: {id_words(item)} stood on a line of its own, outside any "
                f"START ... END block; kept in region {ORPHANS!r}")
