"""The notes on two cores: the same content and figures with the second process or without."""

from __future__ import annotations

import concurrent.futures
import os

import pytest

from derive import notes_worker
from derive.notes_config import NotesOptions
from derive.notes_content import obsidian_notes

OPTIONS = NotesOptions.of(concepts=["residual-block", "gradient-paths", "variance"],
                          depths=[10])


def _derived() -> tuple[dict[str, str], dict[str, dict[str, bytes]]]:
    notes_worker._DONE.clear()
    data, images = notes_worker.derive_notes(2, OPTIONS, figures=True)
    assert [s.key for s in data.sections] == list(OPTIONS.concepts)
    return obsidian_notes(data), images


@pytest.fixture(scope="module")
def both_cores():
    return _derived()


def test_the_second_process_takes_its_sections_and_every_figure(both_cores):
    notes, images = both_cores
    assert set(notes) == {"Residual block", "Gradient paths", "Variance under initialization"}
    assert sorted(images) == ["gradient-lengths", "path-lengths", "signal-depth",
                              "simulation-check"]
    assert all(pair["png"].startswith(b"\x89PNG") and pair["pdf"].startswith(b"%PDF-")
               for pair in images.values())


def test_without_a_second_process_the_notes_are_the_same(both_cores, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError("no process may start here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refused)
    assert _derived() == both_cores


def test_a_failing_second_process_leaves_its_part_to_this_one(both_cores, monkeypatch):
    monkeypatch.setattr(notes_worker, "second_part", os._exit)  # raises TypeError there
    assert _derived() == both_cores


def test_notes_derived_once_are_not_derived_again(both_cores, monkeypatch):
    def underived(*args, **kwargs):
        raise AssertionError("derived again")

    _derived()
    monkeypatch.setattr(notes_worker, "_SecondProcess", underived)
    data, images = notes_worker.derive_notes(2, OPTIONS, figures=False)
    assert images == {} and obsidian_notes(data) == both_cores[0]
