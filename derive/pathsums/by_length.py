"""The gradient carried by each path length, under the variance analysis's mean field.

Block k's backward gain G_k = d_{k-1}/d_k (:meth:`Block.gain`) is a sum over the
terms of its Jacobian of the product of their primitives' gains (gradient
independence). Splitting it by the number of branch Jacobians J in each term
gives a polynomial G_k(t) = sum over terms of gain(term) t^{#J}, with G_k(1) = G_k.
Cross terms between different paths vanish at initialization, so the share of
E[(dL/dx)^2] carried by the paths through L branches is

    [t^L] prod_k G_k(t) / prod_k G_k(1),

with q_{k-1} (and c_{k-1}) from the forward recursion. Equivalently the
gradient-weighted length is a sum of independent per-block lengths with
generating functions G_k(t)/G_k(1): for one branch per block, a Bernoulli(p_k)
with p_k = b_k/(s_k + b_k), the branch's share of the block's gain; constant
p_k gives binomial(K, p). Exact (rationals, or symbols at small depth) or in
floats (products of NumPy polynomials) at large depth.

>>> g = path_gradients(3, init="he")
>>> [str(r.gradient_share) for r in g.rows]
['1/8', '3/8', '3/8', '1/8']
>>> [str(r.gradient_share) for r in path_gradients(2, init="he", block="pre").rows]
['1/3', '1/2', '1/6']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Literal, TypeAlias, TypedDict, Unpack, overload

import numpy as np
import sympy

from derive.blocks.block import Block
from derive.blocks.branch import BranchConfig
from derive.blocks.config import VarianceConfig
from derive.blocks.nodes import Moments
from derive.derivation.printing import latex, text
from derive.derivation.symbols import K, q, q0
from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError
from derive.inputs.numbers import positive
from derive.pathsums.block_paths import BlockPathSum, block_terms, term_route
from derive.pathsums.limits import Wrt, WrtLike, check_path_args
from derive.recursions.analysis import VarianceAnalysis, one_point, variance
from derive.recursions.block_maps import C_PREV, Q_PREV, block_input, c_seq
from derive.recursions.closed_forms import numeric_map

#: Past this depth, or for irrational gains, shares are floats.
EXACT_DEPTH = 200
#: Gains that hold symbols are multiplied out up to this depth.
SYMBOLIC_DEPTH = 64
#: The deepest stack whose length table is computed (the work grows like depth^2).
MAX_DEPTH = 100_000
t = sympy.Symbol("t")
k = sympy.Symbol("k", integer=True, positive=True)
#: A share of paths or of gradient: exact (a SymPy number, or an expression in the
#: block's symbols) or a float.
Share: TypeAlias = sympy.Expr | float


class BlockNumbers(TypedDict, total=False):
    """The variance options :func:`path_gradients` passes on to
    :func:`derive.recursions.analysis.variance` (each parsed there)."""

    mlp_ratio: object
    dropout: object
    gamma: object
    sigma_w2: object
    negative_slope: object
    sigma_b2: object
    fan_in_variance: object


def term_gains(spec: Block, config: BranchConfig, x: Moments) -> list[sympy.Expr]:
    """The backward gain of each term of :func:`block_terms`, in its order: the product
    of the primitives' gains along the term's way through the (expanded) tree.

    >>> from derive.recursions.block_maps import Q_PREV
    >>> from derive.blocks.block import block
    >>> from derive.blocks.branch import BranchConfig
    >>> term_gains(block("pre"), BranchConfig(init="he"), Moments(Q_PREV))
    [1, 1/x]
    """
    moments = spec.moments(config, x)
    out = []
    for term in block_terms(spec, 1):
        gain = sympy.Integer(1)
        for exp, i in term_route(spec, config, term.path):
            gain *= exp.gains([moments[c] for c in exp.children], config, x)[i]
        out.append(gain)
    return out


@dataclass(frozen=True)
class LengthShare:
    """The paths through ``length`` branches: how many, their share of all paths, and
    their share of the gradient's second moment."""

    length: int
    count: int
    path_share: float
    gradient_share: Share


class LengthShares:
    """A table of path lengths: the counts of the paths through L branches and each
    length's share of the gradient (``gradient_shares``, set by a subclass), with their
    means and spreads. :class:`PathGradients` computes the shares by the one-point
    recursion, :class:`derive.pathsums.token_paths.TokenPathGradients` through the token
    kernel.
    """

    depth: int
    wrt: Wrt
    config: VarianceConfig
    q0: sympy.Expr
    #: Whether the shares are exact (else floats).
    exact: bool
    paths: BlockPathSum
    #: Each length's share of the gradient's second moment, L = 0, 1, ...
    gradient_shares: list[Share]

    @property
    def closed_form(self) -> tuple[sympy.Expr, sympy.Expr] | None:
        """The closed forms (mean, variance) of the gradient-weighted length, where known."""
        return None

    def effect(self) -> str:
        """What the block does to the effective path length, in words."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Lines the length table prints after its closed form (none here)."""
        return []

    def report_fields(self) -> dict[str, object]:
        """Data the length table's JSON holds beside the common fields (none here)."""
        return {}

    @property
    def setting(self) -> str:
        """What the table's title adds after q0 (nothing here)."""
        return ""

    @cached_property
    def counts(self) -> list[int]:
        """How many paths pass through L branches, L = 0, 1, ... (exact)."""
        return list(self.paths.lengths.values())

    @cached_property
    def path_shares(self) -> list[float]:
        """Each length's share of all paths (floats)."""
        total = self.paths.count
        return [c / total for c in self.counts]

    @cached_property
    def rows(self) -> list[LengthShare]:
        """One row per length: count, share of paths, share of gradient."""
        return [LengthShare(length, count, share, grad) for length, count, share, grad in zip(
            range(len(self.counts)), self.counts, self.path_shares, self.gradient_shares,
            strict=True)]

    def window(self, low: int, high: int) -> tuple[float, Share]:
        """(share of paths, share of gradient) of the lengths low..high; the gradient's share
        is an expression when the shares hold symbols.

        >>> p, g = path_gradients(54, init="he", block="pre").window(5, 17)
        >>> round(p, 4), round(g, 4)
        (0.0045, 0.2816)
        """
        top = len(self.counts) - 1
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise DeriveError(f"path length {name} must be an integer in 0..{top}, "
                                  f"got {value!r}")
        if low > high:
            raise DeriveError(f"path lengths {low}..{high}: the first exceeds the last")
        counts = sum(self.counts[low:high + 1])
        shares = sum(self.gradient_shares[low:high + 1])
        gradient = float(shares) if self.numeric else sympy.factor(shares)
        return counts / self.paths.count, gradient

    def _moment(self, shares: list[Share], power: int) -> float:
        return float(sum(float(s) * length**power for length, s in enumerate(shares)))

    @cached_property
    def numeric(self) -> bool:
        """Whether the shares are numbers (not symbolic)."""
        return all(isinstance(s, float) or s.is_number for s in self.gradient_shares)

    @cached_property
    def mean(self) -> Share:
        """The gradient-weighted mean path length (a float; an expression if symbolic)."""
        if not self.numeric:
            return sympy.factor(sum(s * i for i, s in enumerate(self.gradient_shares)))
        return self._moment(self.gradient_shares, 1)

    @cached_property
    def spread(self) -> Share:
        """The gradient-weighted standard deviation of the path length."""
        if not self.numeric:
            second = sum(s * i**2 for i, s in enumerate(self.gradient_shares))
            return sympy.sqrt(sympy.factor(second - self.mean**2))
        return math.sqrt(max(self._moment(self.gradient_shares, 2) - self.mean**2, 0.0))

    def _count_moment(self, power: int) -> Fraction:
        return Fraction(sum(c * length**power for length, c in enumerate(self.counts)),
                        self.paths.count)

    @cached_property
    def path_mean(self) -> float:
        """The mean length over all paths, each counted once (exact, then a float)."""
        return float(self._count_moment(1))

    @cached_property
    def path_spread(self) -> float:
        """The standard deviation of the length over all paths."""
        return math.sqrt(float(self._count_moment(2) - self._count_moment(1) ** 2))


class PathGradients(LengthShares):
    """Path counts and gradient shares by length for dy/dx (or dy/df_j).

    >>> g = path_gradients(54, init="he", block="pre")
    >>> round(g.mean, 3), round(g.path_mean, 3)
    (3.594, 27.0)
    """

    def __init__(self, depth: int, wrt: WrtLike, analysis: VarianceAnalysis,
                 q0_value: sympy.Expr, exact_mode: bool | None = None) -> None:
        depth, wrt = check_path_args(depth, wrt)
        if depth > MAX_DEPTH:
            raise DeriveError(f"gradient shares by length go up to depth {MAX_DEPTH}, "
                              f"got {depth}")
        self.depth, self.wrt, self.analysis, self.q0 = depth, wrt, analysis, q0_value
        self.config = analysis.config
        self.paths = BlockPathSum(depth, wrt, self.config.block)
        #: The first block whose factor the gradient passes: j + 1 (1 for x).
        self.first = wrt.start + 1
        #: G(t)'s coefficients in q_{k-1} (``Q_PREV``) and c_{k-1} (``C_PREV``).
        self.polynomial = branch_polynomial(self.config)
        symbols = _symbols(self.polynomial, q0_value)
        self.symbolic = bool(symbols)
        self.exact = self._exact_mode(exact_mode, symbols)
        #: Each length's share of the gradient's second moment, L = 0, 1, ...
        self.gradient_shares = self._exact_shares() if self.exact else self._float_shares()

    def _exact_mode(self, requested: bool | None, symbols: list[str]) -> bool:
        """Exact shares if ``requested`` (by default: with symbols, or up to EXACT_DEPTH);
        symbols need them, and a depth of at most SYMBOLIC_DEPTH."""
        exact = (bool(symbols) or self.depth <= EXACT_DEPTH) if requested is None else requested
        if symbols and (not exact or self.depth > SYMBOLIC_DEPTH):
            raise DeriveError(f"gradient shares at depth {self.depth} need numbers, got the "
                              f"symbols {', '.join(dict.fromkeys(symbols))}: give them values "
                              f"(--set, --gamma, --q0) or a depth <= {SYMBOLIC_DEPTH}")
        return exact

    # --- the forward moments and each block's polynomial --------------------------
    @overload
    def forward_moments(self, exact_values: Literal[True]
                        ) -> list[tuple[sympy.Expr, sympy.Expr]] | None: ...
    @overload
    def forward_moments(self, exact_values: Literal[False]) -> list[tuple[float, float]]: ...

    def forward_moments(self, exact_values: bool
                        ) -> list[tuple[sympy.Expr, sympy.Expr]] | list[tuple[float, float]] | None:
        """(q_{k-1}, c_{k-1}) for k = 1..depth; ``exact_values``: exact, or None when
        numbers stop being rational."""
        return self._exact_moments() if exact_values else self._float_moments()

    def _exact_moments(self) -> list[tuple[sympy.Expr, sympy.Expr]] | None:
        fwd = self.analysis.forward.step
        cross = self.analysis.cross.step if self.analysis.cross is not None else None
        qv, cv = self.q0, sympy.Integer(0)
        out: list[tuple[sympy.Expr, sympy.Expr]] = []
        tidy = sympy.simplify if self.symbolic else (lambda e: e)
        for _ in range(self.depth):
            out.append((qv, cv))
            if not self.symbolic and not (qv.is_Rational and cv.is_Rational):
                return None  # irrational moments: the shares are computed in floats
            qv, cv = (tidy(fwd.xreplace({Q_PREV: qv, C_PREV: cv})),
                      cv if cross is None else
                      tidy(cross.xreplace({Q_PREV: qv, C_PREV: cv})))
        return out

    def _float_moments(self) -> list[tuple[float, float]]:
        fwd = self.analysis.forward.step
        cross = self.analysis.cross.step if self.analysis.cross is not None else None
        step = numeric_map(fwd, (Q_PREV, C_PREV))
        cstep = None if cross is None else numeric_map(cross, (Q_PREV, C_PREV))
        qf, cf = float(self.q0), 0.0
        out: list[tuple[float, float]] = []
        for _ in range(self.depth):
            out.append((qf, cf))
            qf, cf = step(qf, cf), (cf if cstep is None else cstep(qf, cf))
        return out

    def _exact_shares(self) -> list[Share]:
        """The shares from the product of the blocks' G_k(t): in rationals when every
        coefficient is one, in SymPy when they hold symbols, and in floats (``exact``
        turned off) when the moments or coefficients are irrational numbers."""
        found = self.forward_moments(True)
        if found is None:
            self.exact = False
            return self._float_shares()
        polys = [self._polynomial_at(qv, cv) for qv, cv in found[self.first - 1:]]
        flat = [c for p in polys for c in p]
        if all(c.is_Rational for c in flat):
            return self._rational_shares(polys)
        if all(c.is_number for c in flat):
            self.exact = False
            return self._float_shares()
        return _symbolic_shares(polys)

    def _polynomial_at(self, qv: sympy.Expr, cv: sympy.Expr) -> list[sympy.Expr]:
        """One block's G_k(t) coefficients, given q_{k-1} and c_{k-1} (numbers made exact)."""
        out = []
        for c in self.polynomial:
            value = c.xreplace({Q_PREV: qv, C_PREV: cv})
            out.append(sympy.nsimplify(value) if c.is_number else value)
        return out

    def _rational_shares(self, polys: list[list[sympy.Expr]]) -> list[Share]:
        """[t^L] prod G_k(t) / prod G_k(1) in Python fractions (fast), as SymPy rationals."""
        total = [Fraction(1)]
        for p in polys:
            total = _multiply(total, [Fraction(int(c.p), int(c.q)) for c in p])
        norm = sum(total)
        if norm == 0:
            raise DeriveError(f"no gradient reaches the input through {self.config.block.text}")
        return [sympy.Rational(v.numerator, v.denominator) / sympy.Rational(
            norm.numerator, norm.denominator) for v in total]

    def _float_shares(self) -> list[Share]:
        functions = [numeric_map(c, (Q_PREV, C_PREV)) for c in self.polynomial]
        total = np.ones(1)
        for qv, cv in self.forward_moments(False)[self.first - 1:]:
            row = np.array([float(f(qv, cv)) for f in functions])
            norm = row.sum()
            if not norm > 0:
                raise DeriveError(f"no gradient reaches the input through {self.config.block.text}")
            total = np.convolve(total, row / norm)
        shares: list[Share] = [float(v) for v in total]
        return shares

    # --- closed forms and words ------------------------------------------------------
    @cached_property
    def per_block(self) -> tuple[sympy.Expr, sympy.Expr]:
        """Block k's contribution to the mean and the variance of the weighted length,
        G'(1)/G(1) and G''(1)/G(1) + G'(1)/G(1) - (G'(1)/G(1))^2, in q_{k-1}."""
        g = sum(c * t**i for i, c in enumerate(self.polynomial))
        at = {t: 1}
        g1, d1, d2 = g.xreplace(at), sympy.diff(g, t).xreplace(at), sympy.diff(g, t, 2).xreplace(at)
        m = sympy.cancel(d1 / g1)
        return m, sympy.cancel(d2 / g1 + m - m**2)

    @cached_property
    def closed_form(self) -> tuple[sympy.Expr, sympy.Expr] | None:
        """(mean, variance) of the gradient-weighted length in the depth K and q_0, where
        SymPy sums them in closed form; None otherwise.

        >>> path_gradients(4, init="he", block="pre").closed_form
        (harmonic(K + 1) - 1, harmonic(K + 1) - harmonic(K + 1, 2))
        """
        mean, var = self.per_block
        if any(e.has(C_PREV) for e in (mean, var)):
            return None
        forward = self.analysis.forward.closed_form
        if any(e.has(Q_PREV) for e in (mean, var)) and (
                forward is None or not all(e.is_rational_function(Q_PREV) for e in (mean, var))):
            return None
        rhs = (forward.rhs if forward is not None else q0).xreplace({q0: self.q0})
        start = self.first
        out = []
        for e in (mean, var):
            if isinstance(rhs, sympy.Piecewise):  # q_0 before the first block, then one value
                later = rhs.args[-1].expr.xreplace({K: k - 1})
                head = e.xreplace({Q_PREV: q0}) if start == 1 else 0
                total = head + _sum(e.xreplace({Q_PREV: later}), max(start, 2))
            else:
                total = _sum(e.xreplace({Q_PREV: rhs.xreplace({K: k - 1})}), start)
            if total.has(sympy.Sum):
                return None
            out.append(total if total.has(sympy.harmonic) else sympy.factor(total))
        return out[0], out[1]

    @property
    def symbols(self) -> dict[str, sympy.Symbol]:
        """The symbols its closed forms use, by name: the depth K, q_0 and the block's own,
        so that ``g.closed_form[0].subs(g.symbols["K"], 10)`` substitutes.

        >>> sorted(path_gradients(4, init="he", block="pre").symbols)
        ['K', 'q_0']
        """
        return {"K": K, "q_0": q0, **{str(s): s for s in self.config.block.symbols}}

    def _gain_polynomial(self) -> sympy.Expr:
        from derive.pathsums.notation import shown

        previous = sympy.Symbol("k") - 1
        names = {Q_PREV: q(previous), C_PREV: c_seq(previous)}
        terms = [sympy.factor(c).xreplace(names) * t**i for i, c in enumerate(self.polynomial)]
        return shown(" + ".join(text(term) for term in terms if term != 0),
                     " + ".join(latex(term) for term in terms if term != 0))

    @cached_property
    def derivation(self) -> Derivation:
        """Block k's gain split by branches, the share of each length, the mean length (in
        closed form where SymPy sums it) and its value, as a Derivation (what
        ``derive.render`` renders).

        >>> path_gradients(54, init="he", block="pre").derivation.result.text()
        'mean length at K = 54 ≈ 3.594'
        """
        from derive.pathsums.notation import shown

        steps = [
            Step(shown("Gₖ(t)", "G_{k}(t)"), self._gain_polynomial(),
                 "block $k$'s backward gain $d_{k-1}/d_k$ split by the number of branch "
                 "Jacobians $J$ each of its terms passes (gradient independence)"),
            Step(shown("share of length L", "\\text{share}_L"),
                 shown("[tᴸ] Πₖ Gₖ(t)/Gₖ(1)", "[t^L] \\prod_{k} G_{k}(t)/G_{k}(1)"),
                 "different paths are uncorrelated: a path carries the product of its "
                 "factors' gains, and the paths with $L$ branches are the coefficient of $t^L$"),
        ]
        closed = self.closed_form
        if closed is not None:
            steps.append(Step(shown("mean length", "\\text{mean length}"), closed[0],
                              "the mean of a sum of independent lengths: "
                              "$\\sum_k G_k'(1)/G_k(1)$, summed in the depth $K$"))
        mean = self.mean
        value = sympy.Float(mean, 4) if isinstance(mean, float) else mean
        steps.append(Step(shown(f"mean length at K = {self.depth}",
                                f"\\text{{mean length at }} K = {self.depth}"),
                          value, "the shares' mean" + (
                              f", against {self.path_mean:.4g} for the path counts"
                              if self.numeric else ""),
                          relation="\\approx" if isinstance(mean, float) else "="))
        return Derivation(
            title=f"The gradient each path length carries: {self.depth} blocks of "
                  f"{self.config.block.text} ({self.config.label})",
            key=f"path-gradients/{self.config.label}/depth-{self.depth}/wrt-{self.wrt}",
            assumptions=("mean field, infinite width, gradient independence; "
                         f"$q_0 = {latex(self.q0)}$",),
            steps=tuple(steps), result=steps[-1])

    def _repr_latex_(self) -> str:
        """Jupyter display: G_k(t), the mean length (closed form and value) and the shares
        of the lengths that carry most of the gradient, in rows that fit a column.

        >>> "G_{k}(t)" in path_gradients(4, init="he", block="pre")._repr_latex_()
        True
        """
        rows = [f"{latex(step.lhs)} &{step.relation} {latex(step.rhs)}"
                for step in self.derivation.steps if "share" not in step.latex()]
        if self.numeric:
            top = sorted(range(len(self.gradient_shares)),
                         key=lambda n: -float(self.gradient_shares[n]))[:3]
            shown = ", ".join(f"L = {n}: {100 * float(self.gradient_shares[n]):.3g}\\%"
                              for n in sorted(top))
            rows.append(f"&\\text{{largest shares: {shown}}}")
        return "$\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}$"

    @cached_property
    def asymptote(self) -> sympy.Expr | None:
        """The constant c of the mean length's large-K form ln K + c, where the mean grows
        like ln K (a harmonic closed form); None otherwise.

        >>> path_gradients(4, init="he", block="pre").asymptote
        -1 + EulerGamma
        """
        closed = self.closed_form
        if closed is None or not closed[0].has(sympy.harmonic):
            return None
        constant = sympy.limit(closed[0] - sympy.log(K), K, sympy.oo)
        return constant if constant.is_finite else None

    def effect(self) -> str:
        """What the block does to the effective path length, in words.

        >>> path_gradients(54, init="he").effect().split(":")[0]
        'every block passes p = 1/2 of its gradient through its branch, whatever its depth'
        """
        mean, _ = self.per_block
        n = self.depth - self.first + 1
        if not self.numeric:
            compare = (f"at depth {self.depth} the gradient-weighted mean length is "
                       f"{text(self.mean)} against {self.path_mean:.4g} for the path counts")
            shorter = longer = False
            verdict = "shorter or longer as the symbols' values say"
        else:
            compare = (f"at depth {self.depth} the gradient-weighted length is {self.mean:.4g} "
                       f"± {self.spread:.3g} against {self.path_mean:.4g} ± "
                       f"{self.path_spread:.3g} for the path counts")
            shorter = self.mean < self.path_mean * (1 - 1e-9)
            longer = self.mean > self.path_mean * (1 + 1e-9)
            verdict = ("the effective paths are shorter than the typical path" if shorter else
                       "the effective paths are longer than the typical path" if longer else
                       "every path carries the same gradient, as the counts say")
        if len(self.polynomial) == 2 and not mean.has(Q_PREV, C_PREV):
            p = mean
            return (f"every block passes p = {text(p)} of its gradient through its branch, "
                    f"whatever its depth: the gradient-weighted length is binomial({n}, p), "
                    f"mean {n}p = {text(sympy.nsimplify(n * p))}, spread sqrt({n}p(1-p)); "
                    f"{compare}: {verdict}")
        previous = sympy.Symbol("k") - 1
        shown = text(mean.xreplace({Q_PREV: q(previous), C_PREV: c_seq(previous)}))
        if len(self.polynomial) == 2:
            return (f"block k passes p_k = {shown} of its gradient through its branch, which "
                    f"changes with q_(k-1): the gradient-weighted length is a sum of independent "
                    f"Bernoulli(p_k) (Poisson binomial), mean Σ p_k, variance Σ p_k(1-p_k); "
                    f"{compare}: {verdict}")
        return (f"block k adds {shown} to the mean length (G_k'(1)/G_k(1), its terms holding up "
                f"to {len(self.polynomial) - 1} branch Jacobians); {compare}: {verdict}")


def _sum(summand: sympy.Expr, start: int) -> sympy.Expr:
    """sum_{k=start}^{K} summand, by SymPy: partial fractions first, each c/(k + a)^n
    shifted to c/k^n, which SymPy sums as a harmonic number.

    >>> _sum(1 / (k + 1), 1)
    harmonic(K + 1) - 1
    """
    if not summand.is_rational_function(k):
        return sympy.summation(summand, (k, start, K))
    total = sympy.Integer(0)
    for term in sympy.Add.make_args(sympy.apart(sympy.cancel(summand), k)):
        shift = 0
        roots = sympy.roots(sympy.Poly(sympy.fraction(term)[1], k)) if term.has(k) else {}
        if len(roots) == 1 and next(iter(roots)).is_integer:
            shift = -int(next(iter(roots)))
        total += _harmonic_sum(term.xreplace({k: k - shift}), start + shift, shift)
    return total


def _harmonic_sum(term: sympy.Expr, low: int, shift: int) -> sympy.Expr:
    """sum_{k=low}^{K+shift} term; c/k^n gives c (H^{(n)}_{K+shift} - H^{(n)}_{low-1}), the
    constant kept as a harmonic number where it reads better than its long fraction.

    >>> _harmonic_sum(1 / k, 26, 25)
    harmonic(K + 25) - harmonic(25)
    """
    coefficient, power = term.as_coeff_exponent(k)
    if coefficient.has(k) or not (power.is_Integer and power < 0) or low <= 2:
        return sympy.summation(term, (k, low, K + shift))
    n = -power
    order = () if n == 1 else (n,)
    return coefficient * (sympy.harmonic(K + shift, *order)
                          - sympy.harmonic(low - 1, *order, evaluate=False))


def branch_polynomial(config: VarianceConfig) -> list[sympy.Expr]:
    """G(t): a block's backward gain split by the branch Jacobians J on each term's way,
    the coefficient of t^L summing the gains of the terms through L of them, in q_{k-1}
    (``Q_PREV``) and c_{k-1} (``C_PREV``).

    >>> from derive.blocks.config import variance_config
    >>> branch_polynomial(variance_config(init="he", block="pre"))
    [1, 1/x]
    """
    terms = block_terms(config.block, 1)
    gains = term_gains(config.block, config, block_input(config))
    poly = [sympy.Integer(0)] * (max(term.branches for term in terms) + 1)
    for term, gain in zip(terms, gains, strict=True):
        poly[term.branches] += gain
    return [sympy.cancel(c) for c in poly]


def _symbols(polynomial: list[sympy.Expr], q0_value: sympy.Expr) -> list[str]:
    """The names of the symbols the shares would hold: the block's, besides q_{k-1} and
    c_{k-1}, or else q0's; none when both are numbers."""
    names = sorted(str(s) for c in polynomial for s in c.free_symbols
                   if s not in (Q_PREV, C_PREV))
    return names or ([] if q0_value.is_number else [str(q0_value)])


def _symbolic_shares(polys: list[list[sympy.Expr]]) -> list[Share]:
    """[t^L] prod G_k(t) / prod G_k(1) by SymPy's polynomials, each share factored."""
    product = sympy.Poly(1, t)
    for p in polys:
        product = product * sympy.Poly(sum(c * t**i for i, c in enumerate(p)), t)
    norm = sympy.factor(product.eval(1))
    coefficients = list(reversed(product.all_coeffs()))
    return [sympy.factor(c / norm) for c in coefficients]


def _multiply(a: list[Fraction], b: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                out[i + j] += x * y
    return out


def path_gradients(
    depth: int, wrt: WrtLike = "x", *, block: object = None, init: str = "xavier",
    activation: str = "relu", branch: str = "single", q0: object = 1,
    exact: bool | None = None, values: dict[str, object] | None = None,
    **parameters: Unpack[BlockNumbers],
) -> PathGradients:
    """Path counts and the share of E[(dL/dx)^2] (or of dy/df_wrt's) carried by each path
    length, for ``depth`` blocks of ``block`` under ``init``/``activation``/``branch`` and the
    variance options (``gamma``, ``dropout``, ...), with E[x^2] = ``q0``.

    >>> g = path_gradients(2, init="he", block="skipinit", values={"alpha": "1/2"})
    >>> [str(r.gradient_share) for r in g.rows]
    ['16/25', '8/25', '1/25']
    """
    analysis = one_point(variance(init, activation, branch=branch, block=block or "none",
                                  values=values, **parameters))
    return PathGradients(depth, wrt, analysis, positive(q0, "q0"), exact)

