"""Every sentence of the notes holds: each claim checked against an independent computation
(NumPy, a hand derivation, plain Python arithmetic), not against derive's own code."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import sympy

import derive
import derive.studynotes.writer as notes_mod
from tests.cli_runner import invoke


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("truth") / "output"
    notes_mod.notes(folder, formats=("markdown", "obsidian"), depth=4)
    return folder


@pytest.fixture(scope="module")
def shallow(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("truth1") / "output"
    notes_mod.notes(folder, formats=("markdown", "obsidian"), depth=1)
    return folder


def _notes(out: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((out / "obsidian").glob("*.md"))}


def _everything(out: Path) -> dict[str, str]:
    return {**_notes(out), "notes.md": (out / "markdown/notes.md").read_text()}


# --- the final LayerNorm: the gradient's second moment by q_K, the gradient by sqrt(q_K) ---

def _layernorm_gradient_gain(q: float, width: int = 4000, seed: int = 0) -> float:
    """E[(J_LN^T delta)^2]/E[delta^2] for an input of second moment q, by NumPy."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, math.sqrt(q), width)
    mu, sigma = x.mean(), x.std()
    xhat = (x - mu) / sigma
    jac = (np.eye(width) - 1.0 / width - np.outer(xhat, xhat) / width) / sigma
    delta = rng.normal(size=(width, 16))
    return float(((jac.T @ delta) ** 2).mean() / (delta**2).mean())


def test_the_final_ln_scales_the_gradients_second_moment_by_one_over_q_K(out):
    # pre-LN, He, ReLU, q_0 = 1: q_K = K + 1; at K = 8 the final LN sees q = 9
    measured = _layernorm_gradient_gain(9.0)
    assert measured == pytest.approx(1 / 9, rel=0.02)  # the second moment: 1/q_K
    assert math.sqrt(measured) == pytest.approx(1 / 3, rel=0.01)  # the gradient: 1/sqrt(q_K)
    claim = "the final LN scales the gradient's second moment by $\\frac{1}{K + q_{0}}$"
    root = "the gradient itself by $1/\\sqrt{q_K}$"
    texts = _everything(out)
    for name in ("Gradient paths", "Residual block variants", "notes.md"):
        assert claim in texts[name] and root in texts[name], name
        assert "Xiong et al. bound the gradient's norm" in texts[name], name
    for name, text in texts.items():
        assert "divides the gradient by $q_K" not in text, name
        assert "divides the gradient by $q" not in text, name


def test_the_last_blocks_weight_gradient_ratio_by_hand(out):
    # pre-LN + final LN, He, ReLU, q_0 = 1, by hand: the final LN leaves d_K = 1/q_K with
    # q_K = K + 1; the last matrix W of W relu(LN(h)) sees relu's second moment 1/2 of LN's 1,
    # so w_K = d_K/2 = 1/(2 (K + 1)); post-LN: q = 1 everywhere, w_K = 1/2 * 1/2 = 1/4
    for depth in (1, 5, 20):
        pre = derive.variance("he", "relu", "pre", final_norm=True).weights.profile(depth)
        post = derive.variance("he", "relu", "post").weights.profile(depth)
        assert float(pre[-1]) == pytest.approx(1 / (2 * (depth + 1)))
        assert float(post[-1]) == pytest.approx(1 / 4)
    text = _notes(out)["Pre vs post norm"]
    # the ratio the note states, (K + q_0)/2, at K = 10: (1/4)/(1/22) = 5.5
    assert "$\\frac{K + q_{0}}{2}$ times smaller than post-LN's" in text
    assert pytest.approx((10 + 1) / 2) == (1 / 4) / (1 / (2 * (10 + 1)))


def test_pre_ln_with_a_final_ln_keeps_the_input_gradient_of_order_one(out):
    # by hand: d_K = 1/q_K = 1/(K + 1) after the final LN; each pre-LN block multiplies the
    # gradient's second moment by 1 + 1/q_{k-1} = (k + 1)/k, so d_0 = 1/(K + 1) (K + 1) = 1
    for depth in (1, 7, 50):
        d = 1 / (depth + 1)
        for k in range(depth, 0, -1):
            d *= 1 + 1 / k
        assert d == pytest.approx(1.0)
    text = _notes(out)["Pre vs post norm"]
    assert "the input's is $d_0 = \\frac{1}{q_{0}}$" in text
    for needed in ("Xiong et al. (2020)", "near the output are large", "initialization only"):
        assert needed in text, needed


# --- one symbol, one meaning ---------------------------------------------------------------

def test_s_k_means_the_skip_gain_and_nothing_else(out):
    pattern = re.compile(r"(?<![a-zA-Z\\])s_\{?[kK]\}?")
    for name, text in _notes(out).items():
        if pattern.search(text.split("# anki")[0] + text.split("# anki")[-1]):
            assert name == "Gradient paths", name
    paths = _notes(out)["Gradient paths"]
    assert "its skip's $s_k$ and its branch's $b_k$" in paths


# --- post-LN's gradient ratio: the general statement, and where the short one holds --------

def _tanh_gains(s: float) -> tuple[float, float]:
    """He (n sigma_w^2 = 2): g(s) = 2 E[tanh(z)^2]/s, G(s) = 2 E[tanh'(z)^2], z ~ N(0, s)."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    t = np.tanh(math.sqrt(s) * z)
    return 2 * float(w @ t**2) / s, 2 * float(w @ (1 - t**2) ** 2)


def test_post_ln_gradient_ratio_holds_for_any_q0():
    from derive.derivation.symbols import K, q0
    from derive.studynotes.concepts import G, g, gamma, pre_vs_post

    steps = pre_vs_post().steps
    general = next(s for s in steps if s.rhs.has(sympy.Function("g")(q0)))
    short = steps[steps.index(general) + 1]
    assert "q_0 = \\gamma^2" in short.reason
    q_start, depth = 4.0, 5
    # the recursion, iterated by hand: block 1 sees q_0, every later block gamma^2 = 1
    ratio, moment = 1.0, q_start
    for _ in range(depth):
        gs, Gs = _tanh_gains(moment)
        ratio *= (1 + Gs) / ((1 + gs) * moment)
        moment = 1.0
    g1, G1 = _tanh_gains(1.0)
    g0, G0 = _tanh_gains(q_start)
    values = {gamma: 1, g: g1, G: G1, K: depth, q0: q_start,
              sympy.Function("g")(q0): g0, sympy.Function("G")(q0): G0}
    assert float(general.rhs.subs(values)) == pytest.approx(ratio, rel=1e-9)
    assert float(short.rhs.subs(values)) != pytest.approx(ratio, rel=1e-3)  # needs q_0 = 1
    api = derive.variance("he", "tanh", "post").backward.at(depth, q0=4)
    assert float(api) == pytest.approx(ratio, rel=1e-6)


# --- numbers as they are -------------------------------------------------------------------

def test_leaky_relu_gains_print_as_their_values(out):
    a = 0.01  # He's ReLU form for leaky ReLU: g = n (2/n) (1 + a^2)/2 = 1 + a^2
    he, xavier = f"{1 + a * a:.4f}", f"{(1 + a * a) / 2:.5f}"
    variance = _notes(out)["Variance under initialization"]
    assert f"| leaky ReLU | He | {he} | {he} |" in variance
    assert f"| leaky ReLU | Xavier | {xavier} | {xavier} |" in variance
    assert "| leaky ReLU | He | 1 | 1 |" not in variance


def test_harmonic_mean_length_is_stated_with_its_constant(out):
    depth = 10**6
    mean = math.fsum(1 / n for n in range(1, depth + 2)) - 1
    constant = mean - math.log(depth)
    assert constant == pytest.approx(-0.4228, abs=1e-4)
    exact54 = math.fsum(1 / n for n in range(1, 56)) - 1
    assert f"{exact54:.3g}" == "3.59"
    assert math.log(54) - 0.42 == pytest.approx(exact54, abs=0.03)
    paths = _notes(out)["Gradient paths"]
    assert "\\ln K + \\gamma_{E} - 1 \\approx \\ln K - 0.42" in paths
    assert "about $\\ln K$ (" not in paths and "about $\\ln K$\n" not in paths


def test_dropout_closed_form_reads_with_positive_factors(out, capsysbinary):
    p, depth = sympy.Rational(1, 10), 3
    by_hand = (1 + 1 / (1 - p)) ** depth  # the skip's 1 plus the branch's g/(1 - p), g = 1
    shown = derive.variance("he", block="dropout").forward.closed_form.rhs
    names = {s.name: s for s in shown.free_symbols}
    assert shown.subs({names["p"]: p, names["K"]: depth, names["q_0"]: 1}) == by_hand
    variants = _notes(out)["Residual block variants"]
    assert "\\left(\\frac{2 - p}{1 - p}\\right)^{K}" in variants
    assert "p - 2" not in variants
    code, output, _ = invoke(capsysbinary, "variance", "--init", "he", "--block", "dropout",
                             "--direction", "forward")
    assert code == 0
    assert "((2 - p)/(1 - p))ᴷ" in output
    assert "RB(x) = x + Dropout(F(x))" not in output
    assert "Srivastava et al. 2014" in output


def test_positive_rates_never_changes_a_value():
    from derive.derivation.printing import positive_rates

    p = sympy.Symbol("p", nonnegative=True)
    K = sympy.Symbol("K", integer=True)
    for expr in ((p - 2) / (p - 1), (p - 2) ** 10 / (p - 1) ** 10, ((p - 3) / (p - 1)) ** K,
                 (p - 2) ** 3 / (p - 1) ** 2, (K - 1) / (K - 2)):
        shown = positive_rates(expr)
        for value in (sympy.Rational(1, 10), sympy.Rational(7, 3)):
            assert sympy.simplify((shown - expr).subs({p: value, K: 4})) == 0
    assert str(positive_rates((K - 1) / (K - 2))) == str((K - 1) / (K - 2))


# --- words: plurals at depth 1, labels that name what the block uses ------------------------

@pytest.mark.slow
def test_depth_one_reads_in_the_singular(shallow):
    for name, text in _everything(shallow).items():
        for wrong in ("1 blocks", "are 1 of them", "1 paths through", "1 of the 2 paths "
                      "through 1 block are"):
            assert wrong not in text, (name, wrong)


def test_an_explicit_branch_is_not_labelled_with_the_configured_activation(capsysbinary):
    code, output, _ = invoke(capsysbinary, "variance", "--init", "he", "--block",
                             "x + W(gelu(W(LN(x))))", "--direction", "forward")
    assert code == 0
    first = output.splitlines()[0]
    assert first.startswith("he/x + W(gelu(W(LN(x))))"), first
    assert "relu" not in first and "single" not in first
    # a block that uses the configured activation still names it
    assert derive.variance_config(init="he", activation="tanh",
                                  norm="x + W(phi(W(x)))").label.startswith("he/tanh/")


# --- cards: none asks what another asks; the why-cards answer from derived results -----------

def _normalised(front: str) -> str:
    front = re.sub(r"\\[a-zA-Z]+", " ", front.lower())
    return " ".join(re.findall(r"[a-z0-9]+", front))


def test_no_two_cards_ask_the_same_thing():
    from difflib import SequenceMatcher

    from derive.studynotes.assembly import content

    cards = content(4).cards
    keys = {c.key for c in cards}
    for a, b in (("variants/rescaled", "variance/scale-factor"),
                 ("pre-vs-post-norm/pre", "variance/pre-ln-step"),
                 ("pre-vs-post-norm/gradient-power", "variance/pre-ln-tanh"),
                 ("gradient-paths/weights-final-ln", "variants/weights-pre-post")):
        assert not (a in keys and b in keys), (a, b)
    fronts = [(c.key, _normalised(c.front)) for c in cards]
    for i, (key_a, a) in enumerate(fronts):
        for key_b, b in fronts[i + 1:]:
            assert SequenceMatcher(None, a, b).ratio() < 0.8, (key_a, key_b)


def test_why_cards_answer_from_derived_results():
    from derive.studynotes.assembly import content

    cards = {c.key: c for c in content(4).cards}
    for key in ("residual-block/why-gradient", "pre-vs-post-norm/pros-cons",
                "variants/bn-changes"):
        assert key in cards, key
    # BN first, He, ReLU: c grows by n sigma_w^2 E[relu(z)]^2 = 2 (1/sqrt(2 pi))^2 = 1/pi
    z = np.linspace(0.0, 12.0, 200_001)
    f = z * np.exp(-z * z / 2)
    mean_relu = float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(z))) / math.sqrt(2 * math.pi)
    assert 2 * mean_relu**2 == pytest.approx(1 / math.pi, rel=1e-6)
    assert "c_K = \\frac{K}{\\pi}" in cards["variants/bn-changes"].back
    assert "$q_K = K + q_{0}$ instead of $2^{K} q_{0}$" in cards["variants/bn-changes"].back
    back = cards["pre-vs-post-norm/pros-cons"].back
    assert "w_K = \\frac{1}{2 K + 2 q_{0}}" in back and "w_K = \\frac{1}{4}" in back
    assert "share $\\frac{1}{2^{K}}$" in back  # post-LN, He, ReLU: (1 + g)^-K, g = 1
    assert "2^{K}" in cards["residual-block/why-gradient"].back
