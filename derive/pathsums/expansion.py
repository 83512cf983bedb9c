"""The path-sum expansion of dy/df_j for a stack of residual blocks.

With h_k = h_{k-1} + f_k(h_{k-1}) and J_k = df_k/dh_{k-1}, the chain rule gives

    dy/df_j = (I + J_N)(I + J_{N-1}) ... (I + J_{j+1}),

a product whose expansion has one term per subset of the later blocks: 2^(N-j)
paths from f_j to the output, C(N-j, L) of them through L residual branches.
dy/dx = (I + J_N) ... (I + J_1) has 2^N. Terms come in the book's order
(Prince, Understanding Deep Learning, eq. 11.6): binary counting over the
later blocks, block j+1 the lowest bit. Counts and lengths never enumerate;
enumeration streams, and refuses more than MAX_TERMS terms unless forced.
SymPy is imported only by the members that build SymPy values.

>>> import derive
>>> derive.paths(4).terms[:4], derive.count_paths(100_000).bit_length()
(((), (2,), (3,), (3, 2)), 100000)
"""

from __future__ import annotations

import sys
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from functools import cache, cached_property
from math import comb
from typing import TYPE_CHECKING

from derive.errors import DeriveError
from derive.pathsums import notation as _nt
from derive.pathsums.limits import (
    MAX_BLOCKS,
    MAX_COUNT_BITS,
    MAX_TERMS,
    Wrt,
    WrtLike,
    check_path_args,
    more_terms_than,
)

if TYPE_CHECKING:  # pragma: no cover
    import sympy

    from derive.derivation.value import Derivation
    from derive.pathsums.block_paths import BlockPathSum


Term = tuple[int, ...]


def _later(depth: object, wrt: object) -> tuple[int, Wrt, int]:
    """(depth, wrt, m): m = N - j later blocks."""
    depth, parsed = check_path_args(depth, wrt)
    return depth, parsed, parsed.later(depth)


def count_paths(depth: int, wrt: WrtLike = 1) -> int:
    """Number of terms of dy/df_wrt (2^(N-j)), exact, no enumeration.

    Past 2^MAX_COUNT_BITS (an int of 12.5 MB) it refuses, naming the power.

    >>> count_paths(4), count_paths(4, "x"), count_paths(100_000).bit_length()
    (8, 16, 100000)
    >>> count_paths(10**12)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: dy/df_1 at depth 1000000000000 has 2^999999999999 terms, more than the 2^100000000 an exact int holds
    """  # noqa: E501
    depth, parsed, m = _later(depth, wrt)
    if m > MAX_COUNT_BITS:
        raise DeriveError(
            f"{parsed.gradient} at depth {depth} has 2^{m} terms, more than the "
            f"2^{MAX_COUNT_BITS} an exact int holds"
        )
    return 1 << m


class PathLengths(Mapping[int, int]):
    """{number of Jacobian factors L: number of terms} = C(N - j, L), lazily.

    A read-only mapping (compare it with a dict, or ``dict()`` it); values are
    computed on demand, so it works at any depth. Iteration is by length.

    >>> lengths = path_lengths(4)
    >>> lengths == {0: 1, 1: 3, 2: 3, 3: 1}, lengths[2], len(lengths)
    (True, 3, 4)
    """

    def __init__(self, m: int) -> None:
        self.m = m

    def __getitem__(self, length: int) -> int:
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= self.m:
            raise KeyError(length)
        return comb(self.m, length)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.m + 1))

    def __len__(self) -> int:
        return self.m + 1

    def values(self) -> _Binomials:
        """C(m, 0), ..., C(m, m), by the recurrence C(m, L+1) = C(m, L)(m-L)/(L+1)."""
        return _Binomials(self)

    def items(self) -> _LengthItems:
        """Pairs (L, C(m, L)) in increasing L."""
        return _LengthItems(self)

    def __repr__(self) -> str:
        if self.m <= 64:
            return repr(dict(self.items()))
        return f"PathLengths(m={self.m})"


class _Binomials(ValuesView[int]):
    """The values of a :class:`PathLengths`, each from the one before (no comb() each)."""

    _mapping: PathLengths

    def __iter__(self) -> Iterator[int]:
        m, value = self._mapping.m, 1
        for length in range(m + 1):
            yield value
            value = value * (m - length) // (length + 1)


class _LengthItems(ItemsView[int, int]):
    """The items of a :class:`PathLengths`, in increasing L."""

    _mapping: PathLengths

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(range(self._mapping.m + 1), _Binomials(self._mapping), strict=True)


def path_lengths(depth: int, wrt: WrtLike = 1) -> PathLengths:
    """How many terms have L Jacobian factors, for L = 0..N-j (binomial; lazy).

    >>> dict(path_lengths(4, "x"))
    {0: 1, 1: 4, 2: 6, 3: 4, 4: 1}
    """
    return PathLengths(_later(depth, wrt)[2])


def iter_terms(depth: int, wrt: WrtLike = 1) -> Iterator[Term]:
    """Stream the terms in the book's order; no limit (see :class:`PathSum`).

    >>> list(iter_terms(4))
    [(), (2,), (3,), (3, 2), (4,), (4, 2), (4, 3), (4, 3, 2)]
    """
    depth, parsed, m = _later(depth, wrt)
    if m > MAX_BLOCKS:
        raise DeriveError(
            f"{parsed.gradient} at depth {depth} has {m} later blocks, more than the {MAX_BLOCKS} "
            "whose terms are listed; use count_paths()/path_lengths()"
        )
    low_bits = min(m, _nt.LOW_BITS)
    lows = _nt.low_terms(parsed.start, low_bits)
    for prefix in _nt.high_prefixes(depth, parsed.start + low_bits):
        if prefix:
            for low in lows:
                yield prefix + low
        else:
            yield from lows


@dataclass(frozen=True, init=False, repr=False)
class PathSum:
    """The path expansion of dy/df_wrt (or dy/dx) for ``depth`` residual blocks.

    ``.expr`` writes the identity as SymPy's ``1`` (so ``sympy.expand`` of
    ``.factored`` equals ``.expr``); text and LaTeX write it ``I``.
    Counting (``.count``, ``.lengths``, ``len()``) never enumerates.
    Iteration streams the terms; iteration, ``.terms``, ``.expr`` and the full
    text/LaTeX refuse more than MAX_TERMS terms unless ``force=True``.
    ``notation`` ("udl" or "jacobian") is used by LaTeX display and the derivation.
    ``wrt`` (a block index or ``"x"``) is kept parsed, a :class:`~derive.pathsums.limits.Wrt`.

    >>> s = PathSum(4)
    >>> len(s), s.terms[3], s.text()
    (8, (3, 2), '∂y/∂f₁ = I + ∂f₂/∂f₁ + ∂f₃/∂f₁ + (∂f₃/∂f₂)(∂f₂/∂f₁) + ∂f₄/∂f₁ + (∂f₄/∂f₂)(∂f₂/∂f₁) + (∂f₄/∂f₃)(∂f₃/∂f₁) + (∂f₄/∂f₃)(∂f₃/∂f₂)(∂f₂/∂f₁)')
    """  # noqa: E501

    depth: int
    wrt: Wrt
    notation: str
    force: bool

    def __init__(self, depth: int, wrt: WrtLike = 1, notation: str = "udl",
                 force: bool = False) -> None:
        checked, parsed = check_path_args(depth, wrt)
        object.__setattr__(self, "depth", checked)
        object.__setattr__(self, "wrt", parsed)
        object.__setattr__(self, "notation", _nt.check_notation(notation))
        object.__setattr__(self, "force", force)

    def __repr__(self) -> str:
        return (f"PathSum(depth={self.depth}, wrt={self.wrt.value!r}, "
                f"notation={self.notation!r}, force={self.force!r})")

    @property
    def blocks(self) -> tuple[int, ...]:
        """The later blocks, left to right (N down to j+1); refused past MAX_BLOCKS.

        >>> PathSum(4).blocks
        (4, 3, 2)
        """
        if self.later > MAX_BLOCKS:
            raise DeriveError(
                f"{self.wrt.gradient} at depth {self.depth} has {self.later} later blocks, more "
                f"than the {MAX_BLOCKS} listed; use count_paths()/path_lengths()"
            )
        return tuple(self._later_blocks)

    @property
    def later(self) -> int:
        """The number of later blocks, N - j (the count is 2^later).

        >>> PathSum(4).later, PathSum(4, "x").later
        (3, 4)
        """
        return self.wrt.later(self.depth)

    @property
    def _later_blocks(self) -> range:
        return range(self.depth, self.wrt.start, -1)

    def _at_most(self, terms: int) -> bool:
        """Whether the sum has at most ``terms`` terms (no big int built)."""
        return self.later < 64 and 1 << self.later <= terms

    def _longest(self) -> Term:
        """The longest term, shortened to its first three and last two blocks."""
        blocks = self._later_blocks
        return tuple(blocks) if len(blocks) <= 6 else (*blocks[:3], *blocks[-2:])

    @property
    def count(self) -> int:
        """The number of terms, 2^(N-j) (exact, any depth).

        >>> PathSum(20).count
        524288
        """
        return count_paths(self.depth, self.wrt)

    @property
    def lengths(self) -> PathLengths:
        """{L: terms with L factors}, see :func:`path_lengths`.

        >>> PathSum(3).lengths[1]
        2
        """
        return path_lengths(self.depth, self.wrt)

    def __len__(self) -> int:
        if not self._at_most(sys.maxsize):
            raise DeriveError(f"2^{self.later} terms do not fit len(); use .count")
        return self.count

    def check_size(self) -> None:
        """Raise DeriveError if enumerating needs ``force=True``.

        >>> PathSum(30).check_size()
        Traceback (most recent call last):
        ...
        derive.errors.DeriveError: dy/df_1 at depth 30 has 2^29 = 536870912 terms, more than 2^22 = 4194304: use count_paths()/path_lengths(), or force=True
        """  # noqa: E501
        if more_terms_than(self.later, MAX_TERMS) and not self.force:
            count = _nt.format_power_of_two(self.later) if self.later < 10**6 else "2^"
            count = "" if count.startswith("2^") else f" = {count}"
            raise DeriveError(
                f"{self.wrt.gradient} at depth {self.depth} has 2^{self.later}{count} terms, more "
                f"than 2^22 = {MAX_TERMS}: use count_paths()/path_lengths(), or force=True"
            )

    def __iter__(self) -> Iterator[Term]:
        self.check_size()
        return iter_terms(self.depth, self.wrt)

    @cached_property
    def terms(self) -> tuple[Term, ...]:
        """All terms, as tuples of block indices left to right (materialized).

        >>> PathSum(3, "x").terms[:4]
        ((), (1,), (2,), (2, 1))
        """
        return tuple(self)

    @cached_property
    def expr(self) -> sympy.Expr:
        """The expanded sum: an Add of non-commutative products of J_k (and 1).

        >>> from derive.derivation.symbols import jacobian
        >>> J2, J3 = jacobian(2), jacobian(3)
        >>> PathSum(3).expr == 1 + J2 + J3 + J3 * J2, PathSum(3).expr == 1 + J2 + J3 + J2 * J3
        (True, False)
        """
        import sympy

        from derive.derivation.symbols import jacobian

        symbols = {b: jacobian(b) for b in self.blocks}
        return sympy.Add(*(sympy.Mul(*(symbols[b] for b in t)) for t in self))

    @property
    def factored(self) -> sympy.Expr:
        """The product (1 + J_N) ... (1 + J_{j+1}), unevaluated.

        >>> import sympy
        >>> s = PathSum(3)
        >>> from derive.derivation.symbols import jacobian
        >>> s.factored.args == (1 + jacobian(3), 1 + jacobian(2))
        True
        >>> sympy.expand(s.factored) == s.expr
        True
        """
        import sympy

        from derive.derivation.symbols import jacobian

        return sympy.Mul(*(1 + jacobian(b) for b in self.blocks), evaluate=False)

    def text(self) -> str:
        """``dy/df_j = ...`` as one line of Unicode text (all terms).

        >>> PathSum(2, notation="jacobian").text()
        '∂y/∂f₁ = I + J₂'
        """
        self.check_size()
        return "".join(_nt.iter_text_chunks(self.depth, self.wrt, self.notation))

    def latex(self) -> str:
        """The sum (right-hand side only) as one line of LaTeX (all terms).

        >>> PathSum(3, notation="jacobian").latex()
        'I + J_{2} + J_{3} + J_{3} J_{2}'
        """
        return _nt.sum_latex(self, self.wrt, self.notation)

    def latex_lines(self, width: float = _nt.LINE_WIDTH) -> list[str]:
        r"""Rows of an ``align`` environment for dy/df_j = the sum, broken to fit a page.

        >>> print(PathSum(2).latex_lines()[0])
        \frac{\partial y}{\partial f_{1}} &= I + \frac{\partial f_{2}}{\partial f_{1}}
        """
        return _nt.latex_lines(self, self.wrt, self.notation, width=width)

    def short_latex(self, limit: int = 64) -> str:
        """The sum in LaTeX, abbreviated with ``\\cdots`` past ``limit`` terms.

        >>> PathSum(12, notation="jacobian").short_latex(4)
        'I + J_{2} + J_{3} + J_{3} J_{2} + \\\\cdots + J_{12} J_{11} \\\\cdots J_{2}'
        """
        if self._at_most(limit):
            return _nt.sum_latex(iter_terms(self.depth, self.wrt), self.wrt, self.notation)
        head = [t for t, _ in zip(iter_terms(min(self.depth, self.depth - self.later + 4),
                                             self.wrt), range(4), strict=False)]
        parts = [_nt.term_latex(t, self.wrt, self.notation) for t in head]
        parts += ["\\cdots", _nt.term_latex(self._longest(), self.wrt, self.notation, 4)]
        return " + ".join(parts)

    def _latex(self, printer: object = None) -> str:
        """What ``sympy.latex(obj)`` shows: the sum, abbreviated past 64 terms."""
        return self.short_latex()

    def _repr_latex_(self) -> str:
        """Jupyter display: dy/df_j = the sum over aligned rows (one abbreviated line past 64).

        >>> PathSum(2, notation="jacobian")._repr_latex_()
        '$\\\\begin{aligned}\\n\\\\frac{\\\\partial y}{\\\\partial f_{1}} &= I + J_{2}\\n\\\\end{aligned}$'
        """  # noqa: E501
        if self._at_most(64):
            rows = " \\\\\n".join(self.latex_lines())
            return f"$\\begin{{aligned}}\n{rows}\n\\end{{aligned}}$"
        return f"$\\displaystyle {_nt.gradient_latex(self.wrt)} = {self.short_latex()}$"

    @property
    def derivation(self) -> Derivation:
        """Steps from the residual recursion to the expansion, count and lengths.

        The full expansion appears when it has at most EXPANDED_TERMS terms;
        otherwise the sum is abbreviated with ``\\cdots``.

        >>> d = PathSum(3, notation="jacobian").derivation
        >>> d.key, d.result.text()
        ('paths/depth-3/wrt-1', '∂y/∂f₁ = I + J₂ + J₃ + J₃J₂')
        """
        return _derivation(self)


#: The derivation shows the full expansion up to this many terms.
EXPANDED_TERMS = 16


def _sum_forms(s: PathSum, notation: str) -> tuple[str, str]:
    """(text, LaTeX) of the expansion, abbreviated past EXPANDED_TERMS terms."""
    p = PathSum(s.depth, s.wrt, notation)
    if s._at_most(EXPANDED_TERMS):
        return _nt.sum_text(p, s.wrt, notation), p.short_latex(EXPANDED_TERMS)
    head = [t for t, _ in zip(iter_terms(min(s.depth, s.depth - s.later + 4), s.wrt), range(4),
                              strict=False)]
    text = " + ".join([*(_nt.term_text(t, s.wrt, notation) for t in head), "⋯",
                       _nt.term_text(s._longest(), s.wrt, notation, 4)])
    return text, p.short_latex(EXPANDED_TERMS)


@cache
def _generic_counts() -> tuple[sympy.Expr, ...]:
    """Derived once by SymPy: prod 2 = 2^(N-j), sum C(m, L) = 2^m, mean length m/2."""
    import sympy

    n_, j_, i_, m_, l_ = sympy.symbols("N j i m L", integer=True, positive=True)
    count = sympy.product(2, (i_, j_ + 1, n_))
    total = sympy.summation(sympy.binomial(m_, l_), (l_, 0, m_))
    mean = sympy.simplify(sympy.summation(l_ * sympy.binomial(m_, l_), (l_, 0, m_)) / total)
    return count, m_, l_, total, mean


def _derivation(s: PathSum) -> Derivation:
    import sympy

    from derive.derivation.value import Derivation, Step

    count_n, m_, l_, total, mean = _generic_counts()
    h = sympy.Function("h")
    kk = sympy.Symbol("k", integer=True)
    m, j = len(s.blocks), s.wrt.start
    wrt_tex = "x" if s.wrt.is_input else f"f_{{{j}}}"
    gradient = _nt.shown(_nt.gradient_text(s.wrt), _nt.gradient_latex(s.wrt))
    identity = _nt.shown("I", "I")
    steps = [
        Step(h(kk), _nt.shown("hₖ₋₁ + fₖ(hₖ₋₁)", "h_{k-1} + f_{k}(h_{k-1})"),
             "residual block $k$: the skip path plus the residual branch"),
        Step(_nt.shown("∂hₖ/∂hₖ₋₁", "\\frac{\\partial h_{k}}{\\partial h_{k-1}}"),
             identity + sympy.Symbol("J_k", commutative=False),
             "differentiate: the skip path gives $I$, the branch its Jacobian "
             "$J_k = \\partial f_k / \\partial h_{k-1}$"),
    ]
    if not s.wrt.is_input:
        steps.append(Step(
            _nt.shown(f"∂h{_nt.subscript(j)}/∂f{_nt.subscript(j)}",
                      f"\\frac{{\\partial h_{{{j}}}}}{{\\partial f_{{{j}}}}}"),
            identity, f"$h_{{{j}}} = h_{{{j - 1}}} + f_{{{j}}}(h_{{{j - 1}}})$: the output "
            f"of $f_{{{j}}}$ enters $h_{{{j}}}$ unchanged"))
    product_text, product_latex = _nt.product_forms(s.blocks)
    steps.append(Step(gradient, _nt.shown(product_text, product_latex),
                      f"chain rule from $h_{{{j}}}$ to $y = h_{{{s.depth}}}$: one factor a "
                      "later block, later blocks on the left (Jacobians do not commute)"))
    jac_text, jac_latex = _sum_forms(s, "jacobian")
    steps.append(Step(gradient, _nt.shown(jac_text, jac_latex),
                      "expand: pick $I$ or $J_k$ from each factor, one term a subset of the "
                      f"later blocks, in binary order with block ${j + 1}$ the lowest bit"
                      if m else "no later block: only the identity path"))
    if s.notation == "udl":
        udl_text, udl_latex = _sum_forms(s, "udl")
        steps.append(Step(gradient, _nt.shown(udl_text, udl_latex),
                          "the book's notation: $J_a$ reached from block $b$ is written "
                          "$\\partial f_a / \\partial f_b$"))
        jac_text, jac_latex = udl_text, udl_latex
    count = _nt.shown("#paths", "\\#\\,\\text{paths}")
    value = sympy.Integer(s.count) if m <= 64 else sympy.Pow(2, m, evaluate=False)
    steps += [
        Step(count, count_n, "each of the $N - j$ factors contributes $I$ or $J_k$"),
        Step(count, value, f"with $N = {s.depth}$, $j = {j}$"),
        Step(_nt.shown("#paths of length L", "\\#\\,\\text{paths with } L \\text{ factors}"),
             sympy.binomial(m_, l_),
             "a path through $L$ residual branches picks $L$ of the $m = N - j$ later blocks"),
        Step(sympy.Sum(sympy.binomial(m_, l_), (l_, 0, m_)), total,
             "the lengths account for every path"),
        Step(_nt.shown("mean length", "\\text{mean length}"), mean,
             f"most paths pass through about half of the $m = {m}$ later blocks"),
    ]
    return Derivation(
        title=f"Paths from ${wrt_tex}$ to the output of {s.depth} residual blocks",
        key=f"paths/depth-{s.depth}/wrt-{s.wrt}",
        assumptions=(
            f"$h_0 = x$, $h_k = h_{{k-1}} + f_k(h_{{k-1}})$ for $k = 1, \\dots, {s.depth}$, "
            f"$y = h_{{{s.depth}}}$",
            "each $f_k$ is differentiable at $h_{k-1}$; its Jacobian $J_k$ is a matrix",
        ),
        steps=tuple(steps),
        result=Step(gradient, _nt.shown(jac_text, jac_latex), f"{_nt.format_int(s.count)} paths"),
        notes=(
            "The terms are in the order of eq. 11.6 of Prince, Understanding Deep Learning "
            "(ch. 11): binary counting over the later blocks.",
            "$I$ is the path through the skip connections only; the longest path passes "
            f"through all {m} later residual branches.",
            "Path lengths are binomial, so most gradient paths are much shorter than the "
            "network is deep (Veit et al., 2016, Residual networks behave like ensembles "
            "of relatively shallow networks).",
        ),
    )


def paths(
    depth: int, wrt: WrtLike = 1, *, notation: str = "udl", force: bool = False,
    block: object = None,
) -> PathSum | BlockPathSum:
    """The path expansion of dy/df_wrt (or dy/dx): a lazy :class:`PathSum`.

    ``wrt`` is a block index 1..depth or ``"x"`` (parsed into a
    :class:`derive.pathsums.limits.Wrt`, the sum's ``.wrt``). Nothing is enumerated until
    the terms are used; enumerating more than MAX_TERMS (2^22) terms raises
    DeriveError unless ``force=True``. ``notation`` ("udl" or "jacobian") is
    what LaTeX display and the derivation use. ``block`` (a preset, an expression
    or a Block) other than ``x + F(x)`` gives a
    :class:`derive.pathsums.block_paths.BlockPathSum`, whose terms carry the block's factors.

    >>> p = paths(4)
    >>> p.count, p.terms[-1], next(iter(paths(60, force=True)))
    (8, (4, 3, 2), ())
    >>> paths(2, "x", block="x + F(LN(x))").text()
    '∂y/∂x = I + J₁L₁ + J₂L₂ + J₂L₂J₁L₁'
    """
    if block is not None:
        from derive.blocks.block import block as make_block
        from derive.pathsums.block_paths import BlockPathSum, is_plain

        chosen = make_block(block)
        if not is_plain(chosen):
            return BlockPathSum(depth, wrt, chosen, force)
    return PathSum(depth, wrt, notation, force)
