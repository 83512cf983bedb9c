"""The derivation of the note on shattered gradients: the correlation map of a residual
block ``x + alpha F(x)`` in its branch's gains and correlation maps, and its laws near
rho = 1.

The branch's maps under He and ReLU (the arc-cosine kernel and its derivative kernel)
are the engine's (:func:`derive.recursions.kernel.kernel`); SymPy expands them at
rho = 1 and solves the difference equations for large k. The block's map for alpha = 1
is compared with the engine's map of ``x + F(x)``, and each law reached with the
engine's law (:mod:`derive.recursions.correlation_laws`), which derives them its own way.

>>> derivation().result.latex()
'\\\\rho^{grad}_{0} \\\\propto \\\\frac{1}{K^{3}}'
"""

from __future__ import annotations

import functools

import sympy

from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step
from derive.studynotes.correlations import analysis, factor_at, laws

rho_k, rho_prev = sympy.Symbol("rho_k"), sympy.Symbol("rho_k-1")
grad_k, grad_prev = sympy.Symbol("rho^grad_k"), sympy.Symbol("rho^grad_k-1")
grad_0 = sympy.Symbol("rho^grad_0")
eps, eps_k, eps_prev = (sympy.Symbol("epsilon", positive=True), sympy.Symbol("epsilon_k"),
                        sympy.Symbol("epsilon_k-1", positive=True))
alpha, g, G = (sympy.Symbol("alpha", positive=True), sympy.Symbol("g", positive=True),
               sympy.Symbol("G", positive=True))
w, b = sympy.Symbol("w", positive=True), sympy.Symbol("b", positive=True)
h_k = sympy.Symbol("h_k")
#: The block index, as the notation writes it.
k_ = sympy.Symbol("k", integer=True)
#: The branch's correlation map C and its gradients' factor D, as functions of rho.
C, D = sympy.Function("C"), sympy.Function("Cdot")  # C and \dot C
_HALF, _THREE_HALVES = sympy.Rational(1, 2), sympy.Rational(3, 2)


def _in_t(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` (in rho = 1 - t^2) with arccos and the roots written so that SymPy's series
    in t is a plain Taylor series: arccos(1 - t^2) = 2 arcsin(t/sqrt(2))."""
    out = expr.replace(sympy.acos,
                       lambda u: 2 * sympy.asin(sympy.sqrt(sympy.factor((1 - u) / 2))))
    return out.replace(lambda e: e.is_Pow and e.exp == _HALF,
                       lambda e: sympy.sqrt(sympy.factor(e.base)))


def near_one(expr: sympy.Expr, variable: sympy.Symbol, order: int
             ) -> tuple[sympy.Expr, dict[sympy.Expr, sympy.Expr]]:
    """The series of ``expr`` at variable = 1 - epsilon in powers of sqrt(epsilon), below
    epsilon^(order/2): the series, and its coefficients by power of epsilon.

    >>> r = sympy.Symbol("r")
    >>> near_one(sympy.sqrt(1 - r**2), r, 2)[1][sympy.Rational(1, 2)]
    sqrt(2)
    """
    t = sympy.Symbol("t", positive=True)
    series = sympy.expand(sympy.series(_in_t(expr.xreplace({variable: 1 - t**2})), t, 0,
                                       order).removeO())
    coefficients = {sympy.Rational(n, 2): series.coeff(t, n) for n in range(order)}
    return series.xreplace({t: sympy.sqrt(eps)}), coefficients


@functools.cache
def branch_maps() -> tuple[sympy.Expr, sympy.Expr, sympy.Expr, sympy.Expr]:
    """The branch F(x) = W relu(x) under He, from the engine: its gains g and G, its
    correlation map C and its gradients' factor D (in rho_{k-1}).

    >>> branch_maps()[:2]
    (1, 1)
    """
    from derive.recursions.kernel import Q_IN, R_IN

    a = analysis("plain", 1)
    if a.rho_map is None or a.grad_factor is None or a.q_map is None:  # pragma: no cover
        raise AssertionError("ReLU's kernel has a closed form")
    return (sympy.simplify(a.q_map / Q_IN), sympy.nsimplify(factor_at("plain", 1)),
            a.rho_map.xreplace({R_IN: rho_prev}), a.grad_factor.xreplace({R_IN: rho_prev}))


def _check_residual(rho_map: sympy.Expr, grad_factor: sympy.Expr) -> None:
    """The block's maps at alpha = 1 under He and ReLU against the engine's ``x + F(x)``."""
    from derive.recursions.kernel import R_IN

    engine = analysis("residual", 1)
    if engine.rho_map is None or engine.grad_factor is None:  # pragma: no cover
        raise AssertionError("x + F(x) has closed-form maps")
    for ours, theirs in ((rho_map, engine.rho_map), (grad_factor, engine.grad_factor)):
        if sympy.simplify(ours - theirs.xreplace({R_IN: rho_prev})) != 0:  # pragma: no cover
            raise AssertionError("the map of x + F(x) is not the engine's")


def _check_laws(plain: sympy.Expr, residual: sympy.Expr, rate: sympy.Expr) -> None:
    """The constants of 1 - rho_k and the power of rho^grad_0 against the engine's laws."""
    for name, constant in (("plain", plain), ("residual", residual), ("pre", plain)):
        forward = laws(name)[0]
        if forward.constant is None or sympy.simplify(forward.constant - constant) != 0:
            raise AssertionError(f"{name}: the forward constant")  # pragma: no cover
    for name in ("plain", "residual", "pre"):
        if laws(name)[1].power != rate:  # pragma: no cover
            raise AssertionError(f"{name}: the backward power")


def _block_steps(he_g: sympy.Expr, he_G: sympy.Expr, C_relu: sympy.Expr,
                 D_relu: sympy.Expr) -> tuple[tuple[Step, ...], sympy.Expr]:
    """Steps of the block's maps in the branch's, then under He and ReLU; and rho_k."""
    from derive.derivation.symbols import d, k, q

    c = sympy.Function("c")
    q_next = sympy.factor((1 + alpha**2 * g) * q(k - 1))
    c_next = c(k - 1) + alpha**2 * g * q(k - 1) * C(rho_prev)
    rho_next = sympy.simplify(c_next.xreplace({c(k - 1): rho_prev * q(k - 1)}) / q_next)
    grad_factor = (1 + alpha**2 * G * D(rho_prev)) / (1 + alpha**2 * G)
    he = {alpha: 1, g: he_g, G: he_G}
    rho_relu = sympy.simplify(rho_next.xreplace(he).replace(C, lambda r: C_relu))
    grad_relu = sympy.simplify(grad_factor.xreplace(he).replace(D, lambda r: D_relu))
    _check_residual(rho_relu, grad_relu)
    steps = (
        Step(q(k), q_next, "the branch adds $\\alpha^2 g q_{k-1}$, uncorrelated with the "
             "skip path: second moments add"),
        Step(c(k), c_next, "the same for the two inputs' covariance: the skip passes "
             "$c_{k-1}$ on, the branch adds $\\alpha^2$ times its covariance "
             "$g q_{k-1} C(\\rho_{k-1})$, and the cross terms $E[h_{k-1}(a) f_k(b)]$ vanish "
             "($W$ has mean zero)"),
        Step(rho_k, rho_next, "divide by $q_k$: a weighted average of the identity "
             "(weight $1$) and the branch's map (weight $\\alpha^2 g$)"),
        Step(d(k - 1), (1 + alpha**2 * G) * d(k), "backward, the skip passes the gradient "
             "on and the branch multiplies its second moment by $\\alpha^2 G$; gradient "
             "independence drops the cross term"),
        Step(grad_prev, grad_k * grad_factor, "the gradients' covariance: the skip's "
             "Jacobian $I$ is the same for both inputs, the branch's multiplies it by "
             "$\\alpha^2 G \\dot C(\\rho_{k-1})$, with $\\dot C(\\rho) = E[\\phi'(u) \\phi'(v)]/"
             "E[\\phi'(u)^2]$ at correlation $\\rho$; divide by $d_{k-1}$"),
        Step(C(rho_prev), C_relu, f"He and ReLU: $g = {latex(he_g)}$, $G = {latex(he_G)}$, "
             "and the arc-cosine kernel (Cho & Saul 2009) of "
             "$F(x) = W \\operatorname{relu}(x)$"),
        Step(D(rho_prev), D_relu, "both units active, with probability "
             "$(\\pi - \\arccos \\rho)/(2\\pi)$, over $E[\\operatorname{relu}'(u)^2] = 1/2$"),
        Step(rho_k, rho_relu, "$x + F(x)$ ($\\alpha = 1$): the average of $\\rho_{k-1}$ and "
             "$C(\\rho_{k-1})$, the engine's map of `x + F(x)`"),
    )
    return steps, rho_next


@functools.cache
def near_one_laws() -> dict[str, sympy.Expr]:
    """The laws near rho = 1 under He and ReLU, derived here and checked against the
    engine's: ``b`` and ``a`` (C(1 - eps) = 1 - eps + b eps^(3/2), D(1 - eps) = 1 -
    a sqrt(eps)), the constants of 1 - rho_k for the plain and residual stacks (``plain``,
    ``residual``; k^-2, and (ln k)^-2 with pre-LN), the power of rho^grad_0 in K
    (``rate``; with pre-LN, ``log_rate`` of ln K), and ``share``, the branch's share w of
    the block, in alpha and g.

    >>> near_one_laws()["rate"], near_one_laws()["residual"] / near_one_laws()["plain"]
    (3, 4)
    """
    _, _, C_relu, D_relu = branch_maps()
    (C_near, C_terms), (D_near, D_terms) = (near_one(C_relu, rho_prev, 4),
                                            near_one(D_relu, rho_prev, 3))
    if C_terms[sympy.Integer(1)] != -1 or C_terms[_HALF] != 0:  # pragma: no cover
        raise AssertionError("C has slope 1 at rho = 1")
    b_value, a_value = C_terms[_THREE_HALVES], -D_terms[_HALF]
    ks, ln_k = sympy.Symbol("k", positive=True), sympy.Symbol("L", positive=True)
    law = 4 / (w**2 * b**2 * ks**2)  # solves d eps/dk = -w b eps^(3/2)
    log_law = 4 / (b**2 * ln_k**2)  # solves d eps/dk = -(b/k) eps^(3/2), L = ln k
    if (sympy.simplify(sympy.diff(law, ks) + w * b * law**_THREE_HALVES) != 0
            or sympy.simplify(sympy.diff(log_law, ln_k) + b * log_law**_THREE_HALVES) != 0):
        raise AssertionError("the laws of 1 - rho")  # pragma: no cover
    out = {
        "b": b_value, "a": a_value, "C": C_near, "D": D_near, "law": law.xreplace({ks: k_}),
        "plain": sympy.simplify(law.xreplace({w: 1, b: b_value}) * ks**2),
        "residual": sympy.simplify(law.xreplace({w: _HALF, b: b_value}) * ks**2),
        "rate": sympy.simplify(w * a_value * sympy.sqrt(law.xreplace({b: b_value})) * ks),
        "log_rate": sympy.simplify(a_value * sympy.sqrt(log_law.xreplace({b: b_value}))
                                   * ln_k),
        "share": alpha**2 * g / (1 + alpha**2 * g),
    }
    _check_laws(out["plain"], out["residual"], out["rate"])
    return out


@functools.cache
def derivation() -> Derivation:
    """The correlation map of h_k = h_{k-1} + alpha f_k(h_{k-1}) from its branch's, and its
    laws near rho = 1, each checked against the engine's."""
    from derive.derivation.symbols import K, k, q

    he_g, he_G, C_relu, D_relu = branch_maps()
    block_steps, rho_next = _block_steps(he_g, he_G, C_relu, D_relu)
    found = near_one_laws()
    b_value, a_value, share = found["b"], found["a"], found["share"]
    he = {alpha: 1, g: he_g}
    C_near, D_near, law = found["C"], found["D"], found["law"]
    plain_c, residual_c, rate, log_rate = (found["plain"], found["residual"], found["rate"],
                                           found["log_rate"])
    # 1 - rho_k at rho_{k-1} = 1 - eps with C(1 - eps) = 1 - eps + b eps^(3/2):
    step_eps = sympy.expand(sympy.simplify(1 - rho_next.replace(
        C, lambda r: 1 - eps + b * eps**_THREE_HALVES).xreplace({rho_prev: 1 - eps})))
    if sympy.simplify(step_eps - (eps - share * b * eps**_THREE_HALVES)) != 0:
        raise AssertionError("the step of 1 - rho")  # pragma: no cover
    one_minus, gamma = 1 - rho_k, sympy.Symbol("gamma", positive=True)
    steps = (
        *block_steps,
        Step(C(1 - eps), C_near, relation="\\approx",
             reason="near $\\rho = 1$, with $\\epsilon = 1 - \\rho$: ReLU's kink makes the "
                    "series one in $\\sqrt{\\epsilon}$, as "
                    "$\\arccos(1 - \\epsilon) = 2 \\arcsin\\sqrt{\\epsilon/2}$; $C$ has "
                    "slope $1$ at $\\rho = 1$"),
        Step(D(1 - eps), D_near, relation="\\approx",
             reason="the same for the gradients' factor"),
        Step(eps_k, eps_prev - w * b * eps_prev**_THREE_HALVES, relation="\\approx",
             reason=f"into the map of $\\rho_k$, with $\\epsilon_k = 1 - \\rho_k$, "
                    f"$b = {latex(b_value)}$ and $w = {latex(share)}$, the branch's share "
                    "of the block: the identity leaves $\\epsilon$ alone, so only the "
                    "branch moves it"),
        Step(eps_k, law, relation="\\approx",
             reason="for large $k$ the difference equation behaves like "
                    "$d\\epsilon/dk = -w b \\epsilon^{3/2}$, whose solution forgets "
                    "$\\epsilon_0$"),
        Step(one_minus, plain_c / k**2, relation="\\approx",
             reason="plain $F(x)$: $w = 1$ (no skip)"),
        Step(one_minus, residual_c / k**2, relation="\\approx",
             reason=f"$x + F(x)$ under He: $w = {latex(share.xreplace(he))}$, each block "
                    "takes half the step, and $1 - \\rho_k$ is "
                    f"${latex(residual_c / plain_c)}$ times larger at the same $k$"),
        Step(h_k, 1 - w * a_value * sympy.sqrt(eps_prev), relation="\\approx",
             reason="the gradients' factor $h_k = \\rho^{grad}_{k-1}/\\rho^{grad}_k$ near "
                    "$\\rho = 1$, when $G = g$ (its branch's share is $w$ too)"),
        Step(h_k, 1 - rate / k, relation="\\approx",
             reason="insert $\\epsilon_{k-1} \\approx 4/(w b k)^2$: $w$ cancels, since the "
                    "skip slows the approach to $\\rho = 1$ exactly as much as it dilutes "
                    "each block's gradient deficit"),
        Step(grad_0, K ** (-rate), relation="\\propto",
             reason=f"$\\ln \\rho^{{grad}}_0 \\approx -\\sum_k {latex(rate)}/k \\approx "
                    f"-{latex(rate)} \\ln K$ whatever $w$: plain and residual stacks fall "
                    "alike; their constants, set by the first blocks, where the expansion "
                    "does not hold yet, differ"),
        Step(w, g * gamma**2 / (q(k - 1) + g * gamma**2),
             "pre-LN: LN hands the branch second moment $\\gamma^2$ whatever $q_{k-1}$ and "
             "keeps correlations, so the branch's share falls as "
             "$q_{k-1} = q_0 + (k - 1) g \\gamma^2$ grows: $w \\approx 1/k$"),
        Step(one_minus, plain_c / sympy.log(k) ** 2, relation="\\approx",
             reason="$d\\epsilon/dk = -(b/k) \\epsilon^{3/2}$ gives "
                    "$\\epsilon_k \\approx 4/(b \\ln k)^2$"),
        Step(h_k, 1 - log_rate / (k * sympy.log(k)), relation="\\approx",
             reason="the gradients' share is $1/k$ too; the product of these factors falls "
                    f"like $(\\ln K)^{{-{latex(log_rate)}}}$"),
    )
    return Derivation(
        title="The correlation map of a residual block from its branch's",
        key="shattered/correlation-map",
        assumptions=(
            "$h_k = h_{k-1} + \\alpha f_k(h_{k-1})$ for two inputs $a$, $b$ with second "
            "moment $q_{k-1}$ each, covariance $c_{k-1}$, $\\rho_{k-1} = c_{k-1}/q_{k-1}$",
            "the branch has forward gain $g$ ($E[f_k(a)^2] = g q_{k-1}$) and maps the "
            "correlation by $C$: $E[f_k(a) f_k(b)] = g q_{k-1} C(\\rho_{k-1})$ (a positively "
            "homogeneous $\\phi$, so $C$ does not depend on $q$); backward gain $G$",
        ),
        steps=steps,
        result=Step(grad_0, K ** (-rate), relation="\\propto"),
    )
