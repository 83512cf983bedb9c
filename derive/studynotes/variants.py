"""The note on residual-block variants from the literature.

Every preset's block, its source, its recursions and closed forms (or growth) come
from ``derive.variance(block=...)``; the figure draws their profiles, and the weight
gradients of post-LN and pre-LN (their table is in the gradient-paths note) come from
``.weights``.

>>> section = variants_section()
>>> section.key, len(section.tables)
('block-variants', 1)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from derive.derivation.printing import latex
from derive.rendering.render import Figure, Table
from derive.studynotes.parts import Section, card, final_norm, he_relu, last_weight, readable

if TYPE_CHECKING:  # pragma: no cover
    from derive.recursions.recursion import Recursion

#: The depth of the figure, and of the values in the table.
DEPTH = 50
#: A closed form longer than this (LaTeX characters) is given by its growth instead.
SHORT = 60


def _form(recursion: Recursion) -> str:
    closed = recursion.closed_form
    growth = recursion.growth.split(" (")[0]
    if closed is None:
        return f"{growth} (iterated)"
    shown = latex(readable(closed.rhs))
    return f"${shown}$" if len(shown) <= SHORT else growth


@functools.cache
def profiles() -> dict[str, tuple[list[float], list[float]]]:
    """He + ReLU: q_k and d_0/d_k for k = 0..DEPTH, per preset (symbols at their check
    values, as the simulation runs them)."""
    from derive.blocks.presets import PRESETS
    from derive.simulation.networks import checkable

    out = {}
    for name in PRESETS:
        a = he_relu(checkable(name))
        out[PRESETS[name].name] = (a.forward.iterated(DEPTH),
                                   a.backward.iterated(DEPTH))
    return out


def _variants_table() -> Table:
    from derive.blocks.presets import PRESETS

    rows = []
    for name, preset in PRESETS.items():
        a = he_relu(name)
        rows.append((name, f"`{preset.expression}`", preset.source, _form(a.forward),
                     _form(a.backward)))
    return Table("Every preset under He initialization and ReLU ($K \\ge 1$; symbols kept)",
                 ("preset", "block", "source", "$q_K$", "$d_0/d_K$"), tuple(rows))


def variants_section() -> Section:
    """The note: key results with reasons, two tables, one figure, cards."""
    rescaled, bn, skip = he_relu("rescaled"), he_relu("bn-first"), he_relu("skipinit")
    nf, fixup = he_relu("nf-resnet"), he_relu("fixup")
    post_last, pre_last = last_weight("post", True), last_weight("pre", True)
    if bn.cross is None:  # pragma: no cover (a BatchNorm couples the inputs of a batch)
        raise AssertionError("bn-first: no recursion of the covariance c_k")
    cross = bn.cross.solved.rhs
    results = (
        "Rescaling the sum, $(x + F(x))/\\sqrt{2}$ (UDL 11.3), keeps "
        f"$q_K = {latex(rescaled.forward.solved.rhs)}$: the branch adds as much second moment "
        "as the skip, and the factor halves the sum.",
        f"BatchNorm first in the branch (UDL 11.4.1) gives "
        f"$q_K = {latex(bn.forward.solved.rhs)}$"
        ": BN hands the branch unit variance whatever $q_{k-1}$, so each block adds one unit. "
        "Its gradient is not LayerNorm's: BN divides by the batch variance "
        f"$q_{{k-1}} - c_{{k-1}}$, where $c_K = {latex(cross)}$ is what two inputs share.",
        f"A scalar on the branch (SkipInit, ReZero) gives "
        f"$q_K = {latex(skip.forward.solved.rhs)}$"
        ": small $\\alpha$ keeps the stack near the identity.",
        f"NF-ResNets divide the branch input by its expected std: "
        f"$q_K = {latex(nf.forward.solved.rhs)}$, linear growth without normalization.",
        f"Fixup's zero last layer makes every block the identity at initialization: "
        f"$q_K = {latex(fixup.forward.solved.rhs)}$.",
        f"The last block's weight gradient stays of order one with post-LN "
        f"($w_K = {latex(post_last)}$) but shrinks like $1/K$ with pre-LN and a final "
        f"LN ($w_K = {latex(pre_last)}$), the result of Xiong et al. (2020): "
        f"{final_norm().sentence()} (the table is in [[gradient-paths|gradient paths]]).",
    )
    cards = (
        card("variants/rescaled", "Why does $h_k = (h_{k-1} + f_k(h_{k-1}))/\\sqrt{2}$ keep "
             "$q_k = E[h_k^2]$ constant under He init with ReLU?",
             "The branch adds as much second moment as the skip (gain $g = 1$), so the sum "
             "has $2 q_{k-1}$, and $1/\\sqrt{2}$ squared halves it."),
        card("variants/bn-first", "BatchNorm first in the branch, $h_k = h_{k-1} + "
             "f_k(\\operatorname{BN}(h_{k-1}))$, He init, ReLU: $q_K = E[h_K^2]$?",
             bn.forward.solved),
        card("variants/skipinit", "SkipInit $h_k = h_{k-1} + \\alpha f_k(h_{k-1})$, He init, "
             "ReLU: $q_K = E[h_K^2]$ after $K$ blocks?", skip.forward.solved),
        card("variants/nf-resnet", "NF-ResNet $h_k = h_{k-1} + \\alpha f_k(h_{k-1}/"
             "\\operatorname{std}(h_{k-1}))$: $q_K = E[h_K^2]$?", nf.forward.solved),
        card("variants/bn-gradient", "Why is BatchNorm's backward gain not LayerNorm's "
             "$\\gamma^2/q$ at initialization?",
             "BN divides by each unit's batch std: the batch variance is $q - c$, the second "
             "moment less what two independent inputs of the batch share ($c$)."),
        card("variants/bn-changes", "What does BatchNorm first in the branch, "
             "$h_k = h_{k-1} + f_k(\\operatorname{BN}(h_{k-1}))$, change against no norm "
             "(He init, ReLU)?",
             f"$q_K = {latex(bn.forward.solved.rhs)}$ instead of "
             f"${latex(he_relu('none').forward.solved.rhs)}$: BN hands the branch unit "
             "variance, so each block adds one unit; backward it divides by the batch "
             f"variance $q - c$, with $c_K = {latex(cross)}$ shared by the batch."),
    )
    return Section(
        "block-variants", "Residual block variants",
        key_results=results,
        derivations=(),
        assumptions=(
            "He initialization, ReLU, the branch $F(h) = W \\phi(h)$; mean field at infinite "
            "width, zero-mean Gaussian inputs independent across the batch; gradient "
            "independence; BatchNorm with the statistics of an infinite batch.",
            "Symbols ($\\alpha$, $\\beta$, $p$) stay symbolic in the table; the figure gives "
            "them the values the simulation uses ($\\alpha = 1/2$ for SkipInit, "
            "$\\alpha = 1/5$ for NF-ResNets, $\\alpha = 2$, $\\beta = 1/2$ for DeepNorm, "
            "$p = 1/10$).",
        ),
        intro=("Each block is written as in the notes and derived from its primitives; "
               "`derive variance --block NAME` shows any of them step by step.",),
        tables=(_variants_table(),),
        figures=(Figure("block-variants",
                        f"Every preset, He initialization, ReLU: $q_k$ and $d_0/d_k$ against "
                        f"depth on log axes, {DEPTH} blocks."),),
        links=("variance", "pre-vs-post-norm", "gradient-paths"),
        cards=cards,
    )
