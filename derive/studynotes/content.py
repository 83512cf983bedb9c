"""What the study notes hold: one section a concept, its figures and its Anki cards.

Each section opens with its key results (each with its reason), states its
assumptions once, and holds derivations, tables, figures and cards, all made
by the code: :mod:`derive.studynotes.concepts`, :mod:`derive.studynotes.paths` and
:mod:`derive.studynotes.variance`. :class:`derive.studynotes.options.NotesOptions` choose
the concepts, blocks and depths, the note names (and wikilink targets), the
cards' tags and style. The templates only lay it out.

>>> data = content(2)
>>> [s.key for s in data.sections][-3:]
['gradient-paths', 'variance', 'block-variants']
>>> [s.title for s in content(2, NotesOptions.of(names={"variance": "nn variance"})).sections][-2]
'nn variance'
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sympy

from derive.deck.cards import Card
from derive.derivation.printing import latex
from derive.rendering.render import Figure, Table
from derive.studynotes.options import NotesOptions
from derive.studynotes.parts import (
    Section,
    card,
    final_norm,
    he_relu,
    number,
    plural,
    with_links,
)
from derive.studynotes.variance import SIM


@dataclass(frozen=True)
class Content:
    """All sections and the options they were made with; figures come from :func:`figures`."""

    depth: int
    sections: tuple[Section, ...]
    options: NotesOptions = field(default_factory=NotesOptions)

    @property
    def cards(self) -> list[Card]:
        """Every card, in section order."""
        return [card for section in self.sections for card in section.cards]

    @property
    def context(self) -> dict[str, Any]:
        """The variables the notes templates see."""
        return {"title": "Deep residual networks: derived study notes", "depth": self.depth,
                "sections": self.sections, "sim": dict(SIM)}


def _residual_block() -> Section:
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
                 f"${latex(rb.result.rhs)}$: the $1$ is the skip path"),
            card("residual-block/why-gradient",
                 "Why do residual connections help the gradient reach the first blocks?",
                 _why_gradient(rb.result.rhs))))


def _why_gradient(slope: sympy.Expr) -> str:
    """Why residual connections help the gradient, from the derived block derivative and the
    path count."""
    from derive.studynotes.paths import counts

    total = counts()["total"]
    return (f"Each block's derivative is ${latex(slope)}$, so $\\partial y/\\partial x$ is "
            f"a sum over ${latex(total)}$ paths, one of them the identity: the gradient "
            "reaches $x$ unchanged along it, whatever the branches' Jacobians do, instead "
            "of through a product of $K$ Jacobians only.")


def _layer_norm() -> Section:
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
                 "input of any scale?", f"${latex(ln.result.rhs)}$: LN divides by $\\sigma$"),
            card("layer-norm/jacobian",
                 "Jacobian of LayerNorm over $n$ units, with $\\hat x = (x - \\mu)/\\sigma$?",
                 f"${latex(ln.steps[6].rhs)}$"),
            card("layer-norm/gradient",
                 "By what factor does LayerNorm scale a gradient's second moment, for a wide "
                 "zero-mean input of second moment $q$?",
                 f"${latex(wide)}$: its Jacobian is $(\\gamma/\\sigma) P$ and $\\sigma^2 = q$")))


def _pre_vs_post(blocks: tuple[str, ...], depth: int) -> Section:
    from derive.inputs.choices import ACTIVATIONS
    from derive.recursions.analysis import variance
    from derive.studynotes.concepts import pre_vs_post
    from derive.studynotes.variance import ACTIVATION_NAMES, gains, growth, power_law_exponent

    pp = pre_vs_post()
    rows = []
    for activation in ACTIVATIONS:
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
    from derive.blocks.config import K

    post, pre = he_relu("post"), he_relu("pre")
    share = sympy.Pow(2, -K)  # post-LN: each LN halves the skip path's share (1 + g = 2)
    if sympy.simplify(share - (1 + gains_he_relu()) ** -K) != 0:  # pragma: no cover
        raise AssertionError("post-LN input share")
    final = final_norm()
    post_ratio = post.backward.closed_form.rhs
    if isinstance(post_ratio, sympy.Piecewise):
        post_ratio = post_ratio.args[-1].expr
    return (f"Pre-LN keeps the identity path (input share $q_0/q_K$, $q_K = "
            f"{latex(pre.forward.closed_form.rhs)}$) and, with a final LN, small gradients "
            f"near the output ($w_K = {latex(final.pre_last)}$), but $d_0/d_K = "
            f"{latex(pre.backward.closed_form.rhs)}$ grows. Post-LN fixes $q_k = 1$ and "
            f"$d_0/d_K = {latex(post_ratio)}$, but loses the input (share ${latex(share)}$) "
            f"and keeps $w_K = {latex(final.post_last)}$ (Xiong et al. 2020).")


def gains_he_relu() -> sympy.Expr:
    """The forward gain g of a He + ReLU branch (computed)."""
    from derive.studynotes.variance import gains

    return gains("he", "relu")[0]


def section(key: str, depth: int, options: NotesOptions | None = None) -> Section:
    """The section of concept ``key``, named, linked and its cards tagged as ``options`` say.

    >>> section("residual-block", 2).title, len(section("layer-norm", 2).cards)
    ('Residual block', 4)
    """
    from derive.studynotes.paths import paths_section
    from derive.studynotes.variance import variance_section
    from derive.studynotes.variants import variants_section

    options = NotesOptions() if options is None else options
    makers = {
        "residual-block": _residual_block,
        "layer-norm": _layer_norm,
        "pre-vs-post-norm": lambda: _pre_vs_post(options.blocks, options.depths[0]),
        "gradient-paths": lambda: paths_section(depth),
        "variance": lambda: variance_section(options.blocks, options.depths),
        "block-variants": variants_section,
    }
    chosen = set(options.concepts)

    def name(concept: str) -> str | None:
        return options.name(concept) if concept in chosen else None

    made = with_links(makers[key](), name)
    cards = tuple(replace(c, tags=(*c.tags, *options.tags), style=options.style)
                  for c in made.cards)
    return replace(made, title=options.name(key), cards=cards)


@functools.cache
def content(depth: int, options: NotesOptions | None = None) -> Content:
    """Sections and cards for a path expansion of ``depth`` blocks, as ``options`` choose.

    >>> len(content(2).cards) > 10
    True
    """
    options = NotesOptions() if options is None else options
    return Content(depth, tuple(section(key, depth, options) for key in options.concepts),
                   options)


def figure_specs(depth: int, options: NotesOptions | None = None,
                 concepts: Iterable[str] | None = None) -> dict[str, tuple]:
    """What each figure draws: stem -> (plotting function's name, its arguments).

    The figures of the chosen concepts (of those in ``concepts`` if given); the
    data come from the derivations and the simulation, and drawing them is
    :func:`derive.rendering.plots.draw`.

    >>> sorted(figure_specs(2))[:3]
    ['block-variants', 'gradient-depth', 'gradient-lengths']
    >>> sorted(figure_specs(2, concepts=["gradient-paths"]))
    ['gradient-lengths', 'path-lengths']
    """
    from derive.pathsums.expansion import path_lengths
    from derive.studynotes.variance import BLOCK_NAMES, curves, simulated

    options = NotesOptions() if options is None else options
    chosen, deep = set(options.concepts), options.depth
    if concepts is not None:
        chosen &= set(concepts)
    specs: dict[str, tuple] = {}
    if "gradient-paths" in chosen:
        from derive.studynotes.path_gradients import VEIT_DEPTH, series

        specs["path-lengths"] = ("path_length_figure", (
            dict(path_lengths(depth, "x")), f"paths from x to y, {plural(depth, 'block')}"), {})
        specs["gradient-lengths"] = ("gradient_length_figure", (
            series(), f"{VEIT_DEPTH} blocks, He initialization, ReLU: paths and gradient by "
            "length"), {})
    if "pre-vs-post-norm" in chosen:
        specs["gradient-depth"] = ("curves_figure", (
            {f"{BLOCK_NAMES[n]}: d₀/d_K": curves(n, deep, "backward") for n in ("pre", "post")},
            "He initialization: gradient ratio against depth K"), {"xlabel": "depth K"})
    if "variance" in chosen:
        specs["signal-depth"] = ("curves_figure", (
            {f"{BLOCK_NAMES[n]}: qₖ": curves(n, deep, "forward") for n in options.blocks},
            "He initialization: second moment qₖ against depth"), {})
    if "block-variants" in chosen:
        from derive.studynotes.variants import profiles

        specs["block-variants"] = ("variants_figure", (
            profiles(), "He initialization, ReLU: every preset"), {})
    if "variance" in chosen:
        derived, measured = simulated(options.blocks)[1]["he"]
        specs["simulation-check"] = ("moments_figure", (
            {n: tuple([float(v) for v in part] for part in pair) for n, pair in derived.items()},
            "He initialization, ReLU", measured), {})
    return specs


@functools.cache
def figures(depth: int, options: NotesOptions | None = None) -> dict[str, dict[str, bytes]]:
    """The figures' bytes: stem -> {"png": ..., "pdf": ...}, for the sections chosen.

    >>> sorted(figures(2))[2:]
    ['gradient-lengths', 'path-lengths', 'signal-depth', 'simulation-check']
    """
    from derive.rendering.plots import draw

    return draw(figure_specs(depth, options))


def obsidian_notes(data: Content, templates: Path | None = None) -> dict[str, str]:
    """One Obsidian note a section (title -> text), its cards in an ``# anki`` region.

    >>> notes = obsidian_notes(content(2))
    >>> sorted(notes)[0], "[[" in notes["Residual block"]
    ('Gradient paths', True)
    """
    from derive.rendering.render import render_template
    from derive.vault.regions import cards_region, region

    out = {}
    for section in data.sections:
        body = render_template("obsidian.md.j2", {"section": section, "depth": data.depth,
                                                  "sim": dict(SIM)}, templates)
        out[section.title] = region("note", body) + "\n# anki\n\n" + cards_region(section.cards)
    return out
