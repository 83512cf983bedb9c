"""Closed forms of the variance recursions, solved once per shape and cached.

Values are exact where the result is rational or symbolic, else floats at
:data:`PRECISION` digits (:func:`finish`); recursions without a closed form are
iterated with :func:`numeric_map`.

Every forward recursion of the variance model has the shape
``q_k = a q_{k-1} + b`` (or no closed form at all); :func:`solve_affine`
unrolls it to q_K = a^K q_0 + b (1 + a + ... + a^(K-1)), the geometric sum by
SymPy's ``summation``, solved once with symbolic ``a`` and ``b`` and
substituted (expanded when they are numbers). Every backward recursion is a product
``d_0/d_K = prod_{k=1}^{K} B_k``; :func:`solve_product` writes a ratio of
factors linear in k as gamma functions (telescoped where they cancel), and
evaluates any other product with SymPy's ``product``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, lru_cache

import sympy

from derive.derivation.symbols import K, k, q0
from derive.errors import DeriveError

#: Significant digits of numeric values: iterations without a closed form run in
#: double precision, and irrational closed-form values are rounded to as many digits.
PRECISION = 15
#: Exact values keep at most this many digits (what Python prints of an int); larger
#: ones are floats at PRECISION digits.
EXACT_DIGITS = 4300
_EXACT_LIMIT = 10**EXACT_DIGITS
#: What one power of an irrational base counts against EXACT_DIGITS: exact up to K = 67.
IRRATIONAL_DIGITS = 64
#: Recursions without a closed form are iterated block by block up to this depth.
MAX_ITERATED = 10_000
#: JSON profiles hold at most this many blocks (evenly spaced past it).
PROFILE_POINTS = 1001

_a = sympy.Symbol("a")
_b = sympy.Symbol("b")


@cache
def _affine_shape(additive: bool) -> sympy.Expr:
    """``q_k = a q_{k-1} + b`` (``a != 1``) or ``q_k = q_{k-1} + b`` unrolled down to q_0:
    q_K = a^K q_0 + b sum_{j=0}^{K-1} a^j, the geometric sum by SymPy's ``summation``."""
    j = sympy.Symbol("j", integer=True, nonnegative=True)
    a = sympy.Integer(1) if additive else _a
    geometric = sympy.summation(a**j, (j, 0, K - 1))
    if isinstance(geometric, sympy.Piecewise):  # the branch a != 1
        geometric = next(e for e, cond in geometric.args if cond == sympy.true)
    return a**K * q0 + _b * geometric


@lru_cache(maxsize=4096)
def affine_coefficients(rhs: sympy.Expr, x: sympy.Symbol) -> tuple[sympy.Expr, sympy.Expr] | None:
    """``(a, b)`` when ``rhs`` is ``a x + b`` with ``a``, ``b`` free of ``x``, else None.

    Read off by differentiation, so the coefficients keep their shape. Cached, as
    are :func:`solve_affine` and :func:`evaluate`: configurations share their maps.

    >>> x = sympy.Symbol("x")
    >>> affine_coefficients(3 * x / 2, x), affine_coefficients(x + sympy.sqrt(x), x)
    ((3/2, 0), None)
    """
    a = sympy.diff(rhs, x)
    if a.has(x) or a.has(sympy.Derivative):
        return None
    b = (rhs - a * x).subs(x, 0)
    if b.has(x) or b.has(sympy.nan):
        return None
    return (sympy.cancel(a) if not a.atoms(sympy.Function) else a), b


@lru_cache(maxsize=4096)
def solve_affine(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """``q_K`` for ``q_k = a q_{k-1} + b``, ``q(0) = q_0``, from the cached unrolled shape.

    ``a = 0`` (the map forgets its input, as post-LN does) gives a Piecewise:
    ``q_0`` at ``K = 0`` and ``b`` after.

    >>> solve_affine(sympy.Integer(2), sympy.Integer(0))
    2**K*q_0
    >>> solve_affine(sympy.Integer(1), sympy.Rational(1, 2))
    K/2 + q_0
    """
    if a == 0:
        return sympy.Piecewise((q0, sympy.Eq(K, 0)), (b, True))
    if a != 1 and a.is_number and b.is_number:
        return _solve_numeric(a, b)
    return solve_affine_by_shape(a, b)


@lru_cache(maxsize=1024)
def _solve_numeric(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """The unrolled recursion with numeric coefficients, expanded into powers of ``a``."""
    return sympy.powsimp(sympy.expand(_affine_shape(False).xreplace({_a: a, _b: b})))


def solve_affine_by_shape(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """The cached general solution of ``q_k = a q_{k-1} + b`` with ``a``, ``b`` substituted.

    >>> solve_affine_by_shape(sympy.Symbol("c", positive=True), sympy.Integer(0))
    c**K*q_0
    """
    if a == 1:
        return _affine_shape(True).xreplace({_b: b})
    general = _affine_shape(False).xreplace({_a: a, _b: b})
    if b == 0:
        return sympy.powsimp(sympy.cancel(sympy.together(general)))
    return sympy.simplify(general)


@lru_cache(maxsize=4096)
def solve_product(factor: sympy.Expr, start: int = 1) -> sympy.Expr:
    """``prod_{k=start}^{K} factor(k)``, simplified (rising factorials become gammas).

    >>> solve_product(sympy.Rational(3, 2))
    (3/2)**K
    >>> solve_product((q0 + k) / (q0 + k - 1))
    (K + q_0)/q_0
    """
    result = _linear_product(factor, start)
    if result is not None:
        return tidy(result)
    result = sympy.product(factor, (k, start, K))
    if isinstance(result, sympy.Product):
        return result
    if result.has(sympy.RisingFactorial, sympy.gamma, sympy.FallingFactorial):
        result = sympy.combsimp(result)
    return tidy(result)


def _linear_product(factor: sympy.Expr, start: int) -> sympy.Expr | None:
    """``prod_{k=start}^{K} factor`` for a ratio of factors at most linear in ``k``, one of
    them linear, in gamma functions; None for any other factor.

    With n = K - start + 1 terms, a linear factor gives prod (c k + d) = c^n
    Gamma(x + n)/Gamma(x) with x = start + d/c. A ratio of two such factors whose x
    differ by an integer m telescopes to m factors, as Gamma(x + 1) = x Gamma(x) cancels.
    A factor that may vanish in the range (x + j an integer <= 0, where Gamma has a
    pole), or that holds K, is left to SymPy's ``product``.

    >>> tidy(_linear_product((k + 1) / (k + 3), 1))
    6/(K**2 + 5*K + 6)
    >>> _linear_product((k + q0) / (2 * k), 1)
    gamma(K + q_0 + 1)/(2**K*gamma(K + 1)*gamma(q_0 + 1))
    >>> _linear_product(k**2, 1) is None, _linear_product((10 - k) / (k + 1), 1) is None
    (True, True)
    """
    numer, denom = sympy.fraction(sympy.together(factor))
    if not (numer.has(k) or denom.has(k)) or factor.has(K):
        return None
    terms = K - start + 1
    scale: list[sympy.Expr] = []
    shifts: list[sympy.Expr | None] = []
    for part in (numer, denom):
        if not part.has(k):
            scale.append(part**terms)
            shifts.append(None)
            continue
        if not part.is_polynomial(k) or sympy.degree(part, k) != 1:
            return None
        slope, offset = sympy.Poly(part, k).all_coeffs()
        shift = sympy.cancel(start + offset / slope)
        if not _clear_of_poles(shift):
            return None
        scale.append(slope**terms)
        shifts.append(shift)
    up, down = shifts
    if up is not None and down is not None and (apart := sympy.cancel(up - down)).is_Integer:
        low, steps = (down, int(apart)) if apart >= 0 else (up, -int(apart))
        ratio = sympy.Mul(*[(low + terms + j) / (low + j) for j in range(steps)])
        ratio = ratio if apart >= 0 else 1 / ratio
    else:
        def rising(x: sympy.Expr | None) -> sympy.Expr:
            return 1 if x is None else sympy.gamma(x + terms) / sympy.gamma(x)

        ratio = rising(up) / rising(down)
    return scale[0] / scale[1] * ratio


def _clear_of_poles(x: sympy.Expr) -> bool:
    """True when no x + j (j = 0, 1, ...) is an integer <= 0, where Gamma has its poles:
    x positive, or a number that is not an integer.

    >>> [_clear_of_poles(x) for x in (q0 + 1, sympy.Rational(-1, 2), sympy.Integer(-3))]
    [True, True, False]
    """
    if x.is_positive:
        return True
    return bool(x.is_number and x.is_integer is False)


def _split_depth(arg: sympy.Expr) -> sympy.Expr:
    """``c K + rest`` with ``rest`` written as one fraction."""
    slope = arg.coeff(K)
    return slope * K + sympy.together(arg - slope * K)


@lru_cache(maxsize=4096)
def tidy(expr: sympy.Expr) -> sympy.Expr:
    """Cancel an expression free of functions; leave gammas, atan and moments factored.

    Gamma arguments are written as ``K`` plus one fraction. Cached: the products of
    many configurations share their factors.

    >>> tidy(sympy.gamma(K + 1 + q0 / 2) / sympy.gamma(1 + q0 / 2))
    gamma(K + (q_0 + 2)/2)/gamma((q_0 + 2)/2)
    >>> tidy((2 * q0 + 2) / (q0 + 1) * 2**K)
    2**(K + 1)
    """
    if not expr.atoms(sympy.Function):
        return sympy.powsimp(sympy.cancel(expr))
    return sympy.powsimp(expr).replace(
        lambda e: isinstance(e, sympy.gamma),
        lambda e: sympy.gamma(_split_depth(e.args[0])),
    )


def exact_digits(expr: sympy.Expr, depth: int) -> float:
    """About how many digits the exact value of ``expr`` at ``K = depth`` needs (an upper guess).

    Rational powers ``c^K`` need about ``K log10(c)`` digits (numerator or denominator),
    irrational ones are counted IRRATIONAL_DIGITS a power (their expansion grows with K),
    and gamma ratios about ``K log10(K)``; the rest of a closed form stays short.

    >>> round(exact_digits(2**K * q0, 20000)), exact_digits(K + q0, 10**18)
    (6021, 0.0)
    """
    total = 0.0
    for power in expr.atoms(sympy.Pow):
        base, exponent = power.base, power.exp.xreplace({K: sympy.Integer(depth)})
        if not (power.exp.has(K) and base.is_number and exponent.is_number):
            continue
        if base.is_Rational:
            total += abs(float(exponent)) * math.log10(max(abs(base.p), base.q, 2))
        else:  # an irrational power expands into a term per power of each part
            total += abs(float(exponent)) * IRRATIONAL_DIGITS
    for function in expr.atoms(sympy.gamma, sympy.RisingFactorial, sympy.factorial):
        argument = function.args[0].xreplace({K: sympy.Integer(depth)})
        if function.has(K) and argument.is_number:
            size = abs(float(argument)) + 2
            total += size * math.log10(size)
    return total


@lru_cache(maxsize=4096)
def evaluate(expr: sympy.Expr, depth: int, q0_value: sympy.Expr) -> sympy.Expr:
    """``expr`` at ``K = depth`` and ``q_0 = q0_value``, with gamma ratios reduced.

    Exact while its numbers have at most EXACT_DIGITS digits (the most Python
    prints); past that a float at PRECISION digits, computed without building
    the exact number, so ``2^(10^18)`` takes no longer than ``2^10``.

    >>> evaluate(2**K * q0, 3, sympy.Integer(1))
    8
    >>> evaluate(sympy.gamma(K + sympy.Rational(1, 2)) / sympy.gamma(sympy.Rational(1, 2)), 2, 1)
    3/4
    >>> evaluate(2**K * q0, 10**18, q0)
    1.63583...e+301029995663981195*q_0
    """
    if _special(expr):  # moments known only by quadrature: no exact value to keep
        value = expr.xreplace({K: sympy.Integer(depth), q0: sympy.sympify(q0_value)})
        return finish(value.doit() if isinstance(value, sympy.Piecewise) else value)
    if exact_digits(expr, depth) > EXACT_DIGITS:
        digits = len(str(depth)) + PRECISION + 10
        value = expr.xreplace({q0: sympy.sympify(q0_value)})
        return sympy.N(value.xreplace({K: sympy.Float(depth, digits)}), PRECISION)
    value = expr.xreplace({K: sympy.Integer(depth), q0: sympy.sympify(q0_value)})
    if isinstance(value, sympy.Piecewise):
        value = value.doit()
    if value.has(sympy.gamma) and all(g.args[0].is_Rational for g in value.atoms(sympy.gamma)):
        value = sympy.gammasimp(sympy.expand_func(value))
    return value


#: A symbolic profile of d_k/d_K is cancelled into fractions of expanded polynomials while
#: their terms number at most this many in all; past it each ratio stays a quotient of the
#: closed form's values, exact and quick at any depth.
MAX_CANCELLED_TERMS = 20_000


def expanded_terms(expr: sympy.Expr) -> int:
    """About how many terms ``expr`` has once expanded into one fraction (an upper bound):
    sums add, products multiply (numerator and denominator apart), and a power of a sum
    of t terms to the e counts C(e + t - 1, t - 1).

    >>> a = sympy.Symbol("a")
    >>> expanded_terms((a + 1) ** 10), expanded_terms((a + 1) * (a + 2) / (a + 3) ** 2)
    (11, 7)
    """
    if expr.is_Add:
        return sum(expanded_terms(term) for term in expr.args)
    if expr.is_Mul:
        return _product_terms(expr)
    if expr.is_Pow and expr.exp.is_Integer and expr.base.is_Add:
        terms = expanded_terms(expr.base)
        return math.comb(abs(int(expr.exp)) + terms - 1, terms - 1)
    return 1


def _product_terms(product: sympy.Expr) -> int:
    """The terms of a product's numerator once expanded, plus its denominator's."""
    def is_divisor(factor: sympy.Expr) -> bool:
        return bool(factor.is_Pow and factor.exp.is_negative)

    up = [f for f in product.args if not is_divisor(f)]
    down = [1 / f for f in product.args if is_divisor(f)]
    return (math.prod(expanded_terms(f) for f in up)
            + (math.prod(expanded_terms(f) for f in down) if down else 0))


def ratios(last: sympy.Expr, values: list[sympy.Expr]) -> list[sympy.Expr]:
    """``last / v`` for each of ``values``, cancelled; symbolic ones left as quotients where
    cancelling them all would expand past MAX_CANCELLED_TERMS terms.

    >>> a = sympy.Symbol("a", positive=True)
    >>> ratios((a + 1) ** 2, [a + 1, (a + 1) ** 2])
    [a + 1, 1]
    >>> ratios((a + 1) ** 20000, [(a + 1) ** 19998])
    [(a + 1)**2]
    """
    if not (last.is_number and all(v.is_number for v in values)):
        size = expanded_terms(last) * len(values) + sum(expanded_terms(v) for v in values)
        if size > MAX_CANCELLED_TERMS:
            return [last / v for v in values]
    return [sympy.cancel(last / v) for v in values]


def check_iterated(recursion: object, depth: int) -> int:
    """``depth`` if a recursion without closed form may be iterated that far, else DeriveError.

    >>> check_iterated("tanh", 10)
    10
    """
    if depth > MAX_ITERATED:
        label = getattr(getattr(recursion, "config", None), "label", recursion)
        raise DeriveError(
            f"{label} has no closed form: its values are iterated block by block, up to "
            f"depth {MAX_ITERATED}, got depth {depth}"
        )
    return depth


def sample_blocks(depth: int, points: int = PROFILE_POINTS) -> list[int]:
    """Blocks 0..depth, or ``points`` of them evenly spaced (0 and depth included).

    >>> sample_blocks(3), sample_blocks(10, 3)
    ([0, 1, 2, 3], [0, 5, 10])
    """
    if depth + 1 <= points:
        return list(range(depth + 1))
    return [i * depth // (points - 1) for i in range(points)]


def json_float(value: sympy.Expr) -> float | None:
    """``float(value)``, or None where JSON has no number (overflow, nan).

    >>> json_float(sympy.Rational(1, 4)), json_float(sympy.Float("1e400"))
    (0.25, None)
    """
    number = float(value)
    return number if math.isfinite(number) else None


def mask(expr: sympy.Expr, keep: sympy.Symbol | None = None
         ) -> tuple[sympy.Expr, dict[sympy.Symbol, sympy.Expr]]:
    """Replace the unevaluated moments (free of ``keep``) by positive symbols.

    SymPy's simplifiers query signs, which would evaluate each moment by
    quadrature; masked, they are plain positive symbols. Returns the masked
    expression and the map back.

    >>> from derive.gaussian.moments import TanhMoment
    >>> masked, back = mask(1 + TanhMoment(2))
    >>> masked, back[sympy.Symbol("_m0", positive=True)] == TanhMoment(2)
    (_m0 + 1, True)
    """
    found = sorted((f for f in _special(expr) if keep is None or not f.has(keep)),
                   key=sympy.default_sort_key)
    names = {f: sympy.Symbol(f"_m{i}", positive=True) for i, f in enumerate(found)}
    return expr.xreplace(names), {v: f for f, v in names.items()}


def _is_exact(value: sympy.Expr) -> bool:
    if value.is_Rational:
        return max(abs(value.p), value.q) < _EXACT_LIMIT
    return bool(value.free_symbols and not value.is_number)


def _special(expr: sympy.Expr) -> list[sympy.Function]:
    """Function applications defined outside SymPy (the tanh moments), evaluated by quadrature."""
    return [
        f for f in expr.atoms(sympy.Function)
        if hasattr(f, "_eval_evalf") and not f.func.__module__.startswith("sympy")
    ]


def finish(value: sympy.Expr) -> sympy.Expr:
    """Exact when rational or symbolic, else a float at PRECISION digits.

    Rationals past EXACT_DIGITS digits become floats too.

    >>> finish(sympy.Rational(27, 8)), finish(q0 / 2), finish(sympy.sqrt(2))
    (27/8, q_0/2, 1.41421356237310)
    >>> finish(sympy.Integer(3) ** 20000)
    2.66130342721742e+9542
    """
    value = sympy.sympify(value)
    if _is_exact(value):
        return value
    quadratures = {f: f._eval_evalf(53) for f in _special(value) if f.args[0].is_number}
    return sympy.N(value.xreplace(quadratures), PRECISION)


def exact_value(value: sympy.Expr) -> sympy.Expr:
    """An exact value kept exact, in a short form; a float where a moment is only known by
    quadrature (:func:`finish`).

    >>> exact_value((10 * sympy.sqrt(3) + 23 * sympy.pi) / (3 * sympy.pi))
    10*sqrt(3)/(3*pi) + 23/3
    """
    value = sympy.sympify(value)
    if _is_exact(value):
        return value
    if _special(value) or not value.is_number or value.is_Rational or value.is_Float:
        return finish(value)  # a rational past EXACT_DIGITS digits, or a float already
    if value.has(sympy.gamma) or any(
            p.base.is_Add and p.exp.is_Integer and abs(p.exp) > 2 for p in value.atoms(sympy.Pow)):
        return value  # expanding a power of a sum would only make it long
    return sympy.expand(value)


@lru_cache(maxsize=1024)
def numeric_map(step: sympy.Expr, x: sympy.Symbol | tuple[sympy.Symbol, ...]
                ) -> Callable[..., float]:
    """``step`` as a function of ``x`` (a symbol or a tuple of them) in double precision.

    Functions without a closed form (the tanh moments) are evaluated through
    their own ``_eval_evalf`` at 53 bits.

    >>> x = sympy.Symbol("x")
    >>> numeric_map(x + sympy.atan(x), x)(1.0)
    1.7853981633974483
    """
    special = {
        f.func.__name__: (
            lambda value, cls=f.func: float(cls(sympy.Float(value), evaluate=False)._eval_evalf(53))
            if value > 0 else float(cls(sympy.Integer(0)))  # the moment at variance 0
        )
        for f in _special(step)
    }
    return sympy.lambdify(x, step, modules=[special, "math"])
