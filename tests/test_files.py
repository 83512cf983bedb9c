"""Safe output files: atomic writes, ownership by manifest, plan-then-write."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derive.commands import cli
from derive.errors import DeriveError
from derive.files.writes import MANIFEST, FileConflict, atomic_write, read_existing, write_files


def manifest(root: Path) -> dict[str, str]:
    return json.loads((root / MANIFEST).read_text(encoding="utf-8"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_writes_files_and_records_their_hashes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = write_files(out, {"b.md": "qₖ₋₁\r\nline\r", "sub/dir/c.pdf": b"%PDF\r\n\x00"})
    assert report.written == ("b.md", "sub/dir/c.pdf") and report.unchanged == ()
    assert (out / "b.md").read_bytes() == "qₖ₋₁\nline\n".encode()
    assert (out / "sub/dir/c.pdf").read_bytes() == b"%PDF\r\n\x00"  # bytes stay as given
    recorded = manifest(out)
    pdf = out / "sub/dir/c.pdf"
    assert recorded == {"b.md": digest(out / "b.md"), "sub/dir/c.pdf": digest(pdf)}
    raw = (out / MANIFEST).read_text(encoding="utf-8")
    assert raw == json.dumps(recorded, sort_keys=True, indent=2) + "\n"


def test_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    write_files(tmp_path, {"a.md": "same\n"})
    target = tmp_path / "a.md"
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    before = target.stat()
    report = write_files(tmp_path, {"a.md": "same\n"})
    after = target.stat()
    assert report.written == () and report.unchanged == ("a.md",)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_own_unedited_file_is_replaced(tmp_path: Path) -> None:
    write_files(tmp_path, {"a.md": "one\n"})
    assert write_files(tmp_path, {"a.md": "two\n"}).written == ("a.md",)
    assert (tmp_path / "a.md").read_text() == "two\n"
    assert manifest(tmp_path)["a.md"] == hashlib.sha256(b"two\n").hexdigest()


def test_edited_file_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    write_files(tmp_path, {"a.md": "one\n", "b.md": "bee\n"})
    (tmp_path / "a.md").write_text("one, with my notes\n")
    (tmp_path / "foreign.txt").write_text("mine\n")
    manifest_before = (tmp_path / MANIFEST).read_bytes()
    with pytest.raises(FileConflict) as caught:
        write_files(
            tmp_path,
            {"a.md": "two\n", "b.md": "bee 2\n", "foreign.txt": "x\n", "new.md": "new\n"},
        )
    message = str(caught.value)
    assert caught.value.paths == ("a.md", "foreign.txt")
    assert f"{tmp_path.as_posix()}/a.md" in message and "foreign.txt" in message
    assert "--force" in message and isinstance(caught.value, ValueError)
    # plan-then-write: no file of the refused plan was touched
    assert (tmp_path / "a.md").read_text() == "one, with my notes\n"
    assert (tmp_path / "b.md").read_text() == "bee\n"
    assert (tmp_path / "foreign.txt").read_text() == "mine\n"
    assert not (tmp_path / "new.md").exists()
    assert (tmp_path / MANIFEST).read_bytes() == manifest_before


def test_force_overwrites_and_adopts(tmp_path: Path) -> None:
    (tmp_path / "foreign.txt").write_text("mine\n")
    report = write_files(tmp_path, {"foreign.txt": "derived\n"}, force=True)
    assert report.written == ("foreign.txt",)
    assert manifest(tmp_path) == {"foreign.txt": digest(tmp_path / "foreign.txt")}
    # now owned: a later write needs no force
    assert write_files(tmp_path, {"foreign.txt": "again\n"}).written == ("foreign.txt",)


def test_identical_foreign_file_is_adopted_without_force(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("same\n")
    assert write_files(tmp_path, {"a.md": "same\n"}).unchanged == ("a.md",)
    assert "a.md" in manifest(tmp_path)


def test_merged_file_replaces_only_the_text_it_was_merged_from(tmp_path: Path) -> None:
    write_files(tmp_path, {"n.md": "generated\n"})
    (tmp_path / "n.md").write_text("my line\ngenerated\n")
    base = read_existing(tmp_path, "n.md")
    assert base == "my line\ngenerated\n"
    report = write_files(tmp_path, {"n.md": "my line\nregenerated\n"}, merged_from={"n.md": base})
    assert report.written == ("n.md",)
    # the file changed after it was read: the merge is stale, so refuse
    (tmp_path / "n.md").write_text("my line\nregenerated\nand more\n")
    with pytest.raises(FileConflict):
        write_files(tmp_path, {"n.md": "x\n"}, merged_from={"n.md": base})
    # None means nothing was merged: the usual ownership rule applies
    with pytest.raises(FileConflict):
        write_files(tmp_path, {"n.md": "x\n"}, merged_from={"n.md": None})


def test_manifest_drops_files_that_are_gone(tmp_path: Path) -> None:
    write_files(tmp_path, {"a.md": "a\n", "b.md": "b\n"})
    (tmp_path / "b.md").unlink()
    write_files(tmp_path, {"a.md": "a2\n"})
    assert sorted(manifest(tmp_path)) == ["a.md"]


def test_same_inputs_give_identical_folders(tmp_path: Path) -> None:
    files = {"z.md": "z\n", "a/b.txt": "b\n", "m.bin": bytes(range(256))}
    write_files(tmp_path / "one", files)
    write_files(tmp_path / "two", dict(reversed(files.items())))
    for name in [*files, MANIFEST]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_missing_output_folder_is_created_but_not_its_parents(tmp_path: Path) -> None:
    write_files(tmp_path / "new", {"a.md": "a\n"})
    assert (tmp_path / "new" / "a.md").is_file()
    deep = tmp_path / "missing" / "out"
    with pytest.raises(DeriveError, match=f"{deep}.*{deep.parent} does not exist"):
        write_files(deep, {"a.md": "a\n"})
    assert not (tmp_path / "missing").exists()


def test_output_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(DeriveError, match="is a file, not a folder"):
        write_files(tmp_path / "out", {"a.md": "a\n"})


def test_unwritable_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: not mode & os.W_OK)
    with pytest.raises(DeriveError, match=f"output folder {tmp_path} is not writable"):
        write_files(tmp_path, {"a.md": "a\n"})
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: not mode & os.R_OK)
    with pytest.raises(DeriveError, match=f"output folder {tmp_path} is not readable"):
        write_files(tmp_path, {"a.md": "a\n"})
    assert list(tmp_path.iterdir()) == []


def test_unwritable_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(DeriveError, match=r"cannot create output folder .*Permission denied"):
        write_files(tmp_path / "out", {"a.md": "a\n"})


def test_paths_that_clash_with_files_or_folders(tmp_path: Path) -> None:
    (tmp_path / "sub").write_text("a file")
    with pytest.raises(DeriveError, match="sub is a file, not a folder"):
        write_files(tmp_path, {"sub/a.md": "a\n"})
    (tmp_path / "dir.md").mkdir()
    with pytest.raises(DeriveError, match=r"dir\.md: it is a folder"):
        write_files(tmp_path, {"dir.md": "a\n"})


BAD_PATHS = ["", "/etc/passwd", "../up.md", "a/../../b", "./a", "a//b", "a\\b", MANIFEST]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_bad_relative_paths(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DeriveError, match="output path"):
        write_files(tmp_path, {bad: "x\n"})
    assert list(tmp_path.iterdir()) == []


def test_a_path_cannot_be_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DeriveError, match=r"'a' is both a file and the folder of 'a/b\.md'"):
        write_files(tmp_path / "out", {"a/b.md": "x\n", "a": "y\n"})
    assert not (tmp_path / "out").exists()


def test_bad_content_type(tmp_path: Path) -> None:
    with pytest.raises(DeriveError, match="must be str or bytes, got int"):
        write_files(tmp_path, {"a.md": 3})  # type: ignore[dict-item]


def test_broken_manifest_is_reported_unless_forced(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(DeriveError, match="is not a derive manifest"):
        write_files(tmp_path, {"a.md": "a\n"})
    write_files(tmp_path, {"a.md": "a\n"}, force=True)
    assert manifest(tmp_path) == {"a.md": digest(tmp_path / "a.md")}


def test_failed_write_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a.md"
    target.write_text("old\n")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(DeriveError, match="No space left on device"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]


def test_atomic_write_syncs_before_renaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1]
    )
    atomic_write(tmp_path / "a.md", "x\n")
    assert events[:2] == ["fsync", "replace"]


def test_modes_follow_umask_and_existing_files(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new.md", "x\n")
        (tmp_path / "kept.md").write_text("x")
        os.chmod(tmp_path / "kept.md", 0o600)
        atomic_write(tmp_path / "kept.md", "y\n")
    finally:
        os.umask(old)
    assert (tmp_path / "new.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "kept.md").stat().st_mode & 0o777 == 0o600


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6})?\.(md|bin)", fullmatch=True),
        st.binary(max_size=64),
        min_size=1,
        max_size=5,
    )
)
def test_written_bytes_round_trip(files: dict[str, bytes]) -> None:
    import tempfile

    # a name cannot be both a file and a folder
    names = set(files)
    if any(other.startswith(name.rsplit(".", 1)[0] + "/") for name in names for other in names):
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_files(root, files)
        for name, data in files.items():
            assert (root / name).read_bytes() == data
        assert write_files(root, files).unchanged == tuple(sorted(files))


def test_cli_reports_a_conflict_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "derive_files_probe.py"
    module.write_text(textwrap.dedent("""
        import click

        @click.command()
        @click.argument("out")
        def probe(out):
            from derive.files.writes import write_files
            write_files(out, {"a.md": "derived\\n"})
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "probe", ("derive_files_probe", "probe"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.md").write_text("my own notes\n")
    with pytest.raises(SystemExit) as done:
        cli.main(["probe", str(out)])
    assert done.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert lines[0].startswith("derive: error: refusing to overwrite") and "--force" in lines[0]
    assert (out / "a.md").read_text() == "my own notes\n"
    sys.modules.pop("derive_files_probe", None)


def test_manifest_is_not_rewritten_when_nothing_changed(tmp_path: Path) -> None:
    write_files(tmp_path, {"a.md": "a\n"})
    os.utime(tmp_path / MANIFEST, ns=(1_000_000_000, 1_000_000_000))
    write_files(tmp_path, {"a.md": "a\n"})
    assert (tmp_path / MANIFEST).stat().st_mtime_ns == 1_000_000_000
