"""The written derivation of a variance recursion: assumptions, steps, result.

:func:`build_derivation` turns a :class:`derive.recursions.analysis.Recursion` into a
:class:`derive.derivation.value.Derivation`: the block equation, the second moment
of the sum, the vanishing cross term, the branch moment, the Gaussian moment,
the recurrence, its solution, and the check that the solution satisfies the
recurrence (computed here, by substitution and simplification).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import sympy

from derive.blocks.config import K, d, k, q, q0
from derive.derivation.value import Derivation, Step
from derive.gaussian.moments import Expectation
from derive.recursions.closed_forms import mask

if TYPE_CHECKING:  # pragma: no cover
    from derive.recursions.analysis import Recursion

h = sympy.Function("h")

class Gain(sympy.Function):
    """A printable backward gain G[v] = E[(J_v^T g)^2] / E[g^2] of a node v."""

    nargs = 1

    def _latex(self, printer: sympy.printing.latex.LatexPrinter) -> str:
        return rf"G\left[{printer._print(self.args[0])}\right]"

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"G[{printer._print(self.args[0])}]"


ASSUMPTIONS = (
    "Mean field at infinite width $n \\to \\infty$: $q_k = E[h_k^2]$ and "
    "$d_k = E[(\\partial L / \\partial h_k)^2]$ per unit; a pre-activation with second "
    "moment $s$ is treated as $z \\sim N(0, s)$.",
    "Weights i.i.d. with zero mean and the variance of the initialization "
    "(xavier $2/(n_{in} + n_{out})$, he $2/n_{in}$, lecun $1/n_{in}$, or $\\sigma_w^2$); "
    "biases zero; every $W$ and $F$ is a fresh matrix.",
    "The inputs are zero-mean Gaussian with $E[x^2] = q_0$ per unit, independent across "
    "the batch.",
    "Terms of a sum are uncorrelated, not independent: one term of each pair changes sign "
    "with a zero-mean weight matrix the other does not contain, so cross terms vanish.",
    "LayerNorm and BatchNorm have a scalar gain $\\gamma$ and $\\beta = 0$ at "
    "initialization; BatchNorm uses the statistics of an infinite batch of independent "
    "inputs (training mode).",
    "Inverted dropout with rate $p$, the same mask in the forward and the backward pass.",
    "Backward: gradient independence (the weights of the backward pass are treated as "
    "independent of the forward pass); $L = \\langle g, h_K \\rangle$ with "
    "$g \\sim N(0, 1)$ per unit, independent across the batch, so $d_K = 1$.",
)


def _substituted(expr: sympy.Expr) -> sympy.Expr:
    from derive.recursions.block_maps import C_PREV, Q_PREV, c_seq

    return expr.xreplace({Q_PREV: q(k - 1), C_PREV: c_seq(k - 1)})


def _node_steps(recursion: Recursion, backward: bool) -> list[Step]:
    """One step per primitive of the block: its moment (or gain) and why."""
    from derive.blocks.nodes import Input, Sum
    from derive.recursions.block_maps import block_input

    c = recursion.config
    block = c.block
    x = block_input(c)
    moments = block.moments(c, x)
    steps, seen = [], set()
    for node in block.expanded(c).walk():
        if isinstance(node, Input) or node in seen or (backward and isinstance(node, Sum)):
            continue
        seen.add(node)
        shown = node.display(h(k - 1))
        inputs = [moments[child] for child in node.children]
        if backward:
            gains = node.gains(inputs, c, x)
            rhs = gains[0] if len(gains) == 1 else sympy.Tuple(*gains)
            steps.append(Step(Gain(shown), _substituted(rhs), node.backward_reason(c)))
        else:
            out = moments[node]
            steps.append(Step(Expectation(shown**2), _substituted(out.q), node.reason(c)))
    return steps


def _block(recursion: Recursion) -> Step:
    c = recursion.config
    name = c.block.name
    where = f"the block {c.block.text}" if name == c.block.text else (
        f"the block {name}: {c.block.text}" + (f" ({c.block.source})" if c.block.source else ""))
    branch = "$W \\phi(h)$" if c.branch == "single" else "$W_2 \\phi(W_1 h)$"
    return Step(h(k), c.block.display(h(k - 1)), f"{where}; its branch $F$ is {branch}")


def _forward_steps(recursion: Recursion) -> list[Step]:
    return [_block(recursion), *_node_steps(recursion, backward=False)]


def _backward_steps(recursion: Recursion) -> list[Step]:
    steps = [_block(recursion), *_node_steps(recursion, backward=True)]
    steps.append(Step(d(k - 1), d(k) * sympy.Symbol("G_k"),
                      "the block's gain $G_k$ sums, over its paths from output to input, the "
                      "product of the gains along the path"))
    return steps


def _check(recursion: Recursion) -> Step | None:
    """Substitute the closed form back into the recurrence: the residual simplifies to 0."""
    from derive.recursions.block_maps import C_PREV, Q_PREV

    closed = recursion.closed_form
    if closed is None:
        return None
    sol = closed.rhs
    first = 1
    if isinstance(sol, sympy.Piecewise):
        sol, first = sol.args[-1].expr, 2
    if recursion.direction == "forward":
        prev = sol.xreplace({K: k - 1}) if first == 1 else recursion.config.gamma**2
        lhs = sympy.Add(sol.xreplace({K: k}), -recursion.step.xreplace({Q_PREV: prev}),
                        evaluate=False)
        what = "$q_k - f(q_{k-1})$ with the solution substituted"
    else:
        forward = recursion.forward_part.closed_form
        q_prev = q0 if forward is None else forward.rhs
        if isinstance(q_prev, sympy.Piecewise):
            q_prev = q_prev.args[-1].expr
        cross = recursion.cross_part.closed_form if recursion.cross_part is not None else None
        c_prev = {} if cross is None else {C_PREV: cross.rhs.xreplace({K: k - 1})}
        factor = recursion.step.xreplace({Q_PREV: q_prev.xreplace({K: k - 1}), **c_prev})
        ratio = sol.xreplace({K: k}) / sol.xreplace({K: k - 1})
        lhs = sympy.Add(ratio, -factor, evaluate=False)
        what = "$(d_0/d_k)/(d_0/d_{k-1})$ minus the factor of block $k$"
    masked, back = mask(lhs.doit())
    residual = sympy.simplify(sympy.gammasimp(sympy.expand_func(masked))).xreplace(back)
    where = "for $k \\ge 1$" if first == 1 else "for $k \\ge 2$"
    return Step(lhs, residual, f"check: {what} simplifies to zero {where}")


def build_derivation(recursion: Recursion) -> Derivation:
    """The Derivation of one recursion (forward or backward), in the project's notation.

    >>> from derive.recursions.analysis import variance
    >>> der = variance("he", "relu").forward.derivation
    >>> der.key, der.result.text()
    ('variance/he/relu/none/single/forward', 'q_K = 2ᴷ·q₀')
    """
    c = recursion.config
    if recursion.direction == "forward":
        steps = _forward_steps(recursion)
        title = f"Forward second moment $q_k$ through depth: {c.label}"
    else:
        steps = _backward_steps(recursion)
        title = f"Backward gradient second moment $d_k$ through depth: {c.label}"
    rec = recursion.recurrence
    steps.append(Step(rec.lhs, rec.rhs, "the recurrence"))
    notes = [f"Growth with depth: {recursion.growth}."]
    closed = recursion.closed_form
    if closed is not None:
        how = ("unroll $q_k = a q_{k-1} + b$ down to $q_0$: "
               "$q_K = a^K q_0 + b (1 + a + \\dots + a^{K-1})$, a geometric sum"
               if recursion.direction == "forward"
               else "multiply the factors of blocks $k = 1, \\dots, K$; products of "
                    "shifted factors are ratios of factorials (Gamma functions), simplified")
        result = Step(closed.lhs, closed.rhs, f"solution: {how}")
        steps.append(result)
        check = _check(recursion)
        if check is not None:
            steps.append(check)
    else:
        result = Step(rec.lhs, rec.rhs, "no closed form: the recurrence is iterated")
        notes.append(f"No closed form: {recursion.reason}.")
    extras = []
    for name, value, default in (("mlp_ratio", c.mlp_ratio, 1), ("dropout", c.dropout, 0),
                                 ("gamma", c.gamma, 1), ("sigma_w2", c.sigma_w2, None)):
        if value is not None and value != default:
            extras.append(f"{name}={value}".replace("/", "_"))
    if c.activation == "leaky_relu" and c.negative_slope != sympy.Rational(1, 100):
        extras.append(f"negative_slope={c.negative_slope}".replace("/", "_"))
    block = re.sub(r"[^A-Za-z0-9_=.-]+", "_", c.block.name).strip("_")
    label = "/".join((c.init, c.activation, block, c.branch))
    key = "/".join(["variance", label, *extras, recursion.direction])
    return Derivation(title, key, ASSUMPTIONS, tuple(steps), result, tuple(notes))
