"""The tree of a residual block: the node protocol, the input ``x`` and the combinators.

A block is a tree of nodes, each a vector-valued function of the block's input
``x``. Every node carries its own rules, as the layers of neural-tangents' stax
carry their kernel rules:

- ``moments``: the output's second moment (and, where BatchNorm needs it, the
  covariance of two independent inputs of a batch) given its inputs';
- ``gains``: the backward gain to each input, E[(J^T g)^2] / E[g^2] under
  gradient independence;
- ``kernel`` and ``kernel_gains``: the same two rules for two inputs a and b, on the
  two-point :class:`Kernel` (q_a, q_b and their covariance c) forward and on the
  gradients' second moments and covariance backward (:class:`KernelGains`);
- ``jacobian``: the factor it puts into the path sum, given its inputs' Jacobians;
- ``reason``: the written step, with why it holds;
- ``forward_np`` / ``backward_np``: its finite-width NumPy op and hand-written backward.

The combinators here, :class:`Sum` and :class:`Scale`, fold their terms' rules;
the primitives (``W``, ``F``, activations, ``LN``, ``BN``, ``Dropout``) live in
:mod:`derive.blocks.primitives`.

>>> from derive.blocks.primitives import Branch
>>> Sum((Input(), Scale(sympy.Integer(2), Branch(0, Input())))).text()
'x + 2*F(x)'
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias

import sympy

from derive.errors import DeriveError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from derive.blocks.branch import BranchConfig


class FactorNames(Protocol):
    """How the path sum names a block's factors: one non-commutative symbol per node."""

    def factor(self, node: Node, letter: str) -> sympy.Expr:
        """The Jacobian symbol of ``node`` (``J`` for F, ``L`` for LN, ...) in this block."""

    def scalar(self, value: sympy.Expr) -> sympy.Expr:
        """A scalar of the block, with ``std(x)`` the std of this block's input."""


class FiniteNetwork(Protocol):
    """What a node's NumPy op reads of the finite network it runs in (one block of
    :class:`derive.simulation.networks.Network`): the configuration, the block's input
    and the gradient that reaches it, and the draws of its weights and dropout masks."""

    x: np.ndarray
    x_grad: np.ndarray | float
    gamma: float
    slope: float

    @property
    def config(self) -> BranchConfig:
        """The configuration the primitives read."""

    def weight(self, key: tuple, fan_in: sympy.Expr, fan_out: sympy.Expr,
               variance: sympy.Expr) -> tuple[np.ndarray, float]:
        """The standard normals of weight matrix ``key`` and the scale to ``variance``."""

    def bias(self, key: tuple, fan_out: sympy.Expr) -> np.ndarray | None:
        """The bias added after weight matrix ``key`` (one per unit, shared by every input),
        or None without biases (``sigma_b2`` = 0)."""

    def uniforms(self, key: tuple, shape: tuple[int, ...]) -> np.ndarray:
        """Uniforms of the dropout mask ``key``."""

    def scalar(self, value: sympy.Expr) -> np.ndarray | float:
        """A scalar of the block as a number (``std(x)`` measured on this block's input)."""


class StdOfInput(sympy.Symbol):
    """``std(x)``: the expected standard deviation sqrt(q) of the block's input at
    initialization, a constant of the network (NF-ResNets compute it analytically).

    >>> from derive.derivation.printing import latex
    >>> latex(STD_X)
    '\\\\operatorname{std}(x)'
    """

    def __new__(cls) -> StdOfInput:
        return super().__new__(cls, "std(x)", positive=True)

    def _latex(self, printer: object) -> str:
        return r"\operatorname{std}(x)"

    def _sympystr(self, printer: object) -> str:
        return "std(x)"


STD_X = StdOfInput()


@dataclass(frozen=True)
class Moments:
    """Second moment ``q`` per unit and, when tracked, the covariance ``c`` per unit of
    two independent inputs of the batch (what BatchNorm's batch statistics see).

    >>> Moments(sympy.Integer(2)).scaled(3)
    Moments(q=6, c=None)
    """

    q: sympy.Expr
    c: sympy.Expr | None = None

    def scaled(self, factor: object) -> Moments:
        """Both moments times ``factor`` (a linear map that scales every unit)."""
        f = sympy.sympify(factor)
        return Moments(f * self.q, None if self.c is None else f * self.c)


#: A number of a two-point rule: a float (the profiles) or a SymPy expression (the maps).
Number: TypeAlias = float | sympy.Expr


def root(value: Number) -> Number:
    """The square root, a float for a float and exact for an expression.

    >>> root(4.0), root(sympy.Integer(2))
    (2.0, sqrt(2))
    """
    return math.sqrt(value) if isinstance(value, float) else sympy.sqrt(value)


def number_like(value: sympy.Expr, like: Number) -> Number:
    """``value`` as a float when ``like`` is a float (a constant of a rule), else as is.

    >>> number_like(sympy.Rational(1, 2), 3.0), number_like(sympy.Rational(1, 2), sympy.Integer(3))
    (0.5, 1/2)
    """
    if not isinstance(like, float):
        return value
    try:
        return _as_float(value)
    except TypeError:
        raise DeriveError(f"{value} has symbols without values; a kernel profile needs numbers "
                          "(give the block's symbols values with --set, and use "
                          "--fan-in-variance rather than --sigma-w2, whose width n stays "
                          "symbolic)") from None


@lru_cache(maxsize=4096)
def _as_float(value: sympy.Expr) -> float:
    return float(value)


@dataclass(frozen=True)
class Kernel:
    """The two-point state per unit: the second moments ``q_a`` and ``q_b`` of two inputs
    a and b and their covariance ``c``; under BatchNorm also ``m``, the covariance of an
    input with an independent member of its batch (the part a batch mean shares). The
    entries are floats or SymPy expressions.

    >>> Kernel(2.0, 2.0, 1.0).rho
    0.5
    >>> Kernel(2.0, 8.0, 2.0).scaled(2.0, 1.0)
    Kernel(q_a=8.0, q_b=8.0, c=4.0, m=None)
    """

    q_a: Number
    q_b: Number
    c: Number
    m: Number | None = None

    @property
    def rho(self) -> Number:
        """The correlation c / sqrt(q_a q_b)."""
        return self.c / root(self.q_a * self.q_b)

    def scaled(self, factor_a: Number, factor_b: Number) -> Kernel:
        """The state after unit ``a`` is multiplied by ``factor_a`` and ``b`` by ``factor_b``
        (a member of the batch by ``factor_a``, as a is a typical member)."""
        m = None if self.m is None else factor_a * factor_a * self.m
        return Kernel(factor_a * factor_a * self.q_a, factor_b * factor_b * self.q_b,
                      factor_a * factor_b * self.c, m)

    def shifted(self, variance: Number) -> Kernel:
        """The state after a shared random term of ``variance`` is added (a bias)."""
        return Kernel(self.q_a + variance, self.q_b + variance, self.c + variance,
                      None if self.m is None else self.m + variance)


@dataclass(frozen=True)
class KernelGains:
    """What a node does to the gradients' two-point state: the factors of d_a, d_b (the
    gradients' second moments at a and b) and of g, their covariance, under gradient
    independence. A node that mixes the gradients of a and b (attention, whose every
    token's gradient reaches every other token) carries the whole linear map in
    ``matrix``: rows (d_a, d_b, g) at its input, columns (d_a, d_b, g) at its output.

    >>> KernelGains.uniform(2.0)
    KernelGains(a=2.0, b=2.0, ab=2.0)
    >>> mixing = KernelGains.mixing(((1.0, 0.0, 2.0), (0.0, 1.0, 2.0), (0.5, 0.5, 1.0)))
    >>> mixing.apply(1.0, 1.0, 0.5)
    (2.0, 2.0, 1.5)
    """

    a: Number
    b: Number
    ab: Number
    matrix: tuple[tuple[Number, ...], ...] | None = field(default=None, repr=False)

    @classmethod
    def uniform(cls, gain: Number) -> KernelGains:
        """The same factor on all three (a node that treats a and b alike)."""
        return cls(gain, gain, gain)

    @classmethod
    def mixing(cls, rows: Sequence[Sequence[Number]]) -> KernelGains:
        """A map that mixes (d_a, d_b, g): its three rows."""
        matrix = tuple(tuple(row) for row in rows)
        return cls(matrix[0][0], matrix[1][1], matrix[2][2], matrix)

    @property
    def mixes(self) -> bool:
        """Whether the map mixes the gradients of a and b (it is not diagonal)."""
        return self.matrix is not None

    def rows(self) -> tuple[tuple[Number, ...], ...]:
        """The map's three rows, zeros included."""
        if self.matrix is not None:
            return self.matrix
        return ((self.a, 0, 0), (0, self.b, 0), (0, 0, self.ab))

    def apply(self, d_a: Number, d_b: Number, g: Number) -> tuple[Number, Number, Number]:
        """(d_a, d_b, g) at the node's input from their values at its output."""
        if self.matrix is None:
            return d_a * self.a, d_b * self.b, g * self.ab
        out = tuple(row[0] * d_a + row[1] * d_b + row[2] * g for row in self.matrix)
        return out[0], out[1], out[2]

    def times(self, other: KernelGains) -> KernelGains:
        """This node's map, then ``other``'s (the node below it)."""
        if self.matrix is None and other.matrix is None:
            return KernelGains(self.a * other.a, self.b * other.b, self.ab * other.ab)
        first, then = self.rows(), other.rows()
        return KernelGains.mixing([[sum(then[i][m] * first[m][j] for m in range(3))
                                    for j in range(3)] for i in range(3)])

    def plus(self, other: KernelGains) -> KernelGains:
        """The factors of two routes that add (uncorrelated under gradient independence)."""
        if self.matrix is None and other.matrix is None:
            return KernelGains(self.a + other.a, self.b + other.b, self.ab + other.ab)
        mine, theirs = self.rows(), other.rows()
        return KernelGains.mixing([[mine[i][j] + theirs[i][j] for j in range(3)]
                                   for i in range(3)])

    @property
    def correlation_factor(self) -> Number | None:
        """rho^grad at the input over rho^grad at the output for equal d_a and d_b, where it
        is one factor (the map does not mix); None where it depends on rho^grad itself."""
        return None if self.matrix is not None else self.ab / self.a


class Node(ABC):
    """A vector-valued node of a block. Subclasses set ``children`` and every rule: the
    rules are abstract, so a node that lacks one cannot be built.

    Nodes are frozen dataclasses compared by value; every weight matrix carries its
    own ``key``, so two branches are never equal.
    """

    children: tuple[Node, ...] = ()
    #: The parity of the node's function: True when f(-z) = -f(z) for its input z.
    odd: ClassVar[bool] = True
    #: Whether the node is a branch (F, Attn, MLP): the path sum counts a path's length in
    #: the branches it passes through.
    branch_like: ClassVar[bool] = False

    # --- the tree ---------------------------------------------------------------
    def walk(self) -> list[Node]:
        """Every node below and including this one, children before parents."""
        out: list[Node] = []
        for child in self.children:
            out.extend(child.walk())
        out.append(self)
        return out

    def weights(self) -> frozenset[tuple]:
        """The keys of every weight matrix in this subtree."""
        return frozenset().union(*(c.weights() for c in self.children))

    def odd_in(self) -> frozenset[tuple]:
        """Keys of the weight matrices W such that this node changes sign with W."""
        if not self.odd or not self.children:
            return frozenset()
        return frozenset.intersection(*(c.odd_in() for c in self.children))

    def centred(self) -> bool:
        """Whether the node's units have mean zero at initialization (over the units of one
        input, as LayerNorm sees them): a weight matrix's output is, and so are sums,
        scalings and odd functions of centred vectors (the block's input ``x`` counts as
        centred, as the network's input is taken to be)."""
        return all(child.centred() for child in self.children)

    def expand(self, config: BranchConfig) -> Node:
        """The node with every configured branch ``F`` replaced by its primitives."""
        return self.rebuild(tuple(c.expand(config) for c in self.children))

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        """The same node over other children."""
        if not children:
            return self
        return type(self)(*children)  # type: ignore[call-arg]

    # --- printing ---------------------------------------------------------------
    @abstractmethod
    def text(self) -> str:
        """The node in the block language (parseable back)."""

    @abstractmethod
    def display(self, arg: sympy.Expr) -> sympy.Expr:
        """The node as a printable SymPy expression, with ``arg`` for ``x``."""

    # --- rules ------------------------------------------------------------------
    @abstractmethod
    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        """The output's moments given the inputs' (``x``: the block input's)."""

    @abstractmethod
    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        """E[(J_i^T g)^2] / E[g^2] for the Jacobian J_i to each input."""

    @abstractmethod
    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        """The node's Jacobian with respect to the block input ``x``, given its inputs'
        (non-commutative; the node's own factor on the left)."""

    @abstractmethod
    def reason(self, config: BranchConfig) -> str:
        """Why the moment rule holds, in one sentence (inline LaTeX)."""

    def backward_reason(self, config: BranchConfig) -> str:
        """Why the gain rule holds, in one sentence (inline LaTeX)."""
        return self.reason(config)

    @abstractmethod
    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        """The output's two-point state given the inputs' (``x``: the block input's)."""

    @abstractmethod
    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        """The factors of (d_a, d_b, g) to each input, given the inputs' forward states."""

    # --- numbers ----------------------------------------------------------------
    @abstractmethod
    def forward_np(self, values: list[np.ndarray], net: FiniteNetwork) -> tuple[np.ndarray, Any]:
        """The finite-width op on arrays (networks, batch, units); returns (out, cache)."""

    @abstractmethod
    def backward_np(self, grad: np.ndarray, cache: Any, net: FiniteNetwork) -> list[np.ndarray]:
        """The gradients at the inputs from the gradient at the output."""


@dataclass(frozen=True)
class Input(Node):
    """``x``, the block's input h_{k-1}.

    >>> Input().text()
    'x'
    """

    def weights(self) -> frozenset[tuple]:
        return frozenset()

    def odd_in(self) -> frozenset[tuple]:
        return frozenset()

    def text(self) -> str:
        return "x"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return arg

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        return x

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        return ()

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        return x

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        return ()

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return sympy.Integer(1)  # the identity I

    def reason(self, config: BranchConfig) -> str:
        return "the block's input"

    def forward_np(self, values: list[np.ndarray], net: FiniteNetwork) -> tuple[np.ndarray, Any]:
        return net.x, None

    def backward_np(self, grad: np.ndarray, cache: Any, net: FiniteNetwork) -> list[np.ndarray]:
        net.x_grad = net.x_grad + grad
        return []


@dataclass(frozen=True)
class Stage(Node):
    """The input of a layer's later sublayer: the output of the sublayer before it. In
    ``x + Attn(LN(x)); x + MLP(LN(x))`` the second sublayer's ``x`` is a Stage over the
    first sublayer; it passes its child on unchanged, forward and backward, and prints as
    ``x`` in its own sublayer.

    >>> from derive.blocks.primitives import Branch
    >>> Stage(Sum((Input(), Branch(0, Input())))).text()
    'x'
    """

    child: Node
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def text(self) -> str:
        return "x"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return arg

    def odd_in(self) -> frozenset[tuple]:
        return self.child.odd_in()

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        return inputs[0]

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        return (sympy.Integer(1),)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        return inputs[0]

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        return (KernelGains.uniform(number_like(sympy.Integer(1), x.q_a)),)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return inputs[0]

    def reason(self, config: BranchConfig) -> str:
        return "the previous sublayer's output, the input of this one"

    def forward_np(self, values: list[np.ndarray], net: FiniteNetwork) -> tuple[np.ndarray, Any]:
        return values[0], None

    def backward_np(self, grad: np.ndarray, cache: Any, net: FiniteNetwork) -> list[np.ndarray]:
        return [grad]


def sublayers(tree: Node) -> list[Node]:
    """The sublayers of a layer, first to last: each is a tree whose ``x`` is a Stage over
    the one before (a block of one sublayer is its own tree).

    >>> from derive.blocks.parser import parse
    >>> [s.text() for s in sublayers(parse("x + Attn(LN(x)); x + MLP(LN(x))"))]
    ['x + Attn(LN(x))', 'x + MLP(LN(x))']
    """
    out = [tree]
    while True:
        stages = _stages(out[0])
        if not stages:
            return out
        out.insert(0, stages[0].child)


def _stages(node: Node) -> list[Stage]:
    """The Stage nodes of one sublayer (not of the ones below it)."""
    if isinstance(node, Stage):
        return [node]
    return [found for child in node.children for found in _stages(child)]


def _wrap(node: Node) -> str:
    return f"({node.text()})" if isinstance(node, Sum) else node.text()


@dataclass(frozen=True)
class Scale(Node):
    """``a * v``: a scalar at initialization times a node. ``a`` may hold ``std(x)``.

    Forward: the second moment scales by a^2; backward: the gain is a^2.

    >>> Scale(sympy.Symbol("alpha"), Input()).text()
    'alpha*x'
    """

    factor: sympy.Expr
    child: Node

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Scale(self.factor, children[0])

    def odd_in(self) -> frozenset[tuple]:
        return self.child.odd_in()

    def text(self) -> str:
        factor = sympy.sstr(self.factor)
        if self.factor == -1:
            return f"-{_wrap(self.child)}"
        if self.factor.is_Pow and self.factor.exp == -1:
            return f"{_wrap(self.child)}/{_atom(self.factor.base)}"
        num, den = sympy.fraction(self.factor)
        if num == 1 and den != 1:
            return f"{_wrap(self.child)}/{_atom(den)}"
        return f"{_atom(self.factor) if len(factor) > 1 else factor}*{_wrap(self.child)}"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return sympy.Mul(self.factor, self.child.display(arg), evaluate=False)

    def value(self, x: Moments) -> sympy.Expr:
        """The factor at initialization: ``std(x)`` is sqrt of the input's second moment."""
        return self.factor.xreplace({STD_X: sympy.sqrt(x.q)})

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        return inputs[0].scaled(self.value(x) ** 2)

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        return (self.value(x) ** 2,)

    def values(self, x: Kernel) -> tuple[Number, Number]:
        """The factor at inputs a and b: ``std(x)`` is each input's own sqrt(q)."""
        if not self.factor.has(STD_X):
            same = number_like(self.factor, x.q_a)
            return same, same
        a = number_like(self.factor.xreplace({STD_X: sympy.sqrt(sympy.sympify(x.q_a))}), x.q_a)
        b = number_like(self.factor.xreplace({STD_X: sympy.sqrt(sympy.sympify(x.q_b))}), x.q_b)
        return a, b

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        return inputs[0].scaled(*self.values(x))

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        a, b = self.values(x)
        return (KernelGains(a * a, b * b, a * b),)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.scalar(self.factor) * inputs[0]

    def reason(self, config: BranchConfig) -> str:
        why = "a constant factor $a$ scales the second moment by $a^2$"
        if self.factor.has(STD_X):
            why += (", with $\\operatorname{std}(x) = \\sqrt{q_{k-1}}$ the expected "
                    "standard deviation of the input at initialization (a constant of the "
                    "network, not a batch statistic)")
        return why

    def backward_reason(self, config: BranchConfig) -> str:
        return "a constant factor $a$ scales the gradient by $a$, its second moment by $a^2$"

    def forward_np(self, values: list[np.ndarray], net: FiniteNetwork) -> tuple[np.ndarray, Any]:
        factor = net.scalar(self.factor)
        return values[0] * factor, factor

    def backward_np(self, grad: np.ndarray, cache: Any, net: FiniteNetwork) -> list[np.ndarray]:
        return [grad * cache]


def _atom(expr: sympy.Expr) -> str:
    shown = sympy.sstr(expr)
    return shown if not any(op in shown for op in " +-*/") else f"({shown})"


@dataclass(frozen=True)
class Sum(Node):
    """``a + b + ...``: a sum of terms that are uncorrelated at initialization.

    Uncorrelated is derived, not assumed: two terms are uncorrelated when one of
    them changes sign with a weight matrix W (it is odd in W) that the other does
    not contain; W is symmetric about zero and independent of the other term, so
    E[a b] = 0, forward and (under gradient independence) backward. A sum whose
    terms cannot be shown uncorrelated is refused.

    >>> from derive.blocks.primitives import Branch
    >>> Sum((Input(), Branch(0, Input()))).text()
    'x + F(x)'
    >>> Sum((Input(), Input()))
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: the terms x and x of the sum may be correlated at \
initialization: derive adds second moments only when one term of each pair changes sign \
with a weight matrix the other does not contain (such as x + F(x))
    """

    terms: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", tuple(self.terms))
        for i, a in enumerate(self.terms):
            for b in self.terms[i + 1:]:
                if not (a.odd_in() - b.weights() or b.odd_in() - a.weights()):
                    raise DeriveError(
                        f"the terms {a.text()} and {b.text()} of the sum may be correlated at "
                        "initialization: derive adds second moments only when one term of "
                        "each pair changes sign with a weight matrix the other does not "
                        "contain (such as x + F(x))")

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Sum(children)

    def text(self) -> str:
        out = self.terms[0].text()
        for term in self.terms[1:]:
            shown = term.text()
            out += f" - {shown[1:]}" if shown.startswith("-") else f" + {shown}"
        return out

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return sympy.Add(*(t.display(arg) for t in self.terms), evaluate=False)

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        q = sympy.Add(*(m.q for m in inputs))
        tracked = all(m.c is not None for m in inputs)
        return Moments(q, sympy.Add(*(m.c for m in inputs)) if tracked else None)

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        return tuple(sympy.Integer(1) for _ in inputs)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        first, *rest = inputs
        total = first
        for term in rest:  # the cross terms vanish for two inputs as for one
            m = None if total.m is None or term.m is None else total.m + term.m
            total = Kernel(total.q_a + term.q_a, total.q_b + term.q_b, total.c + term.c, m)
        return total

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        one = number_like(sympy.Integer(1), x.q_a)
        return tuple(KernelGains.uniform(one) for _ in inputs)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return sympy.Add(*inputs)

    def reason(self, config: BranchConfig) -> str:
        return ("second moments add: the cross terms vanish, since one term of each pair "
                "changes sign with a zero-mean weight matrix the other does not contain")

    def backward_reason(self, config: BranchConfig) -> str:
        return ("the gradient reaches every term unchanged; their contributions add, since "
                "the cross terms vanish by the same symmetry (gradient independence)")

    def forward_np(self, values: list[np.ndarray], net: FiniteNetwork) -> tuple[np.ndarray, Any]:
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total, len(values)

    def backward_np(self, grad: np.ndarray, cache: Any, net: FiniteNetwork) -> list[np.ndarray]:
        return [grad] * cache
