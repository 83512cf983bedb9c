"""Anki cards: plugin-format blocks, ID-preserving regeneration, reproducible decks.

The Obsidian_to_Anki plugin is simulated here from its own source
(Pseudonium/Obsidian_to_Anki, src/setting-to-data.ts, src/note.ts,
src/file.ts, src/format.ts): a note is ``^START\\n([\\s\\S]*?\\n)END``
(multiline), a new note's ID line ``<!--ID: n-->`` is inserted at the end of
that group (just before ``END``), and ``$...$`` math is converted with
OBS_INLINE_MATH_REGEXP / OBS_DISPLAY_MATH_REGEXP.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derive.deck.apkg import MODEL_ID, TIMESTAMP, apkg_bytes, stable_id, to_html, write_apkg
from derive.deck.cards import Card, card_blocks, fix_math, parse_plugin_notes
from derive.errors import DeriveError
from derive.files.writes import write_files
from derive.vault.regions import ORPHANS, cards_region, merge_note, region, split_regions

PLUGIN_NOTE = re.compile(r"^START\n([\s\S]*?\n)END", re.M)
PLUGIN_ID = re.compile(r"(?:<!--)?ID: (\d+)")
PLUGIN_INLINE_MATH = re.compile(r"(?<!\$)\$((?=[\S])(?=[^$])[\s\S]*?\S)\$")
PLUGIN_DISPLAY_MATH = re.compile(r"\$\$([\s\S]*?)\$\$")
#: key -> ID, read straight off the text (independent of derive's parser)
KEYED_ID = re.compile(r"<!-- card: (\S+) -->\nSTART\n(?:(?!\nEND)[\s\S])*?\n<!--ID: (\d+)-->\nEND")


def plugin_sync(text: str, first_id: int) -> tuple[str, list[int]]:
    """Add ID lines the way the plugin does (file.ts writeIDs) to notes without one."""
    positions = []
    for match in PLUGIN_NOTE.finditer(text):
        last_line = match.group(1).strip().split("\n")[-1]
        if not PLUGIN_ID.search(last_line):
            positions.append(match.end(1))
    ids = list(range(first_id, first_id + len(positions)))
    for position, note_id in reversed(list(zip(positions, ids, strict=True))):
        text = text[:position] + f"<!--ID: {note_id}-->\n" + text[position:]
    return text, ids


def plugin_math(field: str) -> str:
    """The plugin's conversion of Obsidian math to Anki math (format.ts)."""
    field = PLUGIN_DISPLAY_MATH.sub(lambda m: f"\\[{m.group(1)}\\]", field)
    return PLUGIN_INLINE_MATH.sub(lambda m: f"\\({m.group(1)}\\)", field)


def keyed_ids(text: str) -> dict[str, int]:
    pairs = KEYED_ID.findall(text)
    assert len({key for key, _ in pairs}) == len(pairs), "a key holds two IDs"
    return {key: int(note_id) for key, note_id in pairs}


CARDS = {
    "paths/count": Card("paths/count", "How many terms has $dy/dx$ for $N$ blocks?", "$2^{N}$"),
    "paths/order": Card(
        "paths/order",
        "Order of the terms of $\\frac{\\partial y}{\\partial f_1}$ for $N = 4$?",
        "Binary counting over blocks 2, 3, 4:\n$$I + J_2 + J_3 + J_3 J_2 + J_4 + \\dots$$",
        ("udl-11.6",),
    ),
    "variance/he": Card("variance/he", "He, ReLU: $q_k$ in terms of $q_{k-1}$?", "$2 q_{k-1}$"),
    "variance/pre": Card("variance/pre", "Pre-norm: growth of $q_k$?", "Linear in $k$."),
}


def note(keys: list[str], summary: str = "Eight terms.\n") -> str:
    """A generated note as the renderer writes it: regions inside a page."""
    return (
        "# Paths\n\n" + region("summary", summary) + "\n# anki\n\n"
        + cards_region([CARDS[key] for key in keys])
    )


# -- cards and the plugin's format ------------------------------------------------------


def test_block_follows_the_plugin_format() -> None:
    block = CARDS["paths/order"].block()
    assert "\r" not in block and block.endswith("END\n")
    lines = block.split("\n")
    assert lines[:3] == ["<!-- card: paths/order -->", "START", "Basic"]
    assert "Back:" in lines and lines[-3:] == ["Tags: derive paths udl-11.6", "END", ""]
    assert not any(line.startswith("END") for line in lines[3:-2])
    (parsed,) = parse_plugin_notes(block)
    assert parsed.fields == {"Front": CARDS["paths/order"].front, "Back": CARDS["paths/order"].back}
    assert parsed.note_type == "Basic" and parsed.note_id is None and parsed.key == "paths/order"


def test_parser_reads_the_plugin_readme_example() -> None:
    # the example note of the Obsidian_to_Anki README ("Note formatting")
    text = (
        "START\nBasic\nThis is a test.\nBack: Test successfully imported!\n"
        "Tags: Tag1 Tag2\n<!--ID: 1566052191670-->\nEND\n"
    )
    (parsed,) = parse_plugin_notes(text)
    assert parsed.fields == {"Front": "This is a test.", "Back": "Test successfully imported!"}
    assert parsed.tags == ("Tag1", "Tag2") and parsed.note_id == 1566052191670
    assert parsed.key is None and text[parsed.id_at :] == "END\n"


def test_parser_refuses_unknown_note_types() -> None:
    with pytest.raises(DeriveError, match="note type 'Fancy' is not one of Basic"):
        parse_plugin_notes("START\nFancy\nx\nEND\n")


def test_plugin_converts_all_card_math() -> None:
    for card in CARDS.values():
        for field in (card.front, card.back):
            converted = plugin_math(field)
            assert "$" not in converted, converted
            for math in re.findall(r"\\\((.*?)\\\)|\\\[(.*?)\\\]", converted, re.S):
                assert "'" not in "".join(math)


def test_math_is_fixed_for_the_plugin() -> None:
    assert fix_math("$ x $ and $y$") == "$x$ and $y$"
    assert fix_math("$f'(x)$, $g''$") == "$f^{\\prime}(x)$, $g^{\\prime\\prime}$"
    assert fix_math("$x'^2$ and $x'^{(k)}$") == "$x^{\\prime 2}$ and $x^{\\prime (k)}$"
    assert fix_math("it's fine") == "it's fine"  # apostrophes outside math stay
    with pytest.raises(DeriveError, match="no escape for"):
        fix_math("costs \\$5")
    card = Card("a/b", "What is $ f' $?", "$$\n f'' \n$$")
    assert card.front == "What is $f^{\\prime}$?" and card.back == "$$\n f^{\\prime\\prime} \n$$"
    assert plugin_math(card.front) == "What is \\(f^{\\prime}\\)?"


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ("costs $5", "unbalanced '\\$'"),
        ("empty $ $ math", "empty math"),
        ("$a$$b$", "math directly followed by"),
        ("$$a$$$b$", "math directly followed by"),
        ("", "front is empty"),
        ("first\nEND of story", "would be read as Obsidian_to_Anki syntax"),
        ("START\nagain", "would be read as Obsidian_to_Anki syntax"),
        ("Back: too soon", "would be read as Obsidian_to_Anki syntax"),
        ("Tags: x", "would be read as Obsidian_to_Anki syntax"),
        ("see <!--ID: 123-->", "would be read as Obsidian_to_Anki syntax"),
        ("an STARTI inline ENDI", "would be read as Obsidian_to_Anki syntax"),
        ("<!-- derive:end anki -->", "would be read as Obsidian_to_Anki syntax"),
    ],
)
def test_cards_that_break_the_rules(front: str, message: str) -> None:
    with pytest.raises(DeriveError, match=message) as caught:
        Card("a/b", front, "back")
    assert "'a/b' front" in str(caught.value)


@pytest.mark.parametrize("key", ["", "a b", "a--b", "-a", "a/", "ä", "a>b"])
def test_bad_keys(key: str) -> None:
    with pytest.raises(DeriveError, match=r"card key .* is not allowed"):
        Card(key, "Q", "A")


def test_tags() -> None:
    assert Card("paths/x", "Q", "A", ("paths", "extra")).tags == ("derive", "paths", "extra")
    with pytest.raises(DeriveError, match="tag 'two words' is not allowed: no spaces"):
        Card("paths/x", "Q", "A", ("two words",))
    with pytest.raises(DeriveError, match="tags must be a tuple"):
        Card("paths/x", "Q", "A", "loose")  # type: ignore[arg-type]


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(DeriveError, match="card key 'a/x' appears twice"):
        card_blocks([Card("a/x", "Q", "A"), Card("a/x", "Q2", "A2")])


# -- regeneration with IDs --------------------------------------------------------------


def test_round_trip_keeps_ids_and_user_text() -> None:
    first = merge_note(None, note(["paths/count", "paths/order", "variance/he"]))
    assert first.base is None and first.orphaned == ()
    synced, ids = plugin_sync(first.text, 1001)
    keys = ["paths/count", "paths/order", "variance/he"]
    assert keyed_ids(synced) == dict(zip(keys, ids, strict=True))
    edited = "My intro.\n\n" + synced.replace("\n# anki\n", "\nmy remark\n\n# anki\n")
    edited += "\n## My section\nmore\n"

    same = merge_note(edited, note(["paths/count", "paths/order", "variance/he"]))
    assert same.text == edited and not same.changed and same.orphaned == ()

    changed = CARDS["paths/order"].back + "\n(UDL eq. 11.6)"
    generated = "# Paths\n\n" + region("summary", "Now eight terms.\n") + "\n# anki\n\n"
    generated += cards_region([
        CARDS["variance/pre"],
        Card("paths/order", CARDS["paths/order"].front, changed, ("udl-11.6",)),
        CARDS["paths/count"],
    ])
    merged = merge_note(edited, generated)
    text = merged.text
    assert merged.changed and merged.base == edited and merged.orphaned == ("variance/he",)
    assert text.startswith("My intro.\n\n# Paths\n") and text.endswith("\n## My section\nmore\n")
    assert "\nmy remark\n\n# anki\n" in text and "Now eight terms." in text
    assert keyed_ids(text) == {"paths/count": 1001, "paths/order": 1002, "variance/he": 1003}
    parsed = {p.key: p for p in parse_plugin_notes(text)}
    assert parsed["paths/order"].fields["Back"] == changed
    assert parsed["variance/pre"].note_id is None
    orphans = [p for p in split_regions(text) if not isinstance(p, str) and p.name == ORPHANS]
    assert len(orphans) == 1 and "<!-- card: variance/he -->" in orphans[0].content
    assert merge_note(text, generated).text == text  # idempotent

    resynced, new_ids = plugin_sync(text, 2001)
    assert len(new_ids) == 1 and keyed_ids(resynced)["variance/pre"] == 2001

    back = merge_note(resynced, note(["paths/count", "paths/order", "variance/he"]))
    assert back.orphaned == ("variance/pre",)
    assert keyed_ids(back.text) == {
        "paths/count": 1001, "paths/order": 1002, "variance/he": 1003, "variance/pre": 2001
    }
    anki = next(p for p in split_regions(back.text) if not isinstance(p, str) and p.name == "anki")
    assert "<!-- card: variance/he -->" in anki.content
    assert back.text.count("<!--ID: ") == 4


def test_text_typed_inside_a_region_is_replaced() -> None:
    text = note(["paths/count"]).replace("Eight terms.\n", "Eight terms.\nmine\n")
    assert "mine" not in merge_note(text, note(["paths/count"])).text


def test_new_and_removed_regions() -> None:
    old = "top\n\n" + region("a", "A\n") + "\nmiddle\n\n" + region("c", "C\n") + "\nend\n"
    new = region("a", "A\n") + region("b", "B\n") + region("d", "D\n")
    merged = merge_note(old, new).text
    assert merged == (
        "top\n\n" + region("a", "A\n") + "\n" + region("b", "B\n") + "\n" + region("d", "D\n")
        + "\nmiddle\n\n\nend\n"
    )


def test_a_missing_note_is_written_and_the_users_own_note_gets_the_regions() -> None:
    generated = note(["paths/count"])
    missing = merge_note(None, generated)
    assert missing.text == generated and missing.base is None
    own = merge_note("my own file\n", generated)  # a note of the user's, no region in it
    assert own.text == "my own file\n\n" + generated and own.base == "my own file\n"
    assert merge_note(own.text, generated).text == own.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- derive:begin a -->\nx\n", "region 'a' has no end marker"),
        ("x\n<!-- derive:end a -->\n", "without its begin marker"),
        ("<!-- derive:begin a -->\n<!-- derive:begin b -->\n",
         "line 2: region 'a' \\(begun on line 1\\) is not closed"),
        (region("a", "x") + region("a", "y"), "line 4: a second region 'a'"),
    ],
)
def test_broken_markers_are_reported(text: str, message: str) -> None:
    with pytest.raises(DeriveError, match=message):
        merge_note(text, note(["paths/count"]))


def test_generated_notes_may_not_claim_the_orphan_region() -> None:
    with pytest.raises(DeriveError, match="orphaned-cards"):
        merge_note(None, region(ORPHANS, "x"))


POOL = ["paths/count", "paths/order", "variance/he", "variance/pre"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.permutations(POOL).flatmap(
    lambda keys: st.integers(0, len(keys)).map(lambda n: keys[:n])), min_size=1, max_size=5))
def test_ids_are_never_lost(generations: list[list[str]]) -> None:
    text: str | None = None
    owner: dict[int, str] = {}
    next_id = 1
    for keys in generations:
        merged = merge_note(text, note(keys))
        assert merge_note(merged.text, note(keys)).text == merged.text
        ids = keyed_ids(merged.text)
        assert {owner[i]: i for i in owner} == ids  # every ID, with its own card
        assert set(merged.orphaned) == set(ids) - set(keys)
        text, new_ids = plugin_sync(merged.text, next_id)
        next_id += len(new_ids)
        owner.update({i: key for key, i in keyed_ids(text).items()})


# -- .apkg decks ------------------------------------------------------------------------


def open_deck(data: bytes, tmp_path: Path) -> sqlite3.Connection:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["collection.anki2", "media"]
        assert {info.date_time for info in archive.infolist()} == {(2024, 1, 1, 0, 0, 0)}
        assert json.loads(archive.read("media")) == {}
        (tmp_path / "collection.anki2").write_bytes(archive.read("collection.anki2"))
    return sqlite3.connect(tmp_path / "collection.anki2")


def test_deck_holds_the_cards(tmp_path: Path) -> None:
    import genanki

    cards = [CARDS["paths/count"], Card("x/y", "If $a<b$ & c", "$$a^{2}$$\nthen")]
    db = open_deck(apkg_bytes(cards, "Residual networks"), tmp_path)
    rows = db.execute("SELECT guid, mid, mod, flds, tags FROM notes ORDER BY id").fetchall()
    assert [row[0] for row in rows] == [genanki.guid_for("paths/count"), genanki.guid_for("x/y")]
    assert {row[1] for row in rows} == {MODEL_ID} and {row[2] for row in rows} == {TIMESTAMP}
    assert rows[0][3].split("\x1f") == [
        "How many terms has \\(dy/dx\\) for \\(N\\) blocks?", "\\(2^{N}\\)"
    ]
    assert rows[1][3].split("\x1f") == ["If \\(a&lt;b\\) &amp; c", "\\[a^{2}\\]<br>then"]
    assert rows[1][4].split() == ["derive", "x"]
    assert db.execute("SELECT count(*) FROM cards").fetchone() == (2,)
    models, decks = db.execute("SELECT models, decks FROM col").fetchone()
    assert json.loads(models)[str(MODEL_ID)]["flds"][0]["name"] == "Front"
    deck = json.loads(decks)[str(stable_id("derive/anki/deck/Residual networks"))]
    assert deck["name"] == "Residual networks"
    db.close()


def test_deck_bytes_are_reproducible_across_processes(tmp_path: Path) -> None:
    code = (
        "import sys; from derive.deck.cards import Card; from derive.deck.apkg import apkg_bytes; "
        "sys.stdout.buffer.write(apkg_bytes([Card('paths/count', 'Q $x$', 'A')]))"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] == apkg_bytes([Card("paths/count", "Q $x$", "A")])
    path = write_apkg([Card("paths/count", "Q $x$", "A")], tmp_path / "d.apkg")
    assert path.read_bytes() == runs[0]


def test_deck_through_safe_files(tmp_path: Path) -> None:
    data = apkg_bytes(CARDS.values())
    assert write_files(tmp_path, {"derive.apkg": data}).written == ("derive.apkg",)
    assert write_files(tmp_path, {"derive.apkg": data}).unchanged == ("derive.apkg",)


def test_deck_errors(tmp_path: Path) -> None:
    with pytest.raises(DeriveError, match="does not exist"):
        write_apkg([CARDS["paths/count"]], tmp_path / "missing" / "d.apkg")
    with pytest.raises(DeriveError, match="it is a folder"):
        write_apkg([CARDS["paths/count"]], tmp_path)
    with pytest.raises(DeriveError, match="deck name must be one line"):
        apkg_bytes([CARDS["paths/count"]], "")
    with pytest.raises(DeriveError, match="appears twice"):
        apkg_bytes([CARDS["paths/count"], CARDS["paths/count"]])
    with pytest.raises(DeriveError, match="timestamp must be whole seconds"):
        apkg_bytes([CARDS["paths/count"]], timestamp=1.5)  # type: ignore[arg-type]


def test_html_keeps_math_delimiters() -> None:
    assert to_html("a $x<y$ b") == "a \\(x&lt;y\\) b"
    assert to_html("<b>\n$$\\sum$$") == "&lt;b&gt;<br>\\[\\sum\\]"


def test_orphan_region_goes_away_cleanly() -> None:
    synced, _ = plugin_sync(note(["paths/count", "variance/he"]), 1)
    synced = "top\n\n" + synced + "\nafter\n"
    orphaned = merge_note(synced, note(["paths/count"])).text
    assert f"<!-- derive:begin {ORPHANS} -->" in orphaned
    restored = merge_note(orphaned, note(["paths/count", "variance/he"]))
    assert restored.text == synced and restored.orphaned == ()


def test_a_duplicated_card_keeps_both_ids() -> None:
    synced, _ = plugin_sync(note(["paths/count"]), 7)
    block = CARDS["paths/count"].block(8)
    duplicated = synced.replace("<!-- derive:end anki -->", block + "<!-- derive:end anki -->")
    merged = merge_note(duplicated, note(["paths/count"]))
    assert merged.orphaned == ()  # still generated: the copy is moved out of the region, named
    assert len(merged.notices) == 1 and "a second block of card 'paths/count'" in \
        merged.notices[0] and "holds ID 8 (the card keeps ID 7" in merged.notices[0]
    assert merged.text.count("<!--ID: 7-->") == 1 and merged.text.count("<!--ID: 8-->") == 1
    assert merge_note(merged.text, note(["paths/count"])).text == merged.text


def test_broken_existing_note_is_its_own_error() -> None:
    from derive.vault.regions import BrokenNote

    with pytest.raises(BrokenNote, match="line 1: region 'a' has no end marker; add the line"):
        merge_note("<!-- derive:begin a -->\n", note(["paths/count"]))


def test_crlf_note_merges_and_is_written_with_lf(tmp_path: Path) -> None:
    synced, _ = plugin_sync(note(["paths/count"]), 5)
    (tmp_path / "n.md").write_bytes(("mine\n" + synced).replace("\n", "\r\n").encode())
    existing = (tmp_path / "n.md").read_bytes().decode()
    merged = merge_note(existing, note(["paths/count", "variance/he"]))
    write_files(tmp_path, {"n.md": merged.text}, merged_from={"n.md": merged.base})
    written = (tmp_path / "n.md").read_bytes().decode("utf-8")
    assert "\r" not in written and written.startswith("mine\n")
    assert keyed_ids(written) == {"paths/count": 5}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab $'^{}\\x2\n", max_size=24))
def test_fixed_math_is_stable(text: str) -> None:
    try:
        fixed = fix_math(text)
    except DeriveError:
        return
    assert fix_math(fixed) == fixed
    assert "$" not in plugin_math(fixed)  # the plugin converts every formula


def test_id_lines_without_comments_are_kept_verbatim() -> None:
    # the plugin's "ID Comments" setting off writes a bare "ID: n" line
    text = note(["paths/count"]).replace("END\n", "ID: 1566052191670\nEND\n")
    assert parse_plugin_notes(text)[0].note_id == 1566052191670
    merged = merge_note(text, note(["paths/count", "variance/pre"]))
    assert "Tags: derive paths\nID: 1566052191670\nEND\n" in merged.text
    assert merge_note(text, note(["paths/count"])).text == text
