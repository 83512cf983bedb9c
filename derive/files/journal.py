"""What a run is about to write, recorded before it writes: recovery after a crash.

:func:`derive.files.writes.write_files` renames its files into place one by one and
records them in the manifest last. A run killed in between (SIGKILL, a full
disk, a power cut) would leave files that the manifest does not know, and
the next run would take derive's own files for the user's edits. So before
its first rename a run writes its *journal*, ``.derive-journal.<pid>.json``
in the output folder (atomically, flushed to disk): each file it is about to
write, relative path -> SHA-256 of the new bytes. The journal is removed once
the manifest is written.

The next run reads every journal it finds (:func:`pending`): a file whose
bytes match a journal's hash is derive's own, and is folded into the
manifest. A journal whose process is gone is removed after that, and so are
the temporary files such a run left (:func:`clean_stale_temporaries`).
Temporary files are named ``.<name>.derive-<pid>-<random>.tmp`` so that a
run can tell them apart from anything else, and never touches the temporary
file of a run that is still alive.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> path = record(root, {"a.md": "ab12"}, lambda p, data: p.write_text(data))
>>> pending(root)
{'a.md': {'ab12'}}
>>> finish(root); pending(root)
{}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from derive.errors import DeriveError

JOURNAL_GLOB = ".derive-journal.*.json"
_JOURNAL_RE = re.compile(r"\.derive-journal\.(\d+)\.json")
_TEMP_RE = re.compile(r"\..+\.derive-(\d+)-[^/]*\.tmp")


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary file for the file ``name``.

    >>> temp_prefix("a.md").startswith(".a.md.derive-")
    True
    """
    return f".{name}.derive-{os.getpid()}-"


def journal_name(pid: int | None = None) -> str:
    """The journal's file name for process ``pid`` (default: this one).

    >>> journal_name(12)
    '.derive-journal.12.json'
    """
    return f".derive-journal.{os.getpid() if pid is None else pid}.json"


def is_reserved(name: str) -> bool:
    """Whether ``name`` (a file in the output folder) is a journal.

    >>> is_reserved(".derive-journal.7.json"), is_reserved("notes.md")
    (True, False)
    """
    return _JOURNAL_RE.fullmatch(name) is not None


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (this process counts as alive).

    >>> alive(os.getpid())
    True
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def record(root: Path, hashes: Mapping[str, str],
           write: Callable[[Path, str], None]) -> Path:
    """Write this run's journal (relative path -> new SHA-256) with ``write``; return its path."""
    path = root / journal_name()
    write(path, json.dumps({"files": dict(sorted(hashes.items()))}, indent=2) + "\n")
    return path


def _journals(root: Path) -> list[tuple[Path, int]]:
    found = []
    try:
        entries = list(root.glob(JOURNAL_GLOB))
    except OSError as err:
        raise DeriveError(f"cannot read output folder {root}: {err.strerror}") from None
    for path in sorted(entries):
        match = _JOURNAL_RE.fullmatch(path.name)
        if match and path.is_file():
            found.append((path, int(match.group(1))))
    return found


def pending(root: Path) -> dict[str, set[str]]:
    """Relative path -> the hashes that journals in ``root`` were about to write.

    A journal that cannot be read or parsed is ignored: it was written
    atomically, so it is not derive's.
    """
    hashes: dict[str, set[str]] = {}
    for path, _ in _journals(root):
        try:
            files = json.loads(path.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not isinstance(files, dict):
            continue
        for rel, digest in files.items():
            if isinstance(rel, str) and isinstance(digest, str):
                hashes.setdefault(rel, set()).add(digest)
    return hashes


def finish(root: Path) -> None:
    """Remove the journals of this process and of runs that are gone (folded already).

    Journals of other runs that are still alive stay: those runs are writing.
    """
    for path, pid in _journals(root):
        if pid != os.getpid() and alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale_temporaries(folders: Iterable[Path]) -> list[Path]:
    """Remove temporary files that runs now gone left in ``folders``; return them.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / ".a.md.derive-999999999-x.tmp").write_text("half")
    >>> [p.name for p in clean_stale_temporaries([folder])]
    ['.a.md.derive-999999999-x.tmp']
    """
    removed = []
    for folder in sorted(set(folders)):
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            raise DeriveError(f"cannot read folder {folder}: {err.strerror}") from None
        for name in sorted(names):
            match = _TEMP_RE.fullmatch(name)
            if match and not alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
                    removed.append(folder / name)
    return removed
