"""A student's vault as users, editors and sync tools leave it: no card or Anki ID lost or hidden.

Each case starts from derive's notes as the Obsidian_to_Anki plugin left
them after a sync (IDs added by the plugin's own rule, ``plugin_sync``), does
what a user or a sync tool does (rename and copy a note, delete a START line,
copy a card with its ID), regenerates, and checks the outcome against the
text as the plugin reads it (``plugin_fronts``, independent of derive's
parser) and the one line that says what happened.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from test_anki import CARDS, keyed_ids, note, plugin_sync
from test_note_faults import KEYS, plugin_fronts, synced

from derive.studynotes.options import NotesOptions
from derive.studynotes.writer import build
from derive.vault.regions import ORPHANS, merge_note

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

ALL_IDS = re.compile(r"ID: (\d+)")


def _sync_vault(out: Path, first_id: int = 1) -> int:
    """Add the plugin's ID lines to every note of ``out`` that lacks them; the next free ID."""
    for path in sorted(out.rglob("*.md")):
        text, new = plugin_sync(path.read_text(), first_id)
        first_id += len(new)
        path.write_text(text)
    return first_id


@pytest.fixture(scope="module")
def synced_template(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("template") / "vault"
    build(out, formats="obsidian", depth=2)
    _sync_vault(out)
    return out


@pytest.fixture
def vault(synced_template: Path, tmp_path: Path) -> Path:
    """derive's notes at depth 2, every card synced by the plugin (an ID each)."""
    out = tmp_path / "vault"
    shutil.copytree(synced_template, out)
    return out


def _ids_on_disk(out: Path) -> dict[Path, dict[int, str]]:
    return {p: plugin_fronts(p.read_text()) for p in sorted(out.rglob("*.md"))}


def _block(text: str, key: str) -> str:
    found = re.search(rf"<!-- card: {re.escape(key)} -->\n(?:.*\n)*?END\n", text)
    assert found is not None, key
    return found.group(0)


# -- a renamed note that also has a copy -----------------------------------------------


def test_renamed_and_copied_note_is_not_written_again_without_its_ids(vault: Path) -> None:
    folder = vault / "obsidian"
    # renamed in Obsidian, then "Make a copy" (or a sync conflict) of the renamed note
    (folder / "Layer norm.md").rename(folder / "LN.md")
    shutil.copy(folder / "LN.md", folder / "LN 1.md")
    before = _ids_on_disk(vault)
    result = build(vault, formats="obsidian", depth=2)
    assert not (folder / "Layer norm.md").exists()  # no third note, with cards and no IDs
    said = [n for n in result.notices if "not written" in n]
    assert len(said) == 1
    assert "'Layer norm'" in said[0] and str(folder / "LN.md") in said[0] \
        and str(folder / "LN 1.md") in said[0]
    repeated = [n for n in result.notices if "hold the same Anki ID" in n]
    assert len(repeated) == 1 and "card 'layer-norm/definition'" in repeated[0]
    assert _ids_on_disk(vault) == before  # every ID where it was, with its card
    assert result.orphaned == ()
    # the user keeps one of the two: it is the note, renamed, and updated in place
    (folder / "LN 1.md").unlink()
    kept = build(vault, formats="obsidian", depth=2)
    assert not (folder / "Layer norm.md").exists()
    assert [n for n in kept.notices if "renamed; updated in place" in n] == \
        [f"{folder / 'LN.md'}: the note 'Layer norm', renamed; updated in place "
         "(links to it follow the new name)"]


# -- a card whose START line was deleted -----------------------------------------------


def test_deleted_start_line_keeps_the_id_with_its_card() -> None:
    text, ids = synced()
    block = _block(text, "paths/order")
    broken = text.replace(block, block.replace("\nSTART\n", "\n", 1))
    merged = merge_note(broken, note(KEYS))
    assert merged.text == text  # START restored, the ID on its own card, nothing orphaned
    assert keyed_ids(merged.text) == ids and merged.orphaned == ()
    assert ORPHANS not in merged.text
    assert merged.notices == ("line 20: card 'paths/order' had no START line, so the plugin "
                              "no longer saw it; restored it (the card keeps ID 102)",)


def test_deleted_start_line_of_a_card_no_longer_generated_keeps_it_whole() -> None:
    text, ids = synced()
    block = _block(text, "variance/he")
    broken = text.replace(block, block.replace("\nSTART\n", "\n", 1))
    merged = merge_note(broken, note(["paths/count", "paths/order"]))
    assert merged.orphaned == ("variance/he",)
    assert plugin_fronts(merged.text)[ids["variance/he"]] == CARDS["variance/he"].front
    assert "card 'variance/he' had no START line" in merged.notices[0]


def test_deleted_start_line_is_said_with_the_note(vault: Path) -> None:
    target = vault / "obsidian" / "Layer norm.md"
    text = target.read_text()
    block = _block(text, "layer-norm/moment")
    note_id = int(ALL_IDS.search(block).group(1))
    target.write_text(text.replace(block, block.replace("\nSTART\n", "\n", 1)))
    result = build(vault, formats="obsidian", depth=2)
    assert target.read_text() == text
    assert len(result.notices) == 1 and result.notices[0].startswith(f"{target}, line ")
    assert "card 'layer-norm/moment' had no START line" in result.notices[0]
    assert f"keeps ID {note_id}" in result.notices[0]


# -- an ID on two cards ------------------------------------------------------------------


def test_a_card_copied_with_its_id_into_another_note_is_named_with_both(vault: Path) -> None:
    folder = vault / "obsidian"
    source = folder / "Gradient paths.md"
    block = _block(source.read_text(), "gradient-paths/count")
    note_id = int(ALL_IDS.search(block).group(1))
    target = folder / "Residual block.md"
    target.write_text(target.read_text().replace("<!-- derive:end anki -->",
                                                 block + "<!-- derive:end anki -->"))
    result = build(vault, formats="obsidian", depth=2)
    assert result.orphaned == ()  # the copy is not a card "no longer generated"
    repeated = [n for n in result.notices if "hold the same Anki ID" in n]
    assert repeated == [n for n in result.notices if str(note_id) in n and "same" in n]
    assert len(repeated) == 1
    assert str(source) in repeated[0] and str(target) in repeated[0]
    assert f"card 'gradient-paths/count' (ID {note_id}" in repeated[0]
    moved = [n for n in result.notices if "moved out of region" in n]
    assert len(moved) == 1 and str(target) in moved[0] and "'Gradient paths'" in moved[0]
    # nothing dropped: the ID is on both blocks still, the user chooses
    assert plugin_fronts(target.read_text())[note_id] == \
        plugin_fronts(source.read_text())[note_id]
    again = build(vault, formats="obsidian", depth=2)
    assert again.written == () and again.notices == tuple(repeated)


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_card_copied_with_its_id_in_one_note_is_one_line(where: str) -> None:
    text, ids = synced()
    block = _block(text, "paths/order")
    copied = (text.replace(block, block + "\n" + block) if where == "inside"
              else text + "\n" + block)
    merged = merge_note(copied, note(KEYS))
    assert merged.orphaned == ()
    assert len(merged.notices) == 1
    line = merged.notices[0]
    assert line.startswith(f"ID {ids['paths/order']} is on 2 cards of this note: "
                           "card 'paths/order' (line 20), card 'paths/order' (line ")
    assert ("moved the copy out of its region" in line) == (where == "inside")
    assert "no longer generated" not in line
    # the region holds the card once, with its ID; the copy is kept below, verbatim
    anki = merged.text.split("<!-- derive:begin anki -->", 1)[1].split("<!-- derive:end", 1)[0]
    assert anki.count("<!-- card: paths/order -->") == 1
    assert merged.text.count(block) == 2
    assert merge_note(merged.text, note(KEYS)).text == merged.text


def test_a_second_id_line_in_a_card_is_not_a_missing_end() -> None:
    text, ids = synced()
    doubled = text.replace(f"<!--ID: {ids['paths/order']}-->\n",
                           f"<!--ID: 900-->\n<!--ID: {ids['paths/order']}-->\n")
    merged = merge_note(doubled, note(KEYS))
    assert not any("no END line" in n for n in merged.notices)
    assert keyed_ids(merged.text) == ids  # the plugin's ID (the last line) stays with the card
    assert len(merged.notices) == 1 and "held two ID lines" in merged.notices[0]
    assert "ID 900 is kept on a line of its own" in merged.notices[0]
    assert "<!--ID: 900-->" in merged.text.split(f"<!-- derive:begin {ORPHANS} -->")[1]


def test_an_id_line_above_the_tags_is_not_a_missing_end() -> None:
    text, ids = synced()
    moved = text.replace(f"Tags: derive paths udl-11.6\n<!--ID: {ids['paths/order']}-->\n",
                         f"<!--ID: {ids['paths/order']}-->\nTags: derive paths udl-11.6\n")
    merged = merge_note(moved, note(KEYS))
    assert merged.text == text and merged.notices == ()


def test_no_id_moves_without_a_word() -> None:
    text, _ = synced()
    lone = text.replace("<!-- card: paths/order -->\nSTART\n", "<!-- x -->\nSTRT\n")
    merged = merge_note(lone, note(KEYS))  # key line and START gone: a lone ID line
    moved = {i for i in ALL_IDS.findall(merged.text.split(f"begin {ORPHANS}")[-1])}
    assert moved and all(any(f"ID {i}" in n for n in merged.notices) for i in moved)


# -- the round trip --depth 4, 5, 4 ------------------------------------------------------


def test_orphans_region_at_the_end_of_a_note_leaves_no_blank_line() -> None:
    text, _ = synced()
    without = merge_note(text, note(["paths/count", "paths/order"]))  # the last region
    assert without.text.endswith(f"<!-- derive:end {ORPHANS} -->\n")
    assert merge_note(without.text, note(KEYS)).text == text


def test_round_trip_depth_4_5_4_gives_every_note_back(tmp_path: Path) -> None:
    out = tmp_path / "vault"
    build(out, formats="obsidian", depth=4)
    _sync_vault(out)  # the plugin syncs: every card has its ID
    notes = sorted(out.rglob("*.md"))
    before = {p: p.read_bytes() for p in notes}
    build(out, formats="obsidian", depth=5)
    back = build(out, formats="obsidian", depth=4)
    assert sorted(out.rglob("*.md")) == notes
    assert [p.name for p in notes if p.read_bytes() != before[p]] == []
    assert back.notices == () and back.orphaned == ()


def test_round_trip_with_a_sync_after_each_run(tmp_path: Path) -> None:
    out = tmp_path / "vault"
    options = {"formats": "obsidian", "options": NotesOptions.of(concepts="gradient-paths")}
    build(out, depth=4, **options)
    next_id = _sync_vault(out)
    path = out / "obsidian" / "Gradient paths.md"
    first = path.read_text()
    build(out, depth=5, **options)
    _sync_vault(out, next_id)  # the depth-5 card gets an Anki note of its own
    back = build(out, depth=4, **options)
    assert back.orphaned == ("gradient-paths/terms-5",)  # its ID is kept, and said
    text = path.read_text()
    orphans = f"\n<!-- derive:begin {ORPHANS} -->\n"
    assert text.split(orphans)[0] == first  # the note as it was, the orphans region below
    block = _block(text, "gradient-paths/terms-5")
    assert plugin_fronts(text)[next_id].startswith(r"$\partial y/\partial f_1$ for 5 blocks")
    path.write_text(text.replace(block, ""))  # the student no longer wants that card
    build(out, depth=4, **options)
    assert path.read_text() == first
