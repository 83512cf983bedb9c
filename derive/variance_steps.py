"""The written derivation of a variance recursion: assumptions, steps, result.

:func:`build_derivation` turns a :class:`derive.variance_analysis.Recursion` into a
:class:`derive.derivation.Derivation`: the block equation, the second moment
of the sum, the vanishing cross term, the branch moment, the Gaussian moment,
the recurrence, its solution, and the check that the solution satisfies the
recurrence (computed here, by substitution and simplification).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sympy

from derive.closed_forms import mask
from derive.derivation import Derivation, Step
from derive.gaussian import Activation, Expectation
from derive.model import K, d, k, q, q0
from derive.printing import latex

if TYPE_CHECKING:  # pragma: no cover
    from derive.variance_analysis import Branch, Recursion

h = sympy.Function("h")
LN = sympy.Function("LN")
W = sympy.Symbol("W")
W1 = sympy.Symbol("W_1")
W2 = sympy.Symbol("W_2")
z = sympy.Symbol("z", real=True)

ASSUMPTIONS = (
    "Mean field at infinite width $n \\to \\infty$: $q_k = E[h_k^2]$ and "
    "$d_k = E[(\\partial L / \\partial h_k)^2]$ per unit; a pre-activation with second "
    "moment $s$ is treated as $z \\sim N(0, s)$.",
    "Weights i.i.d. with zero mean and the variance of the initialization "
    "(xavier $2/(n_{in} + n_{out})$, he $2/n_{in}$, lecun $1/n_{in}$, or $\\sigma_w^2$); "
    "biases zero.",
    "The input has $E[x^2] = q_0$ per unit.",
    "Cross terms such as $E[h\\, W \\phi(h)]$ vanish: $W$ is zero-mean and independent of $h$.",
    "LayerNorm $\\gamma (x - \\bar x)/\\operatorname{std}(x) + \\beta$ over the $n$ units, "
    "$\\beta = 0$ at initialization, so its output has second moment $\\gamma^2$ per unit.",
    "Inverted dropout with rate $p$ on the branch output scales the branch's second moment "
    "by $1/(1-p)$, forward and backward (the same mask in both passes).",
    "Backward: gradient independence (the weights of the backward pass are treated as "
    "independent of the forward pass); $L = \\langle g, h_K \\rangle$ with "
    "$g \\sim N(0, 1)$ per unit, so $d_K = 1$.",
    "Pre-LN backward: the LayerNorm Jacobian is $\\gamma/\\sqrt{q_{k-1}}$ times a projection "
    "that removes two directions, negligible at large width.",
)


def _branch_output(recursion: Recursion, phi: sympy.Symbol) -> sympy.Expr:
    inp = LN(h(k - 1)) if recursion.config.norm == "pre" else h(k - 1)
    if recursion.config.branch == "single":
        return W * Activation(phi, inp)
    return W2 * Activation(phi, W1 * inp)


def _block(recursion: Recursion, phi: sympy.Symbol) -> Step:
    c = recursion.config
    branch = _branch_output(recursion, phi)
    body = h(k - 1) + branch
    shape = "$W \\phi(h)$ (activation first, UDL 11.2.1)" if c.branch == "single" else (
        f"$W_2 \\phi(W_1 h)$ with hidden width ${latex(c.mlp_ratio * sympy.Symbol('n'))}$"
    )
    where = {"none": "no normalization", "pre": "LayerNorm before the branch",
             "post": "LayerNorm after the sum"}[c.norm]
    return Step(h(k), LN(body) if c.norm == "post" else body,
                f"residual block, {where}; the branch is {shape}")


def _branch_steps(recursion: Recursion, branch: Branch, phi: sympy.Symbol,
                  s: sympy.Expr, derivative: bool) -> list[Step]:
    c = recursion.config
    steps = []
    from derive.variance_analysis import _x

    t = sympy.expand(branch.hidden_gain * s)
    t_text = latex(t.xreplace({_x: q(k - 1)}))
    if c.branch == "mlp":
        sigma1 = c.weight_variance(sympy.Symbol("n", positive=True), c.mlp_ratio * sympy.Symbol(
            "n", positive=True))
        inp = LN(h(k - 1)) if c.norm == "pre" else h(k - 1)
        steps.append(Step(Expectation((W1 * inp) ** 2), t,
                          f"fan-in $n$ times $\\sigma_1^2 = {latex(sigma1)}$ times the input's "
                          f"second moment ${latex(s.xreplace({_x: q(k - 1)}))}$"))
    act = Activation(sympy.Symbol(c.activation + ("'" if derivative else "")), z)
    moment = Expectation(act**2)
    gain = branch.drop * branch.out_gain * (branch.hidden_gain if derivative else 1)
    drop = "" if c.dropout == 0 else f", times $1/(1-p) = {latex(branch.drop)}$ for dropout"
    if derivative:
        lhs = sympy.Symbol("G_k")
        why = (f"the branch's gradient gain: fan-out times weight variance through each matrix"
               f" and $E[\\phi'(z)^2]$ with $z \\sim N(0, {t_text})$" + drop)
    else:
        lhs = Expectation(_branch_output(recursion, phi) ** 2)
        why = (f"fan-in times weight variance, ${latex(branch.out_gain)}$, times "
               f"$E[\\phi(z)^2]$ with $z \\sim N(0, {t_text})$" + drop)
    steps.append(Step(lhs, gain * moment, why))
    steps.append(Step(moment, branch.moment(s, derivative),
                      f"Gaussian moment of {c.activation} (derive.gaussian)"))
    return steps


def _forward_steps(recursion: Recursion, branch: Branch, phi: sympy.Symbol) -> list[Step]:
    from derive.variance_analysis import _x

    c = recursion.config
    F = _branch_output(recursion, phi)
    steps = [_block(recursion, phi)]
    s = c.gamma**2 if c.norm == "pre" else _x
    if c.norm == "post":
        steps.append(Step(sympy.Symbol("s_k"), q(k - 1) + Expectation(F**2),
                          "second moment of the sum before LayerNorm; the cross term vanishes"))
    else:
        steps.append(Step(q(k), q(k - 1) + 2 * Expectation(h(k - 1) * F) + Expectation(F**2),
                          "square the sum and take the expectation per unit"))
        steps.append(Step(Expectation(h(k - 1) * F), sympy.Integer(0),
                          "$W$ is zero-mean and independent of $h_{k-1}$: the cross term vanishes"))
    for st in _branch_steps(recursion, branch, phi, s, derivative=False):
        steps.append(Step(st.lhs, st.rhs.xreplace({_x: q(k - 1)}), st.reason, st.relation))
    if c.norm == "post":
        steps.append(Step(q(k), c.gamma**2, "LayerNorm output has second moment $\\gamma^2$ "
                          "per unit, whatever its input (for $k \\ge 1$)"))
    return steps


def _backward_steps(recursion: Recursion, branch: Branch, phi: sympy.Symbol) -> list[Step]:
    from derive.variance_analysis import _x

    c = recursion.config
    steps = [_block(recursion, phi)]
    G = sympy.Symbol("G_k")
    dk = d(k)
    if c.norm == "post":
        s_k = sympy.Symbol("s_k")
        dk = sympy.Symbol("u_k")
        s_value = q(k - 1) + branch.forward(_x).xreplace({_x: q(k - 1)})
        steps.append(Step(dk, d(k) * c.gamma**2 / s_k,
                          "$u_k$, the gradient's second moment at the sum before LayerNorm, "
                          "whose Jacobian scales by $\\gamma/\\sqrt{s_k}$, "
                          f"$s_k = q_{{k-1}} + E[F^2] = {latex(s_value)}$"))
    if c.norm == "pre":
        steps.append(Step(d(k - 1), dk * (1 + c.gamma**2 / q(k - 1) * G),
                          "identity path plus branch path through LayerNorm, whose Jacobian is "
                          "$\\gamma/\\sqrt{q_{k-1}}$ times a projection; cross terms vanish"))
        s = c.gamma**2
    else:
        steps.append(Step(d(k - 1), dk * (1 + G),
                          "backpropagate through the identity and the branch: "
                          "$\\partial L/\\partial h_{k-1} = "
                          "(I + J_k)^T \\partial L/\\partial h_k$; "
                          "the cross term vanishes (gradient independence)"))
        s = _x
    for st in _branch_steps(recursion, branch, phi, s, derivative=True):
        steps.append(Step(st.lhs, st.rhs.xreplace({_x: q(k - 1)}), st.reason, st.relation))
    return steps


def _check(recursion: Recursion) -> Step | None:
    """Substitute the closed form back into the recurrence: the residual simplifies to 0."""
    from derive.variance_analysis import _x

    closed = recursion.closed_form
    if closed is None:
        return None
    sol = closed.rhs
    first = 1
    if isinstance(sol, sympy.Piecewise):
        sol, first = sol.args[-1].expr, 2
    if recursion.direction == "forward":
        prev = sol.xreplace({K: k - 1}) if first == 1 else recursion.config.gamma**2
        lhs = sympy.Add(sol.xreplace({K: k}), -recursion.step.xreplace({_x: prev}),
                        evaluate=False)
        what = "$q_k - f(q_{k-1})$ with the solution substituted"
    else:
        forward = recursion.forward_part.closed_form
        q_prev = q0 if forward is None else forward.rhs
        if isinstance(q_prev, sympy.Piecewise):
            q_prev = q_prev.args[-1].expr
        factor = recursion.step.xreplace({_x: q_prev.xreplace({K: k - 1})})
        ratio = sol.xreplace({K: k}) / sol.xreplace({K: k - 1})
        lhs = sympy.Add(ratio, -factor, evaluate=False)
        what = "$(d_0/d_k)/(d_0/d_{k-1})$ minus the factor of block $k$"
    masked, back = mask(lhs.doit())
    residual = sympy.simplify(sympy.gammasimp(sympy.expand_func(masked))).xreplace(back)
    where = "for $k \\ge 1$" if first == 1 else "for $k \\ge 2$"
    return Step(lhs, residual, f"check: {what} simplifies to zero {where}")


def build_derivation(recursion: Recursion) -> Derivation:
    """The Derivation of one recursion (forward or backward), in the project's notation.

    >>> from derive.variance_analysis import variance
    >>> der = variance("he", "relu").forward.derivation
    >>> der.key, der.result.text()
    ('variance/he/relu/none/single/forward', 'q_K = 2ᴷ·q₀')
    """
    from derive.variance_analysis import Branch

    c = recursion.config
    branch = Branch.of(c)
    phi = sympy.Symbol(c.activation)
    if recursion.direction == "forward":
        steps = _forward_steps(recursion, branch, phi)
        title = f"Forward second moment $q_k$ through depth: {c.label}"
    else:
        steps = _backward_steps(recursion, branch, phi)
        title = f"Backward gradient second moment $d_k$ through depth: {c.label}"
    rec = recursion.recurrence
    steps.append(Step(rec.lhs, rec.rhs, "the recurrence"))
    notes = [f"Growth with depth: {recursion.growth}."]
    closed = recursion.closed_form
    if closed is not None:
        how = ("rsolve on the shape $q_k = a q_{k-1} + b$" if recursion.direction == "forward"
               else "the product of the factors over $k = 1..K$ (SymPy product, combsimp)")
        result = Step(closed.lhs, closed.rhs, f"solution: {how}")
        steps.append(result)
        check = _check(recursion)
        if check is not None:
            steps.append(check)
    else:
        result = Step(rec.lhs, rec.rhs, "no closed form: the recurrence is iterated")
        notes.append(f"No closed form: {recursion.reason}.")
    extras = []
    for name, value, default in (("mlp_ratio", c.mlp_ratio, 1), ("dropout", c.dropout, 0),
                                 ("gamma", c.gamma, 1), ("sigma_w2", c.sigma_w2, None)):
        if value is not None and value != default:
            extras.append(f"{name}={value}".replace("/", "_"))
    if c.activation == "leaky_relu" and c.negative_slope != sympy.Rational(1, 100):
        extras.append(f"negative_slope={c.negative_slope}".replace("/", "_"))
    key = "/".join(["variance", c.label, *extras, recursion.direction])
    return Derivation(title, key, ASSUMPTIONS, tuple(steps), result, tuple(notes))
