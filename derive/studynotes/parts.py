"""The parts a study note is made of: a Section, and the helpers that write its prose.

A section is one concept: its key results (each with its reason), the
assumptions it rests on (stated once), derivations, tables, figures, links
and cards. Prose links to other concepts by key, ``[[variance|text]]``;
:func:`resolve_links` turns the keys into the note names the user chose.

>>> Section("demo", "Demo", ("a result: its reason",), ()).key_results
('a result: its reason',)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sympy

from derive.deck.cards import Card
from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError
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
    three digits stay fractions, a decimal of at most 8 significant digits is written
    in full (``1.0001``, not ``1``), everything else is a decimal of ``digits``
    significant digits.

    >>> number(1024), number(sympy.Rational(3, 2)), number(sympy.Rational(30001, 20000))
    ('$1024$', '$\\\\frac{3}{2}$', '1.50005')
    """
    expr = sympy.sympify(value)
    if expr.is_Integer and abs(expr) < 10**6:
        return math(expr)
    if expr.is_Rational and abs(expr.p) < 1000 and expr.q < 1000:
        return math(expr)
    decimal = _terminating(expr)
    if decimal is not None:
        return decimal
    as_float = float(expr)
    if 10**4 <= abs(as_float) < 10**6:
        return f"{as_float:.0f}"
    if as_float != 0 and (abs(as_float) >= 10**6 or abs(as_float) < 1e-3):
        mantissa, exponent = f"{as_float:.{digits - 1}e}".split("e")
        return f"${mantissa} \\cdot 10^{{{int(exponent)}}}$"
    return f"{as_float:.{digits}g}"


def _terminating(value: sympy.Expr, digits: int = 8) -> str | None:
    """A rational between 10^-3 and 10^4 whose decimal ends within ``digits`` significant
    digits, written in full (``10001/10000`` -> ``1.0001``), so that a value close to a round
    number is not printed as that number; else None.

    >>> _terminating(sympy.Rational(10001, 10000)), _terminating(sympy.Rational(1, 3))
    ('1.0001', None)
    """
    if not value.is_Rational or value.is_Integer or not 1e-3 <= abs(value) < 10**4:
        return None
    denominator = int(value.q)
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return None
    from decimal import Decimal

    shown = Decimal(int(value.p)) / Decimal(int(value.q))
    if len(shown.normalize().as_tuple().digits) > digits:
        return None
    return format(shown.normalize(), "f")


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
    from derive.recursions.analysis import one_point, variance

    return one_point(variance("he", "relu", block=block, final_norm=final_norm))


def last_weight(block: str, final_norm: bool = False) -> sympy.Expr:
    """w_K, the last block's weight gradient as a function of the depth K, of ``block``
    under He and ReLU (with a final LayerNorm if ``final_norm``): the blocks the notes
    name have it in closed form, another raises a DeriveError.

    >>> last_weight("pre", True)
    1/(2*K + 2*q_0)
    """
    weights = he_relu(block, final_norm).weights
    last = weights.last
    if last is None:
        raise DeriveError(f"{block}: the last block's weight gradient has no closed form")
    return last.rhs


@dataclass(frozen=True)
class FinalNorm:
    """What a final LayerNorm does to pre-LN's gradients, against post-LN (He, ReLU), derived
    from ``derive.variance(..., final_norm=...)``: the notes' words on Xiong et al. (2020)."""

    #: q_K of pre-LN, the moment the final LN divides by.
    q_last: sympy.Expr
    #: The factor the final LN puts on the gradient's second moment: w_K with / without it.
    scale: sympy.Expr
    #: d_0 with the final LN (d_K = 1 before it): the gradient at the input.
    first: sympy.Expr
    #: The last block's weight gradient w_K: pre-LN with a final LN, post-LN.
    pre_last: sympy.Expr
    post_last: sympy.Expr
    #: sqrt(w_K) of pre-LN, the size of the gradient (its root mean square), and its order.
    pre_norm: sympy.Expr
    pre_norm_order: sympy.Expr
    #: post-LN's w_K over pre-LN's.
    ratio: sympy.Expr

    def sentence(self) -> str:
        """The final LN's effect in one sentence (second moment, gradient, Xiong's norm).

        >>> final_norm().sentence().split(" (")[0]
        "the final LN scales the gradient's second moment by $\\\\frac{1}{K + q_{0}}$"
        """
        return (f"the final LN scales the gradient's second moment by ${latex(self.scale)}$ "
                f"($\\gamma^2/q_K$ with $q_K = {latex(self.q_last)}$), the gradient itself by "
                f"$1/\\sqrt{{q_K}}$; Xiong et al. bound the gradient's norm, here "
                f"$\\sqrt{{w_K}} = {latex(self.pre_norm)}$, of order "
                f"${latex(self.pre_norm_order)}$, and $w_K$ is its square")


    def reconciliation(self) -> str:
        """Why pre-LN is called the more stable although its d_0/d_K grows (Xiong et al.
        2020), and what the model leaves out, from the derived values.

        >>> final_norm().reconciliation().split("?")[0]
        'Which is more stable'
        """
        from derive.derivation.symbols import K

        post = he_relu("post").backward.solved.rhs
        if isinstance(post, sympy.Piecewise):  # K = 0, then K >= 1
            post = post.args[-1].expr
        pre = he_relu("pre").backward.solved.rhs
        shrink = sympy.limit(self.pre_last * K, K, sympy.oo)
        return (
            "Which is more stable? $d_0/d_K$ says how the gradient grows from the output back "
            "to the input, not how large it is. Under He and ReLU, post-LN keeps "
            f"$d_0/d_K = {latex(post)}$ and the last block's weight gradient at "
            f"$w_K = {latex(self.post_last)}$ at every depth. Pre-LN's ratio grows as "
            f"${latex(pre)}$, but a final LN (as pre-LN transformers have) scales the "
            f"gradient's second moment by ${latex(self.scale)}$: with a gradient of second "
            f"moment 1 at its output, the input's is $d_0 = {latex(self.first)}$ and "
            f"$w_K = {latex(self.pre_last)}$ (about ${latex(shrink / K)}$), "
            f"${latex(self.ratio)}$ times smaller than post-LN's. This is Xiong et al. "
            "(2020)'s account of pre-LN's stability: at initialization post-LN's gradients "
            "near the output are large whatever the depth, pre-LN's shrink with it. The model "
            "covers initialization only: not training, the optimizer (Adam, the learning rate "
            "and its schedule), finite width or attention.")


@functools.cache
def final_norm() -> FinalNorm:
    """Pre-LN with a final LayerNorm against post-LN under He and ReLU, derived.

    >>> final_norm().first
    1/q_0
    """
    from derive.derivation.symbols import K, d

    pre_final = he_relu("pre", True)
    pre_last = last_weight("pre", True)
    scale = sympy.factor(sympy.simplify(pre_last / last_weight("pre")))
    ratio_rhs = pre_final.backward.solved
    if ratio_rhs.lhs != d(0) / d(K):  # pragma: no cover (the API's form changed)
        raise AssertionError("d_0/d_K")
    first = sympy.simplify(scale * ratio_rhs.rhs)
    norm = sympy.sqrt(pre_last)
    order = sympy.Pow(sympy.sqrt(K), -1, evaluate=False)
    if not sympy.limit(norm / order, K, sympy.oo).is_positive:  # pragma: no cover
        raise AssertionError("the order of the gradient's norm")
    post_last = last_weight("post", True)
    return FinalNorm(q_last=pre_final.forward.solved.rhs, scale=scale, first=first,
                     pre_last=pre_last, post_last=post_last, pre_norm=norm,
                     pre_norm_order=order, ratio=sympy.factor(post_last / pre_last))


def card(key: str, front: str, back: str | Step | sympy.Expr) -> Card:
    """A card whose back is prose, a Step or an expression (shown as math).

    >>> card("demo/x", "Square of $x$?", sympy.Symbol("x") ** 2).back
    '$x^{2}$'
    """
    if isinstance(back, Step):
        back = f"${back.latex()}$"
    elif not isinstance(back, str):
        back = math(back)
    return Card(key, front, back)


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
