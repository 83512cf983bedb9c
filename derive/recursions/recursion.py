"""The recursions through depth, one type a quantity, each over plain data: a block's
map (an expression in the placeholders q_{k-1} and c_{k-1}) and the recursions it
reads.

- :class:`ForwardRecursion`: q_k = f(q_{k-1}), from q_0;
- :class:`CrossRecursion`: c_k = f(q_{k-1}, c_{k-1}), the covariance per unit of two
  independent inputs of a batch (where a BatchNorm needs it), from c_0 = 0;
- :class:`BackwardRecursion`: d_{k-1} = d_k G(q_{k-1}, c_{k-1}), from d_K.

Each solves its recursion in closed form where one exists (the unrolled sum, or
the product of the factors), else iterates it in floats; the shared machinery
(values at a depth, profiles, growth, JSON, the written derivation) is in
:class:`Recursion`.

>>> import derive
>>> derive.variance("he", "relu").forward.at(4)
16
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, partial
from typing import TYPE_CHECKING, ClassVar

import sympy

from derive.blocks.config import VarianceConfig
from derive.derivation.printing import latex, text
from derive.derivation.symbols import K, d, k, q, q0
from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError
from derive.inputs.numbers import check_depth, positive
from derive.recursions import closed_forms
from derive.recursions import growth as laws
from derive.recursions import steps as written
from derive.recursions.block_maps import C_PREV, Q_PREV, c_seq
from derive.recursions.closed_forms import (
    PRECISION,
    PROFILE_POINTS,
    exact_value,
    finish,
    numeric_map,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

#: What a solution is: the closed form (or None), and why there is none (or None).
Solution = tuple[sympy.Expr | None, str | None]


@dataclass(frozen=True, eq=False)
class Recursion(ABC):
    """One quantity of the variance analysis through depth: recurrence, closed form, values.

    >>> import derive
    >>> r = derive.variance("he", "relu").forward
    >>> r.closed_form
    Eq(q(K), 2**K*q_0)
    >>> r.at(3), r.growth
    (8, 'exponential')
    """

    config: VarianceConfig
    #: The block's map in ``Q_PREV`` (q_{k-1}) and ``C_PREV`` (c_{k-1}).
    step: sympy.Expr
    #: The quantity's name in tables, JSON and derivation keys.
    direction: ClassVar[str]

    # --- what each quantity says for itself ------------------------------------------
    @property
    @abstractmethod
    def recurrence(self) -> sympy.Eq:
        """The recurrence, in the sequences q_k, c_k, d_k."""

    @abstractmethod
    def _solve(self) -> Solution:
        """The closed form in the depth K, or why there is none."""

    @property
    @abstractmethod
    def _closed_lhs(self) -> sympy.Expr:
        """What the closed form is of: q(K), c(K) or d(0)/d(K)."""

    @abstractmethod
    def _floats(self, depth: int, q0_value: sympy.Expr) -> list[float]:
        """The recursion iterated in floats, k = 0..depth."""

    @abstractmethod
    def _written(self) -> written.Written:
        """The parts of the written derivation that are this quantity's own."""

    def _relative(self, values: list[sympy.Expr], last: sympy.Expr) -> list[sympy.Expr]:
        """The profile's values as printed (the backward quantity is read from the top)."""
        return values

    # --- the solution ----------------------------------------------------------------
    @cached_property
    def _solution(self) -> Solution:
        return self._solve()

    @property
    def closed_form(self) -> sympy.Eq | None:
        """q(K) = ... (forward) or d(0)/d(K) = ... (backward); None with ``.reason``."""
        solution = self._solution[0]
        if solution is None or solution.has(sympy.Product):  # a product left unsolved
            return None
        return sympy.Eq(self._closed_lhs, solution, evaluate=False)

    @property
    def solved(self) -> sympy.Eq:
        """The closed form, for a caller that knows there is one; a DeriveError with
        ``.reason`` where there is none.

        >>> import derive
        >>> derive.variance("he", "relu", "pre").forward.solved.rhs
        K + q_0
        """
        closed = self.closed_form
        if closed is None:
            raise DeriveError(f"{self.config.label} {self.direction}: no closed form: "
                              f"{self.reason}")
        return closed

    @property
    def reason(self) -> str | None:
        """Why there is no closed form (a sentence), or None when there is one."""
        return self._solution[1]

    @cached_property
    def growth(self) -> str:
        """How the quantity behaves with depth (growth, decay, a constant or a limit), read
        off the closed form, or off the iteration (:mod:`derive.recursions.growth`)."""
        if self.closed_form is not None:
            return laws.growth(self.closed_form.rhs)
        try:
            values = self._iterate_floats(laws.ITERATED_BLOCKS, sympy.Integer(1))
        except DeriveError:
            if not self.unknowns:
                return "past the range of a double within 96 blocks (no closed form)"
            names = ", ".join(s.name for s in self.unknowns)
            return f"depends on {names} (no closed form; iterated once they have values)"
        return f"{laws.iterated_growth(values)} (from the iteration, no closed form)"

    @property
    def unknowns(self) -> list[sympy.Symbol]:
        """The symbols the iteration needs numbers for (the block's and the options'),
        sorted by name, q_0 aside."""
        found = set().union(*(r.step.free_symbols for r in (self, *self._reads())))
        return sorted(found - {Q_PREV, C_PREV}, key=lambda s: s.name)

    def _reads(self) -> tuple[Recursion, ...]:
        """The recursions this one's values are computed from."""
        return ()

    def _next(self, value: Callable[[], float], block: int) -> float:
        """One more value of the iteration, or a DeriveError where it leaves a double's range."""
        try:
            out = value()
        except (OverflowError, ZeroDivisionError, ValueError):
            out = math.inf
        if not math.isfinite(out):
            raise DeriveError(
                f"{self.config.label} has no closed form, and its {self.direction} values, "
                f"iterated in double precision, leave a double's range at block {block}: "
                "lower the depth or the block's numbers")
        return out

    # --- values ------------------------------------------------------------------------
    def _check(self, depth: int, q0_value: object) -> tuple[int, sympy.Expr]:
        return check_depth(depth, minimum=0), positive(q0_value, "q0")

    def _iterate(self, depth: int, q0_value: sympy.Expr) -> list[sympy.Expr]:
        """The values of :meth:`_iterate_floats` as Floats at PRECISION digits."""
        return [sympy.Float(v, PRECISION) for v in self._iterate_floats(depth, q0_value)]

    def _iterate_floats(self, depth: int, q0_value: sympy.Expr) -> list[float]:
        """Forward: q_0..q_depth; cross: c_0..c_depth; backward: d_0/d_k for k = 0..depth,
        iterated in double precision (a refusal where a value is still a symbol)."""
        numeric = self.step.xreplace({Q_PREV: sympy.Integer(1), C_PREV: sympy.Integer(0)}).is_number
        if not (numeric and q0_value.is_number):
            symbols = ", ".join(sorted(str(s) for s in self.step.free_symbols - {Q_PREV, C_PREV}))
            raise DeriveError(
                f"{self.config.label} has no closed form, and numeric iteration needs numbers: "
                f"got q0 = {q0_value}" + (f" and the symbols {symbols}" if symbols else ""))
        return list(_iterated(self, depth, q0_value))

    def at(self, depth: int, q0: object = 1) -> sympy.Expr:
        """q_K (forward) or d_0/d_K (backward) at ``K = depth``.

        Exact whenever the closed form is (rational, symbolic, or irrational such as
        5/3 + sqrt(3)/(3 pi)) and its numbers have at most 4,300 digits; a float at
        PRECISION digits past that, where a moment is computed by quadrature, or where
        the recursion is iterated (up to depth MAX_ITERATED).

        >>> import derive
        >>> derive.variance("xavier", "relu").forward.at(2, q0=4)
        9
        >>> derive.variance("he", "gelu", "pre").forward.at(1)
        sqrt(3)/(3*pi) + 5/3
        >>> derive.variance("he", "relu").forward.at(20000)
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

        >>> import derive
        >>> derive.variance("he", "relu").backward.iterated(3)
        [1.0, 2.0, 4.0, 8.0]
        """
        depth, q0_value = self._check(depth, q0)
        return self._iterate_floats(closed_forms.check_iterated(self, depth), q0_value)

    def profile(self, depth: int, q0: object = 1, blocks: Sequence[int] | None = None
                ) -> list[sympy.Expr]:
        """The values at blocks k = 0..K (or at ``blocks``): q_k, or d_k/d_K backward.

        >>> import derive
        >>> v = derive.variance("he", "relu")
        >>> v.backward.profile(2), v.forward.profile(8, blocks=[0, 8])
        ([4, 2, 1], [1, 256])
        """
        depth, q0_value = self._check(depth, q0)
        ks = list(range(depth + 1)) if blocks is None else [
            check_depth(b, minimum=0, name="block", maximum=depth) for b in blocks]
        if self.closed_form is not None:
            rhs = self.closed_form.rhs
            values = [closed_forms.evaluate(rhs, j, q0_value) for j in ks]
            values = self._relative(values, closed_forms.evaluate(rhs, depth, q0_value))
            return [exact_value(v) for v in values]
        iterated = self._iterate(closed_forms.check_iterated(self, depth), q0_value)
        values = self._relative([iterated[j] for j in ks], iterated[-1])
        return [finish(v) for v in values]

    @property
    def symbols(self) -> dict[str, sympy.Symbol]:
        """The symbols of its formulas by name: the depth K, the block index k, q_0, and
        the block's own, so that ``r.closed_form.rhs.subs(r.symbols["K"], 10)`` works
        (``derive.K`` is the same K).

        >>> import derive
        >>> r = derive.variance("he", "relu").forward
        >>> r.closed_form.rhs.subs(r.symbols["K"], 10)
        1024*q_0
        """
        own = {str(s): s for s in self.config.block.symbols}
        for name in ("gamma", "dropout"):
            value = getattr(self.config, name, None)
            if isinstance(value, sympy.Symbol):
                own[str(value)] = value
        return {"K": K, "k": k, "q_0": q0, **own}

    def array(self, depth: int, q0: object = 1) -> NDArray[np.float64]:
        """The values for k = 0..depth as a NumPy array of floats (q_k forward, d_0/d_k
        backward); every symbol must have a number.

        >>> import derive
        >>> derive.variance("he", "relu").forward.array(3)
        array([1., 2., 4., 8.])
        """
        import numpy as np

        return np.asarray(self.iterated(depth, q0), dtype=float)

    def function(self) -> Callable[..., NDArray[np.float64]]:
        """The closed form as a NumPy function of ``(K, q_0, *symbols)`` (SymPy's lambdify,
        SciPy's gamma where the form needs it), for arrays of depths.

        >>> import derive, numpy as np
        >>> derive.variance("he", "relu", "pre").forward.function()(np.arange(4), 1.0)
        array([1., 2., 3., 4.])
        """
        if self.closed_form is None:
            raise DeriveError(f"{self.config.label} {self.direction}: no closed form to turn "
                              "into a function; use .array(depth) for the iterated values")
        own = [s for name, s in sorted(self.symbols.items()) if name not in ("K", "k", "q_0")]
        rhs = self.closed_form.rhs
        if not rhs.free_symbols <= {K, q0, *own}:
            raise DeriveError(f"{self.config.label} {self.direction}: the closed form holds "
                              f"{sorted(map(str, rhs.free_symbols - {K, q0, *own}))}, which "
                              "have no numbers; use .array(depth)")
        numeric = sympy.lambdify((K, q0, *own), rhs, modules=["scipy", "numpy"])

        def evaluate(depth: ArrayLike, q_0: ArrayLike = 1.0, *values: ArrayLike
                     ) -> NDArray[np.float64]:
            import numpy as np

            return np.asarray(numeric(depth, q_0, *values), dtype=float) + 0 * np.asarray(
                depth, dtype=float)

        return evaluate

    # --- what is shown -------------------------------------------------------------
    @cached_property
    def derivation(self) -> Derivation:
        """The derivation: assumptions, steps with reasons, and the result.

        >>> import derive
        >>> der = derive.variance("he", "relu").forward.derivation
        >>> der.key, der.result.text()
        ('variance/he/relu/none/single/forward', 'q_K = 2ᴷ·q₀')
        """
        return written.derivation(self.config, self.direction, self._written(),
                                  self.recurrence, self.closed_form, self.growth, self.reason)

    def _repr_latex_(self) -> str:
        rows = [latex(self.recurrence.lhs) + " &= " + latex(self.recurrence.rhs)]
        if self.closed_form is not None:
            rows.append(latex(self.closed_form.lhs) + " &= " + latex(self.closed_form.rhs))
        return "$\\begin{aligned}" + " \\\\ ".join(rows) + "\\end{aligned}$"

    def to_dict(self, depth: int = 10, q0: object = 1) -> dict[str, object]:
        """JSON-ready summary: LaTeX and text formulas, growth, value and profile.

        The profile holds every block up to PROFILE_POINTS of them, else that many
        evenly spaced ones (``profile_sampled``); ``profile_k`` names the blocks.

        >>> import derive
        >>> derive.variance("he", "relu", "pre").forward.to_dict(2)["closed_form"]
        'q_{K} = K + q_{0}'
        >>> d = derive.variance("he", "relu").forward.to_dict(100_000)
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


@lru_cache(maxsize=512)
def _iterated(recursion: Recursion, depth: int, q0_value: sympy.Expr) -> tuple[float, ...]:
    return tuple(recursion._floats(depth, q0_value))


@dataclass(frozen=True, eq=False)
class ForwardRecursion(Recursion):
    """q_k = f(q_{k-1}): the second moment per unit of the block's output, from q_0.

    >>> import derive
    >>> derive.variance("he", "relu", "pre").forward.recurrence
    Eq(q(k), q(k - 1) + 1)
    """

    direction: ClassVar[str] = "forward"

    @property
    def recurrence(self) -> sympy.Eq:
        return sympy.Eq(q(k), self.step.xreplace({Q_PREV: q(k - 1)}))

    @property
    def _closed_lhs(self) -> sympy.Expr:
        return q(K)

    def _solve(self) -> Solution:
        # The unevaluated moments are masked as positive symbols while SymPy solves.
        step, back = closed_forms.mask(self.step, keep=Q_PREV)
        coefficients = closed_forms.affine_coefficients(step, Q_PREV)
        if coefficients is None:
            return None, (
                f"the map $q_{{k-1}} \\mapsto q_k$ is not affine in $q_{{k-1}}$ for "
                f"{self.config.activation} without normalization, so no closed form "
                f"is derived; the recursion is iterated numerically ({PRECISION} digits)"
            )
        return closed_forms.solve_affine(*coefficients).xreplace(back), None

    def _floats(self, depth: int, q0_value: sympy.Expr) -> list[float]:
        step = numeric_map(self.step, (Q_PREV, C_PREV))
        values = [float(q0_value)]
        while len(values) <= depth:
            values.append(self._next(partial(step, values[-1], 0.0), len(values)))
        return values

    def _written(self) -> written.Written:
        title = f"Forward second moment $q_k$ through depth: {self.config.label}"
        how = ("unroll $q_k = a q_{k-1} + b$ down to $q_0$: "
               "$q_K = a^K q_0 + b (1 + a + \\dots + a^{K-1})$, a geometric sum")
        return written.Written(title, written.forward_steps(self.config), how, self._check_step)

    def _check_step(self) -> Step | None:
        """Substitute the closed form back into the recurrence: the residual is 0."""
        closed = self.closed_form
        if closed is None:
            return None
        sol, first = written.general(closed.rhs)
        prev = sol.xreplace({K: k - 1}) if first == 1 else self.config.gamma**2
        lhs = sympy.Add(sol.xreplace({K: k}), -self.step.xreplace({Q_PREV: prev}),
                        evaluate=False)
        return written.check(lhs, "$q_k - f(q_{k-1})$ with the solution substituted", first)


@dataclass(frozen=True, eq=False)
class CrossRecursion(Recursion):
    """c_k = f(q_{k-1}, c_{k-1}): the covariance per unit of two independent inputs of a
    batch, which a BatchNorm couples; c_0 = 0.

    >>> import derive
    >>> derive.variance("he", "relu", "bn-first").cross.recurrence
    Eq(c(k), c(k - 1) + 1/pi)
    """

    forward: ForwardRecursion = field(repr=False)
    direction: ClassVar[str] = "cross"

    @property
    def recurrence(self) -> sympy.Eq:
        return sympy.Eq(c_seq(k), self.step.xreplace({Q_PREV: q(k - 1), C_PREV: c_seq(k - 1)}))

    def _reads(self) -> tuple[Recursion, ...]:
        return (self.forward,)

    @property
    def _closed_lhs(self) -> sympy.Expr:
        return c_seq(K)

    def _solve(self) -> Solution:
        """c_K for c_k = a c_{k-1} + b with c_0 = 0 (independent inputs), where a and b
        are free of k once q_{k-1} is substituted."""
        step = self.step
        if step.has(Q_PREV):
            forward = self.forward.closed_form
            if forward is None or isinstance(forward.rhs, sympy.Piecewise):
                return None, "c_k depends on q_{k-1}; iterated numerically"
            step = step.xreplace({Q_PREV: forward.rhs.xreplace({K: k - 1})})
        masked, back = closed_forms.mask(step, keep=C_PREV)
        coefficients = closed_forms.affine_coefficients(masked, C_PREV)
        if coefficients is None or any(v.has(k) for v in coefficients):
            return None, "c_k is not affine with constant coefficients; iterated numerically"
        solved = closed_forms.solve_affine(*coefficients).xreplace(back)
        return closed_forms.tidy(solved.xreplace({q0: 0})), None

    def _floats(self, depth: int, q0_value: sympy.Expr) -> list[float]:
        step = numeric_map(self.step, (Q_PREV, C_PREV))
        qs = self.forward._iterate_floats(depth, q0_value)
        values = [0.0]
        while len(values) <= depth:  # c_k from q_{k-1} and its own c_{k-1}
            i = len(values) - 1
            values.append(self._next(partial(step, qs[i], values[-1]), i + 1))
        return values

    def _written(self) -> written.Written:
        title = f"Covariance $c_k$ of two inputs of a batch through depth: {self.config.label}"
        how = ("unroll $c_k = a c_{k-1} + b$ down to $c_0 = 0$: "
               "$c_K = b (1 + a + \\dots + a^{K-1})$, a geometric sum")
        return written.Written(title, written.forward_steps(self.config), how, lambda: None)


@dataclass(frozen=True, eq=False)
class BackwardRecursion(Recursion):
    """d_{k-1} = d_k G(q_{k-1}, c_{k-1}): the gradient's second moment per unit, read
    from the output down (d_0/d_K, the product of the blocks' gains).

    >>> import derive
    >>> derive.variance("he", "relu", "pre").backward.closed_form
    Eq(d(0)/d(K), (K + q_0)/q_0)
    """

    forward: ForwardRecursion = field(repr=False)
    #: The recursion of c_k, where a BatchNorm needs it.
    cross: CrossRecursion | None = field(default=None, repr=False)
    direction: ClassVar[str] = "backward"

    @property
    def recurrence(self) -> sympy.Eq:
        body = self.step.xreplace({Q_PREV: q(k - 1), C_PREV: c_seq(k - 1)})
        return sympy.Eq(d(k - 1), d(k) * body)

    def _reads(self) -> tuple[Recursion, ...]:
        return (self.forward,) if self.cross is None else (self.forward, self.cross)

    @property
    def _closed_lhs(self) -> sympy.Expr:
        return d(0) / d(K)

    def _relative(self, values: list[sympy.Expr], last: sympy.Expr) -> list[sympy.Expr]:
        return closed_forms.ratios(last, values)  # d_k/d_K = (d_0/d_K)/(d_0/d_k)

    def _solve(self) -> Solution:
        step = self.step
        if step.has(C_PREV):
            assert self.cross is not None
            cross = self.cross.closed_form
            if cross is None:
                return None, (
                    "each factor depends on $c_{k-1}$, the covariance of two inputs that "
                    "BatchNorm sees, which has no closed form here; the product is iterated "
                    f"numerically ({PRECISION} digits)")
            step = step.xreplace({C_PREV: cross.rhs.xreplace({K: k - 1})})
        if not step.has(Q_PREV):
            return _product(step), None
        forward = self.forward.closed_form
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

    def _floats(self, depth: int, q0_value: sympy.Expr) -> list[float]:
        step = numeric_map(self.step, (Q_PREV, C_PREV))
        qs = self.forward._iterate_floats(depth, q0_value)
        cs = (self.cross._iterate_floats(depth, q0_value)
              if self.cross is not None else [0.0] * (depth + 1))
        values = [1.0]
        while len(values) <= depth:
            i = len(values) - 1
            values.append(self._next(partial(_scaled, values[-1], step, qs[i], cs[i]), i + 1))
        return values

    def _written(self) -> written.Written:
        title = f"Backward gradient second moment $d_k$ through depth: {self.config.label}"
        how = ("multiply the factors of blocks $k = 1, \\dots, K$; products of "
               "shifted factors are ratios of factorials (Gamma functions), simplified")
        return written.Written(title, written.backward_steps(self.config), how,
                               self._check_step)

    def _check_step(self) -> Step | None:
        """The ratio of consecutive closed forms against the factor of block k: 0."""
        closed = self.closed_form
        if closed is None:
            return None
        sol, first = written.general(closed.rhs)
        forward = self.forward.closed_form
        q_prev, _ = written.general(q0 if forward is None else forward.rhs)
        cross = self.cross.closed_form if self.cross is not None else None
        c_prev = {} if cross is None else {C_PREV: cross.rhs.xreplace({K: k - 1})}
        factor = self.step.xreplace({Q_PREV: q_prev.xreplace({K: k - 1}), **c_prev})
        ratio = sol.xreplace({K: k}) / sol.xreplace({K: k - 1})
        lhs = sympy.Add(ratio, -factor, evaluate=False)
        return written.check(lhs, "$(d_0/d_k)/(d_0/d_{k-1})$ minus the factor of block $k$",
                             first)


def _scaled(value: float, step: Callable[[float, float], float], q: float, c: float) -> float:
    """``value`` times the block's factor at (q, c): one step of the backward iteration."""
    return value * step(q, c)


def _product(factor: sympy.Expr, start: int = 1) -> sympy.Expr:
    """prod_{k=start}^{K} factor, solved with the moments masked."""
    masked, back = closed_forms.mask(factor)
    return closed_forms.solve_product(closed_forms.tidy(masked), start).xreplace(back)

