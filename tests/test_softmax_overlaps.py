"""The softmax overlaps against independent computations.

Monte Carlo on sampled logits, the logits' law from real finite weight matrices, the
full chain matrices -> softmax -> overlaps, the same integrals at twice the resolution,
direct quadratures for two and three tokens, the exact limits, the large-n behaviour,
the tied mode's deterministic attention matrix, and bad input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import sympy
from scipy import integrate
from scipy.special import expit

from derive.errors import DeriveError
from derive.gaussian.softmax import (
    MAX_LOGIT_VARIANCE,
    MAX_TOKENS,
    OVERLAP_PRECISION,
    Overlaps,
    _overlaps,
    gaussian_overlaps,
    large_n_overlaps,
    tied_overlaps,
    uniform_overlaps,
)


def _four(p: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Per row: sum P^2, sum P P', and the two logit-path sums (rows of p and p2)."""
    same = np.sum(p * p, axis=-1)
    cross = np.sum(p * p2, axis=-1)
    same_logit = np.sum(p * p * (1 - 2 * p + same[..., None]), axis=-1)
    cross_logit = np.sum(p * p2 * (1 - p - p2 + cross[..., None]), axis=-1)
    return np.stack([same, cross, same_logit, cross_logit], axis=-1)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _as_array(o: Overlaps) -> np.ndarray:
    return np.array([o.same, o.cross, o.same_logit, o.cross_logit])


# ----------------------------------------------------------------------------- Monte Carlo

MC_CASES = [(2, 0.1, -0.5), (2, 20.0, 0.9), (3, 1.0, 0.0), (3, 4.0, -0.5), (16, 4.0, 0.5),
            (16, 1.0, 1.0), (16, 20.0, 0.0), (64, 0.1, 0.9), (64, 1.0, -0.5), (64, 20.0, 0.5)]


@pytest.mark.parametrize(("n", "v", "r"), MC_CASES)
def test_overlaps_match_monte_carlo_on_sampled_logits(n: int, v: float, r: float) -> None:
    rng = np.random.default_rng(20240 + n)
    rows, chunk = 200_000, 25_000
    sums = []
    for _ in range(rows // chunk):
        z = rng.standard_normal((chunk, n))
        u = math.sqrt(v) * z
        w = math.sqrt(v) * (r * z + math.sqrt(1 - r * r) * rng.standard_normal((chunk, n)))
        sums.append(_four(_softmax(u), _softmax(w)))
    sample = np.concatenate(sums)
    mean = sample.mean(axis=0)
    error = sample.std(axis=0) / math.sqrt(rows)
    got = _as_array(gaussian_overlaps(n, v, r))
    z_scores = (got - mean) / np.maximum(error, 1e-15)
    assert np.all(np.abs(z_scores) < 4), (got, mean, z_scores)


# ----------------------------------------------------------------------------- finite matrices

def _tokens(rng: np.random.Generator, n: int, width: int, q: float, c: float) -> np.ndarray:
    """n tokens in R^width whose empirical kernel x x^T / width is exactly c 11^T + (q-c) I."""
    kernel = c * np.ones((n, n)) + (q - c) * np.eye(n)
    basis, _ = np.linalg.qr(rng.standard_normal((width, n)))
    return math.sqrt(width) * np.linalg.cholesky(kernel) @ basis.T


def _logits(rng: np.random.Generator, x: np.ndarray, heads: int, s_q: float,
            s_k: float) -> np.ndarray:
    """One draw of W_Q, W_K (Var sQ/D, sK/D): the logits, shape (heads, n, n)."""
    n, width = x.shape
    d_h = width // heads
    w_q = rng.standard_normal((width, width)) * math.sqrt(s_q / width)
    w_k = rng.standard_normal((width, width)) * math.sqrt(s_k / width)
    queries = (x @ w_q).reshape(n, heads, d_h).transpose(1, 0, 2)
    keys = (x @ w_k).reshape(n, heads, d_h).transpose(1, 0, 2)
    return queries @ keys.transpose(0, 2, 1) / math.sqrt(d_h)


def test_logits_of_finite_matrices_have_the_covariance_sq_sk_kia_kjb() -> None:
    rng = np.random.default_rng(7)
    q, c, s_q, s_k, width, heads = 1.5, 0.6, 1.3, 0.7, 512, 8
    x = _tokens(rng, 4, width, q, c)
    kernel = x @ x.T / width
    samples = np.concatenate([_logits(rng, x, heads, s_q, s_k) for _ in range(300)])
    # (i, j, a, b): same row same key; same row two keys; two rows same key; all different
    cases = [(0, 1, 0, 1), (0, 1, 0, 2), (0, 2, 1, 2), (0, 2, 1, 3), (0, 0, 1, 1)]
    for i, j, a, b in cases:
        product = samples[:, i, j] * samples[:, a, b]
        expected = s_q * s_k * kernel[i, a] * kernel[j, b]
        error = product.std() / math.sqrt(product.size)
        assert abs(product.mean() - expected) < 4 * error, (i, j, a, b, product.mean(), expected)
    assert abs(samples.mean()) < 4 * samples.std() / math.sqrt(samples.size)


def test_finite_width_chain_matrices_softmax_overlaps_matches_the_mean_field() -> None:
    """D = 1024, 8 heads of 128 units, 8 tokens: each (draw, head) gives one sample of the
    four overlaps averaged over its rows (S, QS) and pairs of rows (X, QX). The logits are
    sums of 128 products, so their law is Gaussian only up to O(1/d_h): the test allows
    Monte Carlo error only (4 standard errors), i.e. it bounds the finite-width deviation
    by about 1% of each overlap.
    """
    rng = np.random.default_rng(11)
    n, q, c, width, heads = 8, 2.0, 0.5, 1024, 8
    x = _tokens(rng, n, width, q, c)
    per_sample = []
    pairs = [(i, a) for i in range(n) for a in range(n) if i != a]
    first, second = np.array(pairs).T
    for _ in range(120):
        p = _softmax(_logits(rng, x, heads, 1.0, 1.0))  # (heads, n, n)
        same = _four(p, p)[..., [0, 2]].mean(axis=1)
        cross = _four(p[:, first], p[:, second])[..., [1, 3]].mean(axis=1)
        per_sample.append(np.stack([same[:, 0], cross[:, 0], same[:, 1], cross[:, 1]], -1))
    sample = np.concatenate(per_sample)
    mean = sample.mean(axis=0)
    error = sample.std(axis=0) / math.sqrt(len(sample))
    got = _as_array(gaussian_overlaps(n, q * (q - c), c / q))
    assert np.all(np.abs(got - mean) < 4 * error), (got, mean, (got - mean) / error)


# ----------------------------------------------------------------------------- precision

PRECISION_CASES = [(n, v, r) for n in (2, 64, MAX_TOKENS)
                   for v in (1e-6, 0.6, 3.0, 30.0, MAX_LOGIT_VARIANCE)
                   for r in (-1.0, -0.6, 0.3, 0.97)]


def test_overlaps_agree_with_the_integrals_at_twice_the_resolution() -> None:
    worst = 0.0
    for n, v, r in PRECISION_CASES:
        fine = _as_array(_overlaps(n, v, r, 2))
        worst = max(worst, float(np.max(np.abs(_as_array(gaussian_overlaps(n, v, r)) - fine))))
    assert worst < OVERLAP_PRECISION / 10, worst


def _gauss(f: Callable[[float], float], var: float) -> float:
    """E[f(Y)], Y ~ N(0, var), by adaptive quadrature."""
    s = math.sqrt(var)
    value, _ = integrate.quad(lambda y: f(y) * math.exp(-y * y / (2 * var)),
                              -12 * s, 12 * s, epsabs=1e-13, epsrel=1e-12, limit=400,
                              points=[0.0])
    return value / (s * math.sqrt(2 * math.pi))


def _two_tokens(v: float, r: float) -> np.ndarray:
    """n = 2 directly: P = (p, 1 - p), p = sigmoid(u_1 - u_2); the differences of the two
    rows are bivariate normal, variance 2v each, correlation r.
    """
    var = 2 * v

    def same_terms(y: float) -> tuple[float, float]:
        p = float(expit(y))
        s = p * p + (1 - p) ** 2
        return s, p * p * (1 - 2 * p + s) + (1 - p) ** 2 * (1 - 2 * (1 - p) + s)

    same = _gauss(lambda y: same_terms(y)[0], var)
    same_logit = _gauss(lambda y: same_terms(y)[1], var)
    if abs(r) == 1.0:
        def cross_terms(y: float) -> tuple[float, float]:
            p, p2 = float(expit(y)), float(expit(r * y))
            x = p * p2 + (1 - p) * (1 - p2)
            return x, (p * p2 * (1 - p - p2 + x)
                       + (1 - p) * (1 - p2) * (1 - (1 - p) - (1 - p2) + x))
        return np.array([same, _gauss(lambda y: cross_terms(y)[0], var), same_logit,
                         _gauss(lambda y: cross_terms(y)[1], var)])
    cond_var = var * (1 - r * r)

    def inner(y: float, k: int) -> float:  # E over the second row given the first
        p = float(expit(y))

        def g(e: float) -> float:
            p2 = float(expit(r * y + e))
            x = p * p2 + (1 - p) * (1 - p2)
            if k == 0:
                return x
            return p * p2 * (1 - p - p2 + x) + (1 - p) * (1 - p2) * (p + p2 - 1 + x)
        return _gauss(g, cond_var)

    cross = _gauss(lambda y: inner(y, 0), var)
    cross_logit = _gauss(lambda y: inner(y, 1), var)
    return np.array([same, cross, same_logit, cross_logit])


@pytest.mark.parametrize(("v", "r"), [(0.05, 0.4), (1.0, -0.7), (4.0, 0.9), (25.0, 1.0),
                                      (MAX_LOGIT_VARIANCE, -1.0), (MAX_LOGIT_VARIANCE, 0.5)])
def test_two_tokens_agree_with_direct_quadrature_of_the_sigmoid(v: float, r: float) -> None:
    direct = _two_tokens(v, r)
    assert np.max(np.abs(_as_array(gaussian_overlaps(2, v, r)) - direct)) < 1e-9


@pytest.mark.parametrize("v", [0.2, 2.0, 16.0])
def test_three_tokens_same_row_agrees_with_a_double_integral(v: float) -> None:
    """n = 3: d_2 = u_2 - u_1, d_3 = u_3 - u_1 (variance 2v, covariance v), P_1 = 1 / (1 +
    e^d_2 + e^d_3), P_2 = e^d_2 P_1; S = 3 E[P_1^2], QS = 3 E[P_1^2] - 6 E[P_1^3] +
    3 E[P_1^4] + 6 E[P_1^2 P_2^2].
    """
    s = math.sqrt(v)

    def moment(f: Callable[[float, float], float]) -> float:
        def density(d2: float, d3: float) -> float:
            det = 3 * v * v
            quad = (2 * v * d2 * d2 - 2 * v * d2 * d3 + 2 * v * d3 * d3) / det
            return math.exp(-quad / 2) / (2 * math.pi * math.sqrt(det))

        def g(d3: float, d2: float) -> float:
            p1 = 1 / (1 + math.exp(d2) + math.exp(d3))
            return f(p1, math.exp(d2) * p1) * density(d2, d3)
        lim = 12 * s
        value, _ = integrate.dblquad(g, -lim, lim, -lim, lim, epsabs=1e-13, epsrel=1e-11)
        return value

    same = 3 * moment(lambda p1, p2: p1 * p1)
    same_logit = same - 6 * moment(lambda p1, p2: p1**3) + 3 * moment(
        lambda p1, p2: p1**4) + 6 * moment(lambda p1, p2: p1 * p1 * p2 * p2)
    o = gaussian_overlaps(3, v, 0.3)
    assert abs(o.same - same) < 1e-9 and abs(o.same_logit - same_logit) < 1e-9


# ----------------------------------------------------------------------------- limits

@pytest.mark.parametrize("n", [2, 5, 64, MAX_TOKENS])
def test_zero_variance_is_uniform_attention(n: int) -> None:
    o = gaussian_overlaps(n, 0.0, 0.3)
    assert (o.same, o.cross) == (1 / n, 1 / n)
    # uniform P = 1/n: sum_j n^-2 (1 - 2/n + 1/n)
    assert o.same_logit == o.cross_logit == pytest.approx((1 - 1 / n) / n, abs=1e-15)
    near = gaussian_overlaps(n, 1e-9, 0.3)
    assert np.max(np.abs(_as_array(near) - _as_array(o))) < 1e-8


@pytest.mark.parametrize(("n", "v"), [(2, 0.01), (3, 1.0), (16, 9.0), (64, 60.0), (4096, 2.0)])
def test_fully_correlated_rows_give_cross_equal_to_same(n: int, v: float) -> None:
    """r = 1 runs the two-row double integrals; S and QS come from the one-row integrals."""
    o = gaussian_overlaps(n, v, 1.0)
    assert abs(o.cross - o.same) < 1e-9 and abs(o.cross_logit - o.same_logit) < 1e-9


def test_one_token_attends_to_itself() -> None:
    for v, r in ((0.0, 0.0), (5.0, -1.0), (MAX_LOGIT_VARIANCE, 1.0)):
        assert gaussian_overlaps(1, v, r) == Overlaps(1.0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize("n", [2, 16])
def test_large_variance_concentrates_attention(n: int) -> None:
    """S rises towards 1 with v, and 1 - S falls like 1/sigma: the largest logit leads the
    others by a gap of order sigma, and softmax splits its weight only within O(1) of it.
    For n = 2, 1 - S = 2 E[p (1 - p)] -> 2 * density of u_1 - u_2 at 0 = 1/sqrt(pi v).
    """
    variances = [1.0, 4.0, 16.0, 25.0, 50.0, MAX_LOGIT_VARIANCE]
    same = [gaussian_overlaps(n, v, 0.0).same for v in variances]
    assert all(a < b < 1 for a, b in itertools.pairwise(same))
    assert 0.45 < (1 - same[-1]) / (1 - same[3]) < 0.6
    if n == 2:
        assert abs((1 - same[-1]) * math.sqrt(math.pi * MAX_LOGIT_VARIANCE) - 1) < 0.02


@pytest.mark.parametrize(("v", "r"), [(0.25, 0.5), (0.5, -0.5), (1.0, 0.8)])
def test_large_n_approaches_e_v_over_n(v: float, r: float) -> None:
    """At n = 4096 the overlaps are within O(1/n) (relative) of the large-n forms, and the
    gap shrinks about four-fold from n = 1024 to 4096.
    """
    gaps = []
    for n in (1024, 4096):
        exact, leading = _as_array(gaussian_overlaps(n, v, r)), _as_array(large_n_overlaps(n, v, r))
        gaps.append(np.abs(exact / leading - 1))
    assert np.all(gaps[1] < 10 * math.exp(2 * v) / 4096)
    assert np.all((gaps[0] / gaps[1] > 3) & (gaps[0] / gaps[1] < 5))


# ----------------------------------------------------------------------------- tied, uniform

def _tied_direct(n: int, w: float) -> tuple[float, float]:
    p = _softmax(w * np.eye(n))
    same = float(np.mean(np.sum(p * p, axis=1)))
    overlap = p @ p.T
    cross = float((overlap.sum() - np.trace(overlap)) / (n * (n - 1)))
    return same, cross


@pytest.mark.parametrize(("n", "w"), [(2, 0.0), (3, 1.5), (7, -0.8), (50, 2.5), (200, 6.0)])
def test_tied_overlaps_match_the_deterministic_attention_matrix(n: int, w: float) -> None:
    same, cross = tied_overlaps(n, w)
    assert isinstance(same, float)
    assert np.allclose((same, cross), _tied_direct(n, w), rtol=1e-12, atol=1e-15)
    exact = tied_overlaps(sympy.Integer(n), sympy.Rational(str(w)))
    assert np.allclose([float(e) for e in exact], _tied_direct(n, w), rtol=1e-12, atol=1e-15)


def test_tied_overlaps_with_a_symbolic_number_of_tokens() -> None:
    n, w = sympy.Symbol("n", positive=True, integer=True), sympy.Symbol("w", real=True)
    same, cross = tied_overlaps(n, w)
    assert same.free_symbols == {n, w}
    for value, weight in ((5, 0.7), (2, -1.0), (12, 3.0)):
        got = [float(e.subs({n: value, w: weight})) for e in (same, cross)]
        assert np.allclose(got, _tied_direct(value, weight), rtol=1e-12)
    assert tied_overlaps(1, 0.4) == (1, 1) and tied_overlaps(sympy.Integer(1), w) == (1, 1)


def test_uniform_overlaps_are_one_over_n() -> None:
    p = np.full((6, 6), 1 / 6)
    assert uniform_overlaps(6) == (sympy.Rational(1, 6), sympy.Rational(1, 6))
    assert uniform_overlaps(6.0) == pytest.approx((np.sum(p[0] ** 2), np.sum(p[0] * p[1])))
    n = sympy.Symbol("n", positive=True)
    assert uniform_overlaps(n) == (1 / n, 1 / n)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(("n", "v", "r", "word"), [
    (0, 1.0, 0.0, "tokens"), (MAX_TOKENS + 1, 1.0, 0.0, "tokens"), (2.5, 1.0, 0.0, "tokens"),
    (True, 1.0, 0.0, "tokens"), (4, -0.1, 0.0, "variance"),
    (4, MAX_LOGIT_VARIANCE * 1.01, 0.0, "variance"), (4, math.nan, 0.0, "variance"),
    (4, math.inf, 0.0, "variance"), (4, 1.0, 1.2, "correlation"),
    (4, 1.0, -1.0001, "correlation"), (4, 1.0, math.nan, "correlation"),
    (4, "1", 0.0, "variance")])
def test_bad_input_gets_one_line_naming_the_value(n: object, v: object, r: object,
                                                  word: str) -> None:
    for function in (gaussian_overlaps, large_n_overlaps):
        with pytest.raises(DeriveError) as err:
            function(n, v, r)  # type: ignore[arg-type]
        message = str(err.value)
        assert "\n" not in message and word in message and repr(
            n if word == "tokens" else v if word == "variance" else r) in message


@pytest.mark.parametrize("n", [2, 16, 4096])
@pytest.mark.parametrize("r", [-1.0, 0.0, 0.9, 1.0])
def test_a_tiny_variance_is_within_the_precision_of_the_quadrature(n: int, r: float) -> None:
    """Below TINY_VARIANCE the values at v = 0 stand in: against the quadrature itself."""
    from derive.gaussian.softmax import TINY_VARIANCE, _overlaps

    v = 0.9 * TINY_VARIANCE
    quick, full = gaussian_overlaps(n, v, r), _overlaps(n, v, r, 1)
    for a, b in zip((quick.same, quick.cross, quick.same_logit, quick.cross_logit),
                    (full.same, full.cross, full.same_logit, full.cross_logit), strict=True):
        assert abs(a - b) < 1e-9
