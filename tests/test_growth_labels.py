"""The growth labels say what a second moment does through depth: grow, decay, stay
constant or converge to a limit.

Each label is checked against a closed form known by hand (mean field: a ReLU branch
with weight variance sigma_w^2 per fan-in gives E[f^2] = sigma_w^2 q / 2, so Xavier
with equal fans halves q and He keeps it), and across a grid of blocks against the
sign of the trend of the recursion iterated in floats, block by block, at K = 10 and
K = 20 (values computed from the recursion's map, not from the closed form the label
is read off).
"""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pytest
import sympy

import derive
from derive.derivation.symbols import K, q0
from derive.recursions.growth import growth, iterated_growth
from tests.cli_runner import invoke

ITERATED = " (from the iteration, no closed form)"


# --- closed forms written by hand -------------------------------------------------------
@pytest.mark.parametrize("expr,label", [
    (q0 / 2**K, "exponential decay"),                     # halves every block
    (2**K * q0, "exponential"),
    (K * 2**-K, "exponential decay"),                     # K 2^-K -> 0
    (2**K / (3**K + 1), "exponential decay"),             # (2/3)^K at large K
    (3**K / (2**K + 1), "exponential"),                   # (3/2)^K
    (2 ** (1 - K) * 3**K, "exponential"),                 # 2 (3/2)^K
    (2**K * 3 ** (1 - K), "exponential decay"),           # 3 (2/3)^K
    (1 + (q0 - 1) / 2**K, "converges exponentially to 1"),
    (3 - 2 ** (-K), "converges exponentially to 3"),
    (K + 2 ** (-K), "linear"),
    (q0 + K**2, "polynomial (degree 2)"),
    ((K + 1) / (2 * K + 3), "converges to 1/2"),
    (1 / (2 * K + 2 * q0), "decays like 1/K"),
    (1 / (K**2 + 1), "decays like K^(-2)"),
    (sympy.gamma(K + sympy.Rational(1, 2)) / sympy.gamma(K + 1), "decays like K^(-1/2)"),
    (sympy.gamma(K + sympy.Rational(5, 2)) / sympy.gamma(K + 1), "power law, K^(3/2)"),
    (sympy.Integer(3), "constant"),
])
def test_growth_of_a_closed_form_known_by_hand(expr, label) -> None:
    assert growth(expr) == label


def test_a_symbolic_limit_is_printed_as_derive_prints_formulas() -> None:
    a, b = sympy.symbols("alpha beta", positive=True)
    # q_k = b^2 q_{k-1}/(1 + b^2) + a^2 unrolled: rate b^2/(1 + b^2) < 1, limit a^2 (1 + b^2)
    rate = b**2 / (1 + b**2)
    expr = rate**K * q0 + a**2 * (1 - rate**K) / (1 - rate)
    assert growth(expr) == "converges exponentially to α²·(β² + 1)"


def test_a_form_in_which_the_depth_cancels_is_constant() -> None:
    p = sympy.Symbol("p", positive=True)
    # (1 - p)(p - 2)^(K-1) / (2 (p - 1)(p - 2)^K) = 1/(4 - 2p) at every depth
    expr = (1 - p) * (p - 2) ** (K - 1) / (2 * p * (p - 2) ** K - 2 * (p - 2) ** K)
    assert growth(expr) == "constant"


# --- iterated values written by hand ----------------------------------------------------
@pytest.mark.parametrize("values,label", [
    ([2.0**k for k in range(97)], "exponential"),
    ([0.5**k for k in range(97)], "exponential decay"),
    ([1 + k / 3 for k in range(97)], "linear"),
    ([1 / (1 + k / 4) for k in range(97)], "decays like 1/K"),
    ([(1 + k / 4) ** -0.5 for k in range(97)], "decays like K^(-0.5)"),
    ([2 - 0.9**k for k in range(97)], "converges to 2.00"),
    ([0.5 + 0.9**k for k in range(97)], "converges to 0.500"),
    ([0.618 + 0.3 * 0.2**k for k in range(97)], "converges to 0.618"),
    ([1.5] * 97, "constant"),
])
def test_growth_of_iterated_values_known_by_hand(values, label) -> None:
    assert iterated_growth(values) == label


# --- configurations whose closed form is known independently ----------------------------
def test_xavier_relu_without_a_skip_halves_q_every_block() -> None:
    a = derive.variance("xavier", "relu", block="F(x)")
    q = 1.0
    for _ in range(10):
        q = q / 2  # Xavier with equal fans: sigma_w^2 n = 1; ReLU keeps half of E[z^2]
    assert float(a.forward.at(10)) == q and a.forward.growth == "exponential decay"
    assert float(a.backward.at(10)) == q and a.backward.growth == "exponential decay"


def test_the_cli_and_json_say_decay(capsysbinary) -> None:
    code, out, _ = invoke(capsysbinary, "variance", "--init", "xavier", "--block", "F(x)")
    assert code == 0
    assert re.findall(r"growth +(.+)", out) == ["exponential decay", "exponential decay"]
    code, out, _ = invoke(capsysbinary, "variance", "--init", "xavier", "--block", "F(x)",
                          "--format", "json")
    data = json.loads(out)
    assert data["forward"]["growth"] == data["backward"]["growth"] == "exponential decay"


@pytest.mark.parametrize("block,forward,backward", [
    ("none", "exponential", "exponential"),       # q_K = 2^K q_0 (UDL 11.3)
    ("rescaled", "constant", "constant"),         # (x + F(x))/sqrt(2) keeps q_0
    ("pre", "linear", "linear"),                  # q_K = q_0 + K
])
def test_he_relu_growing_and_constant_labels(block, forward, backward) -> None:
    a = derive.variance("he", "relu", block=block)
    assert (a.forward.growth, a.backward.growth) == (forward, backward)


def test_a_skip_scaled_below_one_converges_to_its_fixed_point() -> None:
    # x/sqrt(2) + F(LN(x)), LeCun + ReLU: q_k = q_{k-1}/2 + 1/2, fixed point 1
    rec = derive.variance("lecun", "relu", block="x/sqrt(2) + F(LN(x))").forward
    assert rec.growth == "converges exponentially to 1"
    assert float(rec.at(30, q0=5)) == pytest.approx(1 + 4 / 2**30, rel=1e-12)


def test_pre_ln_last_weight_gradient_decays_like_one_over_depth() -> None:
    weights = derive.variance("he", "relu", "pre", final_norm=True).weights
    assert weights.growth == "decays like 1/K"
    profile = [float(v) for v in weights.profile(400)]
    assert profile[-1] * 400 == pytest.approx(profile[199] * 200, rel=0.01)


def _tanh_fixed_point(sigma_w2: float) -> float:
    """q* = sigma_w^2 E[tanh(z)^2], z ~ N(0, q*), by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / weights.sum()
    q = 1.0
    for _ in range(2000):
        q = sigma_w2 * float(np.sum(weights * np.tanh(math.sqrt(q) * nodes) ** 2))
    return q


def test_tanh_without_a_skip_converges_to_the_fixed_point_of_its_map() -> None:
    rec = derive.variance("he", "tanh", block="F(x)").forward
    assert rec.closed_form is None and rec.growth.endswith(ITERATED)
    found = re.fullmatch(r"converges to ([0-9.]+)", rec.growth.removesuffix(ITERATED))
    assert found, rec.growth
    assert float(found[1]) == pytest.approx(_tanh_fixed_point(2.0), rel=2e-3)


def test_a_tanh_branch_scaled_by_a_half_decays_like_one_over_depth() -> None:
    # q_k = E[tanh(z)^2]/2 + ...: near 0, q_k = q_{k-1} - c q_{k-1}^2, so q_k ~ 1/(cK)
    rec = derive.variance("he", "tanh", branch="mlp", block="F(x)/2").backward
    assert rec.growth == "decays like 1/K" + ITERATED
    values = rec.iterated(800)
    assert values[800] * 800 == pytest.approx(values[400] * 400, rel=0.02)


# --- the label agrees with the trend of the recursion -------------------------------------
GRID_BLOCKS = ("none", "pre", "post", "rescaled", "bn-first", "sandwich", "fixup", "F(x)",
               "F(x)/2", "(x + F(x))/2", "x/sqrt(2) + F(LN(x))", "LN(x) + F(x)", "F(LN(x))")


def _grid():
    for block, init, activation in itertools.product(
            GRID_BLOCKS, ("xavier", "he", "lecun"), ("linear", "relu", "tanh", "gelu")):
        a = derive.variance(init, activation, block=block)
        yield from ((f"{block}|{init}|{activation}|forward", a.forward),
                    (f"{block}|{init}|{activation}|backward", a.backward))


def test_every_label_agrees_with_the_trend_of_the_iterated_recursion() -> None:
    seen = set()
    for name, rec in _grid():
        law = rec.growth.removesuffix(ITERATED)
        q0_value = 1 if rec.closed_form is None else 3  # an iterated label is read at q_0 = 1
        v10, v20 = rec.iterated(20, q0=q0_value)[10::10]
        limit = re.fullmatch(r"converges (?:exponentially )?to (\S+)", law)
        if law == "constant":
            kind = "constant"
            assert v20 == pytest.approx(v10, rel=1e-9), name
        elif limit:
            kind = "converges"
            far = rec.iterated(400, q0=q0_value)[-1]
            assert abs(v20 - far) <= abs(v10 - far) + 1e-12, name  # on its way to its limit
            assert far == pytest.approx(float(sympy.Rational(limit[1])), rel=5e-3), name
        elif law.startswith(("decays", "exponential decay")):
            kind = "decay"
            assert v20 < v10, (name, law)
        elif law.startswith(("exponential", "linear", "power law", "polynomial",
                             "faster than linear")):
            kind = "growth"
            assert v20 > v10, (name, law)
        else:
            raise AssertionError(f"{name}: a label the test does not know: {law!r}")
        seen.add(kind)
    assert seen == {"constant", "converges", "decay", "growth"}
