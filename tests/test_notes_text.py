"""What the notes say and how they read: no repeated text, the book's notation, true cards."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import sympy

import derive
import derive.studynotes.writer as notes_mod
from derive.deck.cards import parse_plugin_notes
from derive.pathsums.expansion import iter_terms
from derive.studynotes.paths import through_first
from derive.studynotes.variance import gains, power_law_exponent, shifted_q1

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("text") / "output"
    notes_mod.notes(folder, formats=("markdown", "obsidian", "latex"), depth=4)
    return folder


def _notes(out: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((out / "obsidian").glob("*.md"))}


def _math(text: str) -> list[str]:
    return re.findall(r"\$\$(.+?)\$\$|\$([^$\n]+)\$", text, re.S)


def test_no_paragraph_of_more_than_two_lines_repeats_within_a_note(out):
    markdown = (out / "markdown/notes.md").read_text()
    for name, text in {**_notes(out), "notes.md": markdown}.items():
        body = text.split("# anki")[0]
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        # a "line" is 100 characters, as a reader's screen shows it; $$ fences are no lines
        shown = {p: "\n".join(ln for ln in p.split("\n") if ln != "$$") for p in paragraphs}
        long = [p for p in paragraphs if len(shown[p]) > 200 or shown[p].count("\n") >= 2]
        repeated = {p[:60] for p, n in Counter(long).items() if n > 1}
        assert not repeated, (name, repeated)


def test_assumptions_are_stated_once_per_note(out):
    for name, text in _notes(out).items():
        assert text.count("**Assumptions") <= 1, name
    variance = _notes(out)["Variance under initialization"]
    for needed in ("zero-mean Gaussian", "uncorrelated (not independent)", "scalar gain",
                   "leaky-ReLU", "numerator layout"):
        assert needed in variance, needed
    assert "q_1 \\approx 5.85$, not 4" in variance


def test_x_sim_n_1_1_gives_q1_6_not_4():
    # the assumption the notes state, checked: with x ~ N(1, 1) and He/ReLU, q_1 = 6
    import numpy as np

    rng = np.random.default_rng(3)
    n, batch = 400, 200
    x = rng.normal(1.0, 1.0, size=(batch, n))
    h1 = np.concatenate([x + np.maximum(x, 0) @ rng.normal(0.0, np.sqrt(2.0 / n), (n, n)).T
                         for _ in range(8)])
    # E[x^2] = 2, but E[relu(x)^2] is not E[x^2]/2 for a non-zero mean: q_1 is about 5.85
    assert (h1**2).mean() == pytest.approx(shifted_q1(), rel=0.03)
    assert derive.variance("he", "relu").forward.at(1, q0=2) == 4


def test_outputs_read_like_a_textbook(out):
    texts = [*_notes(out).values(), (out / "markdown/notes.md").read_text(),
             (out / "latex/notes.tex").read_text()]
    for text in texts:
        for display, inline in _math(text):
            math = display or inline
            assert "**" not in math and "Piecewise" not in math, math
            assert not re.search(r"- \\mu \+ x", math), math
            assert not re.search(r"\d{12,}", math), math
            assert "\\Gamma" not in math, math
        assert "Piecewise(" not in text
        assert not re.search(r"\b1 blocks\b", text)
        for tool in ("rsolve", "SymPy product", "derive.gaussian.moments", "combsimp"):
            assert tool not in text, tool
    assert "(I + J_{K})(I + J_{K-1}) \\cdots (I + J_{1})" in _notes(out)["Gradient paths"]
    assert "warm-up" not in " ".join(texts)
    assert "much shorter than the network" not in " ".join(texts)
    assert "$x_{i} - \\mu$" in _notes(out)["Layer norm"] or "x_{i} - \\mu" in \
        _notes(out)["Layer norm"]


def test_depth_is_K_in_every_note(out):
    for name, text in _notes(out).items():
        for display, inline in _math(text.split("# anki")[0]):
            assert not re.search(r"(?<![\\a-zA-Z])N(?![a-zA-Z(])", display or inline), name


def test_every_note_opens_with_its_key_results(out):
    for name, text in _notes(out).items():
        first = text.split("\n\n")[1]
        assert first.startswith("**Key results.**"), name


def test_worked_problems_and_path_counts_come_from_the_code(out):
    text = _notes(out)["Gradient paths"]
    assert "UDL problem 11.2" in text
    for depth in (3, 5):
        row = ", ".join(str(sympy.binomial(depth, j)) for j in range(depth + 1))
        assert f"{depth} blocks: {row}" in text
    # f_1 on 8 of the 16 paths: counted by enumerating the terms independently
    assert sum(1 for t in iter_terms(4, "x") if 1 in t) == through_first(4) == 8
    assert "8 of the 16 paths" in text


def test_cards_ask_one_thing_fit_a_phone_and_are_not_one_template(out):
    cards = [c for text in _notes(out).values() for c in parse_plugin_notes(text)]
    assert len(cards) >= 20
    fronts = [c.fields["Front"] for c in cards]
    assert len(set(fronts)) == len(fronts)
    for card in cards:
        assert card.fields["Front"].count("?") <= 1, card.fields["Front"]
        assert len(card.fields["Back"]) <= 400, card.fields["Back"]
        assert card.fields["Back"].count(" + ") <= 10, card.fields["Back"]
    skeletons = Counter(re.sub(r"\$[^$]*\$|\b(he|xavier|none|pre|post|He|Xavier)\b", "_", f)
                        for f in fronts)
    assert max(skeletons.values()) <= 2


def test_why_cards_carry_computed_numbers(out):
    text = _notes(out)["Variance under initialization"]
    cards = {c.key: c for c in parse_plugin_notes(text)}
    assert "variance/he-doubles" in cards and "variance/post-ln-share" in cards
    g, _ = gains("he", "relu")
    assert g == 1 and f"= {g}$" in cards["variance/he-doubles"].fields["Back"]
    assert "\\frac{1}{2^{K}}" in cards["variance/post-ln-share"].fields["Back"]
    exponent = power_law_exponent("he", "tanh")
    assert f"K^{{{exponent:.2f}}}" in cards["variance/pre-ln-tanh"].fields["Back"]
    # independent check of the exponent: the iterated pre-LN gradient ratio's log-log slope
    a = derive.variance("he", "tanh", "pre").backward
    slope = (sympy.log(a.at(96)) - sympy.log(a.at(48))) / sympy.log(2)
    assert float(slope) == pytest.approx(exponent, rel=0.05)
    paths = {c.key: c for c in parse_plugin_notes(_notes(out)["Gradient paths"])}
    assert paths["gradient-paths/through-f1"].fields["Back"].startswith("8:")


@pytest.mark.parametrize("activation, norm", [("relu", "post"), ("tanh", "pre"),
                                              ("gelu", "post"), ("leaky_relu", "none")])
def test_text_output_has_no_raw_sympy(activation, norm):
    from derive.rendering.render import render

    out = render(derive.variance("he", activation, norm), "text")
    assert "**" not in out and "Piecewise(" not in out and "Eq(" not in out


def test_gradient_paths_note_weighs_the_paths_by_their_gradient(out):
    """The weighted path sum in the note, against independent sums: math.comb for the
    plain block (Veit et al. 2016: lengths 5 to 17 of 54 blocks are 0.45% of the paths),
    a direct product over the blocks for pre-LN (q_{k-1} = k, branch share 1/(k + 1))."""
    from fractions import Fraction
    from math import comb

    text = _notes(out)["Gradient paths"]
    window = Fraction(sum(comb(54, n) for n in range(5, 18)), 2**54)
    assert f"are {100 * float(window):.2g}% of the paths and carry {100 * float(window):.2g}%" \
        in text
    shares = [Fraction(1)]
    for k in range(1, 55):  # block k: the skip keeps k/(k + 1), the branch 1/(k + 1)
        p = Fraction(1, k + 1)
        shares = [a * (1 - p) + (shares[i - 1] * p if i else 0)
                  for i, a in enumerate([*shares, Fraction(0)])]
    mean = float(sum(i * s for i, s in enumerate(shares)))
    pre_window = float(sum(shares[5:18]))
    assert f"({mean:.3g} at 54 blocks" in text and f"carry {100 * pre_window:.2g}% of its" in text
    assert "$H_{K + 1} - 1$" in text and "$1 + \\frac{t}{q_{k - 1}}$" in text
    assert "![[gradient-lengths.png]]" in text or "gradient-lengths.png" in text
    assert "Xiong et al. (2020)" in text and "| post | yes |" in text
    cards = {c.key: c for c in parse_plugin_notes(text)}
    for key in ("gradient-paths/short-share", "gradient-paths/pre-ln-shorter",
                "gradient-paths/weighted-share", "gradient-paths/weights-final-ln"):
        assert key in cards, key
    assert f"pre-LN: {100 * pre_window:.2g}%" in cards["gradient-paths/short-share"].fields["Back"]
