"""Parameter gradients through depth: the second moment per entry of dL/dW for the last
weight matrix W of block k, the quantity an optimizer sees.

For one input, dL/dW_ij = g_i a_j with g the gradient at W's output and a its input.
Under gradient independence E[(dL/dW_ij)^2] = E[g^2] E[a^2], where

- E[g^2] = d_k P_k: d_k at the block's output, times P_k, the gain from the block's
  output down to W's output (the block's own fold of its primitives' gains);
- E[a^2] = A_k, W's input moment (the forward fold at q_{k-1});
- d_k = d_K (d_k / d_K), with d_K = 1 for L = <g, h_K>, or gamma^2 / q_K when a final
  LayerNorm follows the last block (L = <g, LN(h_K)>).

So w_k = d_K (d_0/d_K) / (d_0/d_k) P_k A_k, from the closed forms where they exist.

>>> import derive
>>> w = derive.variance("he", "relu", "pre", final_norm=True).weights
>>> w.profile(3)
[1/4, 1/6, 1/8]
>>> w.last.rhs
1/(2*K + 2*q_0)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sympy

from derive.blocks.config import VarianceConfig
from derive.derivation.symbols import K, d, k, q
from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError
from derive.recursions import closed_forms
from derive.recursions import growth as laws
from derive.recursions.block_maps import C_PREV, Q_PREV, block_input
from derive.recursions.recursion import BackwardRecursion, CrossRecursion, ForwardRecursion

#: w_k, the second moment per entry of dL/dW of block k's last weight matrix.
w = sympy.Function("w")
#: The profile lists w_k for every block k = 1..K up to this depth.
MAX_LISTED = 1000


@dataclass(frozen=True, eq=False)
class WeightGradients:
    """E[(dL/dW)^2] per entry of each block's last weight matrix (see the module), from
    the recursions of one configuration."""

    config: VarianceConfig
    forward: ForwardRecursion
    backward: BackwardRecursion
    cross: CrossRecursion | None = None
    final_norm: bool = False

    @cached_property
    def _parts(self) -> tuple[sympy.Expr, sympy.Expr, str]:
        """(P_k, A_k) in the placeholders q_{k-1}, c_{k-1}, and the matrix's name."""
        config = self.config
        block = config.block
        target = block.last_weight(config)
        if target is None:
            raise DeriveError(f"the block {block.text} has no weight matrix: write F(.) or W(.)")
        x = block_input(config)
        inner = block.moments(config, x)[target.child]
        return block.gain_to(config, x, target), inner.q, target.text()

    @property
    def final(self) -> sympy.Expr:
        """d_K: 1, or gamma^2 / q_K behind a final LayerNorm (in the depth K)."""
        if not self.final_norm:
            return sympy.Integer(1)
        forward = self.forward.closed_form
        q_k = q(K) if forward is None else _general(forward.rhs)
        return self.config.gamma**2 / q_k

    @property
    def factor(self) -> sympy.Expr:
        """P_k A_k: what block k's own structure contributes, in q_{k-1} (and c_{k-1})."""
        gain, moment, _ = self._parts
        return gain * moment

    @cached_property
    def closed_form(self) -> sympy.Eq | None:
        """w(k) = ... in k and the depth K, where q_k and d_0/d_k have closed forms (for
        k >= 2 where post-normalization makes q_0 special)."""
        forward, backward = self.forward.closed_form, self.backward.closed_form
        cross = None if self.cross is None else self.cross.closed_form
        if forward is None or backward is None or (self.cross is not None and cross is None):
            return None
        ratio = _general(backward.rhs)
        at = {Q_PREV: _general(forward.rhs).xreplace({K: k - 1})}
        if cross is not None:
            at[C_PREV] = _general(cross.rhs).xreplace({K: k - 1})
        body = self.final * ratio / ratio.xreplace({K: k}) * self.factor.xreplace(at)
        masked, back = closed_forms.mask(body)
        return sympy.Eq(w(k), closed_forms.tidy(masked).xreplace(back), evaluate=False)

    @property
    def last(self) -> sympy.Eq | None:
        """w_K, the last block's, as a function of the depth K (Xiong et al. 2020)."""
        closed = self.closed_form
        if closed is None:
            return None
        masked, back = closed_forms.mask(closed.rhs.xreplace({k: K}))
        return sympy.Eq(w(K), _cancel_gammas(masked).xreplace(back), evaluate=False)

    @cached_property
    def growth(self) -> str:
        """How the last block's w_K grows with the depth K."""
        last = self.last
        return "no closed form" if last is None else laws.growth(last.rhs)

    def profile(self, depth: int, q0: object = 1) -> list[sympy.Expr]:
        """w_k for k = 1..depth: exact where the closed forms are, else floats.

        >>> import derive
        >>> derive.variance("he", "relu", "post").weights.profile(3)
        [1/4, 1/4, 1/4]
        """
        if isinstance(depth, int) and depth > MAX_LISTED:
            raise DeriveError(f"the weight gradients are listed for every block k = 1..K, up "
                              f"to depth {MAX_LISTED}, got depth {depth}")
        qs = self.forward.profile(depth, q0)
        ratios = self.backward.profile(depth, q0)  # d_k / d_K
        cs = self.cross.profile(depth, q0) if self.cross is not None else [0] * (depth + 1)
        final = (self.config.gamma**2 / qs[-1]) if self.final_norm else sympy.Integer(1)
        out = []
        for j in range(1, depth + 1):
            part = self.factor.xreplace({Q_PREV: qs[j - 1], C_PREV: cs[j - 1]})
            out.append(closed_forms.exact_value(final * ratios[j] * part))
        return out

    def to_dict(self, depth: int, q0: object = 1) -> dict[str, object]:
        """JSON-ready: the closed form, the last block's, its growth, the profile k = 1..K."""
        from derive.derivation.printing import latex

        profile = self.profile(depth, q0)
        return {
            "final_norm": self.final_norm,
            "matrix": self._parts[2],
            "closed_form": None if self.closed_form is None else latex(self.closed_form),
            "last": None if self.last is None else latex(self.last),
            "growth": self.growth,
            "profile": [str(v) for v in profile],
            "profile_float": [float(v) for v in profile]
            if all(v.is_number for v in profile) else None,
        }

    @cached_property
    def derivation(self) -> Derivation:
        """The written derivation of w_k."""
        gain, moment, name = self._parts
        g2, a2 = sympy.Symbol("E[g^2]"), sympy.Symbol("E[a^2]")
        shown = {Q_PREV: q(k - 1), C_PREV: sympy.Function("c")(k - 1)}
        steps = [
            Step(w(k), g2 * a2, f"$\\partial L/\\partial W_{{ij}} = g_i a_j$ for the last "
                 f"matrix ${name}$ of block $k$, with $g$ the gradient at its output and $a$ "
                 "its input; gradient independence makes $g$ and $a$ independent"),
            Step(g2, d(k) * gain.xreplace(shown), "the gradient at the block's output times "
                 "the gain from the output down to the matrix (the block's primitives)"),
            Step(a2, moment.xreplace(shown), "the forward moment of the matrix's input"),
            Step(d(k), sympy.Symbol("d_K") * d(0) / d(K) / (d(0) / d(k)),
                 "the backward recursion from the last block down to block $k$"),
            Step(sympy.Symbol("d_K"), self.final,
                 "behind a final LayerNorm the gradient at $h_K$ is scaled by "
                 "$\\gamma^2/q_K$" if self.final_norm else "$L = \\langle g, h_K\\rangle$ "
                 "with $g \\sim N(0, 1)$"),
        ]
        closed, result = self.closed_form, None
        if closed is not None:
            result = Step(closed.lhs, closed.rhs, "the closed forms of $q_k$ and $d_0/d_k$ "
                          "substituted")
            steps.append(result)
            if self.last is not None:
                steps.append(Step(self.last.lhs, self.last.rhs,
                                  f"the last block, $k = K$: {self.growth}"))
        c = self.config
        title = (f"Weight gradients $E[(\\partial L/\\partial W)^2]$ per block: {c.label}"
                 + (", final LayerNorm" if self.final_norm else ""))
        key = f"weights/{c.init}/{c.activation}/{c.branch}"
        return Derivation(title, key, (), tuple(steps), result)


def _cancel_gammas(expr: sympy.Expr) -> sympy.Expr:
    """Write each gamma's argument as c K + one fraction, so that equal gammas cancel."""
    if not expr.has(sympy.gamma):
        return closed_forms.tidy(expr)
    canonical = expr.replace(
        lambda e: isinstance(e, sympy.gamma),
        lambda e: sympy.gamma(_split(sympy.expand(e.args[0]))))
    return closed_forms.tidy(canonical) if canonical.has(sympy.gamma) else sympy.simplify(
        canonical)


def _split(arg: sympy.Expr) -> sympy.Expr:
    slope = sympy.simplify(arg.coeff(K))
    return slope * K + sympy.simplify(arg - arg.coeff(K) * K)


def _general(expr: sympy.Expr) -> sympy.Expr:
    """A closed form's branch for K >= 1 (post-normalization's Piecewise keeps q_0 at K = 0)."""
    return expr.args[-1].expr if isinstance(expr, sympy.Piecewise) else expr

