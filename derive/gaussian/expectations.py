"""Printable expectations and activations, and the symbols of the Gaussian derivations.

>>> from derive.derivation.printing import text
>>> text(Expectation(applied("relu", True) ** 2))
"E[relu'(z)²]"
"""

from __future__ import annotations

import sympy

#: Standard deviation s of z ~ N(0, s^2); derivations are written in s, results in s^2.
s = sympy.Symbol("s", positive=True)
#: The integration variable z, and u ~ N(0, 1) with z = s u.
z = sympy.Symbol("z", real=True)
u = sympy.Symbol("u", real=True)
#: The negative slope of leaky_relu, kept symbolic in the derivation.
a = sympy.Symbol("a", nonnegative=True)


class Expectation(sympy.Function):
    """A printable placeholder for an expectation E[body] (never evaluated).

    >>> from derive.derivation.printing import latex, text
    >>> latex(Expectation(z**2)), text(Expectation(z**2))
    ('\\\\mathbb{E}\\\\left[z^{2}\\\\right]', 'E[z²]')
    """

    nargs = 1

    def _latex(self, printer: sympy.printing.latex.LatexPrinter) -> str:
        return rf"\mathbb{{E}}\left[{printer._print(self.args[0])}\right]"

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"E[{printer._print(self.args[0])}]"


class Activation(sympy.Function):
    """A printable activation applied to an argument: ``Activation(name, x)``.

    ``name`` is a Symbol such as ``relu``; a trailing ``'`` marks the derivative.

    >>> from derive.derivation.printing import latex
    >>> latex(Activation(sympy.Symbol("gelu'"), z))
    "\\\\operatorname{gelu}'\\\\left(z\\\\right)"
    """

    nargs = 2

    def _parts(self) -> tuple[str, str]:
        name = self.args[0].name
        return name.rstrip("'"), "'" * (len(name) - len(name.rstrip("'")))

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: object = None) -> str:
        base, prime = self._parts()
        escaped = base.replace("_", r"\_")
        head = r"\tanh" if base == "tanh" else rf"\operatorname{{{escaped}}}"
        out = rf"{head}{prime}\left({printer._print(self.args[1])}\right)"
        return f"{out}^{{{exp}}}" if exp is not None else out

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        base, prime = self._parts()
        return f"{base}{prime}({printer._print(self.args[1])})"


def applied(name: str, derivative: bool, arg: sympy.Expr = z) -> sympy.Expr:
    """The printable activation ``name`` (or its derivative) at ``arg``.

    >>> applied("gelu", True)
    gelu'(z)
    """
    return Activation(sympy.Symbol(name + ("'" if derivative else "")), arg)
