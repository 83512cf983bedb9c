"""The mean-field phase of a plain deep network (Poole et al. 2016; Schoenholz et al. 2017).

For h_k = W_k phi(h_{k-1}) + b_k with Var W = sigma_w^2 / fan_in and Var b = sigma_b^2
(He is sigma_w^2 = 2, LeCun 1), at infinite width two inputs keep one second moment q_k
each and a covariance c_k:

* the length map q_k = sigma_w^2 E[phi(sqrt(q_{k-1}) z)^2] + sigma_b^2, fixed point q*;
* the correlation map c_k = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2, (u, v) Gaussian with
  variances q*, q* and covariance c_{k-1}; rho = c / q*, fixed point rho* (c* = rho* q*);
  rho = 1 is always one;
* chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2], the slope of the correlation map at rho = 1
  (Price's theorem: dE[phi(u) phi(v)]/dc = E[phi'(u) phi'(v)]); chi_c the same slope at
  rho*; chi_q the slope of the length map at q*;
* the depth scales xi_q = -1/ln chi_q and xi_c = -1/ln chi_c (Schoenholz et al. 2017), the
  number of layers over which q_k - q* and rho_k - rho* shrink by a factor e;
* the phase: ordered (chi_1 < 1, rho* = 1 attracts), chaotic (chi_1 > 1, rho* < 1 attracts),
  critical (chi_1 = 1), and the critical line, sigma_w^2 as a function of sigma_b^2 where
  chi_1 = 1.

How the numbers are found. The expectations come from :mod:`derive.gaussian.kernels` and
:func:`derive.gaussian.moments.gaussian_moment`, through the one function ``_expectation``.

* linear, relu, leaky_relu are positively homogeneous (phi(t z) = t phi(z), t > 0): the
  length map is affine, q -> sigma_w^2 E[phi(z)^2] q + sigma_b^2, and chi_1 does not depend
  on q. Both slopes are exact; q* = sigma_b^2 / (1 - chi_q) when chi_q < 1 and
  sigma_b^2 > 0; otherwise q_k decays to 0, stays at q_0, or grows, and ``q_star`` is None
  with the reason.
* tanh and erf are bounded and E[phi(sqrt(q) z)^2] is concave in q (erf: its derivative
  (4/pi) / ((1 + 2q) sqrt(1 + 4q)) decreases; tanh: checked in tests/test_phase.py), so the
  length map has one positive fixed point when sigma_b^2 > 0, found by ``brentq`` in
  [sigma_b^2, sigma_w^2 + sigma_b^2]. With sigma_b^2 = 0, q* = 0 when
  sigma_w^2 phi'(0)^2 <= 1 (then chi_1 = chi_q = sigma_w^2 phi'(0)^2, and the correlation
  map, 0/0 at q = 0, has no rho*), else one q* > 0.
* gelu (E[gelu(sqrt(q) z)^2] <= q/2, as Phi(x)^2 + Phi(-x)^2 <= 1): for sigma_w^2 < 2
  every fixed point lies in [sigma_b^2, sigma_b^2 / (1 - sigma_w^2/2)], which is scanned
  for sign changes; q* is given only when there is exactly one. For sigma_w^2 >= 2, q_k
  grows without bound from a large q_0, and ``q_star`` is None.
* chi_q differentiates the computed length map at q* (central differences at steps
  q*/1000 and q*/2000, Richardson-extrapolated), or is exact for the affine maps.
* rho* in the chaotic phase: g(rho) = (sigma_w^2 E[phi(u) phi(v)] + sigma_b^2)/q* - rho is
  convex on [0, 1] (E[phi(u) phi(v)] is a power series in rho with coefficients >= 0, the
  squared Hermite coefficients of phi) and positive on (-1, 0), so Newton's method from
  rho = 0, with g' = sigma_w^2 E[phi'(u) phi'(v)] - 1, climbs monotonically to the root
  below 1. With sigma_b^2 = 0 and an odd phi, rho* = 0 exactly.
* phi'(0), and whether phi is odd, are read from the activation's SymPy formula.

chi_1 is exact (a SymPy number) for the homogeneous activations and at q* = 0, and the
phase is then decided exactly; otherwise |chi_1 - 1| <= ``CRITICAL_TOLERANCE`` counts as
critical (xi_c = inf), and where the computed chi_1 is then above 1, rho* and chi_c are
None: on that side rho* lies below 1, at a distance the kernels do not resolve.

>>> p = phase("relu", 2, 0)
>>> p.chi_1, p.phase, p.q_star
(1.0, 'critical', None)
>>> p = phase("erf", 2, "1/10")
>>> p.phase, round(p.q_star, 6), round(p.rho_star, 6), round(p.chi_c, 6)
('chaotic', 1.046255, 0.647229, 0.91594)
>>> critical_line("tanh", [0])
[(0.0, 1.0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sympy

from derive.errors import DeriveError, choice_error
from derive.gaussian.kernels import KERNEL_ACTIVATIONS
from derive.gaussian.moments import DEFAULT_SLOPE, gaussian_moment
from derive.inputs.numbers import MAX_DEPTH, check_depth, exact, shown

__all__ = ["CRITICAL_TOLERANCE", "MAX_SIGMA2", "Phase", "critical_line", "phase",
           "trajectory"]

#: sigma_w^2 and sigma_b^2 are numbers in [0, MAX_SIGMA2].
MAX_SIGMA2 = 10**4
#: A numerical chi_1 within this of 1 is critical (the kernels' stated precision).
CRITICAL_TOLERANCE = 1e-9
#: The deepest trajectory computed.
MAX_TRAJECTORY = 10**4
#: Positively homogeneous activations: affine length map, chi_1 independent of q.
HOMOGENEOUS = ("linear", "relu", "leaky_relu")
#: Bounded activations with sup phi^2 = 1 and a concave one-point moment.
BOUNDED = ("tanh", "erf")

_z = sympy.Symbol("z", real=True)
#: The activations that are neither homogeneous nor piecewise linear, as formulas.
_FORMULAS = {
    "tanh": sympy.tanh(_z),
    "erf": sympy.erf(_z),
    "gelu": _z * (1 + sympy.erf(_z / sympy.sqrt(2))) / 2,
}
#: Points scanned for the fixed points of the gelu length map.
_SCAN_POINTS = 64


@dataclass(frozen=True)
class Phase:
    """The fixed points, slopes, depth scales and phase of a plain network.

    A field is None where the quantity does not exist (``reason`` says why); ``xi_c`` is
    ``inf`` at criticality.

    >>> p = phase("relu", 1, "1/2")
    >>> p.q_star, p.rho_star, p.chi_1, p.phase, round(p.xi_c, 6)
    (1.0, 1.0, 0.5, 'ordered', 1.442695)
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    #: The fixed point of the length map (None: none, or not one for every q_0).
    q_star: float | None
    #: The attracting fixed point of rho = c/q*, and c* = rho* q*.
    rho_star: float | None
    c_star: float | None
    #: Slopes: the correlation map at rho = 1 and at rho*, the length map at q*.
    chi_1: float | None
    chi_c: float | None
    chi_q: float | None
    #: Depth scales -1/ln chi_q and -1/ln chi_c.
    xi_q: float | None
    xi_c: float | None
    #: "ordered", "chaotic" or "critical" (None where chi_1 is not defined).
    phase: str | None
    #: Why a field is None ("" when every field has a value).
    reason: str


# --- input checks ------------------------------------------------------------------

def _check_activation(activation: object) -> str:
    if not isinstance(activation, str) or activation not in KERNEL_ACTIVATIONS:
        raise choice_error("activation", activation, KERNEL_ACTIVATIONS)
    return activation


def _check_sigma2(value: object, name: str) -> sympy.Expr:
    allowed = f"{name} must be a finite number >= 0 and <= 10^4 (like 2, 0.1 or 1/3)"
    try:
        number = exact(value, name, symbol=False)
    except DeriveError:
        raise DeriveError(f"{allowed}, got {shown(value)}") from None
    if not (0 <= number <= MAX_SIGMA2):
        raise DeriveError(f"{allowed}, got {shown(value)}")
    return number


def _check_slope(value: object) -> sympy.Expr:
    allowed = "negative_slope must be a finite number >= 0 (like 0.01 or 1/5)"
    try:
        slope = exact(value, "negative_slope", symbol=False)
    except DeriveError:
        raise DeriveError(f"{allowed}, got {shown(value)}") from None
    if slope < 0:
        raise DeriveError(f"{allowed}, got {shown(value)}")
    return slope


# --- the expectations --------------------------------------------------------------

def _expectation(activation: str, q: float, c: float, slope: sympy.Expr,
                 derivative: bool) -> float:
    """E[phi(u) phi(v)] (or E[phi'(u) phi'(v)]), u, v ~ N(0, q) with covariance c, in
    floats (:mod:`derive.gaussian.kernel_floats`, absolute precision 1e-10)."""
    from derive.gaussian.kernel_floats import derivative_kernel_float, kernel_float

    c = max(-q, min(q, c))
    rule = derivative_kernel_float if derivative else kernel_float
    return rule(activation, float(q), float(q), float(c), negative_slope=float(slope))


@dataclass(frozen=True)
class _Net:
    """One plain network: its activation, sigma_w^2, sigma_b^2 (exact) and slope."""

    activation: str
    w: sympy.Expr
    b: sympy.Expr
    slope: sympy.Expr

    def forward(self, q: float, c: float, derivative: bool = False) -> float:
        """sigma_w^2 E[phi(u) phi(v)] (+ sigma_b^2), or sigma_w^2 E[phi'(u) phi'(v)]."""
        value = float(self.w) * _expectation(self.activation, q, c, self.slope, derivative)
        return value if derivative else value + float(self.b)

    def length(self, q: float) -> float:
        """The length map at q."""
        return self.forward(q, q)

    def length_slope(self, q: float) -> float:
        """d(length map)/dq at q > 0: central differences, Richardson-extrapolated."""
        def central(h: float) -> float:
            return (self.length(q + h) - self.length(q - h)) / (2 * h)
        h = q / 1000
        return (4 * central(h / 2) - central(h)) / 3


def _net(activation: object, sigma_w2: object, sigma_b2: object,
         negative_slope: object) -> _Net:
    return _Net(_check_activation(activation), _check_sigma2(sigma_w2, "sigma_w2"),
                _check_sigma2(sigma_b2, "sigma_b2"), _check_slope(negative_slope))


def _slope_at_zero_squared(activation: str) -> sympy.Expr:
    """phi'(0)^2 from the activation's formula."""
    return sympy.simplify(sympy.diff(_FORMULAS[activation], _z).subs(_z, 0) ** 2)


def _is_odd(activation: str) -> bool:
    if activation in HOMOGENEOUS:
        return activation == "linear"
    formula = _FORMULAS[activation]
    return sympy.simplify(formula.subs(_z, -_z) + formula) == 0


# --- shared pieces -----------------------------------------------------------------

def _depth_scale(chi: float) -> float:
    """-1/ln chi: 0 at chi = 0, inf at chi >= 1."""
    if chi <= 0:
        return 0.0
    return math.inf if chi >= 1 else -1 / math.log(chi)


def _phase_name(chi_1: sympy.Expr | float) -> str:
    if isinstance(chi_1, sympy.Expr):
        return "critical" if chi_1 == 1 else ("ordered" if chi_1 < 1 else "chaotic")
    if abs(chi_1 - 1) <= CRITICAL_TOLERANCE:
        return "critical"
    return "ordered" if chi_1 < 1 else "chaotic"


def _text(value: sympy.Expr) -> str:
    return str(value) if value.is_Rational else f"{float(value):.6g}"


def _without_q_star(net: _Net, chi_1: sympy.Expr, chi_q: sympy.Expr | None, q_star: float | None,
                    reason: str) -> Phase:
    """The result where q* is 0 or missing: chi_1 and the phase, the rest None."""
    xi_q = _depth_scale(float(chi_q)) if chi_q is not None and chi_q < 1 else None
    return Phase(net.activation, float(net.w), float(net.b), q_star, None, None,
                 float(chi_1), None, None if chi_q is None else float(chi_q), xi_q, None,
                 _phase_name(chi_1), reason)


# --- homogeneous activations -------------------------------------------------------

def _homogeneous(net: _Net) -> Phase:
    """linear, relu, leaky_relu: the length map q -> chi_q q + sigma_b^2 is affine."""
    chi_q = net.w * gaussian_moment(net.activation, 1, negative_slope=net.slope)
    chi_1 = net.w * gaussian_moment(net.activation, 1, derivative=True,
                                    negative_slope=net.slope)
    if chi_q < 1 and net.b > 0:
        return _at_fixed_point(net, float(net.b / (1 - chi_q)), chi_1, float(chi_q))
    independent = (f"; chi_1 = sigma_w^2 E[phi'(z)^2] = {_text(chi_1)} does not depend on q "
                   f"({net.activation} is positively homogeneous), so it and the phase are "
                   f"given, and rho*, chi_c, xi_c are not")
    if chi_q < 1:
        why = (f"q_k = ({_text(chi_q)})^k q_0 decays geometrically to 0 (sigma_b2 = 0): "
               f"there is no q* > 0")
    elif chi_q == 1 and net.b == 0:
        why = "q_k = q_0 at every depth (sigma_w^2 E[phi(z)^2] = 1, sigma_b2 = 0): no single q*"
    elif chi_q == 1:
        why = f"q_k = q_0 + k {_text(net.b)} grows linearly: there is no fixed point q*"
    else:
        why = (f"q_k grows geometrically, by {_text(chi_q)} per layer: there is no fixed "
               f"point q*")
    return _without_q_star(net, chi_1, chi_q, None, why + independent)


# --- tanh, erf, gelu: the length map's fixed point ---------------------------------

def _root(g: Callable[[float], float], lo: float, hi: float) -> float:
    from scipy.optimize import brentq

    return float(brentq(g, lo, hi, xtol=1e-300, rtol=1e-14, maxiter=500))


def _positive_below(g: Callable[[float], float], hi: float) -> float | None:
    """A q in (0, hi) with g(q) > 0, halving from hi (None if q underflows first)."""
    q = hi
    while q > 1e-300:
        q /= 2
        if g(q) > 0:
            return q
    return None


def _scan_roots(g: Callable[[float], float], lo: float, hi: float) -> list[float]:
    """The roots of g in [lo, hi] at the sign changes of a geometric grid (g(lo) > 0)."""
    if hi <= lo:
        return [lo]
    grid = [lo * (hi / lo) ** (i / (_SCAN_POINTS - 1)) for i in range(_SCAN_POINTS)]
    values = [g(q) for q in grid]
    roots = []
    for i in range(1, _SCAN_POINTS):
        if values[i] == 0:
            roots.append(grid[i])
        elif values[i - 1] * values[i] < 0:
            roots.append(_root(g, grid[i - 1], grid[i]))
    return roots


def _length_fixed_point(net: _Net) -> tuple[float | None, str]:
    """(q*, "") or (None, why); q* = 0 when q_k decays to 0."""
    w, b = float(net.w), float(net.b)
    name = net.activation
    if name == "gelu" and w >= 2:
        return None, ("the gelu length map grows like sigma_w^2 q / 2 for large q, so with "
                      "sigma_w2 >= 2 q_k diverges from a large q_0: no single q*")
    if b == 0 and net.w * _slope_at_zero_squared(name) <= 1:
        return 0.0, ""

    def g(q: float) -> float:
        return net.length(q) - q

    hi = w + b if name in BOUNDED else b / (1 - w / 2)
    lo = b if b > 0 else _positive_below(g, hi)
    if lo is None:
        return None, "q* is below 1e-300"
    if name in BOUNDED:
        return (lo if hi <= lo else _root(g, lo, hi)), ""
    roots = _scan_roots(g, lo, hi)
    if len(roots) == 1:
        return roots[0], ""
    listed = ", ".join(f"{r:.6g}" for r in roots)
    return None, f"the length map has {len(roots)} fixed points ({listed}): q* depends on q_0"


# --- the correlation map's fixed point ---------------------------------------------

def _chaotic_rho(net: _Net, q: float) -> float:
    """The root below 1 of g(rho) = correlation map(rho) - rho, by Newton from rho = 0."""
    if net.b == 0 and _is_odd(net.activation):
        return 0.0
    rho = 0.0
    for _ in range(100):
        value = net.forward(q, rho * q) / q - rho
        slope = net.forward(q, rho * q, derivative=True) - 1
        if value <= 0 or slope >= 0:
            break
        step = -value / slope
        rho = min(rho + step, 1.0)
        if step <= 1e-14:
            break
    return rho


def _at_fixed_point(net: _Net, q: float, chi_1: sympy.Expr | float, chi_q: float) -> Phase:
    """Everything at a fixed point q* > 0 of the length map."""
    name = _phase_name(chi_1)
    common = (net.activation, float(net.w), float(net.b), q)
    if name == "critical" and chi_1 > 1:
        return Phase(*common, None, None, float(chi_1), None, chi_q,
                     _depth_scale(chi_q), math.inf, name, (
                         f"chi_1 - 1 = {float(chi_1) - 1:.3g} is within {CRITICAL_TOLERANCE:g} "
                         f"of 0: critical to the kernels' precision; rho* (1 at chi_1 <= 1, "
                         f"below 1 at chi_1 > 1) is not resolved"))
    if name == "chaotic":
        rho = _chaotic_rho(net, q)
        chi_c = net.forward(q, rho * q, derivative=True)
        xi_c = _depth_scale(chi_c)
    else:
        rho, chi_c = 1.0, float(chi_1)
        xi_c = math.inf if name == "critical" else _depth_scale(chi_c)
    return Phase(*common, rho, rho * q, float(chi_1), chi_c, chi_q, _depth_scale(chi_q), xi_c,
                 name, "")


def _nonhomogeneous(net: _Net) -> Phase:
    q, why = _length_fixed_point(net)
    if q is None:
        return Phase(net.activation, float(net.w), float(net.b), None, None, None, None, None,
                     None, None, None, None, why)
    if q == 0:
        chi = net.w * _slope_at_zero_squared(net.activation)
        return _without_q_star(net, chi, chi, 0.0, (
            "q_k decays to q* = 0 (sigma_b2 = 0, sigma_w^2 phi'(0)^2 <= 1), where chi_1 = "
            "chi_q = sigma_w^2 phi'(0)^2; the correlation map is 0/0 there: no rho*, chi_c, "
            "xi_c"))
    chi_1 = net.forward(q, q, derivative=True)
    return _at_fixed_point(net, q, chi_1, net.length_slope(q))


# --- public ------------------------------------------------------------------------

def phase(activation: str, sigma_w2: object, sigma_b2: object, *,
          negative_slope: object = DEFAULT_SLOPE) -> Phase:
    """The fixed points q*, rho*, the slopes chi_1, chi_c, chi_q, the depth scales and phase.

    >>> p = phase("tanh", "1/2", 0)
    >>> p.q_star, p.chi_1, p.phase, p.rho_star
    (0.0, 0.5, 'ordered', None)
    >>> phase("relu", 3, 0).reason.split(":")[0]
    'q_k grows geometrically, by 3/2 per layer'
    >>> phase("erf", -1, 0)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: sigma_w2 must be a finite number >= 0 and <= 10^4 (like 2, 0.1 or 1/3), got -1
    """  # noqa: E501
    net = _net(activation, sigma_w2, sigma_b2, negative_slope)
    return _homogeneous(net) if net.activation in HOMOGENEOUS else _nonhomogeneous(net)


def _chi_1_minus_1(net: _Net) -> float | None:
    q, _ = _length_fixed_point(net)
    if q is None:
        return None
    if q == 0:
        return float(net.w * _slope_at_zero_squared(net.activation)) - 1
    return net.forward(q, q, derivative=True) - 1


def _candidates(activation: str) -> list[float]:
    """sigma_w^2 values that bracket the critical point, in increasing order."""
    if activation == "gelu":
        return [1.0, 1.5] + [2 - 2.0**-k for k in range(2, 30)]
    start = float(1 / _slope_at_zero_squared(activation))
    return [start * 2**k for k in range(14) if start * 2**k <= MAX_SIGMA2]


def _critical_w(activation: str, b: sympy.Expr, slope: sympy.Expr) -> float:
    """sigma_w^2 with chi_1 = 1 at sigma_b^2 = b (tanh, erf, gelu)."""
    if b == 0 and activation in BOUNDED:
        return float(1 / _slope_at_zero_squared(activation))

    def offset(w: float) -> float | None:
        return _chi_1_minus_1(_Net(activation, exact(w, "sigma_w2"), b, slope))

    lo = 0.0
    for w in _candidates(activation):
        value = offset(w)
        if value is not None and value > 0:
            def checked(x: float) -> float:
                result = offset(x)
                if result is None:
                    raise DeriveError(f"the {activation} length map has no single fixed point "
                                      f"at sigma_w2 = {x:.6g}, sigma_b2 = {b}")
                return result
            return _root(checked, lo, w)
        if value is not None:
            lo = w
    raise DeriveError(f"no critical point (chi_1 = 1 with one fixed point q*) for "
                      f"{activation} at sigma_b2 = {b} with sigma_w2 <= 10^4")


def critical_line(activation: str, sigma_b2_values: Iterable[object], *,
                  negative_slope: object = DEFAULT_SLOPE) -> list[tuple[float, float]]:
    """(sigma_b^2, sigma_w^2) pairs on the critical line chi_1 = 1.

    For the homogeneous activations chi_1 = sigma_w^2 E[phi'(z)^2] does not depend on
    sigma_b^2 (q has a fixed point on the line only at sigma_b^2 = 0, where it stays at q_0).
    At sigma_b^2 = 0 tanh and erf reach it where q* = 0: sigma_w^2 = 1 / phi'(0)^2.

    >>> critical_line("relu", [0, 1])
    [(0.0, 2.0), (1.0, 2.0)]
    >>> [(b, round(w, 6)) for b, w in critical_line("erf", [0, "1/10"])]
    [(0.0, 0.785398), (0.1, 1.552118)]
    """
    name = _check_activation(activation)
    slope = _check_slope(negative_slope)
    if isinstance(sigma_b2_values, (str, bytes)) or not isinstance(sigma_b2_values, Iterable):
        raise DeriveError(f"sigma_b2_values must be a list of numbers >= 0, got "
                          f"{shown(sigma_b2_values)}")
    values = [_check_sigma2(v, "sigma_b2") for v in sigma_b2_values]
    if name in HOMOGENEOUS:
        w = float(1 / gaussian_moment(name, 1, derivative=True, negative_slope=slope))
        return [(float(b), w) for b in values]
    return [(float(b), _critical_w(name, b, slope)) for b in values]


def trajectory(activation: str, sigma_w2: object, sigma_b2: object, q0: object, rho0: object,
               depth: int, *, negative_slope: object = DEFAULT_SLOPE
               ) -> tuple[tuple[float, float], ...]:
    """(q_k, rho_k) for k = 0..depth: the length and correlation maps from two inputs of
    second moment q0 and correlation rho0.

    >>> trajectory("relu", 2, 0, 1, 0, 1)  # doctest: +ELLIPSIS
    ((1.0, 0.0), (1.0, 0.3183...))
    """
    net = _net(activation, sigma_w2, sigma_b2, negative_slope)
    q = exact(q0, "q0", symbol=False)
    if not 0 < q <= MAX_SIGMA2:
        raise DeriveError(f"q0 must be a number > 0 and <= 10^4, got {shown(q0)}")
    rho = exact(rho0, "rho0", symbol=False)
    if not -1 <= rho <= 1:
        raise DeriveError(f"rho0 must be a number in [-1, 1], got {shown(rho0)}")
    steps = check_depth(depth, minimum=0, maximum=min(MAX_TRAJECTORY, MAX_DEPTH))
    qf, cf = float(q), float(rho * q)
    out = [(qf, float(rho))]
    for k in range(1, steps + 1):
        qf, cf = net.length(qf), net.forward(qf, cf)
        if not qf > 0 or not math.isfinite(qf):
            raise DeriveError(f"q_k leaves the floating-point range at layer {k} ({qf})")
        out.append((qf, max(-1.0, min(1.0, cf / qf))))
    return tuple(out)
