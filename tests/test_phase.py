"""The mean-field phase of plain networks against independent computations and the literature.

The checks here compute the maps on their own: one-dimensional Gaussian expectations by
``scipy.integrate.quad``, two-dimensional ones by a product Gauss-Hermite rule, and finite
networks by NumPy; none of them calls derive's kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import erf

from derive.errors import DeriveError
from derive.recursions.phase import critical_line, phase, trajectory

# --- independent maps --------------------------------------------------------------

SQRT_2PI = math.sqrt(2 * math.pi)
ACTIVATIONS = {
    "tanh": (np.tanh, lambda x: 4 * np.exp(-2 * abs(x)) / (1 + np.exp(-2 * abs(x))) ** 2),
    "erf": (erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-(x**2))),
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0) * 1.0),
    "gelu": (lambda x: x * (1 + erf(x / math.sqrt(2))) / 2,  # and gelu' = Phi + x phi
             lambda x: (1 + erf(x / math.sqrt(2))) / 2 + x * np.exp(-x * x / 2) / SQRT_2PI),
}
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(200)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def gauss(f, q: float) -> float:
    """E[f(sqrt(q) x)], x ~ N(0, 1), by adaptive quadrature."""
    s = math.sqrt(q)
    value, _ = quad(lambda x: f(s * x) * math.exp(-x * x / 2) / math.sqrt(2 * math.pi),
                    -math.inf, math.inf, epsabs=1e-14, epsrel=1e-13, limit=400)
    return value


def pair(f, q: float, rho: float) -> float:
    """E[f(u) f(v)], u, v ~ N(0, q) with correlation rho, by a 200 x 200 Gauss-Hermite rule."""
    x, y = NODES[:, None], NODES[None, :]
    u = math.sqrt(q) * x
    v = math.sqrt(q) * (rho * x + math.sqrt(max(0.0, 1 - rho * rho)) * y)
    return float((WEIGHTS[:, None] * WEIGHTS[None, :] * f(u) * f(v)).sum())


def length_map(name: str, w: float, b: float, q: float) -> float:
    phi = ACTIVATIONS[name][0]
    return w * gauss(lambda x: phi(x) ** 2, q) + b


def q_star(name: str, w: float, b: float, q: float = 1.0) -> float:
    """Iterate the length map until it stops moving."""
    for _ in range(5000):
        new = length_map(name, w, b, q)
        if abs(new - q) <= 1e-15 * max(1.0, q):
            return new
        q = new
    raise AssertionError("the length map did not settle")


def chi_1(name: str, w: float, b: float) -> float:
    q = q_star(name, w, b)
    dphi = ACTIVATIONS[name][1]
    return w * gauss(lambda x: dphi(x) ** 2, q)


def settle(step, start: float, tolerance: float) -> list[float]:
    """Iterate ``step`` from ``start`` until two iterates differ by less than ``tolerance``."""
    values = [start, step(start)]
    while abs(values[-1] - values[-2]) > tolerance:
        assert len(values) < 2000, "the map did not settle"
        values.append(step(values[-1]))
    return values


def rate(values: list[float]) -> float:
    """The ratio of successive differences at the end of a geometrically converging list."""
    d = np.diff(values)
    return float(d[-1] / d[-2])


# --- the literature ----------------------------------------------------------------

def test_tanh_critical_line_passes_through_one_at_zero_bias() -> None:
    # Poole et al. 2016 (Fig. 1 and the text: with sigma_b = 0 the transition is at
    # sigma_w = 1); Schoenholz et al. 2017 (Fig. 1, the critical line of tanh).
    assert critical_line("tanh", [0]) == [(0.0, 1.0)]
    assert phase("tanh", 1, 0).phase == "critical"
    # the line leaves sigma_w^2 = 1 continuously as sigma_b^2 grows from 0
    near = [w for _, w in critical_line("tanh", [1e-8, 1e-6, 1e-4])]
    assert 1 < near[0] < near[1] < near[2] < 1.1
    # on either side of sigma_w^2 = 1 at sigma_b^2 = 0: q* = 0 below, q* > 0 and chi_1 > 1 above
    assert phase("tanh", "0.99", 0).phase == "ordered"
    assert chi_1("tanh", 1.05, 0) > 1
    assert phase("tanh", "1.05", 0).phase == "chaotic"


def test_he_relu_has_chi_1_one() -> None:
    # He et al. 2015: sigma_w^2 = 2 keeps q constant through ReLU layers; chi_1 =
    # sigma_w^2 P(z > 0) = 1 (Schoenholz et al. 2017; Hayou et al. 2019: the ReLU edge of
    # chaos is the point (2, 0)).
    p = phase("relu", 2, 0)
    step_integral, _ = quad(lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi), 0, math.inf)
    assert p.chi_1 == pytest.approx(2 * step_integral, abs=1e-14) and p.chi_1 == 1.0
    assert p.phase == "critical"
    assert p.q_star is None and "q_k = q_0 at every depth" in p.reason
    assert [q for q, _ in trajectory("relu", 2, 0, "1.7", "0.3", 5)] == [1.7] * 6


def test_relu_arc_cosine_kernel_at_zero_correlation() -> None:
    # Cho & Saul 2009, the arc-cosine kernel of degree 1: at rho = 0,
    # E[relu(u) relu(v)] = q / (2 pi), so c' = sigma_w^2 q / (2 pi) and He gives rho' = 1/pi.
    (q0, rho0), (q1, rho1) = trajectory("relu", 2, 0, "1.7", 0, 1)
    assert (q0, rho0, q1) == (1.7, 0.0, 1.7)
    assert rho1 == pytest.approx(1 / math.pi, rel=1e-14)
    (_, _), (q1, rho1) = trajectory("relu", "1.3", 0, "1.7", 0, 1)
    assert rho1 * q1 == pytest.approx(1.3 * 1.7 / (2 * math.pi), rel=1e-14)


# --- depth scales against iterating the maps ---------------------------------------

@pytest.mark.parametrize("name, w, b", [("erf", 3, 0.1), ("tanh", 3, 0.3), ("tanh", 2.5, 0)])
def test_chaotic_xi_c_is_the_rate_of_approach_to_rho_star(name: str, w: float, b: float) -> None:
    # Schoenholz et al. 2017, eq. (9): |rho_k - rho*| ~ exp(-k / xi_c), xi_c = -1/ln chi_c.
    p = phase(name, w, b)
    assert p.phase == "chaotic"
    q = q_star(name, w, b)
    assert p.q_star == pytest.approx(q, rel=1e-12)
    phi = ACTIVATIONS[name][0]
    rhos = settle(lambda rho: (w * pair(phi, q, rho) + b) / q, 0.5, 1e-7)
    assert rhos[-1] == pytest.approx(p.rho_star, abs=1e-5)
    measured = rate(rhos)
    assert p.chi_c == pytest.approx(measured, abs=2e-5)
    assert p.xi_c == pytest.approx(-1 / math.log(measured), rel=1e-3)
    assert p.c_star == pytest.approx(p.rho_star * q, rel=1e-12)


@pytest.mark.parametrize("name, w, b", [("erf", 1, 0.3), ("tanh", 1.5, 0.05), ("tanh", 1.2, 0.3)])
def test_ordered_xi_c_is_the_rate_of_approach_to_one(name: str, w: float, b: float) -> None:
    p = phase(name, w, b)
    assert (p.phase, p.rho_star) == ("ordered", 1.0)
    q = q_star(name, w, b)
    phi = ACTIVATIONS[name][0]
    rhos = settle(lambda rho: (w * pair(phi, q, rho) + b) / q, 0.99, 1e-6)
    measured = rate(rhos)
    assert p.chi_1 == p.chi_c == pytest.approx(measured, abs=1e-4)
    assert p.chi_1 == pytest.approx(chi_1(name, w, b), rel=1e-10)
    assert p.xi_c == pytest.approx(-1 / math.log(measured), rel=1e-3)


@pytest.mark.parametrize("name, w, b", [("erf", 1, 0.3), ("erf", 3, 0.1), ("tanh", 1.5, 0.05),
                                        ("tanh", 4, 1)])
def test_xi_q_is_the_rate_of_approach_to_q_star(name: str, w: float, b: float) -> None:
    # Schoenholz et al. 2017: |q_k - q*| ~ exp(-k / xi_q), xi_q = -1/ln chi_q.
    p = phase(name, w, b)
    q = q_star(name, w, b)
    qs = settle(lambda x: length_map(name, w, b, x), 1.01 * q, 1e-8 * q)
    measured = rate(qs)
    assert p.chi_q == pytest.approx(measured, abs=1e-5)
    assert p.xi_q == pytest.approx(-1 / math.log(measured), rel=1e-4)


def test_odd_activation_without_bias_has_rho_star_zero() -> None:
    # Poole et al. 2016: with sigma_b = 0 and an odd phi, rho = 0 is a fixed point; in the
    # chaotic phase it attracts, with chi_c = sigma_w^2 E[phi'(u)]^2.
    p = phase("tanh", 2, 0)
    q = q_star("tanh", 2, 0)
    assert (p.rho_star, p.c_star) == (0.0, 0.0)
    assert p.chi_c == pytest.approx(2 * gauss(ACTIVATIONS["tanh"][1], q) ** 2, rel=1e-9)


# --- the critical line -------------------------------------------------------------

@pytest.mark.parametrize("name", ["tanh", "erf"])
def test_points_on_the_critical_line_have_chi_1_one(name: str) -> None:
    line = critical_line(name, [0.05, 0.5, 2])
    for b, w in line:
        assert chi_1(name, w, b) == pytest.approx(1, abs=1e-9)
        assert phase(name, w, b).phase == "critical"
        assert phase(name, w, b).xi_c == math.inf
    ws = [w for _, w in line]
    assert ws == sorted(ws)  # Poole et al. 2016, Fig. 1: the line rises with sigma_b^2


def test_numerically_critical_chaotic_side_leaves_rho_star_open() -> None:
    # sigma_b^2 = 0, sigma_w^2 just above 1: q* ~ 5e-8 > 0 and chi_1 - 1 ~ 3e-15; the
    # attracting rho* of an odd phi without bias would be 0, not 1, so no rho* is claimed.
    p = phase("tanh", "1.0000001", 0)
    root = brentq(lambda q: length_map("tanh", 1.0000001, 0, q) / q - 1, 1e-9, 1e-6,
                  xtol=1e-20)
    assert p.q_star == pytest.approx(root, rel=1e-5)
    assert (p.phase, p.rho_star, p.chi_c, p.xi_c) == ("critical", None, None, math.inf)
    assert "not resolved" in p.reason


def test_erf_critical_point_at_zero_bias() -> None:
    # erf'(0)^2 = 4/pi, so with q* = 0 the line meets sigma_b^2 = 0 at sigma_w^2 = pi/4.
    assert critical_line("erf", [0]) == [(0.0, pytest.approx(math.pi / 4, rel=1e-15))]
    p = phase("erf", "0.5", 0)
    assert (p.q_star, p.rho_star) == (0.0, None)
    assert p.chi_1 == pytest.approx(0.5 * 4 / math.pi, rel=1e-15)


def test_homogeneous_critical_lines() -> None:
    # chi_1 = sigma_w^2 E[phi'(z)^2] for relu (1/2), leaky_relu ((1 + a^2)/2), linear (1).
    assert critical_line("relu", [0, 3]) == [(0.0, 2.0), (3.0, 2.0)]
    leaky = critical_line("leaky_relu", [1], negative_slope="1/5")
    assert leaky == [(1.0, pytest.approx(2 / 1.04, rel=1e-15))]
    assert critical_line("linear", [0]) == [(0.0, 1.0)]


def test_tanh_one_point_moment_is_concave() -> None:
    """Why the tanh length map has one positive fixed point when sigma_b^2 > 0."""
    qs = np.geomspace(1e-3, 1e3, 60)
    v = np.array([gauss(lambda x: np.tanh(x) ** 2, q) for q in qs])
    slopes = np.diff(v) / np.diff(qs)
    assert np.all(np.diff(slopes) < 0)


# --- where q* does not exist ---------------------------------------------------------

@pytest.mark.parametrize("w, b, words, q_k", [
    (3, 0, "grows geometrically", lambda k: 1.5**k),
    (1, 0, "decays geometrically to 0", lambda k: 0.5**k),
    (2, "1/10", "grows linearly", lambda k: 1 + k / 10),
])
def test_relu_without_a_fixed_point_says_so(w, b, words, q_k) -> None:
    # E[relu(sqrt(q) z)^2] = q/2 (half the Gaussian second moment).
    p = phase("relu", w, b)
    assert p.q_star is None and p.rho_star is None and words in p.reason
    assert p.chi_1 == w / 2
    qs = [q for q, _ in trajectory("relu", w, b, 1, "0.5", 6)]
    assert qs == pytest.approx([q_k(k) for k in range(7)], rel=1e-14)


def test_relu_with_a_fixed_point() -> None:
    p = phase("relu", 1, "1/2")
    assert p.q_star == pytest.approx(q_star("relu", 1, 0.5), rel=1e-12)
    assert (p.rho_star, p.chi_1, p.chi_q, p.phase) == (1.0, 0.5, 0.5, "ordered")


def test_zero_weights_keep_only_the_bias() -> None:
    p = phase("tanh", 0, 1)
    assert (p.q_star, p.rho_star, p.chi_1, p.xi_q, p.xi_c) == (1.0, 1.0, 0.0, 0.0, 0.0)


@pytest.mark.slow
def test_gelu_fixed_point_and_critical_line() -> None:
    p = phase("gelu", "1.9", "0.5")
    assert p.q_star == pytest.approx(q_star("gelu", 1.9, 0.5), rel=1e-10)
    assert phase("gelu", 2.5, 0.1).q_star is None
    ((b, w),) = critical_line("gelu", [0.5])
    assert chi_1("gelu", w, b) == pytest.approx(1, abs=1e-9)


# --- finite networks ---------------------------------------------------------------

def simulate(name: str, w: float, b: float, q0: float, rho0: float, depth: int,
             width: int, seeds: int) -> np.ndarray:
    """(q_k, rho_k) for k = 1..depth of finite plain networks, one row per seed."""
    phi = ACTIVATIONS[name][0]
    runs = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        z1, z2 = rng.standard_normal((2, width))
        ha = math.sqrt(q0) * z1
        hb = math.sqrt(q0) * (rho0 * z1 + math.sqrt(1 - rho0**2) * z2)
        rows = []
        for _ in range(depth):
            weights = rng.standard_normal((width, width)) * math.sqrt(w / width)
            bias = rng.standard_normal(width) * math.sqrt(b)
            ha, hb = weights @ phi(ha) + bias, weights @ phi(hb) + bias
            qa, qb = np.mean(ha**2), np.mean(hb**2)
            rows.append(((qa + qb) / 2, np.mean(ha * hb) / math.sqrt(qa * qb)))
        runs.append(rows)
    return np.array(runs)


def _agree(name: str, w: float, b: float, rho0: float, depth: int, width: int,
           seeds: int) -> None:
    runs = simulate(name, w, b, 1.0, rho0, depth, width, seeds)
    maps = np.array(trajectory(name, w, b, 1, rho0, depth)[1:])
    mean = runs.mean(axis=0)
    error = runs.std(axis=0, ddof=1) / math.sqrt(seeds)
    assert np.all(np.abs(mean - maps) <= 5 * error + 5 / width), (mean, maps, error)


@pytest.mark.parametrize("w, b, rho0", [(1.2, 0.3, 0.2), (3, 0.1, 0.9)])
def test_finite_erf_network_follows_the_maps(w: float, b: float, rho0: float) -> None:
    _agree("erf", w, b, rho0, depth=4, width=600, seeds=6)


@pytest.mark.slow
@pytest.mark.parametrize("w, b, rho0", [(1.2, 0.3, 0.2), (4, 0.05, 0.9)])
def test_finite_tanh_network_follows_the_maps(w: float, b: float, rho0: float) -> None:
    assert phase("tanh", w, b).phase == ("ordered" if w < 2 else "chaotic")
    _agree("tanh", w, b, rho0, depth=5, width=1000, seeds=12)


# --- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("call, words", [
    (lambda: phase("tanh", -1, 0), "sigma_w2 must be a finite number >= 0"),
    (lambda: phase("tanh", 1, "-0.1"), "sigma_b2 must be a finite number >= 0"),
    (lambda: phase("tanh", float("nan"), 0), "got nan"),
    (lambda: phase("tanh", "inf", 0), "got 'inf'"),
    (lambda: phase("tanh", 1, float("inf")), "got inf"),
    (lambda: phase("tanh", "w", 0), "got 'w'"),
    (lambda: phase("tanh", 1e5, 0), "<= 10^4"),
    (lambda: phase("sigmoid", 1, 0), "unknown activation 'sigmoid'"),
    (lambda: phase(None, 1, 0), "unknown activation None"),
    (lambda: phase("leaky_relu", 1, 0, negative_slope=-1), "negative_slope"),
    (lambda: critical_line("tanh", "0.1"), "sigma_b2_values must be a list"),
    (lambda: critical_line("tanh", [0.1, -2]), "got -2"),
    (lambda: critical_line("softplus", [0]), "unknown activation"),
    (lambda: trajectory("tanh", 1, 0, 0, 0, 3), "q0 must be a number > 0"),
    (lambda: trajectory("tanh", 1, 0, 1, 2, 3), "rho0 must be a number in [-1, 1]"),
    (lambda: trajectory("tanh", 1, 0, 1, 0, -1), "depth must be an integer >= 0"),
])
def test_bad_input_is_one_line_naming_the_value(call, words: str) -> None:
    with pytest.raises(DeriveError) as caught:
        call()
    message = str(caught.value)
    assert words in message and "\n" not in message


def test_same_inputs_same_result() -> None:
    assert phase("erf", 2, "0.1") == phase("erf", 2, "0.1")
    assert critical_line("erf", [0.3]) == critical_line("erf", [0.3])
