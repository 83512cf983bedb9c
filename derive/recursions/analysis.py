"""Variance recursions through depth: forward q_k = E[h_k^2], backward d_k.

The recursions are built from the block structure (branch second moment from
the weight variances and fan-ins, the Gaussian moment of the activation,
dropout, LayerNorm) and then solved: closed forms come from
:mod:`derive.recursions.closed_forms` (the unrolled sum and ``product``), and where none
exists the map is iterated numerically at :data:`PRECISION` digits.

>>> import derive
>>> derive.variance("he", "relu").forward.at(4)
16
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import sympy

from derive.blocks.config import NORMS, K, VarianceConfig, check_depth, d, exact, k, q, q0
from derive.derivation.printing import latex, text
from derive.derivation.value import Derivation
from derive.errors import DeriveError
from derive.recursions import closed_forms
from derive.recursions.block_maps import C_PREV, Q_PREV, block_maps, c_seq
from derive.recursions.closed_forms import (
    PRECISION,
    PROFILE_POINTS,
    exact_value,
    finish,
    numeric_map,
)

if TYPE_CHECKING:  # pragma: no cover
    from derive.recursions.weight_gradients import WeightGradients


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
    #: forward: q_k = step(q_{k-1}); backward: d_{k-1} = d_k * step(q_{k-1}, c_{k-1});
    #: cross: c_k = step(q_{k-1}, c_{k-1}).
    step: sympy.Expr
    forward_part: Recursion | None = field(default=None, repr=False)
    #: The recursion of c_k, where BatchNorm needs it.
    cross_part: Recursion | None = field(default=None, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def recurrence(self) -> sympy.Eq:
        """q(k) in terms of q(k-1), or d(k-1) in terms of d(k) and q(k-1)."""
        body = self.step.xreplace({Q_PREV: q(k - 1), C_PREV: c_seq(k - 1)})
        if self.direction == "forward":
            return sympy.Eq(q(k), body)
        if self.direction == "cross":
            return sympy.Eq(c_seq(k), body)
        return sympy.Eq(d(k - 1), d(k) * body)

    @cached_property
    def _solution(self) -> tuple[sympy.Expr | None, str | None]:
        # The unevaluated moments are masked as positive symbols while SymPy solves.
        if self.direction == "cross":
            return self._cross_solution()
        if self.direction == "forward":
            step, back = closed_forms.mask(self.step, keep=Q_PREV)
            coefficients = closed_forms.affine_coefficients(step, Q_PREV)
            if coefficients is None:
                return None, (
                    f"the map $q_{{k-1}} \\mapsto q_k$ is not affine in $q_{{k-1}}$ for "
                    f"{self.config.activation} without normalization, so no closed form "
                    f"is derived; the recursion is iterated numerically ({PRECISION} digits)"
                )
            return closed_forms.solve_affine(*coefficients).xreplace(back), None
        step = self.step
        if step.has(C_PREV):
            assert self.cross_part is not None
            cross = self.cross_part.closed_form
            if cross is None:
                return None, (
                    "each factor depends on $c_{k-1}$, the covariance of two inputs that "
                    "BatchNorm sees, which has no closed form here; the product is iterated "
                    f"numerically ({PRECISION} digits)")
            step = step.xreplace({C_PREV: cross.rhs.xreplace({K: k - 1})})
        if not step.has(Q_PREV):
            return _product(step), None
        assert self.forward_part is not None
        forward = self.forward_part.closed_form
        if forward is None:
            return None, (
                "each factor depends on $q_{k-1}$, which has no closed form here; "
                f"the product is iterated numerically ({PRECISION} digits)"
            )
        q_closed = forward.rhs
        if isinstance(q_closed, sympy.Piecewise):  # q_0 at K = 0, the last branch after
            if step.has(k):
                return None, (
                    "each factor depends on $k$ and on $q_{k-1}$, which is $q_0$ at the first "
                    f"block only; the product is iterated numerically ({PRECISION} digits)")
            first = step.xreplace({Q_PREV: q0})
            rest = _product(step.xreplace({Q_PREV: q_closed.args[-1].expr.xreplace({K: k - 1})}),
                            start=2)
            body, back = closed_forms.mask(first * rest)
            body = closed_forms.tidy(body).xreplace(back)
            return sympy.Piecewise((sympy.Integer(1), sympy.Eq(K, 0)), (body, True)), None
        return _product(step.xreplace({Q_PREV: q_closed.xreplace({K: k - 1})})), None

    def _cross_solution(self) -> tuple[sympy.Expr | None, str | None]:
        """c_K for c_k = a c_{k-1} + b with c_0 = 0 (independent inputs), where a and b
        are free of k once q_{k-1} is substituted."""
        assert self.forward_part is not None
        step = self.step
        if step.has(Q_PREV):
            forward = self.forward_part.closed_form
            if forward is None or isinstance(forward.rhs, sympy.Piecewise):
                return None, "c_k depends on q_{k-1}; iterated numerically"
            step = step.xreplace({Q_PREV: forward.rhs.xreplace({K: k - 1})})
        masked, back = closed_forms.mask(step, keep=C_PREV)
        coefficients = closed_forms.affine_coefficients(masked, C_PREV)
        if coefficients is None or any(v.has(k) for v in coefficients):
            return None, "c_k is not affine with constant coefficients; iterated numerically"
        solved = closed_forms.solve_affine(*coefficients).xreplace(back)
        return closed_forms.tidy(solved.xreplace({q0: 0})), None

    @property
    def closed_form(self) -> sympy.Eq | None:
        """q(K) = ... (forward) or d(0)/d(K) = ... (backward); None with ``.reason``."""
        solution = self._solution[0]
        if solution is None or solution.has(sympy.Product):  # a product left unsolved
            return None
        lhs = {"forward": q(K), "cross": c_seq(K)}.get(self.direction, d(0) / d(K))
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
        try:
            v48, v72, v96 = self._iterate_floats(96, sympy.Integer(1))[48::24]
        except DeriveError:
            if not self.symbols:
                return "past the range of a double within 96 blocks (no closed form)"
            names = ", ".join(s.name for s in self.symbols)
            return f"depends on {names} (no closed form; iterated once they have values)"
        d1, d2 = v96 - v72, v72 - v48
        if min(v48, v72, v96) <= 0:  # past the smallest double
            law = "decays to zero"
        elif abs(v96 - v48) <= 1e-9 * abs(v96):
            law = "constant"
        elif abs(r1 := math.log(v96 / v72)) > 0.01 and abs(
                r1 - (r2 := math.log(v72 / v48))) <= 0.1 * abs(r2):
            law = "exponential" if r1 > 0 else "exponential decay"
        elif abs(d1 - d2) <= 0.05 * abs(d2):
            law = "linear"
        else:
            law = "faster than linear, slower than exponential" if d1 > d2 else "sublinear"
        return f"{law} (from the iteration, no closed form)"

    @property
    def symbols(self) -> list[sympy.Symbol]:
        """The symbols the iteration needs numbers for (the block's and the options'),
        sorted by name, q_0 aside."""
        parts = (self, self.forward_part, self.cross_part)
        found = set().union(*(p.step.free_symbols for p in parts if p is not None))
        return sorted(found - {Q_PREV, C_PREV}, key=lambda s: s.name)

    def _check(self, depth: int, q0_value: object) -> tuple[int, sympy.Expr]:
        depth = check_depth(depth, minimum=0)
        value = exact(q0_value, "q0")
        if value.is_number and value <= 0:
            raise DeriveError(f"q0 must be > 0, got {value}")
        return depth, value

    def _iterate(self, depth: int, q0_value: sympy.Expr) -> list[sympy.Expr]:
        """Forward: q_0..q_depth; cross: c_0..c_depth; backward: d_0/d_k for k = 0..depth,
        numerically, as Floats at PRECISION digits."""
        return [sympy.Float(v, PRECISION) for v in self._iterate_floats(depth, q0_value)]

    def _iterate_floats(self, depth: int, q0_value: sympy.Expr) -> list[float]:
        """The values of :meth:`_iterate` as Python floats (double precision)."""
        numeric = self.step.xreplace({Q_PREV: sympy.Integer(1), C_PREV: sympy.Integer(0)}).is_number
        if not (numeric and q0_value.is_number):
            c = self.config
            symbols = ", ".join(sorted(str(s) for s in self.step.free_symbols - {Q_PREV, C_PREV}))
            raise DeriveError(
                f"{c.label} has no closed form, and numeric iteration needs numbers: got "
                f"q0 = {q0_value}" + (f" and the symbols {symbols}" if symbols else ""))
        values = self._memo.setdefault(q0_value, [])
        if not values:
            values.append({"forward": float(q0_value), "cross": 0.0}.get(self.direction, 1.0))
        if len(values) <= depth:
            step = numeric_map(self.step, (Q_PREV, C_PREV))
            qs = cs = [0.0] * (depth + 1)
            if self.direction != "forward":
                assert self.forward_part is not None
                qs = self.forward_part._iterate_floats(depth, q0_value)
                if self.cross_part is not None:
                    cs = self.cross_part._iterate_floats(depth, q0_value)
            while len(values) <= depth:
                i = len(values) - 1
                try:
                    if self.direction == "forward":
                        value = step(values[-1], 0.0)
                    elif self.direction == "cross":  # c_k from q_{k-1} and its own c_{k-1}
                        value = step(qs[i], values[-1])
                    else:
                        value = values[-1] * step(qs[i], cs[i])
                except (OverflowError, ZeroDivisionError, ValueError):
                    value = math.inf
                if not math.isfinite(value):
                    raise DeriveError(
                        f"{self.config.label} has no closed form, and its {self.direction} "
                        f"values, iterated in double precision, leave a double's range at "
                        f"block {i + 1}: lower the depth or the block's numbers")
                values.append(value)
        return values[: depth + 1]

    def at(self, depth: int, q0: object = 1) -> sympy.Expr:
        """q_K (forward) or d_0/d_K (backward) at ``K = depth``.

        Exact whenever the closed form is (rational, symbolic, or irrational such as
        5/3 + sqrt(3)/(3 pi)) and its numbers have at most 4,300 digits; a float at
        PRECISION digits past that, where a moment is computed by quadrature, or where
        the recursion is iterated (up to depth MAX_ITERATED).

        >>> variance("xavier", "relu").forward.at(2, q0=4)
        9
        >>> variance("he", "gelu", "pre").forward.at(1)
        sqrt(3)/(3*pi) + 5/3
        >>> variance("he", "relu").forward.at(20000)
        3.98027684033797e+6020
        """
        depth, q0_value = self._check(depth, q0)
        if self.closed_form is not None:
            return exact_value(closed_forms.evaluate(self.closed_form.rhs, depth, q0_value))
        last = self._iterate_floats(closed_forms.check_iterated(self, depth), q0_value)[-1]
        return finish(sympy.Float(last, PRECISION))

    def iterated(self, depth: int, q0: object = 1) -> list[float]:
        """The recursion iterated block by block in floats, for k = 0..K: q_k forward,
        d_0/d_k backward (what a figure draws; :meth:`profile` gives exact values).

        >>> variance("he", "relu").backward.iterated(3)
        [1.0, 2.0, 4.0, 8.0]
        """
        depth, q0_value = self._check(depth, q0)
        return list(self._iterate_floats(closed_forms.check_iterated(self, depth), q0_value))

    def profile(self, depth: int, q0: object = 1, blocks: Sequence[int] | None = None
                ) -> list[sympy.Expr]:
        """The values at blocks k = 0..K (or at ``blocks``): q_k, or d_k/d_K backward.

        >>> variance("he", "relu").backward.profile(2), variance("he", "relu").forward.profile(8, blocks=[0, 8])
        ([4, 2, 1], [1, 256])
        """  # noqa: E501
        depth, q0_value = self._check(depth, q0)
        ks = list(range(depth + 1)) if blocks is None else [check_depth(b, minimum=0, name="block",
                                                                        maximum=depth)
                                                             for b in blocks]
        if self.closed_form is not None:
            rhs = self.closed_form.rhs
            values = [closed_forms.evaluate(rhs, j, q0_value) for j in ks]
            last = closed_forms.evaluate(rhs, depth, q0_value)
        else:
            iterated = self._iterate(closed_forms.check_iterated(self, depth), q0_value)
            values, last = [iterated[j] for j in ks], iterated[-1]
        if self.direction == "backward":
            values = closed_forms.ratios(last, values)
        if self.closed_form is not None:
            return [exact_value(v) for v in values]
        return [finish(v) for v in values]

    @cached_property
    def derivation(self) -> Derivation:
        """The derivation: assumptions, steps with reasons, and the result."""
        from derive.recursions.steps import build_derivation

        return build_derivation(self)

    def _repr_latex_(self) -> str:
        rows = [latex(self.recurrence.lhs) + " &= " + latex(self.recurrence.rhs)]
        if self.closed_form is not None:
            rows.append(latex(self.closed_form.lhs) + " &= " + latex(self.closed_form.rhs))
        return "$\\begin{aligned}" + " \\\\ ".join(rows) + "\\end{aligned}$"

    def to_dict(self, depth: int = 10, q0: object = 1) -> dict[str, object]:
        """JSON-ready summary: LaTeX and text formulas, growth, value and profile.

        The profile holds every block up to PROFILE_POINTS of them, else that many
        evenly spaced ones (``profile_sampled``); ``profile_k`` names the blocks.

        >>> variance("he", "relu", "pre").forward.to_dict(2)["closed_form"]
        'q_{K} = K + q_{0}'
        >>> d = variance("he", "relu").forward.to_dict(100_000)
        >>> len(d["profile"]), d["profile_k"][:3], d["profile_sampled"], d["value"]
        (1001, [0, 100, 200], True, '9.99002093014385e+30102')
        """
        closed = self.closed_form
        depth = check_depth(depth, minimum=0)
        blocks = closed_forms.sample_blocks(depth, PROFILE_POINTS)
        profile = self.profile(depth, q0, blocks)
        value = self.at(depth, q0)
        numeric = all(v.is_number for v in profile)
        return {
            "recurrence": latex(self.recurrence),
            "recurrence_text": text(self.recurrence.lhs) + " = " + text(self.recurrence.rhs),
            "closed_form": None if closed is None else latex(closed),
            "closed_form_text": None if closed is None else (
                f"{text(closed.lhs)} = {text(closed.rhs)}"),
            "reason": self.reason,
            "growth": self.growth,
            "value": str(value),
            "profile": [str(v) for v in profile],
            "profile_k": blocks,
            "profile_sampled": len(blocks) < depth + 1,
            "profile_float": [closed_forms.json_float(v) for v in profile] if numeric else None,
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
    #: c_k, the covariance of two independent inputs per unit, where a BatchNorm needs it.
    cross: Recursion | None = None
    #: Whether a final LayerNorm follows the last block (for the weight gradients).
    final_norm: bool = False

    @cached_property
    def weights(self) -> WeightGradients:
        """E[(dL/dW)^2] per entry of each block's last weight matrix, k = 1..K."""
        from derive.recursions.weight_gradients import WeightGradients

        return WeightGradients(self, self.final_norm)

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
                "block": {"name": c.block.name, "expression": c.block.text,
                          "latex": latex(c.block.display()), "source": c.block.source},
                "mlp_ratio": str(c.mlp_ratio), "dropout": str(c.dropout), "gamma": str(c.gamma),
                "sigma_w2": None if c.sigma_w2 is None else str(c.sigma_w2),
                "negative_slope": str(c.negative_slope),
            },
            "depth": check_depth(depth, minimum=0),
            "q0": str(exact(q0, "q0")),
            "forward": self.forward.to_dict(depth, q0),
            "backward": self.backward.to_dict(depth, q0),
        }


@lru_cache(maxsize=1024)
def _analysis(config: VarianceConfig) -> VarianceAnalysis:
    forward_step, backward_step, cross_step = block_maps(config)
    forward = Recursion(config, "forward", forward_step)
    cross = None if cross_step is None else Recursion(config, "cross", cross_step, forward)
    backward = Recursion(config, "backward", backward_step, forward, cross)
    return VarianceAnalysis(config, forward, backward, cross)


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
    block: object = None,
    values: dict[str, object] | None = None,
    final_norm: bool = False,
) -> VarianceAnalysis:
    """Forward and backward variance recursions of a residual stack at initialization.

    The block is ``norm`` (``none``, ``pre`` or ``post``) unless ``block`` is given: a
    preset name, an expression in the block language, or a Block. ``values`` gives
    some of the block's symbols numbers; the others stay symbolic. ``final_norm``: a
    LayerNorm follows the last block (it scales the gradients, see ``.weights``).

    >>> a = variance("he", "relu")
    >>> a.forward.recurrence
    Eq(q(k), 2*q(k - 1))
    >>> a.backward.closed_form
    Eq(d(0)/d(K), 2**K)
    >>> variance("he", block="x + alpha*F(x)").forward.closed_form
    Eq(q(K), q_0*(alpha**2 + 1)**K)
    """
    from derive.blocks.block import block as make_block
    from derive.inputs.parameters import given

    chosen = make_block(norm if block is None else block)
    if values:
        chosen = chosen.substituted({name: exact(v, name) for name, v in values.items()})
    parameters = given({"mlp_ratio": mlp_ratio, "dropout": dropout, "gamma": gamma,
                        "sigma_w2": sigma_w2, "negative_slope": negative_slope})
    config = VarianceConfig(init=init, activation=activation, branch=branch, block=chosen,
                            **parameters)  # type: ignore[arg-type]
    if not isinstance(final_norm, bool):
        raise DeriveError(f"final_norm must be True or False, got {final_norm!r}")
    analysis = _analysis(config)
    return dataclasses.replace(analysis, final_norm=True) if final_norm else analysis


def compare(
    init: str = "xavier",
    activation: str = "relu",
    branch: str = "single",
    *,
    depth: int = 10,
    q0: object = 1,
    blocks: Sequence[object] = NORMS,
    **options: object,
) -> list[dict[str, object]]:
    """One row per block and direction: formulas, growth, value at ``depth``.

    ``blocks``: preset names, expressions or Blocks (default: the three norm placements).

    >>> [(r["norm"], r["direction"], r["value"]) for r in compare("he", "relu", depth=3)][:3]
    [('none', 'forward', 8), ('none', 'backward', 8), ('pre', 'forward', 4)]
    """
    depth = check_depth(depth, minimum=0)
    q0_value = exact(q0, "q0")
    if q0_value.is_number and q0_value <= 0:
        raise DeriveError(f"q0 must be > 0, got {q0_value}")
    rows = []
    for spec in blocks:
        analysis = variance(init, activation, branch=branch, block=spec,
                            **options)  # type: ignore[arg-type]
        for recursion in (analysis.forward, analysis.backward):
            closed = recursion.closed_form
            try:
                value: object = recursion.at(depth, q0_value)
            except DeriveError:  # iterated, past its depth or with symbols without values
                value = _no_value(recursion, depth, q0_value)
            rows.append({
                "norm": analysis.config.block.name,
                "block": analysis.config.block.text,
                "direction": recursion.direction,
                "recurrence": recursion.recurrence,
                "closed_form": closed,
                "reason": recursion.reason,
                "growth": recursion.growth,
                "value": value,
            })
    return rows


def _no_value(recursion: Recursion, depth: int, q0_value: sympy.Expr) -> str:
    """Why a recursion without closed form has no value at ``depth``, naming what it needs
    and the option that gives it."""
    if depth > closed_forms.MAX_ITERATED:
        return f"iterated up to K = {closed_forms.MAX_ITERATED} only"
    from derive.inputs.parameters import PARAMETERS

    config, flags = recursion.config, dict[str, list[str]]()
    options = {getattr(config, p.name): p.flag for p in PARAMETERS}
    for symbol in recursion.symbols:
        flag = "--set" if symbol in config.block.symbols else options.get(symbol, "--set")
        flags.setdefault(flag, []).append(symbol.name)
    if not q0_value.is_number:
        flags.setdefault("--q0", []).append("q0")
    wanted = " and ".join(f"{', '.join(names)} ({flag})" for flag, names in flags.items())
    return f"needs a value for {wanted}"


def _product(factor: sympy.Expr, start: int = 1) -> sympy.Expr:
    """prod_{k=start}^{K} factor, solved with the moments masked."""
    masked, back = closed_forms.mask(factor)
    return closed_forms.solve_product(closed_forms.tidy(masked), start).xreplace(back)

