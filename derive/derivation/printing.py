"""Printers in the project's notation: LaTeX and one-line Unicode text.

Sequences such as q_k and d_k are SymPy functions of the block index (so that
``rsolve`` can solve their recursions); these printers write ``q(k - 1)`` as
``q_{k - 1}`` in LaTeX and ``qₖ₋₁`` in text, as the notes do.
"""

from __future__ import annotations

import re

import sympy
from sympy.core.function import AppliedUndef
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

#: Names of sequence functions that print as subscripted symbols.
SEQUENCES = frozenset({"q", "d", "c", "w", "s", "h", "f", "J"})
#: Sequences with Greek names (the correlations of two inputs and of their gradients):
#: function name -> (LaTeX, text) of the letter, subscripted by the index as the others.
GREEK_SEQUENCES = {"rho": (r"\rho", "ρ"), "rho^{grad}": (r"\rho^{grad}", "ρᵍʳᵃᵈ")}

_SUB = str.maketrans("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ")
_SUP = str.maketrans("0123456789+-=()nikK", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱᵏᴷ")
_GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "mu": "μ",
    "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "lambda": "λ", "Phi": "Φ",
}


def subscript(text: str) -> str:
    """Unicode subscript of ``text`` where every character has one, else ``_text``.

    >>> subscript("k-1"), subscript("w")
    ('ₖ₋₁', '_w')
    """
    plain = text.replace(" ", "")
    if all(ch in "0123456789+-=()aehijklmnoprstuvx" for ch in plain):
        return plain.translate(_SUB)
    return "_" + plain if len(plain) == 1 else "_{" + plain + "}"


def superscript(text: str) -> str:
    """Unicode superscript of ``text`` where every character has one, else ``^(text)``.

    >>> superscript("2"), superscript("K")
    ('²', 'ᴷ')
    """
    plain = text.replace(" ", "")
    if all(ch in "0123456789+-=()nikK" for ch in plain):
        return plain.translate(_SUP)
    return "^" + plain if len(plain) == 1 or plain.isalnum() else "^(" + plain + ")"


def _unicode_name(name: str) -> str:
    base, _, sub = name.partition("_")
    base = _GREEK.get(base, base)
    sub = sub.strip("{}")
    return base + (subscript(_GREEK.get(sub, sub)) if sub else "")


def book_order(terms: list) -> list:
    """A sum's terms as a textbook writes them: not led by a minus sign if avoidable.

    SymPy prints ``-mu + x_i``; the book writes ``x_i - mu``. Terms keep their
    order otherwise.

    >>> import sympy
    >>> mu, x = sympy.symbols("mu x_i")
    >>> book_order([-mu, x])
    [x_i, -mu]
    """
    if not terms or not terms[0].could_extract_minus_sign():
        return terms
    positive = [t for t in terms if not t.could_extract_minus_sign()]
    return positive + [t for t in terms if t.could_extract_minus_sign()]


def _negated_rate(base: sympy.Expr) -> sympy.Expr | None:
    """``c - s`` for a base ``s - c`` (s a symbol that is not an integer, c > 0), else None."""
    if not base.is_Add or len(base.args) != 2:
        return None
    number, rest = base.as_coeff_Add()
    if not (number.is_Number and number < 0 and rest.is_Symbol and rest.is_integer is not True):
        return None
    return -base


def positive_rates(expr: sympy.Expr) -> sympy.Expr:
    """Quotients of ``s - a`` and ``s - b`` written as ``(a - s)/(b - s)``: the same value, in
    the form a rate s in [0, 1) is read (both factors positive). A product is rewritten
    only when the signs cancel, so the value never changes; integer symbols (K, k) keep
    their form.

    >>> p = sympy.Symbol("p", nonnegative=True)
    >>> positive_rates((p - 2) / (p - 1))
    (2 - p)/(1 - p)
    """
    def fix(product: sympy.Expr) -> sympy.Expr:
        factors, sign, flipped = [], 1, 0
        for factor in product.args:
            base, exp = factor.as_base_exp()
            negated = _negated_rate(base)
            if negated is not None and exp.is_Integer:
                factors.append(negated if exp == 1 else sympy.Pow(negated, exp))
                sign, flipped = sign * (-1) ** int(exp), flipped + 1
            else:
                factors.append(factor)
        if flipped < 2 or sign != 1:
            return product
        return sympy.Mul(*factors, evaluate=False)

    if not isinstance(expr, sympy.Basic) or not expr.has(sympy.Symbol):
        return expr
    return expr.replace(lambda e: e.is_Mul, fix)


class _Latex(LatexPrinter):
    def _as_ordered_terms(self, expr, order=None):
        return book_order(list(super()._as_ordered_terms(expr, order)))

    def _print_Pow(self, expr):
        base, exp = expr.as_base_exp()
        if exp.could_extract_minus_sign() and not exp.is_number:
            return rf"\frac{{1}}{{{self._print(sympy.Pow(base, -exp, evaluate=False))}}}"
        return super()._print_Pow(expr)

    def _print_Function(self, expr, exp=None):
        name = expr.func.__name__
        if isinstance(expr, AppliedUndef) and name in SEQUENCES and len(expr.args) == 1:
            out = f"{name}_{{{self._print(expr.args[0])}}}"
            return f"{out}^{{{exp}}}" if exp is not None else out
        if isinstance(expr, AppliedUndef) and name in GREEK_SEQUENCES and len(expr.args) == 1:
            out = f"{GREEK_SEQUENCES[name][0]}_{{{self._print(expr.args[0])}}}"
            return f"\\left({out}\\right)^{{{exp}}}" if exp is not None else out
        return super()._print_Function(expr, exp)

    def _print_harmonic(self, expr, exp=None):
        n, *order = expr.args
        out = f"H_{{{self._print(n)}}}" + (f"^{{({self._print(order[0])})}}" if order else "")
        return f"\\left({out}\\right)^{{{exp}}}" if exp is not None else out


class _Text(StrPrinter):
    def _as_ordered_terms(self, expr, order=None):
        return book_order(list(super()._as_ordered_terms(expr, order)))

    def _print_Function(self, expr):
        name = expr.func.__name__
        if isinstance(expr, AppliedUndef) and name in SEQUENCES and len(expr.args) == 1:
            return name + subscript(self._print(expr.args[0]))
        if isinstance(expr, AppliedUndef) and name in GREEK_SEQUENCES and len(expr.args) == 1:
            return GREEK_SEQUENCES[name][1] + subscript(self._print(expr.args[0]))
        return super()._print_Function(expr)

    def _print_Symbol(self, expr):
        return _unicode_name(expr.name)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.as_base_exp()
        if exp == sympy.S.Half:
            return f"√({self._print(base)})"
        b = self.parenthesize(base, sympy.printing.precedence.PRECEDENCE["Pow"])
        if (exp.is_Integer and exp.is_positive) or exp.is_Symbol or exp.is_Add:
            return b + superscript(self._print(exp))
        if exp.could_extract_minus_sign():
            return "1/" + (b if exp == -1 else self._print(sympy.Pow(base, -exp, evaluate=False)))
        shown = self._print(exp)
        return f"{b}^{shown}" if shown.isalnum() else f"{b}^({shown})"

    def _print_binomial(self, expr):
        return f"C({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _bounds(self, limits) -> str:
        return " ".join(
            f"{symbol}={self._print(low)}..{self._print(high)}" for symbol, low, high in limits
        )

    def _body(self, expr) -> str:
        body = self._print(expr)
        return f"({body})" if expr.is_Add else body

    def _print_Sum(self, expr):
        return f"Σ[{self._bounds(expr.limits)}] {self._body(expr.function)}"

    def _print_Product(self, expr):
        return f"∏[{self._bounds(expr.limits)}] {self._body(expr.function)}"

    def _print_Mul(self, expr):
        return re.sub(r"(?<!\*)\*(?!\*)", "·", super()._print_Mul(expr))

    def _print_Pi(self, expr):
        return "π"

    def _print_Equality(self, expr):
        return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"

    def _print_Piecewise(self, expr):
        parts = []
        for value, condition in expr.args:
            if condition == sympy.true:
                parts.append(f"else {self._print(value)}")
            else:
                parts.append(f"{self._print(value)} if {self._print(condition)}")
        return ", ".join(parts)

    def _print_gamma(self, expr):
        return f"Γ({self._print(expr.args[0])})"

    def _print_harmonic(self, expr):
        n, *order = expr.args
        return f"H{'⁽' + superscript(self._print(order[0])) + '⁾' if order else ''}" + (
            f"({self._print(n)})")


def latex(expr: object) -> str:
    """LaTeX of a SymPy expression in the project's notation.

    >>> import sympy
    >>> q, k = sympy.Function("q"), sympy.Symbol("k")
    >>> latex(2 * q(k - 1))
    '2 q_{k - 1}'
    >>> latex(sympy.Function("rho")(k - 1))
    '\\\\rho_{k - 1}'
    """
    return _Latex().doprint(positive_rates(sympy.sympify(expr)))


def text(expr: object) -> str:
    """One-line Unicode text of a SymPy expression, for terminals.

    >>> import sympy
    >>> q, K = sympy.Function("q"), sympy.Symbol("K")
    >>> text(2**K * q(0))
    '2ᴷ·q₀'
    >>> m, L = sympy.symbols("m L")
    >>> text(sympy.Sum(sympy.binomial(m, L), (L, 0, m)))
    'Σ[L=0..m] C(m, L)'
    >>> text(sympy.Piecewise((q(0), sympy.Eq(K, 0)), (1, True)))
    'q₀ if K = 0, else 1'
    >>> k = sympy.Symbol("k")
    >>> text(sympy.Function("rho^{grad}")(k) * sympy.Function("rho")(k - 1))
    'ρₖ₋₁·ρᵍʳᵃᵈₖ'
    """
    return _Text().doprint(positive_rates(sympy.sympify(expr)))
