"""The registry of note sections: the one place where a section of the study notes is added.

Each :class:`NoteSection` names a section (its key, the concept a user
chooses, and its default note name), the function that builds it, the
process that derives it, and the function that works out its figures' data.
Everything else follows from :data:`SECTIONS`: which concepts exist and in
what order (:data:`derive.studynotes.options.CONCEPTS`), which sections the
second process derives (:func:`keys_of`), which figures a set of concepts
draws (:func:`derive.studynotes.assembly.figure_specs`), and the cards: each
builder makes its section's cards, which :func:`derive.studynotes.assembly.section`
tags and styles as the options say.

A builder and a figure function take the depth of the path sum, the blocks
of the variance notes and the depths of the tables; they import what they
need when called, so this module stays cheap to import (the second process
is started before SymPy is imported).

>>> [s.key for s in SECTIONS if s.process == "second"]
['residual-block', 'gradient-paths', 'block-variants', 'transformer-layers']
>>> by_key("variance").title
'Variance under initialization'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from derive.studynotes.parts import Section

#: What a figure draws: (plotting function's name in derive.rendering.plots, args, kwargs).
FigureSpec = tuple[str, tuple[object, ...], dict[str, object]]
#: (depth of the path sum, blocks of the variance notes, depths of the tables) -> a section.
Builder = Callable[[int, tuple[str, ...], tuple[int, ...]], "Section"]
#: The same inputs -> each figure's stem and what it draws.
FigureMaker = Callable[[int, tuple[str, ...], tuple[int, ...]], dict[str, FigureSpec]]


@dataclass(frozen=True)
class NoteSection:
    """One section of the notes: its key, default note name, builder, process, figures.

    ``process`` is "second" for a section that shares few derivations with the
    others, so the second process derives it (and draws its figures) while the
    first derives the rest.
    """

    key: str
    title: str
    build: Builder
    process: Literal["first", "second"] = "first"
    figures: FigureMaker | None = None


def _residual_block(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.content import residual_block_section

    return residual_block_section()


def _layer_norm(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.content import layer_norm_section

    return layer_norm_section()


def _pre_vs_post(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.content import pre_vs_post_section

    return pre_vs_post_section(blocks, depths[0])


def _pre_vs_post_figures(depth: int, blocks: tuple[str, ...],
                         depths: tuple[int, ...]) -> dict[str, FigureSpec]:
    from derive.studynotes.variance import BLOCK_NAMES, curves

    return {"gradient-depth": ("curves_figure", (
        {f"{BLOCK_NAMES[n]}: d₀/d_K": curves(n, depths[-1], "backward") for n in ("pre", "post")},
        "He initialization: gradient ratio against depth K"), {"xlabel": "depth K"})}


def _gradient_paths(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.paths import paths_section

    return paths_section(depth)


def _gradient_paths_figures(depth: int, blocks: tuple[str, ...],
                            depths: tuple[int, ...]) -> dict[str, FigureSpec]:
    from derive.pathsums.expansion import path_lengths
    from derive.studynotes.parts import plural
    from derive.studynotes.path_gradients import VEIT_DEPTH, series

    return {
        "path-lengths": ("path_length_figure", (
            dict(path_lengths(depth, "x")), f"paths from x to y, {plural(depth, 'block')}"), {}),
        "gradient-lengths": ("gradient_length_figure", (
            series(), f"{VEIT_DEPTH} blocks, He initialization, ReLU: paths and gradient by "
            "length"), {}),
    }


def _variance(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.variance import variance_section

    return variance_section(blocks, depths)


def _variance_figures(depth: int, blocks: tuple[str, ...],
                      depths: tuple[int, ...]) -> dict[str, FigureSpec]:
    from derive.studynotes.variance import BLOCK_NAMES, curves, simulated

    derived, measured = simulated(blocks)[1]["he"]
    return {
        "signal-depth": ("curves_figure", (
            {f"{BLOCK_NAMES[n]}: qₖ": curves(n, depths[-1], "forward") for n in blocks},
            "He initialization: second moment qₖ against depth"), {}),
        "simulation-check": ("moments_figure", (
            {n: tuple([float(v) for v in part] for part in pair) for n, pair in derived.items()},
            "He initialization, ReLU", measured), {}),
    }


def _block_variants(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.variants import variants_section

    return variants_section()


def _block_variants_figures(depth: int, blocks: tuple[str, ...],
                            depths: tuple[int, ...]) -> dict[str, FigureSpec]:
    from derive.studynotes.variants import profiles

    return {"block-variants": ("variants_figure", (
        profiles(), "He initialization, ReLU: every preset"), {})}


def _shattered(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.shattered import shattered_section

    return shattered_section(depths)


def _shattered_figures(depth: int, blocks: tuple[str, ...],
                       depths: tuple[int, ...]) -> dict[str, FigureSpec]:
    from derive.studynotes.correlations import figures

    return figures()


def _transformer(depth: int, blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    from derive.studynotes.transformer_note import transformer_section

    return transformer_section()


def _transformer_figures(depth: int, blocks: tuple[str, ...],
                         depths: tuple[int, ...]) -> dict[str, FigureSpec]:
    from derive.studynotes.transformers import figures

    return figures()


#: Every section of the notes, in the notes' order.
SECTIONS: tuple[NoteSection, ...] = (
    NoteSection("residual-block", "Residual block", _residual_block, "second"),
    NoteSection("layer-norm", "Layer norm", _layer_norm),
    NoteSection("pre-vs-post-norm", "Pre vs post norm", _pre_vs_post,
                figures=_pre_vs_post_figures),
    NoteSection("gradient-paths", "Gradient paths", _gradient_paths, "second",
                figures=_gradient_paths_figures),
    NoteSection("variance", "Variance under initialization", _variance,
                figures=_variance_figures),
    NoteSection("block-variants", "Residual block variants", _block_variants, "second",
                figures=_block_variants_figures),
    NoteSection("shattered-gradients", "Shattered gradients and the edge of chaos", _shattered,
                figures=_shattered_figures),
    NoteSection("transformer-layers", "Transformer layers", _transformer, "second",
                figures=_transformer_figures),
)


def by_key(key: str) -> NoteSection:
    """The registered section ``key`` (a KeyError names an unknown one).

    >>> by_key("layer-norm").process
    'first'
    """
    for entry in SECTIONS:
        if entry.key == key:
            return entry
    raise KeyError(key)


def keys_of(concepts: Iterable[str], process: str) -> tuple[str, ...]:
    """The keys among ``concepts`` that ``process`` ("first" or "second") derives, in order.

    >>> keys_of(["layer-norm", "variance", "block-variants"], "second")
    ('block-variants',)
    """
    chosen = set(concepts)
    return tuple(s.key for s in SECTIONS if s.key in chosen and s.process == process)
