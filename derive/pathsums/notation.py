"""How a path term is written: the book's notation or Jacobians, LaTeX or text.

A term of the path sum is the tuple of its Jacobians' block indices, left to
right, e.g. ``(4, 3, 2)`` for J_4 J_3 J_2; ``()`` is the identity path I.
``wrt`` is a :class:`derive.pathsums.limits.Wrt`: the block j of dy/df_j, or 0 for dy/dx.
A factor is reached from a block index too, 0 for the input x.

Two notations:

- ``"udl"`` (Prince, Understanding Deep Learning, eq. 11.6): the factor J_a
  reached from block b is written df_a/df_b, where b is the index of the next
  factor to its right, or j (or x) for the rightmost factor. A term of one
  factor is written bare, a longer one as a product of parenthesized factors:
  (∂f₃/∂f₂)(∂f₂/∂f₁).
- ``"jacobian"``: J₄J₃J₂ in text, ``J_{4} J_{3} J_{2}`` in LaTeX.

This module imports no SymPy, so the command line streams text fast.
"""

from __future__ import annotations

import decimal
import itertools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from derive.errors import DeriveError, choice_error
from derive.pathsums.limits import MAX_BLOCKS, Wrt, check_path_args

if TYPE_CHECKING:  # pragma: no cover
    import sympy

NOTATIONS = ("udl", "jacobian")
#: Estimated widths (in em, display style) used to break long sums over lines.
LINE_WIDTH = 32.0
_PLUS_WIDTH = 1.6
#: The text streamer builds the terms of this many low blocks once (1024 a chunk).
LOW_BITS = 10
#: Numbers with more digits than this are written in scientific notation.
MAX_DIGITS = 4300
_LIMIT = 10**MAX_DIGITS

_SUB = str.maketrans("0123456789k", "₀₁₂₃₄₅₆₇₈₉ₖ")

Term = tuple[int, ...]
#: The default ``wrt``: dy/df_1.
FIRST = Wrt(1)


def check_notation(notation: object) -> str:
    """Return ``notation`` if it is one of NOTATIONS, else raise DeriveError.

    >>> check_notation("udl")
    'udl'
    """
    if notation not in NOTATIONS:
        raise choice_error("notation", notation, NOTATIONS)
    return str(notation)


def subscript(index: int | str) -> str:
    """Unicode subscript digits of a block index (or of the letter k, any block).

    >>> subscript(12), subscript("k")
    ('₁₂', 'ₖ')
    """
    return str(index).translate(_SUB)


def _base_text(right: int) -> str:
    return "x" if right == 0 else "f" + str(right).translate(_SUB)


def _base_latex(right: int) -> str:
    return "x" if right == 0 else f"f_{{{right}}}"


def gradient_text(wrt: Wrt = FIRST) -> str:
    """The left-hand side dy/df_j (or dy/dx) as Unicode text.

    >>> gradient_text(Wrt(1)), gradient_text(Wrt(0))
    ('∂y/∂f₁', '∂y/∂x')
    """
    return f"∂y/∂{_base_text(wrt.start)}"


def gradient_latex(wrt: Wrt = FIRST) -> str:
    """The left-hand side dy/df_j (or dy/dx) in LaTeX.

    >>> gradient_latex(Wrt(2))
    '\\\\frac{\\\\partial y}{\\\\partial f_{2}}'
    """
    return f"\\frac{{\\partial y}}{{\\partial {_base_latex(wrt.start)}}}"


def factor_text(block: int, right: int, notation: str = "udl") -> str:
    """One factor J_block, reached from block ``right`` (0: the input x), as text.

    >>> factor_text(4, 3), factor_text(2, 0), factor_text(4, 3, "jacobian")
    ('∂f₄/∂f₃', '∂f₂/∂x', 'J₄')
    """
    if notation == "jacobian":
        return "J" + str(block).translate(_SUB)
    return f"∂f{str(block).translate(_SUB)}/∂{_base_text(right)}"


def factor_latex(block: int, right: int, notation: str = "udl") -> str:
    """One factor J_block, reached from block ``right`` (0: the input x), in LaTeX.

    >>> factor_latex(4, 3, "jacobian")
    'J_{4}'
    >>> print(factor_latex(2, 0))
    \\frac{\\partial f_{2}}{\\partial x}
    """
    if notation == "jacobian":
        return f"J_{{{block}}}"
    return f"\\frac{{\\partial f_{{{block}}}}}{{\\partial {_base_latex(right)}}}"


def pairs(term: Term, start: int) -> Iterator[tuple[int, int]]:
    """Pairs (block, reached from): the next factor's block, or ``start`` (wrt's) for the last.

    >>> list(pairs((4, 3, 2), 1))
    [(4, 3), (3, 2), (2, 1)]
    """
    for i, block in enumerate(term):
        yield block, term[i + 1] if i + 1 < len(term) else start


def term_text(
    term: Term, wrt: Wrt = FIRST, notation: str = "udl", max_factors: int | None = None
) -> str:
    """A term as Unicode text: ``I``, a bare factor, or a product of factors.

    Past ``max_factors`` factors the middle ones are elided (``⋯``).

    >>> term_text((3, 2)), term_text((4,)), term_text(())
    ('(∂f₃/∂f₂)(∂f₂/∂f₁)', '∂f₄/∂f₁', 'I')
    >>> term_text((4, 3, 2), notation="jacobian"), term_text((5, 4, 3, 2), max_factors=3)
    ('J₄J₃J₂', '(∂f₅/∂f₄)(∂f₄/∂f₃)⋯(∂f₂/∂f₁)')
    """
    if not term:
        return "I"
    factors: list[str] = [factor_text(a, b, notation) for a, b in pairs(term, wrt.start)]
    if max_factors is not None and len(factors) > max_factors:
        factors = [*factors[:2], "⋯", factors[-1]]
    if notation == "udl" and len(factors) > 1:
        return "".join(f if f == "⋯" else f"({f})" for f in factors)
    return "".join(factors)


def term_latex(
    term: Term, wrt: Wrt = FIRST, notation: str = "udl", max_factors: int | None = None
) -> str:
    """A term in LaTeX: ``I`` or the factors side by side (``\\cdots`` past ``max_factors``).

    >>> term_latex((4, 3, 2), notation="jacobian")
    'J_{4} J_{3} J_{2}'
    >>> print(term_latex((3, 2)))
    \\frac{\\partial f_{3}}{\\partial f_{2}} \\frac{\\partial f_{2}}{\\partial f_{1}}
    """
    if not term:
        return "I"
    factors = [factor_latex(a, b, notation) for a, b in pairs(term, wrt.start)]
    if max_factors is not None and len(factors) > max_factors:
        factors = [*factors[:2], "\\cdots", factors[-1]]
    return " ".join(factors)


def sum_text(terms: Iterable[Term], wrt: Wrt = FIRST, notation: str = "udl") -> str:
    """The sum of ``terms`` as one line of text, e.g. ``I + J₂``.

    >>> sum_text([(), (2,)], notation="jacobian")
    'I + J₂'
    """
    return " + ".join(term_text(t, wrt, notation) for t in terms)


def sum_latex(terms: Iterable[Term], wrt: Wrt = FIRST, notation: str = "udl") -> str:
    """The sum of ``terms`` as one line of LaTeX.

    >>> sum_latex([(), (2,), (3, 2)], notation="jacobian")
    'I + J_{2} + J_{3} J_{2}'
    """
    return " + ".join(term_latex(t, wrt, notation) for t in terms)


def _factor_width(block: int, notation: str) -> float:
    digits = len(str(block))
    return (0.9 if notation == "jacobian" else 1.8) + 0.4 * digits


class _LatexFactors:
    """Each term's factors (block, reached from), their LaTeX and the estimated widths,
    built once for each block or pair and reused."""

    __slots__ = ("notation", "pieces", "start", "widths")

    def __init__(self, wrt: Wrt, notation: str) -> None:
        self.start, self.notation = wrt.start, notation
        self.widths: dict[int, float] = {}
        self.pieces: dict[tuple[int, int], str] = {}

    def factors(self, term: Term) -> list[tuple[int, int]]:
        """The term's (block, reached from) pairs, left to right."""
        return [*itertools.pairwise(term), (term[-1], self.start)] if term else []

    def width(self, term: Term) -> float:
        """The term's estimated width in em (``I`` for the identity)."""
        if not term:
            return 0.8
        for block in term:
            if block not in self.widths:
                self.widths[block] = _factor_width(block, self.notation)
        return sum(self.widths[block] for block in term)

    def latex(self, factors: list[tuple[int, int]]) -> str:
        """The factors side by side."""
        for pair in factors:
            if pair not in self.pieces:
                self.pieces[pair] = factor_latex(*pair, self.notation)
        return " ".join([self.pieces[pair] for pair in factors])


class _AlignRows:
    """The rows of an ``align`` environment as they fill: the row being written, the
    width it uses (em), whether it holds nothing yet, and the rows already full."""

    __slots__ = ("empty", "full", "row", "used", "width")

    def __init__(self, first: str, width: float) -> None:
        self.row, self.used, self.empty, self.width = first, 0.0, True, width
        self.full: list[str] = []

    def _next_row(self, start: str) -> None:
        self.full.append(self.row)
        self.row, self.used, self.empty = start, 0.0, True

    def plus(self, need: float) -> None:
        """The `` + `` before a term ``need`` em wide: on a new row if the term would not
        fit on this one."""
        if not self.empty and self.used + _PLUS_WIDTH + need > self.width:
            self._next_row("&\\quad ")
        self.row += "+ " if self.empty else " + "
        self.used, self.empty = self.used + _PLUS_WIDTH, False

    def fits(self, need: float) -> bool:
        return self.used + need <= self.width

    def put(self, text: str, need: float) -> None:
        self.row += text
        self.used, self.empty = self.used + need, False

    def put_long(self, factors: list[tuple[int, int]], terms: _LatexFactors) -> None:
        """A term longer than the row: its factors, continued on further rows
        (``&\\qquad``)."""
        for i, pair in enumerate(factors):
            w = terms.widths[pair[0]]
            if i and self.used + w > self.width:
                self._next_row("&\\qquad ")
            self.put(("" if self.empty or not i else " ") + factor_latex(*pair, terms.notation),
                     w)


def iter_latex_lines(
    terms: Iterable[Term],
    wrt: Wrt = FIRST,
    notation: str = "udl",
    *,
    width: float = LINE_WIDTH,
) -> Iterator[str]:
    r"""Stream the rows of an ``align`` environment holding dy/df_j = the sum.

    The first row is ``<lhs> &= ...``, the next ones ``&\quad + ...``; a row
    holds terms up to an estimated ``width`` (in em), and a term longer than a
    row continues on the next one (``&\qquad``). Rows carry no ``\\``.

    >>> rows = list(iter_latex_lines([(), (2,), (3,), (3, 2)], notation="jacobian", width=5))
    >>> for row in rows: print(row)
    \frac{\partial y}{\partial f_{1}} &= I + J_{2}
    &\quad + J_{3}
    &\quad + J_{3} J_{2}
    """
    check_notation(notation)
    factors_of = _LatexFactors(wrt, notation)
    rows = _AlignRows(f"{gradient_latex(wrt)} &= ", width)
    for index, term in enumerate(terms):
        need = factors_of.width(term)
        if index:
            rows.plus(need)
        factors = factors_of.factors(term)
        if not factors:
            rows.put("I", need)
        elif rows.fits(need):
            rows.put(factors_of.latex(factors), need)
        else:
            rows.put_long(factors, factors_of)
        if rows.full:
            yield from rows.full
            rows.full.clear()
    yield rows.row


def latex_lines(
    terms: Iterable[Term], wrt: Wrt = FIRST, notation: str = "udl", *, width: float = LINE_WIDTH
) -> list[str]:
    """The rows of :func:`iter_latex_lines` as a list (join them with ``\\\\``).

    >>> len(latex_lines([(), (2,)], notation="jacobian"))
    1
    """
    return list(iter_latex_lines(terms, wrt, notation, width=width))


def format_int(value: int, digits: int = 6) -> str:
    """An exact integer in full, or in scientific notation past MAX_DIGITS digits.

    >>> format_int(524288), format_int(3 ** 10000)
    ('524288', '1.63135e4771')
    """
    if value < 0:
        raise DeriveError(f"format_int needs a nonnegative integer, got {value!r}")
    if value < _LIMIT:
        return str(value)
    shift = value.bit_length() - 64
    return format_log10(math.log10(value >> shift) + shift * math.log10(2), digits)


def format_log10(log10: float, digits: int = 6) -> str:
    """Scientific notation of the number whose base-10 logarithm is ``log10``.

    >>> format_log10(30102.99957, 3)
    '9.99e30102'
    """
    exponent = math.floor(log10)
    mantissa = round(10 ** (log10 - exponent), digits - 1)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.{digits - 1}f}e{exponent}"


def power_of_two_scientific(exponent: int, digits: int = 6) -> str:
    """2^exponent in scientific notation, exact in every digit shown at any exponent.

    The logarithm is taken in decimal arithmetic with as many digits as the
    exponent has and ``digits`` more, so ``2^(10^18)`` is as right as ``2^10``.

    >>> power_of_two_scientific(99999), power_of_two_scientific(10), power_of_two_scientific(10**18)
    ('4.99501e30102', '1.02400e3', '1.63583e301029995663981195')
    """
    context = decimal.Context(prec=len(str(exponent)) + digits + 12)
    log10 = context.multiply(decimal.Decimal(2).log10(context), exponent)
    whole = int(log10.to_integral_value(rounding=decimal.ROUND_FLOOR))
    mantissa = context.power(decimal.Decimal(10), log10 - whole)
    shown = round(mantissa, digits - 1)
    if shown >= 10:
        shown, whole = round(shown / 10, digits - 1), whole + 1
    return f"{shown:.{digits - 1}f}e{whole}"


def format_power_of_two(exponent: int) -> str:
    """2^exponent in full when short enough, else as ``2^exponent``.

    >>> format_power_of_two(3), format_power_of_two(100000)
    ('8', '2^100000')
    """
    if exponent < 3.3 * MAX_DIGITS and 2**exponent < _LIMIT:
        return str(2**exponent)
    return f"2^{exponent}"


def binomial_row(m: int, digits: int = 6) -> Iterator[str]:
    """Stream C(m, 0), ..., C(m, m) as text (scientific past MAX_DIGITS digits).

    Exact decimal arithmetic, C(m, L+1) = C(m, L) (m - L) / (L + 1), while the
    numbers are short enough to print in full (no quadratic binary-to-decimal
    conversion); binary integers past that; the second half mirrors the first.

    >>> list(binomial_row(4))
    ['1', '4', '6', '4', '1']
    """
    context = decimal.Context(
        prec=MAX_DIGITS + 30, traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation]
    )
    value: decimal.Decimal | int = decimal.Decimal(1)
    first_half: list[str] = []
    for length in range(m // 2 + 1):
        if isinstance(value, decimal.Decimal) and value.adjusted() >= MAX_DIGITS:
            value = int(value)
        shown = str(value) if isinstance(value, decimal.Decimal) else format_int(value, digits)
        first_half.append(shown)
        yield shown
        if isinstance(value, decimal.Decimal):
            value = context.divide(context.multiply(value, m - length), length + 1)
        else:
            value = value * (m - length) // (length + 1)
    for length in range(m // 2 + 1, m + 1):
        yield first_half[m - length]


def low_terms(start: int, bits: int) -> list[Term]:
    """The terms over the blocks start+1 .. start+bits alone, in binary order (block
    start+1 the lowest bit): the ends of every term of a longer sum.

    >>> low_terms(1, 2)
    [(), (2,), (3,), (3, 2)]
    """
    blocks = range(start + bits, start, -1)  # descending: the bits bits-1 .. 0
    return [tuple(b for b in blocks if mask >> (b - start - 1) & 1) for mask in range(1 << bits)]


def high_prefixes(depth: int, top: int) -> Iterator[Term]:
    """The choices among the blocks top+1 .. depth, in binary order: what stands left of
    the low terms (:func:`low_terms` up to block ``top``).

    >>> list(high_prefixes(5, 3))
    [(), (4,), (5,), (5, 4)]
    """
    blocks = range(depth, top, -1)
    for high in range(1 << (depth - top)):
        yield tuple(b for b in blocks if high >> (b - top - 1) & 1)


class _LowTexts:
    """The text of the low terms, built once: alone (a term with no higher block), and as
    the end of a term after higher blocks, whose rightmost factor is reached from the low
    part's first block (or wrt's)."""

    def __init__(self, wrt: Wrt, bits: int, notation: str) -> None:
        self.wrt, self.notation = wrt, notation
        lows = low_terms(wrt.start, bits)
        self.alone = [term_text(low, wrt, notation) for low in lows]
        self.ends = [_product_text(low, wrt.start, notation) if low else "" for low in lows]
        reached = [low[0] if low else wrt.start for low in lows]
        #: the blocks a high part can be reached from, and which one each low term needs
        self.reached = sorted(set(reached))
        self.reached_index = [self.reached.index(r) for r in reached]

    def after(self, prefix: Term) -> str:
        """Every term with these higher blocks on the left, joined by `` + ``."""
        if not prefix:
            return " + ".join(self.alone)
        heads = [_product_text(prefix, r, self.notation) for r in self.reached]
        parts = [heads[i] + end for i, end in zip(self.reached_index, self.ends, strict=True)]
        if len(prefix) == 1:  # with the empty low part: one bare factor
            parts[0] = term_text(prefix, self.wrt, self.notation)
        return " + ".join(parts)


def iter_text_chunks(depth: int, wrt: Wrt = FIRST, notation: str = "udl") -> Iterator[str]:
    """Stream ``dy/df_j = term + term + ...`` as text, in large chunks (no newline).

    Terms are assembled from precomputed pieces: the factors of the low
    blocks once, then per combination of high blocks one string for each
    block the leftmost low factor can be, so each term costs one concatenation.

    >>> "".join(iter_text_chunks(3))
    '∂y/∂f₁ = I + ∂f₂/∂f₁ + ∂f₃/∂f₁ + (∂f₃/∂f₂)(∂f₂/∂f₁)'
    """
    depth, wrt = check_path_args(depth, wrt)
    check_notation(notation)
    m = wrt.later(depth)
    if m > MAX_BLOCKS:
        raise DeriveError(f"{m} later blocks: terms are listed for at most {MAX_BLOCKS}")
    yield gradient_text(wrt) + " = "
    bits = min(m, LOW_BITS)
    lows = _LowTexts(wrt, bits, notation)
    for index, prefix in enumerate(high_prefixes(depth, wrt.start + bits)):
        yield (" + " if index else "") + lows.after(prefix)


def _product_text(term: Term, right: int, notation: str) -> str:
    """The factors of ``term`` as text (parenthesized in udl), the last reached from ``right``."""
    factors = [factor_text(a, b, notation) for a, b in pairs(term, right)]
    return "".join(factors) if notation == "jacobian" else "".join(f"({f})" for f in factors)


def shown(text: str, latex: str) -> sympy.Symbol:
    r"""A non-commutative SymPy atom printed as given (``text`` and ``latex``).

    It keeps an expression's order and notation exactly as built, e.g. a sum
    in the book's order, which SymPy's printers would reorder.

    >>> from derive.derivation.printing import latex, text
    >>> a = shown("∂y/∂f₁", r"\frac{\partial y}{\partial f_{1}}")
    >>> print(text(a), latex(a))
    ∂y/∂f₁ \frac{\partial y}{\partial f_{1}}
    """
    from derive.derivation.shown import Shown

    return Shown(text, latex)


def product_forms(blocks: tuple[int, ...]) -> tuple[str, str]:
    """(text, LaTeX) of (I + J_N) ... (I + J_{j+1}), abbreviated past 8 factors.

    >>> product_forms((3, 2))
    ('(I + J₃)(I + J₂)', '(I + J_{3})(I + J_{2})')
    """
    if not blocks:
        return "I", "I"
    shown_blocks: list[int | None] = list(blocks)
    if len(blocks) > 8:
        shown_blocks = [*blocks[:3], None, blocks[-1]]
    text = "".join("⋯" if b is None else f"(I + {factor_text(b, 0, 'jacobian')})"
                   for b in shown_blocks)
    latex = "".join("\\cdots" if b is None else f"(I + J_{{{b}}})" for b in shown_blocks)
    return text, latex
