"""Anki decks (``.apkg``) from cards, reproducible byte for byte.

The deck is built with genanki, with identifiers that never change between
runs, so that importing a new deck into Anki updates the cards it already
holds instead of adding duplicates:

- the note type (model) id is :data:`MODEL_ID`, from the string
  ``"derive/anki/model/basic"``; the deck id comes from ``"derive/anki/deck/"``
  plus the deck name (see :func:`stable_id`);
- each note's guid is ``genanki.guid_for(card.key)``;
- every time stamp (note and card ids, zip entry dates) comes from
  ``timestamp`` (default :data:`TIMESTAMP`), never from the clock.

Anki imports a note over the one it holds only if the note's modification
time is newer (with "update notes: always" too: an equal time is a
duplicate). So a note's time is carried over from the ``previous`` deck (the
one derive wrote last time) while its content (note type, fields, tags) stays
the same, and a note whose content changed, or that is new, gets one second
more than the latest time in that deck. An unchanged deck is byte-identical;
a changed note always carries a newer time than any earlier version of it.
A note edited in Anki carries the clock's time, far newer than the deck's, so
"update notes: if newer" leaves such an edit alone.

Fields are HTML: text is escaped, line breaks become ``<br>``, and ``$...$`` /
``$$...$$`` become Anki's ``\\(...\\)`` / ``\\[...\\]``.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import sqlite3
import zipfile
from collections.abc import Iterable
from pathlib import Path

from derive.deck.cards import Card, card_blocks
from derive.errors import DeriveError

#: Seconds since the epoch used for every time stamp in a deck (2024-01-01 UTC).
TIMESTAMP = 1_704_067_200


def stable_id(name: str) -> int:
    """An id in [2**30, 2**31) from the SHA-256 of ``name`` (genanki's advised range).

    >>> stable_id("derive/anki/model/basic") == MODEL_ID
    True
    >>> 2**30 <= stable_id("x") < 2**31
    True
    """
    return (1 << 30) + int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:15], 16) % (1 << 30)


#: The Basic note type's id: fields Front and Back, one card (front -> back). Cards of
#: another style (:attr:`derive.deck.cards.Card.style`) use a note type of their own.
MODEL_ID = stable_id("derive/anki/model/basic")
_CSS = ".card { font-family: sans-serif; font-size: 20px; text-align: left; }\n"
_MATH_RE = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.S)


def to_html(markdown: str) -> str:
    """A card field as Anki HTML: escaped text, ``<br>`` lines, ``\\( \\)`` math.

    >>> print(to_html("If $a<b$ then\\n$$a^{2} < b^{2}$$ & more"))
    If \\(a&lt;b\\) then<br>\\[a^{2} &lt; b^{2}\\] &amp; more
    """
    out: list[str] = []
    last = 0
    for match in _MATH_RE.finditer(markdown):
        out.append(_escape(markdown[last : match.start()]))
        display, inline = match.group(1), match.group(2)
        if display is not None:
            out.append(f"\\[{html.escape(display, quote=False)}\\]")
        else:
            out.append(f"\\({html.escape(inline, quote=False)}\\)")
        last = match.end()
    out.append(_escape(markdown[last:]))
    return "".join(out)


def _escape(text: str) -> str:
    return html.escape(text, quote=False).replace("\n", "<br>")


def apkg_bytes(
    cards: Iterable[Card],
    deck_name: str = "derive",
    *,
    timestamp: int = TIMESTAMP,
    previous: bytes | None = None,
) -> bytes:
    """The ``.apkg`` file for ``cards`` as bytes: same inputs, same bytes.

    ``previous`` is the deck written last time (or None): notes whose content
    did not change keep their modification time, the others get a newer one.

    >>> deck = apkg_bytes([Card("paths/count", "Terms for $N$ blocks?", "$2^N$")])
    >>> deck[:2], deck == apkg_bytes([Card("paths/count", "Terms for $N$ blocks?", "$2^N$")])
    (b'PK', True)
    >>> later = apkg_bytes([Card("paths/count", "Terms for $N$ blocks?", "$2^{N}$")],
    ...                    previous=deck)
    >>> [mod - TIMESTAMP for mod in note_times(later).values()]
    [1]
    """
    import genanki

    cards = list(cards)
    card_blocks(cards)  # validates the cards and the uniqueness of their keys
    if not isinstance(deck_name, str) or not deck_name.strip() or "\n" in deck_name:
        raise DeriveError(f"deck name must be one line of text, got {deck_name!r}")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 315_532_800:
        raise DeriveError(f"timestamp must be whole seconds since 1980-01-01, got {timestamp!r}")
    models: dict[str, genanki.Model] = {}
    deck = genanki.Deck(stable_id("derive/anki/deck/" + deck_name), deck_name)
    for card in cards:
        if card.style not in models:
            models[card.style] = _model(card.style)
        fields = ([to_html(card.cloze_text), ""] if card.style == "Cloze"
                  else [to_html(card.front), to_html(card.back)])
        deck.add_note(genanki.Note(
            model=models[card.style],
            fields=fields,
            tags=list(card.tags),
            guid=genanki.guid_for(card.key),
        ))
    package = genanki.Package(deck)
    conn = sqlite3.connect(":memory:")
    try:
        package.write_to_db(conn.cursor(), timestamp, _ids(timestamp))
        _carry_times(conn, _note_contents(previous), timestamp)
        conn.commit()
        collection = conn.serialize()
    finally:
        conn.close()
    return _zip({"collection.anki2": collection, "media": b"{}"}, timestamp)


def _model(style: str) -> object:
    """The note type of a card style; Basic keeps :data:`MODEL_ID`, the others their own."""
    import genanki

    answer = '{{FrontSide}}<hr id="answer">{{Back}}'
    if style == "Cloze":
        return genanki.Model(
            stable_id("derive/anki/model/cloze"), "derive cloze",
            fields=[{"name": "Text"}, {"name": "Back Extra"}],
            templates=[{"name": "Cloze", "qfmt": "{{cloze:Text}}",
                        "afmt": "{{cloze:Text}}<br>{{Back Extra}}"}],
            css=_CSS, model_type=genanki.Model.CLOZE)
    templates = [{"name": "Card 1", "qfmt": "{{Front}}", "afmt": answer}]
    if style == "Basic (and reversed card)":
        templates.append({"name": "Card 2", "qfmt": "{{Back}}",
                          "afmt": '{{FrontSide}}<hr id="answer">{{Front}}'})
        return genanki.Model(stable_id("derive/anki/model/basic-reversed"),
                             "derive basic and reversed", fields=[{"name": "Front"},
                                                                  {"name": "Back"}],
                             templates=templates, css=_CSS)
    return genanki.Model(MODEL_ID, "derive basic", fields=[{"name": "Front"}, {"name": "Back"}],
                         templates=templates, css=_CSS)


def write_apkg(
    cards: Iterable[Card],
    path: str | os.PathLike[str],
    deck_name: str = "derive",
    *,
    timestamp: int = TIMESTAMP,
) -> Path:
    """Write the deck of ``cards`` to ``path`` atomically; return the path.

    (To write into an output folder with ownership checks, pass
    :func:`apkg_bytes` to :func:`derive.files.writes.write_files` instead.)

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "derive.apkg"
    >>> write_apkg([Card("paths/count", "Q", "A")], target).stat().st_size > 0
    True
    """
    from derive.files.writes import atomic_write

    target = Path(path)
    if target.is_dir():
        raise DeriveError(f"cannot write the deck to {target}: it is a folder")
    if not target.parent.is_dir():
        raise DeriveError(f"cannot write the deck to {target}: {target.parent} does not exist")
    atomic_write(target, apkg_bytes(cards, deck_name, timestamp=timestamp))
    return target


def note_times(deck: bytes) -> dict[str, int]:
    """Each note's guid -> modification time (seconds) in the ``.apkg`` ``deck``.

    >>> note_times(apkg_bytes([Card("a/x", "Q", "A")]))
    {'...': 1704067200}
    """
    return {guid: mod for guid, (mod, _) in _note_contents(deck).items()}


def _note_contents(deck: bytes | None) -> dict[str, tuple[int, tuple[object, ...]]]:
    """guid -> (modification time, content) of each note of a deck; {} if unreadable."""
    if deck is None:
        return {}
    import io

    conn = sqlite3.connect(":memory:")
    try:
        with zipfile.ZipFile(io.BytesIO(deck)) as archive:
            conn.deserialize(archive.read("collection.anki2"))
        rows = conn.execute("SELECT guid, mod, mid, flds, tags FROM notes").fetchall()
    except (zipfile.BadZipFile, KeyError, sqlite3.Error, OSError, ValueError):
        return {}
    finally:
        conn.close()
    return {guid: (int(mod), (mid, flds, tags.strip())) for guid, mod, mid, flds, tags in rows}


def _carry_times(
    conn: sqlite3.Connection, previous: dict[str, tuple[int, tuple[object, ...]]],
    timestamp: int,
) -> None:
    """Set each note's (and its cards') time: kept if unchanged since ``previous``, else newer."""
    newer = max([timestamp - 1, *(mod for mod, _ in previous.values())]) + 1
    rows = conn.execute("SELECT id, guid, mid, flds, tags FROM notes").fetchall()
    for note_id, guid, mid, flds, tags in rows:
        before = previous.get(guid)
        unchanged = before is not None and before[1] == (mid, flds, tags.strip())
        mod = before[0] if unchanged and before is not None else newer
        conn.execute("UPDATE notes SET mod = ? WHERE id = ?", (mod, note_id))
        conn.execute("UPDATE cards SET mod = ? WHERE nid = ?", (mod, note_id))


def _ids(timestamp: int) -> Iterable[int]:
    """Note and card ids counting up from ``timestamp`` in milliseconds (as genanki)."""
    value = timestamp * 1000
    while True:
        yield value
        value += 1


def _zip(entries: dict[str, bytes], timestamp: int) -> bytes:
    """A deflated zip of ``entries`` whose entry dates are ``timestamp`` (UTC)."""
    import io
    import time

    date = time.gmtime(timestamp)[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=date)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
