"""The derivation of the note on transformer layers: the token kernel of a sublayer
``x + alpha Attn(x)`` from attention's softmax overlaps S and X, forward and backward.

Each step's map is compared with the engine's: the general rule (standard attention) in
floats at the input's token kernel, with the overlaps the engine computes there; uniform
attention symbolically, in the number of tokens, alpha, sigma and gamma, against the maps
that :meth:`derive.blocks.block.Block.kernel_forward` and ``kernel_gain`` fold for
``Attn(x)``, ``x + alpha*Attn(x)`` and ``x + alpha*Attn(LN(x))``.

>>> derivation().result.latex()
'1 - \\\\rho_{k} = \\\\frac{1 - \\\\rho_{k - 1}}{\\\\alpha^{2} m \\\\sigma^{2} + 1}'
"""

from __future__ import annotations

import functools
from typing import Any

import sympy

from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step


class Shown(sympy.Symbol):
    """A symbol that prints as the LaTeX it is named with (an expectation, a kernel entry)."""

    def _latex(self, printer: Any) -> str:
        return self.name

    def _sympystr(self, printer: Any) -> str:
        return self.name.replace("\\", "").replace("{", "").replace("}", "")


alpha, gamma = sympy.Symbol("alpha", positive=True), sympy.Symbol("gamma", positive=True)
sigma_v, sigma_o = sympy.Symbol("sigma_V", positive=True), sympy.Symbol("sigma_O", positive=True)
#: sigma^2 = sigma_V^2 sigma_O^2, the value path's gain.
sigma2 = sympy.Symbol("sigma^2", positive=True)
S, X = sympy.Symbol("S", positive=True), sympy.Symbol("X", positive=True)
n_tok = sympy.Symbol("n_tok", positive=True, integer=True)
m, w, L = (sympy.Symbol("m", positive=True), sympy.Symbol("w", positive=True),
           sympy.Symbol("L", positive=True, integer=True))
q_A, c_A = sympy.Symbol("q_A"), sympy.Symbol("c_A")
c, rho = sympy.Function("c"), sympy.Function("rho")
#: The covariance of two tokens' gradients at the sublayer's output and input.
g_k, g_prev = sympy.Symbol("g_k"), sympy.Symbol("g_k-1")
values = Shown(r"E[v_j v_b]")
kernel_jb = Shown(r"\sigma_V^2 K_{jb}")
outputs = Shown(r"E[o_i o_a]")
rows = Shown(r"E[\textstyle\sum_j P_{ij} P_{aj}]")
#: Plain symbols for the engine's maps: q_{k-1}, c_{k-1}, and the gradients d_k, g_k.
_Q, _C = sympy.Symbol("Q", positive=True), sympy.Symbol("C", positive=True)
_D, _G = sympy.Symbol("D", positive=True), sympy.Symbol("G", positive=True)


def _engine(text: str, mode: str, **options: object) -> tuple[Any, Any]:
    """The engine's forward kernel and gains of ``text`` at (q, c) = (Q, C), ``mode``
    attention over n_tok tokens, sigma_V = sigma_O = sqrt(sigma) (so that
    sigma_V^2 sigma_O^2 = sigma^2), every other option as given."""
    from derive.blocks.config import variance_config
    from derive.blocks.nodes import Kernel

    config = variance_config(block=text, attention=mode, tokens="n_tok",
                             vo_variance="sigma", **options)  # type: ignore[arg-type]
    state = Kernel(_Q, _Q, _C)
    return config.block.kernel_forward(config, state), config.block.kernel_gain(config, state)


#: Exact points at which two rational functions of the derivation's symbols are compared
#: (sigma^2 a square, so that sigma is rational too):
#: rational functions of a few variables that agree at this many generic points, with
#: their degrees this small, agree everywhere in practice (and comparing numbers is far
#: cheaper than cancelling the difference).
_POINTS = (
    {"Q": sympy.Rational(3, 2), "C": sympy.Rational(2, 3), "sigma": sympy.Rational(25, 49),
     "n_tok": 16, "alpha": sympy.Rational(1, 3), "gamma": sympy.Rational(4, 5),
     "D": sympy.Rational(7, 5), "G": sympy.Rational(3, 11)},
    {"Q": sympy.Rational(11, 3), "C": sympy.Rational(-1, 9), "sigma": sympy.Rational(9, 4),
     "n_tok": 5, "alpha": sympy.Rational(7, 2), "gamma": sympy.Rational(13, 10),
     "D": sympy.Rational(2, 9), "G": sympy.Rational(-5, 8)},
    {"Q": sympy.Rational(17, 13), "C": sympy.Rational(16, 13), "sigma": sympy.Rational(1, 36),
     "n_tok": 1001, "alpha": sympy.Rational(2, 17), "gamma": sympy.Rational(3, 19),
     "D": sympy.Rational(31, 7), "G": sympy.Rational(30, 7)},
)


def _same(ours: sympy.Expr, theirs: sympy.Expr, what: str) -> None:
    """``ours`` (sigma^2 for the engine's sigma^2) equals the engine's ``theirs``, compared
    exactly at the generic points :data:`_POINTS`."""
    named = {"sigma": sympy.sqrt(sigma2), "n_tok": n_tok, "alpha": alpha, "gamma": gamma}
    engine = theirs.xreplace({s: named[s.name] for s in theirs.free_symbols
                              if s.name in named})
    for point in _POINTS:
        values = {s: point[s.name] for s in (ours.free_symbols | engine.free_symbols)
                  if s.name in point}
        values.update({s: point["sigma"] for s in (ours.free_symbols | engine.free_symbols)
                       if s == sigma2})
        if (ours - engine).xreplace(values) != 0:  # pragma: no cover (the engine changed)
            raise AssertionError(f"{what}: {ours} is not the engine's {engine}")


def _check_standard(general_q: sympy.Expr, general_c: sympy.Expr) -> tuple[float, float]:
    """The general rule in floats at q = 1, rho = 1/2 with the engine's overlaps there,
    against the engine's standard attention; returns (S, X)."""
    from derive.blocks.config import variance_config
    from derive.blocks.nodes import Kernel
    from derive.studynotes.transformers import RHO0, TOKENS, first_overlap

    same, cross = first_overlap()
    config = variance_config(block="Attn(x)", attention="standard", tokens=TOKENS)
    out = config.block.kernel_forward(config, Kernel(1.0, 1.0, float(RHO0)))
    at = {_Q: 1.0, _C: float(RHO0), sigma2: 1.0, S: same, X: cross}
    for ours, theirs in ((general_q, out.q_a), (general_c, out.c)):
        if abs(float(ours.xreplace(at)) - float(theirs)) > 1e-12:  # pragma: no cover
            raise AssertionError("the rule of standard attention is not the engine's")
    return same, cross


@functools.cache
def maps() -> dict[str, sympy.Expr]:
    """The maps of the derivation in (Q, C) = (q_{k-1}, c_{k-1}), each checked against
    the engine's: attention's output ``q_A``, ``c_A`` (overlaps S, X), uniform's
    ``uniform``, the sublayer's ``rho`` (uniform), pre-LN's ``share``, and the gradients'
    ``d`` and ``g`` through the sublayer (uniform).

    >>> maps()["uniform"]
    sigma^2*(C + (-C + Q)/n_tok)
    """
    general_q = sigma2 * (_C + (_Q - _C) * S)
    general_c = sigma2 * (_C + (_Q - _C) * X)
    uniform = general_q.xreplace({S: 1 / n_tok})
    alone, alone_gains = _engine("Attn(x)", "uniform")
    _same(uniform, alone.q_a, "uniform attention's q")
    _same(uniform, alone.c, "uniform attention's c")
    sub, sub_gains = _engine("x + alpha*Attn(x)", "uniform")
    q_next, c_next = _Q + alpha**2 * uniform, _C + alpha**2 * uniform
    _same(q_next, sub.q_a, "the sublayer's q")
    _same(c_next, sub.c, "the sublayer's c")
    rho_in = sympy.Symbol("r", positive=True)
    mean = rho_in + (1 - rho_in) / n_tok
    rho_next = (rho_in + alpha**2 * sigma2 * mean) / (1 + alpha**2 * sigma2 * mean)
    _same(rho_next.xreplace({rho_in: _C / _Q}), sub.c / sub.q_a, "the sublayer's rho")
    normed, _ = _engine("x + alpha*Attn(LN(x))", "uniform", gamma="gamma")
    branch = alpha**2 * sigma2 * gamma**2 * mean
    share = branch / (_Q + branch)
    _same((_C / _Q + share * (1 - _C / _Q)).xreplace({rho_in: _C / _Q}),
          normed.c / normed.q_a, "pre-LN's rho")
    back_d = _D + alpha**2 * sigma2 * (_D + (n_tok - 1) * _G) / n_tok
    back_g = _G + alpha**2 * sigma2 * (_D + (n_tok - 1) * _G) / n_tok
    got = sub_gains.apply(_D, _D, _G)
    _same(back_d, got[0], "the gradient's d")
    _same(back_g, got[2], "the gradient's g")
    got_alone = alone_gains.apply(_D, _D, _G)
    if sympy.cancel(got_alone[0] - got_alone[2]) != 0:  # pragma: no cover
        raise AssertionError("uniform attention alone leaves d - g")
    return {"q_A": general_q, "c_A": general_c, "uniform": uniform, "rho": rho_next,
            "mean": mean, "share": share.xreplace({rho_in: _C / _Q}), "d": back_d,
            "g": back_g, "r": rho_in}


@functools.cache
def derivation() -> Derivation:
    """The token kernel of h_k = h_{k-1} + alpha Attn(h_{k-1}) from attention's overlaps,
    then under uniform attention, with pre-LN and backward; each map checked against the
    engine's."""
    from derive.derivation.symbols import d, k, q

    found = maps()
    same, cross = _check_standard(found["q_A"], found["c_A"])
    prev = {_Q: q(k - 1), _C: c(k - 1)}
    grads = {_D: d(k), _G: g_k}
    spread = q(k - 1) - c(k - 1)
    r_prev = rho(k - 1)
    mean_of = found["mean"].xreplace({found["r"]: r_prev})
    gain = sigma_o**2 * sigma_v**2
    steps = (
        Step(values, kernel_jb,
             "the values $v_j = x_j W_V$ per unit, with $\\operatorname{Var} W_V = "
             "\\sigma_V^2/\\text{fan-in}$; $K_{jj} = q_{k-1}$, $K_{jb} = c_{k-1}$ "
             "($j \\ne b$)"),
        Step(outputs, sigma_v**2 * (c(k - 1) + spread * rows),
             "$o_i = \\sum_j P_{ij} v_j$: each output token is a softmax-weighted mean of "
             "the values, with $P$ independent of them ($W_V$ is independent of $W_Q$, "
             "$W_K$), and $\\sum_{jb} P_{ij} P_{ab} K_{jb} = c_{k-1} + (q_{k-1} - c_{k-1}) "
             "\\sum_j P_{ij} P_{aj}$, since each row of $P$ sums to $1$"),
        Step(q_A, gain * found["q_A"].xreplace(prev).xreplace({sigma2: 1}),
             "$W_O$ multiplies by $\\sigma_O^2$; a token with itself ($i = a$): "
             "$S = E[\\sum_j P_{1j}^2]$"),
        Step(c_A, gain * found["c_A"].xreplace(prev).xreplace({sigma2: 1}),
             "two tokens ($i \\ne a$): $X = E[\\sum_j P_{1j} P_{2j}]$"),
        Step(q_A - c_A, gain * spread * (S - X),
             "attention shrinks what tells the tokens apart by $S - X$; standard attention "
             f"at the input ($n_{{tok}} = 16$, $q_0 = 1$, $\\rho_0 = 1/2$) has "
             f"$S = {_float(same)}$ and $X = {_float(cross)}$, both of order "
             "$1/n_{tok}$ (the engine's rule with these overlaps, checked)"),
        Step(q_A, found["uniform"].xreplace(prev), "uniform attention ($W_Q = W_K = 0$, "
             "every $P_{ij} = 1/n_{tok}$): $S = X = 1/n_{tok}$, $\\sigma^2 = \\sigma_V^2 "
             "\\sigma_O^2$, and $c_A = q_A$: every token is the mean token, "
             "$\\rho = 1$ after one layer (the engine's map of `Attn(x)`)"),
        Step(q(k), q(k - 1) + alpha**2 * q_A,
             "the skip adds $h_{k-1}$; the cross term $E[h_{k-1} \\operatorname{Attn}"
             "(h_{k-1})]$ vanishes ($W_O$ has mean zero): second moments add"),
        Step(c(k), c(k - 1) + alpha**2 * c_A, "the same for two tokens"),
        Step(q(k) - c(k), spread * (1 + alpha**2 * gain * (S - X)),
             "the skip carries $q_{k-1} - c_{k-1}$ on; attention adds "
             "$\\alpha^2 \\sigma_O^2 \\sigma_V^2 (S - X)$ times it, and $S \\ge X$ "
             "(Cauchy-Schwarz; uniform: $S = X$, nothing)"),
        Step(rho(k), found["rho"].xreplace({found["r"]: r_prev}),
             "uniform attention, dividing by $q_k$, with "
             f"$m = {latex(mean_of)}$: the engine's map of `x + alpha*Attn(x)`"),
        Step(1 - rho(k), (1 - r_prev) / (1 + alpha**2 * sigma2 * m),
             "the distance to collapse shrinks by $1/(1 + \\alpha^2 \\sigma^2 m)$ a layer; "
             "attention alone sets it to $0$ at once"),
        Step(w, alpha**2 * sigma2 * gamma**2 * m / (q(k - 1) + alpha**2 * sigma2 * gamma**2
                                                     * m),
             "pre-LN, $h_k = h_{k-1} + \\alpha \\operatorname{Attn}(\\operatorname{LN}"
             "(h_{k-1}))$: LN hands attention $\\gamma^2$ and $\\gamma^2 \\rho_{k-1}$, so "
             "$\\rho_k - \\rho_{k-1} = w (1 - \\rho_{k-1})$ with $w$ the branch's share "
             "of $q_k$ (the engine's map of `x + alpha*Attn(LN(x))`)"),
        Step(w, sigma2 * gamma**2 / L, relation="\\le",
             reason="$\\alpha = 1/\\sqrt{L}$: $m \\le 1$ and $q_{k-1} \\ge q_0 = 1$ (the "
                    "sublayers only add to $q$), so $\\rho$ moves by $O(1/L)$ a sublayer "
                    "and by $O(1)$ over $L$ layers"),
        Step(d(k - 1), found["d"].xreplace(grads),
             "backward, uniform: each token's gradient $d_k$ and two tokens' covariance "
             "$g_k$ at the output; the value path hands every token the mean of the "
             "output gradients (gradient independence), the skip passes $d_k$ on"),
        Step(g_prev, found["g"].xreplace(grads),
             "the same for two tokens (the engine's gains of `x + alpha*Attn(x)`)"),
        Step(d(k - 1) - g_prev, d(k) - g_k,
             "the skip carries the gradients' differences between tokens on; attention "
             "alone sets $d - g$ to $0$: every token receives the same gradient"),
    )
    return Derivation(
        title="The token kernel of an attention sublayer from its softmax overlaps",
        key="transformer/token-map",
        assumptions=(
            "$h_k = h_{k-1} + \\alpha \\operatorname{Attn}(h_{k-1})$ over $n_{tok}$ "
            "exchangeable tokens with second moment $q_{k-1}$ per unit and covariance "
            "$c_{k-1}$ between two tokens, $\\rho_{k-1} = c_{k-1}/q_{k-1}$",
            "$P$ is the $n_{tok} \\times n_{tok}$ matrix of attention weights (rows sum "
            "to 1), independent of $W_V$ and $W_O$, whose variances are "
            "$\\sigma_V^2/\\text{fan-in}$ and $\\sigma_O^2/\\text{fan-in}$",
        ),
        steps=steps,
        result=Step(1 - rho(k), (1 - r_prev) / (1 + alpha**2 * sigma2 * m)),
    )


def _float(value: float) -> str:
    """A float in four significant digits, for a reason's text."""
    return f"{value:.4g}"
