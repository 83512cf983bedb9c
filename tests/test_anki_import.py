"""The .apkg through Anki's own importer (the ``anki`` package from PyPI).

A regenerated deck must update the notes a collection already holds when a
card's content changed (Anki updates a note only if the incoming modification
time is newer, under "update notes: always" too), must leave unchanged notes
alone, and must never add a duplicate.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from derive.deck.apkg import TIMESTAMP, apkg_bytes, note_times
from derive.deck.cards import Card

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow


def _anki():
    try:
        from anki import import_export_pb2
        from anki.collection import Collection
    except ImportError as err:  # pragma: no cover (the test extra installs anki)
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the test extra (anki): {err}")
        pytest.skip(f"the anki package is not installed: {err}")
    return Collection, import_export_pb2


class Collection:
    """A fresh Anki collection that imports decks and lists its notes."""

    def __init__(self, folder: Path) -> None:
        collection, self.pb = _anki()
        self.folder = folder
        self.col = collection(str(folder / "collection.anki2"))
        self.imports = 0

    def import_deck(self, deck: bytes, update: str = "IF_NEWER"):
        self.imports += 1
        path = self.folder / f"deck-{self.imports}.apkg"
        path.write_bytes(deck)
        condition = getattr(self.pb.ImportAnkiPackageUpdateCondition,
                            f"IMPORT_ANKI_PACKAGE_UPDATE_CONDITION_{update}")
        request = self.pb.ImportAnkiPackageRequest(
            package_path=str(path),
            options=self.pb.ImportAnkiPackageOptions(update_notes=condition,
                                                     with_scheduling=False),
        )
        return self.col.import_anki_package(request).log

    def notes(self) -> dict[str, tuple[list[str], int]]:
        """guid -> (fields, modification time) of every note."""
        found = {}
        for note_id in self.col.find_notes(""):
            note = self.col.get_note(note_id)
            found[note.guid] = (list(note.fields), note.mod)
        return found

    def close(self) -> None:
        self.col.close()


@pytest.fixture()
def collection(tmp_path: Path):
    col = Collection(tmp_path)
    yield col
    col.close()


CARDS = [
    Card("paths/count", "How many terms has $dy/dx$ for $N$ blocks?", "$2^{N}$"),
    Card("variance/he", "He, ReLU: $q_k$ from $q_{k-1}$?", "$q_k = 2 q_{k-1}$"),
]


def test_a_changed_card_updates_its_note_and_nothing_else(collection) -> None:
    import genanki

    first = apkg_bytes(CARDS)
    log = collection.import_deck(first)
    assert len(log.new) == 2
    before = collection.notes()

    changed = [CARDS[0], Card("variance/he", CARDS[1].front, "$q_k = 2 q_{k-1}$, doubling")]
    second = apkg_bytes(changed, previous=first)
    assert apkg_bytes(changed, previous=first) == second  # still reproducible
    times = note_times(second)
    he, count = genanki.guid_for("variance/he"), genanki.guid_for("paths/count")
    assert times == {count: TIMESTAMP, he: TIMESTAMP + 1}

    log = collection.import_deck(second)
    assert len(log.updated) == 1 and len(log.new) == 0
    after = collection.notes()
    assert len(after) == 2  # no duplicate
    assert after[he][0][1] == "\\(q_k = 2 q_{k-1}\\), doubling"
    assert after[count] == before[count]

    # an unchanged regeneration is byte-identical and changes nothing in Anki
    third = apkg_bytes(changed, previous=second)
    assert third == second
    log = collection.import_deck(third, update="ALWAYS")
    assert len(log.updated) == 0 and len(log.new) == 0 and collection.notes() == after


def test_change_and_change_back_still_updates(collection) -> None:
    import genanki

    one = apkg_bytes(CARDS)
    collection.import_deck(one)
    two = apkg_bytes([Card("paths/count", CARDS[0].front, "$2^N$ terms"), CARDS[1]],
                     previous=one)
    collection.import_deck(two)
    three = apkg_bytes(CARDS, previous=two)  # back to the first wording: newer again
    log = collection.import_deck(three)
    assert len(log.updated) == 1
    guid = genanki.guid_for("paths/count")
    assert collection.notes()[guid][0][1] == "\\(2^{N}\\)"
    assert note_times(three)[guid] == TIMESTAMP + 2


def test_a_new_card_is_added_once(collection) -> None:
    one = apkg_bytes(CARDS[:1])
    collection.import_deck(one)
    two = apkg_bytes(CARDS, previous=one)
    log = collection.import_deck(two)
    assert len(log.new) == 1 and len(log.updated) == 0
    assert len(collection.import_deck(two).new) == 0 and len(collection.notes()) == 2


def test_derive_notes_updates_the_deck_in_anki(collection, tmp_path, monkeypatch) -> None:
    import derive.deck.apkg as apkg_mod
    from derive.studynotes.writer import build

    out = tmp_path / "out"
    build(out, formats="anki", depth=2)
    deck = out / "anki" / "derive.apkg"
    total = len(collection.import_deck(deck.read_bytes()).new)
    assert total > 5

    original = apkg_mod.apkg_bytes

    def reworded(cards, *args, **kwargs):
        first, *rest = list(cards)
        changed = Card(first.key, first.front, first.back + "\n(reworded)", first.tags)
        return original([changed, *rest], *args, **kwargs)

    monkeypatch.setattr(apkg_mod, "apkg_bytes", reworded)
    result = build(out, formats="anki", depth=2)
    assert deck in result.written
    log = collection.import_deck(deck.read_bytes())
    assert len(log.updated) == 1 and len(log.new) == 0
    notes = collection.notes()
    assert len(notes) == total  # no duplicate
    assert sum("(reworded)" in fields[1] for fields, _ in notes.values()) == 1
    assert build(out, formats="anki", depth=2).written == ()  # unchanged: nothing rewritten
