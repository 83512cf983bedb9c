"""The note on shattered gradients and the edge of chaos: its numbers against maps iterated
here by hand (the arc-cosine kernel), its law sentences against their Law objects and
against fits of long iterations, its derivation, figures, cards and the README."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from derive.recursions.kernel import kernel
from derive.studynotes import correlations as data
from derive.studynotes.correlation_map import derivation, near_one_laws
from derive.studynotes.parts import number
from derive.studynotes.shattered import shattered_section

ROOT = Path(__file__).resolve().parents[1]


def _C(r: float) -> float:
    """ReLU's arc-cosine kernel under He (Cho & Saul 2009), as a correlation map."""
    return (math.sqrt(max(1 - r * r, 0.0)) + (math.pi - math.acos(r)) * r) / math.pi


def _D(r: float) -> float:
    """Both ReLU units active, over E[relu'^2] = 1/2."""
    return (math.pi - math.acos(r)) / math.pi


def _by_hand(share: float, depth: int, rho0: float = 0.5) -> tuple[list[float], list[float]]:
    """rho_k (k = 0..depth) of h_k = h_{k-1} + alpha f_k(h_{k-1}) whose branch carries
    ``share`` of each block (1: plain F(x)), and rho^grad_0 for K = 0..depth."""
    rhos = [rho0]
    for _ in range(depth):
        r = rhos[-1]
        rhos.append((1 - share) * r + share * _C(r))
    grads = [1.0]
    for r in rhos[:-1]:
        grads.append(grads[-1] * ((1 - share) + share * _D(r)))
    return rhos, grads


@pytest.fixture(scope="module")
def section():
    return shattered_section()


# --- the numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("name, share", [("plain", 1.0), ("residual", 0.5), ("rescaled", 0.5),
                                         ("post", 0.5)])
def test_profiles_are_the_maps_iterated_by_hand(name, share):
    rhos, grads = _by_hand(share, 50)
    for depth in (10, 50):
        assert data.rho_at(name, depth) == pytest.approx(rhos[depth], rel=1e-9)
        assert data.grad_at(name, depth) == pytest.approx(grads[depth], rel=1e-9)


def test_pre_ln_profile_is_its_map_iterated_by_hand():
    # LN hands the branch gamma^2 = 1 whatever q: q_k = q_{k-1} + 1, share 1/q_k
    q, r, grad, rhos, grads = 1.0, 0.5, 1.0, [0.5], [1.0]
    for _ in range(50):
        share = 1 / (q + 1)
        grad *= (1 - share) + share * _D(r)
        r = (1 - share) * r + share * _C(r)
        q += 1
        rhos.append(r)
        grads.append(grad)
    for depth in (10, 50):
        assert data.rho_at("pre", depth) == pytest.approx(rhos[depth], rel=1e-9)
        assert data.grad_at("pre", depth) == pytest.approx(grads[depth], rel=1e-9)


def test_table_cells_are_the_engines_numbers(section):
    rows = {row[0]: row for row in section.tables[0].rows}
    for block, values, label in data.BLOCKS.values():
        row = rows[label]
        for i, depth in enumerate((10, 50)):
            a = kernel("he", "relu", block=block, values=dict(values) or None, depth=depth)
            profile = a.profile()
            assert row[1 + i] == number(profile["forward"]["rho"][-1], 3)
            assert row[3 + i] == number(profile["backward"]["rho"][0], 3)
        first = kernel("he", "relu", block=block, values=dict(values) or None, depth=10)
        assert row[5] == number(first.profile()["backward"]["d_a"][0], 4)


def test_gradient_factors_per_block_are_those_of_the_readme():
    # d_{k-1}/d_k: 1 for plain F(x) (chi_1 = 1), 2 for x + F(x), 1 rescaled and post-LN
    assert data.factor_at("plain", 1) == pytest.approx(1)
    assert data.factor_at("residual", 1) == pytest.approx(2)
    assert data.factor_at("rescaled", 1) == pytest.approx(1)
    assert data.factor_at("post", 1) == pytest.approx(1)
    assert data.factor_at("residual", 10) == pytest.approx(2**10)


def test_the_figure_curves_are_stacks_of_each_depth():
    forward, backward = data.curves("plain")
    assert len(forward) == len(backward) == data.FIGURE_DEPTH + 1
    for depth in (1, 7, 30, 200):
        assert backward[depth] == pytest.approx(data.grad_at("plain", depth), rel=1e-9)
        assert forward[depth] == pytest.approx(1 - data.rho_at("plain", depth), rel=1e-9)


# --- the laws ---------------------------------------------------------------------------

def test_every_law_sentence_holds_its_law(section):
    text = " ".join(section.key_results)
    for name in data.WITH_LAWS:
        forward, backward = data.laws(name)
        assert f"${forward.latex}$" in text, name
        assert f"${backward.latex}$" in text, name
    rows = {row[0]: row for row in section.tables[0].rows}
    for name in data.WITH_LAWS:
        forward, backward = data.laws(name)
        label = data.BLOCKS[name][2]
        assert rows[label][6:] == (f"${forward.latex}$", f"${backward.latex}$")


def test_the_power_laws_hold_in_long_iterations():
    for name, share in (("plain", 1.0), ("residual", 0.5)):
        forward, backward = data.laws(name)
        assert forward.kind == backward.kind == "power"
        assert (forward.power, backward.power) == (2, 3)
        rhos, grads = _by_hand(share, 20_000)
        # 1 - rho_k ~ C k^-2 and rho^grad_0 ~ C' K^-3, read off by hand at large k
        assert (1 - rhos[-1]) * 20_000**2 == pytest.approx(float(forward.constant), rel=0.01)
        assert grads[-1] * 20_000**3 == pytest.approx(float(backward.constant), rel=0.02)


def test_the_exponent_is_shared_but_the_constants_are_not():
    plain, residual = data.laws("plain"), data.laws("residual")
    assert plain[1].power == residual[1].power
    assert float(residual[0].constant) == pytest.approx(4 * float(plain[0].constant))
    assert float(residual[1].constant) > 5 * float(plain[1].constant)
    assert data.grad_at("residual", 50) > 5 * data.grad_at("plain", 50)


def test_dropout_settles_below_one_at_its_fixed_point():
    forward, backward = data.laws("dropout")
    assert forward.kind == "geometric" and 0.5 < float(forward.limit) < 1
    # skip and branch carry q each, dropout makes the branch's q/(1 - p) and keeps its
    # covariance C(rho) q: rho' = (rho + C(rho)) / (1 + 1/(1 - p)), iterated to its fixed point
    p, r = 0.1, 0.5
    for _ in range(500):
        r = (r + _C(r)) / (1 + 1 / (1 - p))
    assert float(forward.limit) == pytest.approx(r, rel=1e-6)
    assert backward.kind == "geometric"
    assert data.grad_at("dropout", 50) < 1e-4


def test_the_derivation_reaches_the_engines_laws():
    d = derivation()
    assert d.result.latex() == "\\rho^{grad}_{0} \\propto \\frac{1}{K^{3}}"
    laws = near_one_laws()
    # b of C(1 - eps) = 1 - eps + b eps^(3/2) and a of D(1 - eps) = 1 - a sqrt(eps), by hand
    # at a small eps in 60 digits
    import mpmath

    with mpmath.workdps(60):
        eps = mpmath.mpf("1e-24")
        r = 1 - eps
        c = (mpmath.sqrt(1 - r * r) + (mpmath.pi - mpmath.acos(r)) * r) / mpmath.pi
        b = (c - 1 + eps) / eps**1.5
        a = (mpmath.acos(r) / mpmath.pi) / mpmath.sqrt(eps)
    assert float(b) == pytest.approx(float(laws["b"]), rel=1e-9)
    assert float(a) == pytest.approx(float(laws["a"]), rel=1e-9)
    assert float(laws["plain"]) == pytest.approx(9 * math.pi**2 / 2)
    assert float(laws["residual"]) == pytest.approx(18 * math.pi**2)
    assert (laws["rate"], laws["log_rate"]) == (3, 3)
    # the step of x + F(x)'s map is the average of rho and C(rho)
    step = next(s for s in d.steps if "engine's map" in s.reason)
    import sympy
    r = sympy.Symbol("rho_k-1")
    for value in (0.1, 0.5, 0.9):
        assert float(step.rhs.subs(r, value)) == pytest.approx((value + _C(value)) / 2)


# --- the phases and the notebook ---------------------------------------------------------

def test_phases_and_critical_lines():
    lines = data.critical_lines()
    assert dict(lines["tanh"])[0.0] == pytest.approx(1.0)  # tanh'(0)^2 sigma_w^2 = 1
    assert dict(lines["erf"])[0.0] == pytest.approx(math.pi / 4)  # erf'(0)^2 = 4/pi
    assert all(w == pytest.approx(2.0) for _, w in lines["relu"])
    assert data.he_phase().chi_1 == pytest.approx(1.0)
    nb = data.notebook_phase()
    assert (nb.phase, nb.chi_1, nb.sigma_w2, nb.sigma_b2) == ("ordered", 0.5, 1.0, 1 / 200)
    # q* = q*/2 + 1/200 for ReLU with sigma_w^2 = 1
    assert nb.q_star == pytest.approx(0.01)


def test_the_notebook_numbers_against_its_reproduction():
    derived = {k: data.notebook_derived(k) for k in data.NOTEBOOK_DEPTHS}
    for k, (_, moment) in derived.items():
        assert moment == pytest.approx(2.0**-k / 200)  # E[(dy/dx)^2] = 2^-K / D
    rms = {k: data.notebook_statistics(k)[0] for k in data.RUN_DEPTHS}
    slope = math.log(rms[24] / rms[1]) / 23
    assert slope == pytest.approx(-math.log(2) / 2, rel=0.15)
    for k in data.RUN_DEPTHS:
        measured = data.notebook_statistics(k)[1]
        assert measured == pytest.approx(derived[k][0], abs=0.03)
    from derive.simulation.notebook import notebook_gradients
    x, g = notebook_gradients(24, seed=1, legacy=True)
    assert data.notebook_measured(24) == ([float(v) for v in x], [float(v) for v in g])


def test_key_results_hold_the_numbers(section):
    text = " ".join(section.key_results)
    for name in ("plain", "residual", "pre", "bn-first"):
        for depth in (10, 50):
            assert f"{number(data.grad_at(name, depth), 3)} at $K = {depth}$" in text
    nb = data.notebook_phase()
    assert f"{nb.phase} phase" in text
    for k in data.RUN_DEPTHS:
        assert number(data.notebook_statistics(k)[1], 3) in text
    assert number(dict(data.critical_lines()["tanh"])[1.0], 4) in text


# --- figures, cards, README ---------------------------------------------------------------

def test_the_figures_are_drawn():
    from derive.rendering.plots import draw
    from derive.studynotes.assembly import figure_specs

    specs = figure_specs(4, concepts=["shattered-gradients"])
    assert sorted(specs) == ["correlation-depth", "notebook-gradients", "phase-diagram"]
    images = draw(specs)
    for stem in specs:
        assert images[stem]["png"].startswith(b"\x89PNG")
        assert images[stem]["pdf"].startswith(b"%PDF-")
    assert draw(specs) == images  # the same bytes again


def test_cards_ask_why(section):
    assert len(section.cards) >= 6
    keys = [c.key for c in section.cards]
    assert len(set(keys)) == len(keys) and all(k.startswith("shattered/") for k in keys)
    for c in section.cards:
        assert c.front.startswith("Why "), c.front
        assert c.front.rstrip().endswith("?")
        assert len(c.back) < 420, c.key  # fits a phone screen


def test_the_readme_no_longer_says_residual_connections_pull_it_toward_one():
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "pull it toward 1" not in text
    assert "that factor is 1 for a plain block F(x)" in text
    assert "and 2 for x + F(x)" in text


@pytest.mark.slow
def test_the_note_in_a_fresh_process(tmp_path):
    code = ("import derive; derive.notes({out!r}, formats='obsidian', "
            "concepts=['shattered-gradients', 'variance'])").format(out=str(tmp_path / "o"))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    note = (tmp_path / "o" / "obsidian" / "Shattered gradients and the edge of chaos.md")
    text = note.read_text(encoding="utf-8")
    for stem in ("correlation-depth", "phase-diagram", "notebook-gradients"):
        assert f"figures/{stem}.png" in text
        assert (tmp_path / "o" / "obsidian" / "figures" / f"{stem}.png").is_file()
    assert "[[Variance under initialization|" in text
    assert len(re.findall(r"^START$", text, re.M)) == len(shattered_section().cards)
    assert np.isfinite(data.grad_at("plain", 50))
