"""Two-point Gaussian expectations of an activation: the kernel and the derivative kernel.

For u, v jointly Gaussian with E[u^2] = q_a, E[v^2] = q_b, E[uv] = c
(|c| <= sqrt(q_a q_b), rho = c / sqrt(q_a q_b)):

* :func:`kernel` is E[phi(u) phi(v)],
* :func:`derivative_kernel` is E[phi'(u) phi'(v)].

Closed forms, exact SymPy expressions (symbols allowed):

* linear: c and 1;
* relu: the arc-cosine kernel of degree 1 (Cho & Saul 2009),
  sqrt(q_a q_b) (sin t + (pi - t) cos t) / (2 pi) with t = arccos(rho), and the
  degree-0 kernel P(u > 0, v > 0) = (pi - t) / (2 pi) (Sheppard's orthant probability);
* leaky_relu with slope a: leaky(z) = (1 - a) relu(z) + a z; the product is expanded
  by SymPy and each cross term E[relu(u) v] = c E[1(u > 0)] = c/2 comes from Stein's
  lemma (E[v g(u)] = c E[g'(u)]); the derivative (1 - a) 1(u > 0) + a likewise;
* erf (phi = erf z): the arcsin kernel (Williams 1997),
  (2/pi) arcsin(2c / sqrt((1 + 2 q_a)(1 + 2 q_b))), and, with erf'(z) = 2 e^{-z^2}/sqrt(pi),
  (4/pi) E[e^{-u^2 - v^2}] = (4/pi) / sqrt((1 + 2 q_a)(1 + 2 q_b) - 4 c^2).

tanh and gelu have no closed form here: they are computed numerically and returned as
``sympy.Float`` (numbers only). With u = sqrt(q_a) x and
v = m + s y, m = sqrt(q_b) rho x, s = sqrt(q_b (1 - rho^2)), x, y independent N(0, 1),
the expectation over y is done first: in closed form for gelu (Gaussian integrals of
Phi and of the density, :func:`derive.gaussian.kernel_floats.gelu_inner`), by adaptive
quadrature (``scipy.integrate.quad``) for tanh;
the outer x integral is adaptive quadrature too, split where phi bends (x = 0 and
y = -m/s), over |x|, |y| <= ``CUTOFF`` (the Gaussian mass left out is below 1e-30).
Both levels ask for ``QUAD_TOLERANCE`` absolute and relative error; the values agree
with independent mpmath integrals in (u, v) to better than ``STATED_PRECISION``
(absolute), checked in tests/test_kernels.py at q up to 25 (the differences seen there
are 1e-12 or smaller; on the diagonal, against the one-point moments, below 1e-14
for q from 1/10 to 100).

>>> from derive.gaussian.kernels import kernel, derivative_kernel
>>> kernel("relu", 2, 2, 0)
1/pi
>>> derivative_kernel("relu", 1, 1, 1)
1/2
>>> kernel("erf", 1, 1, 1)
2*asin(2/3)/pi
>>> round(float(kernel("tanh", 9, 9, -3)), 8)
-0.19800956
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import sympy

from derive.errors import DeriveError, choice_error
from derive.gaussian.kernel_floats import gelu_inner, gelu_prime_inner
from derive.inputs.numbers import exact

__all__ = ["KERNEL_ACTIVATIONS", "STATED_PRECISION", "derivative_kernel", "kernel"]

#: The activations with two-point expectations.
KERNEL_ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "gelu", "erf")
#: Absolute and relative tolerance asked of each level of the nested quadrature.
QUAD_TOLERANCE = 1e-11
#: The absolute error of the numerical (tanh, gelu) kernels, verified in the tests.
STATED_PRECISION = 1e-9
#: The integrals over x and y run over [-CUTOFF, CUTOFF].
CUTOFF = 12.0
#: The default negative slope of leaky_relu (as in derive.gaussian.moments).
DEFAULT_SLOPE = sympy.Rational(1, 100)


# --- input checks ------------------------------------------------------------------

def _check_activation(activation: object) -> str:
    if not isinstance(activation, str) or activation not in KERNEL_ACTIVATIONS:
        raise choice_error("activation", activation, KERNEL_ACTIVATIONS)
    return activation


def _check_variance(value: object, name: str) -> sympy.Expr:
    expr = exact(value, name)
    if expr.is_number and not expr.is_positive:
        raise DeriveError(f"{name} must be a number > 0 or a symbol, got {value!r}")
    if expr.is_nonpositive:
        raise DeriveError(f"{name} must be positive, got {value!r}")
    return expr


def _check_state(q_a: object, q_b: object, c: object) -> tuple[sympy.Expr, sympy.Expr,
                                                               sympy.Expr]:
    qa, qb = _check_variance(q_a, "q_a"), _check_variance(q_b, "q_b")
    cov = exact(c, "c")
    if cov.is_number and qa.is_number and qb.is_number and cov**2 > qa * qb:
        raise DeriveError(
            f"c must satisfy |c| <= sqrt(q_a q_b) = {sympy.sqrt(qa * qb)}, got {c!r}")
    return qa, qb, cov


def _check_slope(slope: object) -> sympy.Expr:
    value = exact(slope, "negative_slope")
    if value.is_number and value < 0:
        raise DeriveError(f"negative_slope must be a real number >= 0, got {slope!r}")
    return value


# --- closed forms ------------------------------------------------------------------

def _relu(qa: sympy.Expr, qb: sympy.Expr, c: sympy.Expr, derivative: bool) -> sympy.Expr:
    """The arc-cosine kernels of degree 1 (forward) and 0 (derivative)."""
    t = sympy.acos(c / sympy.sqrt(qa * qb))
    if derivative:
        return (sympy.pi - t) / (2 * sympy.pi)
    return sympy.sqrt(qa * qb) / (2 * sympy.pi) * (sympy.sin(t) + (sympy.pi - t) * sympy.cos(t))


#: Placeholders for the expansion of the leaky ReLU product.
_R_U, _R_V, _U, _V = sympy.symbols("relu_u relu_v u v")


def _leaky(qa: sympy.Expr, qb: sympy.Expr, c: sympy.Expr, slope: sympy.Expr,
           derivative: bool) -> sympy.Expr:
    """Expand ((1-a) r(u) + a l(u)) ((1-a) r(v) + a l(v)) and take each term's expectation.

    Forward: r = relu, l = identity; E[relu(u) relu(v)] is the arc-cosine kernel,
    E[relu(u) v] = c E[1(u > 0)] = c/2 (Stein), E[u v] = c. Derivative: r = 1(z > 0),
    l = 1; E[r(u) r(v)] is the degree-0 kernel, E[r] = 1/2, E[1] = 1.
    """
    product = sympy.expand(((1 - slope) * _R_U + slope * _U) * ((1 - slope) * _R_V + slope * _V))
    half = sympy.Rational(1, 2)
    cross = half if derivative else c * half
    moments = {_R_U * _R_V: _relu(qa, qb, c, derivative), _R_U * _V: cross, _U * _R_V: cross,
               _U * _V: 1 if derivative else c}
    total = sympy.Integer(0)
    for term in sympy.Add.make_args(product):
        coeff, monomial = term.as_independent(_R_U, _R_V, _U, _V, as_Add=False)
        total += coeff * moments[monomial]
    return total


def _erf(qa: sympy.Expr, qb: sympy.Expr, c: sympy.Expr, derivative: bool) -> sympy.Expr:
    """The arcsin kernel (Williams 1997) and the kernel of erf'(z) = 2 exp(-z^2)/sqrt(pi)."""
    if derivative:
        return 4 / (sympy.pi * sympy.sqrt((1 + 2 * qa) * (1 + 2 * qb) - 4 * c**2))
    return 2 / sympy.pi * sympy.asin(2 * c / sympy.sqrt((1 + 2 * qa) * (1 + 2 * qb)))


# --- numerical kernels -------------------------------------------------------------

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def _npdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT2PI


def _ncdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def _gelu(z: float) -> float:
    return z * _ncdf(z)


def _gelu_prime(z: float) -> float:
    return _ncdf(z) + z * _npdf(z)


def _tanh_prime(z: float) -> float:
    return 1.0 / math.cosh(z) ** 2 if abs(z) < 350 else 0.0


def _quad(f: Callable[[float], float], bend: float = 0.0) -> float:
    """The integral of f against the N(0, 1) density, split at 0 and at ``bend``."""
    from scipy.integrate import quad

    cuts = sorted({-CUTOFF, 0.0, min(max(bend, -CUTOFF), CUTOFF), CUTOFF})
    total = 0.0
    for lo, hi in itertools.pairwise(cuts):
        if hi > lo:
            value, _ = quad(lambda x: f(x) * _npdf(x), lo, hi, epsabs=QUAD_TOLERANCE,
                            epsrel=QUAD_TOLERANCE, limit=200)
            total += value
    return total


def _inner_by_quadrature(phi: Callable[[float], float]) -> Callable[[float, float], float]:
    def inner(m: float, s: float) -> float:
        if s == 0.0:
            return phi(m)
        return _quad(lambda y: phi(m + s * y), -m / s)
    return inner


_NUMERIC: dict[tuple[str, bool], tuple[Callable[[float], float],
                                       Callable[[float, float], float]]] = {
    ("gelu", False): (_gelu, lambda m, s: float(gelu_inner(m, s))),
    ("gelu", True): (_gelu_prime, lambda m, s: float(gelu_prime_inner(m, s))),
    ("tanh", False): (math.tanh, _inner_by_quadrature(math.tanh)),
    ("tanh", True): (_tanh_prime, _inner_by_quadrature(_tanh_prime)),
}


def _numeric(name: str, qa: sympy.Expr, qb: sympy.Expr, c: sympy.Expr,
             derivative: bool) -> sympy.Expr:
    if not (qa.is_number and qb.is_number and c.is_number):
        raise DeriveError(f"the {name} kernel is numerical: q_a, q_b and c must be numbers, "
                          f"got {qa}, {qb}, {c}")
    phi, inner = _NUMERIC[(name, derivative)]
    sa, sb = math.sqrt(float(qa)), math.sqrt(float(qb))
    rho = max(-1.0, min(1.0, float(c / sympy.sqrt(qa * qb))))
    s = sb * math.sqrt(max(0.0, 1.0 - rho * rho))
    return sympy.Float(_quad(lambda x: phi(sa * x) * inner(sb * rho * x, s)), 15)


# --- public ------------------------------------------------------------------------

def _kernel(activation: object, q_a: object, q_b: object, c: object, slope: object,
            derivative: bool) -> sympy.Expr:
    name = _check_activation(activation)
    qa, qb, cov = _check_state(q_a, q_b, c)
    a = _check_slope(slope)
    if name == "linear":
        return sympy.Integer(1) if derivative else cov
    if name == "relu":
        return _relu(qa, qb, cov, derivative)
    if name == "leaky_relu":
        return _leaky(qa, qb, cov, a, derivative)
    if name == "erf":
        return _erf(qa, qb, cov, derivative)
    return _numeric(name, qa, qb, cov, derivative)


def kernel(activation: str, q_a: object, q_b: object, c: object, *,
           negative_slope: object = DEFAULT_SLOPE) -> sympy.Expr:
    """E[phi(u) phi(v)] for jointly Gaussian u, v with variances q_a, q_b and covariance c.

    Exact for linear, relu, leaky_relu and erf (symbols allowed); a ``sympy.Float``
    for tanh and gelu (numbers only, absolute error below ``STATED_PRECISION``).

    >>> kernel("relu", 1, 1, 1), kernel("linear", "q", "q", "c")
    (1/2, c)
    >>> kernel("leaky_relu", 1, 1, 0, negative_slope="a")
    a**2/(2*pi) - a/pi + 1/(2*pi)
    >>> kernel("relu", 1, 1, 2)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: c must satisfy |c| <= sqrt(q_a q_b) = 1, got 2
    """
    return _kernel(activation, q_a, q_b, c, negative_slope, False)


def derivative_kernel(activation: str, q_a: object, q_b: object, c: object, *,
                      negative_slope: object = DEFAULT_SLOPE) -> sympy.Expr:
    """E[phi'(u) phi'(v)] for jointly Gaussian u, v with variances q_a, q_b and covariance c.

    >>> derivative_kernel("relu", 1, 1, 0), derivative_kernel("erf", 1, 1, 0)
    (1/4, 4/(3*pi))
    >>> derivative_kernel("leaky_relu", 2, 2, 2, negative_slope="1/10")
    101/200
    """
    return _kernel(activation, q_a, q_b, c, negative_slope, True)
