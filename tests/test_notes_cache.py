"""The cache of derived notes: a second build reads it and writes the same bytes, and
nothing in the cache folder ever runs: planted pickles, folders and entries that are
not the user's own, entries of the wrong type, cut short or of another key."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import derive.studynotes.worker as worker_mod
import derive.studynotes.writer as notes_mod
from derive.errors import DeriveError
from derive.studynotes import cache as notes_cache
from derive.studynotes.options import NotesOptions
from tests.cli_runner import invoke

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

#: A small set of notes with a figure, text and cards.
OPTIONS = NotesOptions.of(concepts=["layer-norm", "pre-vs-post-norm"], depths=[10],
                          blocks=["pre"])
FORMATS = ("markdown", "anki")
#: Every kind of entry a build of FORMATS keeps.
KINDS = ["cards", "figures", "markdown"]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


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
    entries = sorted((tmp_path / "cache").iterdir())
    assert [p.name.split("-")[0] for p in entries] == [
        "cards", "figures", "latex", "markdown", "obsidian"]
    for entry in entries:  # data, recording the key it was stored under
        key = json.loads(entry.read_bytes())["key"]
        assert key["depth"] == 4 and key["source"] == notes_cache.source_digest()
        assert key["versions"]["sympy"] and key["options"]["depths"] == [10, 50]
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


# ---------------------------------------------------------------- what an entry may be


def _build(tmp_path: Path, name: str, depth: int = 2, **kwargs: object) -> dict[str, bytes]:
    notes_mod.build(tmp_path / name, formats=FORMATS, depth=depth, options=OPTIONS, **kwargs)
    return _tree(tmp_path / name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """The files of the small notes built without a cache."""
    return _build(tmp_path_factory.mktemp("reference"), "out", cache=False)


@pytest.fixture
def derived(monkeypatch) -> list[tuple]:
    """The builds that derived (missed the cache), as they call the worker."""
    calls: list[tuple] = []
    real = worker_mod.start

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_mod, "start", counted)
    return calls


@pytest.fixture
def cached(tmp_path, monkeypatch, derived, reference) -> Path:
    """A cache folder that holds the small notes' entries (one build derived them)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(folder))
    assert _build(tmp_path, "first") == reference and len(derived) == 1
    assert _build(tmp_path, "hit") == reference and len(derived) == 1  # a hit
    derived.clear()
    return folder


def _entries(folder: Path) -> dict[str, Path]:
    found = {p.name.split("-")[0]: p for p in folder.iterdir() if p.name.endswith(".json")}
    assert sorted(found) == KINDS
    return found


def _planted(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when it is loaded."""

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {shlex.quote(str(marker))}",))

    return pickle.dumps(Planted())


def test_the_planted_pickle_would_run_if_loaded(tmp_path):
    pickle.loads(_planted(tmp_path / "ran"))  # the fixture is a real attack
    assert (tmp_path / "ran").exists()


def test_a_pickle_planted_under_every_entry_name_never_runs(tmp_path, cached, derived,
                                                            reference):
    marker = tmp_path / "ran"
    old = {cached / f"{kind}-{'0' * 32}.pickle" for kind in ("content", "figures")}
    for path in [*_entries(cached).values(), *old]:
        path.write_bytes(_planted(marker))
    assert _build(tmp_path, "again") == reference
    assert not marker.exists() and len(derived) == 1  # not used: derived anew
    for entry in _entries(cached).values():  # and replaced by data
        assert json.loads(entry.read_bytes())["key"]["depth"] == 2
    assert all(path.read_bytes() == _planted(marker) for path in old)  # not derive's: kept
    assert not marker.exists()


def _group_writable(folder: Path) -> None:
    folder.chmod(0o770)


def _world_writable(folder: Path) -> None:
    folder.chmod(0o777)


def _sticky_world_writable(folder: Path) -> None:
    folder.chmod(0o1777)


def _a_symbolic_link(folder: Path) -> None:
    real = folder.with_name("real-cache")
    folder.rename(real)
    folder.symlink_to(real)


def _another_users(folder: Path) -> None:
    if not ROOT:
        pytest.skip("only root can give a folder to another user")
    os.chown(folder, 65534, 65534)


@pytest.mark.parametrize("make, reason", [
    (_group_writable, "is writable by group or others (mode 0770)"),
    (_world_writable, "is writable by group or others (mode 0777)"),
    (_sticky_world_writable, "is writable by group or others (mode 1777)"),
    (_a_symbolic_link, "is a symbolic link, which derive does not follow"),
    (_another_users, "is owned by uid 65534, not by you"),
])
def test_a_folder_that_is_not_the_users_alone_is_not_used(tmp_path, cached, derived,
                                                          reference, make, reason):
    marker = tmp_path / "ran"
    for entry in _entries(cached).values():
        entry.write_bytes(_planted(marker))
    make(cached)
    before = _tree(cached.resolve())
    result = notes_mod.build(tmp_path / "again", formats=FORMATS, depth=2, options=OPTIONS)
    assert _tree(tmp_path / "again") == reference and not marker.exists()
    assert len(derived) == 1  # derived without the cache
    (warning,) = result.warnings
    assert warning.startswith(f"cache folder {cached} {reason}") and "\n" not in warning
    assert _tree(cached.resolve()) == before  # neither read nor written


def test_the_command_says_once_why_it_does_not_use_a_folder(tmp_path, monkeypatch,
                                                            capsysbinary):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)
    monkeypatch.setenv("DERIVE_CACHE_DIR", str(folder))
    code, out, err = invoke(capsysbinary, "notes", "--format", "anki", "--depth", "2",
                            "--concepts", "layer-norm", "--out", str(tmp_path / "n"))
    lines = [line for line in err.splitlines() if "cache folder" in line]
    assert code == 0 and "wrote 1 file" in out and "Traceback" not in err
    assert lines == [f"derive: cache folder {folder} is writable by group or others "
                     "(mode 0777): not using it (the notes are derived without it)"]
    assert list(folder.iterdir()) == []


def _writable_by_others(entry: Path) -> None:
    entry.chmod(0o666)


def _a_link_to_a_good_entry(entry: Path) -> None:
    copy = entry.with_name("elsewhere")
    shutil.copy(entry, copy)
    entry.unlink()
    entry.symlink_to(copy)


def _of_another_user(entry: Path) -> None:
    if not ROOT:
        pytest.skip("only root can give a file to another user")
    os.chown(entry, 65534, 65534)


def _cut_short(entry: Path) -> None:
    entry.write_bytes(entry.read_bytes()[:100])


def _of_the_wrong_type(entry: Path) -> None:
    document = json.loads(entry.read_bytes())
    document["value"] = 42
    entry.write_text(json.dumps(document))


def _a_plain_number(entry: Path) -> None:
    entry.write_text("42")


def _a_folder(entry: Path) -> None:
    entry.unlink()
    entry.mkdir()


@pytest.mark.parametrize("spoil", [_writable_by_others, _a_link_to_a_good_entry,
                                   _of_another_user, _cut_short, _of_the_wrong_type,
                                   _a_plain_number])
@pytest.mark.parametrize("kind", KINDS)
def test_an_entry_that_is_not_what_derive_stores_is_ignored_and_replaced(
        tmp_path, cached, derived, reference, spoil, kind):
    entry = _entries(cached)[kind]
    spoil(entry)
    assert _build(tmp_path, "again") == reference and len(derived) == 1
    info = entry.lstat()
    assert entry.is_file() and not entry.is_symlink() and info.st_mode & 0o077 == 0
    assert info.st_uid == os.geteuid() and json.loads(entry.read_bytes())["value"]
    assert _build(tmp_path, "hit") == reference and len(derived) == 1  # used again


def test_a_folder_under_an_entry_name_costs_nothing(tmp_path, cached, derived, reference):
    _a_folder(_entries(cached)["cards"])
    assert _build(tmp_path, "again") == reference and len(derived) == 1


def test_an_entry_of_another_depth_under_this_key_is_not_used(tmp_path, cached, derived,
                                                              reference):
    two = _entries(cached)
    _build(tmp_path, "three", depth=3)
    three = {kind: path for kind, path in ((p.name.split("-")[0], p) for p in cached.iterdir())
             if path not in two.values()}
    assert sorted(three) == KINDS
    for kind in KINDS:  # each depth-3 entry copied under its depth-2 name
        shutil.copy(three[kind], two[kind])
    derived.clear()
    assert _build(tmp_path, "again") == reference and len(derived) == 1
    assert all(json.loads(two[k].read_bytes())["key"]["depth"] == 2 for k in KINDS)


@pytest.mark.parametrize("document", [
    "42", "[]", "null", '{"derive notes cache": 1}', "[" * 100000 + "]" * 100000,
    '{"derive notes cache": 2, "key": KEY, "value": {}}',
    '{"derive notes cache": 1, "key": KEY, "value": VALUE, "more": 1}',
])
def test_documents_derive_does_not_write_are_none(tmp_path, document):
    folder, _ = notes_cache.open_folder(tmp_path)
    inputs = {"depth": 2, "options": {}, "templates": None}
    folder.store("markdown", inputs, {"markdown/notes.md": "text"})
    (entry,) = tmp_path.glob("markdown-*.json")
    key = json.dumps(folder.key("markdown", inputs))
    entry.write_text(document.replace("KEY", key).replace("VALUE", '{"markdown/notes.md": "x"}'))
    assert folder.load("markdown", inputs) is None
    folder.close()


@pytest.mark.parametrize("kind, value", [
    ("markdown", {"../notes.md": "escapes its folder"}),
    ("markdown", {"latex/notes.tex": "another format's file"}),
    ("markdown", {"markdown/notes.md": 3}),
    ("obsidian", ["not", "a", "mapping"]),
    ("cards", [{"key": "a/b", "front": "F", "back": "B", "tags": "derive", "style": "Basic"}]),
    ("cards", [{"key": "a b", "front": "F", "back": "B", "tags": [], "style": "Basic"}]),
    ("cards", [{"key": "a/b", "front": "F", "back": "B", "tags": ["x"], "style": "Basic",
                "more": 1}]),
    ("cards", [{"key": "a/b", "front": "F", "back": "B", "tags": ["x"], "style": "Basic"}]),
    ("figures", {"a": {"png": "!!not base64!!", "pdf": "JVBERi0="}}),
    ("figures", {"a": {"png": "JVBERi0=", "pdf": "JVBERi0="}}),  # a PDF where a PNG goes
    ("figures", {"../a": {"png": "iVBORw0KGgo=", "pdf": "JVBERi0="}}),
    ("figures", {"a": {"png": "iVBORw0KGgo="}}),
])
def test_values_derive_does_not_store_are_none(tmp_path, kind, value):
    folder, _ = notes_cache.open_folder(tmp_path)
    inputs = {"depth": 2, "options": {}, "templates": "t"}
    key = folder.key(kind, inputs)
    (tmp_path / folder.name(key)).write_text(json.dumps(
        {"derive notes cache": 1, "key": key, "value": value}))
    assert folder.load(kind, inputs) is None
    folder.close()


def test_entries_are_keyed_by_every_input_and_by_derives_source(tmp_path, monkeypatch):
    folder, _ = notes_cache.open_folder(tmp_path)
    inputs = {"depth": 4, "options": {"tags": ["a"]}, "templates": "t"}
    folder.store("markdown", inputs, {"markdown/notes.md": "one"})
    assert folder.load("markdown", inputs) == {"markdown/notes.md": "one"}
    for other in ({**inputs, "depth": 3}, {**inputs, "options": {"tags": ["b"]}},
                  {**inputs, "templates": "u"}):
        assert folder.load("markdown", other) is None
    assert folder.load("latex", inputs) is None
    monkeypatch.setattr(notes_cache, "source_digest", lambda: "another version of derive")
    assert folder.load("markdown", inputs) is None
    folder.close()


def test_the_source_digest_covers_every_subpackage(tmp_path):
    package = Path(notes_cache.__file__).resolve().parents[1]
    copy = tmp_path / "derive"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = notes_cache.source_digest(copy)
    modules = sorted(copy.rglob("*.py"))
    assert {p.parent.name for p in modules} >= {"blocks", "studynotes", "files", "deck"}
    for module in modules:  # a change anywhere, however deep, changes the key
        original = module.read_bytes()
        module.write_bytes(original + b"\n")
        notes_cache.source_digest.cache_clear()
        assert notes_cache.source_digest(copy) != before, module
        module.write_bytes(original)
    notes_cache.source_digest.cache_clear()
    assert notes_cache.source_digest(copy) == before


def test_an_edited_template_is_rendered_anew(tmp_path, monkeypatch, derived):
    from derive.rendering.render import template_dir

    monkeypatch.setenv("DERIVE_CACHE_DIR", str(tmp_path / "cache"))
    templates = tmp_path / "templates"
    shutil.copytree(template_dir(), templates)
    first = _build(tmp_path, "first", templates=templates)
    note = templates / "notes.md.j2"
    note.write_text(note.read_text() + "\nan edited template\n")
    again = _build(tmp_path, "again", templates=templates)
    assert b"an edited template" in again["markdown/notes.md"]
    assert b"an edited template" not in first["markdown/notes.md"]
    assert again["anki/derive.apkg"] == first["anki/derive.apkg"]


# ---------------------------------------------------------------- what is removed


def _stored(folder: notes_cache.CacheFolder, depth: int) -> Path:
    inputs = {"depth": depth, "options": {}, "templates": None}
    folder.store("cards", inputs, ())
    return folder.path / folder.name(folder.key("cards", inputs))


def test_pruning_removes_only_derives_oldest_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(notes_cache, "KEEP", 3)
    mine = {"notes.pickle": b"the user's", "cards-" + "0" * 31 + ".json": b"short name",
            "cards-" + "0" * 32 + ".json.bak": b"a copy", "content-" + "0" * 32 + ".pickle":
            b"an old name", ".cards-" + "0" * 32 + ".tmp": b"not derive's temporary name",
            "mine.json": b"{}"}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
        os.utime(tmp_path / name, (0, 0))  # older than any entry
    (tmp_path / "sub").mkdir()
    folder, _ = notes_cache.open_folder(tmp_path)
    kept = []
    for depth in range(1, 6):
        kept.append(_stored(folder, depth))
        os.utime(kept[-1], (depth, depth))  # stored in order, whatever the clock's resolution
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*mine, "sub", *(p.name for p in kept[2:])])
    assert all((tmp_path / name).read_bytes() == data for name, data in mine.items())
    assert [folder.load("cards", {"depth": d, "options": {}, "templates": None})
            for d in range(1, 6)] == [None, None, (), (), ()]
    folder.close()


def _temporary(folder: Path, pid: int) -> Path:
    path = folder / f".cards-{'a' * 32}.json.{pid}-{'b' * 16}.tmp"
    path.write_bytes(b"half an entry")
    return path


def test_temporary_files_of_runs_that_are_gone_are_removed(tmp_path):
    gone = _temporary(tmp_path, 999999999)
    old = _temporary(tmp_path, os.getpid()).rename(tmp_path / f".cards-{'c' * 32}.json."
                                                    f"{os.getpid()}-{'d' * 16}.tmp")
    os.utime(old, (0, 0))  # a process number in use again, but a day old
    writing = _temporary(tmp_path, os.getpid())  # this run is writing it
    others = [tmp_path / ".notes.md.tmp", tmp_path / f".cards-{'a' * 32}.json.x-y.tmp"]
    for path in others:
        path.write_bytes(b"the user's")
        os.utime(path, (0, 0))
    folder, warning = notes_cache.open_folder(tmp_path)
    assert warning is None and not gone.exists() and not old.exists()
    assert writing.exists() and all(path.exists() for path in others)
    folder.close()


def test_a_run_killed_at_the_rename_leaves_a_temporary_file_the_next_run_removes(tmp_path):
    program = textwrap.dedent(f"""\
        import os, signal
        from pathlib import Path
        from derive.studynotes import cache
        folder, _ = cache.open_folder(Path({str(tmp_path)!r}))
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        folder.store("cards", {{"depth": 2, "options": {{}}, "templates": None}}, ())
        """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, check=False)
    assert done.returncode == -signal.SIGKILL
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".cards-") and left.name.endswith(".tmp")
    folder, _ = notes_cache.open_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []
    folder.close()


# ---------------------------------------------------------------- other files read back


def test_no_file_derive_reads_back_runs_code(tmp_path, reference):
    out, marker = tmp_path / "out", tmp_path / "ran"
    out.mkdir()
    (out / ".derive-journal.999999999.json").write_bytes(_planted(marker))  # a journal
    (out / ".derive-manifest.json").write_bytes(_planted(marker))
    with pytest.raises(DeriveError, match="is not a derive manifest"):
        _build(tmp_path, "out", cache=False)
    assert not marker.exists()
    files = _build(tmp_path, "out", cache=False, force=True)
    assert not marker.exists()
    assert {k: v for k, v in files.items() if not k.startswith(".")} == {
        k: v for k, v in reference.items() if not k.startswith(".")}
    assert json.loads(files[".derive-manifest.json"])
