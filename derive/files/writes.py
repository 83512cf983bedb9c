"""Writing output files safely: atomically, and never over the user's work.

Every file goes to a temporary file in its own directory, is flushed to disk
(``fsync``) and renamed over the target (``os.replace``), so a reader sees the
old file or the new one, never half of one (:mod:`derive.files.atomic`). Text
is UTF-8 with LF line endings.

Ownership: the output folder holds ``.derive-manifest.json``, a JSON object
mapping each file derive wrote (relative path, ``/`` separators) to the
SHA-256 of the bytes it wrote (sorted keys, written atomically). A file that
exists but is not in the manifest, or whose bytes no longer match it (edited
since), is left alone unless ``force=True``: :class:`FileConflict` names every
such file. A file whose content would not change is not rewritten at all.

:func:`write_files` plans first and writes second: all conflicts are checked
before the first byte is written, so a refusal leaves the folder as it was.

A file that derive regenerates by merging with what is on disk (an Obsidian
note, see :func:`derive.vault.regions.merge_note`) passes the text it merged from in
``merged_from``: the merge already kept the user's edits, so the file may be
replaced as long as it still holds exactly that text.

Faults are found before the first byte is written, each in one line: an
empty, too long or looping ``--out`` name, an unreadable or unwritable
folder, a manifest that is a folder, a sub-folder (or file) inside the output
folder that is a symbolic link (derive never writes through one). Each file
is checked once more just before it is replaced: an edit saved meanwhile is
kept, and reported. A run killed half-way is recovered by the next one from
its journal (:mod:`derive.files.journal`), which also removes its temporary files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from derive.errors import DeriveError
from derive.files import journal
from derive.files.atomic import FileChanged, atomic_write, sha256, to_bytes
from derive.files.output_folder import (
    MANIFEST,
    check_no_links,
    check_output_folder,
    make_dirs,
    prepare,
)


class FileConflict(DeriveError):
    """Files exist that derive did not write, or that were edited since.

    ``paths`` holds the conflicting paths relative to the output folder.

    >>> print(FileConflict("out", ["a.md", "b.pdf"]))
    refusing to overwrite out/a.md, out/b.pdf: not written by derive, or edited since; ...
    """

    def __init__(self, root: str | os.PathLike[str], paths: list[str],
                 reason: str = "not written by derive, or edited since; "
                               "pass --force to overwrite") -> None:
        self.paths = tuple(paths)
        shown = ", ".join(str(PurePosixPath(os.fspath(root)) / p) for p in paths)
        super().__init__(f"refusing to overwrite {shown}: {reason}")


@dataclass(frozen=True)
class WriteReport:
    """What :func:`write_files` did: relative paths written and left unchanged.

    >>> WriteReport(written=("a.md",), unchanged=()).written
    ('a.md',)
    """

    written: tuple[str, ...]
    unchanged: tuple[str, ...]


def read_existing(root: str | os.PathLike[str], relpath: str) -> str | None:
    """The text of ``root/relpath`` if it exists (UTF-8), else None.

    >>> import tempfile
    >>> read_existing(tempfile.mkdtemp(), "missing.md") is None
    True
    """
    data = read_existing_bytes(root, relpath)
    try:
        return None if data is None else data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise DeriveError(f"{Path(root) / relpath}, line {line}: not UTF-8 text "
                          f"(byte 0x{err.object[err.start]:02x}); save it as UTF-8") from None


def read_existing_bytes(root: str | os.PathLike[str], relpath: str) -> bytes | None:
    """The bytes of ``root/relpath`` if it is a file, else None.

    >>> import tempfile
    >>> read_existing_bytes(tempfile.mkdtemp(), "missing.apkg") is None
    True
    """
    path = Path(root) / _check_relpath(relpath)
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DeriveError(f"cannot read {path}: {err.strerror}") from None


def load_manifest(root: str | os.PathLike[str]) -> dict[str, str]:
    """The manifest of ``root`` (relative path -> sha256); empty if there is none.

    >>> import tempfile
    >>> load_manifest(tempfile.mkdtemp())
    {}
    """
    path = Path(root) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise DeriveError(f"cannot read {path}: {err.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in data.items()
    ):
        raise DeriveError(
            f"{path} is not a derive manifest (a JSON object of path -> sha256); "
            "delete it or pass --force"
        )
    return data


def write_files(
    root: str | os.PathLike[str],
    files: Mapping[str, str | bytes],
    *,
    force: bool = False,
    merged_from: Mapping[str, str | bytes | None] | None = None,
) -> WriteReport:
    """Write ``files`` (relative path -> content) under ``root``, safely.

    Creates ``root`` if its parent exists; checks every file for conflicts
    before writing any (raising :class:`FileConflict` unless ``force``); skips
    files whose bytes would not change; records what it wrote in the manifest.
    ``merged_from`` maps a path to the content it was merged from (None: not
    merged); such a file is replaced if it still holds exactly that content.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "notes"
    >>> write_files(out, {"a.md": "# A\\n", "img/b.png": b"\\x89PNG"})
    WriteReport(written=('a.md', 'img/b.png'), unchanged=())
    >>> write_files(out, {"a.md": "# A\\n"})
    WriteReport(written=(), unchanged=('a.md',))
    >>> _ = (out / "a.md").write_text("# A, edited\\n")
    >>> write_files(out, {"a.md": "# A2\\n"})
    Traceback (most recent call last):
    ...
    derive.files.writes.FileConflict: refusing to overwrite .../a.md: ... pass --force to overwrite
    >>> write_files(out, {"a.md": "# A2\\n"}, force=True).written
    ('a.md',)
    """
    base = check_output_folder(root)
    planned = _plan(base, files)
    bases = {
        _check_relpath(rel): content.encode("utf-8") if isinstance(content, str) else content
        for rel, content in (merged_from or {}).items()
    }
    prepare(base)
    manifest = _manifest_or_none(base, force)
    intended = journal.pending(base)
    journal.clean_stale_temporaries({(base / rel).parent for rel in planned} | {base})
    sorted_out = _sort_out(base, planned, _Ownership(manifest, intended, bases, force))
    if sorted_out.written:
        journal.record(base, {rel: sha256(planned[rel]) for rel in sorted_out.written},
                       atomic_write)
    done, edited = _replace_all(base, planned, sorted_out)
    _write_manifest(base, _new_manifest(base, manifest, intended, planned,
                                        done + sorted_out.unchanged))
    journal.finish(base)
    if edited:
        raise FileConflict(base, edited, "edited while derive was writing; your version "
                           "is kept, the other files are written: run derive again")
    return WriteReport(tuple(done), tuple(sorted_out.unchanged))


def _plan(base: Path, files: Mapping[str, str | bytes]) -> dict[str, bytes]:
    """The bytes to write at each checked relative path; faults found before any write."""
    planned = {_check_relpath(rel): to_bytes(content) for rel, content in files.items()}
    for rel in planned:
        for parent in PurePosixPath(rel).parents:
            if parent.as_posix() in planned:
                raise DeriveError(f"output path {parent.as_posix()!r} is both a file and "
                                  f"the folder of {rel!r}")
    for rel in planned:
        check_no_links(base, rel)
    if base.exists():
        _current_bytes(base, MANIFEST)  # a manifest that is a folder stops even --force
    return planned


def _manifest_or_none(base: Path, force: bool) -> dict[str, str]:
    """The manifest; with ``force``, an unreadable one counts as empty."""
    try:
        return load_manifest(base)
    except DeriveError:
        if not force:
            raise
        return {}


@dataclass(frozen=True)
class _Ownership:
    """What tells derive's own files from the user's: the manifest, the journals of
    runs killed half-way, the texts notes were merged from, and ``force``."""

    manifest: dict[str, str]
    intended: dict[str, set[str]]
    bases: dict[str, bytes | None]
    force: bool

    def may_replace(self, rel: str, current: bytes) -> bool:
        """Whether the file at ``rel``, holding ``current``, may be replaced."""
        if self.force or current == self.bases.get(rel):
            return True
        digest = sha256(current)
        return self.manifest.get(rel) == digest or digest in self.intended.get(rel, ())


@dataclass
class _SortedOut:
    """The planned files sorted: to write, unchanged, and what each held when checked."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    seen: dict[str, bytes | None] = field(default_factory=dict)


def _sort_out(base: Path, planned: Mapping[str, bytes], owner: _Ownership) -> _SortedOut:
    """Which files to write and which are unchanged; :class:`FileConflict` for the user's."""
    out = _SortedOut()
    conflicts: list[str] = []
    for rel in sorted(planned):
        current = out.seen[rel] = _current_bytes(base, rel)
        if current == planned[rel]:
            out.unchanged.append(rel)
        elif current is None or owner.may_replace(rel, current):
            out.written.append(rel)
        else:
            conflicts.append(rel)
    if conflicts:
        raise FileConflict(base, conflicts)
    return out


def _replace_all(base: Path, planned: Mapping[str, bytes],
                 sorted_out: _SortedOut) -> tuple[list[str], list[str]]:
    """Write each file to be written; return those written and those edited meanwhile."""
    done: list[str] = []
    edited: list[str] = []
    for rel in sorted_out.written:
        target = base / rel
        make_dirs(base, target.parent)
        if _replace(base, rel, planned[rel], sorted_out.seen[rel]):
            done.append(rel)
        else:
            edited.append(rel)
    return done, edited


def _replace(base: Path, rel: str, data: bytes, seen: bytes | None) -> bool:
    """Replace ``base/rel`` if it still holds ``seen`` (or another derive run's bytes)."""
    try:
        atomic_write(base / rel, data, expect=seen)
        return True
    except FileChanged:
        pass
    now = _current_bytes(base, rel)  # another derive run's file is derive's own
    if now is None or sha256(now) not in journal.pending(base).get(rel, ()):
        return False
    try:
        atomic_write(base / rel, data, expect=now)
    except FileChanged:
        return False
    return True


def _new_manifest(base: Path, manifest: Mapping[str, str], intended: Mapping[str, set[str]],
                  planned: Mapping[str, bytes], current: list[str]) -> dict[str, str]:
    """The manifest after this run: files still there, what a killed run wrote, ``current``."""
    new_manifest = {rel: digest for rel, digest in manifest.items() if (base / rel).is_file()}
    for rel, digests in intended.items():  # what a run killed half-way did write
        try:
            now = _current_bytes(base, _check_relpath(rel)) if rel not in planned else None
        except DeriveError:  # not a path derive writes, or no longer a file
            continue
        if now is not None and sha256(now) in digests:
            new_manifest[rel] = sha256(now)
    new_manifest.update({rel: sha256(planned[rel]) for rel in current})
    return new_manifest


def _write_manifest(base: Path, manifest: Mapping[str, str]) -> None:
    """Write the manifest (sorted keys) unless it already holds exactly that."""
    text = json.dumps(dict(sorted(manifest.items())), indent=2) + "\n"
    if _current_bytes(base, MANIFEST) != text.encode("utf-8"):
        atomic_write(base / MANIFEST, text)


def _check_relpath(relpath: str) -> str:
    """Validate a relative output path and return it in ``a/b`` form."""
    if not isinstance(relpath, str) or not relpath or "\\" in relpath or "\0" in relpath:
        raise DeriveError(f"output path must be a relative path like 'a/b.md', got {relpath!r}")
    if any(part in ("", ".", "..") for part in relpath.split("/")):
        raise DeriveError(
            f"output path must be relative and stay inside the output folder, got {relpath!r}"
        )
    if relpath == MANIFEST or journal.is_reserved(relpath):
        raise DeriveError(f"output path {relpath!r} is reserved for derive's own records")
    return relpath


def _current_bytes(root: Path, rel: str) -> bytes | None:
    """The bytes now at ``root/rel``; None if missing; DeriveError if not a file."""
    path = root / rel
    if path.is_dir():
        raise DeriveError(f"cannot write {path}: it is a folder")
    for parent in path.parents:
        if parent == root:
            break
        if parent.exists() and not parent.is_dir():
            raise DeriveError(f"cannot write {path}: {parent} is a file, not a folder")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DeriveError(f"cannot read {path}: {err.strerror}") from None
