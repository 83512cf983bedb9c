"""Two-point Gaussian expectations of the activations, checked independently.

Known results (with their sources) are produced by derive.gaussian.kernels and compared
with derive's one-point moments or with quadrature; every kernel and derivative kernel
is compared with a seeded 2-D Monte Carlo estimate, and the numerical tanh and GELU
kernels with an mpmath integral in the original (u, v) coordinates.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy

from derive.errors import DeriveError
from derive.gaussian.kernels import (
    KERNEL_ACTIVATIONS,
    STATED_PRECISION,
    derivative_kernel,
    kernel,
)
from derive.gaussian.moments import gaussian_moment

SLOPE = sympy.Rational(1, 10)


def _phi(name: str, x: np.ndarray, derivative: bool) -> np.ndarray:
    """The activation (or its derivative) in NumPy, written from its definition."""
    from scipy.special import erf, ndtr

    if name == "linear":
        return np.ones_like(x) if derivative else x
    if name == "relu":
        return (x > 0).astype(float) if derivative else np.maximum(x, 0)
    if name == "leaky_relu":
        a = float(SLOPE)
        return np.where(x > 0, 1.0, a) if derivative else np.where(x > 0, x, a * x)
    if name == "tanh":
        return 1 - np.tanh(x) ** 2 if derivative else np.tanh(x)
    if name == "gelu":
        density = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        return ndtr(x) + x * density if derivative else x * ndtr(x)
    assert name == "erf"
    return 2 / math.sqrt(math.pi) * np.exp(-x * x) if derivative else erf(x)


POINTS = [(1, 1, 0.5), (2, 0.5, -0.7), (9, 9, 0.9), (9, 4, -0.3), (0.3, 9, 0.99)]


@pytest.fixture(scope="module")
def samples() -> dict[tuple[float, float, float], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20260107)
    out = {}
    for qa, qb, rho in POINTS:
        x, y = rng.standard_normal((2, 10**6))
        u = math.sqrt(qa) * x
        v = math.sqrt(qb) * (rho * x + math.sqrt(1 - rho * rho) * y)
        out[(qa, qb, rho)] = (u, v)
    return out


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", KERNEL_ACTIVATIONS)
def test_kernels_match_monte_carlo(samples: dict, name: str, derivative: bool) -> None:
    """10^6 seeded samples per point; tolerance 5 standard errors of the sample mean."""
    function = derivative_kernel if derivative else kernel
    for (qa, qb, rho), (u, v) in samples.items():
        c = sympy.nsimplify(rho) * sympy.sqrt(sympy.nsimplify(qa) * sympy.nsimplify(qb))
        got = float(function(name, sympy.nsimplify(qa), sympy.nsimplify(qb), c,
                             negative_slope=SLOPE))
        fu, fv = _phi(name, u, derivative), _phi(name, v, derivative)
        products = fu * fv
        mean, se = products.mean(), products.std() / math.sqrt(products.size)
        # the test can fail: the tolerance is below 5% of the kernel's largest possible
        # size, sqrt(E[f(u)^2] E[f(v)^2]) (Cauchy-Schwarz)
        assert 5 * se <= 0.05 * math.sqrt((fu * fu).mean() * (fv * fv).mean()) + 1e-12
        assert abs(got - mean) <= 5 * se + 1e-12, (name, derivative, qa, qb, rho, got, mean, se)


def test_relu_at_zero_correlation_he() -> None:
    """Arc-cosine kernel at rho = 0 (Cho & Saul 2009): c' = sqrt(q_a q_b)/(2 pi); with He
    (sigma_w^2 = 2, so q = 2 after the weights) the next correlation is 1/pi."""
    q_a, q_b = sympy.symbols("q_a q_b", positive=True)
    assert sympy.simplify(kernel("relu", q_a, q_b, 0) - sympy.sqrt(q_a * q_b) / (2 * sympy.pi)) == 0
    rho_next = kernel("relu", 2, 2, 0) / gaussian_moment("relu", 2)
    assert sympy.simplify(rho_next - 1 / sympy.pi) == 0


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu"])
def test_kernel_on_the_diagonal_is_the_second_moment(name: str) -> None:
    """At rho = 1, u = v: E[phi(u)^2] and E[phi'(u)^2] (derive.gaussian.moments)."""
    q = sympy.Symbol("q", positive=True)
    for derivative, function in ((False, kernel), (True, derivative_kernel)):
        got = function(name, q, q, q, negative_slope=SLOPE)
        want = gaussian_moment(name, q, derivative=derivative, negative_slope=SLOPE)
        assert sympy.simplify(got - want) == 0, (name, derivative, got, want)


@pytest.mark.parametrize("name", ["tanh", "gelu"])
@pytest.mark.parametrize("q", [sympy.Rational(1, 2), 4, 25])
def test_numerical_kernel_on_the_diagonal_is_the_second_moment(name: str, q: sympy.Expr) -> None:
    for derivative, function in ((False, kernel), (True, derivative_kernel)):
        got = function(name, q, q, q)
        want = sympy.N(gaussian_moment(name, q, derivative=derivative), 20)
        assert abs(float(got - want)) <= STATED_PRECISION, (name, derivative, q, got, want)


@pytest.mark.parametrize("q", [sympy.Rational(1, 3), 2, 9])
def test_erf_on_the_diagonal_by_quadrature(q: sympy.Expr) -> None:
    """Williams (1997) arcsin kernel at c = q against 1-D quadrature of E[erf(z)^2]
    and E[erf'(z)^2], z ~ N(0, q)."""
    s = mpmath.sqrt(mpmath.mpf(q.p) / q.q) if isinstance(q, sympy.Rational) else mpmath.sqrt(q)

    def moment(f):
        return mpmath.quad(lambda x: f(s * x) ** 2 * mpmath.npdf(x), [-mpmath.inf, 0, mpmath.inf])

    got = sympy.N(kernel("erf", q, q, q), 20)
    assert abs(got - moment(mpmath.erf)) < 1e-15
    got = sympy.N(derivative_kernel("erf", q, q, q), 20)
    assert abs(got - moment(lambda z: 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-z * z))) < 1e-15


def _mpmath_kernel(f, qa: float, qb: float, c: float) -> float:
    """E[f(u) f(v)] by mpmath over the plane, in the rotated coordinates
    s = (u + v)/sqrt 2, t = (u - v)/sqrt 2 (along the density's ridge when q_a = q_b)."""
    det = qa * qb - c * c
    norm = 1 / (2 * mpmath.pi * mpmath.sqrt(det))
    r = mpmath.sqrt(2)

    def integrand(s, t):
        u, v = (s + t) / r, (s - t) / r
        return f(u) * f(v) * norm * mpmath.exp(-(qb * u * u - 2 * c * u * v + qa * v * v)
                                               / (2 * det))
    inf = mpmath.inf
    return float(mpmath.quad(integrand, [-inf, -2, 0, 2, inf], [-inf, -1, 0, 1, inf]))


def _gelu(z):
    return z * mpmath.ncdf(z)


@pytest.mark.slow
@pytest.mark.parametrize("name, f", [("tanh", mpmath.tanh), ("gelu", _gelu)])
@pytest.mark.parametrize("c", [10, -15])
def test_numerical_kernel_at_large_q_matches_mpmath(name: str, f, c: int) -> None:
    """q = 25 (sd 5), where a fixed 2-D Gauss-Hermite rule is inaccurate."""
    got = float(kernel(name, 25, 25, c))
    assert abs(got - _mpmath_kernel(f, 25, 25, c)) <= STATED_PRECISION


@pytest.mark.slow
@pytest.mark.parametrize("name, f", [
    ("tanh", lambda z: mpmath.sech(z) ** 2),
    ("gelu", lambda z: mpmath.ncdf(z) + z * mpmath.npdf(z))])
@pytest.mark.parametrize("qa, qb, c", [(25, 25, 24), (25, 25, -5)])
def test_numerical_derivative_kernel_matches_mpmath(name: str, f, qa, qb, c) -> None:
    got = float(derivative_kernel(name, qa, qb, c))
    assert abs(got - _mpmath_kernel(f, qa, qb, c)) <= STATED_PRECISION


@pytest.mark.parametrize("name, f, df", [
    ("tanh", mpmath.tanh, lambda z: mpmath.sech(z) ** 2),
    ("gelu", _gelu, lambda z: mpmath.ncdf(z) + z * mpmath.npdf(z))])
def test_numerical_kernel_at_zero_correlation_factorizes(name: str, f, df) -> None:
    """At c = 0, u and v are independent: E[f(u)] E[f(v)], each a 1-D mpmath integral,
    at q = 25 and q = 9 (where a fixed Gauss-Hermite rule is inaccurate)."""
    def mean(g, q):
        s = mpmath.sqrt(q)
        return mpmath.quad(lambda x: g(s * x) * mpmath.npdf(x),
                           [-mpmath.inf, -1 / s, 0, 1 / s, mpmath.inf])

    for function, g in ((kernel, f), (derivative_kernel, df)):
        want = mean(g, 25) * mean(g, 9)
        assert abs(float(function(name, 25, 9, 0)) - want) <= STATED_PRECISION


def test_leaky_relu_interpolates_linear_and_relu() -> None:
    """Slope 0 is relu, slope 1 is linear (an identity of the expansion)."""
    q_a, q_b, c = sympy.Symbol("q_a", positive=True), sympy.Symbol("q_b", positive=True), 1
    for function in (kernel, derivative_kernel):
        assert sympy.simplify(function("leaky_relu", q_a, q_b, c, negative_slope=0)
                              - function("relu", q_a, q_b, c)) == 0
        assert sympy.simplify(function("leaky_relu", q_a, q_b, c, negative_slope=1)
                              - function("linear", q_a, q_b, c)) == 0


@pytest.mark.parametrize("args, message", [
    (("relu", 1, 4, 3), "c must satisfy |c| <= sqrt(q_a q_b) = 2, got 3"),
    (("tanh", 1, 1, -1.5), "got -1.5"),
    (("relu", 0, 1, 0), "q_a must be a number > 0 or a symbol, got 0"),
    (("gelu", 1, -2, 0), "q_b must be a number > 0 or a symbol, got -2"),
    (("softplus", 1, 1, 0), "unknown activation 'softplus'"),
    (("relu", float("nan"), 1, 0), "q_a must be a finite number"),
    (("tanh", "q", "q", 0), "the tanh kernel is numerical"),
    (("leaky_relu", 1, 1, 0, -1), "negative_slope must be a real number >= 0, got -1"),
])
def test_bad_input_raises_one_clear_error(args: tuple, message: str) -> None:
    name, qa, qb, c, *slope = args
    for function in (kernel, derivative_kernel):
        with pytest.raises(DeriveError) as err:
            function(name, qa, qb, c, negative_slope=slope[0] if slope else SLOPE)
        assert message in str(err.value)
        assert "\n" not in str(err.value)
