"""Numbers a user gives derive, parsed in one place for every option and API argument.

:func:`integer` reads counts (depths, widths, seeds); :func:`exact` reads the
block's numbers (gains, rates, ratios) as exact SymPy values: ``0.1`` becomes
``1/10``, ``1/3`` is a rational, and a name becomes a positive symbol where a
symbol is allowed. Text is parsed, never evaluated, and sizes are checked
before any number is built, so ``1e400``, ``1e99999999`` or a 5,000-digit
integer is refused at once. ``nan``, ``inf`` and a zero denominator are
refused by name. Every refusal is a :class:`DeriveError` naming the value and
what is allowed. SymPy is imported only when an exact value is built, so
``derive paths`` stays light.

>>> integer("12", "depth", minimum=1), exact("0.1", "dropout"), exact("1/3", "gamma")
(12, 1/10, 1/3)
>>> exact("1/0", "gamma")
Traceback (most recent call last):
...
derive.errors.DeriveError: gamma must be a finite number (like 2, 0.1, 1e-3 or 1/3) of at most 300 digits, or a symbol name, got '1/0' (a zero denominator)
"""  # noqa: E501

from __future__ import annotations

import decimal
import math
import numbers
import re
from typing import TYPE_CHECKING

from derive.errors import DeriveError

if TYPE_CHECKING:  # pragma: no cover
    import sympy

#: Digits allowed above and below the fraction bar of an exact value: every such
#: value is a finite double, so a simulation can use it too.
MAX_DIGITS = 300
_LIMIT = 10**MAX_DIGITS
#: Depths (and other counts) above this are refused: 10^18.
MAX_DEPTH = 10**18
#: Text longer than this is refused before it is parsed.
MAX_TEXT = 1000
#: Names that read as numbers but are not finite ones.
NOT_FINITE = frozenset({"nan", "inf", "infinity", "oo", "zoo"})

_DECIMAL = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")
_INTEGER = re.compile(r"[+-]?\d+")


def shown(value: object) -> str:
    """``repr(value)`` kept short: long text and huge integers are summarized.

    >>> shown("abc"), shown(10**5000), shown("9" * 500)
    ("'abc'", 'an integer of 5001 digits', "'99999999999999999999...' (500 characters)")
    """
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _LIMIT:
        bits = abs(value).bit_length()
        digits = int((bits - 1) * math.log10(2)) + 1
        if bits < 10**6 and abs(value) >= 10**digits:
            digits += 1
        return f"an integer of {digits} digits"
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:20]!r}... ({len(value)} characters)".replace("'...", "...'")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer_text(name: str, minimum: int, maximum: int | None) -> str:
    if maximum is None:
        return f"{name} must be an integer >= {minimum}"
    top = "10^18" if maximum == MAX_DEPTH else str(maximum)
    return f"{name} must be an integer >= {minimum} and <= {top}"


def integer(value: object, name: str, *, minimum: int = 0, maximum: int | None = MAX_DEPTH,
            text: bool = True) -> int:
    """``value`` (an int, or the text of one if ``text``) as an int in ``minimum..maximum``.

    >>> integer(" 7 ", "width"), integer(4, "depth", minimum=1)
    (7, 4)
    >>> integer("1e3", "depth", minimum=1)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: depth must be an integer >= 1 and <= 10^18, got '1e3'
    """
    number: int | None = None
    if isinstance(value, str) and text:
        written = value.strip()
        if len(written) <= MAX_TEXT and _INTEGER.fullmatch(written):
            number = int(written)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        raise DeriveError(f"{_integer_text(name, minimum, maximum)}, got {shown(value)}")
    return number


def check_depth(depth: object, *, minimum: int = 1, name: str = "depth",
                maximum: int | None = MAX_DEPTH) -> int:
    """Return ``depth`` as an int in ``minimum..maximum``, or raise DeriveError naming it.

    >>> check_depth(4)
    4
    >>> check_depth(0)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: depth must be an integer >= 1 and <= 10^18, got 0
    """
    return integer(depth, name, minimum=minimum, maximum=maximum, text=False)


def _allowed(name: str, symbol: bool) -> str:
    kinds = "a finite number (like 2, 0.1, 1e-3 or 1/3) of at most 300 digits"
    return f"{name} must be {kinds}{', or a symbol name' if symbol else ''}"


def _refuse(value: object, name: str, symbol: bool, why: str = "") -> DeriveError:
    reason = f" ({why})" if why else ""
    return DeriveError(f"{_allowed(name, symbol)}, got {shown(value)}{reason}")


def _decimal(sign: str, whole: str, fraction: str | None, power: str | None
             ) -> tuple[int, int] | None:
    """(numerator, denominator) of one decimal, or None when it is out of range."""
    digits = (whole or "") + (fraction or "")
    mantissa = int(digits)
    if mantissa == 0:
        return 0, 1
    scale = int(power or 0) - len(fraction or "")
    size = len(digits.lstrip("0")) + scale  # digits left of the point
    if size > MAX_DIGITS or size < -MAX_DIGITS or abs(scale) > 2 * MAX_DIGITS + MAX_TEXT:
        return None
    mantissa = -mantissa if sign == "-" else mantissa
    return (mantissa * 10**scale, 1) if scale >= 0 else (mantissa, 10**-scale)


def _parse(text: str) -> tuple[int, int] | str:
    """(numerator, denominator) of a decimal or a fraction, or why it is refused."""
    if len(text) > MAX_TEXT:
        return "too long"
    parts = []
    for piece in text.split("/") if text.count("/") <= 1 else ():
        match = _DECIMAL.fullmatch(piece.strip())
        if match is None or not (match[2] or match[3]):  # no digits: "", "+", ".", "e5"
            return "not a number"
        part = _decimal(*match.groups())
        if part is None:
            return "too large or too small"
        parts.append(part)
    if not parts:
        return "not a number"
    (a, b), (c, d) = parts if len(parts) == 2 else (parts[0], (1, 1))
    if c == 0:
        return "a zero denominator"
    return a * d, b * c


def _rational(p: int, q: int, value: object, name: str, symbol: bool) -> sympy.Rational:
    import sympy

    if q < 0:
        p, q = -p, -q
    gcd = math.gcd(p, q)
    p, q = p // gcd, q // gcd
    if abs(p) >= _LIMIT or q >= _LIMIT:
        raise _refuse(value, name, symbol, "too many digits")
    return sympy.Rational(p, q)


def _exact_basic(value: sympy.Basic, name: str, symbol: bool) -> sympy.Expr:
    """A SymPy value as given, once it is a finite, real, printable expression."""
    import sympy

    if not isinstance(value, sympy.Expr) or value.has(
        sympy.nan, sympy.oo, -sympy.oo, sympy.zoo
    ):
        raise _refuse(value, name, symbol, "not a finite number")
    if not symbol and not value.is_number:
        raise _refuse(value, name, symbol)
    for atom in value.atoms(sympy.Rational):
        if abs(atom.p) >= _LIMIT or atom.q >= _LIMIT:
            raise _refuse(value, name, symbol, "too many digits")
    if value.is_number and (value.is_finite is False or value.is_extended_real is False):
        raise _refuse(value, name, symbol, "not a finite real number")
    return value


def exact(value: object, name: str, *, symbol: bool = True) -> sympy.Expr:
    """An exact SymPy value: ints, decimals and fractions become rationals, names symbols.

    A SymPy expression is kept as it is once it is finite and real.
    ``symbol=False`` refuses names (a simulation needs numbers).

    >>> exact(0.1, "dropout"), exact("gamma", "gamma"), exact(2, "gamma"), exact("-2.5e-1", "a")
    (1/10, gamma, 2, -1/4)
    >>> exact("inf", "q0", symbol=False)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: q0 must be a finite number (like 2, 0.1, 1e-3 or 1/3) of at most 300 digits, got 'inf' (not a finite number)
    """  # noqa: E501
    import sympy

    if isinstance(value, sympy.Basic):
        return _exact_basic(value, name, symbol)
    if isinstance(value, (bool, complex)):
        raise _refuse(value, name, symbol)
    if isinstance(value, numbers.Rational):
        return _rational(int(value.numerator), int(value.denominator), value, name, symbol)
    if isinstance(value, numbers.Real) and not isinstance(value, decimal.Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise _refuse(value, name, symbol, "not a finite number")
        value = repr(number)
    if isinstance(value, decimal.Decimal):
        value = str(value)
    if not isinstance(value, str):
        raise _refuse(value, name, symbol)
    text = value.strip()
    if text.lower().lstrip("+-") in NOT_FINITE:
        raise _refuse(value, name, symbol, "not a finite number")
    if text.isidentifier() and len(text) <= MAX_TEXT:
        if not symbol:
            raise _refuse(value, name, symbol)
        return sympy.Symbol(text, positive=True)
    return _from_text(text, value, name, symbol)


def _from_text(text: str, value: object, name: str, symbol: bool) -> sympy.Expr:
    """The exact number written in ``text``: a decimal, a fraction, or one with a root."""
    root = _ROOT.fullmatch(text)
    if root is not None:
        return _with_root(root, value, name, symbol)
    parsed = _parse(text)
    if isinstance(parsed, str):
        raise _refuse(value, name, symbol, "" if parsed == "not a number" else parsed)
    return _rational(*parsed, value, name, symbol)


#: A number times or over the square root of a number: ``1/sqrt(50)``, ``2*sqrt(2)``,
#: ``sqrt(3)/2``, ``sqrt(1/2)`` (a branch scale such as 1/sqrt(L) for L layers).
_ROOT = re.compile(r"(?:([^*/()]+?)\s*([*/])\s*)?sqrt\(\s*([^()]+?)\s*\)(?:\s*/\s*([^*/()]+))?")


def _with_root(match: re.Match[str], value: object, name: str, symbol: bool) -> sympy.Expr:
    """The exact value of a number with one square root (:data:`_ROOT`)."""
    import sympy

    factor_text, operator, inside_text, below_text = match.groups()
    if factor_text is not None and below_text is not None:
        raise _refuse(value, name, symbol)
    parts = []
    for text in (factor_text or "1", inside_text, below_text or "1"):
        parsed = _parse(text.strip())
        if isinstance(parsed, str):
            raise _refuse(value, name, symbol, "" if parsed == "not a number" else parsed)
        parts.append(_rational(*parsed, value, name, symbol))
    factor, inside, below = parts
    if inside < 0:
        raise _refuse(value, name, symbol, "the square root of a negative number")
    if inside == 0 and operator == "/":
        raise _refuse(value, name, symbol, "a zero denominator")
    if operator == "/":
        return factor / sympy.sqrt(inside) / below
    return factor * sympy.sqrt(inside) / below


def positive(value: object, name: str, *, shown: str | None = None) -> sympy.Expr:
    """``value`` as :func:`exact` reads it, refused where it is a number <= 0 (a symbol
    passes); ``shown`` names it in that refusal (default ``name``).

    >>> positive("1/2", "q0"), positive("q", "q0")
    (1/2, q)
    >>> positive(0, "q0", shown="--q0")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: --q0 must be > 0, got 0
    """
    result = exact(value, name)
    if result.is_number and not result > 0:
        raise DeriveError(f"{shown or name} must be > 0, got {result}")
    return result


def real(value: object, name: str) -> float:
    """A finite number as a float, parsed as :func:`exact` parses it (no names).

    >>> real("1/4", "q0"), real(2, "tolerance")
    (0.25, 2.0)
    """
    return float(exact(value, name, symbol=False))
