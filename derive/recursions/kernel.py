"""Two inputs through depth: the two-point kernel forward and the gradients' backward.

Forward, the state of two inputs a and b per unit is (q_a, q_b, c), c = E[h_k(a) h_k(b)]
and rho_k = c / sqrt(q_a q_b); backward, (d_a, d_b, g), g = E[dL/dh_k(a) dL/dh_k(b)]
under gradient independence, for a loss that reads both outputs through the same
linear readout (so the gradients at the output are equal: d_a = d_b = g = 1 there) and
rho^grad_k = g / sqrt(d_a d_b). Each block maps the state by its primitives' two-point
rules (:meth:`derive.blocks.block.Block.kernel_forward` and ``kernel_gain``).

:func:`kernel` gives a :class:`KernelAnalysis`: the profiles in floats, the correlation
maps as SymPy expressions where the activation's kernel has a closed form, and the law
of each correlation through depth (:mod:`derive.recursions.correlation_laws`).

>>> a = kernel("he", "relu", block="F(x)", depth=2)
>>> [round(r, 6) for r in a.profile()["forward"]["rho"]]
[0.5, 0.608998, 0.683906]
>>> a.forward_map
Eq(rho(k), (sqrt(1 - rho(k - 1)**2) - (acos(rho(k - 1)) - pi)*rho(k - 1))/pi)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import sympy

from derive.blocks.config import VarianceConfig, variance_config
from derive.blocks.nodes import Kernel
from derive.blocks.primitives import Activation
from derive.derivation.printing import latex
from derive.derivation.symbols import k
from derive.errors import DeriveError
from derive.inputs.numbers import check_depth, exact, positive
from derive.recursions.block_maps import Q_IN, R_IN
from derive.recursions.correlation_laws import backward_law, forward_law, law_dict

#: The correlation of two inputs, rho_k, and of their gradients, rho^grad_k.
rho = sympy.Function("rho")
rho_grad = sympy.Function(r"rho^{grad}")
#: Activations whose two-point kernel has a closed form (the maps are exact).
CLOSED_FORM_KERNELS = frozenset({"linear", "relu", "leaky_relu", "erf"})
#: The deepest profile derive iterates.
MAX_KERNEL_DEPTH = 10_000


@dataclass(frozen=True)
class Backward:
    """The gradients' two-point state at one depth: d_a, d_b and their covariance g."""

    d_a: float
    d_b: float
    g: float

    @property
    def rho(self) -> float:
        """The gradients' correlation g / sqrt(d_a d_b)."""
        return self.g / (self.d_a * self.d_b) ** 0.5


@dataclass(frozen=True)
class KernelAnalysis:
    """The two-point kernel of a stack through depth, forward and backward.

    >>> a = kernel("he", "relu", depth=3)
    >>> [round(x, 4) for x in a.profile()["backward"]["rho"]]
    [0.5992, 0.7191, 0.8525, 1.0]
    """

    config: VarianceConfig
    q0: sympy.Expr
    rho0: sympy.Expr
    depth: int

    # --- profiles -----------------------------------------------------------------
    @cached_property
    def forward_states(self) -> tuple[Kernel, ...]:
        """The forward state at k = 0..K (k = 0: the inputs)."""
        return _forward_states(self.config, self.q0, self.rho0, self.depth)

    @cached_property
    def backward_states(self) -> tuple[Backward, ...]:
        """The gradients' state at k = 0..K, normalized to 1 at the output (k = K)."""
        states = self.forward_states
        out = [Backward(1.0, 1.0, 1.0)]
        for index in range(self.depth, 0, -1):
            gains = self.config.block.kernel_gain(self.config, states[index - 1])
            last = out[-1]
            out.append(Backward(*(float(v) for v in gains.apply(last.d_a, last.d_b, last.g))))
        return tuple(out[::-1])

    def profile(self) -> dict[str, dict[str, list[float]]]:
        """The profiles as floats over k = 0..K: ``forward`` (``q_a``, ``q_b``, ``c``,
        ``rho``) and ``backward`` (``d_a``, ``d_b``, ``g``, ``rho``).

        >>> kernel("he", "relu", "post", depth=1).profile()["forward"]["q_a"]
        [1.0, 1.0]
        """
        forward, backward = self.forward_states, self.backward_states
        return {
            "forward": {"q_a": [float(s.q_a) for s in forward],
                        "q_b": [float(s.q_b) for s in forward],
                        "c": [float(s.c) for s in forward],
                        "rho": [float(s.rho) for s in forward]},
            "backward": {"d_a": [s.d_a for s in backward], "d_b": [s.d_b for s in backward],
                         "g": [s.g for s in backward], "rho": [s.rho for s in backward]},
        }

    # --- the maps -------------------------------------------------------------------
    @cached_property
    def _symbolic(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None] | str:
        return _symbolic_maps(self.config)

    @property
    def map_reason(self) -> str | None:
        """Why the correlation maps are not written in closed form, or None."""
        return self._symbolic if isinstance(self._symbolic, str) else None

    @property
    def rho_floor(self) -> float:
        """The lowest correlation the state can hold: -1 for two inputs, -1/(n - 1) for two of
        n exchangeable tokens (their kernel c 11^T + (q - c) I is positive semi-definite only
        down to there; 0 as n -> infinity)."""
        return _rho_floor(self.config)

    @property
    def backward_map_reason(self) -> str | None:
        """Why the gradients' correlation map is not written, or None."""
        if self.map_reason is not None:
            return self.map_reason
        if self.grad_factor is None:
            return ("the block mixes the gradients of the two tokens (attention), so the "
                    "gradients' correlation is not one factor a block: it is iterated")
        return None

    def _map(self, index: int) -> sympy.Expr | None:
        if isinstance(self._symbolic, str):
            return None
        return self._symbolic[index]

    @property
    def q_map(self) -> sympy.Expr | None:
        """q_k as an expression in ``Q_IN`` (= q_{k-1}), or None."""
        return self._map(0)

    @property
    def rho_map(self) -> sympy.Expr | None:
        """rho_k as an expression in ``R_IN`` (= rho_{k-1}) and ``Q_IN`` (= q_{k-1})."""
        return self._map(1)

    @property
    def grad_factor(self) -> sympy.Expr | None:
        """rho^grad_{k-1} / rho^grad_k, an expression in ``R_IN`` and ``Q_IN``."""
        return self._map(2)

    @property
    def forward_map(self) -> sympy.Eq | None:
        """rho_k in rho_{k-1} (and q_{k-1} where it enters), or None."""
        if self.rho_map is None:
            return None
        return sympy.Eq(rho(k), _in_sequences(self.rho_map))

    @property
    def backward_map(self) -> sympy.Eq | None:
        """rho^grad_{k-1} in rho^grad_k and the forward state at k-1, or None."""
        if self.grad_factor is None:
            return None
        return sympy.Eq(rho_grad(k - 1), rho_grad(k) * _in_sequences(self.grad_factor),
                        evaluate=False)

    # --- laws -----------------------------------------------------------------------
    @cached_property
    def forward_law(self) -> object:
        """How rho_k approaches its limit (:class:`derive.recursions.correlation_laws.Law`)."""
        return forward_law(self)  # type: ignore[arg-type]

    @cached_property
    def backward_law(self) -> object:
        """How rho^grad_0 depends on the depth K."""
        return backward_law(self)  # type: ignore[arg-type]

    # --- display --------------------------------------------------------------------
    def _repr_latex_(self) -> str:
        """The maps, their laws and the values at the depth, for Jupyter.

        >>> tex = kernel("lecun", "linear", block="F(x)", depth=2)._repr_latex_()
        >>> tex.splitlines()[1]
        '\\\\rho_{k} = \\\\rho_{k - 1}\\\\quad \\\\rho_k = \\\\rho_0\\\\\\\\ '
        """
        lines = [rf"\text{{{_tex_text(self.config.label)}}}:\ \rho_0 = {latex(self.rho0)},\ "
                 rf"q_0 = {latex(self.q0)}"]
        if self.map_reason is not None:
            lines.append(rf"\text{{{_tex_text(self.map_reason)}}}")
        for eq, law in ((self.forward_map, self.forward_law),
                        (self.backward_map, self.backward_law)):
            shown = [] if eq is None else [latex(eq)]
            if law.kind != "none":  # type: ignore[attr-defined]
                shown.append(law.latex)  # type: ignore[attr-defined]
            if shown:
                lines.append(r"\quad ".join(shown))
        states, grads = self.forward_states, self.backward_states
        lines.append(rf"q_{{{self.depth}}} = {_tex_float(float(states[-1].q_a))},\ "
                     rf"\rho_{{{self.depth}}} = {_tex_float(float(states[-1].rho))},\ "
                     rf"\rho^{{grad}}_0 = {_tex_float(grads[0].rho)}")
        return "$\\begin{gathered}" + "\\\\ \n".join(lines) + r"\end{gathered}$"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: configuration, profiles over k = 0..K, maps and laws in LaTeX.

        >>> d = kernel("he", "relu", block="F(x)", depth=2).to_dict()
        >>> sorted(d["forward"]), len(d["backward"]["rho"])
        (['c', 'law', 'map', 'q_a', 'q_b', 'rho'], 3)
        """
        profile = self.profile()
        c = self.config
        forward_map, backward_map = self.forward_map, self.backward_map
        tokens = _token_fields(c, profile)
        out = {
            "config": {"label": c.label, "init": c.init, "activation": c.activation,
                       "branch": c.branch,
                       "block": {"name": c.block.name, "expression": c.block.text,
                                 "latex": latex(c.block.display()), "source": c.block.source},
                       "mlp_ratio": str(c.mlp_ratio), "dropout": str(c.dropout),
                       "gamma": str(c.gamma), "negative_slope": str(c.negative_slope),
                       "sigma_b2": str(c.sigma_b2),
                       "fan_in_variance": (None if c.fan_in_variance is None
                                           else str(c.fan_in_variance)),
                       "sigma_w2": None if c.sigma_w2 is None else str(c.sigma_w2)},
            "depth": self.depth, "q0": str(self.q0), "rho0": str(self.rho0),
            "forward": {**profile["forward"],
                        "map": None if forward_map is None else latex(forward_map),
                        "law": law_dict(self.forward_law)},
            "backward": {**profile["backward"],
                         "map": None if backward_map is None else latex(backward_map),
                         "law": law_dict(self.backward_law)},
            "map_reason": self.map_reason,
        }
        if tokens:
            out["config"].update(tokens["config"])  # type: ignore[attr-defined]
            out["forward"] = {"q": tokens["q"], **out["forward"]}  # type: ignore[dict-item]
        return out


def _token_fields(config: VarianceConfig, profile: dict) -> dict[str, object]:
    """For a block that mixes tokens: the token options, and q_k (each token's second
    moment, q_a = q_b); nothing for other blocks, whose JSON is as it was."""
    if not config.block.has_attention:
        return {}
    return {"config": {"tokens": str(config.tokens), "attention": config.attention,
                       "qk_variance": str(config.qk_variance),
                       "vo_variance": str(config.vo_variance)},
            "q": profile["forward"]["q_a"]}


def _tokens_floor(config: VarianceConfig) -> str:
    return "0" if config.tokens == sympy.oo else f"-1/{config.tokens - 1}"


def _rho_floor(config: VarianceConfig) -> float:
    tokens = config.tokens
    if not config.block.has_attention or tokens == 1 or not (tokens.is_number
                                                              or tokens == sympy.oo):
        return -1.0
    return 0.0 if tokens == sympy.oo else -1.0 / (float(tokens) - 1.0)


def _tex_text(text: str) -> str:
    """``text`` safe inside ``\\text{...}``: LaTeX's special characters escaped."""
    out = text.replace("\\", r"\textbackslash{}")
    for char in "_{}%&#$^~":
        out = out.replace(char, {"^": r"\^{}", "~": r"\~{}"}.get(char, "\\" + char))
    return out.replace(r"\textbackslash\{\}", r"\textbackslash{}")


def _tex_float(value: float) -> str:
    """A float in six significant digits, a power of ten written as LaTeX."""
    mantissa, _, power = f"{value:.6g}".partition("e")
    return mantissa if not power else rf"{mantissa} \times 10^{{{int(power)}}}"


def _in_sequences(expr: sympy.Expr) -> sympy.Expr:
    from derive.derivation.symbols import q

    return expr.xreplace({Q_IN: q(k - 1), R_IN: rho(k - 1)})


def _forward_states(config: VarianceConfig, q0: sympy.Expr, rho0: sympy.Expr,
                    depth: int) -> tuple[Kernel, ...]:
    q_start = float(q0)
    batch = 0.0 if config.block.has_batchnorm else None
    states = [Kernel(q_start, q_start, float(rho0) * q_start, batch)]
    for _ in range(depth):
        states.append(config.block.kernel_forward(config, states[-1]))
    return tuple(states)


@lru_cache(maxsize=256)
def _symbolic_maps(config: VarianceConfig
                   ) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None] | str:
    """(q map, rho map, gradient-correlation factor) in Q_IN and R_IN, or why not; the
    factor is None where the block mixes the gradients of its two inputs (attention), so
    that rho^grad_{k-1} is not rho^grad_k times a factor."""
    used = {node.name or config.activation for node in config.block.expanded(config).walk()
            if isinstance(node, Activation)}
    numeric = sorted(used - CLOSED_FORM_KERNELS)
    if numeric:
        return (f"{', '.join(numeric)} has no closed-form two-point kernel: the maps are "
                "evaluated numerically")
    if config.block.has_batchnorm:
        return ("BatchNorm's two-point state also carries what an input shares with the "
                "rest of its batch: the maps are evaluated numerically")
    if config.block.has_attention and config.attention == "standard":
        return ("standard softmax attention averages over random logits, an expectation "
                "without a closed form: the maps are evaluated numerically")
    state = Kernel(Q_IN, Q_IN, R_IN * Q_IN)
    out = config.block.kernel_forward(config, state)
    gains = config.block.kernel_gain(config, state)
    q_next = sympy.simplify(out.q_a)
    rho_next = sympy.simplify(out.c / q_next)
    factor = gains.correlation_factor
    return q_next, rho_next, None if factor is None else sympy.simplify(factor)


def kernel(init: str = "xavier", activation: str = "relu", norm: str = "none",
           branch: str = "single", *, block: object = None,
           values: dict[str, object] | None = None, q0: object = 1, rho0: object = "1/2",
           depth: int = 10, **options: object) -> KernelAnalysis:
    """The two-point kernel of a stack of ``depth`` blocks for two inputs of second
    moment ``q0`` and correlation ``rho0``, forward and backward. ``options`` are those
    of :func:`derive.variance` (``mlp_ratio``, ``dropout``, ``gamma``, ``sigma_w2``,
    ``fan_in_variance``, ``sigma_b2``, ``negative_slope``).

    >>> a = kernel("he", "relu", "pre", depth=50)
    >>> round(a.profile()["forward"]["rho"][-1], 4)
    0.7418
    """
    from derive.blocks.block import block as make_block

    chosen = make_block(norm if block is None else block)
    if values:
        chosen = chosen.substituted({name: exact(v, name) for name, v in values.items()})
    config = variance_config(init=init, activation=activation, branch=branch, block=chosen,
                             **options)  # type: ignore[arg-type]
    if chosen.symbols:
        names = ", ".join(s.name for s in chosen.symbols)
        raise DeriveError(f"the block {chosen.text} has symbols without values ({names}): a "
                          "kernel profile needs numbers; give them with --set (API: values=)")
    config.block.expanded(config)  # the block's own checks, before any profile
    if config.block.has_attention and not (config.tokens.is_number
                                           or config.tokens == sympy.oo):
        raise DeriveError(f"--tokens {config.tokens} is a symbol: a kernel profile needs a "
                          "whole number of tokens (API: tokens=16)")
    depth = check_depth(depth, minimum=0)
    if depth > MAX_KERNEL_DEPTH:
        raise DeriveError(f"--depth must be at most {MAX_KERNEL_DEPTH} for a kernel profile, "
                          f"got {depth}")
    q_start = positive(q0, "q0")
    if not q_start.is_number:
        raise DeriveError(f"q0 must be a number > 0 for a kernel profile, got {q_start}")
    correlation = exact(rho0, "rho0", symbol=False)
    if not (-1 <= correlation <= 1):
        raise DeriveError(f"rho0 must be in [-1, 1], got {correlation}")
    floor = _rho_floor(config)
    if correlation < floor:
        raise DeriveError(f"rho0 must be at least {_tokens_floor(config)} for {config.tokens} "
                          "exchangeable tokens (their kernel c 11^T + (q - c) I is positive "
                          f"semi-definite only from rho = -1/(n - 1)), got {correlation}")
    return KernelAnalysis(config, q_start, correlation, depth)
