"""Parse a block written as in a student's notes: ``x + F(LN(x))``, ``(x + F(x))/sqrt(2)``.

The text is parsed with Python's own parser into a syntax tree (``ast.parse``),
and only a whitelist of node types is read from it: numbers, names, ``+ - * /
**``, and calls of the block language's functions. Nothing is evaluated.

Grammar: ``x`` (the block input h_{k-1}); ``F(v)`` / ``F0(v)`` (the configured branch;
its last matrix zero-initialized); ``W(v)`` / ``W0(v)`` (a fresh weight matrix);
``LN(v)``, ``BN(v)``, ``Dropout(v, p)``; activations ``phi(v)`` (the configured one),
``relu``, ``leaky_relu``, ``tanh``, ``gelu``, ``linear``; scalars: numbers (exact
rationals), names (positive symbols, e.g. ``alpha``), ``sqrt(.)``, ``std(x)``, and
powers of scalars.

>>> parse("(x + F(x))/sqrt(2)").text()
'(x + F(x))/sqrt(2)'
>>> parse("x + y")
Traceback (most recent call last):
...
derive.errors.DeriveError: block 'x + y': 'y' is a scalar symbol, and a sum adds vectors; \
the block's input is x
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import sympy

from derive.blocks.nodes import STD_X, Input, Node, Scale, Sum
from derive.blocks.primitives import Activation, BatchNorm, Branch, Dropout, LayerNorm, Weight
from derive.errors import DeriveError
from derive.inputs.numbers import NOT_FINITE

#: The longest block text, in characters, and the most syntax nodes it may hold.
MAX_LENGTH, MAX_NODES = 400, 200
#: Exponents of scalar powers are rationals of at most this size.
MAX_EXPONENT = 64
ACTIVATION_NAMES = ("relu", "leaky_relu", "tanh", "gelu", "linear")
FUNCTIONS = ("F", "F0", "W", "W0", "LN", "BN", "Dropout", "phi", *ACTIVATION_NAMES,
             "std", "sqrt")
#: Names a scalar symbol may not take: the model's own symbols and the language's words.
RESERVED = frozenset({"x", "n", "k", "K", "q", "d", "q_0", "pi", "E", "I", "oo", *FUNCTIONS})
ALLOWED = ("x, numbers, symbol names, + - * / **, and calls of "
           + ", ".join(FUNCTIONS))


@dataclass
class _Parser:
    source: str
    counts: dict[str, int] = field(default_factory=dict)

    def fail(self, message: str) -> DeriveError:
        return DeriveError(f"block {self.source!r}: {message}")

    def key(self, kind: str) -> int:
        self.counts[kind] = self.counts.get(kind, -1) + 1
        return self.counts[kind]

    # Every value is a Node (a vector, depends on x) or a sympy.Expr (a scalar).
    def read(self, node: ast.AST) -> Node | sympy.Expr:
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.read(node.operand)
            if isinstance(node.op, ast.UAdd):
                return value
            return Scale(sympy.Integer(-1), value) if isinstance(value, Node) else -value
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what = type(node).__name__.lower()
        raise self.fail(f"{what} is not part of the block language; allowed: {ALLOWED}")

    def number(self, node: ast.Constant) -> sympy.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{value!r} is not a number; allowed: {ALLOWED}")
        literal = ast.get_source_segment(self.source, node) or repr(value)
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            raise self.fail(f"{literal} is too large: numbers must be finite")
        if len(literal) > 40:
            raise self.fail(f"the number {literal[:20]}... is longer than 40 digits")
        return sympy.Rational(literal.replace("_", ""))

    def name(self, name: str) -> Node | sympy.Expr:
        if name == "x":
            return Input()
        if name in FUNCTIONS:
            raise self.fail(f"{name} is a function: write {name}(...)")
        if name.lower() in NOT_FINITE:
            raise self.fail(f"{name!r} is not a finite number: numbers in a block must be "
                            "finite, such as 2, 0.1 or 1/3")
        if name in RESERVED or name.startswith("_") or not name.isascii():
            raise self.fail(f"{name!r} cannot name a symbol here (reserved); try alpha, beta")
        return sympy.Symbol(name, positive=True)

    def vector(self, value: Node | sympy.Expr, where: str) -> Node:
        if isinstance(value, Node):
            return value
        shown = sympy.sstr(value)
        if isinstance(value, sympy.Symbol):
            raise self.fail(f"{where} takes a vector, and {shown!r} is a scalar symbol; "
                            "the block's input is x")
        raise self.fail(f"{where} takes a vector (an expression in x), got the scalar {shown}")

    def scalar(self, value: Node | sympy.Expr, where: str) -> sympy.Expr:
        if isinstance(value, Node):
            raise self.fail(f"{where} takes a scalar, got the vector {value.text()}")
        return value

    def binary(self, node: ast.BinOp) -> Node | sympy.Expr:
        left, right = self.read(node.left), self.read(node.right)
        op = node.op
        if isinstance(op, (ast.Add, ast.Sub)):
            if isinstance(left, Node) and isinstance(right, Node):
                right = Scale(sympy.Integer(-1), right) if isinstance(op, ast.Sub) else right
                terms = [t for side in (left, right)
                         for t in (side.terms if isinstance(side, Sum) else (side,))]
                return Sum(tuple(terms))
            if isinstance(left, Node) or isinstance(right, Node):
                scalar = right if isinstance(left, Node) else left
                if isinstance(scalar, sympy.Symbol):
                    raise self.fail(f"{sympy.sstr(scalar)!r} is a scalar symbol, and a sum "
                                    "adds vectors; the block's input is x")
                raise self.fail("a sum adds vectors: a constant added to a vector (a bias) "
                                "is not modelled")
            return left + right if isinstance(op, ast.Add) else left - right
        if isinstance(op, ast.Mult):
            if isinstance(left, Node) and isinstance(right, Node):
                raise self.fail(f"the product of two vectors ({left.text()} * {right.text()}) "
                                "is not modelled; scale a vector by a scalar")
            if isinstance(left, Node) or isinstance(right, Node):
                vec, factor = (left, right) if isinstance(left, Node) else (right, left)
                return _scaled(vec, factor)  # type: ignore[arg-type]
            return left * right
        if isinstance(op, ast.Div):
            denominator = self.scalar(right, "division")
            if denominator == 0:
                raise self.fail("division by zero")
            if isinstance(left, Node):
                inverse = (1 / denominator if denominator.is_Rational
                           else sympy.Pow(denominator, -1, evaluate=False))
                return _scaled(left, inverse)
            return left / denominator
        if isinstance(op, ast.Pow):
            base, exponent = self.scalar(left, "a power"), self.scalar(right, "an exponent")
            if exponent.is_Rational and (abs(exponent.p) > MAX_EXPONENT
                                         or exponent.q > MAX_EXPONENT):
                raise self.fail(f"the exponent {exponent} is too large (at most {MAX_EXPONENT})")
            if not exponent.is_Rational and exponent.free_symbols - {STD_X} == set():
                raise self.fail(f"the exponent {exponent} must be a rational number or a symbol")
            if base == 0 and exponent.is_Rational and exponent <= 0:
                raise self.fail("division by zero")
            return base**exponent
        raise self.fail(f"the operator {type(op).__name__} is not allowed; allowed: {ALLOWED}")

    def call(self, node: ast.Call) -> Node | sympy.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail(f"only the functions {', '.join(FUNCTIONS)} can be called")
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.fail(f"unknown function {name!r}; allowed: {', '.join(FUNCTIONS)}")
        args = [self.read(a) for a in node.args]
        keywords = {kw.arg: kw.value for kw in node.keywords}
        if name == "Dropout":
            if set(keywords) - {"p"} or len(args) + len(keywords) != 2:
                raise self.fail("Dropout takes a vector and a rate: Dropout(F(x), 0.1)")
            rate = self.scalar(args[1] if len(args) == 2 else self.read(keywords["p"]),
                               "Dropout's rate")
            if rate.is_number and not (rate.is_Rational and 0 <= rate < 1):
                raise self.fail(f"Dropout's rate must be in [0, 1), got {rate}")
            return Dropout(self.vector(args[0], "Dropout"), rate, ("D", self.key("D")))
        if keywords or len(args) != 1:
            raise self.fail(f"{name} takes one argument")
        (arg,) = args
        if name == "sqrt":
            value = self.scalar(arg, "sqrt")
            if value.is_number and value < 0:
                raise self.fail(f"sqrt of the negative number {value}")
            return sympy.sqrt(value)
        if name == "std":
            if not isinstance(arg, Input):
                shown = arg.text() if isinstance(arg, Node) else sympy.sstr(arg)
                raise self.fail(f"std takes the block input: std(x), got std({shown})")
            return STD_X
        vec = self.vector(arg, name)
        if name in ("F", "F0"):
            return Branch(self.key("F"), vec, zero=name == "F0")
        if name in ("W", "W0"):
            return Weight(("W", self.key("W")), vec, zero=name == "W0")
        if name == "LN":
            return LayerNorm(vec)
        if name == "BN":
            return BatchNorm(vec)
        return Activation(vec, None if name == "phi" else name)


def _scaled(vec: Node, factor: sympy.Expr) -> Node:
    if isinstance(vec, Scale):
        return Scale(factor * vec.factor, vec.child)
    return Scale(factor, vec)


def parse(source: object) -> Node:
    """The tree of a block written in the block language, or a DeriveError naming the problem.

    >>> parse("x + alpha*F(x/std(x))").text()
    'x + alpha*F(x/std(x))'
    >>> parse("__import__('os')")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: block "__import__('os')": unknown function '__import__'; \
allowed: F, F0, W, W0, LN, BN, Dropout, phi, relu, leaky_relu, tanh, gelu, linear, std, sqrt
    """
    if not isinstance(source, str):
        raise DeriveError(f"a block is a string such as 'x + F(x)', got {source!r}")
    text = source.strip()
    if not text:
        raise DeriveError("the block is empty: write it in x, such as 'x + F(x)'")
    if len(text) > MAX_LENGTH:
        raise DeriveError(f"the block is {len(text)} characters long: at most {MAX_LENGTH}")
    parser = _Parser(text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as err:
        where = f" at column {err.offset}" if getattr(err, "offset", None) else ""
        raise parser.fail(f"syntax error{where}; allowed: {ALLOWED}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise parser.fail(f"more than {MAX_NODES} parts: too long")
    try:
        value = parser.read(tree.body)
    except RecursionError:  # pragma: no cover (bounded by MAX_NODES)
        raise parser.fail("nested too deeply") from None
    except (TypeError, ZeroDivisionError, OverflowError):
        raise parser.fail("not a valid expression of the block language") from None
    if not isinstance(value, Node):
        raise parser.fail("the block does not use its input x")
    if isinstance(value, Input):
        raise parser.fail("the block is the identity x: give it a branch, such as x + F(x)")
    return value
