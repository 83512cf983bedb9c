"""Variance recursions through depth: forward q_k = E[h_k^2], backward d_k.

The recursions are built from the block structure (branch second moment from
the weight variances and fan-ins, the Gaussian moment of the activation,
dropout, LayerNorm) and then solved: closed forms come from
:mod:`derive.closed_forms` (``rsolve`` and ``product``), and where none
exists the map is iterated numerically at :data:`PRECISION` digits.

>>> import derive
>>> derive.variance("he", "relu").forward.at(4)
16
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import sympy

from derive import closed_forms
from derive.closed_forms import PRECISION, finish, numeric_map
from derive.derivation import Derivation
from derive.errors import DeriveError
from derive.gaussian import gaussian_moment
from derive.model import NORMS, K, VarianceConfig, check_depth, d, exact, k, n, q, q0
from derive.printing import latex, text

#: The branch input's second moment, a positive placeholder for q_{k-1}.
_x = sympy.Symbol("x", positive=True)


@dataclass(frozen=True)
class Branch:
    """The branch F of one block, reduced to what the second moments need.

    ``hidden_gain``: the activation's input has second moment ``hidden_gain * s``
    when the branch input has ``s``; ``out_gain``: fan-in times variance of the
    last matrix; ``drop = 1/(1-p)``.

    >>> b = Branch.of(VarianceConfig(init="he", activation="relu"))
    >>> b.forward(_x), b.backward(_x)
    (x, 1)
    """

    config: VarianceConfig
    hidden_gain: sympy.Expr
    out_gain: sympy.Expr
    drop: sympy.Expr

    @classmethod
    def of(cls, config: VarianceConfig) -> Branch:
        """The branch of ``config`` (single: ``W phi(h)``; mlp: ``W_2 phi(W_1 h)``)."""
        drop = 1 / (1 - config.dropout)
        if config.branch == "single":
            gain = sympy.cancel(n * config.weight_variance(n, n))
            return cls(config, sympy.Integer(1), gain, drop)
        r = config.mlp_ratio
        hidden = sympy.cancel(n * config.weight_variance(n, r * n))
        out = sympy.cancel(r * n * config.weight_variance(r * n, n))
        return cls(config, hidden, out, drop)

    def moment(self, s: sympy.Expr, derivative: bool = False) -> sympy.Expr:
        """E[phi(z)^2] (or E[phi'(z)^2]) with z ~ N(0, hidden_gain * s)."""
        c = self.config
        gain = self.hidden_gain * s
        return gaussian_moment(
            c.activation, gain, derivative=derivative, negative_slope=c.negative_slope
        )

    def forward(self, s: sympy.Expr) -> sympy.Expr:
        """E[Dropout(F(h))^2] when E[h^2] = s."""
        return self.drop * self.out_gain * self.moment(s)

    def backward(self, s: sympy.Expr) -> sympy.Expr:
        """Gradient gain of the branch, E[(dF/dh)^T g]^2 / E[g^2], at input moment s."""
        return self.drop * self.hidden_gain * self.out_gain * self.moment(s, derivative=True)


@dataclass(frozen=True, eq=False)
class Recursion:
    """One direction of the variance analysis: recurrence, closed form, values.

    >>> r = variance("he", "relu").forward
    >>> r.closed_form
    Eq(q(K), 2**K*q_0)
    >>> r.at(3), r.growth
    (8, 'exponential')
    """

    config: VarianceConfig
    direction: str
    #: forward: q_k = step(q_{k-1}); backward: d_{k-1} = d_k * step(q_{k-1}).
    step: sympy.Expr
    forward_part: Recursion | None = field(default=None, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def recurrence(self) -> sympy.Eq:
        """q(k) in terms of q(k-1), or d(k-1) in terms of d(k) and q(k-1)."""
        body = self.step.xreplace({_x: q(k - 1)})
        if self.direction == "forward":
            return sympy.Eq(q(k), body)
        return sympy.Eq(d(k - 1), d(k) * body)

    @cached_property
    def _solution(self) -> tuple[sympy.Expr | None, str | None]:
        # The unevaluated moments are masked as positive symbols while SymPy solves.
        if self.direction == "forward":
            step, back = closed_forms.mask(self.step, keep=_x)
            coefficients = closed_forms.affine_coefficients(step, _x)
            if coefficients is None:
                return None, (
                    f"the map $q_{{k-1}} \\mapsto q_k$ is not affine in $q_{{k-1}}$ for "
                    f"{self.config.activation} without normalization, so no closed form "
                    f"is derived; the recursion is iterated numerically ({PRECISION} digits)"
                )
            return closed_forms.solve_affine(*coefficients).xreplace(back), None
        if not self.step.has(_x):
            return _product(self.step), None
        assert self.forward_part is not None
        forward = self.forward_part.closed_form
        if forward is None:
            return None, (
                "each factor depends on $q_{k-1}$, which has no closed form here; "
                f"the product is iterated numerically ({PRECISION} digits)"
            )
        q_closed = forward.rhs
        if isinstance(q_closed, sympy.Piecewise):  # q_0 at K = 0, the last branch after
            first = self.step.xreplace({_x: q0})
            rest = _product(self.step.xreplace({_x: q_closed.args[-1].expr.xreplace({K: k - 1})}),
                            start=2)
            body, back = closed_forms.mask(first * rest)
            body = closed_forms.tidy(body).xreplace(back)
            return sympy.Piecewise((sympy.Integer(1), sympy.Eq(K, 0)), (body, True)), None
        return _product(self.step.xreplace({_x: q_closed.xreplace({K: k - 1})})), None

    @property
    def closed_form(self) -> sympy.Eq | None:
        """q(K) = ... (forward) or d(0)/d(K) = ... (backward); None with ``.reason``."""
        solution = self._solution[0]
        if solution is None or isinstance(solution, sympy.Product):
            return None
        lhs = q(K) if self.direction == "forward" else d(0) / d(K)
        return sympy.Eq(lhs, solution, evaluate=False)

    @property
    def reason(self) -> str | None:
        """Why there is no closed form (a sentence), or None when there is one."""
        return self._solution[1]

    @cached_property
    def growth(self) -> str:
        """How the quantity grows with depth, read off the closed form (or the iteration)."""
        if self.closed_form is not None:
            return closed_forms.growth(self.closed_form.rhs)
        v48, v72, v96 = (float(v) for v in self._iterate(96, sympy.Integer(1))[48::24])
        r1, r2 = math.log(v96 / v72), math.log(v72 / v48)
        d1, d2 = v96 - v72, v72 - v48
        if abs(v96 - v48) <= 1e-9 * abs(v96):
            law = "constant"
        elif abs(r1) > 0.01 and abs(r1 - r2) <= 0.1 * abs(r2):
            law = "exponential" if r1 > 0 else "exponential decay"
        elif abs(d1 - d2) <= 0.05 * abs(d2):
            law = "linear"
        else:
            law = "faster than linear, slower than exponential" if d1 > d2 else "sublinear"
        return f"{law} (from the iteration, no closed form)"

    def _check(self, depth: int, q0_value: object) -> tuple[int, sympy.Expr]:
        depth = check_depth(depth, minimum=0)
        value = exact(q0_value, "q0")
        if value.is_number and value <= 0:
            raise DeriveError(f"q0 must be > 0, got {value}")
        return depth, value

    def _iterate(self, depth: int, q0_value: sympy.Expr) -> list[sympy.Expr]:
        """Forward: q_0..q_depth; backward: d_0/d_k for k = 0..depth, numerically."""
        numeric = self.step.xreplace({_x: sympy.Integer(1)}).is_number and q0_value.is_number
        if self.direction == "forward" and not numeric:
            c = self.config
            raise DeriveError(
                f"{c.label} has no closed form, and numeric iteration needs numbers: got "
                f"q0 = {q0_value}, sigma_w2 = {c.sigma_w2}, mlp_ratio = {c.mlp_ratio}, "
                f"dropout = {c.dropout}"
            )
        values = self._memo.setdefault(q0_value, [])
        if not values:
            values.append(float(q0_value) if self.direction == "forward" else 1.0)
        if len(values) <= depth:
            step = numeric_map(self.step, _x)
            if self.direction == "forward":
                while len(values) <= depth:
                    values.append(step(values[-1]))
            else:
                assert self.forward_part is not None
                qs = self.forward_part._iterate(depth, q0_value)
                while len(values) <= depth:
                    values.append(values[-1] * step(float(qs[len(values) - 1])))
        return [sympy.Float(v, PRECISION) for v in values[: depth + 1]]

    def at(self, depth: int, q0: object = 1) -> sympy.Expr:
        """q_K (forward) or d_0/d_K (backward) at ``K = depth``.

        Exact when the result is rational or symbolic, else a float at
        PRECISION digits.

        >>> variance("xavier", "relu").forward.at(2, q0=4)
        9
        """
        depth, q0_value = self._check(depth, q0)
        if self.closed_form is not None:
            return finish(closed_forms.evaluate(self.closed_form.rhs, depth, q0_value))
        return finish(self._iterate(depth, q0_value)[-1])

    def profile(self, depth: int, q0: object = 1) -> list[sympy.Expr]:
        """The depth + 1 values: q_0..q_K (forward) or d_k/d_K for k = 0..K (backward).

        >>> variance("he", "relu").backward.profile(2)
        [4, 2, 1]
        """
        depth, q0_value = self._check(depth, q0)
        if self.closed_form is not None:
            rhs = self.closed_form.rhs
            values = [closed_forms.evaluate(rhs, j, q0_value) for j in range(depth + 1)]
        else:
            values = self._iterate(depth, q0_value)
        if self.direction == "backward":
            values = [sympy.cancel(values[-1] / v) for v in values]
        return [finish(v) for v in values]

    @cached_property
    def derivation(self) -> Derivation:
        """The derivation: assumptions, steps with reasons, and the result."""
        from derive.variance_steps import build_derivation

        return build_derivation(self)

    def _repr_latex_(self) -> str:
        rows = [latex(self.recurrence.lhs) + " &= " + latex(self.recurrence.rhs)]
        if self.closed_form is not None:
            rows.append(latex(self.closed_form.lhs) + " &= " + latex(self.closed_form.rhs))
        return "$\\begin{aligned}" + " \\\\ ".join(rows) + "\\end{aligned}$"

    def to_dict(self, depth: int = 10, q0: object = 1) -> dict[str, object]:
        """JSON-ready summary: LaTeX and text formulas, growth, value and profile.

        >>> variance("he", "relu", "pre").forward.to_dict(2)["closed_form"]
        'q_{K} = K + q_{0}'
        """
        closed = self.closed_form
        profile = self.profile(depth, q0)
        numeric = all(v.is_number for v in profile)
        return {
            "recurrence": latex(self.recurrence),
            "recurrence_text": text(self.recurrence.lhs) + " = " + text(self.recurrence.rhs),
            "closed_form": None if closed is None else latex(closed),
            "closed_form_text": None if closed is None else (
                f"{text(closed.lhs)} = {text(closed.rhs)}"),
            "reason": self.reason,
            "growth": self.growth,
            "value": str(profile[-1] if self.direction == "forward" else profile[0]),
            "profile": [str(v) for v in profile],
            "profile_float": [float(v) for v in profile] if numeric else None,
        }


@dataclass(frozen=True, eq=False)
class VarianceAnalysis:
    """Forward and backward recursions of one configuration.

    >>> a = variance("he", "relu", "pre")
    >>> a.forward.closed_form.rhs, a.backward.closed_form.rhs
    (K + q_0, (K + q_0)/q_0)
    """

    config: VarianceConfig
    forward: Recursion
    backward: Recursion

    def _repr_latex_(self) -> str:
        rows = []
        for rec in (self.forward, self.backward):
            rows.append(latex(rec.recurrence.lhs) + " &= " + latex(rec.recurrence.rhs))
            if rec.closed_form is not None:
                rows.append(latex(rec.closed_form.lhs) + " &= " + latex(rec.closed_form.rhs))
        return "$\\begin{aligned}" + " \\\\ ".join(rows) + "\\end{aligned}$"

    def to_dict(self, depth: int = 10, q0: object = 1) -> dict[str, object]:
        """JSON-ready: configuration, both directions (LaTeX, growth, values).

        >>> variance("he", "relu").to_dict(2)["forward"]["profile"]
        ['1', '2', '4']
        """
        c = self.config
        return {
            "config": {
                "init": c.init, "activation": c.activation, "norm": c.norm, "branch": c.branch,
                "mlp_ratio": str(c.mlp_ratio), "dropout": str(c.dropout), "gamma": str(c.gamma),
                "sigma_w2": None if c.sigma_w2 is None else str(c.sigma_w2),
                "negative_slope": str(c.negative_slope),
            },
            "depth": check_depth(depth, minimum=0),
            "q0": str(exact(q0, "q0")),
            "forward": self.forward.to_dict(depth, q0),
            "backward": self.backward.to_dict(depth, q0),
        }


def _steps(config: VarianceConfig) -> tuple[sympy.Expr, sympy.Expr]:
    """The forward map q_{k-1} -> q_k and the backward factor, as expressions in ``_x``."""
    branch = Branch.of(config)
    g2 = config.gamma**2
    if config.norm == "none":
        return _x + branch.forward(_x), 1 + branch.backward(_x)
    if config.norm == "pre":
        return _x + branch.forward(g2), 1 + g2 / _x * branch.backward(g2)
    pre_ln = _x + branch.forward(_x)
    return g2 + 0 * _x, g2 / pre_ln * (1 + branch.backward(_x))


@lru_cache(maxsize=1024)
def _analysis(config: VarianceConfig) -> VarianceAnalysis:
    forward_step, backward_step = _steps(config)
    forward = Recursion(config, "forward", forward_step)
    backward = Recursion(config, "backward", backward_step, forward)
    return VarianceAnalysis(config, forward, backward)


def variance(
    init: str = "xavier",
    activation: str = "relu",
    norm: str = "none",
    branch: str = "single",
    *,
    mlp_ratio: object = 1,
    dropout: object = 0,
    gamma: object = 1,
    sigma_w2: object = None,
    negative_slope: object = sympy.Rational(1, 100),
) -> VarianceAnalysis:
    """Forward and backward variance recursions of a residual stack at initialization.

    >>> a = variance("he", "relu")
    >>> a.forward.recurrence
    Eq(q(k), 2*q(k - 1))
    >>> a.backward.closed_form
    Eq(d(0)/d(K), 2**K)
    """
    config = VarianceConfig(
        init=init, activation=activation, norm=norm, branch=branch, mlp_ratio=mlp_ratio,
        dropout=dropout, gamma=gamma, sigma_w2=sigma_w2, negative_slope=negative_slope,
    )
    return _analysis(config)


def compare(
    init: str = "xavier",
    activation: str = "relu",
    branch: str = "single",
    *,
    depth: int = 10,
    q0: object = 1,
    **options: object,
) -> list[dict[str, object]]:
    """One row per norm placement and direction: formulas, growth, value at ``depth``.

    >>> [(r["norm"], r["direction"], r["value"]) for r in compare("he", "relu", depth=3)][:3]
    [('none', 'forward', 8), ('none', 'backward', 8), ('pre', 'forward', 4)]
    """
    depth = check_depth(depth, minimum=0)
    rows = []
    for norm in NORMS:
        analysis = variance(init, activation, norm, branch, **options)  # type: ignore[arg-type]
        for recursion in (analysis.forward, analysis.backward):
            closed = recursion.closed_form
            rows.append({
                "norm": norm,
                "direction": recursion.direction,
                "recurrence": recursion.recurrence,
                "closed_form": closed,
                "reason": recursion.reason,
                "growth": recursion.growth,
                "value": recursion.at(depth, q0),
            })
    return rows


def _product(factor: sympy.Expr, start: int = 1) -> sympy.Expr:
    """prod_{k=start}^{K} factor, solved with the moments masked."""
    masked, back = closed_forms.mask(factor)
    return closed_forms.solve_product(closed_forms.tidy(masked), start).xreplace(back)

