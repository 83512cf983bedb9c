"""The laws of the correlations through depth, derived from the maps' expansions.

Forward, rho_k = G_k(rho_{k-1}) approaches a fixed point rho*. Write eps = rho* - rho;
SymPy expands the map around rho* (a Puiseux series where the activation has a kink):

    eps_k = A eps_{k-1} - B_k eps_{k-1}^p + ...

* A < 1: geometric, eps_k ~ C A^k, depth scale xi = -1/ln A (Schoenholz et al. 2017);
* A = 1 and B_k -> b > 0: the difference equation behaves like d eps/dk = -b eps^p, so
  eps_k ~ ((p - 1) b k)^(-1/(p-1)), a power law whose constant comes from b alone;
* A = 1 and k B_k -> b > 0 (the branch's weight falls like 1/k, as under pre-LN):
  d eps/dk = -(b/k) eps^p, so eps_k ~ ((p - 1) b ln k)^(-1/(p-1)).

Backward, the gradients' correlation at the input is rho^grad_0(K) = prod_{j<=K} h_j with
h_j the block's factor at the forward state of j - 1; with 1 - h ~ a_j eps^s the sum
of 1 - h_j over j decides: a finite sum leaves a positive limit, sum a/j a power law
K^(-beta), a factor h(rho*) < 1 a geometric decay. The constants that depend on where
the iteration starts (C of a geometric law, the prefactor of K^(-beta)) are read off
the iterated maps (at most ``CONSTANT_DEPTH`` blocks, where a power law's prefactor is
within about 1% of its limit); the rates and powers come from the expansion alone.

>>> from derive.recursions.kernel import kernel
>>> law = kernel("he", "relu", block="F(x)").forward_law
>>> law.kind, law.power, law.constant
('power', 2, 9*pi**2/2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import sympy

from derive.derivation.printing import latex
from derive.errors import DeriveError

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.config import VarianceConfig
    from derive.blocks.nodes import Kernel


class KernelAnalysis(Protocol):
    """What a law reads of a two-point analysis
    (:class:`derive.recursions.kernel.KernelAnalysis`)."""

    config: VarianceConfig
    q0: sympy.Expr
    rho0: sympy.Expr
    depth: int

    @property
    def rho_floor(self) -> float:
        """The lowest correlation the state can hold."""

    @property
    def forward_states(self) -> tuple[Kernel, ...]:
        """The forward states at k = 0..K."""

    @property
    def rho_map(self) -> sympy.Expr | None:
        """rho_k in R_IN and Q_IN, or None."""

    @property
    def grad_factor(self) -> sympy.Expr | None:
        """rho^grad_{k-1}/rho^grad_k in R_IN and Q_IN, or None."""

    @property
    def map_reason(self) -> str | None:
        """Why there are no closed-form maps, or None."""

    @property
    def forward_law(self) -> object:
        """The forward law."""

eps = sympy.Symbol("epsilon", positive=True)
t = sympy.Symbol("t", positive=True)
j = sympy.Symbol("k", positive=True)
#: Depth of the iteration that reads off a law's constant: deeper, the distance 1 - rho
#: falls below 1e-8 and the maps lose digits to cancellation in double precision.
CONSTANT_DEPTH = 10_000


@dataclass(frozen=True)
class Law:
    """How a correlation behaves with depth: ``kind`` is ``geometric``, ``power``,
    ``logarithmic``, ``limit`` (settles at a value), ``superlinear`` (approaches it faster
    than geometrically: the map's slope there is 0), ``stretched`` or ``none``.

    ``limit`` is the value approached; ``rate`` the geometric ratio, ``depth_scale``
    -1/ln(rate); ``power`` the exponent; ``constant`` the prefactor (exact where the
    expansion gives it); ``text`` and ``latex`` the law written out; ``reason`` why.
    """

    kind: str
    limit: sympy.Expr | float | None = None
    rate: sympy.Expr | float | None = None
    power: sympy.Expr | float | None = None
    constant: sympy.Expr | float | None = None
    text: str = ""
    latex: str = ""
    reason: str = ""
    #: s of a law in ln k + s (where the iteration starts), else None.
    shift: float | None = None

    @property
    def depth_scale(self) -> float | None:
        """xi = -1/ln(rate) for a geometric law (inf at rate 1), else None."""
        if self.kind != "geometric" or self.rate is None:
            return None
        rate = float(self.rate)
        return math.inf if rate >= 1 else -1 / math.log(rate)


def law_dict(law: object) -> dict[str, object]:
    """A law as JSON: kind, limit, rate, depth scale, power, constant, text, LaTeX."""
    assert isinstance(law, Law)

    def number(value: object) -> float | None:
        return None if value is None else float(value)  # type: ignore[arg-type]

    return {"kind": law.kind, "limit": number(law.limit), "rate": number(law.rate),
            "depth_scale": law.depth_scale, "power": number(law.power),
            "constant": number(law.constant), "shift": law.shift, "text": law.text,
            "latex": law.latex,
            "reason": law.reason}


# --- the forward law ------------------------------------------------------------------

def _q_of_k(analysis: KernelAnalysis) -> sympy.Expr | None:
    """q_{k-1} as a function of k (the symbol ``j``), or None where it has no closed form
    (or where, as through attention, q_k depends on the tokens' covariance too)."""
    from derive.derivation.symbols import K, q0
    from derive.recursions.analysis import _analysis

    if analysis.config.block.has_attention:
        return None
    closed = _analysis(analysis.config).forward.closed_form
    if closed is None:
        return None
    return closed.rhs.subs({q0: analysis.q0, K: j - 1})


def _in_t(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` (a function of eps = t^2) in t, with the kinks' functions written so that
    their series in t are plain Taylor series: acos(u) = 2 asin(sqrt((1 - u)/2)), and
    each root's radicand factored (sqrt(2 t^2 - t^4) = t sqrt(2 - t^2))."""
    out = expr.xreplace({eps: t**2})
    out = out.replace(sympy.acos, lambda u: 2 * sympy.asin(sympy.sqrt(sympy.factor((1 - u) / 2))))
    return out.replace(
        lambda x: x.is_Pow and x.exp.is_Rational and not x.exp.is_Integer,
        lambda x: sympy.Pow(sympy.factor(x.base), x.exp))


def _powers(expr: sympy.Expr, order: int) -> dict[sympy.Expr, sympy.Expr]:
    """The nonzero coefficients of ``expr``'s expansion in eps up to eps^(order/2), by power."""
    series = sympy.series(_in_t(expr), t, 0, order + 1).removeO()
    out: dict[sympy.Expr, sympy.Expr] = {}
    for term in sympy.Add.make_args(sympy.expand(series)):
        coeff, part = term.as_independent(t, as_Add=False)
        power = sympy.Integer(0) if part == 1 else part.as_base_exp()[1] / 2
        out[power] = out.get(power, sympy.Integer(0)) + coeff
    return {p: c for p, c in ((p, sympy.simplify(c)) for p, c in out.items()) if c != 0}


def _expansion(expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """``expr`` = c0 + A eps + B eps^p + ... (p > 1 the next power): returns (A, B, p),
    B = 0 when there is none."""
    powers = _powers(expr, 4)
    linear = powers.get(sympy.Integer(1), sympy.Integer(0))
    higher = {p: c for p, c in powers.items() if p > 1}
    if not higher:
        return linear, sympy.Integer(0), sympy.Integer(2)
    p = min(higher)
    return linear, higher[p], p


def _limit_in_k(expr: sympy.Expr) -> sympy.Expr:
    return sympy.limit(expr, j, sympy.oo) if expr.has(j) else expr


def forward_law(analysis: KernelAnalysis) -> Law:
    """The law of rho_k, from the map's expansion around its fixed point."""
    G = analysis.rho_map
    if G is None:
        return _numeric_forward(analysis)
    from derive.recursions.block_maps import Q_IN, R_IN

    if G.has(Q_IN):
        q_prev = _q_of_k(analysis)
        if q_prev is None:  # where q settles at q*, the map at q* holds at every depth
            return _numeric_forward(analysis)
        G = G.xreplace({Q_IN: q_prev})
    if sympy.simplify(G - R_IN) == 0:
        return Law("limit", limit=analysis.rho0, text="rho_k = rho_0 at every depth",
                   latex=r"\rho_k = \rho_0", reason="the map is the identity: each block "
                   "passes the correlation on unchanged")
    if sympy.simplify(G.xreplace({R_IN: sympy.Integer(1)}) - 1) == 0:
        law = _at_one(analysis, G, R_IN)
        if law is not None:
            return law
    if G.has(j):
        return _numeric_forward(analysis)
    return _geometric(analysis, G, R_IN)


def _at_one(analysis: KernelAnalysis, G: sympy.Expr, R: sympy.Symbol) -> Law | None:
    """The law of 1 - rho_k where rho = 1 is a fixed point (None if it repels)."""
    A, higher, p = _expansion(1 - G.xreplace({R: 1 - eps}))
    B = -higher  # the new distance to 1: 1 - G(1 - eps) = A eps - B eps^p
    slope = _limit_in_k(A)
    if slope.is_number and slope < 1:
        return _geometric_at(analysis, 1, slope)
    if sympy.simplify(A - 1) != 0:
        return None  # rho = 1 repels (or the slope changes with depth): look elsewhere
    b0 = _limit_in_k(B)
    a = 1 / (p - 1)
    if b0.is_positive and b0.is_finite:
        C = sympy.simplify(((p - 1) * b0) ** (-a))
        return Law("power", limit=sympy.Integer(1), power=a, constant=C,
                   text=f"1 - rho_k ~ {_short(C)} k^-{_short(a)}",
                   latex=rf"1 - \rho_k \simeq {latex(C)}\, k^{{-{latex(a)}}}",
                   reason=(r"$\rho = 1$ is a fixed point where the map has slope 1: "
                           rf"$1 - \rho_k = \epsilon$ shrinks by "
                           rf"${latex(b0)}\,\epsilon^{{{latex(p)}}}$ a block, which gives a "
                           "power law"))
    b1 = _limit_in_k(sympy.simplify(B * j)) if B.has(j) else sympy.oo
    if b1.is_positive and b1.is_finite:
        C = sympy.simplify(((p - 1) * b1) ** (-a))
        shift = _log_shift(analysis, float((p - 1) * b1), float(a))
        return Law("logarithmic", limit=sympy.Integer(1), power=a, constant=C, shift=shift,
                   text=f"1 - rho_k ~ {_short(C)} (ln k + {shift:.3g})^-{_short(a)}",
                   latex=(rf"1 - \rho_k \simeq {latex(C)}\, (\ln k + {shift:.3g})"
                          rf"^{{-{latex(a)}}}"),
                   reason=(r"$\rho = 1$ is a fixed point where the map has slope 1, and the "
                           r"branch's share of each block falls like $1/k$: $\epsilon$ shrinks "
                           rf"by $({latex(b1)}/k)\,\epsilon^{{{latex(p)}}}$ a block, which "
                           r"gives a law in $\ln k$"))
    return None


def _log_shift(analysis: KernelAnalysis, rate: float, power: float) -> float:
    """s in 1 - rho_k ~ (rate (ln k + s))^-power: the solution of d eps/dk = -(b/k) eps^p
    is eps^(1-p) = (p - 1) b (ln k + s), with s set by where the iteration starts; read
    off the iterated map at the deepest block."""
    distances = _iterate_forward_distances(analysis, 1.0, CONSTANT_DEPTH)
    depth = len(distances) - 1
    return distances[-1] ** (-1 / power) / rate - math.log(depth)


def _geometric_at(analysis: KernelAnalysis, limit: sympy.Expr | float,
                  rate: sympy.Expr) -> Law:
    rate_value = float(rate)
    if abs(rate_value) < 1e-9:
        return _slope_zero(analysis, limit)
    alternating = rate_value < 0
    if alternating:
        rate, rate_value = -rate, -rate_value
    constant = _geometric_constant(
        _iterate_forward_distances(analysis, float(limit), CONSTANT_DEPTH), rate_value)
    xi = -1 / math.log(rate_value)
    target = "1 - rho_k" if float(limit) == 1 else f"|rho_k - {_short(limit)}|"
    return Law("geometric", limit=limit, rate=rate, constant=constant,
               text=f"{target} ~ {constant:.4g} * {_short(rate)}^k (xi = {xi:.4g})",
               latex=rf"|\rho_k - \rho^*| \simeq {constant:.4g} \cdot {_tex_number(rate)}^k",
               reason=(rf"the map's slope at its fixed point $\rho^* = {_tex_number(limit)}$ "
                       + (rf"is $\chi_c = -{_tex_number(rate)}$, of size below 1: the distance "
                          r"shrinks by that factor each block, alternating in sign"
                          if alternating else
                          rf"is $\chi_c = {_tex_number(rate)} < 1$: the distance shrinks by "
                          r"that factor each block")))


def _slope_zero(analysis: KernelAnalysis, limit: sympy.Expr | float) -> Law:
    """A fixed point where the map's slope is 0: reached at the first block where the map is
    constant there, else approached faster than geometrically."""
    first = float(analysis.forward_states[1].rho) if analysis.depth >= 1 else math.nan
    if abs(first - float(limit)) <= 1e-12:
        return Law("limit", limit=limit, text=f"rho_k = {_short(limit)} from k = 1",
                   latex=rf"\rho_k = {latex(limit)}", reason="the map is constant near its "
                   "fixed point")
    return Law("superlinear", limit=limit,
               text=f"rho_k -> {_short(limit)} faster than geometrically",
               latex=rf"\rho_k \to {latex(limit)}",
               reason=(rf"the map's slope at its fixed point $\rho^* = {_tex_number(limit)}$ "
                       "is 0: the distance shrinks by a factor that itself shrinks each block"))


def _fixed_points(rho_map: Callable[[float], float], points: int,
                  floor: float = -1.0) -> list[float]:
    """The fixed points of ``rho_map`` in [floor, 1] (``floor`` > -1 for the tokens of a
    sequence, whose kernel is positive semi-definite only down to -1/(n - 1)): the ends
    where they are fixed, and every sign change of rho_map(r) - r on a grid strictly inside,
    refined by brentq."""
    from scipy.optimize import brentq

    def gap(r: float) -> float:
        return rho_map(r) - r

    roots = [end for end in (floor, 1.0) if abs(gap(end)) < 1e-13]
    inner = 1e-7
    width = 1 - floor
    grid = [floor + inner + (width - 2 * inner) * i / points for i in range(points + 1)]
    values = []
    for r in grid:
        try:
            values.append(gap(r))
        except (ValueError, ZeroDivisionError, DeriveError):
            values.append(math.nan)
    for lo, hi, vlo, vhi in zip(grid, grid[1:], values, values[1:], strict=False):
        if vlo == 0:
            roots.append(lo)
        elif vlo * vhi < 0:
            roots.append(brentq(gap, lo, hi, xtol=1e-15))
    return roots


def _slope(rho_map: Callable[[float], float], star: float, floor: float = -1.0) -> float:
    """The map's derivative at ``star`` by central differences (one-sided at the ends)."""
    h = 1e-6
    lo, hi = max(floor, star - h), min(1.0, star + h)
    return (rho_map(hi) - rho_map(lo)) / (hi - lo)


def _attracting(analysis: KernelAnalysis, rho_map: Callable[[float], float],
                points: int) -> Law:
    """The geometric law at the attracting fixed point nearest where the profile ends."""
    floor = analysis.rho_floor
    roots = _fixed_points(rho_map, points, floor)
    if not roots:
        return Law("none", reason="no fixed point of the correlation map in "
                   f"[{_short(floor)}, 1] was found")
    slopes = {root: _slope(rho_map, root, floor) for root in roots}
    stable = [root for root in roots if abs(slopes[root]) < 1]
    if not stable:
        shown = ", ".join(f"{r:.6g} (slope {slopes[r]:.6g})" for r in sorted(roots))
        return Law("none", reason=f"no fixed point attracts: {shown}")
    last = float(analysis.forward_states[-1].rho)
    star = min(stable, key=lambda r: abs(r - last))
    shown = sympy.Integer(0) if abs(star) < 1e-12 else sympy.Float(star, 15)
    return _geometric_at(analysis, shown, sympy.Float(slopes[star], 12))


def _geometric(analysis: KernelAnalysis, G: sympy.Expr, R: sympy.Symbol) -> Law:
    """The map in closed form but rho = 1 not attracting: its other fixed points."""
    return _attracting(analysis, sympy.lambdify(R, G, "math"), 400)


def _why_not(analysis: KernelAnalysis, tail: str) -> str:
    return f"{analysis.map_reason}; {tail}" if analysis.map_reason else tail


def _settled_moment(analysis: KernelAnalysis) -> float | None:
    """The second moment the blocks settle at (the length map's fixed point q*, reached by
    iterating the block's own map on one input), or None where q keeps changing."""
    from derive.blocks.nodes import Kernel

    config, block = analysis.config, analysis.config.block
    q = float(analysis.forward_states[-1].q_a)
    step, steady = math.nan, 0
    for _ in range(2000):
        state = Kernel(q, q, q, None)
        try:
            following = float(block.kernel_forward(config, state).q_a)
        except (OverflowError, ZeroDivisionError, DeriveError):
            return None
        if not math.isfinite(following) or following <= 0 or following > 1e250:
            return None
        if abs(following - q) <= 1e-13 * q:
            return following
        # q growing by the same step block after block (pre-LN) never settles
        steady = steady + 1 if abs(following - q - step) <= 1e-12 * step else 0
        if steady >= 10:
            return None
        step, q = following - q, following
    return None


#: Where q grows by the same amount every layer, the increments are read at this q (their
#: limit as q grows, to O(1/q)).
GROWTH_Q = 1e4


def _increments(analysis: KernelAnalysis, q: float, eps: float) -> tuple[float, float]:
    """What one layer adds to q and to q - c, from the state (q, (1 - eps) q)."""
    from derive.blocks.nodes import Kernel

    config = analysis.config
    out = config.block.kernel_forward(config, Kernel(q, q, (1 - eps) * q))
    return float(out.q_a) - q, float(out.q_a - out.c) - eps * q


def _growing(analysis: KernelAnalysis) -> Law | None:
    """Where q_k grows by the same a every layer (its branches see normalized inputs, as in
    pre-LN layers) and q - c by beta (1 - rho) as rho -> 1: then q - c grows like
    k^(beta/a), so 1 - rho_k = (q - c)/q falls like k^-(1 - beta/a). None where q does not
    grow so, or where rho = 1 does not attract (beta >= a)."""
    try:
        a, _ = _increments(analysis, GROWTH_Q, 0.0)
        farther, _ = _increments(analysis, 10 * GROWTH_Q, 0.0)
        # beta(eps) = beta + g sqrt(eps) + O(eps) where a kink enters: two eps remove g
        slopes = [_increments(analysis, GROWTH_Q, eps)[1] / eps for eps in (1e-4, 1e-6)]
    except (OverflowError, ZeroDivisionError, DeriveError):
        return None
    if not (a > 0 and abs(a - farther) <= 1e-6 * a):
        return None
    beta = (10 * slopes[1] - slopes[0]) / 9
    rhos = [float(s.rho) for s in analysis.forward_states]
    depth = len(rhos) - 1
    if beta >= a * (1 - 1e-6) or depth < 2 or not 0 < 1 - rhos[-1] < 1 - rhos[depth // 2]:
        return None
    power = 1 - beta / a
    constant = (1 - rhos[-1]) * depth**power
    return Law("power", limit=sympy.Integer(1), power=sympy.Float(power, 6),
               constant=sympy.Float(constant, 6),
               text=f"1 - rho_k ~ {constant:.4g} k^-{power:.4g} (prefactor read at k = {depth})",
               latex=rf"1 - \rho_k \simeq {constant:.4g}\, k^{{-{power:.4g}}}",
               reason=(rf"each layer adds $a = {a:.4g}$ to $q$ and $\beta (1 - \rho)$ to "
                       rf"$q - c$, $\beta = {beta:.4g}$ (read at $q = 10^4$), so $q - c$ grows "
                       rf"like $k^{{\beta/a}}$ and $1 - \rho_k = (q - c)/q$ falls like "
                       rf"$k^{{-(1 - \beta/a)}}$, once $q_k \gg q_0$, for "
                       rf"$k \gg q_0/a = {float(analysis.q0) / a:.3g}$ layers; the prefactor is "
                       rf"read at $k = {depth}$"))


def _numeric_forward(analysis: KernelAnalysis) -> Law:
    """No closed-form map: where the second moment settles at q*, the map at q* is the same
    at every depth; its fixed point and slope are found numerically on the block's own
    two-point rules (the slope by central differences)."""
    if analysis.config.block.has_batchnorm:
        return Law("none", reason=_why_not(analysis, "no law is derived: the values are "
                                           "iterated"))
    q_star = _settled_moment(analysis)
    if q_star is None:
        growing = _growing(analysis) if analysis.config.block.has_attention else None
        if growing is not None:
            return growing
        return Law("none", reason=_why_not(analysis, "the second moment keeps changing with "
                                           "depth, so no law is derived: the values are "
                                           "iterated"))
    config, block = analysis.config, analysis.config.block

    def rho_map(r: float) -> float:
        from derive.blocks.nodes import Kernel

        return float(block.kernel_forward(config, Kernel(q_star, q_star, r * q_star)).rho)

    return _attracting(analysis, rho_map, 100)


# --- the backward law -------------------------------------------------------------------

def _gradients_mix(analysis: KernelAnalysis) -> bool:
    """Whether the block's gains mix the gradients of its two inputs (attention over
    several tokens: :attr:`derive.blocks.nodes.KernelGains.mixes`), so that no factor a
    block carries the gradients' correlation."""
    config = analysis.config
    return config.block.kernel_gain(config, analysis.forward_states[0]).mixes


def backward_law(analysis: KernelAnalysis) -> Law:
    """How rho^grad_0 depends on the depth K, from the forward law and the expansion of
    the gradient factor around the forward fixed point."""
    forward = analysis.forward_law
    assert isinstance(forward, Law)
    if _gradients_mix(analysis):
        return Law("none", reason="the block mixes the gradients of its two inputs "
                   "(attention over the tokens), so the gradients' correlation is not carried "
                   "by one factor a block; the values are iterated")
    h = _factor_in_k(analysis, forward)
    if h is None:
        return _numeric_backward(analysis, forward)
    from derive.recursions.block_maps import R_IN

    if sympy.simplify(h - 1) == 0:
        return Law("limit", limit=sympy.Integer(1), text="rho^grad_0 = 1 at every depth",
                   latex=r"\rho^{grad}_0 = 1", reason="each block passes the gradients' "
                   "correlation on unchanged")
    if forward.kind == "limit":
        return Law("none", reason="the forward correlation does not move, and the gradient "
                   "factor is not 1; the values are iterated")
    star = forward.limit
    if forward.kind == "geometric" and float(star) < 1:  # type: ignore[arg-type]
        factor = h.xreplace({R_IN: sympy.Float(float(star), 30)})  # type: ignore[arg-type]
        return _geometric_backward(analysis, float(_limit_in_k(factor)))
    if forward.kind in ("geometric", "superlinear"):
        return _settles(analysis, "the forward correlation reaches 1 geometrically, so the "
                        "gradient factors approach 1 fast enough for their product to converge")
    lead, power = _leading(sympy.simplify(1 - h.xreplace({R_IN: 1 - eps})))
    if forward.kind == "power":
        return _after_power(analysis, forward, lead, power)
    return _after_logarithmic(analysis, forward, lead, power)


def _factor_in_k(analysis: KernelAnalysis, forward: Law) -> sympy.Expr | None:
    """The gradient factor with q_{k-1} written in k, or None where it is not written."""
    from derive.recursions.block_maps import Q_IN

    h = analysis.grad_factor
    if forward.kind == "none" or h is None:
        return None
    if h.has(Q_IN):
        q_prev = _q_of_k(analysis)
        if q_prev is None:
            return None
        h = h.xreplace({Q_IN: q_prev})
    return h


def _after_power(analysis: KernelAnalysis, forward: Law, lead: sympy.Expr,
                 power: sympy.Expr) -> Law:
    """1 - h_k ~ lead_k (C k^-alpha)^power, with lead_k ~ l k^-t: the sum over k decides."""
    C, alpha = forward.constant, forward.power
    assert C is not None and alpha is not None
    t_lead = _power_of_k(lead)
    decay = sympy.simplify(alpha * power + t_lead)
    beta = sympy.simplify(_limit_in_k(lead * j**t_lead) * C**power)
    if decay == 1:
        return _power_backward(analysis, beta)
    if decay > 1:
        return _settles(analysis, "the gradient factors approach 1 like "
                        f"$k^{{-{latex(decay)}}}$, a summable rate, so their product "
                        "converges")
    spread = sympy.simplify(beta / (1 - decay))
    return Law("stretched", power=1 - decay, constant=spread,
               text=f"ln rho^grad_0 ~ -{_short(spread)} K^{_short(1 - decay)}",
               latex=rf"\ln \rho^{{grad}}_0 \simeq -{latex(spread)}\,K^{{{latex(1 - decay)}}}",
               reason="the gradient factors approach 1 too slowly for a power law")


def _after_logarithmic(analysis: KernelAnalysis, forward: Law, lead: sympy.Expr,
                       power: sympy.Expr) -> Law:
    """1 - h_k ~ lead_k C^power (ln k)^(-alpha power), with lead_k ~ l/k."""
    C, alpha = forward.constant, forward.power
    assert C is not None and alpha is not None
    t = _power_of_k(lead)
    coefficient = sympy.simplify(_limit_in_k(lead * j ** t) * C ** power)
    log_power = sympy.simplify(alpha * power)
    if t == 1 and log_power == 1:
        return _loglog_backward(analysis, coefficient)
    if t == 1 and log_power < 1:
        exponent = 1 - log_power
        beta = sympy.simplify(coefficient / exponent)
        return Law(
            "stretched", limit=0.0, power=exponent, constant=beta,
            text=f"ln rho^grad_0 ~ -{_short(beta)} (ln K)^{_short(exponent)}",
            latex=rf"\ln \rho^{{grad}}_0 \simeq -{latex(beta)} (\ln K)^{{{latex(exponent)}}}",
            reason=f"the gradient factors approach 1 like $1/(k (\\ln k)^{{{latex(log_power)}}})$")
    if (t == 1 and log_power > 1) or t > 1:
        return _settles(analysis, "the gradient factors approach 1 at a summable rate")
    return Law("none", reason="the gradient factors approach 1 at a rate not covered by "
               "the derived laws; the values are iterated")


def _leading(expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """``expr`` ~ lead * eps^power as eps -> 0 (lead may depend on k)."""
    powers = {p: c for p, c in _powers(expr, 3).items() if p > 0}
    if not powers:
        raise DeriveError("the gradient factor has no leading term")
    power = min(powers)
    return powers[power], power


def _power_of_k(expr: sympy.Expr) -> sympy.Expr:
    """t such that expr ~ const k^-t as k -> oo."""
    if not expr.has(j):
        return sympy.Integer(0)
    return sympy.simplify(-sympy.limit(j * sympy.diff(expr, j) / expr, j, sympy.oo))


def _settles(analysis: KernelAnalysis, why: str) -> Law:
    products = _iterate_backward(analysis, CONSTANT_DEPTH, settled=True)
    limit = products[-1]
    return Law("limit", limit=limit, text=f"rho^grad_0 -> {limit:.4g} as K grows",
               latex=rf"\rho^{{grad}}_0 \to {limit:.4g}", reason=why)


def _geometric_backward(analysis: KernelAnalysis, factor: float) -> Law:
    if not 0 < factor < 1:
        return Law("none", reason=f"the gradient factor at the fixed point is {factor:.6g}")
    products = _iterate_backward(analysis, CONSTANT_DEPTH)
    constant = _geometric_constant(products, factor)
    xi = -1 / math.log(factor)
    return Law("geometric", limit=0.0, rate=factor, constant=constant,
               text=f"rho^grad_0 ~ {constant:.4g} * {factor:.6g}^K (xi = {xi:.4g})",
               latex=rf"\rho^{{grad}}_0 \simeq {constant:.4g} \cdot {factor:.6g}^K",
               reason=(r"the forward correlation settles below 1, where each block "
                       rf"multiplies the gradients' correlation by {factor:.6g}"))


def _power_backward(analysis: KernelAnalysis, beta: sympy.Expr) -> Law:
    """rho^grad_0 ~ D K^-beta: D(K) = rho^grad_0(K) K^beta approaches D with corrections of
    order ln K / K, so D is extrapolated from three depths, D(K) = D + (a ln K + b)/K."""
    products = _iterate_backward(analysis, CONSTANT_DEPTH)
    depth = len(products) - 1
    constant = products[-1] * depth ** float(beta)
    depths = (depth // 4, depth // 2, depth)
    if depths[0] >= 100:
        import numpy as np

        rows = [[1.0, math.log(d) / d, 1.0 / d] for d in depths]
        values = [products[d] * d ** float(beta) for d in depths]
        constant = float(np.linalg.solve(np.array(rows), np.array(values))[0])
    return Law("power", limit=0.0, power=beta, constant=constant,
               text=f"rho^grad_0 ~ {constant:.4g} K^-{_short(beta)}",
               latex=rf"\rho^{{grad}}_0 \simeq {constant:.4g}\, K^{{-{latex(beta)}}}",
               reason=(r"each block multiplies the gradients' correlation by "
                       rf"$1 - {latex(beta)}/k$ at leading order, as the inputs' "
                       r"correlation approaches 1: the product falls like a power of $K$"))


def _loglog_backward(analysis: KernelAnalysis, beta: sympy.Expr) -> Law:
    """A law in ln K: its prefactor converges too slowly (corrections of order 1/ln K) to
    be read off an iteration, so only the power is given."""
    return Law("logarithmic", limit=0.0, power=beta,
               text=f"rho^grad_0 falls like (ln K)^-{_short(beta)}",
               latex=rf"\rho^{{grad}}_0 \propto (\ln K)^{{-{latex(beta)}}}",
               reason=(r"each block multiplies the gradients' correlation by "
                       rf"$1 - {latex(beta)}/(k \ln k)$ at leading order: the product falls "
                       r"like a power of $\ln K$"))


def _numeric_backward(analysis: KernelAnalysis, forward: Law) -> Law:
    """Without a closed-form factor: the gradients' factor at the forward fixed point."""
    if forward.kind != "geometric" or forward.limit is None or float(forward.limit) >= 1:
        if forward.kind == "geometric":
            return _settles(analysis, "the forward correlation reaches 1 geometrically, so "
                            "the gradient factors approach 1 fast enough for their product "
                            "to converge")
        return Law("none", reason="no forward law, so no backward law is derived; the "
                   "values are iterated")
    from derive.blocks.nodes import Kernel

    q_star = _settled_moment(analysis)
    if q_star is None:
        return Law("none", reason="the second moment keeps changing with depth, so no "
                   "backward law is derived; the values are iterated")
    star = float(forward.limit)
    gains = analysis.config.block.kernel_gain(
        analysis.config, Kernel(q_star, q_star, star * q_star))
    return _geometric_backward(analysis, float(gains.ab / gains.a))


# --- iterations for the constants -------------------------------------------------------

def _closed_maps(analysis: KernelAnalysis) -> tuple | None:
    """The maps rho_{k-1} -> rho_k and the gradient factor as float functions of (k, rho),
    where they are written in closed form (q_{k-1} replaced by its closed form in k)."""
    from derive.recursions.block_maps import Q_IN

    G, h = analysis.rho_map, analysis.grad_factor
    if G is None or h is None:
        return None
    if G.has(Q_IN) or h.has(Q_IN):
        q_prev = _q_of_k(analysis)
        if q_prev is None:
            return None
        G, h = G.xreplace({Q_IN: q_prev}), h.xreplace({Q_IN: q_prev})
    return _in_floats(G, h)


@lru_cache(maxsize=64)
def _in_floats(G: sympy.Expr, h: sympy.Expr) -> tuple[Callable[..., float], Callable[..., float]]:
    """The two maps as float functions of (k, rho), compiled once for every law that
    iterates them (the constants of the forward and the backward law)."""
    from derive.recursions.block_maps import R_IN

    return (sympy.lambdify((j, R_IN), G, "math"), sympy.lambdify((j, R_IN), h, "math"))


def _forward_rhos(analysis: KernelAnalysis, depth: int, limit: float | None = None
                  ) -> list[float]:
    """rho_k for k = 0.. up to ``depth`` (fewer where the values leave the float range, or,
    given ``limit``, once rho_k is within 1e-10 of it)."""
    maps = _closed_maps(analysis)
    rhos = [float(analysis.rho0)]

    def done() -> bool:
        return limit is not None and abs(limit - rhos[-1]) < 1e-10

    if maps is not None:
        G = maps[0]
        for index in range(1, depth + 1):
            rhos.append(min(1.0, max(-1.0, G(index, rhos[-1]))))
            if done():
                break
        return rhos
    config, block = analysis.config, analysis.config.block
    state = analysis.forward_states[0]
    for _ in range(depth):
        try:
            state = block.kernel_forward(config, state)
        except (OverflowError, ZeroDivisionError, DeriveError):
            break
        if not all(math.isfinite(float(v)) and abs(float(v)) < 1e250
                   for v in (state.q_a, state.q_b, state.c)):
            break
        rhos.append(float(state.rho))
        if done():
            break
    return rhos


def _iterate_forward_distances(analysis: KernelAnalysis, limit: float, depth: int) -> list[float]:
    return [limit - r for r in _forward_rhos(analysis, depth, limit)]


def _iterate_backward(analysis: KernelAnalysis, depth: int, settled: bool = False
                      ) -> list[float]:
    """rho^grad_0 for K = 0..depth: the running product of the blocks' factors; stops
    early where the product falls below 1e-12 or, with ``settled``, where the factors
    stay within 1e-14 of 1 (the product has converged to rounding)."""
    maps = _closed_maps(analysis)
    out, product, calm = [1.0], 1.0, 0

    def done(factor: float) -> bool:
        nonlocal calm
        calm = calm + 1 if abs(1 - factor) < 1e-14 else 0
        return abs(product) < 1e-12 or (settled and calm > 20)

    if maps is not None:
        G, h = maps
        r = float(analysis.rho0)
        for index in range(1, depth + 1):
            factor = h(index, r)
            product *= factor
            out.append(product)
            if done(factor):
                break
            r = min(1.0, max(-1.0, G(index, r)))
        return out

    config, block = analysis.config, analysis.config.block
    state: Kernel = analysis.forward_states[0]
    for _ in range(depth):
        try:
            gains = block.kernel_gain(config, state)
            state = block.kernel_forward(config, state)
        except (OverflowError, ZeroDivisionError, DeriveError):
            break
        if not math.isfinite(float(state.q_a)) or abs(float(state.q_a)) > 1e250:
            break
        factor = float(gains.ab / gains.a)
        product *= factor
        out.append(product)
        if done(factor):
            break
    return out


def _geometric_constant(distances: list[float], rate: float) -> float:
    """C in distance_k ~ C rate^k, read where the distance is still far above rounding."""
    best = 0.0
    for index, value in enumerate(distances):
        if abs(value) < 1e-9 or index > 2000:
            break
        best = abs(value) / rate**index
    return best


def _short(value: object) -> str:
    expr = sympy.sympify(value)
    if expr.is_Integer or expr.is_Rational:
        return str(expr)
    if expr.is_number:
        return f"{float(expr):.6g}" if not expr.free_symbols else str(expr)
    return str(expr)


def _tex_number(value: object) -> str:
    expr = sympy.sympify(value)
    if expr.is_Float:
        return f"{float(expr):.6g}"
    return latex(expr)
