"""Second moments through depth for blocks with attention: the token kernel's route.

``Attn`` mixes the n tokens of a sequence, so the second moment q_k of a token after a
layer depends on c_{k-1}, the covariance per unit of two tokens; the one-point recursion
q_k = f(q_{k-1}) does not exist. The state is the token kernel (q_k, c_k) forward and
(d_k, g_k) backward (g_k: the covariance of two tokens' gradients), each layer mapping it
by its primitives' two-point rules (:meth:`derive.blocks.block.Block.kernel_forward` and
``kernel_gain``):

- forward: q_k = F(q_{k-1}, c_{k-1}) and c_k = G(q_{k-1}, c_{k-1}), from q_0 and
  c_0 = rho_0 q_0;
- backward: d_{k-1} = a d_k + b g_k and g_{k-1} = e d_k + f g_k, the coefficients in
  q_{k-1} and c_{k-1}, from d_K = g_K = 1 (every token read by the same readout, as in
  :func:`derive.recursions.kernel.kernel`).

The maps are folded symbolically; where a rule has no closed form (standard attention's
softmax expectations, an activation without a closed-form two-point kernel) it enters as
a named function of its input kernel (``S``, ``X``, ``kappa``). Where the maps are affine in
(q, c) with constant coefficients (uniform attention without normalization) the
closed forms in the depth are powers of the map's matrix; a map of q alone (post-LN)
is solved by :func:`derive.recursions.closed_forms.solve_affine`; otherwise the token
kernel is iterated.

:class:`TokenWeightGradients` gives, at every layer k, the expected squared gradient
per entry of the last matrix of each sublayer (W_O of ``Attn``, the output matrix of
``MLP``) for a sequence of n tokens, L summed over the tokens.

>>> a = token_variance(variance_config(block="x + Attn(x)", attention="uniform", tokens=4))
>>> a.forward.closed_form[0].rhs
q_0*(2**K + 3*rho_0*(2**K - 1) + 3)/4
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import sympy

from derive.blocks.attention import Attention, Overlap
from derive.blocks.config import VarianceConfig, variance_config
from derive.blocks.nodes import Input, Kernel, KernelGains, Moments, Node, Stage, sublayers
from derive.blocks.primitives import Activation, LayerNorm, Weight
from derive.derivation.printing import latex, subscript, text
from derive.derivation.symbols import K, d, k, q, q0
from derive.errors import DeriveError
from derive.recursions import closed_forms
from derive.recursions import growth as laws
from derive.recursions.block_maps import C_PREV, Q_PREV, c_seq

#: The tokens' initial correlation rho_0 = c_0 / q_0.
rho_0 = sympy.Symbol("rho_0", real=True)
#: The deepest token profile (each layer folds the token kernel in floats).
MAX_TOKEN_DEPTH = 10_000


class _Named(sympy.Function):
    """A function printed with its own name in text and LaTeX (subclasses set both)."""

    shown_text: str = ""
    shown_latex: str = ""

    def _sympystr(self, printer: Any) -> str:
        inner = ", ".join(printer._print(a) for a in self.args)
        return f"{self.shown_text}({inner})"

    def _latex(self, printer: Any, exp: object = None) -> str:
        inner = ", ".join(printer._print(a) for a in self.args)
        out = rf"{self.shown_latex}\left({inner}\right)"
        return f"{out}^{{{exp}}}" if exp is not None else out


def _named(name: str, shown_text: str, shown_latex: str) -> type[_Named]:
    return type(name, (_Named,), {"shown_text": shown_text, "shown_latex": shown_latex})


#: Standard attention's softmax expectations at its input kernel (q, c) (see
#: :mod:`derive.blocks.attention`), evaluated numerically.
S = _named("SoftmaxSame", "S", "S")
X = _named("SoftmaxCross", "X", "X")
S_logit = _named("SoftmaxSameLogit", "S_logit", r"S_{\mathrm{logit}}")
X_logit = _named("SoftmaxCrossLogit", "X_logit", r"X_{\mathrm{logit}}")
#: What each named function is, for the outputs' "where" line.
MEANINGS = {
    "S": "E[Σⱼ P₁ⱼ²]", "X": "E[Σⱼ P₁ⱼ P₂ⱼ]",
    "S_logit": "E[Σⱼ P₁ⱼ² (1 - 2P₁ⱼ + Σᵢ P₁ᵢ²)]",
    "X_logit": "E[Σⱼ P₁ⱼ P₂ⱼ (1 - P₁ⱼ - P₂ⱼ + Σᵢ P₁ᵢ P₂ᵢ)]",
}


def _kappa(name: str, derivative: bool) -> type[_Named]:
    mark = "'" if derivative else ""
    return _named(f"Kappa{'Prime' if derivative else ''}_{name}", f"κ{mark}_{name}",
                  rf"\kappa{mark}_{{\mathrm{{{name}}}}}")


class _SymbolicAttention(Attention):
    """Attention whose standard-mode softmax expectations, at a symbolic kernel, are the
    named functions S, X, S_logit, X_logit of the input kernel (q, c)."""

    def overlap(self, state: Kernel, config: Any) -> Overlap:
        if isinstance(state.q_a, float) or config.attention != "standard" or config.tokens == 1:
            return super().overlap(state, config)
        if config.tokens == sympy.oo:
            return super().overlap(state, config)
        args, others = (state.q_a, state.c), config.tokens - 1
        return Overlap(S(*args), others * X(*args), 1 / others, S_logit(*args),
                       others * X_logit(*args))


@dataclass(frozen=True)
class _SymbolicActivation:
    """An activation at a symbolic kernel: its own rules where its two-point kernel has a
    closed form; else E[phi(z)^2] and E[phi'(z)^2] from its one-point rules, and
    E[phi(u) phi(v)], E[phi'(u) phi'(v)] as kappa_phi(q, c), kappa'_phi(q, c)."""

    node: Activation

    def kernel(self, inputs: list[Kernel], config: Any, x: Kernel) -> Kernel:
        try:
            return self.node.kernel(inputs, config, x)
        except DeriveError:
            pass
        (s,) = inputs
        name = self.node.name or config.activation
        one = self.node.moments([Moments(s.q_a)], config, Moments(x.q_a)).q
        pair = _kappa(name, False)(s.q_a, s.c)
        return Kernel(one, one, pair)

    def kernel_gains(self, inputs: list[Kernel], config: Any, x: Kernel
                     ) -> tuple[KernelGains, ...]:
        try:
            return self.node.kernel_gains(inputs, config, x)
        except DeriveError:
            pass
        (s,) = inputs
        name = self.node.name or config.activation
        one = self.node.gains([Moments(s.q_a)], config, Moments(x.q_a))[0]
        return (KernelGains(one, one, _kappa(name, True)(s.q_a, s.c)),)


def _rule(node: Node, config: VarianceConfig) -> Any:
    """The node whose rules fold a symbolic token kernel: itself, or its symbolic stand-in."""
    if isinstance(node, Attention):
        return _SymbolicAttention(node.key, node.child)
    if isinstance(node, Activation):
        return _SymbolicActivation(node)
    return node


def _states(config: VarianceConfig, x: Kernel, symbolic: bool, tree: Node | None = None,
            below: Kernel | None = None) -> dict[int, Kernel]:
    """Every node's token kernel when the layer's input has ``x``, keyed by identity; with
    ``tree`` (one sublayer) and ``below``, the sublayer alone, its input's kernel ``below``."""
    out: dict[int, Kernel] = {}
    root = config.block.expanded(config) if tree is None else tree
    for node in _own_walk(root, tree is not None):
        if id(node) in out:
            continue
        if isinstance(node, Stage) and tree is not None:
            out[id(node)] = below if below is not None else x
            continue
        rule = _rule(node, config) if symbolic else node
        out[id(node)] = rule.kernel([out[id(c)] for c in node.children], config, x)
    return out


def _own_walk(node: Node, stop: bool) -> list[Node]:
    """``node.walk()``, not below a Stage when ``stop`` (one sublayer's own nodes)."""
    if stop and isinstance(node, Stage):
        return [node]
    out: list[Node] = []
    for child in node.children:
        out.extend(_own_walk(child, stop))
    out.append(node)
    return out


def _gains_down(config: VarianceConfig, x: Kernel, target: Node | None, symbolic: bool,
                tree: Node | None = None, below: Kernel | None = None) -> KernelGains:
    """The map of (d_a, d_b, g) from the layer's output down to ``target``'s output (None:
    to the layer's input), summed over the paths, each the product of its nodes' gains;
    with ``tree`` (one sublayer), from its output down to its input (its Stage)."""
    root = config.block.expanded(config) if tree is None else tree
    states = _states(config, x, symbolic, tree, below)
    one = KernelGains.uniform(sympy.Integer(1) if symbolic else 1.0)
    memo: dict[int, KernelGains | None] = {}

    def down(node: Node) -> KernelGains | None:
        if (target is not None and node == target) or (target is None and (
                isinstance(node, Input) or (tree is not None and isinstance(node, Stage)))):
            return one
        if id(node) not in memo:
            rule = _rule(node, config) if symbolic else node
            gains = rule.kernel_gains([states[id(c)] for c in node.children], config, x) \
                if node.children else ()
            routes = [g.times(lower) for g, c in zip(gains, node.children, strict=True)
                      if (lower := down(c)) is not None]
            total = routes[0] if routes else None
            for route in routes[1:]:
                total = total.plus(route)  # type: ignore[union-attr]
            memo[id(node)] = total
        return memo[id(node)]

    found = down(root)
    if found is None:  # pragma: no cover (targets are found in the tree)
        raise DeriveError(f"no path from the output of {config.block.text} to its matrix")
    return found


def _pair(gains: KernelGains) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The map of (d, g) for exchangeable tokens (d_a = d_b = d): 2 x 2 from the 3 x 3."""
    rows = gains.rows()
    return ((rows[0][0] + rows[0][1], rows[0][2]), (rows[2][0] + rows[2][1], rows[2][2]))


# --- the symbolic maps -----------------------------------------------------------------
Rows = tuple[tuple[sympy.Expr, sympy.Expr], tuple[sympy.Expr, sympy.Expr]]


def _sequence(letter: str, primes: int) -> type[_Named]:
    """The sequence ``letter`` after ``primes`` sublayers of layer k (q'_k, c'_k, ...)."""
    mark = "′" * primes
    tex = "'" * primes

    def as_text(self: Any, printer: Any) -> str:
        return letter + mark + subscript(printer._print(self.args[0]))

    def as_latex(self: Any, printer: Any, exp: object = None) -> str:
        out = f"{letter}{tex}_{{{printer._print(self.args[0])}}}"
        return f"{out}^{{{exp}}}" if exp is not None else out

    return type(f"{letter}{'_mid' * primes}", (_Named,),
                {"_sympystr": as_text, "_latex": as_latex, "shown_text": letter + mark})


g_seq = _sequence("g", 0)


@dataclass(frozen=True)
class SublayerMap:
    """One sublayer's maps in its input's ``Q_PREV`` and ``C_PREV``: ``q`` and ``c``
    forward, ``backward`` the 2 x 2 coefficients of (d, g) at its output in (d, g) at its
    input."""

    text: str
    q: sympy.Expr
    c: sympy.Expr
    backward: Rows


@dataclass(frozen=True)
class TokenMaps:
    """One layer's maps in ``Q_PREV`` (q_{k-1}) and ``C_PREV`` (c_{k-1}): ``q`` and ``c``
    forward, ``backward`` the 2 x 2 coefficients of (d_k, g_k) in (d_{k-1}, g_{k-1}),
    composed from its ``sublayers``' maps."""

    q: sympy.Expr
    c: sympy.Expr
    backward: Rows
    sublayers: tuple[SublayerMap, ...]

    @property
    def named(self) -> list[str]:
        """The names of the functions evaluated numerically that the maps hold."""
        exprs = [e for m in self.sublayers for e in (m.q, m.c, *m.backward[0], *m.backward[1])]
        found = {type(f).shown_text for e in exprs for f in e.atoms(_Named)}
        return sorted(found)


def token_maps(config: VarianceConfig) -> TokenMaps:
    """The layer's forward and backward maps of the token kernel (see :class:`TokenMaps`).

    >>> m = token_maps(variance_config(block="x + Attn(x)", attention="uniform", tokens=2))
    >>> m.q, m.c
    (c/2 + 3*x/2, 3*c/2 + x/2)
    """
    state = Kernel(Q_PREV, Q_PREV, C_PREV)
    parts = []
    for tree, shown in zip(sublayers(config.block.expanded(config)), config.block.sublayers,
                           strict=True):
        out = _states(config, state, True, tree, state)[id(tree)]
        rows = _pair(_gains_down(config, state, None, True, tree, state))
        parts.append(SublayerMap(shown, _tidy(out.q_a), _tidy(out.c),
                                 ((_tidy(rows[0][0]), _tidy(rows[0][1])),
                                  (_tidy(rows[1][0]), _tidy(rows[1][1])))))
    q_now, c_now = Q_PREV, C_PREV
    total: Rows = ((sympy.Integer(1), sympy.Integer(0)), (sympy.Integer(0), sympy.Integer(1)))
    for part in parts:
        at = {Q_PREV: q_now, C_PREV: c_now}
        (a, b), (e, f) = [[v.xreplace(at) for v in row] for row in part.backward]
        (p, r), (s, t) = total
        total = ((p * a + r * e, p * b + r * f), (s * a + t * e, s * b + t * f))
        q_now, c_now = part.q.xreplace(at), part.c.xreplace(at)
    if len(parts) == 1:
        return TokenMaps(parts[0].q, parts[0].c, parts[0].backward, tuple(parts))
    return TokenMaps(_tidy(q_now), _tidy(c_now),
                     ((_tidy(total[0][0]), _tidy(total[0][1])),
                      (_tidy(total[1][0]), _tidy(total[1][1]))), tuple(parts))


def _tidy(expr: Any) -> sympy.Expr:
    """Simplified, with sqrt(m^2) = |m| = m for the second moments that LayerNorm divides
    by; a map with tied attention's exponentials is only put over one denominator (SymPy's
    simplify takes minutes on them)."""
    out = sympy.sympify(expr)
    out = sympy.factor_terms(sympy.together(out)) if out.has(sympy.exp) else sympy.simplify(out)
    positive = out.replace(
        lambda e: e.is_Pow and abs(e.exp) == sympy.S.Half and e.base.is_Pow
        and e.base.exp == 2, lambda e: e.base.base ** (2 * e.exp)).replace(
        lambda e: isinstance(e, sympy.Abs), lambda e: e.args[0])
    if positive == out:
        return out
    return sympy.factor_terms(positive) if positive.has(sympy.exp) else sympy.simplify(positive)


def _seq(letter: str, primes: int, count: int) -> sympy.Expr:
    """The sequence ``letter`` after ``primes`` of the ``count`` sublayers of layer k:
    q_{k-1} before the first, q_k after the last, q'_k, q''_k between."""
    plain = {"q": q, "c": c_seq, "d": d, "g": g_seq}[letter]
    if primes == 0:
        return plain(k - 1)
    if primes == count:
        return plain(k)
    return _sequence(letter, primes)(k)


def _at(primes: int, count: int, index: sympy.Expr) -> dict[sympy.Symbol, sympy.Expr]:
    """The placeholders of a sublayer's map as the sequences at its input."""
    return {Q_PREV: _seq("q", primes, count), C_PREV: _seq("c", primes, count)}


def _linear(exprs: list[sympy.Expr], variables: list[sympy.Symbol]
            ) -> tuple[list[list[sympy.Expr]], list[sympy.Expr]] | None:
    """The coefficients and constants of ``exprs``, affine in ``variables`` with constant
    coefficients, or None."""
    matrix, consts = [], []
    for expr in exprs:
        if expr.atoms(_Named) or not expr.is_polynomial(*variables):
            return None
        row = [sympy.simplify(sympy.diff(expr, v)) for v in variables]
        const = sympy.simplify(expr - sum(a * v for a, v in zip(row, variables, strict=True)))
        if any(e.has(*variables) or e.atoms(_Named) for e in (*row, const)):
            return None
        matrix.append(row)
        consts.append(const)
    return matrix, consts


def _power(matrix: list[list[sympy.Expr]], consts: list[sympy.Expr],
           start: list[sympy.Expr]) -> list[sympy.Expr]:
    """The state after K steps of v -> M v + b from ``start``: the augmented matrix to the
    power K (its Jordan form, by SymPy)."""
    size = len(matrix)
    augmented = sympy.Matrix([[*row, b] for row, b in zip(matrix, consts, strict=True)]
                             + [[0] * size + [1]])
    powered = augmented**K
    vector = powered * sympy.Matrix([*start, 1])
    return [sympy.factor_terms(sympy.simplify(vector[i])) for i in range(size)]


# --- the analysis ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TokenForward:
    """q_k and c_k through depth: recurrences, closed forms where found, values."""

    analysis: TokenVarianceAnalysis
    direction = "forward"

    @property
    def recurrence(self) -> tuple[sympy.Eq, ...]:
        """q_k = F(q_{k-1}, c_{k-1}) and c_k = G(q_{k-1}, c_{k-1}), one pair per sublayer
        (q'_k, c'_k after the first of two)."""
        parts = self.analysis.maps.sublayers
        out = []
        for j, part in enumerate(parts):
            at = _at(j, len(parts), k)
            out += [sympy.Eq(_seq("q", j + 1, len(parts)), part.q.xreplace(at)),
                    sympy.Eq(_seq("c", j + 1, len(parts)), part.c.xreplace(at))]
        return tuple(out)

    @cached_property
    def _solution(self) -> tuple[tuple[sympy.Eq | None, sympy.Eq | None], str | None]:
        maps = self.analysis.maps
        start = [q0, rho_0 * q0]
        joint = _linear([maps.q, maps.c], [Q_PREV, C_PREV])
        if joint is not None:
            q_k, c_k = _power(*joint, start)
            return (sympy.Eq(q(K), q_k), sympy.Eq(c_seq(K), c_k)), None
        alone = _linear([maps.q], [Q_PREV])
        why = ("the map of (q, c) is not affine in (q_{k-1}, c_{k-1}) with constant "
               "coefficients: the token kernel is iterated")
        if alone is None:
            return (None, None), why
        (a,), (b,) = alone[0][0], alone[1]
        return (sympy.Eq(q(K), closed_forms.solve_affine(a, b)), None), (
            "q_k depends on q_{k-1} alone, but c_k is not affine in (q_{k-1}, c_{k-1}) "
            "with constant coefficients: c_k is iterated")

    @property
    def closed_form(self) -> tuple[sympy.Eq | None, sympy.Eq | None]:
        """(q(K) = ..., c(K) = ...) in q_0 and rho_0, each None where not found."""
        return self._solution[0]

    @property
    def reason(self) -> str | None:
        """Why a closed form is missing, or None."""
        return self._solution[1]

    @cached_property
    def growth(self) -> str:
        """How q_K grows with the depth."""
        closed = self.closed_form[0]
        if closed is not None:
            return laws.growth(_general(closed.rhs).xreplace({rho_0: self.analysis.rho0}))
        values = self.analysis.states(laws.ITERATED_BLOCKS, 1)
        return f"{laws.iterated_growth([float(s.q_a) for s in values])} (from the iteration)"

    def at(self, depth: int) -> tuple[sympy.Expr, sympy.Expr]:
        """(q_K, c_K) at K = ``depth``: exact from the closed forms, else floats."""
        state = self.analysis.states(depth)[-1]
        values = []
        for closed, value in zip(self.closed_form, (state.q_a, state.c), strict=True):
            if closed is None:
                values.append(sympy.Float(value, closed_forms.PRECISION))
            else:
                values.append(closed_forms.exact_value(closed_forms.evaluate(
                    closed.rhs.xreplace({rho_0: self.analysis.rho0}), depth, self.analysis.q0)))
        return values[0], values[1]


@dataclass(frozen=True, eq=False)
class TokenBackward:
    """d_k and g_k through depth, read from the output down (d_0/d_K)."""

    analysis: TokenVarianceAnalysis
    direction = "backward"

    @property
    def recurrence(self) -> tuple[sympy.Eq, ...]:
        """d_{k-1} and g_{k-1} in d_k, g_k and the forward state at k-1, one pair per
        sublayer, the last sublayer first."""
        parts = self.analysis.maps.sublayers
        out = []
        for j in range(len(parts) - 1, -1, -1):
            at = _at(j, len(parts), k)
            (a, b), (e, f) = self.analysis.maps.sublayers[j].backward
            d_out, g_out = _seq("d", j + 1, len(parts)), _seq("g", j + 1, len(parts))
            out += [sympy.Eq(_seq("d", j, len(parts)), a.xreplace(at) * d_out
                             + b.xreplace(at) * g_out),
                    sympy.Eq(_seq("g", j, len(parts)), e.xreplace(at) * d_out
                             + f.xreplace(at) * g_out)]
        return tuple(out)

    @cached_property
    def _solution(self) -> tuple[sympy.Eq | None, str | None]:
        rows = self.analysis.maps.backward
        if any(e.has(Q_PREV, C_PREV) or e.atoms(_Named) for row in rows for e in row):
            return None, ("the coefficients depend on the forward state (q_{k-1}, c_{k-1}): "
                          "the products of the layers' maps are iterated")
        d_0, _ = _power([list(r) for r in rows], [sympy.Integer(0)] * 2, [sympy.Integer(1)] * 2)
        return sympy.Eq(d(0) / d(K), d_0, evaluate=False), None

    @property
    def closed_form(self) -> sympy.Eq | None:
        """d(0)/d(K) = ... (d_K = g_K), or None."""
        return self._solution[0]

    @property
    def reason(self) -> str | None:
        """Why there is no closed form, or None."""
        return self._solution[1]

    @cached_property
    def growth(self) -> str:
        """How d_0/d_K grows with the depth K."""
        if self.closed_form is not None:
            return laws.growth(self.closed_form.rhs)
        ratios = self.analysis.input_ratios(laws.ITERATED_BLOCKS)
        return f"{laws.iterated_growth(ratios)} (from the iteration)"

    def at(self, depth: int) -> sympy.Expr:
        """d_0/d_K at K = ``depth``."""
        if self.closed_form is not None:
            return closed_forms.exact_value(self.closed_form.rhs.xreplace({K: depth}))
        return sympy.Float(self.analysis.input_ratios(depth)[-1], closed_forms.PRECISION)


@dataclass(frozen=True, eq=False)
class TokenVarianceAnalysis:
    """The token kernel's second moments through depth for a block with ``Attn``.

    >>> a = token_variance(variance_config(block="x + Attn(x)", attention="uniform"))
    >>> a.backward.closed_form.rhs, a.backward.at(3)
    (2**K, 8)
    """

    config: VarianceConfig
    q0: sympy.Expr = sympy.Integer(1)
    rho0: sympy.Expr = sympy.Rational(1, 2)
    final_norm: bool = False

    @cached_property
    def maps(self) -> TokenMaps:
        """The layer's symbolic maps."""
        return token_maps(self.config)

    @cached_property
    def forward(self) -> TokenForward:
        """q_k and c_k."""
        return TokenForward(self)

    @cached_property
    def backward(self) -> TokenBackward:
        """d_k and g_k."""
        return TokenBackward(self)

    @cached_property
    def weights(self) -> TokenWeightGradients:
        """The last matrix of each sublayer: its expected squared gradient at every layer."""
        return TokenWeightGradients(self)

    @property
    def named(self) -> list[str]:
        """The named functions the maps hold (evaluated numerically)."""
        return self.maps.named

    # --- floats ----------------------------------------------------------------------
    def states(self, depth: int, q_start: object = None) -> tuple[Kernel, ...]:
        """The token kernel at k = 0..depth (floats): the layer's two-point fold
        (:meth:`derive.blocks.block.Block.kernel_forward`) from (q_0, q_0, rho_0 q_0)."""
        if depth > MAX_TOKEN_DEPTH:
            raise DeriveError(f"--depth must be at most {MAX_TOKEN_DEPTH} for a block with "
                              f"Attn (its token kernel is iterated), got {depth}")
        start = float(self.q0 if q_start is None else q_start)  # type: ignore[arg-type]
        return _forward(self.config, start, float(self.rho0), depth)

    def layer_maps(self, depth: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
        """Each layer's backward map of (d, g), k = 1..depth, at its forward state."""
        states = self.states(depth)
        return [_pair(self.config.block.kernel_gain(self.config, states[j - 1]))
                for j in range(1, depth + 1)]

    def gradients(self, depth: int) -> list[tuple[float, float]]:
        """(d_k, g_k) for k = 0..depth of a stack of ``depth`` layers, d_K = g_K = 1 (times
        gamma^2 / q_K behind a final LayerNorm)."""
        top = 1.0
        if self.final_norm:
            last = self.states(depth)[-1]
            norm = LayerNorm(Input())
            (gains,) = norm.kernel_gains([last], self.config, last)
            top = float(gains.a)
        out = [(top, top)]
        for (a, b), (e, f) in reversed(self.layer_maps(depth)):
            d_k, g_k = out[-1]
            out.append((a * d_k + b * g_k, e * d_k + f * g_k))
        return out[::-1]

    def input_ratios(self, depth: int) -> list[float]:
        """d_0/d_K for stacks of K = 0..depth layers (d_K = g_K)."""
        maps = self.layer_maps(depth)
        ratios, product = [1.0], ((1.0, 0.0), (0.0, 1.0))
        for (a, b), (e, f) in maps:  # product = M_1 M_2 ... M_K
            (p, r), (s, t) = product
            product = ((p * a + r * e, p * b + r * f), (s * a + t * e, s * b + t * f))
            ratios.append(product[0][0] + product[0][1])
        return ratios

    def to_dict(self, depth: int, weights: bool = False) -> dict[str, object]:
        """JSON-ready: configuration, both directions (LaTeX, closed forms, growth,
        values, profiles) and, with ``weights``, the weight gradients."""
        c = self.config
        forward, backward = self.forward, self.backward
        states = self.states(depth)
        grads = self.gradients(depth)
        q_at, c_at = forward.at(depth)
        data: dict[str, object] = {
            "config": {"init": c.init, "activation": c.activation, "branch": c.branch,
                       "block": {"name": c.block.name, "expression": c.block.text,
                                 "latex": latex(c.block.display()), "source": c.block.source},
                       "mlp_ratio": str(c.mlp_ratio), "dropout": str(c.dropout),
                       "gamma": str(c.gamma), "tokens": str(c.tokens),
                       "attention": c.attention, "qk_variance": str(c.qk_variance),
                       "vo_variance": str(c.vo_variance), "sigma_b2": str(c.sigma_b2)},
            "depth": depth, "q0": str(self.q0), "rho0": str(self.rho0),
            "token_covariance": True,
            "named_functions": {name: MEANINGS.get(name, _kappa_meaning(name))
                                for name in self.named},
            "forward": {
                "recurrence": [latex(eq) for eq in forward.recurrence],
                "recurrence_text": [text(eq) for eq in forward.recurrence],
                "closed_form": [None if eq is None else latex(eq)
                                for eq in forward.closed_form],
                "reason": forward.reason, "growth": forward.growth,
                "value": {"q": str(q_at), "c": str(c_at)},
                "profile": {"q": [float(s.q_a) for s in states],
                            "c": [float(s.c) for s in states]},
            },
            "backward": {
                "recurrence": [latex(eq) for eq in backward.recurrence],
                "recurrence_text": [text(eq) for eq in backward.recurrence],
                "closed_form": None if backward.closed_form is None
                else latex(backward.closed_form),
                "reason": backward.reason, "growth": backward.growth,
                "value": str(backward.at(depth)),
                "profile": {"d": [v[0] for v in grads], "g": [v[1] for v in grads]},
            },
        }
        if weights:
            data["weights"] = self.weights.to_dict(depth)
        return data


@lru_cache(maxsize=256)
def _forward(config: VarianceConfig, q_start: float, rho_start: float, depth: int
             ) -> tuple[Kernel, ...]:
    states = [Kernel(q_start, q_start, rho_start * q_start)]
    for _ in range(depth):
        states.append(config.block.kernel_forward(config, states[-1]))
    return tuple(states)


def _kappa_meaning(name: str) -> str:
    base = name.replace("κ'_", "").replace("κ_", "")
    if name.startswith("κ'"):
        return f"E[{base}'(u) {base}'(v)], (u, v) Gaussian with variances q, covariance c"
    return f"E[{base}(u) {base}(v)], (u, v) Gaussian with variances q, covariance c"


def _general(expr: sympy.Expr) -> sympy.Expr:
    return expr.args[-1].expr if isinstance(expr, sympy.Piecewise) else expr


# --- weight gradients --------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The last matrix of one sublayer: the node it is (or is in), its name, the sublayer."""

    node: Node
    name: str
    sublayer: str


def targets(config: VarianceConfig) -> list[Target]:
    """The matrix nearest each sublayer's output: W_O of ``Attn``, else the last ``W``.

    >>> [(t.name, t.sublayer) for t in targets(variance_config(block="transformer-pre"))]
    [('W_O', 'x + Attn(LN(x))'), ('W_out', 'x + MLP(LN(x))')]
    """
    out = []
    names = config.block.sublayers
    for part, shown in zip(sublayers(config.block.expanded(config)), names, strict=True):
        level = [part]
        while level:
            found = [n for n in level if isinstance(n, Attention | Weight)]
            if found:
                node = found[0]
                out.append(Target(node, "W_O" if isinstance(node, Attention) else "W_out",
                                  shown))
                break
            level = [c for n in level if not isinstance(n, Stage) for c in n.children]
    return out


@dataclass(frozen=True, eq=False)
class TokenWeightGradients:
    """E[(dL/dW_ij)^2] for the last matrix W of each sublayer at every layer k, for a
    sequence of n tokens with L summed over them: dL/dW = sum_i g_i a_i^T, so under
    gradient independence w = n d_W A_q + n (n - 1) g_W A_c, with (d_W, g_W) the gradients'
    kernel at W's output (the layer's (d_k, g_k) through the gains down to W) and
    (A_q, A_c) the token kernel of W's input (for W_O, the heads' output: the attention
    output's kernel less the bias variance, over sigma_O^2)."""

    analysis: TokenVarianceAnalysis

    @cached_property
    def targets(self) -> list[Target]:
        """The matrices, first sublayer first."""
        found = targets(self.analysis.config)
        if not found:
            raise DeriveError(f"the block {self.analysis.config.block.text} has no weight "
                              "matrix: write Attn(.), MLP(.), F(.) or W(.)")
        return found

    def rows(self, depth: int) -> list[list[float]]:
        """w at layers k = 1..depth, one list per target (:attr:`targets`)."""
        config = self.analysis.config
        n = float(config.tokens)
        states, grads = self.analysis.states(depth), self.analysis.gradients(depth)
        out: list[list[float]] = [[] for _ in self.targets]
        for j in range(1, depth + 1):
            x = states[j - 1]
            kernels = _states(config, x, False)
            d_k, g_k = grads[j]
            for row, target in zip(out, self.targets, strict=True):
                d_w, _, g_w = _gains_down(config, x, target.node, False).apply(d_k, d_k, g_k)
                a_q, a_c = _matrix_input(target.node, kernels, config)
                row.append(float(n * d_w * a_q + n * (n - 1) * g_w * a_c))
        return out

    def ratios(self, depth: int) -> list[float]:
        """w at the last layer over w at the first, per target."""
        return [row[-1] / row[0] for row in self.rows(depth)]

    def to_dict(self, depth: int) -> dict[str, object]:
        """JSON-ready: the matrices, w per layer, the ratio last/first."""
        rows = self.rows(depth)
        return {"final_norm": self.analysis.final_norm,
                "tokens": str(self.analysis.config.tokens),
                "matrices": [{"matrix": t.name, "sublayer": t.sublayer, "profile": row,
                              "last_over_first": row[-1] / row[0]}
                             for t, row in zip(self.targets, rows, strict=True)]}


def _matrix_input(node: Node, kernels: dict[int, Kernel], config: VarianceConfig
                  ) -> tuple[float, float]:
    """(A_q, A_c): the token kernel of the matrix's input."""
    if isinstance(node, Attention):
        out = kernels[id(node)]
        s_o, b2 = float(config.vo_variance), float(config.sigma_b2)
        return (float(out.q_a) - b2) / s_o, (float(out.c) - b2) / s_o
    inner = kernels[id(node.children[0])]
    return float(inner.q_a), float(inner.c)


def token_variance(config: VarianceConfig, q0_value: object = 1, rho0: object = "1/2",
                   final_norm: bool = False) -> TokenVarianceAnalysis:
    """The token route for a configuration whose block holds ``Attn`` (see the module).

    >>> a = token_variance(variance_config(block="transformer-pre", attention="uniform"))
    >>> a.forward.recurrence[0].rhs.has(c_seq(k - 1))
    True
    """
    from derive.inputs.numbers import exact, positive

    if not config.block.has_attention:
        raise DeriveError(f"the block {config.block.text} has no Attn: its second moments "
                          "follow the one-point recursion (derive.variance)")
    if config.block.symbols:
        names = ", ".join(s.name for s in config.block.symbols)
        raise DeriveError(f"the block {config.block.text} has symbols without values "
                          f"({names}): its token kernel is iterated with numbers; give them "
                          "with --set (API: values=)")
    config.block.expanded(config)
    start = positive(q0_value, "q0")
    if not start.is_number:
        raise DeriveError(f"--q0 must be a number > 0 for a block with Attn (its token "
                          f"kernel is iterated), got {start}")
    correlation = exact(rho0, "rho0", symbol=False)
    if not (-1 <= correlation <= 1):
        raise DeriveError(f"--rho0 must be in [-1, 1] (the tokens' correlation), got "
                          f"{correlation}")
    return TokenVarianceAnalysis(config, start, correlation, final_norm)


__all__ = [
    "TokenVarianceAnalysis",
    "g_seq",
    "rho_0",
    "targets",
    "token_maps",
    "token_variance",
    "variance_config",
]
