"""Writing one file atomically: a temporary file beside it, flushed to disk, then renamed.

A reader sees the old file or the new one, never half of one. Text is UTF-8
with LF line endings. The temporary file is named by
:func:`derive.files.journal.temp_prefix`, so that a later run can remove what
a run killed half-way left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path

from derive.errors import DeriveError
from derive.files import journal


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``.

    >>> sha256(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def to_bytes(content: str | bytes) -> bytes:
    """Bytes to write: text becomes UTF-8 with LF line endings, bytes stay.

    >>> to_bytes("a\\r\\nb\\rc")
    b'a\\nb\\nc'
    """
    if isinstance(content, bytes):
        return content
    if not isinstance(content, str):
        raise DeriveError(f"file content must be str or bytes, got {type(content).__name__}")
    return content.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")


#: ``expect`` of :func:`atomic_write` when the target's content does not matter.
ANY = object()


class FileChanged(DeriveError):
    """The target of :func:`atomic_write` changed after it was checked (an edit saved)."""


def atomic_write(path: str | os.PathLike[str], content: str | bytes, *,
                 expect: bytes | object | None = ANY) -> None:
    """Write ``content`` to ``path`` atomically (temporary file, fsync, rename).

    With ``expect`` (the bytes the target held when it was checked, None: no
    file), the target is read once more just before the rename and left
    alone, raising :class:`FileChanged`, if it changed meanwhile.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, "x\\r\\n")
    >>> target.read_bytes()
    b'x\\n'
    >>> atomic_write(target, "y\\n", expect=b"old\\n")
    Traceback (most recent call last):
    ...
    derive.files.atomic.FileChanged: .../a.txt changed while derive was writing it; ...
    """
    target = Path(path)
    data = to_bytes(content)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as err:
        raise DeriveError(f"cannot write {target}: {err.strerror}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=journal.temp_prefix(target.name), suffix=".tmp",
                                   dir=target.parent)
    except OSError as err:
        raise DeriveError(f"cannot write in {target.parent}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if expect is not ANY and _bytes_at(target) != expect:
            raise FileChanged(f"{target} changed while derive was writing it; "
                              "your version is kept: run derive again")
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise DeriveError(f"cannot write {target}: {err.strerror}") from None
        raise
    _fsync_dir(target.parent)


def _bytes_at(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry to disk where the platform allows it (a real failure raises)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise DeriveError(f"cannot write in {folder}: {err.strerror}") from None
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
