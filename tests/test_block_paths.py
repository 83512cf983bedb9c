"""Path sums for any block against SymPy's chain rule on concrete maps.

Each factor symbol of the expansion (J_k, L_k, B_k, W_k, D_k, M_k) stands for the
Jacobian of some differentiable map at its input; the identity holds whatever the
maps are. So every primitive gets a distinct concrete polynomial map of R^3, the
whole stack is composed as a function of a perturbation u, and SymPy's
``Matrix.jacobian`` of the output at u = 0 must equal the expansion with each
symbol replaced by its map's Jacobian at the point where it is applied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import pytest
import sympy

import derive
from derive.blocks.block import block
from derive.blocks.nodes import Input, Node, Scale, Sum
from derive.blocks.primitives import Activation, BatchNorm, Branch, Dropout, LayerNorm, Weight
from derive.errors import DeriveError
from derive.pathsums.block_paths import (
    BlockPathSum,
    block_jacobian,
    block_names,
    block_terms,
    branch_tail,
    power_coefficients,
)
from derive.pathsums.expansion import PathSum

DIM = 3
_H = sympy.symbols(f"h0:{DIM}")
_U = sympy.symbols(f"u0:{DIM}")
X0 = sympy.Matrix([sympy.Rational(1, 2), sympy.Rational(-1, 3), sympy.Rational(1, 5)])
LETTERS = {Branch: "J", LayerNorm: "L", BatchNorm: "B", Weight: "W", Activation: "D",
           Dropout: "M"}
#: Concrete values for the scalar symbols (and std(h_k)), so that SymPy works with numbers.
SCALARS = {"alpha": Fraction(1, 3), "beta": Fraction(3, 2), "p": Fraction(1, 10)}


def _map(name: str) -> sympy.Matrix:
    """A distinct quadratic map of R^3 for each factor name, as a function of _H."""
    seed = sum((i + 1) * ord(ch) for i, ch in enumerate(name))
    h = sympy.Matrix(_H)
    a = sympy.Matrix(DIM, DIM, lambda r, c: Fraction((seed * (r + 2) + 3 * c + 1) % 7 - 3, 5))
    b = sympy.Matrix(DIM, DIM, lambda r, c: Fraction((seed + 2 * r + c) % 5 - 2, 9))
    return a * h + b * sympy.Matrix([v**2 for v in _H]) + sympy.Matrix(
        [Fraction(seed % 11, 11) * _H[0] * _H[1]] * DIM)


def _first_order(h: sympy.Matrix) -> sympy.Matrix:
    def truncate(expr: sympy.Expr) -> sympy.Expr:
        poly = sympy.Poly(sympy.expand(expr), *_U)
        return sum((c * sympy.Mul(*(u**e for u, e in zip(_U, m, strict=True)))
                    for m, c in poly.terms() if sum(m) <= 1), sympy.Integer(0))

    return h.applyfunc(truncate)


def _numbers(expr: sympy.Expr) -> sympy.Expr:
    values = {s: sympy.Rational(SCALARS[s.name].numerator, SCALARS[s.name].denominator)
              for s in expr.free_symbols if s.name in SCALARS}
    values.update({s: sympy.Integer(2 + s.index) for s in expr.free_symbols
                   if type(s).__name__ == "BlockStd"})
    return expr.xreplace(values)


@dataclass
class Stack:
    """The stack evaluated to first order in u, and every factor's concrete Jacobian."""

    spec: object
    depth: int
    wrt: int | str

    def __post_init__(self) -> None:
        self.jacobians: dict[sympy.Symbol, sympy.Matrix] = {}
        u = sympy.Matrix(_U)
        h = X0 + u if self.wrt == "x" else X0
        for k in range(1, self.depth + 1):
            self.k, self.names = k, block_names(self.spec, k)
            h = self.evaluate(self.spec.tree, h)
        self.output = h

    def evaluate(self, node: Node, h: sympy.Matrix) -> sympy.Matrix:
        if isinstance(node, Input):
            return h
        values = [self.evaluate(c, h) for c in node.children]
        if isinstance(node, Sum):
            return sum(values[1:], values[0])
        if isinstance(node, Scale):
            return _numbers(self.names.scalar(node.factor)) * values[0]
        symbol = self.names.symbols[LETTERS[type(node)], node]
        f = _map(symbol.name)
        point = values[0].xreplace(dict.fromkeys(_U, 0))
        self.jacobians[symbol] = f.jacobian(sympy.Matrix(_H)).xreplace(
            dict(zip(_H, point, strict=True)))
        out = _first_order(f.xreplace(dict(zip(_H, values[0], strict=True))))
        if isinstance(node, Branch) and self.k == self.wrt:
            out = out + sympy.Matrix(_U)  # perturb the output of f_j
        return out

    def chain_rule(self) -> sympy.Matrix:
        return self.output.jacobian(sympy.Matrix(_U)).xreplace(dict.fromkeys(_U, 0))

    def expansion(self, expr: sympy.Expr) -> sympy.Matrix:
        total = sympy.zeros(DIM, DIM)
        for term in sympy.Add.make_args(expr):
            scalars, factors = term.args_cnc()
            product = sympy.eye(DIM) * _numbers(sympy.Mul(*scalars))
            for symbol in factors:
                product = product * self.jacobians[symbol]
            total += product
        return total


BLOCKS = ["x + F(LN(x))", "LN(x + F(x))", "(x + F(x))/sqrt(2)", "x + alpha*F(x)",
          "x + F(BN(x))", "x + LN(F(LN(x)))", "LN(alpha*x + beta*F(x))", "x + Dropout(F(x), p)",
          "x + alpha*F(x/std(x))", "x + W(relu(W(x)))", "x + F(x) + F(LN(x))", "x + F(x + F(x))"]
CASES = [(b, depth, wrt) for b in BLOCKS for depth, wrt in ((1, "x"), (2, "x"), (3, "x"), (3, 1),
                                                            (3, 2))]


@pytest.mark.parametrize(("spec", "depth", "wrt"), CASES)
def test_block_expansion_equals_chain_rule(spec: str, depth: int, wrt: int | str) -> None:
    chosen = block(spec)
    if wrt != "x" and sum(isinstance(n, Branch) for n in chosen.tree.walk()) != 1:
        with pytest.raises(DeriveError, match="one branch F"):
            BlockPathSum(depth, wrt, chosen)
        return
    stack = Stack(chosen, depth, wrt)
    paths = BlockPathSum(depth, wrt, chosen)
    difference = stack.expansion(paths.expr) - stack.chain_rule()
    assert difference.applyfunc(sympy.expand) == sympy.zeros(DIM, DIM)
    assert len(sympy.Add.make_args(sympy.expand(paths.factored))) <= paths.count


def test_the_check_can_fail_factors_do_not_commute() -> None:
    """Each term's factors reversed give another matrix: the order is tested."""
    chosen = block("x + F(LN(x))")
    stack = Stack(chosen, 3, "x")
    reversed_expr = sympy.Add(*(sympy.Mul(*reversed(sympy.Mul.make_args(t)))
                                for t in sympy.Add.make_args(BlockPathSum(3, "x", chosen).expr)))
    assert stack.expansion(reversed_expr) != stack.chain_rule()


def _J(k: int) -> sympy.Symbol:
    return sympy.Symbol(f"J_{k}", commutative=False)


def _L(k: int) -> sympy.Symbol:
    return sympy.Symbol(f"L_{k}", commutative=False)


@pytest.mark.parametrize(("spec", "expected"), [
    ("(x + F(x))/sqrt(2)", lambda: (1 + _J(3)) / sympy.sqrt(2)),
    ("x + alpha*F(x)", lambda: 1 + sympy.Symbol("alpha", positive=True) * _J(3)),
    ("LN(x + F(x))", lambda: _L(3) * (1 + _J(3))),
    ("x + F(LN(x))", lambda: 1 + _J(3) * _L(3)),
])
def test_block_jacobians_of_the_issue(spec: str, expected) -> None:
    assert sympy.expand(block_jacobian(block(spec), 3) - expected()) == 0


@pytest.mark.parametrize(("depth", "wrt"), [(1, 1), (4, 1), (5, "x"), (6, 3)])
def test_plain_block_is_todays_path_sum(depth: int, wrt: int | str) -> None:
    """x + F(x) through the block rules: the same terms in the same order as PathSum."""
    general = BlockPathSum(depth, wrt, block("x + F(x)"))
    plain = PathSum(depth, wrt, notation="jacobian")
    assert [tuple(f for f in general.term(c).factors) for c in general] == \
        [tuple(_J(b) for b in t) for t in plain]
    assert general.text() == plain.text()
    assert general.expr == plain.expr
    assert derive.paths(depth, wrt, block="x + F(x)") == PathSum(depth, wrt)


def test_order_is_the_books_with_block_factors() -> None:
    """UDL eq. 11.6's order, each J_k carrying L_k: binary counting, block j+1 lowest."""
    s = derive.paths(4, 1, block="pre")
    assert s.text() == ("∂y/∂f₁ = I + J₂L₂ + J₃L₃ + J₃L₃J₂L₂ + J₄L₄ + J₄L₄J₂L₂ + J₄L₄J₃L₃ "
                        "+ J₄L₄J₃L₃J₂L₂")
    post = derive.paths(2, 1, block="post")
    assert post.text() == "∂y/∂f₁ = L₂L₁ + L₂J₂L₁"
    assert branch_tail(block("post"), 1).factors == (_L(1),)


@pytest.mark.parametrize("spec", ["pre", "x + F(x + F(x))", "x + F(x) + F(LN(x))", "sandwich"])
def test_lengths_count_the_terms(spec: str) -> None:
    """Lengths by Miller's recurrence against counting the enumerated terms' J's."""
    s = BlockPathSum(5, "x", block(spec))
    counted = Counter(s.term(c).branches for c in s)
    assert {k: v for k, v in s.lengths.items() if v} == dict(counted)
    assert sum(s.lengths.values()) == s.count


def test_power_coefficients_against_repeated_products() -> None:
    for poly in ([1, 1], [2, 0, 3], [0, 1, 1], [1, 2, 1, 5]):
        expected = [1]
        for power in range(7):
            assert power_coefficients(poly, power) == expected + [0] * (
                len(power_coefficients(poly, power)) - len(expected))
            size = len(expected) + len(poly) - 1
            expected = [sum(expected[i] * poly[n - i] for i in range(len(expected))
                            if 0 <= n - i < len(poly)) for n in range(size)]


def test_streamed_text_and_latex_hold_every_term() -> None:
    s = BlockPathSum(12, 1, block("rescaled"))
    text = s.text()
    assert text.count(" + ") == s.count - 1
    assert text.startswith("∂y/∂f₁ = 1/64·I + 1/64·J₂ + ")
    assert s.latex().count(" + ") == s.count - 1


def test_terms_of_a_block_follow_its_expression() -> None:
    terms = block_terms(block("LN(alpha*x + beta*F(x))"), 2)
    assert [(str(t.coefficient), t.branches) for t in terms] == [("alpha", 0), ("beta", 1)]


def test_bad_input() -> None:
    with pytest.raises(DeriveError, match="more than 2\\^22"):
        list(BlockPathSum(23, "x", block("pre")))
    with pytest.raises(DeriveError, match=r"wrt must be a block index 1\.\.3"):
        derive.paths(3, 4, block="pre")
    with pytest.raises(DeriveError, match="depth must be an integer >= 1"):
        derive.paths(0, block="pre")
    with pytest.raises(DeriveError, match="unknown block"):
        derive.paths(3, block="prenorm")
