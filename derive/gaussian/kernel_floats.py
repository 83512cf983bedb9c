"""Two-point Gaussian kernels on floats, fast: for a kernel engine iterated through depth.

The same expectations as :mod:`derive.gaussian.kernels` (u, v jointly Gaussian,
E[u^2] = q_a, E[v^2] = q_b, E[uv] = c, rho = c / sqrt(q_a q_b)), as Python floats:

* linear, relu, leaky_relu and erf by their closed forms, in ``math``: the same
  formulas as kernels.py (the arc-cosine kernels of Cho & Saul 2009, leaky_relu
  expanded into them and Stein's lemma, the arcsin kernel of Williams 1997);
* tanh and gelu by a fixed composite Gauss-Legendre rule, in NumPy. With u = sqrt(q_a) x,
  v = m + s y, m = sqrt(q_b) rho x, s = sqrt(q_b (1 - rho^2)) (x, y independent
  N(0, 1)), the inner expectation over y comes first, as a function of m:

  - gelu: in closed form (:func:`gelu_inner`, :func:`gelu_prime_inner`, shared with
    kernels.py);
  - tanh, s below ``FOLD_FROM``: Gauss-Hermite in y (tanh(m + s y) is smooth on the
    scale of the Gaussian: its poles are pi/(2s) away from the real axis);
  - tanh, s from ``FOLD_FROM`` on, written in w = m + s y: tanh(w) = sign(w) + e(w) with
    e(w) = tanh(w) - sign(w) odd and decaying like 2 exp(-2|w|); E[sign(w)] =
    erf(m / (s sqrt 2)), and E[e(w)] folds onto w > 0 against the Gaussian density
    centred at m and at -m (for tanh' = sech^2, even, the two densities add). The
    rule on w in [0, 15] is fixed, so e and sech^2 are evaluated once.

  The outer integral over x has panels that halve towards x = 0, where both phi(sqrt(q_a) x)
  and the inner expectation bend, down to the narrower of their scales (1/sqrt(q_a) and
  max(1, s)/(sqrt(q_b) |rho|)), then the panels ``OUTER_BREAKS`` out to ``CUTOFF``. Each
  panel, no wider than its distance to the bend, holds ``OUTER_NODES`` Gauss-Legendre
  nodes: the error falls geometrically in the number of nodes whatever the scale, so the
  rule holds at large q, where tanh is a step. tanh's integrand is even in x (phi and the
  inner expectation are both odd, or both even), so only x > 0 is summed, and the
  derivative stops where sech^2(sqrt(q_a) x) < 2e-17. At rho = +-1 (s = 0) the inner
  expectation is phi(m) itself: a 1-D integral.

The absolute error of tanh and gelu is below ``FLOAT_PRECISION`` (1e-10) for q_a, q_b in
[1e-3, 1e4] and every rho in [-1, 1], gelu's kernel included (its size grows like q):
tests/test_kernel_floats.py compares with kernels.py's adaptive quadrature on a grid with
q up to 1e4 and rho = +-1, +-0.999999; the differences seen are 1.2e-12 or smaller.

A zero variance is allowed: phi(0) = 0 for these activations, so the kernel is 0, and
the derivative kernel takes phi'(0) (relu 0, leaky_relu its slope, gelu 1/2, tanh 1,
erf 2/sqrt(pi), linear 1) times the other input's mean of phi'.

>>> kernel_float("relu", 2.0, 2.0, 0.0) == 1 / math.pi
True
>>> round(kernel_float("tanh", 9.0, 9.0, -3.0), 8)
-0.19800956
>>> round(derivative_kernel_float("gelu", 1.0, 4.0, 1.0), 10)
0.3442389721
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from derive.errors import DeriveError, choice_error

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["FLOAT_ACTIVATIONS", "FLOAT_PRECISION", "derivative_kernel_float", "gelu_inner",
           "gelu_prime_inner", "kernel_float", "mean_float", "moment_float"]

#: The activations served (as in derive.gaussian.kernels; erf is the error function).
FLOAT_ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "gelu", "erf")
#: The stated absolute error of the numerical (tanh, gelu) kernels, verified in the tests.
FLOAT_PRECISION = 1e-10
#: The outer integral runs over x in [-CUTOFF, CUTOFF] (Gaussian mass left out < 1e-18).
CUTOFF = 9.0
#: The outer panels past x = 1 (below it, panels halve towards 0).
OUTER_BREAKS = (1.0, 2.0, 3.0, 4.5, 6.5, CUTOFF)
#: Gauss-Legendre nodes per panel of the outer rule (gelu's kernel grows like q x^2: more
#: nodes keep it to rounding) and of the folded rule.
OUTER_NODES = {"tanh": 8, "gelu": 10}
FOLD_NODES = 8
#: The inner tanh expectation switches from Gauss-Hermite to the folded rule at s = FOLD_FROM.
FOLD_FROM = 0.5
#: Gauss-Hermite nodes of the inner tanh expectation (s below FOLD_FROM).
HERMITE_NODES = 40
#: The panels of the folded rule on w in [0, 15] (e(w) and sech^2(w) are below 4e-13 past it).
FOLD_BREAKS = (0.0, 0.75, 1.5, 2.25, 3.0, 4.0, 5.0, 6.5, 8.5, 11.5, 15.0)
#: Relative rounding allowed in |c| <= sqrt(q_a q_b): within it c is clipped, past it refused.
C_ROUNDING = 1e-9

_SQRT2 = math.sqrt(2.0)
#: exp(-_GONE^2) < 1e-16: a Gaussian factor counted as zero.
_GONE = 6.1
_SQRT2PI = math.sqrt(2.0 * math.pi)


# --- input checks ------------------------------------------------------------------

def _number(value: object, name: str, allowed: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise DeriveError(f"{name} must be {allowed}, got {value!r}")
    return number


def _state(activation: object, q_a: object, q_b: object, c: object, slope: object,
           names: tuple[str, str] = ("q_a", "q_b")) -> tuple[str, float, float, float, float]:
    """The checked activation, q_a, q_b, rho (c clipped, rho = 1 for c=None) and slope."""
    if not isinstance(activation, str) or activation not in FLOAT_ACTIVATIONS:
        raise choice_error("activation", activation, FLOAT_ACTIVATIONS)
    qa = _number(q_a, names[0], "a finite number >= 0")
    qb = _number(q_b, names[1], "a finite number >= 0")
    a = _number(slope, "negative_slope", "a finite number >= 0")
    if c is None:
        return activation, qa, qb, 1.0, a
    bound = math.sqrt(qa * qb)
    try:
        cov = float(c)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        cov = math.nan
    if not abs(cov) <= bound * (1 + C_ROUNDING):  # also refuses nan
        raise DeriveError(f"c must satisfy |c| <= sqrt(q_a q_b) = {bound!r}, got {c!r}")
    rho = max(-1.0, min(1.0, cov / bound)) if bound > 0 else 0.0
    return activation, qa, qb, (math.copysign(1.0, rho) if 1 - abs(rho) < 4e-16 else rho), a


# --- closed forms ------------------------------------------------------------------

def _relu(qa: float, qb: float, rho: float, derivative: bool) -> float:
    """The arc-cosine kernels of degree 1 (forward) and 0 (derivative)."""
    t = math.acos(rho)
    if derivative:
        return (math.pi - t) / (2 * math.pi)
    return math.sqrt(qa * qb) * (math.sin(t) + (math.pi - t) * rho) / (2 * math.pi)


def _leaky(qa: float, qb: float, rho: float, a: float, derivative: bool) -> float:
    """((1 - a) relu + a id) on both sides, expanded: E[relu(u) v] = c/2 (Stein's lemma)."""
    linear = 1.0 if derivative else rho * math.sqrt(qa * qb)
    cross = linear / 2
    return (1 - a) ** 2 * _relu(qa, qb, rho, derivative) + 2 * a * (1 - a) * cross + a * a * linear


def _erf(qa: float, qb: float, rho: float, derivative: bool) -> float:
    """The arcsin kernel (Williams 1997) and the kernel of erf'(z) = 2 exp(-z^2)/sqrt(pi)."""
    c = rho * math.sqrt(qa * qb)
    if derivative:
        return 4 / (math.pi * math.sqrt((1 + 2 * qa) * (1 + 2 * qb) - 4 * c * c))
    return 2 / math.pi * math.asin(2 * c / math.sqrt((1 + 2 * qa) * (1 + 2 * qb)))


# --- the inner expectation of gelu ---------------------------------------------------

def _ncdf(x: np.ndarray | float) -> np.ndarray | float:
    from scipy.special import ndtr

    return ndtr(x)


def _npdf(x: np.ndarray | float) -> np.ndarray | float:
    import numpy as np

    return np.exp(-0.5 * x * x) / _SQRT2PI


def gelu_inner(m: np.ndarray | float, s: float) -> np.ndarray | float:
    """E[gelu(m + s y)], y ~ N(0, 1): m Phi(m/r) + s^2 phi(m/r)/r, r = sqrt(1 + s^2).

    (Phi(m + s y) is P(Y' <= m + s y) for an independent Y' ~ N(0, 1), and m + s y - Y'
    has variance r^2; the s^2 phi term is Stein's lemma on E[y Phi(m + s y)].)

    >>> round(float(gelu_inner(0.0, 1.0)), 12) == round(1 / (2 * math.sqrt(math.pi)), 12)
    True
    """
    r = math.sqrt(1.0 + s * s)
    return m * _ncdf(m / r) + s * s * _npdf(m / r) / r


def gelu_prime_inner(m: np.ndarray | float, s: float) -> np.ndarray | float:
    """E[gelu'(m + s y)] = Phi(m/r) + m phi(m/r)/r^3, r = sqrt(1 + s^2).

    >>> float(gelu_prime_inner(0.0, 3.0))
    0.5
    """
    r = math.sqrt(1.0 + s * s)
    return _ncdf(m / r) + m * _npdf(m / r) / r**3


# --- the rules ---------------------------------------------------------------------

def _panels(breaks: list[float], nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The composite Gauss-Legendre rule with ``nodes`` nodes on each panel between ``breaks``."""
    import numpy as np

    t, w = np.polynomial.legendre.leggauss(nodes)
    t, w = (t + 1) / 2, w / 2
    lo, hi = np.array(breaks[:-1]), np.array(breaks[1:])
    return ((lo[:, None] + (hi - lo)[:, None] * t).ravel(),
            ((hi - lo)[:, None] * w).ravel())


@functools.cache
def _outer(levels: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x > 0 and weights (times the N(0, 1) density) of the outer rule on [0, CUTOFF],
    with ``levels`` panels halving towards 0 below x = 1."""
    breaks = [0.0] + [2.0 ** -k for k in range(levels, 0, -1)]
    x, w = _panels(breaks + list(OUTER_BREAKS), nodes)
    return x, w * _npdf(x)


@functools.cache
def _hermite() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for the N(0, 1) density."""
    import numpy as np

    y, w = np.polynomial.hermite_e.hermegauss(HERMITE_NODES)
    return y, w / _SQRT2PI


@functools.cache
def _folded(derivative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Nodes w in [0, 15] and weights times e(w) (or sech^2(w)) of the folded tanh rule."""
    import numpy as np

    w, weights = _panels(list(FOLD_BREAKS), FOLD_NODES)
    t = np.exp(-2 * w)
    values = 4 * t / (1 + t) ** 2 if derivative else -2 * t / (1 + t)
    return w, weights * values


def _tanh_inner(m: np.ndarray, s: float, derivative: bool) -> np.ndarray:
    """E[tanh(m + s y)] (or E[tanh'(m + s y)]), y ~ N(0, 1), for every m (|m| increasing)."""
    import numpy as np

    if s == 0.0:
        return _sech2(m) if derivative else np.tanh(m)
    if s < FOLD_FROM:
        y, w = _hermite()
        z = np.add.outer(m, s * y)
        return (_sech2(z) if derivative else np.tanh(z)) @ w
    nodes, weights = _folded(derivative)
    scale = 1 / (s * _SQRT2)  # in a = w scale, b = |m| scale the densities are exp(-(a -+ b)^2)
    a, b = nodes * scale, np.abs(m) * scale
    folded = np.zeros_like(m)
    # exp(-(a -+ b)^2) < 1e-16 on the whole rule once b > a_max + _GONE (minus), b > _GONE
    # (plus): those rows are left out
    plus_sign = 1.0 if derivative else -1.0  # sech^2 is even, e(w) odd
    for rows, offset, sign in ((np.searchsorted(b, a[-1] + _GONE), -a, 1.0),
                               (np.searchsorted(b, _GONE), a, plus_sign)):
        d = np.add.outer(b[:rows], offset)
        np.square(d, out=d)
        np.negative(d, out=d)
        np.exp(d, out=d)
        folded[:rows] += sign * (d @ weights)
    folded *= scale / math.sqrt(math.pi)
    if derivative:  # even in m
        return folded
    from scipy.special import erf

    return np.sign(m) * (erf(b) + folded)  # odd in m


def _sech2(z: np.ndarray) -> np.ndarray:
    import numpy as np

    t = np.exp(-2 * np.abs(z))
    return 4 * t / (1 + t) ** 2


def _levels(qa: float, qb: float, rho: float, s: float) -> int:
    """Halvings of the outer panels towards x = 0: down to the narrowest bend's scale."""
    scale = 1.0
    if qa > 0:
        scale = min(scale, 1 / math.sqrt(qa))
    if rho != 0 and qb > 0:
        scale = min(scale, max(1.0, s) / (math.sqrt(qb) * abs(rho)))
    return max(0, math.ceil(math.log2(1 / scale)) + 1)


def _numeric(name: str, qa: float, qb: float, rho: float, derivative: bool) -> float:
    import numpy as np

    sa, sb = math.sqrt(qa), math.sqrt(qb)
    s = sb * math.sqrt(max(0.0, 1.0 - rho * rho))
    x, w = _outer(_levels(qa, qb, rho, s), OUTER_NODES[name])
    m = sb * rho * x
    if name == "tanh":  # phi(sa x) and the inner expectation are both odd (or both even)
        if derivative:  # sech^2(sa x) < 2e-17 past sa x = 20
            rows = int(np.searchsorted(x, 20 / sa))
            x, w, m = x[:rows], w[:rows], m[:rows]
        outer = _sech2(sa * x) if derivative else np.tanh(sa * x)
        return 2 * float((outer * _tanh_inner(m, s, derivative)) @ w)
    x = np.concatenate((x, -x))
    m = np.concatenate((m, -m))
    z = sa * x
    if derivative:
        outer, inner = _ncdf(z) + z * _npdf(z), gelu_prime_inner(m, s)
    else:
        outer, inner = z * _ncdf(z), gelu_inner(m, s)
    return float((outer * inner) @ np.concatenate((w, w)))


# --- at a zero variance ------------------------------------------------------------

def _prime_at_zero(name: str, a: float) -> float:
    return {"linear": 1.0, "relu": 0.0, "leaky_relu": a, "tanh": 1.0, "gelu": 0.5,
            "erf": 2 / math.sqrt(math.pi)}[name]


def _prime_mean(name: str, q: float, a: float) -> float:
    """E[phi'(z)], z ~ N(0, q), q > 0."""
    if name in ("relu", "leaky_relu"):
        slope = a if name == "leaky_relu" else 0.0
        return (1 + slope) / 2
    if name == "erf":
        return 2 / math.sqrt(math.pi * (1 + 2 * q))
    if name == "tanh":
        import numpy as np

        return float(_tanh_inner(np.zeros(1), math.sqrt(q), True)[0])
    # linear: 1; gelu: gelu'(z) - 1/2 = (Phi(z) - 1/2) + z phi(z) is odd, so the mean is 1/2
    return 1.0 if name == "linear" else 0.5


def _zero_variance(name: str, qa: float, qb: float, a: float, derivative: bool) -> float:
    if not derivative:
        return 0.0
    at_zero = _prime_at_zero(name, a)
    other = qb if qa == 0 else qa
    return at_zero * (at_zero if other == 0 else _prime_mean(name, other, a))


# --- public ------------------------------------------------------------------------

def _kernel(activation: object, q_a: object, q_b: object, c: object, slope: object,
            derivative: bool, names: tuple[str, str] = ("q_a", "q_b")) -> float:
    name, qa, qb, rho, a = _state(activation, q_a, q_b, c, slope, names)
    if qa == 0 or qb == 0:
        return _zero_variance(name, qa, qb, a, derivative)
    if name == "linear":
        return 1.0 if derivative else rho * math.sqrt(qa * qb)
    if name == "relu":
        return _relu(qa, qb, rho, derivative)
    if name == "leaky_relu":
        return _leaky(qa, qb, rho, a, derivative)
    if name == "erf":
        return _erf(qa, qb, rho, derivative)
    return _numeric(name, qa, qb, rho, derivative)


def kernel_float(activation: str, q_a: float, q_b: float, c: float,
                 negative_slope: float = 0.01) -> float:
    """E[phi(u) phi(v)] for jointly Gaussian u, v (variances q_a, q_b, covariance c).

    >>> kernel_float("linear", 2.0, 3.0, 1.5), kernel_float("relu", 1.0, 1.0, 1.0)
    (1.5, 0.5)
    >>> kernel_float("relu", 1.0, 1.0, 2.0)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: c must satisfy |c| <= sqrt(q_a q_b) = 1.0, got 2.0
    """
    return _kernel(activation, q_a, q_b, c, negative_slope, False)


def derivative_kernel_float(activation: str, q_a: float, q_b: float, c: float,
                            negative_slope: float = 0.01) -> float:
    """E[phi'(u) phi'(v)] for jointly Gaussian u, v (variances q_a, q_b, covariance c).

    >>> derivative_kernel_float("relu", 1.0, 1.0, 0.0), derivative_kernel_float("tanh", 0, 0, 0)
    (0.25, 1.0)
    """
    return _kernel(activation, q_a, q_b, c, negative_slope, True)


def moment_float(activation: str, q: float, derivative: bool = False,
                 negative_slope: float = 0.01) -> float:
    """E[phi(z)^2] (or E[phi'(z)^2]) for z ~ N(0, q): the kernel at q_a = q_b = c = q.

    >>> moment_float("relu", 2.0), moment_float("relu", 2.0, derivative=True)
    (1.0, 0.5)
    """
    return _kernel(activation, q, q, None, negative_slope, derivative, ("q", "q"))


def mean_float(activation: str, q: float, negative_slope: float = 0.01) -> float:
    """E[phi(z)] for z ~ N(0, q): 0 for the odd activations (linear, tanh, erf),
    sqrt(q/(2 pi)) for relu ((1 - a) times it for leaky_relu), q/sqrt(2 pi (1 + q)) for gelu
    (Stein's lemma: E[z Phi(z)] = q E[phi(z)]).

    >>> round(mean_float("relu", 2 * math.pi), 12), mean_float("tanh", 3.0)
    (1.0, 0.0)
    """
    name, qv, _, _, a = _state(activation, q, q, None, negative_slope, ("q", "q"))
    if name in ("linear", "tanh", "erf"):
        return 0.0
    if name == "gelu":
        return qv / math.sqrt(2 * math.pi * (1 + qv))
    half = math.sqrt(qv / (2 * math.pi))
    return (1 - a) * half if name == "leaky_relu" else half
