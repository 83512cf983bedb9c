"""The laws of the correlations through depth, against long iterations written here.

``KernelAnalysis.forward_law`` / ``backward_law`` print how rho_k and rho^grad_0 behave
with depth. Each is checked against the maps iterated to depth 10^6 by code in this
file, written from the mathematics of He-initialized ReLU blocks, not read from derive:

    E[relu(u) relu(v)] = q (sin t + (pi - t) cos t) / (2 pi),   cos t = rho  (Cho & Saul 2009)
    E[relu'(u) relu'(v)] = P(u > 0, v > 0) = (pi - t) / (2 pi)        (Sheppard's formula)

Forward, with a W of variance 2/fan_in after the relu, a block's branch carries
c' = q f(rho), f(rho) = (sin t + (pi - t) cos t)/pi, and 1 - f(cos t) = eps - D(t)/pi with
eps = 1 - rho = 1 - cos t and D(t) = sin t - t cos t. A block whose branch has the share
a of the output's second moment maps the distance eps to eps - a D(t)/pi:

* plain F(x): a = 1;
* residual x + F(x), and (x + F(x))/sqrt(2), LN(x + F(x)) (a common factor or a
  normalization of the sum leaves rho alone): a = 1/2, since q doubles;
* pre-LN x + F(LN(x)) from q_0 = 1: q_k = q_{k-1} + 1 = k + 1, so block k has
  a = 1/(q_{k-1} + 1) = 1/(k + 1).

Backward, the gradients' correlation is multiplied at block k by
h_k = g_{k-1}/g_k / (d_{k-1}/d_k) = 1 - a t_{k-1}/pi (the relu's derivative kernel over
its one-point value 1/2).

The iteration is run on eps and t, not on rho: near rho = 1 the step eps - eps' ~ eps^1.5
falls below the rounding of a float rho (at k = 10^5 it is about 1e-13), so iterating
rho itself drifts; here eps' = eps - a D(t)/pi loses nothing, with D(t) from its Taylor
series for small t (checked against a 40-digit mpmath iteration of rho to k = 10^5:
relative agreement 1e-15).

Why the gradient exponent is 3 for every share a (plain and residual alike): near
rho = 1, eps = t^2/2 + O(t^4) and D(t) = t^3/3 + O(t^5), so the distance map reads
t dt = -(a/(3 pi)) t^3 per block, i.e. dt/dk = -(a/(3 pi)) t^2 and t_k ~ 3 pi/(a k);
then 1 - h_k = a t_{k-1}/pi ~ 3/k, where a cancels, and prod_k (1 - 3/k) ~ K^-3. The
forward constant does depend on a: eps_k = t_k^2/2 ~ 9 pi^2/(2 a^2 k^2), which is
9 pi^2/2 for a = 1 and 18 pi^2 for a = 1/2. Under pre-LN, a = 1/(k+1): dt/dk =
-t^2/(3 pi k) gives t ~ 3 pi/ln k, eps ~ 9 pi^2/(2 ln^2 k) and 1 - h_k ~ 3/(k ln k),
whose product falls like (ln K)^-3.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import sympy

from derive.recursions.kernel import kernel

DEPTHS = (10**4, 10**5, 10**6)


def _d(t: float) -> float:
    """D(t) = sin t - t cos t, by its Taylor series sum_n (-1)^(n+1) 2n t^(2n+1)/(2n+1)!
    where the direct formula would cancel."""
    if t >= 0.1:
        return math.sin(t) - t * math.cos(t)
    s = t * t
    return t * s * (1 / 3 - s * (1 / 30 - s * (1 / 840 - s * (1 / 45360 - s / 3991680))))


@cache
def iterate(kind: str, depth: int = DEPTHS[-1], rho0: float = 0.5) -> dict[int, tuple[float, ...]]:
    """eps_k = 1 - rho_k, ln rho^grad_0(k) and k (1 - h_k) at the depths in DEPTHS and
    their neighbours (``kind``: plain, residual or pre)."""
    keep = {k + i for k in DEPTHS for i in (-1, 0)} | {1, 10, 50, 100}
    eps, log_grad, out = 1.0 - rho0, 0.0, {}
    for k in range(1, depth + 1):
        t = 2 * math.asin(math.sqrt(eps / 2))  # the angle of rho_{k-1}
        share = {"plain": 1.0, "residual": 0.5}.get(kind) or 1.0 / (k + 1)
        step = share * t / math.pi  # 1 - h_k
        log_grad += math.log1p(-step)
        eps -= share * _d(t) / math.pi
        if k in keep:
            out[k] = (eps, log_grad, k * step)
    return out


def _law(block: str):
    analysis = kernel("he", "relu", block=block, rho0="1/2", q0=1)
    return analysis.forward_law, analysis.backward_law


# --- power laws of the plain and residual stacks ------------------------------------------

@pytest.mark.parametrize(("block", "kind", "constant"), [
    ("F(x)", "plain", 9 * sympy.pi**2 / 2),
    ("none", "residual", 18 * sympy.pi**2),
    ("rescaled", "residual", 18 * sympy.pi**2),
    ("post", "residual", 18 * sympy.pi**2),
])
def test_forward_power_law(block: str, kind: str, constant: sympy.Expr) -> None:
    forward, _ = _law(block)
    assert (forward.kind, forward.power) == ("power", 2)
    assert sympy.simplify(forward.constant - constant) == 0
    values = iterate(kind)
    C = float(constant)
    deviations = [abs(values[k][0] * k * k / C - 1) for k in DEPTHS]
    # the correction to eps_k k^2 is O(ln k / k): each decade divides it by about
    # 10 ln(k)/ln(10 k), i.e. by more than 5 here; at 10^6 it is below 1e-4
    assert deviations[2] < 1e-4
    assert deviations[0] / deviations[1] > 5 and deviations[1] / deviations[2] > 5


def test_gradient_exponent_is_three_for_any_branch_share() -> None:
    """The derivation of the module docstring done by SymPy: dt/dk = -(a/(3 pi)) t^2
    from the expansions of eps(t) and D(t); then k (1 - h_k) -> 3 whatever a."""
    t, k, a = sympy.symbols("t k a", positive=True)
    f = sympy.Function("theta")
    eps = 1 - sympy.cos(t)
    D = sympy.sin(t) - t * sympy.cos(t)
    # per block: d eps = eps'(t) dt = -a D/pi, so dt = -a D / (pi eps'(t)); leading order:
    rate = sympy.series(-a * D / (sympy.pi * sympy.diff(eps, t)), t, 0, 3).removeO()
    assert sympy.simplify(rate + a * t**2 / (3 * sympy.pi)) == 0
    theta_k = sympy.dsolve(sympy.Eq(f(k).diff(k), rate.subs(t, f(k))), f(k)).rhs
    assert sympy.limit(k * a * theta_k / sympy.pi, k, sympy.oo) == 3
    assert sympy.limit(k**2 * (1 - sympy.cos(theta_k)), k, sympy.oo) == 9 * sympy.pi**2 / (2 * a**2)
    # and in the iterations: k (1 - h_k) -> 3, and the local exponent of rho^grad_0 -> 3
    for kind in ("plain", "residual"):
        values = iterate(kind)
        assert values[10**6][2] == pytest.approx(3, abs=1e-3)  # O(ln k/k) = 1e-4 at 10^6
        # between 10^5 and 10^6 the prefactor still moves by O(ln K/K): 3e-4 here
        slope = (values[10**6][1] - values[10**5][1]) / math.log(10)
        assert slope == pytest.approx(-3, abs=1e-3)


def _extrapolated(kind: str) -> float:
    """lim K^3 rho^grad_0(K), from K = 10^4, 10^5, 10^6 with the corrections of the
    product, C(K) = C - (alpha ln K + beta)/K (sum over k > K of O(ln k/k^2) terms)."""
    import numpy as np

    values = iterate(kind)
    rows = [[1.0, -math.log(K) / K, -1.0 / K] for K in DEPTHS]
    estimates = [math.exp(values[K][1]) * K**3 for K in DEPTHS]
    return float(np.linalg.solve(np.array(rows), np.array(estimates))[0])


@pytest.mark.parametrize(("block", "kind"), [("F(x)", "plain"), ("none", "residual")])
def test_gradient_power_law_exponent(block: str, kind: str) -> None:
    _, backward = _law(block)
    assert (backward.kind, backward.power) == ("power", 3)
    values = iterate(kind)
    estimates = [math.exp(values[K][1]) * K**3 for K in DEPTHS]
    # K^3 rho^grad_0(K) settles: the steps shrink by a decade each decade
    steps = [estimates[1] - estimates[0], estimates[2] - estimates[1]]
    assert 0 < steps[1] < steps[0] / 5
    # the stated constant is within 1% of the limit (what correlation_laws promises)
    assert float(backward.constant) == pytest.approx(_extrapolated(kind), rel=1e-2)


@pytest.mark.parametrize(("block", "kind"), [("F(x)", "plain"), ("none", "residual")])
def test_gradient_power_law_constant(block: str, kind: str) -> None:
    _, backward = _law(block)
    limit = _extrapolated(kind)
    # the extrapolation's own error: the next corrections are O(ln^2 K/K^2), 1e-6 at 10^4
    assert math.exp(iterate(kind)[10**6][1]) * 10**18 == pytest.approx(limit, rel=2e-4)
    assert float(backward.constant) == pytest.approx(limit, rel=1e-3)


# --- pre-LN: laws in ln k ------------------------------------------------------------------

def test_pre_ln_forward_law_in_ln_k() -> None:
    """1 - rho_k ~ (9 pi^2/2) (ln k)^-2: (1 - rho_k)^(-1/2) grows like ln k / sqrt(C)
    plus a constant set by the first blocks, so the ratio to the law approaches 1 only
    like 1 - 2 c/ln k; its slope in ln k is sharp (corrections O(1 - rho_k))."""
    forward, _ = _law("pre")
    assert (forward.kind, forward.power) == ("logarithmic", 2)
    C = 9 * math.pi**2 / 2
    assert sympy.simplify(forward.constant - sympy.Rational(9, 2) * sympy.pi**2) == 0
    values = iterate("pre")
    u = {K: values[K][0] ** -0.5 for K in DEPTHS}
    slope = (u[10**6] - u[10**4]) / math.log(100)
    # corrections: the next term of D(t)/eps'(t), relative O(eps) = O(0.1) at these depths,
    # measured 0.5% here
    assert slope == pytest.approx(1 / math.sqrt(C), rel=1e-2)
    # the ratio to the law rises toward 1, and the offset c in (ln k + c) is a constant
    ratios = [values[K][0] * math.log(K) ** 2 / C for K in DEPTHS]
    assert ratios[0] < ratios[1] < ratios[2] < 1
    offsets = [u[K] * math.sqrt(C) - math.log(K) for K in DEPTHS]
    assert max(offsets) - min(offsets) < 0.05 * max(offsets)


def test_pre_ln_gradient_law_in_ln_k() -> None:
    """rho^grad_0 falls like (ln K + c)^-3 with the forward offset c: the exponent 3 is
    measured between K = 10^4 and 10^6 once the offset is taken into account."""
    _, backward = _law("pre")
    assert (backward.kind, backward.power) == ("logarithmic", 3)
    C = 9 * math.pi**2 / 2
    values = iterate("pre")
    offset = values[10**6][0] ** -0.5 * math.sqrt(C) - math.log(10**6)
    drop = values[10**6][1] - values[10**4][1]
    exponent = -drop / math.log((math.log(10**6) + offset) / (math.log(10**4) + offset))
    assert exponent == pytest.approx(3, rel=2e-2)
    # k ln k (1 - h_k) -> 3 like the local exponent: 3 ln k/(ln k + c) at k = 10^6
    k = 10**6
    assert values[k][2] * (math.log(k) + offset) == pytest.approx(3, rel=1e-2)


# --- dropout: geometric laws --------------------------------------------------------------

def test_dropout_geometric_laws_forward_and_backward() -> None:
    """x + Dropout(F(x), p), independent masks: rho' = (1-p)/(2-p) (rho + f(rho)), and the
    gradient factor h = (1 + (pi - t)/pi)(1-p)/(2-p), the map's own slope (Price's
    theorem: f'(rho) = (pi - t)/pi). Both laws are geometric with the same rate."""
    analysis = kernel("he", "relu", block="dropout", values={"p": "1/10"}, rho0="1/2")
    forward, backward = analysis.forward_law, analysis.backward_law
    p = 0.1
    rhos, grads = [0.5], [1.0]
    for _ in range(200):
        r = rhos[-1]
        t = math.acos(r)
        grads.append(grads[-1] * (1 + (math.pi - t) / math.pi) * (1 - p) / (2 - p))
        rhos.append((1 - p) / (2 - p) * (r + (math.sin(t) + (math.pi - t) * r) / math.pi))
    star = rhos[-1]
    ratio = (star - rhos[81]) / (star - rhos[80])
    assert forward.kind == backward.kind == "geometric"
    assert float(forward.rate) == pytest.approx(ratio, rel=1e-6)
    assert float(backward.rate) == pytest.approx(grads[81] / grads[80], rel=1e-6)
    assert float(backward.rate) == pytest.approx(float(forward.rate), rel=1e-9)
    # the constants: |rho_k - rho*| ~ C rate^k and rho^grad_0(K) ~ C' rate^K
    rate = float(forward.rate)
    assert float(forward.constant) == pytest.approx((star - rhos[80]) / rate**80, rel=1e-5)
    assert float(backward.constant) == pytest.approx(grads[80] / rate**80, rel=1e-5)
    assert backward.depth_scale == pytest.approx(-1 / math.log(ratio), rel=1e-5)
