"""The primitives of the block language, each with its rules beside its NumPy op.

``W`` (a fresh weight matrix), ``F`` (the branch as configured: ``W phi(h)`` or
``W2 phi(W1 h)``, with the configured dropout on its output), activations,
``LN`` (LayerNorm over each sample's units), ``BN`` (BatchNorm over the batch,
per unit) and ``Dropout``. The mean-field rules hold at infinite width and, for
BatchNorm, an infinite batch of independent inputs; each is checked against a
Monte Carlo of the primitive alone (``tests/test_primitives.py``).

>>> from derive.blocks.nodes import Input
>>> LayerNorm(Branch(0, Input())).text()
'LN(F(x))'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import sympy

from derive.blocks.nodes import FactorNames, Kernel, KernelGains, Moments, Node, number_like, root
from derive.errors import DeriveError
from derive.gaussian.mean import gaussian_mean
from derive.gaussian.moments import gaussian_moment
from derive.gaussian.two_point import expectation

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.branch import BranchConfig

n = sympy.Symbol("n", positive=True)
#: Activations that are odd functions, so that phi(W h) changes sign with W.
ODD_ACTIVATIONS = frozenset({"linear", "tanh", "erf"})
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: How the functions of the block language print in LaTeX.
_TEX = {"F": "F", "F_0": "F_0", "W": "W", "W_0": "W_0", "LN": r"\operatorname{LN}",
        "BN": r"\operatorname{BN}", "Dropout": r"\operatorname{Dropout}"}


def _printable(name: str) -> type[sympy.Function]:
    tex = _TEX[name]

    def _latex(self: sympy.Function, printer: Any, exp: object = None) -> str:
        args = ", ".join(printer._print(a) for a in self.args)
        out = rf"{tex}\left({args}\right)"
        return f"{out}^{{{exp}}}" if exp is not None else out

    def _sympystr(self: sympy.Function, printer: Any) -> str:
        return f"{name}({', '.join(printer._print(a) for a in self.args)})"

    return type(name, (sympy.Function,), {"_latex": _latex, "_sympystr": _sympystr})


#: Printable functions of the block language.
SHOWN = {name: _printable(name) for name in _TEX}


def _show(name: str, *args: sympy.Expr) -> sympy.Expr:
    return SHOWN[name](*args)


@dataclass(frozen=True)
class Weight(Node):
    """``W(v)``: a fresh Gaussian weight matrix, fan-in ``fan_in*n``, fan-out ``fan_out*n``.

    Forward q' = n_in sigma_w^2 q; backward gain n_out sigma_w^2. ``zero``: the matrix
    is initialized to zero (Fixup's last layer).

    >>> from derive.blocks.nodes import Input
    >>> Weight(("W", 0), Input()).text(), Weight(("W", 0), Input(), zero=True).text()
    ('W(x)', 'W0(x)')
    """

    key: tuple
    child: Node
    fan_in: sympy.Expr = sympy.Integer(1)
    fan_out: sympy.Expr = sympy.Integer(1)
    zero: bool = False
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Weight(self.key, children[0], self.fan_in, self.fan_out, self.zero)

    def weights(self) -> frozenset[tuple]:
        return self.child.weights() | {self.key}

    def odd_in(self) -> frozenset[tuple]:
        return self.child.odd_in() | {self.key}

    def centred(self) -> bool:
        return True  # zero-mean weights (and biases): each unit's mean is zero

    def text(self) -> str:
        return f"W{'0' if self.zero else ''}({self.child.text()})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return _show("W_0" if self.zero else "W", self.child.display(arg))

    def variance(self, config: BranchConfig) -> sympy.Expr:
        """The entries' variance: zero, or the initialization's at these fans."""
        if self.zero:
            return sympy.Integer(0)
        return config.weight_variance(self.fan_in * n, self.fan_out * n)

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        out = inputs[0].scaled(sympy.cancel(self.fan_in * n * self.variance(config)))
        if config.sigma_b2 == 0:
            return out
        return Moments(out.q + config.sigma_b2,
                       None if out.c is None else out.c + config.sigma_b2)

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        return (sympy.cancel(self.fan_out * n * self.variance(config)),)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        forward, _ = _weight_factors(self, config)
        scale = number_like(forward, x.q_a)
        out = inputs[0].scaled(root(scale), root(scale))
        return out if config.sigma_b2 == 0 else out.shifted(number_like(config.sigma_b2, x.q_a))

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        _, backward = _weight_factors(self, config)
        return (KernelGains.uniform(number_like(backward, x.q_a)),)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "W") * inputs[0]  # the matrix itself, spelled out

    def reason(self, config: BranchConfig) -> str:
        bias = (", plus the bias's variance $\\sigma_b^2$, shared by every input"
                if config.sigma_b2 != 0 else "")
        if self.zero:
            return f"the matrix is initialized to zero, so its output is zero{bias}"
        return ("each output unit sums fan-in independent products of a zero-mean weight "
                f"and an input: fan-in times $\\sigma_w^2$ times the input's second moment{bias}")

    def backward_reason(self, config: BranchConfig) -> str:
        if self.zero:
            return "the matrix is zero, so no gradient passes through it"
        return "$W^T g$ sums fan-out products: fan-out times $\\sigma_w^2$ times $E[g^2]$"

    def forward_np(self, values: list[np.ndarray], net: Any) -> tuple[np.ndarray, Any]:
        normals, sigma = net.weight(self.key, self.fan_in, self.fan_out, self.variance(net.config))
        out = (values[0] @ normals) * sigma
        bias = net.bias(self.key, self.fan_out)
        return (out if bias is None else out + bias), (normals, sigma)

    def backward_np(self, grad: np.ndarray, cache: Any, net: Any) -> list[np.ndarray]:
        normals, sigma = cache
        return [(grad @ normals.swapaxes(-1, -2)) * sigma]


@lru_cache(maxsize=4096)
def _weight_factors(weight: Weight, config: BranchConfig) -> tuple[sympy.Expr, sympy.Expr]:
    """fan-in n sigma_w^2 and fan-out n sigma_w^2 of a weight matrix, n cancelled."""
    variance = weight.variance(config)
    return (sympy.cancel(weight.fan_in * n * variance),
            sympy.cancel(weight.fan_out * n * variance))


@dataclass(frozen=True)
class Branch(Node):
    """``F(v)``: the residual branch as configured (``--branch``, ``--activation``,
    ``--init``, ``--mlp-ratio``, ``--dropout``); ``zero``: ``F0``, its last matrix
    zero-initialized (Fixup). Blocks expand it into its primitives before they fold the
    rules; its own rules are the fold of that expansion, a chain over its input.

    >>> from derive.blocks.nodes import Input
    >>> from derive.blocks.branch import BranchConfig
    >>> Branch(0, Input()).expand(BranchConfig(branch="mlp")).text()
    'W(relu(W(x)))'
    """

    key: int
    child: Node
    zero: bool = False
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)
    branch_like: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Branch(self.key, children[0], self.zero)

    def weights(self) -> frozenset[tuple]:
        return self.child.weights() | {("F", self.key, "out")}

    def odd_in(self) -> frozenset[tuple]:
        return frozenset({("F", self.key, "out")})

    def text(self) -> str:
        return f"F{'0' if self.zero else ''}({self.child.text()})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return _show("F_0" if self.zero else "F", self.child.display(arg))

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "J") * inputs[0]  # J_k, the branch's Jacobian at its input

    def expand(self, config: BranchConfig) -> Node:
        inner = self.child.expand(config)
        if config.branch == "mlp":
            r = config.mlp_ratio
            inner = Weight(("F", self.key, "in"), inner, sympy.Integer(1), r)
            hidden = Activation(inner, config.activation)
            out: Node = Weight(("F", self.key, "out"), hidden, r, sympy.Integer(1), self.zero)
        else:
            out = Weight(("F", self.key, "out"), Activation(inner, config.activation),
                         zero=self.zero)
        if config.dropout != 0:
            out = Dropout(out, config.dropout, ("F", self.key, "drop"))
        return out

    def chain(self, config: BranchConfig) -> list[Node]:
        """The primitives the branch expands into, from its input up, each over the last.

        >>> from derive.blocks.nodes import Input
        >>> from derive.blocks.branch import BranchConfig
        >>> [n.text() for n in Branch(0, Input()).chain(BranchConfig())]
        ['relu(x)', 'W(relu(x))']
        """
        inner, node = self.child.expand(config), self.expand(config)
        nodes = []
        while node != inner:
            nodes.append(node)
            node = node.children[0]
        return nodes[::-1]

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        m = inputs[0]
        for node in self.chain(config):
            m = node.moments([m], config, x)
        return m

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        m, total = inputs[0], sympy.Integer(1)
        for node in self.chain(config):
            total *= node.gains([m], config, x)[0]
            m = node.moments([m], config, x)
        return (total,)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        state = inputs[0]
        for node in self.chain(config):
            state = node.kernel([state], config, x)
        return state

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        state, total = inputs[0], None
        for node in self.chain(config):
            (gains,) = node.kernel_gains([state], config, x)
            total = gains if total is None else gains.times(total)
            state = node.kernel([state], config, x)
        assert total is not None
        return (total,)

    def reason(self, config: BranchConfig) -> str:
        return f"the branch is {self.expand(config).text()}: its primitives' rules in turn"

    def forward_np(self, values: list[np.ndarray], net: Any) -> tuple[np.ndarray, Any]:
        out, caches = values[0], []
        for node in self.chain(net.config):
            out, cache = node.forward_np([out], net)
            caches.append(cache)
        return out, caches

    def backward_np(self, grad: np.ndarray, cache: Any, net: Any) -> list[np.ndarray]:
        for node, own in reversed(list(zip(self.chain(net.config), cache, strict=True))):
            grad = node.backward_np(grad, own, net)[0]
        return [grad]


@dataclass(frozen=True)
class Activation(Node):
    """``phi(v)``, applied per unit: ``name`` None is the configured ``--activation``.

    Forward E[phi(z)^2], backward E[phi'(z)^2], z ~ N(0, q); for BatchNorm, two
    independent inputs give E[phi(z)]^2.

    >>> from derive.blocks.nodes import Input
    >>> Activation(Input(), "tanh").text(), Activation(Input(), None).text()
    ('tanh(x)', 'phi(x)')
    """

    child: Node
    name: str | None = None
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Activation(children[0], self.name)

    def expand(self, config: BranchConfig) -> Node:
        return Activation(self.child.expand(config), self.name or config.activation)

    def odd_in(self) -> frozenset[tuple]:
        return self.child.odd_in() if self.name in ODD_ACTIVATIONS else frozenset()

    def centred(self) -> bool:
        return self.name in ODD_ACTIVATIONS and self.child.centred()

    def text(self) -> str:
        return f"{self.name or 'phi'}({self.child.text()})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        from derive.gaussian.moments import Activation as Shown

        return Shown(sympy.Symbol(self.name or "phi"), self.child.display(arg))

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        name, (m,) = self.name or config.activation, inputs
        if m.q.is_zero:  # a zero input (after W0 or 0*): phi(0) = 0 for every activation
            return Moments(sympy.Integer(0), None if m.c is None else sympy.Integer(0))
        q = gaussian_moment(name, m.q, negative_slope=config.negative_slope)
        if m.c is None:
            return Moments(q)
        if m.c != 0 and name != "linear":
            # inputs of the batch share a part c (a bias after BatchNorm): the two-point
            # kernel of two members at covariance c
            try:
                return Moments(q, expectation(name, m.q, m.q, m.c,
                                              negative_slope=config.negative_slope))
            except DeriveError:
                raise DeriveError(
                    f"the activation {name} in {self.text()} sees inputs that are correlated "
                    f"across the batch (covariance {m.c}), and its two-point kernel needs "
                    "numbers there; derive models BatchNorm where every activation sees "
                    "independent inputs (as in x + F(BN(x)) or BN(x + F(x))), or shares "
                    "a known covariance") from None
        c = m.c if name == "linear" else gaussian_mean(
            name, m.q, negative_slope=config.negative_slope) ** 2
        return Moments(q, c)

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        name = self.name or config.activation
        if inputs[0].q.is_zero:  # phi'(0)^2, with relu's and leaky_relu's as their NumPy ops
            slope = {"relu": 0, "leaky_relu": config.negative_slope, "gelu": sympy.Rational(1, 2),
                     "erf": 2 / sympy.sqrt(sympy.pi)}
            return (sympy.sympify(slope.get(name, 1)) ** 2,)
        return (gaussian_moment(name, inputs[0].q, derivative=True,
                                negative_slope=config.negative_slope),)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        name, (s,) = self.name or config.activation, inputs
        slope = config.negative_slope

        def mean_product(q_a: object, q_b: object, c: object) -> object:
            return expectation(name, q_a, q_b, c, negative_slope=slope)

        m = None if s.m is None else mean_product(s.q_a, s.q_a, s.m)
        return Kernel(mean_product(s.q_a, s.q_a, s.q_a), mean_product(s.q_b, s.q_b, s.q_b),
                      mean_product(s.q_a, s.q_b, s.c), m)

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        name, (s,) = self.name or config.activation, inputs
        slope = config.negative_slope

        def slopes(q_a: object, q_b: object, c: object) -> object:
            return expectation(name, q_a, q_b, c, negative_slope=slope, derivative=True)

        return (KernelGains(slopes(s.q_a, s.q_a, s.q_a), slopes(s.q_b, s.q_b, s.q_b),
                            slopes(s.q_a, s.q_b, s.c)),)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "D") * inputs[0]  # D_k, the diagonal of phi'

    def reason(self, config: BranchConfig) -> str:
        return ("a Gaussian moment: the input is $z \\sim N(0, s)$ per unit, so "
                "$E[\\phi(z)^2]$ (for two independent inputs of a batch, "
                "$E[\\phi(z)]^2$)")

    def backward_reason(self, config: BranchConfig) -> str:
        return ("the Jacobian is diagonal, $\\phi'(z)$: the gain is the Gaussian moment "
                "$E[\\phi'(z)^2]$")

    def forward_np(self, values: list[np.ndarray], net: Any) -> tuple[np.ndarray, Any]:
        name, v = self.name or net.config.activation, values[0]
        if name == "linear":
            return v, None
        if name in ("relu", "leaky_relu"):
            low = net.slope if name == "leaky_relu" else 0.0
            positive = v > 0
            return np.where(positive, v, low * v), np.where(positive, 1.0, low)
        if name == "tanh":
            t = np.tanh(v)
            return t, 1.0 - t * t
        from scipy.special import erf

        if name == "erf":
            return erf(v), (2.0 / math.sqrt(math.pi)) * np.exp(-v * v)

        cdf = 0.5 * (1.0 + erf(v * (1.0 / math.sqrt(2.0))))
        return v * cdf, cdf + v * _INV_SQRT_2PI * np.exp(-0.5 * v * v)

    def backward_np(self, grad: np.ndarray, cache: Any, net: Any) -> list[np.ndarray]:
        return [grad if cache is None else grad * cache]


def _normalize(v: np.ndarray, gamma: float, axis: int) -> tuple[np.ndarray, Any]:
    """gamma (v - mean) / std along ``axis`` (units: LayerNorm; the batch: BatchNorm)."""
    centred = v - v.mean(axis=axis, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=axis, keepdims=True))
    y = centred / std
    return gamma * y, (y, std)


def _normalize_backward(grad: np.ndarray, cache: Any, gamma: float, axis: int) -> np.ndarray:
    """The gradient at the input of :func:`_normalize` from the gradient at its output."""
    y, std = cache
    gy = gamma * grad
    mean, corr = gy.mean(axis=axis, keepdims=True), (gy * y).mean(axis=axis, keepdims=True)
    return (gy - mean - y * corr) / std


def _nonzero(node: LayerNorm | BatchNorm, variance: sympy.Expr, name: str) -> None:
    """Refuse a normalization of a vector whose std is zero at initialization (``LN(W0(x))``):
    it divides by that std, so it is undefined there."""
    if variance.is_zero:
        child = node.children[0].text()
        raise DeriveError(
            f"{name} is applied to {child}, which is zero at initialization (W0, and the "
            f"last matrix of F0, start at zero): {name} divides by its std, 0, so it is "
            "undefined there; normalize a vector that is not zero")


def _same(a: object, b: object) -> bool:
    """Two second moments are equal (to rounding, for floats)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-12 * max(abs(a), abs(b))
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


def _batch_variance(node: BatchNorm, s: Kernel) -> object:
    """A unit's variance over the batch, q - m, for two typical members a and b of a batch
    of independent inputs (so q_a = q_b, and m is what any two members share)."""
    if s.m is None or not _same(s.q_a, s.q_b):
        raise DeriveError(
            f"{node.text()}: BatchNorm's two-point rule is derived for two typical members "
            "of a batch of independent inputs, with the same second moment; here "
            f"q_a = {s.q_a} and q_b = {s.q_b}")
    spread = s.q_a - s.m
    if not isinstance(spread, float) or spread == 0:
        _nonzero(node, sympy.sympify(spread), "BatchNorm")
    return spread


@dataclass(frozen=True)
class LayerNorm(Node):
    """``LN(v)``: each sample's units centred and divided by their std, times gain gamma
    (``--gamma``; beta = 0 at initialization).

    Forward q' = gamma^2 whatever q; c' = gamma^2 c / q. Backward gain gamma^2 / q:
    the Jacobian is gamma/sigma times a projection that removes two of n directions.

    >>> from derive.blocks.nodes import Input
    >>> LayerNorm(Input()).text()
    'LN(x)'
    """

    child: Node
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def centred(self) -> bool:
        return True

    def text(self) -> str:
        return f"LN({self.child.text()})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return _show("LN", self.child.display(arg))

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        (m,), g2 = inputs, config.gamma**2
        _nonzero(self, m.q, "LayerNorm")
        return Moments(g2 + 0 * m.q, None if m.c is None else g2 * m.c / m.q)

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        return (config.gamma**2 / inputs[0].q,)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        (s,), g2 = inputs, number_like(config.gamma**2, x.q_a)
        if not isinstance(s.q_a, float) or s.q_a * s.q_b == 0:
            _nonzero(self, sympy.sympify(s.q_a * s.q_b), "LayerNorm")
        m = None if s.m is None else g2 * s.m / s.q_a
        return Kernel(g2, g2, g2 * s.c / root(s.q_a * s.q_b), m)

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        (s,), g2 = inputs, number_like(config.gamma**2, x.q_a)
        return (KernelGains(g2 / s.q_a, g2 / s.q_b, g2 / root(s.q_a * s.q_b)),)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "L") * inputs[0]  # L_k, the LayerNorm Jacobian

    def reason(self, config: BranchConfig) -> str:
        return ("LayerNorm scales each sample's units to mean zero and second moment "
                "$\\gamma^2$, whatever its input")

    def backward_reason(self, config: BranchConfig) -> str:
        return ("the LayerNorm Jacobian is $(\\gamma/\\sigma)(I - \\mathbf{1}\\mathbf{1}^T/n "
                "- \\hat{h}\\hat{h}^T/n)$ with $\\sigma^2 = s$: a projection that removes two "
                "of $n$ directions, so the gain is $\\gamma^2/s$")

    def forward_np(self, values: list[np.ndarray], net: Any) -> tuple[np.ndarray, Any]:
        return _normalize(values[0], net.gamma, axis=-1)

    def backward_np(self, grad: np.ndarray, cache: Any, net: Any) -> list[np.ndarray]:
        return [_normalize_backward(grad, cache, net.gamma, axis=-1)]


@dataclass(frozen=True)
class BatchNorm(Node):
    """``BN(v)``: each unit centred and divided by its std over the batch, times gamma.

    Mean field at infinite width and an infinite batch of independent inputs, in
    training mode (batch statistics). Forward: q' = gamma^2 and c' = 0, since the
    batch mean is removed. Backward: the gain is gamma^2 / (q - c), the inverse of
    the batch variance per unit, which is the second moment less the part c that two
    independent inputs share; the Jacobian's batch-mean and batch-correlation terms
    vanish for per-sample gradients of zero mean.

    >>> from derive.blocks.nodes import Input
    >>> BatchNorm(Input()).text()
    'BN(x)'
    """

    child: Node
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def centred(self) -> bool:
        return True

    def text(self) -> str:
        return f"BN({self.child.text()})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return _show("BN", self.child.display(arg))

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        (m,) = inputs
        _nonzero(self, m.q if m.c is None else m.q - m.c, "BatchNorm")
        return Moments(config.gamma**2 + 0 * m.q, sympy.Integer(0))

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        (m,) = inputs
        assert m.c is not None
        return (config.gamma**2 / (m.q - m.c),)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        (s,), g2 = inputs, number_like(config.gamma**2, x.q_a)
        spread = _batch_variance(self, s)
        zero = number_like(sympy.Integer(0), x.q_a)
        return Kernel(g2, g2, g2 * (s.c - s.m) / spread, zero)  # type: ignore[operator]

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        (s,), g2 = inputs, number_like(config.gamma**2, x.q_a)
        return (KernelGains.uniform(g2 / _batch_variance(self, s)),)  # type: ignore[operator]

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "B") * inputs[0]  # B_k, the BatchNorm Jacobian

    def reason(self, config: BranchConfig) -> str:
        return ("BatchNorm removes each unit's batch mean and divides by its batch std: "
                "second moment $\\gamma^2$, and two inputs of the batch no longer share a "
                "mean ($c = 0$)")

    def backward_reason(self, config: BranchConfig) -> str:
        return ("the gradient is divided by the unit's batch std; its batch variance is "
                "$s - c$, the second moment less what two independent inputs share, so the "
                "gain is $\\gamma^2/(s - c)$ (the batch-mean terms vanish for an infinite "
                "batch)")

    def forward_np(self, values: list[np.ndarray], net: Any) -> tuple[np.ndarray, Any]:
        return _normalize(values[0], net.gamma, axis=-2)

    def backward_np(self, grad: np.ndarray, cache: Any, net: Any) -> list[np.ndarray]:
        return [_normalize_backward(grad, cache, net.gamma, axis=-2)]


@dataclass(frozen=True)
class Dropout(Node):
    """``Dropout(v, p)``: inverted dropout in training mode; the same mask forward and
    backward. q' = q/(1-p), c' = c (masks are independent across inputs), gain 1/(1-p).

    >>> from derive.blocks.nodes import Input
    >>> Dropout(Input(), sympy.Rational(1, 10), ("D", 0)).text()
    'Dropout(x, 1/10)'
    """

    child: Node
    p: sympy.Expr
    key: tuple = ("D", 0)
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Dropout(children[0], self.p, self.key)

    def text(self) -> str:
        return f"Dropout({self.child.text()}, {sympy.sstr(self.p)})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return _show("Dropout", self.child.display(arg), self.p)

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        m = inputs[0]
        return Moments(m.q / (1 - self.p), m.c)

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        return (1 / (1 - self.p),)

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        (s,), keep = inputs, number_like(1 / (1 - self.p), x.q_a)
        return Kernel(s.q_a * keep, s.q_b * keep, s.c, s.m)  # masks independent across inputs

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        keep = number_like(1 / (1 - self.p), x.q_a)
        return (KernelGains(keep, keep, keep / keep),)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "M") * inputs[0]  # M_k, the diagonal mask over 1-p

    def reason(self, config: BranchConfig) -> str:
        return ("inverted dropout keeps a unit with probability $1-p$ and scales it by "
                "$1/(1-p)$: the second moment is divided by $1-p$")

    def backward_reason(self, config: BranchConfig) -> str:
        return "the same mask scales the gradient: its second moment is divided by $1-p$"

    def forward_np(self, values: list[np.ndarray], net: Any) -> tuple[np.ndarray, Any]:
        p = net.scalar(self.p)
        mask = (net.uniforms(self.key, values[0].shape) >= p) * (1.0 / (1.0 - p))
        return values[0] * mask, mask

    def backward_np(self, grad: np.ndarray, cache: Any, net: Any) -> list[np.ndarray]:
        return [grad * cache]
