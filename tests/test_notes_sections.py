"""The registry of note sections: what exists, which process derives it, its figures."""

from __future__ import annotations

import pytest

import derive
from derive.errors import DeriveError
from derive.studynotes import options as options_mod
from derive.studynotes import sections, worker
from derive.studynotes.assembly import content, figure_specs
from derive.studynotes.options import NotesOptions


def test_the_concepts_and_the_second_process_follow_the_registry():
    assert list(options_mod.CONCEPTS) == [s.key for s in sections.SECTIONS]
    assert NotesOptions().concepts == tuple(s.key for s in sections.SECTIONS)
    assert [NotesOptions().name(s.key) for s in sections.SECTIONS] == [
        s.title for s in sections.SECTIONS]
    pending = worker.start(2, NotesOptions.of(concepts=["layer-norm", "gradient-paths"]))
    try:
        assert pending.theirs == ("gradient-paths",)  # the one registered for the second
    finally:
        pending.close()


def test_each_section_draws_the_figures_it_shows():
    data = content(2)
    for section in data.sections:
        shown = sorted(figure.stem for figure in section.figures)
        drawn = sorted(figure_specs(2, concepts=[section.key]))
        assert drawn == shown, section.key
    assert sorted(figure_specs(2)) == sorted(f.stem for s in data.sections for f in s.figures)


@pytest.mark.parametrize("kwargs, message", [
    ({"formats": None}, "formats must be a format name or a list of them (latex, markdown, "
                        "obsidian, anki, all), got None"),
    ({"formats": 7}, "got 7"),
    ({"out": 42}, "output folder must be a path (text or a path object), got 42"),
    ({"out": None}, "output folder must be a path (text or a path object), got None"),
])
def test_the_api_names_a_bad_argument(tmp_path, kwargs, message):
    with pytest.raises(DeriveError) as raised:
        derive.notes(**{"out": tmp_path / "n", **kwargs})
    assert message in str(raised.value) and "\n" not in str(raised.value)
