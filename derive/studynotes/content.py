"""The first sections of the notes, derived from :mod:`derive.studynotes.concepts`: the
residual block (dropout's factor, its derivative), layer norm, and pre- against
post-norm. Each opens with its key results (each with its reason), states its
assumptions once, and holds derivations, tables and cards, all made by the code.

>>> residual_block_section().key
'residual-block'
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step
from derive.rendering.render import Figure, Table
from derive.studynotes.parts import (
    Section,
    card,
    final_norm,
    he_relu,
    number,
)


def residual_block_section() -> Section:
    """The residual-block section: the block, dropout's factor, its derivative."""
    from derive.studynotes.concepts import p, residual_block, u

    rb = residual_block()
    factor = sympy.Pow(1 - p, -1, evaluate=False)  # as the book writes it, checked:
    if sympy.simplify(rb.steps[2].rhs / u**2 - factor) != 0:  # pragma: no cover
        raise AssertionError("dropout's factor")
    return Section(
        "residual-block", "Residual block",
        key_results=(
            "$\\operatorname{RB}(x) = x + F(x)$ has derivative $1 + F'(x)$: the skip path's "
            "$1$ reaches every earlier block, whatever the branch does.",
            "Inverted dropout scales a branch's second moment by $1/(1 - p)$ and keeps its "
            "mean: it keeps a unit with probability $1 - p$ and divides it by $1 - p$.",
            "A stack of blocks sums its gradient over [[gradient-paths|gradient paths]].",
        ),
        derivations=(rb,), links=("gradient-paths", "pre-vs-post-norm"),
        cards=(
            card("residual-block/definition",
                 "Residual block with dropout on the branch $F$: $\\operatorname{RB}(x) = ?$",
                 rb.steps[0]),
            card("residual-block/dropout",
                 "Inverted dropout with rate $p$: by what factor does it scale a unit's "
                 "second moment?",
                 f"${latex(factor)}$: a kept unit is divided by $1 - p$"),
            card("residual-block/derivative",
                 "Derivative of $\\operatorname{RB}(x) = x + F(x)$ for a scalar $x$?",
                 f"${latex(_result(rb).rhs)}$: the $1$ is the skip path"),
            card("residual-block/why-gradient",
                 "Why do residual connections help the gradient reach the first blocks?",
                 _why_gradient(_result(rb).rhs))))


def _result(derivation: Derivation) -> Step:
    """The step ``derivation`` ends with: each derivation of the concepts has one."""
    if derivation.result is None:  # pragma: no cover (the concepts' derivations changed)
        raise AssertionError(f"{derivation.key}: no result")
    return derivation.result


def _why_gradient(slope: sympy.Expr) -> str:
    """Why residual connections help the gradient, from the derived block derivative and the
    path count."""
    from derive.studynotes.paths import counts

    total = counts()["total"]
    return (f"Each block's derivative is ${latex(slope)}$, so $\\partial y/\\partial x$ is "
            f"a sum over ${latex(total)}$ paths, one of them the identity: the gradient "
            "reaches $x$ unchanged along it, whatever the branches' Jacobians do, instead "
            "of through a product of $K$ Jacobians only.")


def layer_norm_section() -> Section:
    """The layer-norm section: its definition, second moment, Jacobian and gradient factor."""
    from derive.studynotes.concepts import layer_norm, sigma, width

    ln = layer_norm()
    q = sympy.Symbol("q", positive=True)
    wide = sympy.limit(ln.steps[-1].rhs, width, sympy.oo).subs(sigma, sympy.sqrt(q))
    return Section(
        "layer-norm", "Layer norm",
        key_results=(
            "$\\operatorname{LN}$ output has second moment $\\gamma^2$ ($\\beta = 0$) whatever "
            "its input's scale: it divides by $\\sigma$.",
            "Its Jacobian is $(\\gamma/\\sigma) P$, $P$ a projection that removes two "
            "directions, so it scales a gradient's second moment by $\\gamma^2/q$ for a wide "
            "zero-mean input of second moment $q$: every backward recursion through LN uses "
            "this factor.",
            "Where it sits is the subject of [[pre-vs-post-norm|pre- against post-norm]].",
        ),
        derivations=(ln,), links=("pre-vs-post-norm",),
        cards=(
            card("layer-norm/definition",
                 "LayerNorm of unit $i$, with mean $\\mu$ and standard deviation $\\sigma$ "
                 "over the $n$ units, gain $\\gamma$, shift $\\beta$?", ln.steps[2]),
            card("layer-norm/moment",
                 "Second moment of the LayerNorm output ($\\beta = 0$, gain $\\gamma$), for an "
                 "input of any scale?", f"${latex(_result(ln).rhs)}$: LN divides by $\\sigma$"),
            card("layer-norm/jacobian",
                 "Jacobian of LayerNorm over $n$ units, with $\\hat x = (x - \\mu)/\\sigma$?",
                 f"${latex(ln.steps[6].rhs)}$"),
            card("layer-norm/gradient",
                 "By what factor does LayerNorm scale a gradient's second moment, for a wide "
                 "zero-mean input of second moment $q$?",
                 f"${latex(wide)}$: its Jacobian is $(\\gamma/\\sigma) P$ and $\\sigma^2 = q$")))


def pre_vs_post_section(blocks: tuple[str, ...], depth: int) -> Section:
    """The pre- against post-norm section, its table at ``depth`` blocks."""
    from derive.inputs.choices import GRID_ACTIVATIONS
    from derive.recursions.analysis import variance
    from derive.studynotes.concepts import pre_vs_post
    from derive.studynotes.variance import ACTIVATION_NAMES, gains, growth, power_law_exponent

    pp = pre_vs_post()
    rows = []
    for activation in GRID_ACTIVATIONS:
        g, G = gains("he", activation)
        pre, post = variance("he", activation, "pre"), variance("he", activation, "post")
        rows.append((ACTIVATION_NAMES[activation], number(g), number(G),
                     f"{power_law_exponent('he', activation):.3g}", growth(pre.backward.growth),
                     f"{(1 + float(G)) / (1 + float(g)):.4g}", growth(post.backward.growth),
                     number(pre.backward.at(depth)), number(post.backward.at(depth))))
    table = Table(
        f"He initialization: the gradient ratio $d_0/d_K$ with pre-LN and post-LN ($q_0 = 1$, "
        f"values at $K = {depth}$)",
        ("activation", "$g$", "$G$", "$G/g$", "pre-LN", "post-LN factor $(1 + G)/(1 + g)$",
         "post-LN", f"pre-LN $K = {depth}$", f"post-LN $K = {depth}$"), tuple(rows))
    tanh, gelu = power_law_exponent("he", "tanh"), power_law_exponent("he", "gelu")
    return Section(
        "pre-vs-post-norm", "Pre vs post norm",
        key_results=(
            "Without norm $q_K = q_0 (1 + g)^K$: every block multiplies by $1 + g$, since "
            "the branch adds $g q_{k-1}$, uncorrelated with the skip path.",
            "Pre-LN adds $g\\gamma^2$ per block, $q_K = q_0 + K g \\gamma^2$: the branch sees "
            "LN's fixed second moment $\\gamma^2$.",
            "Pre-LN's gradient ratio grows as $K^{G/g}$: linearly only when the backward gain "
            f"$G$ equals the forward gain $g$ (ReLU, leaky ReLU, linear); $K^{{{tanh:.2f}}}$ "
            f"for tanh and $K^{{{gelu:.2f}}}$ for GELU under He initialization.",
            "Post-LN keeps $q_k = \\gamma^2$ and changes the gradient by $(1 + G)/(1 + g)$ per "
            "block, but it loses the identity path: the input's share of $q_K$ is "
            "$(1 + g)^{-K}$, since each LN rescales the skip path.",
            final_norm().reconciliation(),
        ),
        assumptions=pp.assumptions,
        intro=("The gains of each configuration, and tables of every one, are in "
               "[[variance|variance under initialization]]; the LayerNorm Jacobian used "
               "backward is derived in [[layer-norm|layer norm]]. The figure below draws "
               "the gradient ratio for ReLU, tanh and GELU.",),
        derivations=(replace(pp, assumptions=()),), tables=(table,),
        figures=(Figure("gradient-depth", "The gradient ratio $d_0/d_K$ against depth $K$, "
                        "He initialization, pre-LN and post-LN, one line per activation "
                        "(log scale)."),),
        links=("layer-norm", "residual-block", "variance"),
        cards=(
            card("pre-vs-post-norm/none",
                 "No norm: $q_K = E[h_K^2]$ after $K$ blocks whose branch has forward gain $g$?",
                 pp.steps[1]),
            card("pre-vs-post-norm/pre",
                 "Pre-LN: $q_K = E[h_K^2]$ after $K$ blocks, branch gain $g$, LN gain $\\gamma$?",
                 pp.steps[3]),
            card("pre-vs-post-norm/post",
                 "Post-LN: $q_k = E[h_k^2]$ after block $k \\ge 1$ (LN gain $\\gamma$)?",
                 f"${latex(pp.steps[4].rhs)}$: LN fixes it"),
            card("pre-vs-post-norm/gradient",
                 "Pre-LN, $d_k = E[(\\partial L/\\partial h_k)^2]$: the gradient ratio "
                 "$d_0/d_K$ when the branch's backward gain $G$ equals its forward gain $g$?",
                 pp.result),
            card("pre-vs-post-norm/pros-cons",
                 "Pre-LN against post-LN at initialization (He, ReLU): what does each keep, "
                 "and what does each lose?", _pros_cons())))


def _pros_cons() -> str:
    """The pros and cons of pre- and post-LN, each a derived value."""
    from derive.derivation.symbols import K

    post, pre = he_relu("post"), he_relu("pre")
    share = sympy.Pow(2, -K)  # post-LN: each LN halves the skip path's share (1 + g = 2)
    if sympy.simplify(share - (1 + gains_he_relu()) ** -K) != 0:  # pragma: no cover
        raise AssertionError("post-LN input share")
    final = final_norm()
    post_ratio = post.backward.solved.rhs
    if isinstance(post_ratio, sympy.Piecewise):
        post_ratio = post_ratio.args[-1].expr
    return (f"Pre-LN keeps the identity path (input share $q_0/q_K$, $q_K = "
            f"{latex(pre.forward.solved.rhs)}$) and, with a final LN, small gradients "
            f"near the output ($w_K = {latex(final.pre_last)}$), but $d_0/d_K = "
            f"{latex(pre.backward.solved.rhs)}$ grows. Post-LN fixes $q_k = 1$ and "
            f"$d_0/d_K = {latex(post_ratio)}$, but loses the input (share ${latex(share)}$) "
            f"and keeps $w_K = {latex(final.post_last)}$ (Xiong et al. 2020).")


def gains_he_relu() -> sympy.Expr:
    """The forward gain g of a He + ReLU branch (computed)."""
    from derive.studynotes.variance import gains

    return gains("he", "relu")[0]
