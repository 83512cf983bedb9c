"""What ``derive notes`` rendered, kept on disk as data, so that a second run skips the derivations.

Deriving the notes (every derivation, table and card) and drawing their
figures takes seconds; merging them with the vault and writing them takes a
fraction of one. This module keeps what a run rendered, by kind: the text of
each output file of a format (``latex``, ``markdown``, ``obsidian``), the
cards of the Anki deck (``cards``) and the figures' bytes (``figures``). An
entry is a JSON document and nothing else: reading one parses text and
base64, and never runs code (there is no pickle here). Each entry records
the key it was stored under: a digest of the whole ``derive`` package's
source (every subpackage), the versions of Python and of the libraries that
derive, draw and render (SymPy, mpmath, NumPy, matplotlib, Jinja2), the kind,
the depth, the options and, for text, a digest of the templates used. An
entry whose name, recorded key or content is not what derive stores is
ignored, and replaced by the next run that derives.

The folder is ``$DERIVE_CACHE_DIR`` if set (empty: no cache), else
``$XDG_CACHE_HOME/derive``, else ``~/.cache/derive``; it is created 0700.
:func:`open_folder` opens it without following a symbolic link and uses it
only if it is a folder owned by the current user and not writable by group
or others; otherwise it says why in one line and the notes are derived
without it. Entries are read the same way (no link followed, owned by the
user, not writable by others, at most :data:`MAX_BYTES`). An entry is written
to a temporary file and renamed into place; a temporary file that a killed
run left is removed by a later one, and all but the :data:`KEEP` most
recently used entries are removed. Only files named exactly as derive names
its entries (``figures-<32 hex>.json``) and its temporary files
(``.figures-<32 hex>.json.<pid>-<16 hex>.tmp``) are ever removed; nothing else
in the folder is touched.

>>> import tempfile
>>> folder, warning = open_folder(Path(tempfile.mkdtemp()) / "cache")
>>> inputs = {"depth": 2, "options": {}, "templates": None}
>>> folder.store("figures", inputs, {"a": {"png": b"\\x89PNG\\r\\n\\x1a\\n", "pdf": b"%PDF-1.4"}})
>>> folder.load("figures", inputs)["a"]["pdf"]
b'%PDF-1.4'
>>> folder.load("figures", {**inputs, "depth": 3}) is None, warning
(True, None)
>>> folder.close()
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias, overload

from derive.deck.cards import Card
from derive.files.journal import alive

if TYPE_CHECKING:  # pragma: no cover
    from derive.studynotes.worker import Images

#: Entries kept in the cache folder; the least recently used beyond it are removed.
KEEP = 40
#: The largest entry read back (a larger file is not derive's).
MAX_BYTES = 64 * 2**20
#: Seconds after which a temporary file is taken for a killed run's, even if its
#: process number is in use again.
STALE = 3600.0
#: Libraries whose version changes what is derived, drawn or rendered (besides derive's own).
LIBRARIES = ("sympy", "mpmath", "numpy", "matplotlib", "jinja2")
#: What an entry holds: the text of a format's files, the cards, the figures.
TextKind: TypeAlias = Literal["latex", "markdown", "obsidian"]
Kind: TypeAlias = Literal["latex", "markdown", "obsidian", "cards", "figures"]
TEXT_KINDS: tuple[TextKind, ...] = ("latex", "markdown", "obsidian")
KINDS: tuple[Kind, ...] = (*TEXT_KINDS, "cards", "figures")
#: A format's files as rendered: relative path -> text.
Files: TypeAlias = dict[str, str]
#: The value of an entry: a format's files, the cards, or the figures (stem -> bytes by
#: extension).
Part: TypeAlias = "Files | tuple[Card, ...] | Images"
#: Data as a JSON document holds it.
Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"
#: The one key of an entry's document that names its format, and the format's version.
FORMAT, VERSION = "derive notes cache", 1

_KIND = "|".join(KINDS)
_ENTRY_RE = re.compile(rf"(?:{_KIND})-[0-9a-f]{{32}}\.json")
_TEMP_RE = re.compile(rf"\.((?:{_KIND})-[0-9a-f]{{32}}\.json)\.(\d+)-[0-9a-f]{{16}}\.tmp")
_STEM_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_CARD_FIELDS = ("key", "front", "back", "tags", "style")
_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}
#: Whether this system can open a file relative to a folder without following a link.
_SAFE_OPEN = (hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
              and os.open in os.supports_dir_fd and os.rename in os.supports_dir_fd
              and os.listdir in os.supports_fd)


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
def source_digest(package: Path | None = None) -> str:
    """A digest of every source file of the derive package (or of ``package``), its
    subpackages included.

    >>> len(source_digest())
    64
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent if package is None else package
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def versions() -> dict[str, str]:
    """The versions of Python, derive and :data:`LIBRARIES` (``none`` for one not installed).

    >>> sorted(versions())[:2]
    ['derive', 'jinja2']
    """
    found = {"python": sys.version}
    for name in ("derive", *LIBRARIES):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover (a dependency is missing)
            found[name] = "none"
    return found


def folder_digest(folder: Path) -> str:
    """A digest of every file under ``folder`` (names and bytes): the templates used.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> before = folder_digest(folder)
    >>> _ = (folder / "a.j2").write_text("{{ x }}")
    >>> folder_digest(folder) != before
    True
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _unsafe(info: os.stat_result, what: str) -> str | None:
    """Why a folder or entry with ``info`` (from lstat or fstat) must not be used, or None."""
    kind = stat.S_ISDIR if what == "folder" else stat.S_ISREG
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link, which derive does not follow"
    if not kind(info.st_mode):
        return f"is not a {'folder' if what == 'folder' else 'file'}"
    if info.st_uid != os.geteuid():
        return f"is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def open_folder(path: Path | None) -> tuple[CacheFolder | None, str | None]:
    """The cache folder at ``path`` opened for this run, created if missing, and a warning.

    Returns (None, one line saying why) for a folder that is a symbolic link, not a
    folder, owned by another user or writable by group or others, or that cannot be
    opened; (None, None) for no cache (``path`` None).

    >>> import tempfile
    >>> blocker = Path(tempfile.mkdtemp()) / "file"
    >>> _ = blocker.write_text("")
    >>> open_folder(blocker)[1]  # doctest: +ELLIPSIS
    'cache folder ... is not a folder: not using it (the notes are derived without it)'
    """
    if path is None:
        return None, None

    def refused(reason: str) -> tuple[None, str]:
        return None, (f"cache folder {path} {reason}: not using it "
                      "(the notes are derived without it)")

    if not _SAFE_OPEN:  # pragma: no cover (every POSIX system has them)
        return refused("cannot be opened here without following symbolic links")
    with contextlib.suppress(OSError):  # the checks below say what is wrong
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        try:
            reason = _unsafe(os.lstat(path), "folder") or f"cannot be opened: {err.strerror}"
        except OSError:
            reason = "does not exist and cannot be created"
        return refused(reason)
    unsafe = _unsafe(os.fstat(fd), "folder")
    if unsafe is not None:
        os.close(fd)
        return refused(unsafe)
    folder = CacheFolder(path, fd)
    folder.clean()
    return folder, None


class CacheFolder:
    """A cache folder opened by :func:`open_folder`: entries are read, written, renamed
    and removed relative to the folder opened and checked, never through a path that
    could be swapped meanwhile."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def close(self) -> None:
        """Close the folder (the entries stay)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def key(kind: Kind, inputs: Mapping[str, object]) -> dict[str, Json]:
        """The key an entry of ``kind`` for ``inputs`` (depth, options, templates) records."""
        key = {"kind": kind, "source": source_digest(), "versions": versions(), **inputs}
        read_back: dict[str, Json] = json.loads(json.dumps(key))  # lists for tuples
        return read_back

    @staticmethod
    def name(key: Mapping[str, Json]) -> str:
        """The entry's file name: its kind and a digest of its key."""
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return f"{key['kind']}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"

    @overload
    def load(self, kind: TextKind, inputs: Mapping[str, object]) -> Files | None: ...
    @overload
    def load(self, kind: Literal["cards"], inputs: Mapping[str, object]
             ) -> tuple[Card, ...] | None: ...
    @overload
    def load(self, kind: Literal["figures"], inputs: Mapping[str, object]) -> Images | None: ...

    def load(self, kind: Kind, inputs: Mapping[str, object]) -> Part | None:
        """What :meth:`store` kept for (``kind``, ``inputs``), or None.

        None also for an entry that is not a regular file owned by the user and
        unwritable by others, that does not parse, that records another key, or
        whose value is not what derive stores for ``kind``.
        """
        key = self.key(kind, inputs)
        name = self.name(key)
        raw = self._read(name)
        if raw is None:
            return None
        try:
            entry = json.loads(raw.decode("utf-8"))
            if (not isinstance(entry, dict) or set(entry) != {FORMAT, "key", "value"}
                    or entry[FORMAT] != VERSION or entry["key"] != key):
                return None
            value = _decode(kind, entry["value"])
        except (ValueError, TypeError, KeyError, RecursionError):  # not what derive stores
            return None
        with contextlib.suppress(OSError):  # recently used: pruned last
            os.utime(name, dir_fd=self.fd, follow_symlinks=False)
        return value

    def _read(self, name: str) -> bytes | None:
        """The bytes of entry ``name``: a regular file of the user's, not a link, not large."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except OSError:  # none yet, a link, unreadable
            return None
        try:
            info = os.fstat(fd)
            if _unsafe(info, "file") is not None or info.st_size > MAX_BYTES:
                return None
            chunks, size = [], 0
            while size <= MAX_BYTES and (chunk := os.read(fd, 1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
        except OSError:
            return None
        finally:
            os.close(fd)
        return b"".join(chunks) if size <= MAX_BYTES else None

    @overload
    def store(self, kind: TextKind, inputs: Mapping[str, object], value: Files) -> None: ...
    @overload
    def store(self, kind: Literal["cards"], inputs: Mapping[str, object],
              value: tuple[Card, ...]) -> None: ...
    @overload
    def store(self, kind: Literal["figures"], inputs: Mapping[str, object],
              value: Images) -> None: ...

    def store(self, kind: Kind, inputs: Mapping[str, object], value: Part) -> None:
        """Keep ``value`` for (``kind``, ``inputs``), replacing whatever has the entry's name.

        A failure to write is ignored: the cache only saves time.
        """
        key = self.key(kind, inputs)
        name = self.name(key)
        document = {FORMAT: VERSION, "key": key, "value": _encode(value)}
        data = json.dumps(document, separators=(",", ":")).encode()  # in the value's order
        temporary = f".{name}.{os.getpid()}-{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=self.fd)
                raise
        except OSError:  # cannot write here: no entry
            return
        self._prune()

    def _names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.fd))
        except OSError:
            return []

    def _regular(self, name: str) -> os.stat_result | None:
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return None
        return info if stat.S_ISREG(info.st_mode) else None

    def clean(self) -> list[str]:
        """Remove the temporary files of runs that are gone (or older than :data:`STALE`);
        return their names. Only derive's own temporary names are looked at."""
        removed = []
        for name in self._names():
            match = _TEMP_RE.fullmatch(name)
            info = self._regular(name) if match else None
            if match is None or info is None:
                continue
            if alive(int(match.group(2))) and time.time() - info.st_mtime < STALE:
                continue  # a run that is writing it now
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.fd)
                removed.append(name)
        return removed

    def _prune(self) -> None:
        """Remove all but the :data:`KEEP` most recently used entries (derive's names only)."""
        entries = []
        for name in self._names():
            info = self._regular(name) if _ENTRY_RE.fullmatch(name) else None
            if info is not None:
                entries.append((-info.st_mtime, name))
        for _, name in sorted(entries)[KEEP:]:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.fd)


def _encode(value: Part) -> Json:
    """``value`` as JSON data: text as is, cards as their fields, bytes in base64."""
    if isinstance(value, tuple):
        return [_card_fields(card) for card in value]
    return {name: _encode_item(item) for name, item in value.items()}


def _encode_item(item: str | dict[str, bytes]) -> Json:
    """A file's text as is; a figure's bytes (by extension) in base64."""
    if isinstance(item, str):
        return item
    return {ext: base64.b64encode(blob).decode("ascii") for ext, blob in item.items()}


def _card_fields(card: Card) -> dict[str, Json]:
    return {name: list(card.tags) if name == "tags" else getattr(card, name)
            for name in _CARD_FIELDS}


def _decode(kind: Kind, data: object) -> Part:
    """The value of an entry of ``kind`` from its JSON data; ValueError if it is not what
    :func:`_encode` makes."""
    if kind == "cards":
        return _decode_cards(data)
    if kind == "figures":
        return _decode_figures(data)
    if kind in TEXT_KINDS:
        return _decode_files(kind, data)
    raise ValueError(f"unknown kind {kind!r}")


def _decode_files(kind: TextKind, data: object) -> Files:
    """A format's files: each a text directly inside the format's folder."""
    if not isinstance(data, dict):
        raise ValueError("not a mapping of files")
    for rel, text in data.items():
        folder, _, name = rel.partition("/")
        if (folder != kind or not name or "/" in name or "\\" in name or "\0" in name
                or name.startswith(".") or not isinstance(text, str)):
            raise ValueError(f"not a {kind} file: {rel!r}")
    return data


def _decode_cards(data: object) -> tuple[Card, ...]:
    """The cards: each exactly the fields that :func:`_card_fields` writes for it."""
    if not isinstance(data, list):
        raise ValueError("not a list of cards")
    return tuple(_decode_card(fields) for fields in data)


def _decode_card(fields: object) -> Card:
    if (not isinstance(fields, dict) or list(fields) != list(_CARD_FIELDS)
            or not all(isinstance(fields[n], str) for n in ("key", "front", "back", "style"))
            or not isinstance(fields["tags"], list)
            or not all(isinstance(t, str) for t in fields["tags"])):
        raise ValueError("not a card")
    made = Card(fields["key"], fields["front"], fields["back"], tuple(fields["tags"]),
                fields["style"])
    if _card_fields(made) != fields:
        raise ValueError("a card that derive would not make")
    return made


def _decode_figures(data: object) -> Images:
    """The figures: a PNG and a PDF for each stem, from base64."""
    if not isinstance(data, dict):
        raise ValueError("not a mapping of figures")
    return {stem: _decode_figure(stem, pair) for stem, pair in data.items()}


def _decode_figure(stem: str, pair: object) -> dict[str, bytes]:
    if (not _STEM_RE.fullmatch(stem) or not isinstance(pair, dict)
            or sorted(pair) != sorted(_MAGIC)
            or not all(isinstance(text, str) for text in pair.values())):
        raise ValueError(f"not a figure: {stem!r}")
    try:
        blobs = {ext: base64.b64decode(pair[ext], validate=True) for ext in _MAGIC}
    except binascii.Error:
        raise ValueError(f"not base64: {stem!r}") from None
    if not all(blob.startswith(_MAGIC[ext]) for ext, blob in blobs.items()):
        raise ValueError(f"not a PNG and a PDF: {stem!r}")
    return blobs
