"""What the study notes hold: sections of derivations, tables, figures and Anki cards.

Everything here comes out of the derivations (:mod:`derive.concepts`,
:mod:`derive.pathsum`, :mod:`derive.variance_analysis`) and the simulation
(:mod:`derive.simulation`); the templates only lay it out.

>>> data = content(2)
>>> [s.key for s in data.sections]
['residual-block', 'layer-norm', 'pre-vs-post-norm', 'gradient-paths', 'variance']
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy

from derive.anki import Card
from derive.derivation import Derivation, Step
from derive.printing import latex
from derive.rendering import Figure, Table

#: Activations whose closed forms are compact enough for the summary table.
#: The simulation shown beside the derived values: small, so the notes stay fast.
SIM = {"depth": 6, "width": 256, "seeds": 4, "batch": 8}
#: Relative error within which a simulated value counts as agreeing (finite width).
TOLERANCE = 0.15
TABLE_ACTIVATIONS = ("linear", "relu", "leaky_relu")
#: The depth at which the table of every activation gives values.
TABLE_DEPTH = 10
#: Said of a growth read off the iterated recursion rather than a closed form.
ITERATED = " (from the iteration, no closed form)"
INITS = ("xavier", "he")


@dataclass(frozen=True)
class Section:
    """One concept: its derivations, tables, figures, prose, links and cards."""

    key: str
    title: str
    intro: tuple[str, ...]
    derivations: tuple[Derivation, ...]
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    links: tuple[str, ...] = ()
    cards: tuple[Card, ...] = ()


@dataclass(frozen=True)
class Content:
    """All sections, the figures' bytes (stem -> {"png", "pdf"}) and the template context."""

    depth: int
    sections: tuple[Section, ...]
    #: init -> (derived profiles by norm, simulated profiles by norm), for the figures
    profiles: dict[str, Any] = field(default_factory=dict)

    @property
    def cards(self) -> list[Card]:
        """Every card, in section order."""
        return [card for section in self.sections for card in section.cards]

    @property
    def context(self) -> dict[str, Any]:
        """The variables the notes templates see."""
        return {"title": "Deep residual networks: derived study notes", "depth": self.depth,
                "sections": self.sections, "sim": _sim()}


def _sim() -> dict[str, int]:
    return dict(SIM)


class _Shown(sympy.Symbol):
    """A symbol with its own LaTeX and text (display only, e.g. ``#paths``)."""

    def __new__(cls, tex: str, plain: str) -> _Shown:
        obj = super().__new__(cls, plain, commutative=False)
        obj._tex = tex
        return obj

    def __getnewargs_ex__(self) -> tuple[tuple[str, str], dict[str, Any]]:
        return (self._tex, self.name), {}

    def _latex(self, printer: Any) -> str:
        return self._tex

    def _sympystr(self, printer: Any) -> str:
        return self.name


def _m(expr: object) -> str:
    """Inline math of an expression, for prose and table cells."""
    return f"${latex(expr)}$"


def _late(expr: sympy.Expr) -> sympy.Expr:
    """The value for K >= 1 of a closed form that is piecewise in K = 0."""
    return expr.args[-1].expr if isinstance(expr, sympy.Piecewise) else expr


def _card(key: str, front: str, step: Step | sympy.Expr) -> Card:
    back = f"${step.latex()}$" if isinstance(step, Step) else _m(step)
    return Card(key, front, back)


@functools.cache
def _concepts() -> tuple[Section, ...]:
    from derive.concepts import layer_norm, pre_vs_post, residual_block

    rb, ln, pp = residual_block(), layer_norm(), pre_vs_post()
    return (
        Section("residual-block", "Residual block", (
            "A residual block adds a branch to an identity (skip) path; a stack of blocks "
            "sums its gradient over [[Gradient paths|gradient paths]].",), (rb,),
            links=("Gradient paths", "Pre vs post norm"),
            cards=(_card("residual-block/definition", "Residual block with dropout?", rb.steps[0]),
                   _card("residual-block/dropout", "Second moment after inverted dropout?",
                         rb.steps[2]),
                   _card("residual-block/derivative", "Derivative of a residual block?",
                         rb.result))),
        Section("layer-norm", "Layer norm", (
            "Layer normalization fixes the scale of its output, whatever its input's; where "
            "it sits is the subject of [[Pre vs post norm|pre- against post-norm]].",),
            (ln,), links=("Pre vs post norm",),
            cards=(_card("layer-norm/definition", "Layer norm of unit $i$?", ln.steps[2]),
                   _card("layer-norm/moment", "Second moment of layer norm output ($\\beta = 0$)?",
                         ln.result))),
        Section("pre-vs-post-norm", "Pre vs post norm", (
            "Where the norm sits decides how signal and gradient scale with depth; the "
            "general recursions below are specialized in [[Variance under initialization]].",),
            (pp,), figures=(Figure("moments-he-relu", "Derived (lines) and simulated (circles) "
                                   "second moments, He initialization, ReLU."),),
            links=("Layer norm", "Residual block", "Variance under initialization"),
            cards=(_card("pre-vs-post-norm/none", "Forward moment $q_K$ without norm?",
                         pp.steps[1]),
                   _card("pre-vs-post-norm/pre", "Forward moment $q_K$ with pre-norm?",
                         pp.steps[3]),
                   _card("pre-vs-post-norm/post", "Forward moment $q_k$ with post-norm?",
                         pp.steps[4]),
                   _card("pre-vs-post-norm/gradient", "Gradient ratio with pre-norm?",
                         pp.result))),
    )


def _paths(depth: int) -> Section:
    from derive.pathsum import PathSum, count_paths, path_lengths

    blocks, length = sympy.Symbol("N", integer=True, positive=True), sympy.Symbol("L")
    block = sympy.Symbol("k", integer=True, positive=True)
    total = sympy.summation(sympy.binomial(blocks, length), (length, 0, blocks))
    at_depth = total.subs(blocks, depth)
    if at_depth != count_paths(depth, "x"):  # pragma: no cover (two derivations disagree)
        raise AssertionError("the path count disagrees with derive.paths")
    paths_x = _Shown(r"\#\,\text{paths}(x \to y)", "#paths(x → y)")
    factors = sympy.Product(_Shown("I", "I") + _Shown("J_{k}", "Jₖ"), (block, 1, blocks))
    count = Derivation(
        "Input-to-output paths", "paths/input-output",
        ("$N$ residual blocks, $J_k$ the Jacobian of block $k$",),
        (Step(_Shown(r"\partial y/\partial x", "∂y/∂x"), factors,
              "chain rule: one factor (identity plus Jacobian) per block, later blocks on "
              "the left"),
         Step(paths_x, sympy.Sum(sympy.binomial(blocks, length), (length, 0, blocks)),
              "choose which $L$ of the $N$ blocks the path passes through"),
         Step(paths_x, total, "binomial theorem (SymPy summation)"),
         Step(paths_x, at_depth, f"at $N = {depth}$")),
        Step(paths_x, total))
    grad = PathSum(depth, 1, notation="udl")
    lengths_x, lengths_1 = path_lengths(depth, "x"), path_lengths(depth, 1)
    table = Table(
        f"Paths by length (number of Jacobians on the path), {depth} blocks",
        ("length $L$", "$\\partial y/\\partial x$", "$\\partial y/\\partial f_1$"),
        tuple((str(j), str(lengths_x[j]), str(lengths_1.get(j, 0))) for j in sorted(lengths_x)))
    return Section(
        "gradient-paths", "Gradient paths", (
            f"The derivative of the output of {depth} stacked "
            f"[[Residual block|residual blocks]] expands into a sum over paths: "
            f"${count_paths(depth, 1)}$ terms for $\\partial y/\\partial f_1$ "
            f"and ${count_paths(depth, 'x')}$ for $\\partial y/\\partial x$.",),
        (grad.derivation, count), tables=(table,),
        figures=(Figure("path-lengths", f"How many of the {count_paths(depth, 'x')} paths "
                        f"from input to output pass through $L$ of the {depth} blocks."),),
        links=("Residual block", "Variance under initialization"),
        cards=(Card(f"gradient-paths/terms-{depth}",
                    f"Terms of $\\partial y/\\partial f_1$ for {depth} blocks (book order)?",
                    f"${grad.latex()}$"),
               _card("gradient-paths/count", "Number of input-to-output paths for $N$ blocks?",
                     total)))


def _value(value: sympy.Expr) -> str:
    return _m(value) if value.is_Integer else f"{float(value):.4g}"


@functools.cache
def _variance() -> tuple[Section, dict[str, Any]]:
    from derive.model import NORMS
    from derive.simulation import simulate
    from derive.variance_analysis import variance

    sim = _sim()
    derivations: list[Derivation] = []
    cards: list[Card] = []
    closed_rows, sim_rows = [], []
    profiles: dict[str, Any] = {}
    for init in INITS:
        for norm in NORMS:
            analysis = variance(init, "relu", norm)
            derivations += [analysis.forward.derivation, analysis.backward.derivation]
            for r, what in ((analysis.forward, "q_K"), (analysis.backward, "d_0/d_K")):
                if r.closed_form is not None:
                    cards.append(_card(f"variance/{init}-relu-{norm}-{r.direction}",
                                       f"${what}$ under {init} init, ReLU, norm {norm}?",
                                       r.closed_form))
    for activation in TABLE_ACTIVATIONS:
        for init in INITS:
            for norm in NORMS:
                a = variance(init, activation, norm)
                f, b = a.forward.closed_form, a.backward.closed_form
                closed_rows.append((activation.replace("_", " "), init, norm,
                                    _m(_late(f.rhs)) if f is not None else a.forward.growth,
                                    _m(_late(b.rhs)) if b is not None else a.backward.growth,
                                    a.forward.growth))
    from derive.model import ACTIVATIONS

    every_rows = []
    for activation in ACTIVATIONS:
        for init in INITS:
            for norm in NORMS:
                a = variance(init, activation, norm)
                every_rows.append((
                    activation.replace("_", " "), init, norm,
                    a.forward.growth.replace(ITERATED, " †"),
                    a.backward.growth.replace(ITERATED, " †"),
                    _value(a.forward.at(TABLE_DEPTH)), _value(a.backward.at(TABLE_DEPTH))))
    for init in INITS:
        measured = {}
        for norm in NORMS:
            a = variance(init, "relu", norm)
            run = simulate(init, "relu", norm, **sim)
            measured[norm] = (run.forward, run.backward)
            for direction, derived, got in (
                ("forward", a.forward.at(sim["depth"]), run.forward[-1]),
                ("backward", a.backward.at(sim["depth"]), run.backward[0]),
            ):
                error = abs(got - float(derived)) / abs(float(derived))
                sim_rows.append((f"{init}, ReLU, {norm}", direction, str(sim["depth"]),
                                 _value(derived), f"{got:.4g}", f"{error:.1%}",
                                 "yes" if error <= TOLERANCE else "no"))
        profiles[init] = (
            {n: (variance(init, "relu", n).forward.profile(sim["depth"]),
                 variance(init, "relu", n).backward.profile(sim["depth"])) for n in NORMS},
            measured)
    tables = (
        Table("Closed forms ($K \\ge 1$), $q_0 = \\mathbb{E}[x^2]$, one linear layer and the "
              "activation per branch",
              ("activation", "init", "norm", "$q_K$", "$d_0/d_K$", "growth"),
              tuple(closed_rows)),
        Table(f"Every activation: growth with depth and values at $K = {TABLE_DEPTH}$, "
              "$q_0 = 1$ († read off the iterated recursion: no closed form exists)",
              ("activation", "init", "norm", "$q_K$ grows", "$d_0/d_K$ grows",
               f"$q_{{{TABLE_DEPTH}}}$", f"$d_0/d_{{{TABLE_DEPTH}}}$"),
              tuple(every_rows)),
        Table(f"Derived against simulated (width {sim['width']}, {sim['seeds']} seeds, "
              f"batch {sim['batch']}, $q_0 = 1$); agreement within {TOLERANCE:.0%}",
              ("network", "direction", "$K$", "derived", "simulated", "error", "agrees"),
              tuple(sim_rows)),
    )
    section = Section(
        "variance", "Variance under initialization", (
            "Forward second moments $q_k = \\mathbb{E}[h_k^2]$ and backward $d_k$ through "
            "[[Residual block|residual blocks]] at initialization, without norm, pre-norm "
            "and post-norm (see [[Pre vs post norm]]), derived step by step and checked "
            "against a simulation of finite networks.",
            "The table of closed forms covers the activations that are linear on half-lines "
            "(linear, ReLU, leaky ReLU). Tanh and GELU have no closed form without "
            "normalization: their recursions are iterated numerically, and the table of "
            "every activation gives their growth and values.",),
        tuple(derivations), tables=tables,
        figures=tuple(Figure(f"moments-{init}-relu",
                             f"Second moments against depth, {init} initialization, ReLU: "
                             "derived (lines) and simulated (circles).") for init in INITS),
        links=("Pre vs post norm", "Gradient paths"), cards=tuple(cards))
    return section, profiles


@functools.cache
def content(depth: int) -> Content:
    """Sections, cards and the profiles for the figures, for a path expansion of ``depth``.

    >>> len(content(2).cards) > 10
    True
    """
    variance_section, profiles = _variance()
    return Content(depth, (*_concepts(), _paths(depth), variance_section), profiles)


@functools.cache
def figures(depth: int) -> dict[str, dict[str, bytes]]:
    """The figures' bytes: stem -> {"png": ..., "pdf": ...}.

    >>> sorted(figures(2))
    ['moments-he-relu', 'moments-xavier-relu', 'path-lengths']
    """
    from derive.pathsum import path_lengths
    from derive.plots import path_length_figure

    images = dict(_moment_figures())
    images["path-lengths"] = path_length_figure(
        dict(path_lengths(depth, "x")), f"paths from x to y, {depth} blocks")
    return images


@functools.cache
def _moment_figures() -> tuple[tuple[str, dict[str, bytes]], ...]:
    from derive.plots import moments_figure

    return tuple(
        (f"moments-{init}-relu", moments_figure(derived, f"{init} initialization, ReLU", measured))
        for init, (derived, measured) in _variance()[1].items())


def obsidian_notes(data: Content, templates: Path | None = None) -> dict[str, str]:
    """One Obsidian note a section (title -> text), its cards in an ``# anki`` region.

    >>> notes = obsidian_notes(content(2))
    >>> sorted(notes)[0], "[[" in notes["Residual block"]
    ('Gradient paths', True)
    """
    from derive.regions import cards_region, region
    from derive.rendering import render_template

    out = {}
    for section in data.sections:
        body = render_template("obsidian.md.j2", {"section": section, "depth": data.depth,
                                                  "sim": _sim()}, templates)
        out[section.title] = region("note", body) + "\n# anki\n\n" + cards_region(section.cards)
    return out
