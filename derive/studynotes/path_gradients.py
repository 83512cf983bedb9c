"""The weighted path sum of the gradient-paths note: the gradient each path length carries,
and the gradients of the weights near the output.

Every share, mean and closed form comes from :mod:`derive.pathsums.by_length` (the
per-block gains split by the branches each term of the Jacobian passes); the weight
gradients from ``derive.variance(..., final_norm=True).weights``. The figure draws the
shares at Veit et al.'s depth, 54 blocks.

>>> parts = weighted_parts()
>>> [row[0] for row in parts.table.rows][:3]
['none', 'pre', 'post']
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, SupportsFloat, cast

import sympy

from derive.derivation.printing import latex, text
from derive.derivation.value import Derivation, Step
from derive.pathsums.notation import shown
from derive.rendering.render import Table
from derive.studynotes.parts import (
    card,
    final_norm,
    he_relu,
    last_weight,
    math,
    number,
    readable,
)

if TYPE_CHECKING:  # pragma: no cover
    from derive.deck.cards import Card
    from derive.pathsums.by_length import PathGradients

#: Veit et al. (2016): a ResNet of 54 blocks, whose effective paths are 5 to 17 long.
VEIT_DEPTH = 54
VEIT_WINDOW = (5, 17)
#: The blocks of the table (He, ReLU; symbols at the simulation's values).
TABLE_BLOCKS = ("none", "pre", "post", "rescaled", "skipinit", "bn-first", "deepnorm",
                "nf-resnet", "dropout")
#: The blocks of the figure: no norm, pre-LN, the rescaled sum and a rescaled branch.
FIGURE_BLOCKS = ("none", "pre", "rescaled", "skipinit")
#: A closed form longer than this (LaTeX characters) is left to the numbers.
SHORT = 70


@functools.cache
def gradients(name: str, depth: int = VEIT_DEPTH) -> PathGradients:
    """The path gradients of preset ``name`` under He + ReLU at ``depth`` (q_0 = 1)."""
    from derive.pathsums.by_length import path_gradients
    from derive.simulation.networks import checkable

    return path_gradients(depth, init="he", block=checkable(name))


def _label(name: str) -> str:
    from derive.blocks.presets import PRESETS
    from derive.simulation.networks import checkable

    values = PRESETS[name].check
    text = checkable(name).text if values else PRESETS[name].expression
    return f"{name}: {text}"


def _polynomial(g: PathGradients) -> sympy.Expr:
    """G_k(t) of ``g``'s block in q_{k-1} (and c_{k-1}), as :func:`ascending` writes it."""
    from derive.derivation.symbols import q
    from derive.recursions.block_maps import C_PREV, Q_PREV, c_seq

    previous = sympy.Symbol("k") - 1
    names = {Q_PREV: q(previous), C_PREV: c_seq(previous)}
    return ascending([sympy.factor(c).xreplace(names)
                      for c in g.polynomial])


def ascending(coefficients: list[sympy.Expr]) -> sympy.Expr:
    """sum_i c_i t^i in ascending powers of t, with a factor common to every term in front
    where one reads better: ``(1 + t)/(2 q_{k-1})``, ``1 + t/q_{k-1}``.

    >>> from derive.derivation.printing import text
    >>> text(ascending([sympy.Rational(1, 2), sympy.Rational(1, 2)]))
    '(1 + t)/2'
    """
    common, ratios = _common_factor(coefficients)
    terms = [(r, i) for i, r in enumerate(ratios) if r != 0]
    text_sum = " + ".join(_term(r, i, text) for r, i in terms).replace("+ -", "- ")
    latex_sum = " + ".join(_term(r, i, latex) for r, i in terms).replace("+ -", "- ")
    return _times(common, text_sum, latex_sum)


def _common_factor(coefficients: list[sympy.Expr]) -> tuple[sympy.Expr, list[sympy.Expr]]:
    """(common, ratios) with c_i = common * ratios[i]: the symbolic part every nonzero
    coefficient shares, over the least common denominator of what is left, where the
    ratios are then whole numbers (else common = 1 and the coefficients themselves)."""
    nonzero = [c for c in coefficients if c != 0]
    base = nonzero[0].as_coeff_Mul()[1] if nonzero else sympy.Integer(1)
    ratios = [sympy.cancel(c / base) for c in coefficients]
    equal = len(set(nonzero)) == 1
    if not all(r.is_Rational for r in ratios) or (base == 1 and not equal):
        base, ratios = sympy.Integer(1), list(coefficients)
    if base == 1 and not equal:
        return sympy.Integer(1), ratios
    scale = sympy.ilcm(*[r.q for r in ratios if r.is_Rational])
    return base / scale, [sympy.cancel(r * scale) if scale != 1 else r for r in ratios]


def _times(common: sympy.Expr, text_sum: str, latex_sum: str) -> sympy.Expr:
    """The sum with its common factor in front: as a fraction where the factor is 1/d."""
    if common == 1:
        return shown(text_sum, latex_sum)
    numerator, denominator = sympy.fraction(common)
    if numerator == 1:
        return shown(f"({text_sum})/({text(denominator)})".replace("/(2)", "/2"),
                     f"\\frac{{{latex_sum}}}{{{latex(denominator)}}}")
    return shown(f"{text(common)}·({text_sum})", f"{latex(common)} \\left({latex_sum}\\right)")


def _term(coefficient: sympy.Expr, power: int, printer: Callable[[object], str]) -> str:
    """One term c t^i of G_k(t), as ``printer`` writes it."""
    from derive.pathsums.by_length import t

    return printer(coefficient * t**power)


def series() -> dict[str, list[float]]:
    """The figure's data: each figure block's gradient share by length, and the paths'."""
    out = {"share of paths": [float(s) for s in gradients("none").path_shares]}
    for name in FIGURE_BLOCKS:
        # The figure's blocks have numbers for their symbols: each share is a number.
        shares = cast("list[SupportsFloat]", gradients(name).gradient_shares)
        out[_label(name)] = [float(s) for s in shares]
    return out


def _derivation() -> Derivation:
    from derive.derivation.symbols import K, q, q0
    from derive.recursions.block_maps import Q_PREV

    plain, pre = gradients("none"), gradients("pre")
    G = shown("Gₖ", "G_{k}")
    k = sympy.Symbol("k", integer=True, positive=True)
    p_pre = pre.per_block[0]
    forward = pre.analysis.forward.solved.rhs
    q_prev = forward.xreplace({K: k - 1, q0: 1})
    p_k = sympy.factor(p_pre.xreplace({Q_PREV: q_prev}))
    p_pre = p_pre.xreplace({Q_PREV: q(sympy.Symbol("k") - 1)})
    d = shown("E[(∂L/∂x)²]", "\\mathbb{E}\\big[(\\partial L/\\partial x)^2\\big]")
    share = shown("share of length L", "\\text{share}_L")
    steps = (
        Step(d, shown("Σ over paths P of E[(∂L/∂y · P)²]",
                      "\\sum_{P} \\mathbb{E}\\big[(\\tfrac{\\partial L}{\\partial y} P)^2\\big]"),
             "two different paths differ in some block's branch, whose last weight matrix "
             "enters one of them once and is symmetric about zero: their cross term vanishes"),
        Step(G, shown("sₖ + bₖ", "s_{k} + b_{k}"),
             "block $k$'s backward gain $d_{k-1}/d_k$ splits into its skip's $s_k$ and its "
             "branch's $b_k$ (gradient independence: each factor scales the second moment "
             "by its gain)"),
        Step(share, shown("[tᴸ] Πₖ (sₖ + bₖ t) / Πₖ (sₖ + bₖ)",
                          "[t^L] \\prod_{k} \\frac{s_{k} + b_{k} t}{s_{k} + b_{k}}"),
             "a path through the branches of the blocks in $S$ carries "
             "$d_K \\prod_{k \\in S} b_k \\prod_{k \\notin S} s_k$; the paths with $|S| = L$ "
             "are the coefficient of $t^L$"),
        Step(shown("Gₖ(t), no norm", "G_{k}(t)\\big|_{\\text{no norm}}"), _polynomial(plain),
             "He and ReLU: the branch's gain is $2 \\cdot \\frac{1}{2} = 1$, the skip's $1$"),
        Step(share, binomial_share(plain.per_block[0]),
             "$s_k = b_k$: every path carries the same gradient, so the shares are the "
             "counts' binomial"),
        Step(shown("Gₖ(t), pre-LN", "G_{k}(t)\\big|_{\\text{pre-LN}}"), _polynomial(pre),
             "LN divides the branch's gradient by the std of $h_{k-1}$: gain $1/q_{k-1}$"),
        Step(shown("mean length, pre-LN", "\\text{mean length}\\big|_{\\text{pre-LN}}"),
             _mean_length(pre),
             f"block $k$ adds $p_k = b_k/(s_k + b_k) = {latex(p_pre)} = {latex(p_k)}$ with "
             f"$q_{{k-1}} = {latex(q_prev)}$ ($q_0 = 1$): a harmonic sum, {asymptote(pre)}"),
    )
    return Derivation(
        title="The gradient each path length carries",
        key="gradient-paths/weighted",
        steps=steps,
        notes=(f"At {VEIT_DEPTH} blocks the pre-LN mean is {pre.mean:.4g} against "
               f"{plain.path_mean:.4g} for the counts.",),
    )


def _mean_length(g: PathGradients) -> sympy.Expr:
    """The closed form of ``g``'s gradient-weighted mean length, which the notes' blocks have."""
    closed = g.closed_form
    if closed is None:  # pragma: no cover (only the blocks summed in closed form are described)
        raise AssertionError(f"{g.config.block.text}: no closed form of the mean length")
    return closed[0]


def asymptote(g: PathGradients) -> str:
    """The mean length's large-K form with its constant, in words and math: ``about
    $\\ln K + \\gamma_E - 1 \\approx \\ln K - 0.42$ for large $K$`` (derived by SymPy's limit
    of the closed form minus ln K; gamma_E is Euler's constant).

    >>> asymptote(gradients("pre")).split("$")[1]
    '\\\\ln K + \\\\gamma_{E} - 1 \\\\approx \\\\ln K - 0.42'
    """
    constant = g.asymptote
    if constant is None:  # pragma: no cover (only the harmonic means are described)
        raise AssertionError(f"{g.config.block.text}: no ln K asymptote")
    euler = shown("γ_E", "\\gamma_{E}")
    tail = latex(constant.xreplace({sympy.EulerGamma: euler}))
    tail = f"- {tail[1:].lstrip()}" if tail.startswith("-") else f"+ {tail}"
    value = float(constant)
    sign = "-" if value < 0 else "+"
    return (f"about $\\ln K {tail} \\approx \\ln K {sign} {abs(value):.2f}$ for large $K$, "
            "with Euler's constant $\\gamma_E$")


def _row_name(name: str) -> str:
    """A preset's name with the values its symbols take: ``skipinit ($\\alpha = 1/2$)``."""
    from derive.blocks.presets import PRESETS

    values = PRESETS[name].check
    if not values:
        return name
    shown_values = ", ".join(f"${latex(sympy.Symbol(k))} = {v}$" for k, v in values.items())
    return f"{name} ({shown_values})"


def binomial_share(p: sympy.Expr) -> sympy.Expr:
    """The share of length L when every block passes the same share p through its branch:
    binomial(K, L) p^L (1 - p)^(K - L), with the powers of one base combined.

    >>> binomial_share(sympy.Rational(1, 2))
    binomial(K, L)/2**K
    """
    from derive.derivation.symbols import K

    length = sympy.Symbol("L")
    return sympy.powsimp(sympy.binomial(K, length) * p**length * (1 - p) ** (K - length),
                         force=True)


def _length_table() -> Table:
    from derive.derivation.symbols import K

    low, high = VEIT_WINDOW
    rows = []
    for name in TABLE_BLOCKS:
        g = gradients(name)
        closed = g.closed_form
        mean = "—" if closed is None else math(readable(closed[0]))
        if len(mean) > SHORT:
            mean = "—"
        _, window = g.window(low, high)
        rows.append((_row_name(name), math(_polynomial(g)), mean,
                     f"{g.mean:.3g} ± {g.spread:.2g}",
                     f"{100 * window:.3g}%"))
    from derive.pathsums.block_paths import branch_counts

    plain = gradients("none")
    paths, _ = plain.window(low, high)
    counting = branch_counts(plain.config.block)
    counted = ascending([sympy.Integer(c) for c in counting])
    per_block = sympy.Rational(sum(i * c for i, c in enumerate(counting)), sum(counting))
    rows.append(("(path counts)", math(counted), math(per_block * K),
                 f"{plain.path_mean:.3g} ± {plain.path_spread:.2g}",
                 f"{100 * paths:.3g}%"))
    return Table(
        f"The gradient-weighted path length, He initialization, ReLU, $q_0 = 1$: block $k$'s "
        "gain split by branches "
        f"$G_k(t)$, the mean length in closed form, its value ± spread at $K = {VEIT_DEPTH}$, "
        f"and the share of $\\mathbb{{E}}[(\\partial L/\\partial x)^2]$ on lengths {low} to "
        f"{high}",
        ("block", "$G_k(t)$", "mean length", f"$K = {VEIT_DEPTH}$",
         f"lengths {low}–{high}"), tuple(rows))


#: The weight-gradient table's rows: (block, final LayerNorm).
WEIGHT_ROWS = (("post", False), ("post", True), ("pre", False), ("pre", True),
               ("none", True), ("rescaled", False))
#: The depth of the weight-gradient table's values.
WEIGHT_DEPTH = 50


def _weights_table() -> Table:
    rows = []
    for name, final in WEIGHT_ROWS:
        w = he_relu(name, final).weights
        last = w.last
        rows.append((name, "yes" if final else "no",
                     "—" if last is None else math(readable(last.rhs)), w.growth,
                     number(w.profile(WEIGHT_DEPTH)[-1])))
    return Table("Weight gradients of the last block, $w_K = E[(\\partial L/\\partial W)^2]$ "
                 f"per entry, He + ReLU (value at $K = {WEIGHT_DEPTH}$, $q_0 = 1$)",
                 ("block", "final LN", "$w_K$", "as $K$ grows", f"$w_{{{WEIGHT_DEPTH}}}$"),
                 tuple(rows))


@dataclass(frozen=True)
class WeightedParts:
    """What the weighted path sum adds to the gradient-paths note."""

    key_results: tuple[str, ...]
    derivation: Derivation
    table: Table
    weights: Table
    cards: tuple[Card, ...]


@functools.cache
def weighted_parts() -> WeightedParts:
    """Key results, derivation, tables and cards of the weighted path sum."""
    from derive.derivation.symbols import K, q
    from derive.recursions.block_maps import Q_PREV

    plain, pre, skip = gradients("none"), gradients("pre"), gradients("skipinit")
    bn = gradients("bn-first")
    low, high = VEIT_WINDOW
    _, bn_share = bn.window(low, high)
    paths, plain_share = plain.window(low, high)
    _, pre_share = pre.window(low, high)
    post_last, pre_last = last_weight("post", True), last_weight("pre", True)
    pre_q = he_relu("pre", True).forward.solved.rhs
    pre_q_prev = pre_q.xreplace({K: sympy.Symbol("k") - 1})
    skip_gain, branch_gain = (latex(sympy.factor(c).xreplace({Q_PREV: q(sympy.Symbol("k") - 1)}))
                    for c in pre.polynomial)
    post_q = he_relu("post", True).forward.solved.rhs
    if isinstance(post_q, sympy.Piecewise):  # q_0 before the first block, then LN's gamma^2
        post_q = post_q.args[-1].expr
    mean_pre = latex(_mean_length(pre))
    final = final_norm()
    about = asymptote(pre)
    skip_p = skip.per_block[0]
    results = (
        "At initialization the paths through $L$ branches carry the share "
        "$[t^L] \\prod_k G_k(t)/G_k(1)$ of $\\mathbb{E}[(\\partial L/\\partial x)^2]$: block "
        "$k$'s gain splits into its skip's part and its branch's, $G_k(t) = s_k + b_k t$, "
        "and different paths are uncorrelated.",
        f"Without norm (He, ReLU) each branch passes as much gradient as its skip, so the "
        f"gradient's lengths are binomial like the counts: at {VEIT_DEPTH} blocks the paths "
        f"of length {low} to {high} are {100 * paths:.2g}% of the paths and carry "
        f"{100 * plain_share:.2g}% of the gradient. Post-LN and the $1/\\sqrt{{2}}$ "
        "rescaling scale skip and branch alike and keep this.",
        f"Pre-LN shortens the effective paths: block $k$'s branch passes ${branch_gain}$ of "
        f"the gradient against ${skip_gain}$ through its skip, and $q_{{k-1}}$ grows, so the "
        f"gradient-weighted mean length is ${mean_pre}$ ({pre.mean:.3g} at "
        f"{VEIT_DEPTH} blocks, against {plain.path_mean:.3g} for the counts), {about}; "
        f"lengths {low} "
        f"to {high} carry {100 * pre_share:.2g}% of its gradient. A scalar $\\alpha$ on the "
        f"branch gives binomial$(K, {latex(skip_p)})$ for $\\alpha = 1/2$.",
        f"Veit et al. (2016) measured in a trained ResNet of {VEIT_DEPTH} blocks, with "
        f"BatchNorm in its branches, that most of the gradient comes from paths of length "
        f"{low} to {high}, {100 * paths:.2g}% of all paths. At initialization BatchNorm "
        f"first in the branch already shortens them (mean {bn.mean:.3g}; lengths {low} to "
        f"{high} carry {100 * bn_share:.2g}% of the gradient), since it divides the "
        "branch's gradient by the growing batch variance.",
        f"The last block's weight gradient stays of order one with post-LN "
        f"($w_K = {latex(post_last)}$) but shrinks like $1/K$ with pre-LN and a final "
        f"LN ($w_K = {latex(pre_last)}$), the result of Xiong et al. (2020): "
        f"{final.sentence()}.",
    )
    define = "(block $k$'s skip passes gain $s_k$, its branch $b_k$)"
    cards = (
        card("gradient-paths/weighted-share",
             "At initialization, what share of $\\mathbb{E}[(\\partial L/\\partial x)^2]$ do "
             f"the paths through $L$ branches carry {define}?",
             "$[t^L] \\prod_k (s_k + b_k t)/(s_k + b_k)$: different paths are uncorrelated, "
             "and a path's gradient is the product of its factors' gains"),
        card("gradient-paths/short-share",
             f"He init, ReLU, {VEIT_DEPTH} blocks: what share of the gradient do the paths of "
             f"length {low} to {high} carry at initialization, without norm and with pre-LN?",
             f"No norm: {100 * plain_share:.2g}%, their share of the paths (every path "
             f"carries alike); pre-LN: {100 * pre_share:.2g}%"),
        card("gradient-paths/pre-ln-shorter",
             "Why does pre-LN shorten the effective gradient paths at initialization "
             "(He, ReLU)?",
             f"Block $k$'s branch passes ${branch_gain}$ of the gradient against ${skip_gain}$ "
             "through the "
             f"skip, and $q_{{k-1}} = {latex(pre_q_prev)}$ grows: mean length ${mean_pre}$ "
             f"($q_0 = 1$), {about}"),
        card("gradient-paths/weights-final-ln",
             "Why does the last block's weight gradient shrink like $1/K$ with pre-LN and a "
             "final LN, but not with post-LN?",
             "With pre-LN the final LN scales the gradient's second moment by "
             f"${latex(final.scale)}$ (the gradient by $1/\\sqrt{{q_K}}$), so "
             f"$w_K = {latex(final.pre_last)}$; post-LN keeps $q_k = {latex(post_q)}$ and "
             f"$w_K = {latex(final.post_last)}$ (Xiong et al. 2020)"),
    )
    return WeightedParts(results, _derivation(), _length_table(), _weights_table(), cards)
