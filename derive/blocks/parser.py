"""Parse a block written as in a student's notes: ``x + F(LN(x))``, ``(x + F(x))/sqrt(2)``.

The text is parsed with Python's own parser into a syntax tree (``ast.parse``),
and only a whitelist of node types is read from it: numbers, names, ``+ - * /
**``, and calls of the block language's functions. Nothing is evaluated.

Grammar: ``x`` (the block input h_{k-1}); ``F(v)`` / ``F0(v)`` (the configured branch;
its last matrix zero-initialized); ``W(v)`` / ``W0(v)`` (a fresh weight matrix);
``LN(v)``, ``BN(v)``, ``Dropout(v, p)``; activations ``phi(v)`` (the configured one),
``relu``, ``leaky_relu``, ``tanh``, ``gelu``, ``linear``, ``erf``; scalars: numbers (exact
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
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy

from derive.blocks.attention import Attention, Mlp
from derive.blocks.nodes import STD_X, Input, Node, Scale, Stage, Sum
from derive.blocks.primitives import Activation, BatchNorm, Branch, Dropout, LayerNorm, Weight
from derive.errors import DeriveError
from derive.inputs.numbers import NOT_FINITE

#: The longest block text, in characters, and the most syntax nodes it may hold.
MAX_LENGTH, MAX_NODES = 400, 200
#: Exponents of scalar powers are rationals of at most this size.
MAX_EXPONENT = 64
#: Exact numbers in a block, as written and as computed from them (``(2**64)**2``), have
#: at most this many digits above and below the fraction bar, so that the sums of their
#: squares that the derivations build stay printable.
MAX_DIGITS = 40
_DIGITS_LIMIT = 10**MAX_DIGITS
#: A block has at most this many symbols: each one multiplies the terms of the closed
#: forms that SymPy must cancel.
MAX_SYMBOLS = 6
ACTIVATION_NAMES = ("relu", "leaky_relu", "tanh", "gelu", "linear", "erf")
FUNCTIONS = ("F", "F0", "W", "W0", "LN", "BN", "Dropout", "Attn", "MLP", "phi",
             *ACTIVATION_NAMES, "std", "sqrt")
#: Names a scalar symbol may not take: the model's own symbols and the language's words.
RESERVED = frozenset({"x", "n", "k", "K", "q", "d", "q_0", "pi", "E", "I", "oo", *FUNCTIONS})
#: Names the derivations print with their own meaning, so that a block symbol of that
#: name would read as the model's quantity.
MEANINGS = {
    "gamma": "the LayerNorm and BatchNorm gain (--gamma), printed γ",
    "c": "the covariance c_k of two inputs of a batch",
    "w": "the weight gradient w_k",
}
ALLOWED = ("x, numbers, symbol names, + - * / **, and calls of "
           + ", ".join(FUNCTIONS))


def _digits(number: int) -> int:
    """The decimal digits of ``abs(number)``, without printing it (an upper bound by one)."""
    return int(abs(number).bit_length() * 0.30103) + 1


def _shown(value: sympy.Expr) -> str:
    """A scalar as text, or the size of its largest number where printing it would be long."""
    big = [a for a in value.atoms(sympy.Rational) if max(abs(a.p), a.q) >= _DIGITS_LIMIT]
    if big:
        number = max(big, key=lambda a: max(abs(a.p), a.q))
        if abs(number.p) >= number.q:
            return f"a number of about {_digits(number.p)} digits"
        return f"a fraction whose denominator is a number of about {_digits(number.q)} digits"
    text = sympy.sstr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def scalar_problem(value: sympy.Expr) -> str | None:
    """Why the scalar ``value`` cannot stand in a block, or None: it must be finite and
    real, its exact numbers at most MAX_DIGITS digits long, its exponents at most
    MAX_EXPONENT.

    >>> scalar_problem(sympy.sqrt(2)) is None
    True
    >>> scalar_problem(sympy.Integer(-8) ** sympy.Rational(1, 3))
    '2*(-1)**(1/3) is not a real number: a block scales by real numbers only'
    """
    if value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return f"{_shown(value)} is not a finite number"
    for atom in value.atoms(sympy.Rational):
        if max(abs(atom.p), atom.q) >= _DIGITS_LIMIT:
            return (f"{_shown(atom)} has too many digits: exact numbers in a block have at "
                    f"most {MAX_DIGITS} digits above and below the fraction bar")
    for power in value.atoms(sympy.Pow):
        exponent = power.exp
        if exponent.is_Rational and max(abs(exponent.p), exponent.q) > MAX_EXPONENT:
            return (f"the exponent {exponent} of {_shown(power)} is too large "
                    f"(at most {MAX_EXPONENT})")
    if value.is_number and value.is_extended_real is False:
        return f"{_shown(value)} is not a real number: a block scales by real numbers only"
    return None


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
        if len(literal) > MAX_DIGITS:
            raise self.fail(f"the number {literal[:20]}... is longer than {MAX_DIGITS} digits")
        return self.constant(sympy.Rational(literal.replace("_", "")))

    def constant(self, value: sympy.Expr) -> sympy.Expr:
        """``value`` once :func:`scalar_problem` finds nothing wrong with it."""
        problem = scalar_problem(value)
        if problem is not None:
            raise self.fail(problem)
        return value

    def name(self, name: str) -> Node | sympy.Expr:
        if name == "x":
            return Input()
        if name in FUNCTIONS:
            raise self.fail(f"{name} is a function: write {name}(...)")
        if name.lower() in NOT_FINITE:
            raise self.fail(f"{name!r} is not a finite number: numbers in a block must be "
                            "finite, such as 2, 0.1 or 1/3")
        if name in MEANINGS:
            raise self.fail(f"{name!r} cannot name a symbol here: it is {MEANINGS[name]}; "
                            "try alpha, beta")
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

    # --- the operators: + - * / ** on vectors and scalars --------------------------------
    def binary(self, node: ast.BinOp) -> Node | sympy.Expr:
        left, right = self.read(node.left), self.read(node.right)
        step = _OPERATORS.get(type(node.op))
        if step is None:
            raise self.fail(f"the operator {type(node.op).__name__} is not allowed; "
                            f"allowed: {ALLOWED}")
        value = step(self, left, right, isinstance(node.op, ast.Sub))
        return value if isinstance(value, Node) else self.constant(value)

    def add(self, left: Node | sympy.Expr, right: Node | sympy.Expr,
            subtract: bool) -> Node | sympy.Expr:
        if isinstance(left, Node) and isinstance(right, Node):
            right = Scale(sympy.Integer(-1), right) if subtract else right
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
        return left - right if subtract else left + right

    def multiply(self, left: Node | sympy.Expr, right: Node | sympy.Expr,
                 _: bool = False) -> Node | sympy.Expr:
        if isinstance(left, Node) and isinstance(right, Node):
            raise self.fail(f"the product of two vectors ({left.text()} * {right.text()}) "
                            "is not modelled; scale a vector by a scalar")
        if isinstance(left, Node):
            return self.scaled(left, right)  # type: ignore[arg-type]
        if isinstance(right, Node):
            return self.scaled(right, left)
        return left * right

    def divide(self, left: Node | sympy.Expr, right: Node | sympy.Expr,
               _: bool = False) -> Node | sympy.Expr:
        denominator = self.scalar(right, "division")
        if denominator == 0:
            raise self.fail("division by zero")
        if isinstance(left, Node):
            inverse = (1 / denominator if denominator.is_Rational
                       else sympy.Pow(denominator, -1, evaluate=False))
            return self.scaled(left, inverse)
        return left / denominator

    def scaled(self, vec: Node, factor: sympy.Expr) -> Node:
        """``factor * vec``, one Scale however many factors it gathers."""
        if isinstance(vec, Scale):
            return Scale(self.constant(factor * vec.factor), vec.child)
        return Scale(self.constant(factor), vec)

    def power(self, left: Node | sympy.Expr, right: Node | sympy.Expr,
              _: bool = False) -> sympy.Expr:
        base, exponent = self.scalar(left, "a power"), self.scalar(right, "an exponent")
        self.exponent(exponent)
        if base == 0 and exponent.is_Rational and exponent <= 0:
            raise self.fail("division by zero")
        if base.is_number and base.is_negative and exponent.is_integer is not True:
            raise self.fail(f"({_shown(base)})**({_shown(exponent)}) is not a real number: "
                            "a power of a negative number is real only for whole exponents")
        if base.is_Rational and base != 0 and exponent.is_Rational and (
                abs(exponent) * math.log10(max(abs(base.p), base.q)) > MAX_DIGITS):
            raise self.fail(f"{_shown(base)}**{exponent} is too large: exact numbers in a "
                            f"block have at most {MAX_DIGITS} digits")
        return base**exponent

    def exponent(self, exponent: sympy.Expr) -> None:
        """Refuse an exponent that is neither a small rational nor holds a symbol."""
        if exponent.is_Rational and (abs(exponent.p) > MAX_EXPONENT
                                     or exponent.q > MAX_EXPONENT):
            raise self.fail(f"the exponent {exponent} is too large (at most {MAX_EXPONENT})")
        if not exponent.is_Rational and exponent.free_symbols - {STD_X} == set():
            raise self.fail(f"the exponent {exponent} must be a rational number or a symbol")

    # --- the functions ---------------------------------------------------------------
    def call(self, node: ast.Call) -> Node | sympy.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail(f"only the functions {', '.join(FUNCTIONS)} can be called")
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.fail(f"unknown function {name!r}; allowed: {', '.join(FUNCTIONS)}")
        args = [self.read(a) for a in node.args]
        keywords = {kw.arg: kw.value for kw in node.keywords}
        if name == "Dropout":
            return self.dropout(args, keywords)
        if keywords or len(args) != 1:
            raise self.fail(f"{name} takes one argument")
        if name in ("sqrt", "std"):
            return self.scalar_function(name, args[0])
        return self.vector_function(name, self.vector(args[0], name))

    def dropout(self, args: list[Node | sympy.Expr],
                keywords: dict[str | None, ast.expr]) -> Node:
        if set(keywords) - {"p"} or len(args) + len(keywords) != 2:
            raise self.fail("Dropout takes a vector and a rate: Dropout(F(x), 0.1)")
        rate = self.scalar(args[1] if len(args) == 2 else self.read(keywords["p"]),
                           "Dropout's rate")
        if rate.is_number and not (rate.is_Rational and 0 <= rate < 1):
            raise self.fail(f"Dropout's rate must be in [0, 1), got {rate}")
        return Dropout(self.vector(args[0], "Dropout"), rate, ("D", self.key("D")))

    def scalar_function(self, name: str, arg: Node | sympy.Expr) -> sympy.Expr:
        if name == "sqrt":
            value = self.scalar(arg, "sqrt")
            if value.is_number and value < 0:
                raise self.fail(f"sqrt of the negative number {value}")
            return self.constant(sympy.sqrt(value))
        if not isinstance(arg, Input):
            shown = arg.text() if isinstance(arg, Node) else sympy.sstr(arg)
            raise self.fail(f"std takes the block input: std(x), got std({shown})")
        return STD_X

    def vector_function(self, name: str, vec: Node) -> Node:
        if name in ("F", "F0"):
            return Branch(self.key("F"), vec, zero=name == "F0")
        if name in ("W", "W0"):
            return Weight(("W", self.key("W")), vec, zero=name == "W0")
        if name == "Attn":
            return Attention(self.key("A"), vec)
        if name == "MLP":
            return Mlp(self.key("M"), vec)
        if name == "LN":
            return LayerNorm(vec)
        if name == "BN":
            return BatchNorm(vec)
        return Activation(vec, None if name == "phi" else name)

    def symbols(self, tree: Node) -> None:
        """Refuse a block with more than MAX_SYMBOLS symbols."""
        found: set[sympy.Symbol] = set()
        for node in tree.walk():
            for value in (getattr(node, "factor", None), getattr(node, "p", None)):
                if isinstance(value, sympy.Expr):
                    found |= value.free_symbols - {STD_X}
        if len(found) > MAX_SYMBOLS:
            names = ", ".join(sorted(s.name for s in found))
            raise self.fail(f"{len(found)} symbols ({names}) are too many: a block has at "
                            f"most {MAX_SYMBOLS}")


_Operator = Callable[[_Parser, Node | sympy.Expr, Node | sympy.Expr, bool], Node | sympy.Expr]
_OPERATORS: dict[type[ast.operator], _Operator] = {
    ast.Add: _Parser.add, ast.Sub: _Parser.add, ast.Mult: _Parser.multiply,
    ast.Div: _Parser.divide, ast.Pow: _Parser.power}


#: The most sublayers one layer (``;``-separated) may hold.
MAX_SUBLAYERS = 8


def _sublayer(parser: _Parser, text: str) -> Node:
    """One sublayer's tree, in its own ``x``."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as err:
        offset = err.offset if isinstance(err, SyntaxError) else None
        where = f" at column {offset}" if offset else ""
        raise parser.fail(f"syntax error{where}; allowed: {ALLOWED}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise parser.fail(f"more than {MAX_NODES} parts: too long")
    try:
        value = parser.read(tree.body)
    except RecursionError:  # pragma: no cover (bounded by MAX_NODES)
        raise parser.fail("nested too deeply") from None
    except (TypeError, ZeroDivisionError, OverflowError):
        raise parser.fail("not a valid expression of the block language") from None
    where = f"the sublayer {text!r}" if ";" in parser.source else "the block"
    if not isinstance(value, Node):
        raise parser.fail(f"{where} does not use its input x")
    if isinstance(value, Input):
        raise parser.fail(f"{where} is the identity x: give it a branch, such as x + F(x)")
    return value


def _staged(node: Node, stage: Stage) -> Node:
    """``node`` with every ``x`` replaced by ``stage`` (the previous sublayer's output)."""
    if isinstance(node, Input):
        return stage
    if not node.children:
        return node
    return node.rebuild(tuple(_staged(child, stage) for child in node.children))


def parse(source: object) -> Node:
    """The tree of a block written in the block language, or a DeriveError naming the problem.

    >>> parse("x + alpha*F(x/std(x))").text()
    'x + alpha*F(x/std(x))'
    >>> parse("__import__('os')")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: block "__import__('os')": unknown function '__import__'; \
allowed: F, F0, W, W0, LN, BN, Dropout, Attn, MLP, phi, relu, leaky_relu, tanh, gelu, linear, \
erf, std, sqrt
    """
    if not isinstance(source, str):
        raise DeriveError(f"a block is a string such as 'x + F(x)', got {source!r}")
    text = source.strip()
    if not text:
        raise DeriveError("the block is empty: write it in x, such as 'x + F(x)'")
    if len(text) > MAX_LENGTH:
        raise DeriveError(f"the block is {len(text)} characters long: at most {MAX_LENGTH}")
    parser = _Parser(text)
    parts = [part.strip() for part in text.split(";")]
    if len(parts) > 1 and not all(parts):
        raise parser.fail("a sublayer between ';' is empty: write a layer as sublayers in x "
                          "separated by ';', such as 'x + Attn(LN(x)); x + MLP(LN(x))'")
    if len(parts) > MAX_SUBLAYERS:
        raise parser.fail(f"{len(parts)} sublayers: a layer has at most {MAX_SUBLAYERS}")
    value: Node | None = None
    for part in parts:
        tree = _sublayer(parser, part)
        value = tree if value is None else _staged(tree, Stage(value))
    assert value is not None
    parser.symbols(value)
    return value
