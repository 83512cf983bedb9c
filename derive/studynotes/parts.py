"""The parts a study note is made of: a Section, and the helpers that write its prose.

A section is one concept: its key results (each with its reason), the
assumptions it rests on (stated once), derivations, tables, figures, links
and cards. Prose links to other concepts by key, ``[[variance|text]]``;
:func:`resolve_links` turns the keys into the note names the user chose.

>>> Section("demo", "Demo", ("a result: its reason",), ()).key_results
('a result: its reason',)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sympy

from derive.deck.cards import Card
from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step
from derive.rendering.render import Figure, Table

if TYPE_CHECKING:  # pragma: no cover
    from derive.recursions.analysis import VarianceAnalysis

_LINK_RE = re.compile(r"\[\[([^\]|]*)(?:\|([^\]]*))?\]\]")


@dataclass(frozen=True)
class Section:
    """One concept: key results, assumptions, derivations, tables, figures, links, cards."""

    key: str
    title: str
    key_results: tuple[str, ...]
    derivations: tuple[Derivation, ...]
    assumptions: tuple[str, ...] = ()
    intro: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    links: tuple[str, ...] = ()
    cards: tuple[Card, ...] = ()
    problems: tuple[tuple[str, str], ...] = ()


def math(expr: object) -> str:
    """Inline math of an expression, for prose and table cells.

    >>> math(sympy.Symbol("q_0") * 2)
    '$2 q_{0}$'
    """
    return f"${latex(expr)}$"


def number(value: object, digits: int = 4) -> str:
    """A value as a reader wants it: a short exact form, else a decimal.

    Integers stay exact below a million, fractions whose parts have at most
    three digits stay fractions, everything else is a decimal of ``digits``
    significant digits.

    >>> number(1024), number(sympy.Rational(3, 2)), number(sympy.Rational(30001, 20000))
    ('$1024$', '$\\\\frac{3}{2}$', '1.5')
    """
    value = sympy.sympify(value)
    if value.is_Integer and abs(value) < 10**6:
        return math(value)
    if value.is_Rational and abs(value.p) < 1000 and value.q < 1000:
        return math(value)
    as_float = float(value)
    if 10**4 <= abs(as_float) < 10**6:
        return f"{as_float:.0f}"
    if as_float != 0 and (abs(as_float) >= 10**6 or abs(as_float) < 1e-3):
        mantissa, exponent = f"{as_float:.{digits - 1}e}".split("e")
        return f"${mantissa} \\cdot 10^{{{int(exponent)}}}$"
    return f"{as_float:.{digits}g}"


def readable(expr: sympy.Expr) -> sympy.Expr:
    """An expression with long fractions as short decimals (``30001/20000`` -> 1.50005).

    >>> readable(sympy.Rational(30001, 20000) ** sympy.Symbol("K"))
    1.50005**K
    """
    def long(atom: sympy.Basic) -> bool:
        return bool(atom.is_Rational and not atom.is_Integer
                    and (atom.q > 1000 or abs(atom.p) > 1000))

    return expr.replace(long, lambda r: sympy.Float(float(r), 6))


def he_relu(block: object, final_norm: bool = False) -> VarianceAnalysis:
    """The variance analysis of ``block`` (a preset, an expression or a Block) under He
    initialization and ReLU, the setting of the notes' tables across blocks.

    >>> he_relu("pre").forward.closed_form.rhs
    K + q_0
    """
    from derive.recursions.analysis import variance

    return variance("he", "relu", block=block, final_norm=final_norm)  # type: ignore[arg-type]


def card(key: str, front: str, back: str | Step | sympy.Expr, **kwargs: object) -> Card:
    """A card whose back is prose, a Step or an expression (shown as math).

    >>> card("demo/x", "Square of $x$?", sympy.Symbol("x") ** 2).back
    '$x^{2}$'
    """
    if isinstance(back, Step):
        back = f"${back.latex()}$"
    elif not isinstance(back, str):
        back = math(back)
    return Card(key, front, back, **kwargs)


def plural(count: int, word: str) -> str:
    """``1 block``, ``2 blocks``.

    >>> plural(1, "block"), plural(3, "path")
    ('1 block', '3 paths')
    """
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def resolve_links(prose: str, name: Callable[[str], str | None]) -> str:
    """``[[key|text]]`` -> ``[[Note name|text]]``; a link to a left-out note -> its text.

    >>> names = {"layer-norm": "nn layer norm"}.get
    >>> resolve_links("see [[layer-norm|LN]] and [[variance|variance]]", names)
    'see [[nn layer norm|LN]] and variance'
    """
    def one(m: re.Match[str]) -> str:
        target, text = m[1], m[2]
        note = name(target)
        if note is None:
            return text or target
        return f"[[{note}|{text}]]" if text else f"[[{note}]]"

    return _LINK_RE.sub(one, prose)


def with_links(section: Section, name: Callable[[str], str | None]) -> Section:
    """The section with every link in its prose resolved, and its link list named.

    >>> s = Section("a", "A", ("see [[b|B]]",), (), links=("b",))
    >>> with_links(s, {"b": "Note B"}.get).key_results, with_links(s, {}.get).links
    (('see [[Note B|B]]',), ())
    """
    fix = lambda items: tuple(resolve_links(p, name) for p in items)  # noqa: E731
    links = tuple(n for n in (name(key) for key in section.links) if n is not None)
    return replace(section, key_results=fix(section.key_results), intro=fix(section.intro),
                   assumptions=fix(section.assumptions), links=links,
                   problems=tuple((resolve_links(q, name), resolve_links(a, name))
                                  for q, a in section.problems))
