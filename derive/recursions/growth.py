"""How a second moment behaves through depth, in words: growth, decay, a constant, or a
limit it converges to.

:func:`growth` reads the law off a closed form in the depth ``K``: a polynomial by its
degree, a ratio of polynomials by the difference of their degrees, a ratio of gammas by
the power of K their arguments give, and any other form (sums, products and quotients of
exponentials and powers of K) by its leading term ``C r^K K^p``: its fastest exponential
rate ``r``, then its highest power ``p``, and where r = 1 and p = 0 the limit C.
:func:`iterated_growth` reads it off the values of a recursion without a closed form.
Growing quantities are ``exponential``, ``linear``, ``polynomial (degree n)`` or
``power law, K^(p)``; decaying ones ``exponential decay`` or ``decays like K^(p)``
(``decays like 1/K``); others are ``constant`` or ``converges ... to L``.

>>> from derive.derivation.symbols import q0
>>> growth(q0 / 2**K), growth(1 + (q0 - 1) / 2**K)
('exponential decay', 'converges exponentially to 1')
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import sympy

from derive.derivation.printing import text
from derive.derivation.symbols import K
from derive.recursions.closed_forms import finish, mask

#: An irrational exponent this close to a fraction with a denominator up to
#: FRACTION_DENOMINATOR is simplified in full, in case it is that fraction.
FRACTION_DENOMINATOR = 1000
FRACTION_TOLERANCE = 1e-9
#: A power, limit or rate longer than this (characters) is not shown in the words.
SHOWN_CHARACTERS = 40
#: The blocks whose iterated values :func:`iterated_growth` reads (from q_0 = 1).
ITERATED_BLOCKS = 96


def _near_fraction(value: sympy.Expr) -> bool:
    """Whether a number lies within FRACTION_TOLERANCE (relative) of a small fraction.

    >>> _near_fraction(sympy.sqrt(2)), _near_fraction(sympy.sqrt(2) ** 2 / 3)
    (False, True)
    """
    number = float(value)
    if not math.isfinite(number):
        return True
    fraction = Fraction(number).limit_denominator(FRACTION_DENOMINATOR)
    return abs(number - float(fraction)) <= FRACTION_TOLERANCE * max(1.0, abs(number))


def _exponent_shown(exponent: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """``exponent``, simplified as far as :func:`growth` shows it.

    An irrational number (once the masked moments in ``back`` are numbers) is shown
    by its value only, so it is cancelled and evaluated (:func:`finish`); a rational
    or symbolic exponent, or one close to a small fraction, is simplified in full.
    """
    value = sympy.cancel(exponent).xreplace(back)
    if value.is_number and not value.is_Rational:
        shown = finish(value)
        if not _near_fraction(shown):
            return shown
    return sympy.simplify(exponent)


def _power_exponent(expr: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]
                    ) -> sympy.Expr | None:
    """The exponent p of ``expr ~ C K^p`` for a ratio of gammas and polynomials in K
    (``back``: the masked moments, see :func:`mask`)."""
    exponent = sympy.Integer(0)
    num, den = sympy.fraction(sympy.powsimp(expr))
    for part, sign in ((num, 1), (den, -1)):
        for factor in sympy.Mul.make_args(part):
            base, power = factor.as_base_exp()
            if not factor.has(K):
                continue
            if isinstance(base, sympy.gamma) and base.args[0].coeff(K) == 1 and power.is_Integer:
                exponent += sign * power * (base.args[0] - K)
            elif factor.is_polynomial(K):
                exponent += sign * sympy.degree(factor, K)
            else:
                return None
    return _exponent_shown(exponent, back)


def _shown(value: sympy.Expr) -> str | None:
    """A number or expression as the words show it: an irrational number to 3 significant
    digits, an expression as derive prints it (``α²/(1 - β²)``); None where it is too long
    to show."""
    if value.is_number:
        shown = str(value) if value.is_Rational else f"{float(value):#.3g}"
    else:
        shown = text(value)
    return shown if len(shown) <= SHOWN_CHARACTERS else None


def _limit_law(limit: sympy.Expr, how: str) -> str:
    """``converges {how}to L`` for a limit L (``how``: ``"exponentially "`` or ``""``), an
    expression factored."""
    shown = _shown(limit if limit.is_number else sympy.factor(limit))
    return f"converges {how}to {'a limit' if shown is None else shown}"


def power_law(exponent: sympy.Expr) -> str:
    """The words for a quantity that behaves like K^p at large depth.

    >>> [power_law(sympy.Integer(p)) for p in (1, 3, -1, -2)]
    ['linear', 'power law, K^(3)', 'decays like 1/K', 'decays like K^(-2)']
    """
    if exponent == 1:
        return "linear"
    if exponent == -1:
        return "decays like 1/K"
    if exponent.is_zero:
        return "converges to a limit"
    shown = str(exponent)
    if len(shown) > SHOWN_CHARACTERS:
        return "power-law decay" if exponent.is_negative else "power law"
    return f"decays like K^({shown})" if exponent.is_negative else f"power law, K^({shown})"


def _degree_law(degree: int, leading: sympy.Expr) -> str:
    """A polynomial in K of this degree (at least 1) and leading coefficient."""
    if leading.is_negative:
        return "linear decrease" if degree == 1 else f"polynomial decrease (degree {degree})"
    return "linear" if degree == 1 else f"polynomial (degree {degree})"


def _rational_law(masked: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]) -> str:
    """A ratio of polynomials in K: converging, decaying or growing by its degree."""
    num, den = sympy.fraction(sympy.cancel(masked))
    if not (num.has(K) or den.has(K)):
        return "constant"
    num, den = sympy.Poly(num, K), sympy.Poly(den, K)
    degree = num.degree() - den.degree()
    leading = (num.LC() / den.LC()).xreplace(back)
    if degree == 0:
        return _limit_law(finish(leading) if leading.is_number else leading, "")
    if degree < 0:
        return power_law(sympy.Integer(degree))
    return _degree_law(degree, leading)


def _gamma_law(masked: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]) -> str:
    """A ratio of gammas (and polynomials) in K grows or decays like a power of K: which one."""
    exponent = _power_exponent(masked, back)
    if exponent is None:
        return "power law"
    exponent = exponent.xreplace(back)
    if exponent.is_number and not exponent.is_Rational:
        exponent = sympy.N(finish(exponent), 3)
    return power_law(exponent)


@dataclass(frozen=True)
class _Leading:
    """The leading behaviour ``C r^K K^p`` of an expression at large K."""

    rate: sympy.Expr
    power: sympy.Expr
    #: C, in the masked moments.
    coefficient: sympy.Expr
    #: Whether every term it leaves out is smaller by an exponential factor.
    geometric: bool = True
    #: Whether it leaves no term out (the expression is exactly C r^K K^p).
    exact: bool = True


def _number(value: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """``value`` with the masked moments put back: a number evaluated (:func:`finish`)."""
    value = value.xreplace(back)
    return finish(value) if value.is_number else value


def _order(a: sympy.Expr, b: sympy.Expr) -> int | None:
    """1, 0 or -1 as ``a`` is larger than, equal to or smaller than ``b``; None where the
    symbols leave it open. Numbers within 1e-12 (relative) of each other are equal."""
    if a == b:
        return 0
    if a.is_number and b.is_number:
        x, y = float(a), float(b)
        return 0 if abs(x - y) <= 1e-12 * max(abs(x), abs(y)) else (1 if x > y else -1)
    difference = a - b
    return 1 if difference.is_positive else -1 if difference.is_negative else None


def _compared(part: _Leading, top: list[_Leading], back: dict[sympy.Symbol, sympy.Expr]
              ) -> int | None:
    """How ``part`` ranks against the leading terms ``top`` so far: by rate, then by power
    (1 where there are none yet); None where the symbols leave it open."""
    order = 1 if not top else _order(_number(part.rate, back), _number(top[0].rate, back))
    if order == 0:
        order = _order(part.power, top[0].power)
    return order


def _ranked(parts: list[_Leading], back: dict[sympy.Symbol, sympy.Expr]
            ) -> tuple[list[_Leading], list[_Leading]] | None:
    """The terms of a sum split into the leading ones and the dropped ones; None where the
    symbols leave the order open."""
    top: list[_Leading] = []
    dropped: list[_Leading] = []
    for part in parts:
        order = _compared(part, top, back)
        if order is None:
            return None
        if order > 0:
            dropped, top = dropped + top, [part]
        elif order == 0:
            top.append(part)
        else:
            dropped.append(part)
    return top, dropped


def _cancels(top: list[_Leading], coefficient: sympy.Expr,
             back: dict[sympy.Symbol, sympy.Expr]) -> bool:
    """Whether the leading terms ``top``, with summed ``coefficient``, cancel (to within
    1e-12 of their largest coefficient)."""
    value = _number(coefficient, back)
    return bool(value.is_zero or (value.is_number and abs(float(value)) <= 1e-12 * max(
        abs(float(_number(t.coefficient, back))) for t in top)))


def _combined(parts: list[_Leading], back: dict[sympy.Symbol, sympy.Expr]) -> _Leading | None:
    """The leading behaviour of a sum, from its terms': the fastest rate, then the highest
    power; None where the symbols leave the order open or the leading terms cancel."""
    ranked = _ranked(parts, back)
    if ranked is None:
        return None
    top, dropped = ranked
    coefficient = sympy.Add(*(t.coefficient for t in top))
    if _cancels(top, coefficient, back):
        return None
    rate = _number(top[0].rate, back)
    geometric = all(t.geometric for t in top) and all(
        _order(_number(d.rate, back), rate) == -1 for d in dropped)
    return _Leading(top[0].rate, top[0].power, coefficient, geometric,
                    not dropped and all(t.exact for t in top))


def _product(factors: list[_Leading]) -> _Leading:
    """The leading behaviour of a product, from its factors'."""
    return _Leading(sympy.Mul(*(f.rate for f in factors)), sympy.Add(*(f.power for f in factors)),
                    sympy.Mul(*(f.coefficient for f in factors)),
                    all(f.geometric for f in factors), all(f.exact for f in factors))


def _compound(expr: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]) -> _Leading | None:
    """The leading behaviour of a sum or product, from its arguments'; None where any of
    theirs is unknown."""
    parts = [_leading(part, back) for part in expr.args]
    known = [part for part in parts if part is not None]
    if len(known) < len(parts):
        return None
    if expr.is_Add:
        return _combined(known, back)
    return _product(known)


def _raised(base: sympy.Expr, exponent: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]
            ) -> _Leading | None:
    """The leading behaviour of ``base**exponent`` (a rational power), from ``base``'s."""
    inner = _leading(base, back)
    if inner is None:
        return None
    return _Leading(inner.rate**exponent, inner.power * exponent,
                    inner.coefficient**exponent, inner.geometric, inner.exact)


def _power(expr: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]) -> _Leading | None:
    """The leading behaviour of a power: an exponential ``b^(a K + c)``, or a rational
    power of an expression in K; None for any other shape."""
    base, exponent = expr.as_base_exp()
    if not base.has(K) and not (slope := sympy.diff(exponent, K)).has(K):
        return _Leading(base**slope, sympy.Integer(0), base ** exponent.subs(K, 0))
    if base.has(K) and exponent.is_Rational and expr != base:
        return _raised(base, exponent, back)
    return None


def _leading(expr: sympy.Expr, back: dict[sympy.Symbol, sympy.Expr]) -> _Leading | None:
    """``expr ~ C r^K K^p`` at large K (``expr`` masked, ``back``: the moments), or None
    where it has another shape or the symbols leave its leading term open."""
    if not expr.has(K):
        return _Leading(sympy.Integer(1), sympy.Integer(0), expr)
    if expr == K:
        return _Leading(sympy.Integer(1), sympy.Integer(1), sympy.Integer(1))
    if expr.is_Add or expr.is_Mul:
        return _compound(expr, back)
    return _power(expr, back)


def _rate_law(leading: _Leading, back: dict[sympy.Symbol, sympy.Expr]) -> str:
    """The law of an expression that behaves like ``C r^K K^p``: by its rate, then by its
    power; where it levels off, the limit it converges to."""
    order = _order(_number(leading.rate, back), sympy.Integer(1))
    if order is None:
        return "exponential (rate depends on the parameters)"
    if order:
        return "exponential" if order > 0 else "exponential decay"
    power, coefficient = leading.power, _number(leading.coefficient, back)
    if power.is_zero and leading.exact:
        return "constant"
    if power.is_zero:
        return _limit_law(coefficient, "exponentially " if leading.geometric else "")
    if power.is_Integer and power > 0:
        return _degree_law(int(power), coefficient)
    return power_law(power)


@lru_cache(maxsize=4096)
def growth(expr: sympy.Expr) -> str:
    """The law of a closed form in the depth ``K``, read off its shape (cached).

    >>> from derive.derivation.symbols import q0
    >>> growth(2**K * q0), growth(q0 + K / 2), growth(sympy.Integer(3))
    ('exponential', 'linear', 'constant')
    >>> growth(sympy.gamma(K + sympy.Rational(5, 2)) / sympy.gamma(K + 1))
    'power law, K^(3/2)'
    >>> growth(1 / (2 * K + 2 * q0)), growth(q0 / 2**K)
    ('decays like 1/K', 'exponential decay')
    """
    if isinstance(expr, sympy.Piecewise):
        expr = expr.args[-1].expr
    if not expr.has(K):
        return "constant"
    masked, back = mask(expr)
    if expr.has(sympy.gamma, sympy.RisingFactorial):
        return _gamma_law(masked, back)
    expanded = sympy.expand(expr)
    if expanded.is_polynomial(K):
        polynomial = sympy.Poly(expanded, K)
        if polynomial.degree() == 0:
            return "constant"
        return _degree_law(polynomial.degree(), polynomial.LC())
    if masked.is_rational_function(K):
        return _rational_law(masked, back)
    leading = _leading(masked, back)
    if leading is not None:
        return _rate_law(leading, back)
    if any(p.exp.has(K) for p in masked.atoms(sympy.Pow)):
        return "exponential (rate depends on the parameters)"
    return "other"


def _power_fit(v1: float, v2: float, v3: float) -> float | None:
    """The power p of ``v = C (K + s)^p`` (p < 0) through three values at equally spaced
    depths, or None where no such power between -20 and -0.05 fits.

    >>> round(_power_fit(1 / 53, 1 / 77, 1 / 101), 9)
    -1.0
    """
    a, c = math.log(v1 / v2), math.log(v3 / v2)

    def bent(u: float) -> float:  # v^u is linear in K exactly at u = 1/p
        try:
            return (math.exp(u * a) + math.exp(u * c)) / 2 - 1
        except OverflowError:
            return math.inf

    low, high = -20.0, -0.05
    if not (bent(low) > 0 > bent(high)):
        return None
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if bent(middle) > 0 else (low, middle)
    return 1 / ((low + high) / 2)


def _iterated_power(p: float) -> str:
    """The words for a decay like K^p whose p is estimated from values (2 digits)."""
    rounded = float(f"{p:.2g}")
    return "decays like 1/K" if rounded == -1 else f"decays like K^({rounded:g})"


def _geometric_limit(values: Sequence[float]) -> float | None:
    """The limit of values that approach it geometrically, their differences shrinking
    by one ratio (< 1) per 12 blocks, or None where they do not."""
    v = [values[b] for b in range(ITERATED_BLOCKS - 48, ITERATED_BLOCKS + 1, 12)]
    steps = [later - earlier for earlier, later in itertools.pairwise(v)]
    if any(s == 0 for s in steps):
        return None
    ratios = [later / earlier for earlier, later in itertools.pairwise(steps)]
    if not all(0 < r < 1 for r in ratios) or max(ratios) - min(ratios) > 1e-3 * max(ratios):
        return None
    r = ratios[-1]
    return v[-1] + steps[-1] * r / (1 - r)


def iterated_growth(values: Sequence[float]) -> str:
    """The law of a recursion without a closed form, read off its values at blocks
    0..ITERATED_BLOCKS (from q_0 = 1).

    >>> iterated_growth([2.0**k for k in range(97)])
    'exponential'
    >>> iterated_growth([1 / (1 + k / 4) for k in range(97)])
    'decays like 1/K'
    >>> iterated_growth([2 - 0.9**k for k in range(97)])
    'converges to 2.00'
    """
    v48, v72, v96 = values[48::24]
    d1, d2 = v96 - v72, v72 - v48
    if min(v48, v72, v96) <= 0:  # past the smallest double
        return "decays to zero"
    if abs(v96 - v48) <= 1e-9 * abs(v96):
        flat = all(abs(v - v96) <= 1e-9 * abs(v96) for v in values)
        return "constant" if flat else f"converges to {v96:#.3g}"
    if abs(r1 := math.log(v96 / v72)) > 0.01 and abs(
            r1 - (r2 := math.log(v72 / v48))) <= 0.1 * abs(r2):
        return "exponential" if r1 > 0 else "exponential decay"
    limit = _geometric_limit(values)
    if limit is not None:
        return f"converges to {limit:#.3g}"
    if d1 < 0:
        p = _power_fit(v48, v72, v96) if d2 < 0 else None
        return "decays, slower than exponentially" if p is None else _iterated_power(p)
    if abs(d1 - d2) <= 0.05 * abs(d2):
        return "linear"
    return "faster than linear, slower than exponential" if d1 > d2 else "sublinear"
