"""``Attn(v)``: softmax self-attention over the n tokens of a sequence, and ``MLP(v)``, the
transformer's two-matrix branch. Each carries its rules beside its NumPy op.

The state of a sequence at initialization is the token kernel: every token's second
moment q per unit and the covariance c of two of its tokens (tokens are exchangeable),
the two-point :class:`derive.blocks.nodes.Kernel` with q_a = q_b = q. Per-token primitives
map it by their two-point rules; attention is the primitive that mixes tokens.

The mean-field model of ``Attn`` (width D -> infinity, ``h`` heads of D/h units):

- logits s_ij = q_i . k_j / sqrt(d_head) form a Gaussian field with covariance
  sigma_Q^2 sigma_K^2 K_ia K_jb (a sum of d_head independent products, by the central limit
  theorem; it does not shrink with the width). Within a row the part every key shares is a
  shift that softmax ignores, so a row is n independent N(0, v) logits with
  v = (sigma_Q^2 q + sigma_b^2) sigma_K^2 (q - c), and two rows are correlated key by key
  with r = (sigma_Q^2 c + sigma_b^2) / (sigma_Q^2 q + sigma_b^2);
- the values are independent of the logits (W_V, W_O are independent of W_Q, W_K), so
  E[o_i . o_a] = sum_jb E[P_ij P_ab] K_jb = c + (q - c) E[sum_j P_ij P_aj]: the output
  kernel needs two expectations of softmax over the logits' law,
  S = E[sum_j P_1j^2] and X = E[sum_j P_1j P_2j] (:mod:`derive.gaussian.softmax`);
- ``--attention uniform``: queries and keys start at zero, P = 1/n exactly (as Noci et al.
  2022 assume); ``--attention tied``: W_Q = W_K with 1/d_head scaling, whose logits tend to
  sqrt(sigma_Q^2 sigma_K^2) K_ij (neural-tangents' infinite-width attention; Hron et al.
  2020): both give closed forms.

>>> from derive.blocks.nodes import Input
>>> Attention(0, Input()).text(), Mlp(0, Input()).text()
('Attn(x)', 'MLP(x)')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from derive.blocks.nodes import FactorNames, Kernel, KernelGains, Moments, Node, number_like
from derive.blocks.primitives import Activation, Branch, Dropout, Weight
from derive.errors import DeriveError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from derive.blocks.branch import BranchConfig


def _printable(name: str) -> type[sympy.Function]:
    """``name(v)`` as SymPy prints it: ``Attn(v)``, and in LaTeX ``\\operatorname{Attn}(v)``."""

    def _latex(self: sympy.Function, printer: Any, exp: object = None) -> str:
        out = rf"\operatorname{{{name}}}\left({printer._print(self.args[0])}\right)"
        return f"{out}^{{{exp}}}" if exp is not None else out

    def _sympystr(self: sympy.Function, printer: Any) -> str:
        return f"{name}({printer._print(self.args[0])})"

    return type(name, (sympy.Function,), {"_latex": _latex, "_sympystr": _sympystr})


_Attn, _MLP = _printable("Attn"), _printable("MLP")


@dataclass(frozen=True)
class Overlap:
    """The softmax expectations one attention layer needs, at one token kernel:
    ``same`` = E[sum_j P_1j^2] and ``others`` = (n - 1) E[sum_j P_1j P_2j] (two queries;
    what every other token's gradient brings a token's), and for the gradient through the
    logits ``same_logit`` and ``others_logit`` (zero where the logits carry no gradient:
    uniform and tied attention); ``per_other`` = 1/(n - 1). Each has its limit as
    n -> infinity: ``same`` and ``per_other`` vanish, ``others`` does not."""

    same: Any
    others: Any
    per_other: Any
    same_logit: Any = 0
    others_logit: Any = 0

    @property
    def cross(self) -> Any:
        """E[sum_j P_1j P_2j] = others / (n - 1)."""
        return self.others * self.per_other


def _one_point(node: Node) -> DeriveError:
    return DeriveError(
        f"{node.text()} mixes the tokens of a sequence: its output's second moment depends on "
        "the covariance of the tokens, which a one-point recursion does not carry; derive "
        "kernel --tokens N follows both (q and the token correlation rho through depth)")


@dataclass(frozen=True)
class Attention(Node):
    """``Attn(v)``: one layer of multi-head softmax self-attention with W_Q, W_K, W_V and W_O
    (Var W = sigma^2 / fan_in; ``--qk-variance``, ``--vo-variance``), over ``--tokens`` n
    tokens, started as ``--attention`` says.

    >>> from derive.blocks.nodes import Input
    >>> from derive.blocks.branch import BranchConfig
    >>> out = Attention(0, Input()).kernel([Kernel(1.0, 1.0, 0.5)],
    ...                                    BranchConfig(attention="uniform", tokens=4), None)
    >>> out.q_a, out.c  # every token becomes the mean token: q = c = 1/2 + (1 - 1/2)/4
    (0.625, 0.625)
    """

    key: int
    child: Node
    children: tuple[Node, ...] = field(init=False, repr=False, compare=False)
    #: A sublayer's branch: a path through it counts in the path sum's lengths.
    branch_like: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", (self.child,))

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Attention(self.key, children[0])

    def matrices(self) -> tuple[tuple, ...]:
        """The keys of W_Q, W_K, W_V and W_O."""
        return tuple(("A", self.key, m) for m in ("q", "k", "v", "o"))

    def weights(self) -> frozenset[tuple]:
        return self.child.weights() | set(self.matrices())

    def odd_in(self) -> frozenset[tuple]:
        return frozenset({("A", self.key, "o")})

    def centred(self) -> bool:
        return True  # W_O's output: zero-mean weights

    def text(self) -> str:
        return f"Attn({self.child.text()})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return _Attn(self.child.display(arg))

    # --- the mean-field rules ----------------------------------------------------
    def overlap(self, state: Kernel, config: BranchConfig) -> Overlap:
        """The softmax expectations at the input's token kernel ``state``."""
        from derive.gaussian import softmax

        n, q, c = config.tokens, state.q_a, state.c
        floats = isinstance(q, float)
        zero, one = number_like(sympy.Integer(0), q), number_like(sympy.Integer(1), q)
        if n == 1:  # no second token: the other input is another sequence's token
            return Overlap(one, zero, zero)
        s_q = number_like(config.qk_variance, q)
        if n == sympy.oo:
            return self._limit(state, config, zero, one)
        tokens = number_like(n, q) if floats else n
        per_other = one / (tokens - 1)
        if config.attention in ("uniform", "tied"):
            same, cross = (softmax.uniform_overlaps(tokens) if config.attention == "uniform"
                           else softmax.tied_overlaps(tokens, s_q * (q - c)))
            return Overlap(same, (tokens - 1) * cross, per_other)
        if not floats:
            raise DeriveError("standard softmax attention's expectations have no closed form: "
                              "its maps are evaluated numerically")
        v, r = self._logits(state, config)
        found = softmax.gaussian_overlaps(int(n), v, r)
        return Overlap(found.same, (tokens - 1) * found.cross, per_other, found.same_logit,
                       (tokens - 1) * found.cross_logit)

    def _logits(self, state: Kernel, config: BranchConfig) -> tuple[float, float]:
        """The logits' law: the variance v of a row (its shift removed) and the correlation r
        of two rows, key by key; v is refused past what the expectations are computed for."""
        from derive.gaussian.softmax import MAX_LOGIT_VARIANCE

        q, c = state.q_a, state.c
        s_q, b2 = float(config.qk_variance), float(config.sigma_b2)
        queries = s_q * q + b2
        r = (s_q * c + b2) / queries
        v = max(queries * s_q * (q - c), 0.0)
        if v > MAX_LOGIT_VARIANCE:
            raise DeriveError(
                f"{self.text()}: the logits' variance (sigma_Q^2 q + sigma_b^2) sigma_K^2 (q - c) "
                f"reaches {v:.4g} (q = {q:.4g}, c = {c:.4g}), past {MAX_LOGIT_VARIANCE:g}, where "
                "the softmax expectations are computed: normalize attention's input (such as "
                "x + Attn(LN(x))), or lower --depth or --qk-variance")
        return v, min(1.0, max(-1.0, r))

    def _limit(self, state: Kernel, config: BranchConfig, zero: Any, one: Any) -> Overlap:
        """As n -> infinity: every weight is of order 1/n, so S and X vanish, and (n - 1) X
        tends to 1 (uniform, tied) or to E[e^(u+w)] / E[e^u]^2 = e^(r v) (standard, the
        logits u, w of two rows at one key; law of large numbers in the softmax's sums)."""
        if config.attention != "standard":
            return Overlap(zero, one, zero)
        if isinstance(state.q_a, float):
            import math

            v, r = self._logits(state, config)
            others = math.exp(r * v)
        else:
            s_q, b2 = config.qk_variance, config.sigma_b2  # r v = (s_Q c + b2) s_K (q - c)
            others = sympy.exp((s_q * state.c + b2) * s_q * (state.q_a - state.c))
        return Overlap(zero, others, zero, zero, others)

    def _exchangeable(self, state: Kernel) -> None:
        if isinstance(state.q_a, float) and abs(state.q_a - state.q_b) > 1e-12 * state.q_a:
            raise DeriveError(f"{self.text()}: attention's rules hold for the exchangeable "
                              "tokens of one sequence, with one second moment q; the two "
                              f"inputs have {state.q_a:.6g} and {state.q_b:.6g}")

    def kernel(self, inputs: Sequence[Kernel], config: BranchConfig, x: Kernel) -> Kernel:
        (state,) = inputs
        self._exchangeable(state)
        q, c = state.q_a, state.c
        s_v = number_like(config.vo_variance, q)
        b2 = number_like(config.sigma_b2, q)
        found = self.overlap(state, config)
        value_q, value_c = s_v * q + b2, s_v * c + b2
        out_q = value_c + (value_q - value_c) * found.same  # type: ignore[operator]
        out_c = value_c + (value_q - value_c) * found.cross  # type: ignore[operator]
        out_m = None if state.m is None else s_v * state.m + b2
        return Kernel(s_v * out_q + b2, s_v * out_q + b2, s_v * out_c + b2,
                      None if out_m is None else s_v * out_m + b2)

    def kernel_gains(self, inputs: Sequence[Kernel], config: BranchConfig,
                     x: Kernel) -> tuple[KernelGains, ...]:
        (state,) = inputs
        self._exchangeable(state)
        q, c = state.q_a, state.c
        one = number_like(sympy.Integer(1), q)
        s_v = number_like(config.vo_variance, q)
        s2 = s_v * s_v
        if config.tokens == 1:
            return (KernelGains.uniform(s2),)
        found = self.overlap(state, config)
        # the value path: dL/dv_j = sum_i P_ij dL/do_i
        d_d = s2 * found.same
        d_g = s2 * found.others
        g_d = s2 * (one - found.same) * found.per_other
        g_g = s2 * (one - found.cross)
        if config.attention == "standard":
            s_q = number_like(config.qk_variance, q)
            b2 = number_like(config.sigma_b2, q)
            spread = q - c
            logit = s_q * s2 * spread  # sigma_K^2 sigma_O^2 sigma_V^2 (q - c)
            cross_logit = found.others_logit * found.per_other
            # the query path: dL/dq_i = sum_j dL/ds_ij k_j / sqrt(d_head)
            d_d += logit * s_q * spread * found.same_logit
            g_g += logit * s_q * spread * cross_logit
            # the key path: dL/dk_j = sum_i dL/ds_ij q_i / sqrt(d_head)
            queries, shared = s_q * q + b2, s_q * c + b2
            d_d += logit * queries * found.same_logit
            d_g += logit * shared * found.others_logit
            g_d -= logit * queries * found.same_logit * found.per_other
            g_g -= logit * shared * cross_logit
        half = g_d / 2
        return (KernelGains.mixing(((d_d, 0 * d_d, d_g), (0 * d_d, d_d, d_g),
                                    (half, half, g_g))),)

    def moments(self, inputs: Sequence[Moments], config: BranchConfig, x: Moments) -> Moments:
        raise _one_point(self)

    def gains(self, inputs: Sequence[Moments], config: BranchConfig,
              x: Moments) -> tuple[sympy.Expr, ...]:
        raise _one_point(self)

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "A") * inputs[0]  # A_k, attention's Jacobian

    def reason(self, config: BranchConfig) -> str:
        mode = {
            "uniform": "queries and keys start at zero, so every weight is $1/n$",
            "tied": ("tied queries and keys with $1/d$ scaling give deterministic logits "
                     r"$\sigma_Q \sigma_K K_{ij}$"),
            "standard": ("the logits are a Gaussian field whose law follows from the token "
                         "kernel, and the expectation over it is computed numerically"),
        }[config.attention]
        return ("each output token is a softmax-weighted mean of the value vectors, so "
                r"$q' = c + (q - c)\,E[\sum_j P_{1j}^2]$ and "
                r"$c' = c + (q - c)\,E[\sum_j P_{1j} P_{2j}]$ (times $\sigma_V^2 \sigma_O^2$): "
                + mode)

    def backward_reason(self, config: BranchConfig) -> str:
        logits = ("" if config.attention != "standard" else
                  "; through the logits, the queries and keys carry a part that the "
                  "softmax's derivative weights")
        return ("the gradient of each value is the attention-weighted sum of the output "
                "tokens' gradients, so each token's gradient mixes the others' (gradient "
                "independence)" + logits)

    # --- the finite-width op -----------------------------------------------------
    def forward_np(self, values: list[np.ndarray], net: Any) -> tuple[np.ndarray, Any]:
        """Attention over the network's batch axis, which holds the tokens of one sequence
        (``net.heads`` heads, one when the network does not say)."""
        from derive.blocks.attention_ops import attention_forward
        from derive.blocks.primitives import n

        config, one = net.config, sympy.Integer(1)

        def matrix(name: str, variance: sympy.Expr) -> np.ndarray:
            normals, sigma = net.weight(("A", self.key, name), one, one, variance / n)
            return normals * sigma

        w_q = w_k = None
        if config.attention != "uniform":
            w_q = matrix("q", config.qk_variance)
            w_k = w_q if config.attention == "tied" else matrix("k", config.qk_variance)
        w_v, w_o = matrix("v", config.vo_variance), matrix("o", config.vo_variance)
        biases = None
        if config.sigma_b2 != 0:
            biases = {name: net.bias(("A", self.key, name), one) for name in "qkvo"}
            if config.attention == "tied":
                biases["k"] = biases["q"]
        return attention_forward(values[0], w_q, w_k, w_v, w_o, heads=getattr(net, "heads", 1),
                                 mode=config.attention, biases=biases)

    def backward_np(self, grad: np.ndarray, cache: Any, net: Any) -> list[np.ndarray]:
        from derive.blocks.attention_ops import attention_backward

        return [attention_backward(grad, cache)]


@dataclass(frozen=True)
class Mlp(Branch):
    """``MLP(v)``: the transformer's feed-forward branch W phi(W v), hidden width
    ``--mlp-ratio`` times n, activation ``--activation`` (and ``--dropout`` on its output,
    as ``F``), whatever ``--branch`` says.

    >>> from derive.blocks.nodes import Input
    >>> from derive.blocks.branch import BranchConfig
    >>> Mlp(0, Input()).expand(BranchConfig(activation="gelu", mlp_ratio=4)).text()
    'W(gelu(W(x)))'
    """

    branch_like: ClassVar[bool] = True

    def rebuild(self, children: tuple[Node, ...]) -> Node:
        return Mlp(self.key, children[0], self.zero)

    def weights(self) -> frozenset[tuple]:
        return self.child.weights() | {("M", self.key, "out")}

    def odd_in(self) -> frozenset[tuple]:
        return frozenset({("M", self.key, "out")})

    def text(self) -> str:
        return f"MLP({self.child.text()})"

    def display(self, arg: sympy.Expr) -> sympy.Expr:
        return _MLP(self.child.display(arg))

    def jacobian(self, inputs: Sequence[sympy.Expr], names: FactorNames) -> sympy.Expr:
        return names.factor(self, "M") * inputs[0]  # M_k, the MLP's Jacobian

    def expand(self, config: BranchConfig) -> Node:
        r = config.mlp_ratio
        inner = Weight(("M", self.key, "in"), self.child.expand(config), sympy.Integer(1), r)
        out: Node = Weight(("M", self.key, "out"), Activation(inner, config.activation), r,
                           sympy.Integer(1), self.zero)
        if config.dropout != 0:
            out = Dropout(out, config.dropout, ("M", self.key, "drop"))
        return out

    def reason(self, config: BranchConfig) -> str:
        return f"the MLP is {self.expand(config).text()}: its primitives' rules in turn"
