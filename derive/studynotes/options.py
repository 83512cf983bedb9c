"""What the study notes hold and how their cards are filed: options and ``derive.toml``.

The options of ``derive notes`` can also stand in a project file,
``derive.toml``, under a ``[notes]`` table; the file is looked for in the
output folder, then in the current folder. An option given on the command
line wins over the file, and the file over the defaults::

    [notes]
    tags = "ml WS2526"              # or ["ml", "WS2526"]
    deck = "Deep learning"
    style = "Basic reversed"        # Basic, Basic reversed or Cloze
    concepts = ["residual-block", "gradient-paths", "variance"]
    blocks = ["pre", "post"]        # none, pre, post (or x + F(x), x + F(LN(x)), LN(x + F(x)))
    depths = [10, 50]
    depth = 4                       # blocks in the path sum
    format = "obsidian"

    [notes.names]                   # a concept's note name, also the target of its wikilinks
    residual-block = "nn residual block"

Every key and value is checked; a bad one raises :class:`DeriveError` with
one line that names the key and what is allowed.

>>> options = NotesOptions.of(tags="ml WS2526", names={"residual-block": "nn residual block"})
>>> options.tags, options.name("residual-block"), options.name("layer-norm")
(('ml', 'WS2526'), 'nn residual block', 'Layer norm')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from derive.errors import DeriveError
from derive.studynotes.sections import SECTIONS

if TYPE_CHECKING:
    from derive.deck.cards import Card

#: The concepts (one note each), their default note names, in the notes' order: the
#: sections registered in :data:`derive.studynotes.sections.SECTIONS`.
CONCEPTS = {section.key: section.title for section in SECTIONS}
#: The norm placements a block can have, and the block each one writes.
BLOCKS = {"none": "x + F(x)", "pre": "x + F(LN(x))", "post": "LN(x + F(x))"}
#: Card styles as a user names them -> the Anki note type the plugin and the deck use.
STYLES = {
    "basic": "Basic",
    "basic reversed": "Basic (and reversed card)",
    "cloze": "Cloze",
}
#: The largest depth the notes tabulate (each value is derived, so it costs time).
MAX_DEPTH = 200
FILE_NAME = "derive.toml"
#: What ``format`` may name (as ``derive notes --format``).
FORMATS = ("latex", "markdown", "obsidian", "anki", "all")
KEYS = ("format", "depth", "tags", "deck", "style", "names", "concepts", "blocks", "depths")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_:./-]*")
_BAD_NAME = re.compile(r'[\\/:*?"<>|#^\[\]\n\r\t]')


def _words(value: object, key: str) -> tuple[str, ...]:
    """A list of names: a string split at spaces and commas, or a list of strings."""
    if isinstance(value, str):
        return tuple(w for w in re.split(r"[\s,]+", value) if w)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DeriveError(f"{key} must be text or a list of text, got {value!r}")


def check_tags(value: object) -> tuple[str, ...]:
    """Anki tags from ``"ml WS2526"`` or a list; each without spaces.

    >>> check_tags("ml, WS2526")
    ('ml', 'WS2526')
    >>> check_tags("ml!")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: tags: 'ml!' is not a tag: use letters, digits and ...
    """
    tags = _words(value, "tags")
    for tag in tags:
        if not _TAG_RE.fullmatch(tag):
            raise DeriveError(
                f"tags: {tag!r} is not a tag: use letters, digits and _ : . / - (no spaces)")
    return tuple(dict.fromkeys(tags))


def check_style(value: object) -> str:
    """The Anki note type of a card style (case and ``-``/``_`` do not matter).

    >>> check_style("basic-reversed"), check_style("Cloze")
    ('Basic (and reversed card)', 'Cloze')
    """
    if isinstance(value, str):
        spoken = re.sub(r"[\s_-]+", " ", value.strip().lower())
        spoken = {"basic (and reversed card)": "basic reversed", "reversed": "basic reversed"}.get(
            spoken, spoken)
        if spoken in STYLES:
            return STYLES[spoken]
    raise DeriveError(f"style {value!r} is not allowed: choose one of Basic, Basic reversed, Cloze")


def check_deck(value: object) -> str:
    """A deck name: one line of text (``::`` makes a sub-deck in Anki).

    >>> check_deck("ML::Residual networks")
    'ML::Residual networks'
    """
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise DeriveError(f"deck must be one line of text, got {value!r}")
    return value.strip()


def check_names(value: object) -> tuple[tuple[str, str], ...]:
    """Note names by concept, as sorted pairs; each name a valid Obsidian note name.

    >>> check_names({"variance": "nn variance"})
    (('variance', 'nn variance'),)
    """
    if not isinstance(value, Mapping):
        raise DeriveError(f"names must map a concept to a note name, got {value!r}")
    for key, name in value.items():
        if key not in CONCEPTS:
            raise DeriveError(
                f"names: unknown concept {key!r}: choose among {', '.join(CONCEPTS)}")
        if (not isinstance(name, str) or not name.strip() or name != name.strip()
                or _BAD_NAME.search(name) or name.startswith(".")):
            raise DeriveError(
                f"names.{key}: {name!r} is not a note name: one line, no leading dot or "
                "surrounding spaces, none of \\ / : * ? \" < > | # ^ [ ]")
    chosen = {**CONCEPTS, **value}
    lowered = [n.lower() for n in chosen.values()]
    if len(set(lowered)) != len(lowered):
        raise DeriveError(f"names: two concepts share a note name: {sorted(chosen.values())}")
    return tuple(sorted(value.items()))


def check_concepts(value: object) -> tuple[str, ...]:
    """Which concepts the notes hold, in the notes' order.

    >>> check_concepts("variance residual-block")
    ('residual-block', 'variance')
    """
    chosen = _words(value, "concepts")
    for key in chosen:
        if key not in CONCEPTS:
            raise DeriveError(f"concepts: unknown concept {key!r}: choose among "
                              f"{', '.join(CONCEPTS)}")
    if not chosen:
        raise DeriveError(f"concepts must name at least one of {', '.join(CONCEPTS)}")
    return tuple(key for key in CONCEPTS if key in chosen)


def check_blocks(value: object) -> tuple[str, ...]:
    """Which blocks (norm placements) the variance notes hold, by name or expression.

    >>> check_blocks(["x + F(LN(x))", "post"])
    ('pre', 'post')
    """
    by_expression = {expr.replace(" ", ""): name for name, expr in BLOCKS.items()}
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise DeriveError(f"blocks must be text or a list of text, got {value!r}")
    chosen = set()
    for item in items:
        word = item.strip()
        name = word if word in BLOCKS else by_expression.get(word.replace(" ", ""))
        if name is None:
            allowed = ", ".join(f"{n} ({e})" for n, e in BLOCKS.items())
            raise DeriveError(f"blocks: unknown block {word!r}: choose among {allowed}")
        chosen.add(name)
    if not chosen:
        raise DeriveError("blocks must name at least one of none, pre, post")
    return tuple(name for name in BLOCKS if name in chosen)


def check_depths(value: object) -> tuple[int, ...]:
    """The depths K at which the tables give values (sorted, 1 to MAX_DEPTH).

    >>> check_depths("50, 10")
    (10, 50)
    """
    items = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else value
    if isinstance(items, int) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise DeriveError(f"depths must be a list of integers from 1 to {MAX_DEPTH}, "
                          f"got {value!r}")
    out = set()
    for item in items:
        number = int(item) if isinstance(item, str) and item.isdigit() else item
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_DEPTH:
            raise DeriveError(f"depths: {item!r} is not an integer from 1 to {MAX_DEPTH}")
        out.add(number)
    return tuple(sorted(out))


@dataclass(frozen=True)
class NotesOptions:
    """What the notes hold (concepts, blocks, depths) and how their cards are filed.

    >>> NotesOptions().style, NotesOptions().depths, NotesOptions().deck
    ('Basic', (10, 50), 'derive')
    """

    tags: tuple[str, ...] = ()
    deck: str = "derive"
    style: str = "Basic"
    names: tuple[tuple[str, str], ...] = ()
    concepts: tuple[str, ...] = tuple(CONCEPTS)
    blocks: tuple[str, ...] = tuple(BLOCKS)
    depths: tuple[int, ...] = (10, 50)

    @classmethod
    def of(cls, **values: object) -> NotesOptions:
        """Options from raw values (a file's or the command line's), each one checked."""
        options = cls()
        for key, value in values.items():
            if key not in _SETTERS:
                raise DeriveError(f"unknown option {key!r}: allowed are {', '.join(_SETTERS)}")
            if value is not None:
                options = _SETTERS[key](options, value)
        return options

    def card(self, card: Card) -> Card:
        """``card`` styled and tagged as chosen: the user's tags replace derive's own.

        Without tags the card keeps derive's (``derive`` and its topic).

        >>> from derive.deck.cards import Card
        >>> NotesOptions.of(tags="ml WS2526").card(Card("paths/count", "Q", "A")).tags
        ('ml', 'WS2526')
        >>> NotesOptions().card(Card("paths/count", "Q", "A")).tags
        ('derive', 'paths')
        """
        if not self.tags:
            return replace(card, style=self.style)
        return replace(card, tags=self.tags, derive_tags=False, style=self.style)

    def name(self, concept: str) -> str:
        """The note name of ``concept`` (also the target of the wikilinks to it)."""
        return dict(self.names).get(concept, CONCEPTS[concept])

    @property
    def depth(self) -> int:
        """The deepest depth tabulated: the figures reach it."""
        return self.depths[-1]


#: Each option by name: the options with its raw value checked and set.
_SETTERS: dict[str, Callable[[NotesOptions, object], NotesOptions]] = {
    "tags": lambda options, value: replace(options, tags=check_tags(value)),
    "deck": lambda options, value: replace(options, deck=check_deck(value)),
    "style": lambda options, value: replace(options, style=check_style(value)),
    "names": lambda options, value: replace(options, names=check_names(value)),
    "concepts": lambda options, value: replace(options, concepts=check_concepts(value)),
    "blocks": lambda options, value: replace(options, blocks=check_blocks(value)),
    "depths": lambda options, value: replace(options, depths=check_depths(value)),
}


def find_config(out: str | Path, cwd: str | Path | None = None) -> Path | None:
    """The project file: ``derive.toml`` in the output folder, else in ``cwd``.

    >>> find_config("/nonexistent", "/nonexistent") is None
    True
    """
    for folder in (Path(out), Path.cwd() if cwd is None else Path(cwd)):
        candidate = folder / FILE_NAME
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name the file system cannot hold: the output check says so
            continue
    return None


def read_config(path: str | Path) -> dict[str, object]:
    """The ``[notes]`` table of a project file, its keys checked (values later).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "derive.toml"
    >>> _ = f.write_text('[notes]\\ndeck = "ML"\\n')
    >>> read_config(f)
    {'deck': 'ML'}
    >>> _ = f.write_text('[notes]\\ndek = "ML"\\n')
    >>> read_config(f)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: ...derive.toml: unknown key notes.dek: allowed are format, depth, ...
    """
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DeriveError(f"{path}: cannot read it: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise DeriveError(f"{path}: not valid TOML: {err}") from None
    for key in data:
        if key != "notes":
            raise DeriveError(f"{path}: unknown table or key {key!r}: derive reads [notes]")
    table = data.get("notes", {})
    if not isinstance(table, dict):
        raise DeriveError(f"{path}: notes must be a table ([notes])")
    for key in table:
        if key not in KEYS:
            raise DeriveError(f"{path}: unknown key notes.{key}: allowed are {', '.join(KEYS)}")
    return dict(table)


def resolve(given: Mapping[str, object], out: str | Path,
            config: str | Path | None = None) -> tuple[dict[str, object], Path | None]:
    """Merge command-line values (None: not given) over the project file's.

    Returns the merged raw values and the file read (or None). Errors in a
    file's values name the file.

    >>> merged, path = resolve({"deck": "ML", "tags": None}, "/nonexistent", None)
    >>> merged["deck"], path
    ('ML', None)
    """
    if config is None:
        path = find_config(out)
    else:
        path = Path(config)
        if not path.is_file():
            raise DeriveError(f"config file {path} does not exist")
    from_file = read_config(path) if path is not None else {}
    merged = dict(from_file)
    merged.update({key: value for key, value in given.items() if value is not None})
    if path is not None:
        _check_file_values(path, from_file)
    return merged, path


def _check_file_values(path: Path, from_file: Mapping[str, object]) -> None:
    """Check the values of a project file's ``[notes]`` table; errors name the file."""
    try:
        NotesOptions.of(**{k: v for k, v in from_file.items() if k not in ("format", "depth")})
    except DeriveError as err:
        raise DeriveError(f"{path}: notes.{err}") from None
    try:
        formats_and_depth(from_file)
    except DeriveError as err:
        raise DeriveError(f"{path}: {err}") from None


def formats_and_depth(values: Mapping[str, object]) -> tuple[list[str], int]:
    """The formats and the depth of the path sum in merged raw values (by default all
    formats and 4 blocks), each checked.

    >>> formats_and_depth({"format": "obsidian"})
    (['obsidian'], 4)
    >>> formats_and_depth({"format": ["latex", "anki"], "depth": 2})
    (['latex', 'anki'], 2)
    >>> formats_and_depth({"depth": 11})
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: notes.depth = 11 is not allowed: an integer from 1 to 10
    """
    formats = values.get("format", "all")
    chosen = [formats] if isinstance(formats, str) else formats
    if not isinstance(chosen, list) or not chosen or any(f not in FORMATS for f in chosen):
        raise DeriveError(f"notes.format = {formats!r} is not allowed: choose "
                          f"among {', '.join(FORMATS)}")
    depth = values.get("depth", 4)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 10:
        raise DeriveError(f"notes.depth = {depth!r} is not allowed: an integer from 1 to 10")
    return chosen, depth


def options_of(values: Mapping[str, object]) -> NotesOptions:
    """The NotesOptions of merged raw values (format and depth are left out).

    >>> options_of({"deck": "ML", "depth": 4}).deck
    'ML'
    """
    return NotesOptions.of(**{k: v for k, v in values.items() if k not in ("format", "depth")})

