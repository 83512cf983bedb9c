"""Softmax overlaps: the expectations that softmax self-attention's mean-field rules need.

A row of n logits is, up to a shift that softmax ignores, n iid N(0, v); a second row is
correlated with it key by key: the pairs (u_j, w_j) are iid bivariate normals, variance v
each, covariance r v. With P = softmax(u), P' = softmax(w):

* S  = E[sum_j P_j^2]                                    (``same``)
* X  = E[sum_j P_j P'_j]                                 (``cross``)
* QS = E[sum_j P_j^2 (1 - 2 P_j + sum_c P_c^2)]          (``same_logit``)
* QX = E[sum_j P_j P'_j (1 - P_j - P'_j + sum_c P_c P'_c)]   (``cross_logit``)

**Method** (:func:`gaussian_overlaps`). Each overlap is a sum of moments
E[e^{a u_1 + b u_2 + ...} / Z^m] with Z = sum_k e^{u_k}. The Laplace transform
1/Z^m = (1/(m-1)!) int_0^inf t^{m-1} e^{-t Z} dt factors the keys, which are independent.
With t = e^tau and the functions h_a(x) = exp(a x - e^x), h_0(x) = exp(-e^x):

    E[e^{a u_1} / Z^a] = (1/(a-1)!) int H_a(tau) L(tau)^{n-1} dtau,
    E[e^{2 u_1 + 2 u_2} / Z^4] = (1/3!) int H_2(tau)^2 L(tau)^{n-2} dtau,

H_a(tau) = E[h_a(tau + u)], L(tau) = E[h_0(tau + u)]. So S = n I_2 and
QS = S - 2 n I_3 + n I_4 + n (n - 1) I_22. The two-row moments are double integrals over
(tau_1, tau_2) of F(tau_1, tau_2) = E[h_a(tau_1 + u) h_b(tau_2 + w)] times
M(tau_1, tau_2)^{n-1}, M = E[h_0(tau_1 + u) h_0(tau_2 + w)]:

    X = n J_11,   QX = X - 2 n J_21 + n J_22 + n (n - 1) J_1111,

(J_ab the moment with h_a, h_b; J_1111 has F_11^2 M^{n-2}). Writing u = a + b_1,
w = +-a + b_2 (a ~ N(0, |r| v) shared, b_1, b_2 ~ N(0, (1 - |r|) v)), F and M become
one-dimensional Gaussian averages, over a, of products of functions of one variable
(h_a smoothed by b). Every integrand is analytic and decays at both ends, so each
integral is a trapezoid sum on a uniform grid (error falling like exp(-pi^2 / step)),
and a Gaussian average is Gauss-Hermite when its standard deviation is below
``_GRID_FROM`` and a trapezoid sum against the density on a grid in x otherwise. The
double integral runs in (alpha, beta) = ((tau_1 + tau_2)/2, (tau_1 - tau_2)/2) with a
coarse step along the direction smoothed by a (the widest Gaussian) and a fine one
across it. 1 - L and 1 - M are computed directly (not as differences from 1), so
M^{n-1} keeps its relative precision up to n = ``MAX_TOKENS``.

The absolute error of the four overlaps is below ``OVERLAP_PRECISION`` (1e-8) for every
n <= ``MAX_TOKENS``, 0 <= v <= ``MAX_LOGIT_VARIANCE``, -1 <= r <= 1; the differences
seen from the same integrals at twice the resolution, wider cut-offs and twice the
Gauss-Hermite nodes are 8e-11 or smaller (n from 2 to 4096, v from 1e-6 to 100, r from
-1 to 1). tests/test_softmax_overlaps.py checks that, and compares with direct adaptive
quadratures for two and three tokens (within 1e-9) and with Monte Carlo.

**Large n** (:func:`large_n_overlaps`): Z / n -> E[e^u] = e^{v/2}, so
S ~ E[e^{2u}] / (n E[e^u]^2) = e^v / n and X ~ E[e^{u + w}] / (n E[e^u]^2) = e^{r v} / n,
and QS ~ S, QX ~ X (the terms in P^3 and P^4 are smaller by a factor 1/n).

>>> o = gaussian_overlaps(2, 0.0, 0.5)
>>> o.same, o.cross, o.same_logit
(0.5, 0.5, 0.25)
>>> round(gaussian_overlaps(16, 1.0, 0.5).same, 6)
0.132452
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from derive.errors import DeriveError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["MAX_LOGIT_VARIANCE", "MAX_TOKENS", "OVERLAP_PRECISION", "Overlaps",
           "gaussian_overlaps", "large_n_overlaps", "tied_overlaps", "uniform_overlaps"]

#: The longest sequence served.
MAX_TOKENS = 4096
#: The largest logit variance served (logits of standard deviation 10).
MAX_LOGIT_VARIANCE = 100.0
#: The stated absolute error of the four overlaps of :func:`gaussian_overlaps`.
OVERLAP_PRECISION = 1e-8
#: Below this logit variance the overlaps are taken at v = 0: their slopes in v there are
#: (n - 1)/n^2 <= 1/4 in size (for S; X, QS and QX alike), so the error is below 2.5e-10,
#: and a stack whose tokens have merged (v -> 0) needs no quadrature.
TINY_VARIANCE = 1e-9

#: The functions h_a(x) = exp(a x - e^x) are below e^-32 left of _X_LO (a >= 1); right of
#: _X_HI, 1 - exp(-e^x) - Phi(x) is below 1e-18 (and h_a, exp(-e^x) far smaller).
_X_LO = -32.0
_X_HI = 9.0
#: h_a and exp(-e^x) are below e^-38 right of _H_HI.
_H_HI = 4.0
#: The finest step of every trapezoid sum (error about exp(-pi^2 / step)).
_STEP = 0.3
#: Gaussian averages stop at _CUT standard deviations (mass left out below 3e-12).
_CUT = 7.0
#: A Gaussian average is Gauss-Hermite below this standard deviation, a grid in x above it.
_GRID_FROM = 2.5 * _STEP
#: Gauss-Hermite nodes for a deviation s: _HERMITE_BASE + _HERMITE_PER_VARIANCE s^2.
_HERMITE_BASE = 6
_HERMITE_PER_VARIANCE = 40.0
#: Steps along a direction smoothed by a standard deviation s are s / (_PER_SCALE sqrt(1 + log n)).
_PER_SCALE = 3.0
#: M^{n-1} is taken as 0 where (n - 1) log M is below this.
_LOG_NEGLIGIBLE = -80.0


@dataclass(frozen=True)
class Overlaps:
    """The softmax overlaps S, X, QS, QX of a row of logits with itself and another row.

    >>> Overlaps(0.5, 0.5, 0.25, 0.25).cross
    0.5
    """

    same: float
    cross: float
    same_logit: float
    cross_logit: float


# ----------------------------------------------------------------------------- validation

def _check_tokens(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not (
            1 <= int(n) <= MAX_TOKENS):
        raise DeriveError(f"the number of tokens n must be an integer from 1 to {MAX_TOKENS}, "
                          f"got {n!r}")
    return int(n)


def _check_real(name: str, value: object, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DeriveError(f"{name} must be a real number in [{what}], got {value!r}")
    x = float(value)
    if not (low <= x <= high):  # also refuses nan
        raise DeriveError(f"{name} must be in [{what}], got {value!r}")
    return x


# ----------------------------------------------------------------------------- public API

def gaussian_overlaps(n: int, v: float, r: float) -> Overlaps:
    """The overlaps for n logits iid N(0, v) per row, rows correlated r key by key.

    Deterministic quadrature (see the module's docstring), absolute error below
    ``OVERLAP_PRECISION``; results are cached.

    >>> o = gaussian_overlaps(4, 1.0, 1.0)
    >>> abs(o.cross - o.same) < 1e-9, round(o.same, 6)
    (True, 0.391971)
    >>> gaussian_overlaps(1, 3.0, 0.2)
    Overlaps(same=1.0, cross=1.0, same_logit=0.0, cross_logit=0.0)
    >>> gaussian_overlaps(8, 101.0, 0.0)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: the logit variance v must be in [0, 100], got 101.0
    """
    tokens = _check_tokens(n)
    variance = _check_real("the logit variance v", v, 0.0, MAX_LOGIT_VARIANCE,
                           f"0, {MAX_LOGIT_VARIANCE:g}")
    corr = _check_real("the correlation r", r, -1.0, 1.0, "-1, 1")
    if variance < TINY_VARIANCE:  # within OVERLAP_PRECISION of their values at v = 0
        variance = 0.0
    return _overlaps(tokens, variance, corr, 1)


@functools.lru_cache(maxsize=4096)
def _overlaps(n: int, v: float, r: float, refine: int) -> Overlaps:
    """The overlaps, with every step divided and every cut-off widened by ``refine``."""
    if n == 1:
        return Overlaps(1.0, 1.0, 0.0, 0.0)
    if v == 0.0:
        return Overlaps(1.0 / n, 1.0 / n, (n - 1) / n**2, (n - 1) / n**2)
    grids = _Grids(n, v, refine)
    same, same_logit, tau_cut = _one_row(grids)
    cross, cross_logit = _two_rows(grids, r, tau_cut)
    return Overlaps(same, cross, same_logit, cross_logit)


def large_n_overlaps(n: int, v: float, r: float) -> Overlaps:
    """The leading large-n behaviour: S ~ QS ~ e^v / n, X ~ QX ~ e^(r v) / n.

    Z / n tends to E[e^u] = e^(v/2), so S ~ E[e^(2u)] / (n E[e^u]^2) and
    X ~ E[e^(u+w)] / (n E[e^u]^2); the relative corrections are O(e^(2v) / n).

    >>> o = large_n_overlaps(4096, 0.5, 0.5)
    >>> round(o.same * 4096, 6) == round(math.exp(0.5), 6)
    True
    """
    tokens = _check_tokens(n)
    variance = _check_real("the logit variance v", v, 0.0, MAX_LOGIT_VARIANCE,
                           f"0, {MAX_LOGIT_VARIANCE:g}")
    corr = _check_real("the correlation r", r, -1.0, 1.0, "-1, 1")
    same = math.exp(variance) / tokens
    cross = math.exp(corr * variance) / tokens
    return Overlaps(same, cross, same, cross)


def tied_overlaps(n: Any, w: Any) -> tuple[Any, Any]:
    """(S, X) of the tied mode's deterministic attention: P_ii = A, P_ij = B (i != j).

    A = 1/(1 + (n - 1) e^(-w)), B = (1 - A)/(n - 1); S = A^2 + (n - 1) B^2,
    X = 2 A B + (n - 2) B^2. Exact for SymPy arguments (n may be a symbol), floats for
    floats; n = 1 gives (1, 1).

    >>> import sympy
    >>> tied_overlaps(2, sympy.Integer(0))
    (1/2, 1/2)
    >>> n = sympy.Symbol("n", positive=True)
    >>> s, x = tied_overlaps(n, sympy.log(2))
    >>> sympy.simplify(s.subs(n, 3))
    3/8
    >>> tied_overlaps(1, 0.7)
    (1, 1)
    """
    if _is_number(n) and n == 1:
        return (1, 1)
    if _is_float(n) or _is_float(w):
        nf, wf = float(n), float(w)
        a = 1.0 / (1.0 + (nf - 1.0) * math.exp(-wf))
        b = (1.0 - a) / (nf - 1.0)
        return (a * a + (nf - 1.0) * b * b, 2.0 * a * b + (nf - 2.0) * b * b)
    import sympy

    ns, ws = sympy.sympify(n), sympy.sympify(w)
    e = sympy.exp(-ws)
    # A = 1/(1 + (n-1) e^-w) and B = e^-w/(1 + (n-1) e^-w), so B = (1 - A)/(n - 1)
    # without a division by n - 1.
    a = 1 / (1 + (ns - 1) * e)
    b = e / (1 + (ns - 1) * e)
    same = sympy.simplify(a**2 + (ns - 1) * b**2)
    cross = sympy.simplify(2 * a * b + (ns - 2) * b**2)
    return (same, cross)


def uniform_overlaps(n: Any) -> tuple[Any, Any]:
    """(S, X) = (1/n, 1/n) of uniform attention, exact for integers and SymPy, else floats.

    >>> uniform_overlaps(4)
    (1/4, 1/4)
    >>> uniform_overlaps(4.0)
    (0.25, 0.25)
    """
    if _is_float(n):
        return (1.0 / float(n), 1.0 / float(n))
    import sympy

    value = 1 / sympy.sympify(n)
    return (value, value)


def _is_float(value: object) -> bool:
    return isinstance(value, float) or type(value).__name__ in ("float64", "float32")


def _is_number(value: object) -> bool:
    if isinstance(value, numbers.Number):
        return True
    return bool(getattr(value, "is_number", False))


# ----------------------------------------------------------------------------- numerics

def _h(name: str, x: np.ndarray) -> np.ndarray:
    """The integrands: ``h1``..``h4`` are exp(a x - e^x); ``hc`` is 1 - exp(-e^x)."""
    import numpy as np

    with np.errstate(over="ignore"):
        ex = np.exp(x)
    if name == "hc":
        return -np.expm1(-ex)
    a = int(name[1])
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(a * x - ex)
    return np.where(np.isfinite(ex), out, 0.0)


@functools.lru_cache(maxsize=64)
def _hermite(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for E[f(Z)], Z ~ N(0, 1)."""
    import numpy as np

    if k == 1:
        return np.zeros(1), np.ones(1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(k)
    return nodes, weights / weights.sum()


def _hermite_count(s: float, refine: int) -> int:
    if s == 0.0:
        return 1
    return refine * (_HERMITE_BASE + math.ceil(_HERMITE_PER_VARIANCE * s * s))


def _smooth(names: tuple[str, ...], s: float, t: np.ndarray, refine: int,
            shifts: np.ndarray | None = None) -> np.ndarray:
    """E[f(t + shift + s Z)] for each f in ``names``: shape (len(names), len(t)), or
    (len(names), len(t), len(shifts)) with ``shifts``.
    """
    import numpy as np
    from scipy.special import ndtr

    t = np.asarray(t, dtype=float)
    offsets = np.zeros(1) if shifts is None else np.asarray(shifts, dtype=float)
    if s < _GRID_FROM:
        nodes, weights = _hermite(_hermite_count(s, refine))
        points = t[:, None, None] + offsets[None, :, None] + s * nodes
        out = np.stack([_h(name, points) @ weights for name in names])
    else:
        step = _STEP / refine
        x = np.arange(_X_LO * refine, _X_HI + step / 2, step)
        z = (x[None, :] - t[:, None]) / s
        density = np.exp(-0.5 * z * z) * (step / (s * math.sqrt(2.0 * math.pi)))
        shifted = x[:, None] + offsets[None, :]
        values = []
        for name in names:
            f = _h(name, shifted)
            if name == "hc":  # 1 - exp(-e^x) = Phi(x) + a rest that decays at both ends
                values.append(density @ (f - ndtr(shifted)) + ndtr(
                    (t[:, None] + offsets[None, :]) / math.sqrt(1.0 + s * s)))
            else:
                values.append(density @ f)
        out = np.stack(values)
    return out[:, :, 0] if shifts is None else out


class _Grids:
    """Steps and cut-offs shared by the one-row and two-row integrals."""

    def __init__(self, n: int, v: float, refine: int) -> None:
        self.n, self.v, self.refine = n, v, refine
        self.sigma = math.sqrt(v)
        self.cut = _CUT + 2.0 * (refine - 1)
        self.per_scale = _PER_SCALE * math.sqrt(1.0 + math.log(n)) * refine
        self.fine = _STEP / refine

    def step_for(self, s: float) -> float:
        """The trapezoid step along a direction smoothed by a Gaussian of deviation s."""
        return max(self.fine, s / self.per_scale)

    def support(self, s: float) -> tuple[float, float]:
        """Where h_a smoothed by N(0, s^2) is not negligible."""
        low = _X_LO * (1.0 + 0.25 * (self.refine - 1))
        return low - self.cut * s, _H_HI + self.cut * s


def _log_power(one_minus: np.ndarray, power: int) -> np.ndarray:
    """(1 - m)^power from 1 - m, exp(power log1p(-(1 - m))), 0 where negligible."""
    import numpy as np

    if power == 0:
        return np.ones_like(one_minus)
    clipped = np.clip(one_minus, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log = power * np.log1p(-clipped)
    return np.where(log > _LOG_NEGLIGIBLE, np.exp(np.maximum(log, _LOG_NEGLIGIBLE)), 0.0)


def _one_row(grids: _Grids) -> tuple[float, float, float]:
    """S, QS, and the tau beyond which L(tau)^(n-1) is negligible."""
    import numpy as np

    n, sigma = grids.n, grids.sigma
    step = grids.step_for(sigma)
    low, high = grids.support(sigma)
    tau = step * np.arange(math.floor(low / step), math.ceil(high / step) + 1)
    h2, h3, h4, hc = _smooth(("h2", "h3", "h4", "hc"), sigma, tau, grids.refine)
    power = _log_power(hc, n - 1)
    i2 = step * float(np.sum(h2 * power))
    i3 = step * float(np.sum(h3 * power)) / 2.0
    i4 = step * float(np.sum(h4 * power)) / 6.0
    i22 = step * float(np.sum(h2 * h2 * _log_power(hc, n - 2))) / 6.0
    same = n * i2
    same_logit = same - 2 * n * i3 + n * i4 + n * (n - 1) * i22
    negligible = np.nonzero(power == 0.0)[0]
    tau_cut = float(tau[negligible[0]]) if negligible.size else float(tau[-1])
    return same, same_logit, tau_cut


class _Plane:
    """The (alpha, beta) grid of the two-row integrals, tau_1 = alpha + beta,
    tau_2 = alpha - beta; one direction (``coarse``) is smoothed by the shared a.

    Every coordinate is an integer multiple of the fine step, so sums and differences
    index one grid of the fine step.
    """

    def __init__(self, grids: _Grids, r: float, tau_cut: float) -> None:
        v = grids.v
        self.positive = r >= 0.0
        self.s0 = math.sqrt(v * abs(r))
        self.s1 = math.sqrt(max(v * (1.0 - abs(r)), 0.0))
        self.hermite = self.s0 < _GRID_FROM
        fine = grids.step_for(self.s1)
        if not self.hermite:
            fine = max(grids.fine, min(fine, self.s0 / 2.5))
        ratio = 1 if self.hermite else max(1, int(grids.step_for(grids.sigma) / fine))
        self.fine, self.ratio = fine, ratio
        low, high = grids.support(self.s1)
        half = (high - low) / 2.0
        reach = grids.cut * self.s0
        if self.positive:  # coarse alpha (the sum), fine beta
            coarse_range = (low - reach, min(high + reach, tau_cut))
            fine_range = (-half, half)
            y_range = (low - half, high + half)
        else:  # coarse beta (the difference), fine alpha
            coarse_range = (-half - reach, half + reach)
            fine_range = (low, min(high, tau_cut))
            y_range = (-2.0 * half, 2.0 * half)
        coarse = fine * ratio
        self.coarse_index = ratio * self._index(coarse_range, coarse)
        self.fine_index = self._index(fine_range, fine)
        self.y_index = self._index(y_range, fine)

    @staticmethod
    def _index(span: tuple[float, float], step: float) -> np.ndarray:
        import numpy as np

        return np.arange(math.floor(span[0] / step), math.ceil(span[1] / step) + 1)

    def alpha_beta(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer alpha and beta (in fine steps) on the (coarse, fine) grid."""
        import numpy as np

        c, f = np.meshgrid(self.coarse_index, self.fine_index, indexing="ij")
        return (c, f) if self.positive else (f, c)


def _two_rows(grids: _Grids, r: float, tau_cut: float) -> tuple[float, float]:
    """X and QX: double integrals over (alpha, beta)."""
    import numpy as np

    n = grids.n
    plane = _Plane(grids, r, tau_cut)
    alpha, beta = plane.alpha_beta()
    tau1, tau2 = alpha + beta, alpha - beta
    f11, f21, f22, g_m = _products(plane, grids.refine)
    # 1 - L at tau_1 and tau_2, with the full variance
    low = min(int(tau1.min()), int(tau2.min()))
    line = np.arange(low, max(int(tau1.max()), int(tau2.max())) + 1)
    (one_minus_l,) = _smooth(("hc",), grids.sigma, plane.fine * line, grids.refine)
    if plane.positive:
        one_minus_m = one_minus_l[tau2 - low] + g_m
    else:
        one_minus_m = one_minus_l[tau1 - low] + one_minus_l[tau2 - low] - g_m
    power = _log_power(one_minus_m, n - 1)
    weight = 2.0 * plane.fine * plane.fine * plane.ratio
    j11 = weight * float(np.sum(f11 * power))
    j21 = weight * float(np.sum(f21 * power))
    j22 = weight * float(np.sum(f22 * power))
    j1111 = weight * float(np.sum(f11 * f11 * _log_power(one_minus_m, n - 2)))
    cross = n * j11
    return cross, cross - 2 * n * j21 + n * j22 + n * (n - 1) * j1111


def _products(plane: _Plane, refine: int) -> list[np.ndarray]:
    """E_a[f(tau_1 + a + b_1) g(tau_2 +- a + b_2)] on the plane for (f, g) = (h1, h1),
    (h2, h1), (h2, h2), and the term of 1 - M: (hc, 1 - hc) for r >= 0, (hc, hc) for r < 0.
    """
    pairs = (("h1", "h1"), ("h2", "h1"), ("h2", "h2"),
             ("hc", "h0") if plane.positive else ("hc", "hc"))
    if plane.hermite:
        return _products_hermite(plane, pairs, refine)
    return _products_grid(plane, pairs, refine)


def _on(values: dict[str, np.ndarray], name: str) -> np.ndarray:
    return 1.0 - values["hc"] if name == "h0" else values[name]


def _products_grid(plane: _Plane, pairs: tuple[tuple[str, str], ...],
                   refine: int) -> list[np.ndarray]:
    """a on a grid: G(coarse, fine) = sum_y phi_s0(y - coarse) f(P(y, fine)) g(Q(y, fine))."""
    import numpy as np

    y = plane.y_index[:, None]
    d = plane.fine_index[None, :]
    first, second = (y + d, y - d) if plane.positive else (d + y, d - y)
    low = int(min(first.min(), second.min()))
    line = np.arange(low, int(max(first.max(), second.max())) + 1)
    smoothed = _smooth(("h1", "h2", "hc"), plane.s1, plane.fine * line, refine)
    values = dict(zip(("h1", "h2", "hc"), smoothed, strict=True))
    z = plane.fine * (plane.y_index[None, :] - plane.coarse_index[:, None]) / plane.s0
    density = np.exp(-0.5 * z * z) * (plane.fine / (plane.s0 * math.sqrt(2.0 * math.pi)))
    out = []
    for f, g in pairs:
        product = _on(values, f)[first - low] * _on(values, g)[second - low]
        out.append(density @ product)  # (coarse, fine)
    return out


def _products_hermite(plane: _Plane, pairs: tuple[tuple[str, str], ...],
                      refine: int) -> list[np.ndarray]:
    """a by Gauss-Hermite: G = sum_k w_k f(tau_1 + s0 z_k) g(tau_2 +- s0 z_k)."""
    import numpy as np

    nodes, weights = _hermite(_hermite_count(plane.s0, refine))
    alpha, beta = plane.alpha_beta()
    tau1, tau2 = alpha + beta, alpha - beta
    low = int(min(tau1.min(), tau2.min()))
    line = plane.fine * np.arange(low, int(max(tau1.max(), tau2.max())) + 1)
    smoothed = _smooth(("h1", "h2", "hc"), plane.s1, line, refine, plane.s0 * nodes)
    values = dict(zip(("h1", "h2", "hc"), smoothed, strict=True))
    flip = slice(None) if plane.positive else slice(None, None, -1)
    first, second = tau1 - low, tau2 - low
    out = []
    for f, g in pairs:
        fv, gv = _on(values, f), _on(values, g)[:, flip]
        # sum_k w_k f(line_i + s0 z_k) g(line_j +- s0 z_k) for every two points of the line
        # at once (one matrix product), read at the plane's (tau_1, tau_2)
        table = (fv * weights) @ gv.T
        out.append(table[first, second])
    return out
