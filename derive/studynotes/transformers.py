"""The numbers of the note on transformer layers, from the kernel engine.

A sequence of :data:`TOKENS` exchangeable tokens (second moment q per unit, covariance c
between two tokens, rho = c/q) through :data:`DEPTH` layers of each transformer preset,
every weight matrix of variance 1/fan-in, GELU in the MLP (hidden width 4 times the
width): the profiles of :func:`derive.recursions.kernel.kernel` with ``tokens=16``. Each
profile is computed once a process (``functools.cache``), as floats;
:func:`figures` hands the figure's data to :mod:`derive.rendering.plots`.

>>> round(rho_at("pre", 1, "uniform"), 4)
0.6752
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import sympy

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.block import Block
    from derive.blocks.nodes import Kernel
    from derive.recursions.kernel import KernelAnalysis

#: The setting of the note: every matrix Var W = 1/fan-in (LeCun in the MLP; attention's
#: sigma_Q^2 = sigma_K^2 = sigma_V^2 = sigma_O^2 = 1 by default), GELU, MLP ratio 4.
INIT, ACTIVATION, MLP_RATIO = "lecun", "gelu", 4
#: Tokens of a sequence, their correlation at the input, the depth L of the stacks.
TOKENS = 16
RHO0 = sympy.Rational(1, 2)
DEPTH = 50
#: alpha of transformer-scaled: 1/sqrt(L) for the L = DEPTH layers of the stack.
ALPHA = 1 / sympy.sqrt(DEPTH)
#: The layers compared: key -> (preset or expression, label in the note, label in the
#: figure). The last two are the presets' layers with their skips taken out.
LAYERS: dict[str, tuple[str, str, str]] = {
    "attention-only": ("attention-only", "attention only $\\operatorname{Attn}(x)$",
                       "attention only Attn(x)"),
    "post": ("transformer-post", "post-LN layer", "post-LN layer"),
    "pre": ("transformer-pre", "pre-LN layer", "pre-LN layer"),
    "scaled": ("transformer-scaled", "pre-LN, branches scaled by $\\alpha = 1/\\sqrt{50}$",
               "pre-LN, α = 1/√50"),
    "post-no-skip": ("LN(Attn(x)); LN(MLP(x))", "post-LN layer without skips",
                     "post-LN without skips"),
    "pre-no-skip": ("Attn(LN(x)); MLP(LN(x))", "pre-LN layer without skips",
                    "pre-LN without skips"),
}
#: The layers drawn against depth (standard attention).
DRAWN = ("attention-only", "post", "pre", "scaled")
#: The attention modes: standard softmax, uniform (W_Q = W_K = 0) and tied.
MODES = ("standard", "uniform", "tied")


def layer(name: str) -> Block:
    """The block of layer ``name`` of :data:`LAYERS` (transformer-scaled with
    alpha = 1/sqrt(DEPTH)).

    >>> layer("scaled").text
    'x + (sqrt(2)/10)*Attn(LN(x)); x + (sqrt(2)/10)*MLP(LN(x))'
    """
    from derive.blocks.block import block

    made = block(LAYERS[name][0])
    if made.symbols:
        made = made.substituted({"alpha": ALPHA})
    return made


@functools.cache
def analysis(name: str, attention: str = "standard", depth: int = DEPTH,
             rho0: sympy.Expr = RHO0) -> KernelAnalysis:
    """The kernel analysis of layer ``name`` (16 tokens, GELU, ``attention``).

    >>> round(float(analysis("attention-only", "uniform").forward_states[1].rho), 6)
    1.0
    """
    from derive.recursions.kernel import kernel

    return kernel(INIT, ACTIVATION, block=layer(name), tokens=TOKENS, attention=attention,
                  mlp_ratio=MLP_RATIO, rho0=rho0, depth=depth)


@functools.cache
def forward(name: str, attention: str = "standard") -> dict[str, list[float]]:
    """rho_k, q_k and c_k of layer ``name`` over k = 0..DEPTH, as floats (computed once;
    the backward pass is left to :func:`backward`)."""
    states = analysis(name, attention).forward_states
    return {"rho": [float(s.rho) for s in states], "q": [float(s.q_a) for s in states],
            "c": [float(s.c) for s in states]}


@functools.cache
def backward(name: str, attention: str = "standard") -> dict[str, list[float]]:
    """d_k/d_L and rho^grad_k of layer ``name`` over k = 0..DEPTH (1 at the output)."""
    states = analysis(name, attention).backward_states
    return {"d": [s.d_a for s in states], "rho": [s.rho for s in states]}


def rho_at(name: str, k: int, attention: str = "standard") -> float:
    """rho_k, the token correlation after k layers."""
    return forward(name, attention)["rho"][k]


def q_at(name: str, k: int, attention: str = "standard") -> float:
    """q_k, a token's second moment per unit after k layers."""
    return forward(name, attention)["q"][k]


def grad_factor(name: str, attention: str = "standard") -> float:
    """d_0/d_L: the gradient's second moment at the input over the output's (L = DEPTH)."""
    return backward(name, attention)["d"][0]


def grad_rho(name: str, attention: str = "standard") -> float:
    """rho^grad_0: two tokens' gradients' correlation at the input (1 at the output)."""
    return backward(name, attention)["rho"][0]


def layer_gain(name: str, k: int, attention: str = "standard") -> float:
    """d_{k-1}/d_k, layer k's factor on the gradient's second moment."""
    d = backward(name, attention)["d"]
    return d[k - 1] / d[k]


def largest_step(name: str, attention: str = "standard") -> tuple[float, int]:
    """The largest |rho_k - rho_{k-1}| of the stack and the layer k where it happens."""
    rho = forward(name, attention)["rho"]
    step, k = max((abs(rho[k] - rho[k - 1]), k) for k in range(1, len(rho)))
    return step, k


def collapsed(name: str, attention: str = "standard", digits: int = 6) -> int | None:
    """The first layer k with 1 - rho_k below 10^-digits, or None within DEPTH."""
    rho = forward(name, attention)["rho"]
    return next((k for k, r in enumerate(rho) if 1 - r < 10.0**-digits), None)


@functools.cache
def first_overlap() -> tuple[float, float]:
    """(S, X) of standard attention at the input's token kernel (q_0 = 1, rho_0 = 1/2):
    E[sum_j P_1j^2] and E[sum_j P_1j P_2j], from the engine's attention node."""
    from derive.blocks.attention import Attention
    from derive.blocks.nodes import Kernel

    config = analysis("attention-only").config
    (node,) = [n for n in config.block.expanded(config).walk() if isinstance(n, Attention)]
    found = node.overlap(Kernel(1.0, 1.0, float(RHO0)), config)
    return float(found.same), float(found.cross)  # type: ignore[arg-type]


@functools.cache
def mlp_gains() -> dict[str, float]:
    """The MLP branch W gelu(W x) per token at q = 1 (from the engine): its forward gain
    ``g`` = E[gelu(u)^2], backward gain ``G`` = E[gelu'(u)^2], and its correlation map at
    rho = 1/2, ``C`` (forward) and ``Cdot`` (gradients)."""
    from derive.recursions.kernel import kernel

    def one(rho0: object) -> dict[str, dict[str, list[float]]]:
        return kernel(INIT, ACTIVATION, block="MLP(x)", tokens=TOKENS, mlp_ratio=MLP_RATIO,
                      rho0=rho0, depth=1).profile()

    merged, half = one(1), one(RHO0)
    return {"g": merged["forward"]["q_a"][1], "G": merged["backward"]["d_a"][0],
            "C": half["forward"]["rho"][1], "Cdot": half["backward"]["rho"][0]}


@functools.cache
def sublayers(name: str, attention: str = "standard") -> tuple[Kernel, Kernel, Kernel]:
    """The token kernel at the input, after the attention sublayer and after the MLP
    sublayer of layer ``name``'s first layer, each sublayer folded alone by the engine."""
    from derive.blocks.block import block
    from derive.blocks.config import variance_config
    from derive.blocks.nodes import Kernel

    states = [Kernel(1.0, 1.0, float(RHO0))]
    for text in layer(name).sublayers:
        config = variance_config(init=INIT, activation=ACTIVATION, block=block(text),
                                 tokens=TOKENS, attention=attention, mlp_ratio=MLP_RATIO)
        states.append(config.block.kernel_forward(config, states[-1]))
    return states[0], states[1], states[2]


def curves(name: str, attention: str = "standard") -> tuple[list[float], list[float]]:
    """rho_k and q_k for k = 0..DEPTH."""
    found = forward(name, attention)
    return found["rho"], found["q"]


def figures() -> dict[str, tuple[str, tuple[object, ...], dict[str, object]]]:
    """The figure's data: stem -> (plotting function in :mod:`derive.rendering.plots`, its
    arguments)."""
    rho, q = {}, {}
    for name in DRAWN:
        rho[LAYERS[name][2]], q[LAYERS[name][2]] = curves(name)
    return {"token-depth": ("depth_figure", (
        {"token correlation ρₖ": rho, "second moment qₖ": q},
        f"Standard attention, {TOKENS} tokens, GELU MLP, ρ₀ = {RHO0}"),
        {"log": ("second moment qₖ",)})}
