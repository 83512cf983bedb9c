"""Anki cards as Obsidian_to_Anki blocks, regenerated without losing their IDs.

A :class:`Card` renders as one block of the Obsidian_to_Anki plugin's format,
preceded by a comment line that carries its stable key (the plugin ignores
it)::

    <!-- card: paths/count -->
    START
    Basic
    How many terms has $dy/dx$ for $N$ blocks?
    Back:
    $2^{N}$
    Tags: derive paths
    END

When the plugin syncs the note it adds an ID line, ``<!--ID: 1700000000000-->``,
just before ``END``; that line ties the block to its note in Anki.

Every front and back is checked against the plugin's rules: no line that the
plugin would read as syntax (``START``, ``END``, ``Back:``, ``Tags:``, an ID ...),
``$x$`` with no space just inside the dollars, and no ``'`` inside math.
Regions of generated notes and their ID-preserving regeneration live in
:mod:`derive.vault.regions`.

:func:`parse_plugin_notes` reads blocks with the plugin's own rules; the
``.apkg`` writer lives in :mod:`derive.deck.apkg`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from derive.errors import DeriveError

_NAME = r"[A-Za-z0-9][A-Za-z0-9_./-]*"
_NAME_RE = re.compile(_NAME)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_:./-]*")
_KEY_RE = re.compile(rf"<!-- card: ({_NAME}) -->")
#: The plugin's rules: a note is ``^START\n(...\n)END`` (multiline), its ID
#: sits on the note's last line, its tags on the line before.
_PLUGIN_NOTE_RE = re.compile(r"^START\n([\s\S]*?\n)END", re.M)
_PLUGIN_ID_RE = re.compile(r"(?:<!--)?ID: (\d+)")
_TAGS_PREFIX = "Tags: "
#: Line starts that the plugin (or derive's markers) would read as syntax.
_RESERVED_STARTS = (
    "START", "END", "Front:", "Back:", "Tags:", "TARGET DECK", "FILE TAGS",
    "DELETE", "FROZEN", "<!-- card:", "<!-- derive:",
)
#: The note types (card styles) and their fields, as the plugin and Anki name them.
_FIELDS = {"Basic": ("Front", "Back"), "Basic (and reversed card)": ("Front", "Back"),
           "Cloze": ("Text", "Back Extra")}
#: The note types derive writes, as the first line of a block.
NOTE_TYPES = tuple(_FIELDS)
_MATH_RE = re.compile(r"\\\$|\$\$(.+?)\$\$|\$([^$\n]*)\$|\$", re.S)
_PRIME_RE = re.compile(r"('+)(?:\^(\{[^{}]*\}|\\[A-Za-z]+|[A-Za-z0-9]))?")


def check_name(value: object, what: str = "card key") -> str:
    """Validate a card key, region name or topic: ``a/b-c.d``, no spaces, no ``--``.

    >>> check_name("paths/count")
    'paths/count'
    >>> check_name("my key")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: card key 'my key' is not allowed: use letters, digits, ...
    """
    if (not isinstance(value, str) or not _NAME_RE.fullmatch(value) or "--" in value
            or value.endswith(("-", "/"))):
        raise DeriveError(
            f"{what} {value!r} is not allowed: use letters, digits, '_', '.', '-' and '/', "
            "starting with a letter or digit, without '--'"
        )
    return value


def fix_math(text: str, where: str = "card") -> str:
    """Make ``$...$`` math safe for the plugin: no space inside, no ``'`` (primes).

    Inline math loses spaces just inside its dollars; primes become
    ``^{\\prime}``; an unbalanced ``$``, an escaped ``\\$`` (the plugin has no
    escape) or math directly followed by ``$`` raises DeriveError.

    >>> print(fix_math("$ f'(x) $ and $$g''^{2}$$"))
    $f^{\\prime}(x)$ and $$g^{\\prime\\prime 2}$$
    """

    def primes(math: str) -> str:
        def one(m: re.Match[str]) -> str:
            marks = "\\prime" * len(m.group(1))
            sup = m.group(2)
            if sup is None:
                return f"^{{{marks}}}"
            return f"^{{{marks} {sup[1:-1] if sup.startswith('{') else sup}}}"

        return _PRIME_RE.sub(one, math)

    def one(m: re.Match[str]) -> str:
        whole, display, inline = m.group(0), m.group(1), m.group(2)
        if whole == "\\$":
            raise DeriveError(
                f"{where}: '\\$' in {text!r}: the plugin has no escape for '$'; write 'dollars'"
            )
        if text.startswith("$", m.end()) and (display is not None or inline is not None):
            raise DeriveError(
                f"{where}: math directly followed by '$' in {text!r}; the plugin would not "
                "convert it: put a space between the two formulas"
            )
        if display is not None and "$" not in display:
            return f"$${primes(display)}$$"
        if inline is None or display is not None:
            raise DeriveError(
                f"{where}: unbalanced '$' in {text!r}; close the math "
                "(the plugin cannot show a dollar sign)"
            )
        if not inline.strip():
            raise DeriveError(f"{where}: empty math '$$' in {text!r}")
        return f"${primes(inline.strip())}$"

    return _MATH_RE.sub(one, text)


def _check_field(text: str, what: str) -> str:
    """Normalise a front or back and refuse lines the plugin would misread."""
    if not isinstance(text, str):
        raise DeriveError(f"{what} must be text, got {type(text).__name__}")
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise DeriveError(f"{what} is empty")
    text = fix_math(text, what)
    for line in text.split("\n"):
        if line.startswith(_RESERVED_STARTS) or "STARTI" in line or _PLUGIN_ID_RE.search(line):
            raise DeriveError(
                f"{what}: line {line!r} would be read as Obsidian_to_Anki syntax; lines must not "
                f"start with {', '.join(_RESERVED_STARTS)} or hold 'STARTI' or 'ID: <number>'"
            )
    return text


@dataclass(frozen=True)
class Card:
    """One card: a stable key, a front and a back (Markdown, ``$`` math), tags, a style.

    ``style`` is the note type: ``Basic``, ``Basic (and reversed card)`` or
    ``Cloze`` (the front, then the back as cloze deletion ``{{c1::...}}``).

    Tags begin with derive's own, ``derive`` and the topic (the key's first
    part); with ``derive_tags=False`` they are ``tags`` alone (the user's
    choice). The math is fixed with :func:`fix_math`; lines the plugin would
    misread raise DeriveError.

    >>> card = Card("paths/count", "Terms of $dy/dx$ for $N$ blocks?", "$ 2^N $")
    >>> card.back, card.tags
    ('$2^N$', ('derive', 'paths'))
    >>> Card("paths/count", "Q", "A", ("ml", "WS2526"), derive_tags=False).tags
    ('ml', 'WS2526')
    >>> print(card.block(note_id=1700000000000))
    <!-- card: paths/count -->
    START
    Basic
    Terms of $dy/dx$ for $N$ blocks?
    Back:
    $2^N$
    Tags: derive paths
    <!--ID: 1700000000000-->
    END
    <BLANKLINE>
    """

    key: str
    front: str
    back: str
    tags: tuple[str, ...] = field(default=())
    style: str = "Basic"
    derive_tags: bool = True

    def __post_init__(self) -> None:
        check_name(self.key)
        if self.style not in _FIELDS:
            raise DeriveError(f"card {self.key!r}: style {self.style!r} is not one of "
                              f"{', '.join(_FIELDS)}")
        object.__setattr__(self, "front", _check_field(self.front, f"card {self.key!r} front"))
        object.__setattr__(self, "back", _check_field(self.back, f"card {self.key!r} back"))
        if isinstance(self.tags, str):
            raise DeriveError(f"card {self.key!r}: tags must be a tuple of names, not a string")
        tags: list[str] = []
        own = ("derive", self.key.split("/")[0]) if self.derive_tags else ()
        for tag in (*own, *self.tags):
            if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
                raise DeriveError(
                    f"card {self.key!r}: tag {tag!r} is not allowed: no spaces; letters, digits "
                    "and _ : . / -"
                )
            if tag not in tags:
                tags.append(tag)
        object.__setattr__(self, "tags", tuple(tags))

    def block(self, note_id: int | None = None) -> str:
        """The card's key line and Obsidian_to_Anki block, LF-terminated."""
        id_line = "" if note_id is None else f"<!--ID: {int(note_id)}-->\n"
        body = (f"{self.cloze_text}\n" if self.style == "Cloze"
                else f"{self.front}\nBack:\n{self.back}\n")
        tags = f"{_TAGS_PREFIX}{' '.join(self.tags)}\n" if self.tags else ""
        return f"<!-- card: {self.key} -->\nSTART\n{self.style}\n{body}{tags}{id_line}END\n"

    @property
    def cloze_text(self) -> str:
        """The front, then the back as cloze deletion (``}}`` inside spaced apart).

        >>> Card("a/x", "Which?", "$x_{a_{1}}$", style="Cloze").cloze_text
        'Which?\\n{{c1::$x_{a_{1} }$}}'
        """
        back = self.back
        while "}}" in back:
            back = back.replace("}}", "} }")
        if back.endswith("}"):
            back += " "
        return f"{self.front}\n{{{{c1::{back}}}}}"


def card_blocks(cards: Iterable[Card]) -> str:
    """The blocks of ``cards``, a blank line apart; keys must be unique.

    >>> print(card_blocks([Card("a/x", "Q", "A")]), end="")
    <!-- card: a/x -->
    START
    Basic
    Q
    Back:
    A
    Tags: derive a
    END
    """
    cards = list(cards)
    seen: set[str] = set()
    for card in cards:
        if not isinstance(card, Card):
            raise DeriveError(f"expected Card objects, got {type(card).__name__}")
        if card.key in seen:
            raise DeriveError(f"card key {card.key!r} appears twice; keys must be unique")
        seen.add(card.key)
    return "\n".join(card.block() for card in cards)


@dataclass(frozen=True)
class PluginNote:
    """A note as the Obsidian_to_Anki plugin reads it (fields still Markdown).

    ``id_at`` is where the plugin inserts a new ID line (just before ``END``).

    >>> parse_plugin_notes(Card("a/x", "Q", "A").block(7))[0].fields
    {'Front': 'Q', 'Back': 'A'}
    """

    note_type: str
    fields: dict[str, str]
    tags: tuple[str, ...]
    note_id: int | None
    key: str | None
    id_at: int


def parse_plugin_notes(text: str) -> list[PluginNote]:
    """Read every ``START`` ... ``END`` note of ``text`` by the plugin's rules.

    >>> note = parse_plugin_notes(Card("a/x", "Q", "A", ("t",)).block(7))[0]
    >>> note.note_type, note.tags, note.note_id, note.key
    ('Basic', ('derive', 'a', 't'), 7, 'a/x')
    """
    notes = []
    for match in _PLUGIN_NOTE_RE.finditer(text):
        lines = match.group(1).strip().split("\n")
        note_id = None
        found = _PLUGIN_ID_RE.search(lines[-1])
        if found:
            note_id = int(found.group(1))
            lines.pop()
        tags: tuple[str, ...] = ()
        if lines and lines[-1].startswith(_TAGS_PREFIX):
            tags = tuple(lines.pop()[len(_TAGS_PREFIX):].split(" "))
        if not lines or lines[0] not in _FIELDS:
            kind = lines[0] if lines else ""
            raise DeriveError(f"note type {kind!r} is not one of {', '.join(_FIELDS)}")
        names = _FIELDS[lines[0]]
        fields = dict.fromkeys(names, "")
        current = names[0]
        for line in lines[1:]:
            for name in names:
                if line.startswith(name + ":"):
                    line, current = line[len(name) + 1 :], name
                    break
            fields[current] += line + "\n"
        before = text[: max(match.start() - 1, 0)].rsplit("\n", 1)[-1]
        key = _KEY_RE.fullmatch(before)
        notes.append(PluginNote(
            lines[0], {name: value.strip() for name, value in fields.items()}, tags,
            note_id, key.group(1) if key else None, match.end(1),
        ))
    return notes
