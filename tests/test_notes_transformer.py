"""The note on transformer layers: its numbers against the mean-field formulas of attention
iterated here in plain Python (GELU's kernel by quadrature, softmax's overlaps by Monte
Carlo), its derivation's maps and their check, its cards as the Obsidian_to_Anki plugin
reads them, byte-identical regeneration and the user's edits kept."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy

from derive.deck.cards import parse_plugin_notes
from derive.studynotes import token_map
from derive.studynotes import transformers as data
from derive.studynotes.parts import number
from derive.studynotes.transformer_note import transformer_section

N = data.TOKENS
#: Gauss-Hermite nodes for expectations over one and two standard normals.
_X, _W = np.polynomial.hermite_e.hermegauss(120)
_W = _W / _W.sum()


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _gelu_slope(x):
    from scipy.special import erf

    return 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _mlp(q: float, c: float) -> tuple[float, float]:
    """(E[gelu(u)^2], E[gelu(u) gelu(v)]) for u, v ~ N(0, q) with covariance c: the MLP
    W gelu(W x) per token, every W of variance 1/fan-in."""
    rho = c / q
    s = math.sqrt(q)
    u = s * _X
    same = float(np.sum(_W * _gelu(u) ** 2))
    a, b = np.meshgrid(_X, _X, indexing="ij")
    v = s * (rho * a + math.sqrt(max(1 - rho * rho, 0.0)) * b)
    cross = float(np.sum(np.outer(_W, _W) * _gelu(s * a) * _gelu(v)))
    return same, cross


def _uniform_stack(kind: str, alpha: float = 1.0, depth: int = 50) -> tuple[list, list]:
    """rho_k and q_k of the layers under uniform attention, from the design's formulas:
    Attn maps (q, c) to q' = c' = c + (q - c)/n (sigma_V^2 = sigma_O^2 = 1)."""
    q, c = 1.0, 0.5
    rhos, qs = [0.5], [1.0]

    def attn(q, c):
        out = c + (q - c) / N
        return out, out

    for _ in range(depth):
        for branch in (attn, _mlp):
            if kind == "post":  # LN(x + F(x)), gamma = 1
                bq, bc = branch(q, c)
                q, c = 1.0, (c + bc) / (q + bq)
            else:  # x + alpha F(LN(x))
                bq, bc = branch(1.0, c / q)
                q, c = q + alpha**2 * bq, c + alpha**2 * bc
        rhos.append(c / q)
        qs.append(q)
    return rhos, qs


@pytest.fixture(scope="module")
def section():
    return transformer_section()


# --- the numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, alpha", [("post", "post", 1.0), ("pre", "pre", 1.0),
                                               ("scaled", "pre", 1 / math.sqrt(50))])
def test_uniform_profiles_are_the_design_formulas_iterated_by_hand(name, kind, alpha):
    rhos, qs = _uniform_stack(kind, alpha)
    for k in (1, 2, 10, 50):
        assert data.rho_at(name, k, "uniform") == pytest.approx(rhos[k], rel=1e-7, abs=1e-9)
        assert data.q_at(name, k, "uniform") == pytest.approx(qs[k], rel=1e-7)


def test_uniform_attention_alone_makes_every_token_the_mean_token():
    assert data.rho_at("attention-only", 1, "uniform") == 1.0
    assert data.q_at("attention-only", 1, "uniform") == pytest.approx(0.5 + 0.5 / N)
    assert data.grad_factor("attention-only", "uniform") == pytest.approx(1.0)


def test_the_softmax_overlaps_at_the_input_against_monte_carlo():
    """S and X of standard attention at q = 1, rho = 1/2: the logits of a row are n iid
    N(0, q (q - c)) after the shift, two rows correlated key by key with r = c/q."""
    rng = np.random.default_rng(7)
    draws, v, r = 200_000, 0.5, 0.5
    z, e = rng.standard_normal((draws, N)), rng.standard_normal((draws, N))
    u, w = math.sqrt(v) * z, math.sqrt(v) * (r * z + math.sqrt(1 - r * r) * e)
    p = np.exp(u - u.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p2 = np.exp(w - w.max(1, keepdims=True))
    p2 /= p2.sum(1, keepdims=True)
    same, cross = (p * p).sum(1), (p * p2).sum(1)
    got_same, got_cross = data.first_overlap()
    assert got_same == pytest.approx(same.mean(), abs=4 * same.std() / math.sqrt(draws))
    assert got_cross == pytest.approx(cross.mean(), abs=4 * cross.std() / math.sqrt(draws))
    assert 1 / N < got_same < 2 / N and 1 / N < got_cross < got_same
    # attention alone: q' = c + (q - c) S, c' = c + (q - c) X
    rho1 = (0.5 + 0.5 * got_cross) / (0.5 + 0.5 * got_same)
    assert data.rho_at("attention-only", 1) == pytest.approx(rho1, rel=1e-12)


def test_post_ln_gradient_factor_once_merged_is_one_plus_G_over_one_plus_g():
    g = float(np.sum(_W * _gelu(_X) ** 2))
    big_g = float(np.sum(_W * _gelu_slope(_X) ** 2))
    assert data.mlp_gains()["g"] == pytest.approx(g, rel=1e-9)
    assert data.mlp_gains()["G"] == pytest.approx(big_g, rel=1e-9)
    assert data.layer_gain("post", 50) == pytest.approx((1 + big_g) / (1 + g), rel=1e-6)


def test_scaled_branches_move_rho_by_order_one_over_L_a_layer():
    step, _ = data.largest_step("scaled")
    assert step < 1 / 50
    assert 0.1 < data.rho_at("scaled", 50) - 0.5 < 0.5
    assert data.largest_step("pre")[0] > 0.1  # alpha = 1: a first layer moves rho by O(1)


def test_the_key_results_and_table_hold_the_engines_numbers(section):
    text = " ".join(section.key_results)
    for name, k in (("pre", 50), ("scaled", 50)):
        assert f"\\rho_{{{k}}} = {number(data.rho_at(name, k), 3)}" in text
    assert f"q_{{50}} = {number(data.q_at('pre', 50), 3)}" in text
    assert f"d_0/d_L = {number(data.grad_factor('post'), 3)}" in text
    rows = {row[0]: row for row in section.tables[0].rows}
    for name, (_, label, _) in data.LAYERS.items():
        row = rows[label]
        assert row[1:4] == tuple(number(data.rho_at(name, k), 4) for k in (1, 10, 50))
        assert row[5] == number(data.grad_factor(name), 4)
        assert row[7] == number(data.rho_at(name, 50, "uniform"), 4)
    claims = " ".join(a for _, a in section.problems)
    assert number(data.grad_factor("post-no-skip"), 3) in claims


# --- the derivation ------------------------------------------------------------------------

def test_the_derivations_maps_against_plain_arithmetic():
    d = token_map.derivation()
    by_lhs = {}
    for step in d.steps:
        by_lhs.setdefault(str(step.lhs), step)
    r, a, s2, n = 0.3, 1 / 3, 1.0, 16
    m = r + (1 - r) / n
    rho_step = next(s for s in d.steps if "x + alpha*Attn(x)" in s.reason
                    and str(s.lhs) == "rho(k)")
    values = {sympy.Function("rho")(sympy.Symbol("k", integer=True) - 1): r,
              token_map.alpha: a, token_map.sigma2: s2, token_map.n_tok: n}
    assert float(rho_step.rhs.xreplace(values)) == pytest.approx((r + a * a * m) / (1 + a * a * m))
    diff = next(s for s in d.steps if "carries the gradients' differences" in s.reason)
    assert str(diff.rhs) == "-g_k + d(k)"
    overlaps = next(s for s in d.steps if "standard attention at the input" in s.reason)
    same, cross = data.first_overlap()
    assert f"$S = {same:.4g}$" in overlaps.reason and f"$X = {cross:.4g}$" in overlaps.reason


def test_the_derivations_check_fails_on_a_wrong_map(monkeypatch):
    real = token_map._engine

    def wrong(text, mode, **options):
        forward, gains = real(text, mode, **options)
        from derive.blocks.nodes import Kernel

        return Kernel(forward.q_a, forward.q_b, forward.c * 2), gains

    monkeypatch.setattr(token_map, "_engine", wrong)
    with pytest.raises(AssertionError, match="engine"):
        token_map.maps.__wrapped__()


# --- cards, files ------------------------------------------------------------------------

PLUGIN_NOTE = re.compile(r"^START\n([\s\S]*?\n)END", re.M)
PLUGIN_INLINE_MATH = re.compile(r"(?<!\$)\$((?=[\S])(?=[^$])[\s\S]*?\S)\$")


def test_cards_ask_why_and_parse_as_the_plugin_reads_them(section):
    assert len(section.cards) >= 6
    keys = [c.key for c in section.cards]
    assert len(set(keys)) == len(keys) and all(k.startswith("transformer/") for k in keys)
    for c in section.cards:
        assert c.front.startswith("Why ") and c.front.rstrip().endswith("?"), c.front
        assert len(c.back) < 420, c.key
        block = c.block()
        assert len(PLUGIN_NOTE.findall(block)) == 1
        (parsed,) = parse_plugin_notes(block)
        assert parsed.fields == {"Front": c.front, "Back": c.back} and parsed.key == c.key
        for field in (c.front, c.back):
            converted = PLUGIN_INLINE_MATH.sub(lambda mt: f"\\({mt.group(1)}\\)", field)
            assert "$" not in converted, field
            for math_part in re.findall(r"\\\((.*?)\\\)", converted):
                assert "'" not in math_part, field


def _write(folder):
    import derive

    derive.notes(folder, formats="obsidian",
                 concepts=["transformer-layers", "shattered-gradients"])
    return folder / "obsidian" / "Transformer layers.md"


def test_regeneration_is_byte_identical_and_keeps_user_edits(tmp_path):
    note = _write(tmp_path / "vault")
    first = note.read_bytes()
    figure = (tmp_path / "vault" / "obsidian" / "figures" / "token-depth.png").read_bytes()
    again = _write(tmp_path / "again")
    assert again.read_bytes() == first
    redrawn = tmp_path / "again" / "obsidian" / "figures" / "token-depth.png"
    assert redrawn.read_bytes() == figure
    text = first.decode()
    assert "[[Shattered gradients and the edge of chaos|" in text
    assert len(re.findall(r"^START$", text, re.M)) == len(transformer_section().cards)
    tag = "Tags: derive transformer\nEND"
    assert tag in text
    edited = text.replace(tag, "Tags: derive transformer\n<!--ID: 1700000000123-->\nEND", 1)
    note.write_text(edited + "\nMy own remark on attention.\n")
    import derive.studynotes.writer as writer
    from derive.studynotes.options import NotesOptions

    result = writer.build(tmp_path / "vault", formats="obsidian", options=NotesOptions.of(
        concepts=["transformer-layers", "shattered-gradients"]))
    assert result.orphaned == ()
    merged = note.read_text()
    assert "My own remark on attention." in merged and "<!--ID: 1700000000123-->" in merged


@pytest.mark.slow
def test_the_note_in_a_fresh_process_is_the_same(tmp_path):
    note = _write(tmp_path / "here")
    code = ("import derive; derive.notes({out!r}, formats='obsidian', concepts=["
            "'transformer-layers', 'shattered-gradients'])").format(out=str(tmp_path / "o"))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    fresh = tmp_path / "o" / "obsidian" / "Transformer layers.md"
    assert fresh.read_bytes() == note.read_bytes()
