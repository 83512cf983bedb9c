"""File faults: bad output folders, links, crashes half-way, edits saved while writing.

Every fault is found before the first byte is written and reported in one
line; a run killed between any two steps of an update (each rename and each
fsync, with the process gone as after SIGKILL) is recovered by the next
plain run, which takes derive's own files as its own and still refuses real
edits.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from derive.errors import DeriveError
from derive.files.writes import MANIFEST, FileConflict, write_files

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OLD = {"a.md": "one\n", "b.md": "bee\n", "sub/c.md": "see\n"}
NEW = {"a.md": "two\n", "b.md": "bee\n", "sub/c.md": "see 2\n", "sub/deeper/d.md": "new\n"}
#: What the next run writes (other options): derive's files from the killed run differ from it.
NEXT = {"a.md": "three\n", "b.md": "bee 3\n", "sub/c.md": "see 3\n", "sub/deeper/d.md": "new 3\n"}

#: A run of write_files that dies (os._exit, no clean-up, as SIGKILL) at the n-th call
#: of os.<kind>; with n = 0 it runs through and prints how many calls it made.
CHILD = """
import json, os, sys
from derive.files.writes import write_files
folder, kind, n, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
real, calls = getattr(os, kind), [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
        os._exit(9)
    return real(*args, **kwargs)
setattr(os, kind, dying)
write_files(folder, files)
print(calls[0])
"""


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")
                  if p.name.endswith(".tmp") or p.name.startswith(".derive-journal"))


def run_child(folder: Path, kind: str, n: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", CHILD, str(folder), kind, str(n),
                           json.dumps(NEW)], capture_output=True, text=True, env=env)


def calls_of(kind: str, tmp_path: Path) -> int:
    folder = tmp_path / f"count-{kind}"
    write_files(folder, OLD)
    done = run_child(folder, kind, 0)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.parametrize("kind", ["replace", "fsync"])
def test_a_run_killed_at_any_step_is_recovered(kind: str, tmp_path: Path) -> None:
    total = calls_of(kind, tmp_path)
    assert total >= 5  # the journal, four files, the manifest
    wanted = {rel: text.encode() for rel, text in NEW.items()}
    for n in range(1, total + 1):
        folder = tmp_path / f"{kind}-{n}"
        write_files(folder, OLD)
        killed = run_child(folder, kind, n)
        assert killed.returncode == 9, (n, killed.stderr)
        for rel, data in tree(folder).items():  # each file is old or new, never half
            if rel in NEW:
                assert data in (OLD.get(rel, "").encode(), wanted[rel]), (n, rel)
        report = write_files(folder, NEXT)  # a plain run: no conflict, no --force
        files = tree(folder)
        wanted_next = {rel: text.encode() for rel, text in NEXT.items()}
        assert {rel: files[rel] for rel in NEXT} == wanted_next
        recorded = json.loads(files[MANIFEST])
        assert recorded == {rel: hashlib.sha256(data).hexdigest()
                            for rel, data in wanted_next.items()}, n
        assert leftovers(folder) == [], (n, leftovers(folder))
        assert report.written == tuple(sorted(NEXT))
        assert write_files(folder, NEXT).written == ()
        (folder / "a.md").write_text("three, with my notes\n")  # a real edit is still refused
        with pytest.raises(FileConflict):
            write_files(folder, NEW)


@pytest.mark.parametrize("kind", ["replace", "fsync"])
def test_a_full_disk_half_way_is_recovered(kind: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = getattr(os, kind)
    total = calls_of(kind, tmp_path)
    for n in range(1, total + 1):
        folder = tmp_path / f"{kind}-{n}"
        write_files(folder, OLD)
        calls = [0]

        def full(*args, _calls=calls, _n=n, **kwargs):
            _calls[0] += 1
            if _calls[0] == _n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)

        monkeypatch.setattr(os, kind, full)
        with pytest.raises(DeriveError) as caught:
            write_files(folder, NEW)
        assert "No space left on device" in str(caught.value) and "\n" not in str(caught.value)
        monkeypatch.setattr(os, kind, real)
        write_files(folder, NEXT)
        assert {rel: tree(folder)[rel] for rel in NEXT} == {r: t.encode() for r, t in NEXT.items()}
        assert leftovers(folder) == []


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    write_files(tmp_path, OLD)
    dead = tmp_path / "sub" / ".c.md.derive-999999999-abc.tmp"
    live = tmp_path / ".a.md.derive-1-abc.tmp"  # process 1 is alive
    mine = tmp_path / ".a.md.tmp"  # not derive's
    for path in (dead, live, mine):
        path.write_text("half\n")
    write_files(tmp_path, NEW)
    assert not dead.exists() and live.exists() and mine.exists()


def test_an_edit_saved_while_writing_is_kept(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, OLD)
    real = os.chmod

    def chmod(path, mode):  # between writing derive's temporary file and renaming it
        if Path(path).name.startswith(".a.md.derive-"):
            (tmp_path / "a.md").write_text("one, saved in the editor\n")
        return real(path, mode)

    monkeypatch.setattr(os, "chmod", chmod)
    with pytest.raises(FileConflict, match=r"a\.md: edited while derive was writing") as caught:
        write_files(tmp_path, NEW)
    assert "\n" not in str(caught.value)
    monkeypatch.undo()
    assert (tmp_path / "a.md").read_text() == "one, saved in the editor\n"
    assert (tmp_path / "sub/c.md").read_text() == "see 2\n"
    assert leftovers(tmp_path) == []
    with pytest.raises(FileConflict):  # now an edit like any other
        write_files(tmp_path, NEW)


def test_another_runs_write_meanwhile_is_not_an_edit(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, OLD)
    real = os.chmod
    other = tmp_path / ".derive-journal.1.json"  # a run of process 1, which is alive

    def chmod(path, mode):  # the other run renames its a.md into place meanwhile
        if Path(path).name.startswith(".a.md.derive-") and not other.exists():
            digest = hashlib.sha256(b"other run\n").hexdigest()
            other.write_text(json.dumps({"files": {"a.md": digest}}))
            (tmp_path / "a.md").write_text("other run\n")
        return real(path, mode)

    monkeypatch.setattr(os, "chmod", chmod)
    assert write_files(tmp_path, NEW).written == tuple(sorted(set(NEW) - {"b.md"}))
    monkeypatch.undo()
    assert (tmp_path / "a.md").read_text() == "two\n" and other.exists()
    other.unlink()


def test_symlinked_sub_folder_and_file_are_not_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    with pytest.raises(DeriveError, match=r"the folder .*out/sub is a symbolic link") as caught:
        write_files(out, NEW)
    assert "\n" not in str(caught.value)
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["sub"]
    (out / "sub").unlink()
    (out / "a.md").symlink_to(elsewhere / "x.md")
    with pytest.raises(DeriveError, match=r"the file .*out/a.md is a symbolic link"):
        write_files(out, NEW)
    assert list(elsewhere.iterdir()) == []


def test_the_output_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "vault"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    write_files(tmp_path / "link", OLD)
    assert (real / "a.md").read_text() == "one\n"


def _refused(out: str | Path, message: str, tmp_path: Path, force: bool = False) -> None:
    before = tree(tmp_path)
    with pytest.raises(DeriveError, match=message) as caught:
        write_files(out, OLD, force=force)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert tree(tmp_path) == before


def test_bad_output_folders_are_one_line_and_nothing_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _refused("", "output folder must not be empty", tmp_path)
    _refused(tmp_path / ("x" * 300), "File name too long", tmp_path)
    _refused(tmp_path / ("x" * 300) / "out", "File name too long", tmp_path)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    _refused(tmp_path / "loop1", "symbolic links", tmp_path)
    _refused(tmp_path / "loop1" / "out", "symbolic links", tmp_path)
    folder = tmp_path / "out"
    (folder / MANIFEST).mkdir(parents=True)
    for force in (False, True):
        _refused(folder, "manifest must be.*move it away", tmp_path, force=force)


def test_unreadable_sub_folder_is_one_line(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, OLD)
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.parent.name == "sub":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    before = {rel: real(tmp_path / rel) for rel in OLD}
    with pytest.raises(DeriveError, match=r"cannot read .*sub/c\.md: Permission denied"):
        write_files(tmp_path, NEW)
    monkeypatch.undo()
    assert {rel: (tmp_path / rel).read_bytes() for rel in OLD} == before


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from derive.commands.cli import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    return done.value.code, "".join(line for line in err.splitlines(keepends=True)
                                    if not line.endswith(" ...\n"))


@pytest.mark.parametrize("name", ["", "x" * 300, "loop1", "loop1/out"])
def test_notes_refuses_bad_out_at_once(name: str, tmp_path: Path, capsys,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    code, err = _cli(["notes", "--format", "markdown", "--depth", "2", "--out", name], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("derive: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop1", "loop2"]


def test_closed_pipe_exits_0() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for argv in (["paths", "--depth", "20"], ["paths", "--depth", "16", "--format", "json"]):
        with subprocess.Popen([sys.executable, "-m", "derive", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.read(10)
            proc.stdout.close()
            err = proc.stderr.read()
            assert proc.wait() == 0, err
            assert err == b""


def test_a_journal_with_foreign_paths_is_harmless(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_files(out, OLD)
    outside = tmp_path / "secret.txt"
    outside.write_text("not derive's\n")
    (out / "gone").mkdir()
    digest = hashlib.sha256(b"not derive's\n").hexdigest()
    (out / ".derive-journal.999999999.json").write_text(json.dumps(
        {"files": {"../secret.txt": digest, "gone": digest, "b.md": 5}}))
    write_files(out, NEW)
    assert set(json.loads((out / MANIFEST).read_text())) == set(NEW)
    assert leftovers(out) == [] and outside.read_text() == "not derive's\n"


KILL_NOTES = """
import os, signal, sys
from derive.commands.cli import main
real, calls, at = os.replace, [0], int(sys.argv[1])
def dying(*args):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
os.replace = dying
main(sys.argv[2:])
"""


def test_derive_notes_killed_before_its_manifest_is_recovered(tmp_path: Path) -> None:
    """SIGKILL after the renames of `derive notes --depth 5`, before its manifest is written."""
    from derive.studynotes.writer import build

    out = tmp_path / "vault"
    build(out, formats="obsidian", depth=4)
    manifest_before = (out / MANIFEST).read_bytes()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["notes", "--format", "obsidian", "--depth", "5", "--out", str(out)]
    # renames: the journal, the two files that change, then the manifest (4th)
    killed = subprocess.run([sys.executable, "-c", KILL_NOTES, "4", *args], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert (out / MANIFEST).read_bytes() == manifest_before  # the renames happened, not this
    assert list(out.glob(".derive-journal.*.json"))
    result = build(out, formats="obsidian", depth=4)  # a plain run, no --force
    assert out / "obsidian" / "figures" / "path-lengths.png" in result.written
    assert leftovers(out) == []
    assert build(out, formats="obsidian", depth=4).written == ()
