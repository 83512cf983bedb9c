"""Step and Derivation: the one value every renderer consumes.

A Derivation is a titled sequence of steps, each an equation ``lhs = rhs``
with a short reason, plus the assumptions it rests on and the result it ends
with. Prose fields (title, assumptions, reasons) are plain text in which math
is written as inline LaTeX between single dollars, e.g. ``"$z \\sim N(0, s^2)$"``;
equation sides are SymPy expressions, printed by :mod:`derive.derivation.printing`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import sympy

from derive.derivation.printing import latex, text


@dataclass(frozen=True)
class Step:
    """One equation of a derivation, with the reason it holds.

    ``relation`` is the LaTeX of the relation between the sides (``=``,
    ``\\approx``, ``\\propto``).

    >>> import sympy
    >>> q, k = sympy.Function("q"), sympy.Symbol("k")
    >>> Step(q(k), 2 * q(k - 1), "He initialization with ReLU").latex()
    'q_{k} = 2 q_{k - 1}'
    """

    lhs: sympy.Basic
    rhs: sympy.Basic
    reason: str = ""
    relation: str = "="

    def latex(self) -> str:
        """The equation in LaTeX."""
        return f"{latex(self.lhs)} {self.relation} {latex(self.rhs)}"

    def text(self) -> str:
        """The equation as one line of Unicode text."""
        rel = {"\\approx": "≈", "\\propto": "∝", "\\le": "≤", "\\ge": "≥"}.get(
            self.relation, self.relation
        )
        return f"{text(self.lhs)} {rel} {text(self.rhs)}"


@dataclass(frozen=True)
class Derivation:
    """A titled derivation: assumptions, steps, and the result they lead to.

    ``key`` is a stable identifier (e.g. ``"variance/he/relu/none/single/forward"``)
    used for file names, anchors and Anki card keys.

    >>> import sympy
    >>> x = sympy.Symbol("x")
    >>> d = Derivation("Square", "demo/square", ("$x$ is real",),
    ...                (Step(x**2, x * x, "definition"),), Step(x**2, x * x))
    >>> len(d), d.result.latex()
    (1, 'x^{2} = x^{2}')
    """

    title: str
    key: str
    assumptions: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    result: Step | None = None
    notes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def _repr_latex_(self) -> str:
        """Jupyter display that fits a notebook column: each step's reason on lines of its
        own (wrapped), then its equation.

        >>> import sympy
        >>> x = sympy.Symbol("x")
        >>> print(Derivation("T", "t", (), (Step(2 * x, x + x, "add $x$ to itself"),))
        ...       ._repr_latex_())
        $\\begin{aligned}
        &\\text{1. add $x$ to itself} \\\\
        2 x &= 2 x
        \\end{aligned}$
        """
        rows = []
        for number, s in enumerate(self.steps, 1):
            for line in wrap_reason(f"{number}. {s.reason}"):
                rows.append(f"&\\text{{{_escape_text(line)}}}")
            rows.append(f"{latex(s.lhs)} &{s.relation} {latex(s.rhs)}")
        body = " \\\\\n".join(rows)
        return f"$\\begin{{aligned}}\n{body}\n\\end{{aligned}}$"


#: A reason line in a notebook column holds about this many characters.
REASON_WIDTH = 60


def wrap_reason(reason: str, width: int = REASON_WIDTH) -> list[str]:
    """A reason in lines of about ``width`` characters, never breaking inside ``$...$``.

    >>> wrap_reason("one two $a + b$: three", width=9)
    ['one two', '$a + b$:', 'three']
    """
    words = re.findall(r"(?:[^\s$]*\$[^$]*\$)+[^\s$]*|\S+", reason)
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _escape_text(reason: str) -> str:
    """Make a reason safe inside ``\\text{}`` (its inline math stays math)."""
    return reason.replace("%", "\\%").replace("&", "\\&").replace("#", "\\#")
