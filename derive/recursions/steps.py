"""The written derivation of a variance recursion: assumptions, steps, result.

:func:`derivation` assembles a :class:`derive.derivation.value.Derivation` from a
configuration and what a recursion says for itself (:class:`Written`: its title, its
steps, how it is solved, and its check): the block equation, one step per primitive
(its moment forward, its gain backward, with the reason), the recurrence, its
solution, and the check that the solution satisfies the recurrence (computed by
substitution and simplification, :func:`check`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy

from derive.blocks.config import VarianceConfig
from derive.blocks.nodes import Input, Sum
from derive.derivation.symbols import d, k, q
from derive.derivation.value import Derivation, Step
from derive.gaussian.moments import Expectation
from derive.recursions.block_maps import C_PREV, Q_PREV, block_input, c_seq
from derive.recursions.closed_forms import mask

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
    return expr.xreplace({Q_PREV: q(k - 1), C_PREV: c_seq(k - 1)})


def node_steps(config: VarianceConfig, backward: bool) -> list[Step]:
    """One step per primitive of the block: its moment (or gain) and why.

    >>> from derive.blocks.config import variance_config
    >>> [s.rhs for s in node_steps(variance_config(init="he"), backward=False)]
    [q(k - 1)/2, q(k - 1), 2*q(k - 1)]
    """
    block = config.block
    x = block_input(config)
    moments = block.moments(config, x)
    steps, seen = [], set()
    for node in block.expanded(config).walk():
        if isinstance(node, Input) or node in seen or (backward and isinstance(node, Sum)):
            continue
        seen.add(node)
        shown = node.display(h(k - 1))
        inputs = [moments[child] for child in node.children]
        if backward:
            gains = node.gains(inputs, config, x)
            rhs = gains[0] if len(gains) == 1 else sympy.Tuple(*gains)
            steps.append(Step(Gain(shown), _substituted(rhs), node.backward_reason(config)))
        else:
            out = moments[node]
            steps.append(Step(Expectation(shown**2), _substituted(out.q), node.reason(config)))
    return steps


def block_step(config: VarianceConfig) -> Step:
    """The block's equation h_k = B(h_{k-1}), named with its source and its branch."""
    name = config.block.name
    text = config.block.text
    source = config.block.source
    where = f"the block {text}" if name == text else (
        f"the block {name}: {text}" + (f" ({source})" if source else ""))
    branch = "$W \\phi(h)$" if config.branch == "single" else "$W_2 \\phi(W_1 h)$"
    return Step(h(k), config.block.display(h(k - 1)), f"{where}; its branch $F$ is {branch}")


def forward_steps(config: VarianceConfig) -> list[Step]:
    """The block, then each primitive's second moment."""
    return [block_step(config), *node_steps(config, backward=False)]


def backward_steps(config: VarianceConfig) -> list[Step]:
    """The block, each primitive's gain, then the block's gain G_k."""
    steps = [block_step(config), *node_steps(config, backward=True)]
    steps.append(Step(d(k - 1), d(k) * sympy.Symbol("G_k"),
                      "the block's gain $G_k$ sums, over its paths from output to input, the "
                      "product of the gains along the path"))
    return steps


def general(solution: sympy.Expr) -> tuple[sympy.Expr, int]:
    """A closed form's general branch and the first block it holds from: a Piecewise
    that treats K = 0 apart holds its last branch from k = 2 on.

    >>> from derive.derivation.symbols import K
    >>> general(sympy.Piecewise((1, sympy.Eq(K, 0)), (K + 1, True)))
    (K + 1, 2)
    """
    if isinstance(solution, sympy.Piecewise):
        return solution.args[-1].expr, 2
    return solution, 1


def check(lhs: sympy.Expr, what: str, first: int) -> Step:
    """The step that checks a closed form: ``lhs`` (a residual written out) simplifies to
    zero, for every block from ``first`` on."""
    masked, back = mask(lhs.doit())
    residual = sympy.simplify(sympy.gammasimp(sympy.expand_func(masked))).xreplace(back)
    where = "for $k \\ge 1$" if first == 1 else "for $k \\ge 2$"
    return Step(lhs, residual, f"check: {what} simplifies to zero {where}")


@dataclass(frozen=True)
class Written:
    """What a recursion says for itself in its derivation."""

    title: str
    steps: Sequence[Step]
    #: How the closed form is found, after "solution: ".
    how: str
    #: The check of the closed form against the recurrence (None without one).
    check: Callable[[], Step | None]


def derivation(config: VarianceConfig, direction: str, parts: Written, recurrence: sympy.Eq,
               closed: sympy.Eq | None, growth: str, reason: str | None) -> Derivation:
    """The Derivation of one recursion, in the project's notation.

    >>> import derive
    >>> der = derive.variance("he", "relu", "pre").backward.derivation
    >>> der.key, der.result.text()
    ('variance/he/relu/pre/single/backward', 'd₀/d_K = (K + q₀)/q₀')
    """
    steps = [*parts.steps, Step(recurrence.lhs, recurrence.rhs, "the recurrence")]
    notes = [f"Growth with depth: {growth}."]
    if closed is not None:
        result = Step(closed.lhs, closed.rhs, f"solution: {parts.how}")
        steps.append(result)
        checked = parts.check()
        if checked is not None:
            steps.append(checked)
    else:
        result = Step(recurrence.lhs, recurrence.rhs, "no closed form: the recurrence is iterated")
        notes.append(f"No closed form: {reason}.")
    return Derivation(parts.title, _key(config, direction), ASSUMPTIONS, tuple(steps), result,
                      tuple(notes))


def _key(config: VarianceConfig, direction: str) -> str:
    """The derivation's stable key: the configuration, its non-default values, direction."""
    c = config
    extras = []
    for name, value, default in (("mlp_ratio", c.mlp_ratio, 1), ("dropout", c.dropout, 0),
                                 ("gamma", c.gamma, 1), ("sigma_w2", c.sigma_w2, None),
                                 ("sigma_b2", c.sigma_b2, 0),
                                 ("fan_in_variance", c.fan_in_variance, None)):
        if value is not None and value != default:
            extras.append(f"{name}={value}".replace("/", "_"))
    if c.activation == "leaky_relu" and c.negative_slope != sympy.Rational(1, 100):
        extras.append(f"negative_slope={c.negative_slope}".replace("/", "_"))
    block = re.sub(r"[^A-Za-z0-9_=.-]+", "_", c.block.name).strip("_")
    label = "/".join((c.init, c.activation, block, c.branch))
    return "/".join(["variance", label, *extras, direction])
