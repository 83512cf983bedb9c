"""derive notes options and derive.toml: tags, deck, style, names, concepts, blocks, depths."""

from __future__ import annotations

import io
import re
import sqlite3
import zipfile
from pathlib import Path

import pytest

import derive.studynotes.writer as notes_mod
from derive.commands.cli import main
from derive.deck.apkg import apkg_bytes
from derive.deck.cards import Card, parse_plugin_notes
from derive.errors import DeriveError
from derive.studynotes.options import NotesOptions, read_config, resolve

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def _deck(path: Path, tmp_path: Path) -> sqlite3.Connection:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as deck:
        data = deck.read("collection.anki2")
    db = tmp_path / "collection.anki2"
    db.write_bytes(data)
    return sqlite3.connect(db)


def test_tags_deck_and_names_reach_the_vault_and_the_deck(tmp_path, capsys):
    out = tmp_path / "vault"
    code, _, err = _run(["notes", "--format", "all", "--depth", "2", "--out", str(out),
                         "--tags", "ml WS2526", "--deck", "ML::Residual",
                         "--name", "residual-block=nn residual block"], capsys)
    assert code == 0, err
    assert (out / "obsidian/nn residual block.md").is_file()
    assert not (out / "obsidian/Residual block.md").exists()
    targets = set()
    for note in (out / "obsidian").glob("*.md"):
        text = note.read_text()
        targets |= set(re.findall(r"\[\[([^\]|]+)", text))
        for parsed in parse_plugin_notes(text):
            assert parsed.tags == ("ml", "WS2526")  # the student's tags, in place of derive's
    assert "nn residual block" in targets and "Residual block" not in targets
    assert targets <= {p.stem for p in (out / "obsidian").glob("*.md")}
    with _deck(out / "anki/derive.apkg", tmp_path) as db:
        (decks,) = db.execute("select decks from col").fetchone()
        tags = [row[0] for row in db.execute("select tags from notes")]
    assert "ML::Residual" in decks
    assert tags and all(t.split() == ["ml", "WS2526"] for t in tags)


def test_without_tags_each_card_keeps_derives_own(tmp_path):
    out = tmp_path / "o"
    notes_mod.notes(out, formats=("obsidian", "anki"), depth=2,
                    concepts=("gradient-paths", "layer-norm"))
    for concept, name in (("gradient-paths", "Gradient paths"), ("layer-norm", "Layer norm")):
        parsed = parse_plugin_notes((out / f"obsidian/{name}.md").read_text())
        assert parsed and all(p.tags == ("derive", concept) for p in parsed)
    with _deck(out / "anki/derive.apkg", tmp_path) as db:
        tags = {row[0].strip() for row in db.execute("select tags from notes")}
    assert tags == {"derive gradient-paths", "derive layer-norm"}


def test_name_of_a_note_the_vault_has_adds_derives_regions_to_it(tmp_path, capsys):
    out = tmp_path / "vault"
    own = out / "ML" / "nn residual block.md"
    own.parent.mkdir(parents=True)
    mine = ("# nn residual block\n\nRB(x) = x + Dropout(F(x)), from the lecture.\n\n"
            "START\nBasic\nWhat does the skip connection add?\nBack:\nThe input.\n"
            "Tags: ml WS2526\n<!--ID: 1690000000001-->\nEND\n")
    own.write_text(mine)
    args = ["notes", "--format", "obsidian", "--depth", "2", "--out", str(out),
            "--tags", "ml WS2526", "--name", "residual-block=nn residual block"]
    code, printed, err = _run(args, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.rglob("nn residual block.md")) == ["nn residual block.md"]
    assert not (out / "obsidian" / "nn residual block.md").exists()
    text = own.read_text()
    assert text.startswith(mine + "\n<!-- derive:begin note -->\n")  # the student's text as it was
    parsed = parse_plugin_notes(text)
    assert [p.note_id for p in parsed if p.key is None] == [1690000000001]
    assert {p.key.split("/")[0] for p in parsed if p.key} == {"residual-block"}
    assert f"{own}, derive's regions added below your text" in printed
    # the next run finds the note where it is and changes nothing
    code, printed, _ = _run(args, capsys)
    assert code == 0 and own.read_text() == text and "wrote 0 files" in printed
    assert "renamed" not in printed and not (out / "obsidian" / "nn residual block.md").exists()


@pytest.mark.parametrize("style, note_type, fields", [
    ("Basic reversed", "Basic (and reversed card)", ("Front", "Back")),
    ("cloze", "Cloze", ("Text", "Back Extra")),
])
def test_card_styles_in_the_plugin_format_and_the_deck(style, note_type, fields, tmp_path):
    out = tmp_path / "o"
    notes_mod.notes(out, formats=("obsidian", "anki"), depth=2, style=style,
                    concepts=("gradient-paths",))
    text = (out / "obsidian/Gradient paths.md").read_text()
    parsed = parse_plugin_notes(text)
    assert parsed and {p.note_type for p in parsed} == {note_type}
    assert all(tuple(p.fields) == fields for p in parsed)
    if note_type == "Cloze":
        assert all("{{c1::" in p.fields["Text"] and "}}" in p.fields["Text"] for p in parsed)
        # no '}}' inside a deletion, which would end it early
        for p in parsed:
            inner = p.fields["Text"].split("{{c1::", 1)[1].rsplit("}}", 1)[0]
            assert "}}" not in inner
    with _deck(out / "anki/derive.apkg", tmp_path) as db:
        (models,) = db.execute("select models from col").fetchone()
        (cards,) = db.execute("select count(*) from cards").fetchone()
    assert ('"type": 1' in models) == (note_type == "Cloze")
    assert cards == len(parsed) * (2 if "reversed" in note_type else 1)


def test_concepts_blocks_and_depths_choose_what_the_notes_hold(tmp_path):
    out = tmp_path / "o"
    notes_mod.notes(out, formats="markdown", depth=2, concepts="variance layer-norm",
                    blocks=["x + F(LN(x))"], depths="7, 20")
    text = (out / "markdown/notes.md").read_text()
    assert "## Layer norm" in text and "## Variance under initialization" in text
    assert "## Gradient paths" not in text and "## Residual block" not in text
    assert "Pre-LN, $h_k" in text and "No norm, $h_k" not in text and "Post-LN, $h_k" not in text
    assert "$q_{7}$" in text and "$q_{20}$" in text and "$q_{50}$" not in text
    # a link to a note left out is plain text
    assert "[[" not in text and "](#pre-vs-post-norm)" not in text


def test_project_file_in_the_output_folder_and_the_command_line_wins(tmp_path, capsys,
                                                                     monkeypatch):
    out = tmp_path / "vault"
    out.mkdir()
    (out / "derive.toml").write_text(
        '[notes]\ntags = ["ml", "WS2526"]\ndeck = "From file"\nformat = "anki"\ndepth = 2\n'
        'concepts = ["gradient-paths"]\n\n[notes.names]\ngradient-paths = "nn paths"\n')
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["notes", "--out", str(out), "--deck", "From flag"], capsys)
    assert code == 0, err
    assert "reading" in err and "derive.toml" in err
    assert (out / "anki/derive.apkg").is_file()
    with _deck(out / "anki/derive.apkg", tmp_path) as db:
        (decks,) = db.execute("select decks from col").fetchone()
        tags = {row[0] for row in db.execute("select tags from notes")}
    assert "From flag" in decks and "From file" not in decks
    assert tags and all(t.split() == ["ml", "WS2526"] for t in tags)
    assert not (out / "obsidian").exists()


def test_project_file_in_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "derive.toml").write_text('[notes]\ndeck = "Here"\n')
    monkeypatch.chdir(tmp_path)
    values, found = resolve({"deck": None}, tmp_path / "elsewhere")
    assert values["deck"] == "Here" and found == tmp_path / "derive.toml"


@pytest.mark.parametrize("body, message", [
    ('[notes]\ndek = "x"\n', "unknown key notes.dek: allowed are format, depth, tags"),
    ('[notes]\nstyle = "Fancy"\n', "style 'Fancy' is not allowed: choose one of Basic, "
                                   "Basic reversed, Cloze"),
    ('[notes]\ntags = "ml!"\n', "notes.tags: 'ml!' is not a tag"),
    ('[notes]\ndepths = [0]\n', "notes.depths: 0 is not an integer from 1 to 200"),
    ('[notes]\nconcepts = ["resnet"]\n', "unknown concept 'resnet': choose among residual-block"),
    ('[notes]\nblocks = ["x + F(x)/2"]\n', "unknown block 'x + F(x)/2': choose among none"),
    ('[notes.names]\nvariance = "a/b"\n', "names.variance: 'a/b' is not a note name"),
    ('[notes]\ndeck = ""\n', "notes.deck must be one line of text"),
    ('[notes]\nformat = "pdf"\n', "notes.format = 'pdf' is not allowed: choose among latex"),
    ('[notes]\ndepth = 11\n', "notes.depth = 11 is not allowed: an integer from 1 to 10"),
    ("[notes\n", "not valid TOML"),
    ('[other]\nx = 1\n', "unknown table or key 'other'"),
])
def test_bad_project_file_is_one_line_naming_the_key_and_exit_2(body, message, tmp_path,
                                                                  capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "derive.toml").write_text(body)
    code, _, err = _run(["notes", "--format", "anki", "--out", str(out)], capsys)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "anki").exists()


@pytest.mark.parametrize("argv, message", [
    (["--style", "Fancy"], "style 'Fancy' is not allowed: choose one of Basic"),
    (["--tags", "a b!"], "tags: 'b!' is not a tag"),
    (["--name", "residual-block"], "must read CONCEPT=NOTE NAME"),
    (["--name", "resnet=x"], "names: unknown concept 'resnet'"),
    (["--depths", "10,500"], "depths: '500' is not an integer from 1 to 200"),
    (["--blocks", "mid"], "blocks: unknown block 'mid'"),
    (["--concepts", ""], "concepts must name at least one of"),
    (["--config", "/nonexistent/derive.toml"], "config file /nonexistent/derive.toml does "
                                               "not exist"),
])
def test_bad_options_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    code, _, err = _run(["notes", *argv, "--out", str(tmp_path / "never")], capsys)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_help_lists_the_options(capsys):
    code, out, _ = _run(["notes", "--help"], capsys)
    assert code == 0
    for option in ("--tags", "--deck", "--style", "--name", "--concepts", "--blocks",
                   "--depths", "--config", "derive.toml"):
        assert option in out, option


def test_api_raises_derive_error():
    with pytest.raises(DeriveError, match="unknown option 'colour'"):
        NotesOptions.of(colour="red")
    with pytest.raises(DeriveError, match="two concepts share a note name"):
        NotesOptions.of(names={"variance": "Layer norm"})
    with pytest.raises(DeriveError, match="style"):
        Card("a/b", "Q", "A", style="Fancy")
    assert read_config.__doc__


def test_reversed_and_cloze_decks_are_reproducible():
    cards = [Card("a/x", "Q?", "$x_{a_{1}}$", style="Cloze"),
             Card("a/y", "Q?", "A", style="Basic (and reversed card)")]
    assert apkg_bytes(cards) == apkg_bytes(cards)
