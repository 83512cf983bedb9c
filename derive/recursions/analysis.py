"""The variance analysis of a residual stack: forward q_k = E[h_k^2], backward d_k.

The block's maps are folded from its primitives (:mod:`derive.recursions.block_maps`)
and become the recursions of :mod:`derive.recursions.recursion`, which solve them:
closed forms come from :mod:`derive.recursions.closed_forms` (the unrolled sum and
``product``), and where none exists the map is iterated numerically.

>>> import derive
>>> derive.variance("he", "relu").forward.at(4)
16
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TypedDict, Unpack

import sympy

from derive.blocks.config import VarianceConfig, variance_config
from derive.derivation.printing import latex
from derive.errors import DeriveError
from derive.inputs.choices import NORMS
from derive.inputs.numbers import check_depth, exact, positive
from derive.recursions import closed_forms
from derive.recursions.block_maps import block_maps
from derive.recursions.recursion import (
    BackwardRecursion,
    CrossRecursion,
    ForwardRecursion,
    Recursion,
)
from derive.recursions.token_moments import TokenVarianceAnalysis, token_variance
from derive.recursions.weight_gradients import WeightGradients


@dataclass(frozen=True, eq=False)
class VarianceAnalysis:
    """Forward and backward recursions of one configuration.

    >>> a = variance("he", "relu", "pre")
    >>> a.forward.closed_form.rhs, a.backward.closed_form.rhs
    (K + q_0, (K + q_0)/q_0)
    """

    config: VarianceConfig
    forward: ForwardRecursion
    backward: BackwardRecursion
    #: c_k, the covariance of two independent inputs per unit, where a BatchNorm needs it.
    cross: CrossRecursion | None = None
    #: Whether a final LayerNorm follows the last block (for the weight gradients).
    final_norm: bool = False

    @cached_property
    def weights(self) -> WeightGradients:
        """E[(dL/dW)^2] per entry of each block's last weight matrix, k = 1..K."""
        return WeightGradients(self.config, self.forward, self.backward, self.cross,
                               self.final_norm)

    @property
    def symbols(self) -> dict[str, sympy.Symbol]:
        """The symbols of its formulas by name (K, k, q_0 and the block's own).

        >>> sorted(variance("he", block="skipinit").symbols)
        ['K', 'alpha', 'k', 'q_0']
        """
        return self.forward.symbols

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
                "init": c.init, "activation": c.activation,
                "norm": c.block.name if c.block.name in NORMS else c.block.text,
                "branch": c.branch,
                "block": {"name": c.block.name, "expression": c.block.text,
                          "latex": latex(c.block.display()), "source": c.block.source},
                "mlp_ratio": str(c.mlp_ratio), "dropout": str(c.dropout), "gamma": str(c.gamma),
                "sigma_w2": None if c.sigma_w2 is None else str(c.sigma_w2),
                "negative_slope": str(c.negative_slope),
                **_field_convention(c),
            },
            "depth": check_depth(depth, minimum=0),
            "q0": str(exact(q0, "q0")),
            "forward": self.forward.to_dict(depth, q0),
            "backward": self.backward.to_dict(depth, q0),
        }


def _field_convention(c: VarianceConfig) -> dict[str, str]:
    """The bias variance and the fan-in weight variance, where they are set."""
    out = {}
    if c.sigma_b2 != 0:
        out["sigma_b2"] = str(c.sigma_b2)
    if c.fan_in_variance is not None:
        out["fan_in_variance"] = str(c.fan_in_variance)
    return out


@lru_cache(maxsize=1024)
def _analysis(config: VarianceConfig) -> VarianceAnalysis:
    forward_step, backward_step, cross_step = block_maps(config)
    forward = ForwardRecursion(config, forward_step)
    cross = None if cross_step is None else CrossRecursion(config, cross_step, forward)
    backward = BackwardRecursion(config, backward_step, forward, cross)
    return VarianceAnalysis(config, forward, backward, cross)


def one_point(analysis: VarianceAnalysis | TokenVarianceAnalysis) -> VarianceAnalysis:
    """The analysis of a block without attention, whose one input's second moment
    :func:`variance` follows; a block that mixes tokens is refused.

    >>> one_point(variance("he")).config.label
    'he/relu/none/single'
    """
    if not isinstance(analysis, VarianceAnalysis):
        raise DeriveError(f"the block {analysis.config.block.text} mixes the tokens of a "
                          "sequence: its second moments follow the token kernel "
                          "(derive kernel, derive variance)")
    return analysis


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
    sigma_b2: object = 0,
    fan_in_variance: object = None,
    block: object = None,
    values: dict[str, object] | None = None,
    final_norm: bool = False,
    tokens: object = 16,
    attention: object = "standard",
    qk_variance: object = 1,
    vo_variance: object = 1,
    q0: object = None,
    rho0: object = None,
) -> VarianceAnalysis | TokenVarianceAnalysis:
    """Forward and backward variance recursions of a residual stack at initialization.

    The block is ``norm`` (``none``, ``pre`` or ``post``) unless ``block`` is given: a
    preset name, an expression in the block language, or a Block. ``values`` gives
    some of the block's symbols numbers; the others stay symbolic. ``final_norm``: a
    LayerNorm follows the last block (it scales the gradients, see ``.weights``).

    A block with ``Attn`` mixes the tokens of a sequence: its analysis is the token
    kernel's (:class:`derive.recursions.token_moments.TokenVarianceAnalysis`), from the
    tokens' second moment ``q0`` (default 1) and correlation ``rho0`` (default 1/2),
    which apply to such blocks only.

    >>> a = variance("he", "relu")
    >>> a.forward.recurrence
    Eq(q(k), 2*q(k - 1))
    >>> a.backward.closed_form
    Eq(d(0)/d(K), 2**K)
    >>> variance("he", block="x + alpha*F(x)").forward.closed_form
    Eq(q(K), q_0*(alpha**2 + 1)**K)
    """
    from derive.blocks.block import block as make_block

    chosen = make_block(norm if block is None else block)
    if values:
        chosen = chosen.substituted({name: exact(v, name) for name, v in values.items()})
    config = variance_config(
        init=init, activation=activation, branch=branch, mlp_ratio=mlp_ratio,
        dropout=dropout, gamma=gamma, sigma_w2=sigma_w2, negative_slope=negative_slope,
        sigma_b2=sigma_b2, fan_in_variance=fan_in_variance, block=chosen, tokens=tokens,
        attention=attention, qk_variance=qk_variance, vo_variance=vo_variance,
    )
    if not isinstance(final_norm, bool):
        raise DeriveError(f"final_norm must be True or False, got {final_norm!r}")
    if chosen.has_attention:
        return token_variance(config, 1 if q0 is None else q0,
                              "1/2" if rho0 is None else rho0, final_norm)
    if q0 is not None or rho0 is not None:
        raise DeriveError(f"q0 and rho0 set the token kernel of a block with Attn; {chosen.text} "
                          "has none (give q0 to .at(depth, q0))")
    analysis = _analysis(config)
    return dataclasses.replace(analysis, final_norm=True) if final_norm else analysis


class BlockOptions(TypedDict, total=False):
    """The keyword options of :func:`variance` that :func:`compare` passes on to it (a
    final LayerNorm changes only the weight gradients, which its rows do not hold)."""

    mlp_ratio: object
    dropout: object
    gamma: object
    sigma_w2: object
    negative_slope: object
    sigma_b2: object
    fan_in_variance: object
    tokens: object
    attention: object
    qk_variance: object
    vo_variance: object
    values: dict[str, object] | None


def compare(
    init: str = "xavier",
    activation: str = "relu",
    branch: str = "single",
    *,
    depth: int = 10,
    q0: object = 1,
    blocks: Sequence[object] = NORMS,
    **options: Unpack[BlockOptions],
) -> list[dict[str, object]]:
    """One row per block and direction: formulas, growth, value at ``depth``.

    ``blocks``: preset names, expressions or Blocks (default: the three norm placements).

    >>> [(r["norm"], r["direction"], r["value"]) for r in compare("he", "relu", depth=3)][:3]
    [('none', 'forward', 8), ('none', 'backward', 8), ('pre', 'forward', 4)]
    """
    depth = check_depth(depth, minimum=0)
    q0_value = positive(q0, "q0")
    rows = []
    for spec in blocks:
        analysis = variance(init, activation, branch=branch, block=spec, **options)
        if isinstance(analysis, TokenVarianceAnalysis):
            raise DeriveError(f"--compare lists one-point recursions; {analysis.config.block.text}"
                              " has Attn, whose token kernel derive variance --block shows "
                              "alone")
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
    for symbol in recursion.unknowns:
        flag = "--set" if symbol in config.block.symbols else options.get(symbol, "--set")
        flags.setdefault(flag, []).append(symbol.name)
    if not q0_value.is_number:
        flags.setdefault("--q0", []).append("q0")
    wanted = " and ".join(f"{', '.join(names)} ({flag})" for flag, names in flags.items())
    return f"needs a value for {wanted}"


