"""Derived notes kept on disk, so that a second ``derive notes`` skips the derivations.

Deriving the notes' content (every derivation, table and card) and drawing
their figures takes seconds; rendering them takes a fraction of one. This
module keeps what was derived, pickled, in a cache folder, under a key that
changes with anything the result depends on: the source and version of the
``derive`` package, the versions of Python and of the libraries that derive and draw
(SymPy, mpmath, NumPy, matplotlib), the depth and the notes' options. A
change to any of them derives anew; an unreadable entry is derived anew and
replaced. Entries are written atomically, and the oldest beyond
:data:`KEEP` are removed.

The folder is ``$DERIVE_CACHE_DIR`` if set (empty: no cache), else
``$XDG_CACHE_HOME/derive``, else ``~/.cache/derive``.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> store(folder, "content", 2, None, {"a": 1})
>>> load(folder, "content", 2, None)
{'a': 1}
>>> load(folder, "figures", 2, None) is None
True
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: Entries kept in the cache folder; older ones are removed when one is stored.
KEEP = 16
#: Libraries whose version changes what is derived or drawn (besides derive's own).
LIBRARIES = ("sympy", "mpmath", "numpy", "matplotlib")


def cache_folder(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The cache folder, or None when ``DERIVE_CACHE_DIR`` is set empty (no cache).

    >>> cache_folder({"DERIVE_CACHE_DIR": ""}) is None
    True
    >>> cache_folder({"XDG_CACHE_HOME": "/tmp/c"}).as_posix()
    '/tmp/c/derive'
    """
    chosen = environ.get("DERIVE_CACHE_DIR")
    if chosen is not None:
        return Path(chosen).expanduser() if chosen.strip() else None
    base = environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # no home folder: no cache
            return None
    return Path(base) / "derive"


@functools.cache
def _code_digest() -> str:
    """A digest of the package's source files and of the versions it runs with."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent  # the whole derive package
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    versions = [sys.version]
    for name in ("derive", *LIBRARIES):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:  # pragma: no cover (a dependency is missing)
            versions.append(f"{name} none")
    digest.update("\n".join(versions).encode())
    return digest.hexdigest()


def _path(folder: Path, kind: str, depth: int, options: object) -> Path:
    key = hashlib.sha256(f"{_code_digest()}\n{kind}\n{depth}\n{options!r}".encode())
    return folder / f"{kind}-{key.hexdigest()[:32]}.pickle"


def load(folder: Path, kind: str, depth: int, options: object) -> Any | None:
    """What :func:`store` kept under (``kind``, ``depth``, ``options``), or None."""
    try:
        with open(_path(folder, kind, depth, options), "rb") as handle:
            return pickle.load(handle)
    except Exception:  # none yet, or cut short, or unreadable: derive anew
        return None


def store(folder: Path, kind: str, depth: int, options: object, value: object) -> None:
    """Keep ``value`` under (``kind``, ``depth``, ``options``); a failure to write is ignored.

    The cache only saves time, so a folder that cannot be written costs nothing else.
    """
    target = _path(folder, kind, depth, options)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the user's alone: it is unpickled
        fd, tmp = tempfile.mkstemp(prefix=".derive-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _prune(folder)
    except Exception:  # cannot write, or a value that does not pickle: no entry
        return


def _prune(folder: Path) -> None:
    """Remove all but the :data:`KEEP` most recently stored entries."""
    entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        old.unlink(missing_ok=True)
