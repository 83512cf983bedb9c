"""What the study notes hold: the sections chosen, named and linked, their cards tagged,
their figures, and the Obsidian text of each.

Each section is built by its entry in :data:`derive.studynotes.sections.SECTIONS`.
:class:`derive.studynotes.options.NotesOptions` choose the concepts, blocks and depths,
the note names (and wikilink targets), the cards' tags and style. The templates only
lay it out.

>>> data = content(2)
>>> [s.key for s in data.sections][-3:]
['block-variants', 'shattered-gradients', 'transformer-layers']
>>> [s.title for s in content(2, NotesOptions.of(names={"variance": "nn variance"})).sections][-4]
'nn variance'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from derive.deck.cards import Card
from derive.studynotes.options import NotesOptions
from derive.studynotes.parts import Section, with_links
from derive.studynotes.sections import SECTIONS, FigureSpec, by_key
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
    def context(self) -> dict[str, object]:
        """The variables the notes templates see."""
        return {"title": "Deep residual networks: derived study notes", "depth": self.depth,
                "sections": self.sections, "sim": dict(SIM)}


def section(key: str, depth: int, options: NotesOptions | None = None) -> Section:
    """The section of concept ``key``, named, linked and its cards tagged as ``options`` say.

    The section is built by its entry in :data:`derive.studynotes.sections.SECTIONS`.

    >>> section("residual-block", 2).title, len(section("layer-norm", 2).cards)
    ('Residual block', 4)
    """
    options = NotesOptions() if options is None else options
    chosen = set(options.concepts)

    def name(concept: str) -> str | None:
        return options.name(concept) if concept in chosen else None

    made = with_links(by_key(key).build(depth, options.blocks, options.depths), name)
    cards = tuple(options.card(c) for c in made.cards)
    return replace(made, title=options.name(key), cards=cards)


def content(depth: int, options: NotesOptions | None = None) -> Content:
    """Sections and cards for a path expansion of ``depth`` blocks, as ``options`` choose,
    derived in this process (:func:`derive.studynotes.worker.derive_notes` uses both cores
    and keeps the latest notes).

    >>> len(content(2).cards) > 10
    True
    """
    options = NotesOptions() if options is None else options
    return Content(depth, tuple(section(key, depth, options) for key in options.concepts),
                   options)


def figure_specs(depth: int, options: NotesOptions | None = None,
                 concepts: Iterable[str] | None = None) -> dict[str, FigureSpec]:
    """What each figure draws: stem -> (plotting function's name, its arguments).

    The figures of the chosen concepts (of those in ``concepts`` if given), as
    their entries in :data:`derive.studynotes.sections.SECTIONS` make them; the
    data come from the derivations and the simulation, and drawing them is
    :func:`derive.rendering.plots.draw`.

    >>> sorted(figure_specs(2))[:3]
    ['block-variants', 'correlation-depth', 'gradient-depth']
    >>> sorted(figure_specs(2, concepts=["gradient-paths"]))
    ['gradient-lengths', 'path-lengths']
    """
    options = NotesOptions() if options is None else options
    chosen = set(options.concepts)
    if concepts is not None:
        chosen &= set(concepts)
    specs: dict[str, FigureSpec] = {}
    for entry in SECTIONS:
        if entry.key in chosen and entry.figures is not None:
            specs.update(entry.figures(depth, options.blocks, options.depths))
    return specs


def figures(depth: int, options: NotesOptions | None = None) -> dict[str, dict[str, bytes]]:
    """The figures' bytes: stem -> {"png": ..., "pdf": ...}, for the sections chosen,
    drawn in this process.

    >>> sorted(figures(2))[5:]
    ['path-lengths', 'phase-diagram', 'signal-depth', 'simulation-check', 'token-depth']
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
