"""An atom printed exactly as given: the book's notation where SymPy's printers would
reorder or rename (``shown("∂y/∂f₁", r"\\frac{\\partial y}{\\partial f_{1}}")``).

It is a non-commutative SymPy symbol that keeps its LaTeX form, and it pickles with
it, so derivations made in a second process arrive whole.

>>> import pickle
>>> atom = Shown("∂y/∂x", r"\\frac{\\partial y}{\\partial x}")
>>> pickle.loads(pickle.dumps(atom))._latex()
'\\\\frac{\\\\partial y}{\\\\partial x}'
"""

from __future__ import annotations

from typing import Any

import sympy

#: text -> LaTeX of every atom made so far (an atom is named by its text).
LATEX: dict[str, str] = {}


class Shown(sympy.Symbol):
    """An atom with fixed text and LaTeX forms."""

    def __new__(cls, text: str, latex: str) -> Shown:
        LATEX[text] = latex
        return super().__new__(cls, text, commutative=False)

    def __getnewargs_ex__(self) -> tuple[tuple[str, str], dict[str, Any]]:
        return (self.name, LATEX[self.name]), {}

    def _latex(self, printer: Any = None) -> str:
        return LATEX[self.name]

    def _sympystr(self, printer: Any = None) -> str:
        return self.name
