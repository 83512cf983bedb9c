"""Obsidian notes as users and editors leave them: every Anki ID kept, every outcome defined.

Each case starts from a note that the plugin has synced (IDs added by the
plugin's own rule, see ``plugin_sync``), does to it what a user or an editor
does, regenerates, and ends by reading the result with the plugin's rules:
every ID must still sit on a note whose front is the card it was given to.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_anki import CARDS, PLUGIN_ID, PLUGIN_NOTE, POOL, keyed_ids, note, plugin_sync

from derive.deck.cards import Card, parse_plugin_notes
from derive.errors import DeriveError
from derive.vault.regions import (
    ORPHANS,
    BrokenNote,
    cards_region,
    merge_note,
    region,
    split_regions,
)

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

#: The plugin's rule for deleting a note (src/setting-to-data.ts: EMPTY_REGEXP).
PLUGIN_DELETE = re.compile(r"DELETE\n?(?:<!--)?(?:ID: (\d+).*)")
KEYS = ["paths/count", "paths/order", "variance/he"]


def synced(keys: list[str] = KEYS, first_id: int = 101) -> tuple[str, dict[str, int]]:
    text, _ = plugin_sync(merge_note(None, note(keys)).text, first_id)
    return text, keyed_ids(text)


def plugin_fronts(text: str) -> dict[int, str]:
    """ID -> front of every note the plugin would sync, read with the plugin's own rules.

    (note.ts and file.ts: a note is ``^START\\n(...\\n)END``, its ID on its last
    line, its note type on its first, its first field up to ``Back:``.)
    """
    seen: dict[int, str] = {}
    for match in PLUGIN_NOTE.finditer(text):
        lines = match.group(1).strip().split("\n")
        found = PLUGIN_ID.search(lines[-1])
        if not found:
            continue
        note_id = int(found.group(1))
        assert note_id not in seen, f"ID {note_id} on two notes"
        body = lines[1:]
        seen[note_id] = "\n".join(body[: body.index("Back:")] if "Back:" in body else body)
    return seen


def assert_ids_with_their_cards(text: str, ids: dict[str, int]) -> None:
    fronts = plugin_fronts(text)
    for key, note_id in ids.items():
        assert fronts.get(note_id) == CARDS[key].front, (key, note_id)


def regenerate_twice(text: str, keys: list[str] = KEYS):
    merged = merge_note(text, note(keys))
    again = merge_note(merged.text, note(keys))
    assert again.text == merged.text  # the outcome is stable
    return merged, again


# -- issue 8.1: IDs that users' edits used to drop -----------------------------------------


def test_deleted_key_line_the_id_is_matched_by_the_front() -> None:
    text, ids = synced()
    broken = text.replace("<!-- card: paths/order -->\n", "")
    merged, again = regenerate_twice(broken)
    assert keyed_ids(merged.text) == ids  # the key line is back, with the card's own ID
    assert len(merged.notices) == 1
    assert "matched to card 'paths/order' by its front, ID kept" in merged.notices[0]
    assert again.notices == () and merged.orphaned == ()
    assert merged.text == text
    assert_ids_with_their_cards(merged.text, ids)


def test_deleted_key_line_of_a_reworded_card_keeps_its_note() -> None:
    text, ids = synced()
    broken = text.replace("<!-- card: paths/count -->\n", "")
    reworded = Card("paths/count", "Number of terms of $dy/dx$, $N$ blocks?", "$2^{N}$")
    generated = "# Paths\n\n" + region("summary", "Eight terms.\n") + "\n# anki\n\n" + \
        cards_region([reworded, CARDS["paths/order"], CARDS["variance/he"]])
    merged = merge_note(broken, generated)
    assert len(merged.notices) == 1 and "moved out of region 'anki'" in merged.notices[0]
    assert f"(ID {ids['paths/count']})" in merged.notices[0]
    # the old block keeps syncing its note below the region; the new card is a new note
    anki_end = merged.text.index("<!-- derive:end anki -->")
    assert merged.text.index(f"<!--ID: {ids['paths/count']}-->") > anki_end
    fronts = plugin_fronts(merged.text)
    assert fronts[ids["paths/count"]] == CARDS["paths/count"].front
    assert reworded.front not in fronts.values()
    assert merge_note(merged.text, generated).text == merged.text


def test_users_own_cards_inside_the_region_are_moved_out_verbatim() -> None:
    text, ids = synced()
    mine = "START\nBasic\nMy question?\nBack:\nMy answer.\n<!--ID: 999-->\nEND\n"
    unsynced = "START\nBasic\nAnother of mine?\nBack:\nYes.\nEND\n"
    edited = text.replace("<!-- derive:end anki -->",
                          "\n" + mine + "\n" + unsynced + "<!-- derive:end anki -->")
    merged, again = regenerate_twice(edited)
    assert len(merged.notices) == 2 and again.notices == ()
    assert "derive did not write (ID 999)" in merged.notices[0]
    assert "derive did not write (no ID)" in merged.notices[1]
    after = merged.text.split("<!-- derive:end anki -->\n", 1)[1]
    assert mine in after and unsynced in after
    anki = next(p for p in split_regions(merged.text) if not isinstance(p, str) and
                p.name == "anki")
    assert "My question?" not in anki.content
    fronts = plugin_fronts(merged.text)
    assert fronts[999] == "My question?"
    assert_ids_with_their_cards(merged.text, ids)


def test_delete_line_under_orphans_survives_until_the_plugin_deletes() -> None:
    text, ids = synced()
    orphaned = merge_note(text, note(["paths/count", "paths/order"])).text
    assert "DELETE" in orphaned  # the header says how
    block = re.search(r"<!-- card: variance/he -->\nSTART\n[\s\S]*?\nEND\n", orphaned)
    assert block is not None
    he = ids["variance/he"]
    marked = orphaned.replace(block.group(0), f"DELETE\n<!--ID: {he}-->\n")
    kept = merge_note(marked, note(["paths/count", "paths/order"]))
    assert f"DELETE\n<!--ID: {he}-->\n" in kept.text
    assert len(kept.notices) == 1 and f"ID {he} is marked DELETE" in kept.notices[0]
    assert [int(m) for m in PLUGIN_DELETE.findall(kept.text)] == [he]
    # the plugin deletes the note and removes the two lines (file.ts removeEmpties)
    after_sync = PLUGIN_DELETE.sub("", kept.text)
    final = merge_note(after_sync, note(["paths/count", "paths/order"]))
    assert f"derive:begin {ORPHANS}" not in final.text and final.notices == ()
    assert_ids_with_their_cards(final.text, {k: ids[k] for k in ("paths/count", "paths/order")})


# -- issue 10.6: notes as editors leave them -----------------------------------------------


def test_missing_end_never_takes_the_next_cards_id() -> None:
    text, ids = synced()
    order_id = ids["paths/order"]
    # END deleted on a card without an ID yet, and on one that has its ID
    no_id, _ = plugin_sync(merge_note(None, note(KEYS)).text.replace(
        "Tags: derive paths udl-11.6\nEND\n", "Tags: derive paths udl-11.6\n", 1), 101)
    merged, _ = regenerate_twice(no_id)
    assert "card 'paths/order' had no END line; restored it" in merged.notices[0]
    got = keyed_ids(merged.text)
    assert "paths/order" not in got or got["paths/order"] != got.get("variance/he")
    assert_ids_with_their_cards(merged.text, {k: v for k, v in got.items()})
    with_id = text.replace(f"<!--ID: {order_id}-->\nEND\n", f"<!--ID: {order_id}-->\n", 1)
    merged, _ = regenerate_twice(with_id)
    assert keyed_ids(merged.text) == ids and merged.text == text
    assert_ids_with_their_cards(merged.text, ids)


def test_user_line_between_key_line_and_start_is_kept() -> None:
    text, ids = synced()
    edited = text.replace("<!-- card: paths/order -->\n",
                          "<!-- card: paths/order -->\nremember eq. 11.6\n")
    merged, _ = regenerate_twice(edited)
    assert merged.text == edited and merged.notices == ()
    assert "<!-- card: paths/order -->\nremember eq. 11.6\nSTART\n" in merged.text
    assert_ids_with_their_cards(merged.text, ids)
    changed = merge_note(edited, note(["variance/pre", *KEYS]))
    assert "<!-- card: paths/order -->\nremember eq. 11.6\nSTART\n" in changed.text
    assert_ids_with_their_cards(changed.text, ids)


def _habit(text: str, fault: str) -> tuple[str, str]:
    """(the note as the editor left it, the note derive regenerates from it, unchanged)."""
    begin, end = "<!-- derive:begin anki -->\n", "<!-- derive:end anki -->\n"
    count, order = "<!-- card: paths/count -->\n", "<!-- card: paths/order -->\n"
    if fault == "bom":
        return "\ufeff" + text, "\ufeff" + text
    if fault == "crlf":  # read as intended, written back with LF
        return text.replace("\n", "\r\n"), text
    if fault == "trailing":  # marker lines stay as typed; derive's own card lines are its own
        marker = text.replace(begin, begin[:-1] + "  \n")
        return marker.replace(count, count[:-1] + " \n"), marker
    if fault == "tab":
        marker = text.replace(end, end[:-1] + "\t\n")
        return marker.replace(order, order[:-1] + "\t\n"), marker
    marker = text.replace(begin, begin.replace("<!-- ", "<!--  "))
    return marker.replace(order, order.replace("card: ", "card:  ")), marker


@pytest.mark.parametrize("fault", ["bom", "trailing", "tab", "crlf", "double-space"])
def test_editor_habits_are_read_as_intended(fault: str) -> None:
    text, ids = synced()
    edited, expected = _habit(text, fault)
    same = merge_note(edited, note(KEYS))
    assert same.text == expected and same.notices == () and same.orphaned == ()
    more = merge_note(edited, note([*KEYS, "variance/pre"])).text
    if fault == "bom":
        assert more.startswith("\ufeff# Paths")
    plain = more.replace("\r\n", "\n").lstrip("\ufeff")
    assert keyed_ids(plain) == ids
    assert_ids_with_their_cards(plain, ids)
    assert "variance/pre" in plain and merge_note(more, note([*KEYS, "variance/pre"])).text == more


@pytest.mark.parametrize(("damage", "message"), [
    (lambda t: t.replace("<!-- derive:end anki -->\n", ""),
     r"line \d+: region 'anki' has no end marker; add the line <!-- derive:end anki -->"),
    (lambda t: t.replace("<!-- derive:begin summary -->\n", ""),
     r"line \d+: end marker of region 'summary' without its begin marker"),
    (lambda t: t.replace("<!-- derive:end summary -->\n", ""),
     r"line \d+: region 'summary' \(begun on line 3\) is not closed before this marker"),
])
def test_broken_markers_name_the_line_and_the_fix(damage, message) -> None:
    text, _ = synced()
    with pytest.raises(BrokenNote, match=message) as caught:
        merge_note(damage(text), note(KEYS))
    assert "--force" not in str(caught.value)


def test_broken_note_through_the_command_line(tmp_path: Path, capsys) -> None:
    from derive.commands.cli import main

    out = tmp_path / "vault"
    main_args = ["notes", "--format", "obsidian", "--depth", "2", "--out", str(out)]
    with pytest.raises(SystemExit):
        main(main_args)
    capsys.readouterr()
    target = out / "obsidian" / "Layer norm.md"
    broken = target.read_text().replace("<!-- derive:end anki -->\n", "")
    target.write_text(broken)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra in ([], ["--force"]):
        with pytest.raises(SystemExit) as done:
            main([*main_args, *extra])
        err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                      if not line.endswith(" ...\n"))  # progress lines
        assert done.value.code == 2 and err.count("\n") == 1, err
        assert str(target) in err and "line " in err and "derive:end anki" in err
        assert "--force" not in err
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_round_trip_depth_4_5_4_gives_the_note_back(tmp_path: Path) -> None:
    from derive.studynotes.writer import build

    out = tmp_path / "vault"
    build(out, formats="obsidian", depth=4)
    notes = sorted((out / "obsidian").glob("*.md"))
    first_id = 1
    for path in notes:  # the plugin syncs, the user writes
        text, new = plugin_sync(path.read_text(), first_id)
        first_id += len(new)
        path.write_text("My intro.\n\n" + text + "\nMy remark.\n")
    before = {p: p.read_bytes() for p in notes}
    build(out, formats="obsidian", depth=5)
    result = build(out, formats="obsidian", depth=4)
    after = {p: p.read_bytes() for p in notes}
    changed = [p.name for p in notes if before[p] != after[p]]
    assert changed == [], changed
    assert result.notices == ()


def test_last_card_without_end_gets_it_back() -> None:
    # a block that runs to the end of the region without END (nothing after it)
    text, ids = synced(["paths/count"])
    cut = text.replace(f"<!--ID: {ids['paths/count']}-->\nEND\n",
                       f"<!--ID: {ids['paths/count']}-->\n")
    merged = merge_note(cut, note(["paths/count"]))
    assert merged.text == text and "had no END line" in merged.notices[0]


def test_generated_region_with_a_marker_is_refused() -> None:
    with pytest.raises(DeriveError, match="holds a region marker"):
        region("x", "<!--  derive:end x -->\n")


def test_a_renamed_note_is_found_and_updated_in_place(tmp_path: Path) -> None:
    from derive.studynotes.writer import build

    out = tmp_path / "vault"
    build(out, formats="obsidian", depth=2)
    folder = out / "obsidian"
    first_id = 1
    for path in sorted(folder.glob("*.md")):
        text, new = plugin_sync(path.read_text(), first_id)
        first_id += len(new)
        path.write_text(text)
    # the user renames "Gradient paths" to "ml/Paths through blocks", out of obsidian/;
    # Obsidian moves the file and updates every link to it; "Layer norm" goes to the trash
    (out / "ml").mkdir()
    renamed = out / "ml" / "Paths through blocks.md"
    (folder / "Gradient paths.md").rename(renamed)
    for path in folder.glob("*.md"):
        path.write_text(path.read_text().replace("[[Gradient paths", "[[Paths through blocks"))
    before = {p: p.read_bytes() for p in out.rglob("*.md")}
    ids_before = {i for p in before for i in plugin_fronts(p.read_text())}
    (out / ".trash").mkdir()
    (folder / "Layer norm.md").rename(out / ".trash" / "Layer norm.md")

    same = build(out, formats="obsidian", depth=2)
    assert not (folder / "Gradient paths.md").exists()
    assert same.written == (folder / "Layer norm.md",)  # a note in the trash is not kept
    assert len(same.notices) == 1
    assert "'Gradient paths', renamed; updated in place" in same.notices[0]
    assert str(renamed) in same.notices[0]
    (folder / "Layer norm.md").unlink()
    (out / ".trash" / "Layer norm.md").rename(folder / "Layer norm.md")  # restored, with IDs
    assert build(out, formats="obsidian", depth=2).written == ()
    assert {p: p.read_bytes() for p in out.rglob("*.md")} == before

    deeper = build(out, formats="obsidian", depth=3)  # the note's content changes
    assert not (folder / "Gradient paths.md").exists() and renamed in deeper.written
    text = renamed.read_text()
    assert "3 blocks" in text
    notes = [n for p in out.rglob("*.md") for n in parse_plugin_notes(p.read_text())]
    assert {n.note_id for n in notes} - {None} == ids_before - {None}  # every ID kept
    keys_without_id = [n.key for n in notes if n.note_id is None]
    assert keys_without_id == ["gradient-paths/terms-3"]  # only the new card
    assert "[[Gradient paths" not in "".join(p.read_text() for p in out.rglob("*.md"))


def test_derive_notes_prints_what_it_did(tmp_path: Path, capsys) -> None:
    from derive.commands.cli import main

    out = tmp_path / "vault"
    args = ["notes", "--format", "obsidian", "--depth", "2", "--out", str(out)]
    with pytest.raises(SystemExit):
        main(args)
    target = out / "obsidian" / "Layer norm.md"
    mine = "START\nBasic\nMy question?\nBack:\nMine.\n<!--ID: 77-->\nEND\n"
    target.write_text(target.read_text().replace("<!-- derive:end anki -->",
                                                 mine + "<!-- derive:end anki -->"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(args)
    printed = capsys.readouterr().out.splitlines()
    assert done.value.code == 0
    said = [line for line in printed if "derive did not write" in line]
    assert len(said) == 1 and str(target) in said[0] and "(ID 77)" in said[0]
    assert plugin_fronts(target.read_text())[77] == "My question?"


def test_a_note_that_is_not_utf8_is_one_line(tmp_path: Path, capsys) -> None:
    from derive.commands.cli import main

    out = tmp_path / "vault"
    args = ["notes", "--format", "obsidian", "--depth", "2", "--out", str(out)]
    with pytest.raises(SystemExit):
        main(args)
    target = out / "obsidian" / "Layer norm.md"
    target.write_bytes(target.read_bytes() + "caf\xe9 au lait\n".encode("latin-1"))
    before = target.read_bytes()
    capsys.readouterr()
    for extra in ([], ["--force"]):
        with pytest.raises(SystemExit) as done:
            main([*args, *extra])
        err = [line for line in capsys.readouterr().err.splitlines()
               if not line.endswith(" ...")]
        assert done.value.code == 2 and len(err) == 1, err
        lines = before.count(b"\n")
        assert f"{target}, line {lines}: not UTF-8 text (byte 0xe9)" in err[0]
        assert "--force" not in err[0] and target.read_bytes() == before


# -- property: whatever the edits, no ID is ever dropped -----------------------------------

EDITS = ("drop-key", "drop-end", "lead", "trailing", "own-card", "delete-pair", "crlf", "bom")
ALL_IDS = re.compile(r"ID: (\d+)")


#: edit -> the lines it may apply to
TARGETS = {
    "drop-key": lambda line: line.startswith("<!-- card: "),
    "drop-end": lambda line: line == "END",
    "lead": lambda line: line.startswith("<!-- card: "),
    "trailing": lambda line: line.startswith("<!-- "),
    "own-card": lambda line: line.startswith("<!-- derive:end "),
    "delete-pair": lambda line: line.startswith("<!--ID: "),
}


def _edit(text: str, edit: str, pick: int) -> str:
    """``text`` after one edit that users or editors make (on the pick-th line it fits)."""
    if edit == "crlf":
        return text.replace("\n", "\r\n")
    if edit == "bom":
        return text if text.startswith("\ufeff") else "\ufeff" + text
    lines = text.split("\n")
    found = [i for i, line in enumerate(lines) if TARGETS[edit](line)]
    if not found:
        return text
    i = found[pick % len(found)]
    if edit in ("drop-key", "drop-end"):
        del lines[i]
    elif edit == "lead":
        lines.insert(i + 1, "my reminder")
    elif edit == "trailing":
        lines[i] += " \t"
    elif edit == "own-card":
        mine = max([9000, *map(int, ALL_IDS.findall(text))]) + 1  # IDs are unique
        lines[i:i] = ["START", "Basic", f"Mine {mine}?", "Back:", "Yes.", f"<!--ID: {mine}-->",
                      "END"]
    else:  # the plugin's DELETE line in place of the lines of the card that holds the ID
        start = max((j for j in range(i) if lines[j] == "START"), default=-1)
        if start < 0 or any(ln == "END" or ln.startswith("<!-- ") for ln in lines[start:i]):
            return text
        end = next((j for j in range(i, len(lines)) if lines[j] == "END"), i)
        lines[start : end + 1] = ["DELETE", lines[i]]
    return "\n".join(lines)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.permutations(POOL).flatmap(
    lambda keys: st.integers(1, len(keys)).map(lambda n: keys[:n])),
    st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, 20)), max_size=3)),
    min_size=1, max_size=4))
def test_no_id_is_ever_dropped(generations) -> None:
    text: str | None = None
    next_id = 1
    for keys, edits in generations:
        if text is not None:
            for edit, pick in edits:
                text = _edit(text, edit, pick)
        before = set(ALL_IDS.findall(text or ""))
        try:
            merged = merge_note(text, note(keys))
        except BrokenNote:
            pytest.fail(f"a fault an editor makes stopped the merge: {edits}")
        after = set(ALL_IDS.findall(merged.text))
        assert before <= after, (edits, before - after)
        again = merge_note(merged.text, note(keys))
        assert set(ALL_IDS.findall(again.text)) == after
        plugin_fronts(merged.text.replace("\r\n", "\n").lstrip("\ufeff"))  # no ID on two notes
        text, new_ids = plugin_sync(merged.text.replace("\r\n", "\n"), next_id)
        next_id += len(new_ids)


def test_own_card_in_the_orphan_region_moves_below_it() -> None:
    text, ids = synced()
    orphaned = merge_note(text, note(["paths/count", "paths/order"])).text
    mine = "START\nBasic\nMine?\nBack:\nYes.\n<!--ID: 555-->\nEND\n"
    edited = orphaned.replace(f"<!-- derive:end {ORPHANS} -->",
                              mine + f"<!-- derive:end {ORPHANS} -->")
    merged, again = regenerate_twice(edited, ["paths/count", "paths/order"])
    assert len(merged.notices) == 1 and again.notices == ()
    assert merged.text.split(f"<!-- derive:end {ORPHANS} -->\n", 1)[1].startswith("\n" + mine)
    back = merge_note(merged.text, note(KEYS))  # the orphan comes home; the region goes
    assert f"derive:begin {ORPHANS}" not in back.text and mine in back.text
    assert_ids_with_their_cards(back.text, ids)
    assert plugin_fronts(back.text)[555] == "Mine?"


def test_a_keyless_copy_of_a_card_with_another_id_is_kept() -> None:
    text, ids = synced(["paths/count"])
    copy = CARDS["paths/count"].block(4242).split("\n", 1)[1]  # without its key line
    edited = text.replace("<!-- derive:end anki -->", copy + "<!-- derive:end anki -->")
    merged, again = regenerate_twice(edited, ["paths/count"])
    assert ("a second block of card 'paths/count', without its key line, holds ID 4242 "
            "(the card keeps ID 101, of line 10): moved out of region 'anki'") in \
        merged.notices[0]
    assert keyed_ids(merged.text) == ids and "<!--ID: 4242-->" in merged.text
    # a copy is not a card that is no longer generated: it is moved out, and said once
    assert merged.orphaned == again.orphaned == () and again.notices == ()
    assert copy in merged.text.split("<!-- derive:end anki -->\n", 1)[1]
