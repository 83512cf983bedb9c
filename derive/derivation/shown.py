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

import sympy


class Shown(sympy.Symbol):
    """An atom with fixed text and LaTeX forms; atoms differ when either form does.

    >>> Shown("#L", "a") == Shown("#L", "b"), Shown("#L", "a")._latex()
    (False, 'a')
    """

    def __new__(cls, text: str, latex: str) -> Shown:
        # Both forms name the symbol: SymPy keeps one symbol per name, so two atoms of the
        # same text but different LaTeX must not share one (whichever came last would win).
        return super().__new__(cls, f"{text}\0{latex}", commutative=False)

    @property
    def text(self) -> str:
        """The atom's plain-text form."""
        return self.name.split("\0", 1)[0]

    def __getnewargs_ex__(self) -> tuple[tuple[str, str], dict[str, object]]:
        return (self.text, self._latex()), {}

    def _latex(self, printer: object = None) -> str:
        return self.name.split("\0", 1)[1]

    def _sympystr(self, printer: object = None) -> str:
        return self.text
