"""The cache of derived notes: a second build reads it and writes the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import derive.studynotes.worker as worker_mod
import derive.studynotes.writer as notes_mod
from derive.studynotes import cache as notes_cache
from tests.cli_runner import invoke


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_cached_build_writes_the_bytes_of_a_derived_one(tmp_path):
    env = dict(os.environ, DERIVE_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for name in ("derived", "cached"):
        runs.append(subprocess.run(
            [sys.executable, "-m", "derive", "notes", "--format", "all", "--out",
             str(tmp_path / name)], env=env, cwd=tmp_path, capture_output=True, text=True,
            check=True))
    assert "reading the derived notes" not in runs[0].stderr
    assert f"reading the derived notes from {tmp_path / 'cache'}" in runs[1].stderr
    assert "deriving" not in runs[1].stderr
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == [
        "content", "figures"]
    assert _tree(tmp_path / "cached") == _tree(tmp_path / "derived")


def test_a_hit_derives_nothing_and_other_options_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path / "cache"))
    first = notes_mod.build(tmp_path / "a", formats="anki", depth=2)

    def underived(*args, **kwargs):
        raise AssertionError("derived although cached")

    monkeypatch.setattr(worker_mod, "start", underived)
    said: list[str] = []
    again = notes_mod.build(tmp_path / "b", formats="anki", depth=2, progress=said.append)
    assert said[0].startswith("reading the derived notes from")
    assert (tmp_path / "b" / notes_mod.DECK).read_bytes() == first.files[0].read_bytes()
    assert [p.name for p in again.written] == ["derive.apkg"]
    with pytest.raises(AssertionError, match="derived although cached"):
        notes_mod.build(tmp_path / "c", formats="anki", depth=3)  # another depth: a miss
    with pytest.raises(AssertionError, match="derived although cached"):
        notes_mod.build(tmp_path / "d", formats="anki", depth=2, cache=False)


def test_entries_are_keyed_by_code_and_a_broken_entry_is_replaced(tmp_path, monkeypatch):
    notes_cache.store(tmp_path, "content", 4, "options", [1, 2])
    assert notes_cache.load(tmp_path, "content", 4, "options") == [1, 2]
    assert notes_cache.load(tmp_path, "content", 4, "other options") is None
    assert notes_cache.load(tmp_path, "figures", 4, "options") is None
    (entry,) = tmp_path.glob("content-*.pickle")
    entry.write_bytes(entry.read_bytes()[:5])  # cut short
    assert notes_cache.load(tmp_path, "content", 4, "options") is None
    notes_cache.store(tmp_path, "content", 4, "options", [3])
    assert notes_cache.load(tmp_path, "content", 4, "options") == [3]
    monkeypatch.setattr(notes_cache, "_code_digest", lambda: "another version of derive")
    assert notes_cache.load(tmp_path, "content", 4, "options") is None


def test_old_entries_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(notes_cache, "KEEP", 3)
    for depth in range(1, 6):
        notes_cache.store(tmp_path, "content", depth, None, depth)
        entry = notes_cache._path(tmp_path, "content", depth, None)
        os.utime(entry, (depth, depth))  # stored in order, whatever the clock's resolution
    assert len(list(tmp_path.glob("*.pickle"))) == 3
    assert [notes_cache.load(tmp_path, "content", d, None) for d in range(1, 6)] == [
        None, None, 3, 4, 5]


def test_a_cache_folder_that_cannot_be_written_costs_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(blocker))
    result = notes_mod.build(tmp_path / "n", formats="anki", depth=2)
    assert [p.name for p in result.written] == ["derive.apkg"]
    assert blocker.read_text().startswith("a file")


def test_no_cache_neither_reads_nor_keeps(tmp_path, monkeypatch, capsysbinary):
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = invoke(capsysbinary, "notes", "--format", "anki", "--depth", "2",
                          "--out", str(tmp_path / "n"), "--no-cache")
    assert code == 0 and "wrote 1 file" in out
    assert not (tmp_path / "cache").exists()  # not kept
    notes_mod.build(tmp_path / "m", formats="anki", depth=2)
    kept = sorted((tmp_path / "cache").iterdir())
    code, out, err = invoke(capsysbinary, "notes", "--format", "anki", "--depth", "2",
                            "--out", str(tmp_path / "o"), "--no-cache")
    assert code == 0 and "deriving" in err and "reading the derived notes" not in err
    assert sorted((tmp_path / "cache").iterdir()) == kept  # not read, nor written
    code, help_text, _ = invoke(capsysbinary, "notes", "--help")
    assert code == 0 and "--no-cache" in help_text and "~/.cache/derive" in help_text


def test_the_folder_follows_the_environment():
    assert notes_cache.cache_folder({"DERIVE_CACHE_DIR": "  "}) is None
    assert notes_cache.cache_folder({"DERIVE_CACHE_DIR": "/x/y"}) == Path("/x/y")
    assert notes_cache.cache_folder({"XDG_CACHE_HOME": "/c"}) == Path("/c/derive")
    assert notes_cache.cache_folder({}) == Path.home() / ".cache" / "derive"


def test_without_a_home_folder_there_is_no_cache(monkeypatch):
    def homeless() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(homeless))
    assert notes_cache.cache_folder({}) is None
    assert notes_cache.cache_folder({"XDG_CACHE_HOME": "/c"}) == Path("/c/derive")
