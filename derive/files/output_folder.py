"""The output folder, checked before anything is written: one line for each fault.

:func:`check_output_folder` refuses an empty name, a name too long for the
file system, a symbolic-link loop, a file, a missing parent, a folder that
cannot be read or written, and a manifest that is a folder;
:func:`check_no_links` refuses to write through a symbolic link inside it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from derive.errors import DeriveError

#: Name of the manifest file inside the output folder (see :mod:`derive.files.writes`).
MANIFEST = ".derive-manifest.json"


def check_output_folder(root: str | os.PathLike[str]) -> Path:
    """Check the output folder before any work: a usable name, a folder or a creatable one.

    Refuses, in one line: an empty name, a name the file system cannot hold,
    a symbolic-link loop, a file, a missing parent, a folder that cannot be
    read or written, and a manifest that is a folder.

    >>> check_output_folder("")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: output folder must not be empty: name a folder ...
    """
    if not isinstance(root, str | os.PathLike):
        raise DeriveError(f"output folder must be a path (text or a path object), "
                          f"got {root!r}")
    if os.fspath(root) in ("", b""):
        raise DeriveError("output folder must not be empty: name a folder "
                          "(. for the current one)")
    base = Path(root)
    info = _stat(base, "output folder")
    if info is None:
        parent = base.parent
        parent_info = _stat(parent, "output folder")
        if parent_info is None or not stat.S_ISDIR(parent_info.st_mode):
            raise DeriveError(f"cannot create output folder {base}: {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DeriveError(f"cannot create output folder {base}: {parent} is not writable")
        return base
    if not stat.S_ISDIR(info.st_mode):
        raise DeriveError(f"output folder {base} is a file, not a folder")
    if not os.access(base, os.R_OK | os.X_OK):
        raise DeriveError(f"output folder {base} is not readable")
    if not os.access(base, os.W_OK):
        raise DeriveError(f"output folder {base} is not writable")
    manifest = _stat(base / MANIFEST, "manifest")
    if manifest is not None and not stat.S_ISREG(manifest.st_mode):
        raise DeriveError(f"{base / MANIFEST} is not a file (derive's manifest must be): "
                          "move it away")
    return base


def _stat(path: Path, what: str) -> os.stat_result | None:
    """``os.stat`` of ``path``; None if it does not exist; one-line errors otherwise."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DeriveError(f"cannot use {what} {path}: {err.strerror}") from None


def check_no_links(root: Path, rel: str) -> None:
    """Refuse to write ``root/rel`` through (or over) a symbolic link inside ``root``.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "sub").symlink_to("/tmp")
    >>> check_no_links(root, "sub/a.md")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: refusing to write .../sub/a.md: the folder .../sub is a symbolic ...
    """
    path = root
    for part in PurePosixPath(rel).parts:
        path = path / part
        try:
            if path.is_symlink():
                kind = "folder" if path != root / rel else "file"
                raise DeriveError(
                    f"refusing to write {root / rel}: the {kind} {path} is a symbolic link "
                    f"(to {os.readlink(path)}); derive writes only inside {root}")
        except OSError as err:
            raise DeriveError(f"cannot use {path}: {err.strerror}") from None


def prepare(root: Path) -> None:
    """Create the output folder (not its parents) or check it is a writable folder.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "new"
    >>> prepare(folder); folder.is_dir()
    True
    """
    if root.exists():
        if not root.is_dir():
            raise DeriveError(f"output folder {root} is a file, not a folder")
    else:
        parent = root.parent
        if not parent.is_dir():
            raise DeriveError(f"cannot create output folder {root}: {parent} does not exist")
        try:
            root.mkdir()
        except OSError as err:
            raise DeriveError(f"cannot create output folder {root}: {err.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise DeriveError(f"output folder {root} is not writable")


def make_dirs(root: Path, folder: Path) -> None:
    """Create ``folder`` (inside ``root``) and its missing parents.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> make_dirs(root, root / "a" / "b"); (root / "a" / "b").is_dir()
    True
    """
    for part in reversed([folder, *folder.parents]):
        if part == root or root not in part.parents:
            continue
        if part.exists() and not part.is_dir():
            raise DeriveError(f"cannot create folder {part}: a file of that name exists")
        try:
            part.mkdir(exist_ok=True)
        except OSError as err:
            raise DeriveError(f"cannot create folder {part}: {err.strerror}") from None
