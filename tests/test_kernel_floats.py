"""The float kernels (derive.gaussian.kernel_floats), checked independently.

The closed forms against kernels.py's exact SymPy values; tanh against kernels.py's
adaptive quadrature (scipy.integrate.quad on tanh itself, at every q up to 1e4); gelu's
inner expectation against 1-D quadrature of gelu, and both against a seeded 2-D Monte Carlo
estimate; the derivative kernels against finite differences of the kernels (Price's
theorem); the diagonals against the one-point moments and means (exact SymPy).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import sympy
from scipy.integrate import quad

from derive.errors import DeriveError
from derive.gaussian import kernel_floats as kf
from derive.gaussian.kernel_floats import (
    FLOAT_ACTIVATIONS,
    FLOAT_PRECISION,
    derivative_kernel_float,
    kernel_float,
    mean_float,
    moment_float,
)
from derive.gaussian.kernels import derivative_kernel, kernel
from derive.gaussian.mean import gaussian_mean
from derive.gaussian.moments import gaussian_moment
from derive.inputs.choices import ACTIVATIONS

SLOPE = 0.1
QS = (1e-3, 0.1, 1.0, 4.0, 25.0, 100.0, 1000.0, 1e4)
RHOS = (-1.0, -0.999999, -0.7, 0.0, 0.3, 0.999999, 1.0)
CLOSED = ("linear", "relu", "leaky_relu", "erf")


def _phi(name: str, x: np.ndarray, derivative: bool) -> np.ndarray:
    """The activation (or its derivative) in NumPy, written from its definition."""
    from scipy.special import erf, ndtr

    if name == "linear":
        return np.ones_like(x) if derivative else x
    if name == "relu":
        return (x > 0).astype(float) if derivative else np.maximum(x, 0)
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, SLOPE) if derivative else np.where(x > 0, x, SLOPE * x)
    if name == "tanh":
        return 1 - np.tanh(x) ** 2 if derivative else np.tanh(x)
    if name == "gelu":
        density = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        return ndtr(x) + x * density if derivative else x * ndtr(x)
    assert name == "erf"
    return 2 / math.sqrt(math.pi) * np.exp(-x * x) if derivative else erf(x)


def _float(name: str, qa: float, qb: float, c: float, derivative: bool) -> float:
    function = derivative_kernel_float if derivative else kernel_float
    return function(name, qa, qb, c, SLOPE)


def _exact(name: str, qa: float, qb: float, rho: float, derivative: bool) -> float:
    """kernels.py at the same point, given as exact numbers (c = rho sqrt(q_a q_b))."""
    def r(t: float) -> sympy.Rational:
        return sympy.Rational(repr(t))

    c = r(rho) * sympy.sqrt(r(qa) * r(qb))
    function = derivative_kernel if derivative else kernel
    return float(sympy.N(function(name, r(qa), r(qb), c, negative_slope=r(SLOPE)), 30))


def _grid(qs: tuple[float, ...]) -> list[tuple[float, float, float]]:
    pairs = sorted({(qa, qb) for qa in qs for qb in (qa, 1.0, 1e4, 0.02)})
    return [(qa, qb, rho) for (qa, qb), rho in itertools.product(pairs, RHOS)]


# --- against kernels.py ------------------------------------------------------------

@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", CLOSED)
def test_closed_forms_equal_the_exact_kernels(name: str, derivative: bool) -> None:
    """Rounding only: relative 1e-13 of the kernel's scale (sqrt(q_a q_b) or 1)."""
    for qa, qb, rho in _grid(QS):
        got = _float(name, qa, qb, rho * math.sqrt(qa * qb), derivative)
        want = _exact(name, qa, qb, rho, derivative)
        scale = 1.0 if derivative else max(1.0, math.sqrt(qa * qb))
        assert abs(got - want) <= 1e-13 * scale, (name, derivative, qa, qb, rho, got, want)


QUICK = [(1.0, 1.0, 0.5), (9.0, 4.0, -1.0), (1e4, 1e4, 0.5), (1e4, 0.01, -0.999999),
         (228.9, 228.9, -0.97), (1e-3, 1e3, 1.0), (0.5, 0.5, 0.0), (3.0, 0.7, 0.999999)]


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_numerical_kernels_match_kernels_py(name: str, derivative: bool) -> None:
    """A few points, q up to 1e4 and rho = +-1: within FLOAT_PRECISION (absolute)."""
    for qa, qb, rho in QUICK:
        got = _float(name, qa, qb, rho * math.sqrt(qa * qb), derivative)
        want = _exact(name, qa, qb, rho, derivative)
        assert abs(got - want) <= FLOAT_PRECISION, (name, derivative, qa, qb, rho, got, want)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", [pytest.param("tanh", marks=pytest.mark.slow), "gelu"])
def test_numerical_kernels_match_kernels_py_on_a_grid(name: str, derivative: bool) -> None:
    """q_a, q_b from 1e-3 to 1e4 (equal and not), rho in {+-1, +-0.999999, -0.7, 0, 0.3}."""
    worst = max((abs(_float(name, qa, qb, rho * math.sqrt(qa * qb), derivative)
                     - _exact(name, qa, qb, rho, derivative)), qa, qb, rho)
                for qa, qb, rho in _grid(QS))
    assert worst[0] <= FLOAT_PRECISION, (name, derivative, worst)


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("m, s", [(0.0, 0.0), (0.7, 0.3), (-2.0, 1.5), (40.0, 30.0),
                                  (-3.0, 100.0), (0.01, 1e-3)])
def test_gelu_inner_expectation_matches_quadrature(m: float, s: float, derivative: bool) -> None:
    """E[gelu(m + s y)] and E[gelu'(m + s y)], y ~ N(0, 1), by 1-D adaptive quadrature of
    gelu itself (kernels.py shares the closed form, so this is its independent check)."""
    def integrand(y: float) -> float:
        return float(_phi("gelu", np.array(m + s * y), derivative)) * math.exp(-y * y / 2) / (
            math.sqrt(2 * math.pi))

    bend = -m / s if s else 0.0
    cuts = sorted({-12.0, 0.0, max(-12.0, min(12.0, bend)), 12.0})
    want = sum(quad(integrand, lo, hi, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
               for lo, hi in itertools.pairwise(cuts))
    inner = kf.gelu_prime_inner if derivative else kf.gelu_inner
    assert abs(float(inner(m, s)) - want) <= 1e-11 * max(1.0, abs(want))


# --- against Monte Carlo -----------------------------------------------------------

MC_POINTS = [(1.0, 1.0, 0.5), (2.0, 0.5, -0.7), (100.0, 100.0, 0.9), (1000.0, 4.0, -0.3),
             (0.3, 9.0, 1.0), (0.01, 0.05, 0.2)]


@pytest.fixture(scope="module")
def samples() -> dict[tuple[float, float, float], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20260211)
    out = {}
    for qa, qb, rho in MC_POINTS:
        x, y = rng.standard_normal((2, 400_000))
        u = math.sqrt(qa) * x
        v = math.sqrt(qb) * (rho * x + math.sqrt(1 - rho * rho) * y)
        out[(qa, qb, rho)] = (u, v)
    return out


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", FLOAT_ACTIVATIONS)
def test_kernels_match_monte_carlo(samples: dict, name: str, derivative: bool) -> None:
    """4 * 10^5 seeded samples per point; tolerance 5 standard errors of the sample mean."""
    for (qa, qb, rho), (u, v) in samples.items():
        got = _float(name, qa, qb, rho * math.sqrt(qa * qb), derivative)
        fu, fv = _phi(name, u, derivative), _phi(name, v, derivative)
        products = fu * fv
        mean, se = products.mean(), products.std() / math.sqrt(products.size)
        # the test can fail: 5 standard errors are below 5% of the kernel's largest
        # possible size, sqrt(E[f(u)^2] E[f(v)^2]) (Cauchy-Schwarz)
        assert 5 * se <= 0.05 * math.sqrt((fu * fu).mean() * (fv * fv).mean()) + 1e-12
        assert abs(got - mean) <= 5 * se + 1e-12, (name, derivative, qa, qb, rho, got, mean, se)


# --- identities --------------------------------------------------------------------

SPREAD = [(qa, qb, rho) for qa, qb in [(1e-3, 2.0), (0.3, 30.0), (1.0, 1e4), (50.0, 700.0),
                                       (1e4, 3.0)]
          for rho in (-1.0, -0.6, 0.0, 0.45, 0.999999)]


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", FLOAT_ACTIVATIONS)
def test_kernels_are_symmetric_in_the_two_inputs(name: str, derivative: bool) -> None:
    """K(q_a, q_b, c) = K(q_b, q_a, c): the rule integrates over u first, so the swap is a
    different computation."""
    for qa, qb, rho in SPREAD:
        c = rho * math.sqrt(qa * qb)
        one, other = _float(name, qa, qb, c, derivative), _float(name, qb, qa, c, derivative)
        assert abs(one - other) <= 2 * FLOAT_PRECISION, (name, qa, qb, rho, one, other)


@pytest.mark.parametrize("name", ["linear", "tanh", "erf"])
def test_odd_activations_flip_the_kernel_with_c(name: str) -> None:
    """phi odd: K(-c) = -K(c); phi' even: the derivative kernel is unchanged."""
    for qa, qb, rho in SPREAD:
        c = rho * math.sqrt(qa * qb)
        assert abs(_float(name, qa, qb, -c, False) + _float(name, qa, qb, c, False)) <= (
            2 * FLOAT_PRECISION)
        assert abs(_float(name, qa, qb, -c, True) - _float(name, qa, qb, c, True)) <= (
            2 * FLOAT_PRECISION)


@pytest.mark.parametrize("name", FLOAT_ACTIVATIONS)
def test_price_theorem_derivative_kernel_is_the_slope_in_c(name: str) -> None:
    """Price's theorem: dE[phi(u) phi(v)]/dc = E[phi'(u) phi'(v)]. The slope by central
    differences at steps h and h/2, extrapolated (Richardson: error O(h^4))."""
    for qa, qb, rho in SPREAD:
        if abs(rho) > 0.9:
            continue
        bound = math.sqrt(qa * qb)
        c, h = rho * bound, 1e-2 * bound

        def slope(step: float, qa: float = qa, qb: float = qb, c: float = c) -> float:
            return (_float(name, qa, qb, c + step, False)
                    - _float(name, qa, qb, c - step, False)) / (2 * step)

        estimate = (4 * slope(h / 2) - slope(h)) / 3
        want = _float(name, qa, qb, c, True)
        assert abs(estimate - want) <= 1e-6, (name, qa, qb, rho, estimate, want)


# --- the diagonals -----------------------------------------------------------------

DIAGONAL_QS = (1e-3, 0.5, 2.0, 25.0, 1000.0, 1e4)


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_moment_float_is_the_one_point_moment(name: str, derivative: bool) -> None:
    """Against derive.gaussian.moments (exact SymPy; tanh by its own quadrature)."""
    for q in DIAGONAL_QS:
        exact_q = sympy.Rational(repr(q))
        want = float(sympy.N(gaussian_moment(name, exact_q, derivative=derivative,
                                             negative_slope=sympy.Rational(1, 10)), 30))
        got = moment_float(name, q, derivative, SLOPE)
        assert abs(got - want) <= FLOAT_PRECISION * max(1.0, abs(want)), (name, q, got, want)
        assert abs(got - _float(name, q, q, q, derivative)) <= 1e-14 * max(1.0, abs(want))


@pytest.mark.parametrize("q", [1e-3, 0.5, 9.0, 1e4])
def test_erf_moment_by_quadrature(q: float) -> None:
    for derivative in (False, True):
        def integrand(x: float, derivative: bool = derivative) -> float:
            value = float(_phi("erf", np.array(math.sqrt(q) * x), derivative))
            return value * value * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

        want = sum(quad(integrand, lo, hi, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
                   for lo, hi in [(-12, 0), (0, 12)])
        assert abs(moment_float("erf", q, derivative) - want) <= 1e-12


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_mean_float_is_the_one_point_mean(name: str) -> None:
    for q in DIAGONAL_QS:
        exact_q = sympy.Rational(repr(q))
        want = float(sympy.N(gaussian_mean(name, exact_q, negative_slope=sympy.Rational(1, 10)),
                             30))
        got = mean_float(name, q, SLOPE)
        assert abs(got - want) <= 1e-13 * max(1.0, abs(want)), (name, q, got, want)


def test_erf_mean_is_zero_by_quadrature() -> None:
    def integrand(x: float) -> float:
        return math.erf(3.0 * x) * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    want = quad(integrand, -12, 0)[0] + quad(integrand, 0, 12)[0]
    assert abs(mean_float("erf", 9.0) - want) <= 1e-14


# --- edge cases --------------------------------------------------------------------

def _prime_mean(name: str, q: float) -> float:
    """E[phi'(z)], z ~ N(0, q), by quadrature of the definition."""
    def integrand(x: float) -> float:
        return float(_phi(name, np.array(math.sqrt(q) * x), True)) * math.exp(-x * x / 2) / (
            math.sqrt(2 * math.pi))

    return quad(integrand, -12, 0, epsabs=1e-14)[0] + quad(integrand, 0, 12, epsabs=1e-14)[0]


@pytest.mark.parametrize("name", FLOAT_ACTIVATIONS)
def test_a_zero_variance_uses_phi_at_zero(name: str) -> None:
    """q_a = 0: u = 0, so phi(u) = 0 and phi'(u) = phi'(0) (relu'(0) taken as 0)."""
    at_zero = float(_phi(name, np.array(0.0), True))
    for q in (0.3, 1e4):
        assert kernel_float(name, 0.0, q, 0.0, SLOPE) == 0.0
        assert kernel_float(name, q, 0, 0, SLOPE) == 0.0
        want = at_zero * _prime_mean(name, q)
        for qa, qb in ((0.0, q), (q, 0.0)):
            got = derivative_kernel_float(name, qa, qb, 0.0, SLOPE)
            assert abs(got - want) <= 1e-12, (name, qa, qb, got, want)
    assert derivative_kernel_float(name, 0.0, 0.0, 0.0, SLOPE) == pytest.approx(at_zero**2)


@pytest.mark.parametrize("name", FLOAT_ACTIVATIONS)
def test_c_rounded_past_the_bound_is_clipped(name: str) -> None:
    qa, qb = 2.0, 3.0
    bound = math.sqrt(qa * qb)
    for derivative in (False, True):
        at_one = _float(name, qa, qb, bound, derivative)
        assert _float(name, qa, qb, bound * (1 + 1e-15), derivative) == at_one
        assert _float(name, qa, qb, -bound * (1 + 1e-15), derivative) == _float(
            name, qa, qb, -bound, derivative)


@pytest.mark.parametrize("args, message", [
    (("relu", 1.0, 4.0, 2.5), "c must satisfy |c| <= sqrt(q_a q_b) = 2.0, got 2.5"),
    (("tanh", float("nan"), 1.0, 0.0), "q_a must be a finite number >= 0, got nan"),
    (("gelu", 1.0, float("inf"), 0.0), "q_b must be a finite number >= 0, got inf"),
    (("erf", -1.0, 1.0, 0.0), "q_a must be a finite number >= 0, got -1.0"),
    (("tanh", 1.0, 1.0, float("nan")), "c must satisfy |c| <= sqrt(q_a q_b) = 1.0, got nan"),
    (("softplus", 1.0, 1.0, 0.0), "unknown activation 'softplus'"),
    (("leaky_relu", 1.0, 1.0, 0.0, -0.1), "negative_slope must be a finite number >= 0"),
    (("relu", "one", 1.0, 0.0), "q_a must be a finite number >= 0, got 'one'"),
])
def test_bad_input_raises_one_clear_error(args: tuple, message: str) -> None:
    name, qa, qb, c, *slope = args
    for function in (kernel_float, derivative_kernel_float):
        with pytest.raises(DeriveError) as err:
            function(name, qa, qb, c, *slope)
        assert message in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(DeriveError, match="q must be"):
        moment_float("tanh", -2.0)
    with pytest.raises(DeriveError, match="q must be"):
        mean_float("relu", float("nan"))
