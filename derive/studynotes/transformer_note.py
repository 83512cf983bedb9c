"""The note on transformer layers: a sequence's tokens through attention and MLP sublayers.

Its numbers come from :mod:`derive.studynotes.transformers` (the kernel engine over 16
tokens), its derivation from :mod:`derive.studynotes.token_map`; this module writes them
up: key results with their reasons, the course page's claims checked, one table, one
figure and cards that ask why.

>>> section = transformer_section()
>>> section.key, len(section.tables), [f.stem for f in section.figures]
('transformer-layers', 1, ['token-depth'])
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

from derive.deck.cards import Card
from derive.derivation.printing import latex
from derive.recursions.correlation_laws import Law
from derive.rendering.render import Figure, Table
from derive.studynotes.parts import Section, card, number
from derive.studynotes.token_map import derivation
from derive.studynotes.transformers import (
    DEPTH,
    LAYERS,
    MODES,
    RHO0,
    TOKENS,
    analysis,
    collapsed,
    first_overlap,
    grad_factor,
    grad_rho,
    largest_step,
    layer,
    layer_gain,
    mlp_gains,
    q_at,
    rho_at,
    sublayers,
)

#: Where the collapse is read: 1 - rho_k below 10^-DIGITS.
DIGITS = 6
#: The depths of the table's rho_k columns.
TABLE_DEPTHS = (1, 10, DEPTH)


def _n(value: object, digits: int = 4) -> str:
    """:func:`~derive.studynotes.parts.number` inside math (no dollars)."""
    return number(value, digits).strip("$")


def _merged(name: str) -> str:
    """When layer ``name``'s tokens merge: the first layer with 1 - rho_k below
    10^-DIGITS, or the value at the last layer."""
    k = collapsed(name, digits=DIGITS)
    if k is None:
        return f"$\\rho_{{{DEPTH}}} = {_n(rho_at(name, DEPTH), 3)}$"
    return f"$1 - \\rho_k < 10^{{-{DIGITS}}}$ from layer {k} on"


def _collapse_step() -> tuple[float, float, float]:
    """(S, X, 1 - rho_1) of attention alone at the input: 1 - rho_1 =
    (1 - rho_0)(S - X)/(rho_0 + (1 - rho_0) S), checked against the engine's profile."""
    same, cross = first_overlap()
    r = float(RHO0)
    gap = (1 - r) * (same - cross) / (r + (1 - r) * same)
    if abs(gap - (1 - rho_at("attention-only", 1))) > 1e-9:  # pragma: no cover
        raise AssertionError("1 - rho_1 of attention alone is not the engine's")
    return same, cross, gap


def _post_factor() -> tuple[float, float, float]:
    """(g, G, (1 + G)/(1 + g)) of the MLP at q = 1, and post-LN's factor on the gradient's
    second moment per layer once the tokens have merged, checked against the engine's
    last layer."""
    gains = mlp_gains()
    factor = (1 + gains["G"]) / (1 + gains["g"])
    if collapsed("post") is None or abs(layer_gain("post", DEPTH) - factor) > 1e-6 * factor:
        raise AssertionError("post-LN's gradient factor per layer")  # pragma: no cover
    return gains["g"], gains["G"], factor


def _checked_layers() -> None:
    """Each layer's first map is its attention sublayer's, then its MLP sublayer's."""
    for name in ("post", "pre"):
        whole = rho_at(name, 1), q_at(name, 1)
        after = sublayers(name)[2]
        if max(abs(float(after.rho) - whole[0]), abs(float(after.q_a) - whole[1])) > 1e-12:
            raise AssertionError(f"{name}: not its sublayers in turn")  # pragma: no cover


def _pre_law() -> str:
    """Pre-LN's law of rank collapse in depth, as the engine derives it."""
    law = cast(Law, analysis("pre").forward_law)
    if law.kind != "power" or law.power is None:  # pragma: no cover (the engine changed)
        raise AssertionError("pre-LN's rank collapse is no longer a power law")
    power = float(law.power)
    return ("The collapse is a power law: each pre-LN layer adds the same $a$ to $q$ and "
            "$\\beta (1 - \\rho)$ to $q - c$, so $1 - \\rho_k = (q - c)/q$ falls like "
            f"$k^{{-(1 - \\beta/a)}} = k^{{-{_n(power, 3)}}}$ at large $k$.")


def _key_results() -> tuple[str, ...]:
    same, cross, gap = _collapse_step()
    gains = mlp_gains()
    g, big_g, factor = _post_factor()
    step, at = largest_step("scaled")
    if gains["C"] >= 1:  # pragma: no cover (the engine changed)
        raise AssertionError("GELU's correlation map at 1/2")
    return (
        "Attention without skips collapses the tokens (rank collapse, $\\rho \\to 1$): with "
        f"$\\rho_0 = {latex(RHO0)}$, stacked $\\operatorname{{Attn}}(x)$ gives "
        f"$\\rho_1 = {_n(rho_at('attention-only', 1))}$ and {_merged('attention-only')} "
        "(uniform attention: $\\rho_1 = 1$ exactly), because each output token is a "
        "softmax-weighted mean of the value vectors: $q' = c + (q - c) S$ and "
        "$c' = c + (q - c) X$ (times $\\sigma_V^2 \\sigma_O^2$), with "
        f"$S = E[\\sum_j P_{{1j}}^2] = {_n(same)}$ and $X = E[\\sum_j P_{{1j}} P_{{2j}}] = "
        f"{_n(cross)}$ at the input, of order $1/n_{{tok}} = 1/{TOKENS}$: $q - c$ shrinks "
        f"by $S - X$ a layer, and $1 - \\rho_1 = (1 - \\rho_0)(S - X)/(\\rho_0 + "
        f"(1 - \\rho_0) S) = {_n(gap, 3)}$.",
        "The skip carries $q - c$ on and the MLP acts on each token alone: a post-LN "
        f"layer takes $\\rho$ from ${latex(RHO0)}$ to {number(rho_at('post', 1), 4)}, a "
        f"pre-LN layer to {number(rho_at('pre', 1), 4)}, because attention adds "
        "$\\alpha^2 \\sigma^2 (c + (q - c) X)$ to $c$ and a little more to $q$ while the skip "
        "passes $q - c$ unchanged (derivation below); the MLP $W \\operatorname{gelu}(W x)$ "
        "maps each token through GELU's kernel, $q = 1$ to "
        f"$E[\\operatorname{{gelu}}(u)^2] = {_n(g, 3)}$ and $\\rho = {latex(RHO0)}$ to "
        f"$C(\\rho) = {_n(gains['C'])}$: a little closer to 1 (GELU's outputs have a "
        "mean) but it never merges tokens, since it does not mix them.",
        "Post-LN layers still collapse the tokens with depth, pre-LN layers more slowly: post-LN "
        f"keeps $q_k = {_n(q_at('post', DEPTH))}$ and reaches "
        f"$\\rho_{{10}} = {_n(rho_at('post', 10))}$, {_merged('post')}, while pre-LN has "
        f"$\\rho_{{10}} = {_n(rho_at('pre', 10), 3)}$ and "
        f"$\\rho_{{{DEPTH}}} = {_n(rho_at('pre', DEPTH), 3)}$ with "
        f"$q_{{{DEPTH}}} = {_n(q_at('pre', DEPTH), 3)}$, because post-LN renormalizes "
        "each sum to $q = 1$, so every layer's attention keeps its share, while pre-LN's "
        "LN hands each branch $\\gamma^2$ whatever $q_{k-1}$, which grows like $k$: layer "
        "$k$'s share falls like $1/k$. "
        f"{_pre_law()}",
        f"Their gradients grow toward the input ($L = {DEPTH}$ layers, second moment at "
        f"the input over the output's): $d_0/d_L = {_n(grad_factor('post'), 3)}$ for "
        f"post-LN, whose factor a layer settles at $(1 + G)/(1 + g) = {_n(factor, 5)}$ "
        "once the tokens have merged (LN divides by the sum's $1 + g$, the sum's Jacobian "
        f"gives $1 + G$, $G = E[\\operatorname{{gelu}}'(u)^2] = {_n(big_g, 3)}$), and "
        f"$d_0/d_L = {_n(grad_factor('pre'), 3)}$ for pre-LN, which grows with $q$, "
        "because each sublayer adds to the gradient its branch's part, which LN divides "
        "by $q_{k-1}$: a factor $1 + O(1/q_{k-1})$ a layer.",
        f"Scaling both branches by $\\alpha = 1/\\sqrt{{L}}$ ($L = {DEPTH}$) keeps the "
        f"tokens apart through the whole stack, $\\rho_{{{DEPTH}}} = "
        f"{_n(rho_at('scaled', DEPTH), 3)}$ with $q_{{{DEPTH}}} = "
        f"{_n(q_at('scaled', DEPTH), 3)}$ (no layer moves $\\rho$ by more than "
        f"{number(step, 3)}, at layer {at}, and it moves by "
        f"{number(rho_at('scaled', DEPTH) - float(RHO0), 3)} in all; "
        f"$d_0/d_L = {_n(grad_factor('scaled'), 3)}$), "
        "because each branch's share of $q_k$ is $w \\le \\alpha^2 \\sigma^2 \\gamma^2 / "
        "q_{k-1} \\le \\sigma^2 \\gamma^2/L$: $\\rho$ moves by $O(1/L)$ a layer and by "
        "$O(1)$ over $L$ layers, while $q$ grows by $O(1)$ only, so the shares stay of "
        "order $1/L$.",
    )


def _compared(name: str) -> str:
    """Whether the skips of layer ``name`` make the gradient's growth d_0/d_L smaller or
    larger than the same layer's without them."""
    ratio = grad_factor(name) / grad_factor(f"{name}-no-skip")
    return (f"{number(1 / ratio, 3)} times smaller with skips" if ratio < 1
            else f"{number(ratio, 3)} times larger with skips")


def _claims() -> tuple[tuple[str, str], ...]:
    _checked_layers()
    _, after_attn, after_mlp = sublayers("pre")
    pre, post = layer("pre"), layer("post")
    no_post, no_pre = LAYERS["post-no-skip"][0], LAYERS["pre-no-skip"][0]
    return (
        ("The course page says: \"a transformer layer is an attention sublayer and an MLP "
         "sublayer, each wrapped with residual connections and normalization\". Does the "
         "derivation bear it out?",
         f"Yes, for the layers derived here: post-LN is `{post.text}` and pre-LN "
         f"`{pre.text}`, and a layer's map is its attention sublayer's followed by its MLP "
         "sublayer's (checked: the sublayers folded in turn give the layer's kernel). In "
         "pre-LN's first layer the attention sublayer takes $(q, \\rho)$ from "
         f"$(1, {latex(RHO0)})$ to $({_n(after_attn.q_a, 3)}, {_n(after_attn.rho, 3)})$ "
         f"and the MLP sublayer to $({_n(after_mlp.q_a, 3)}, {_n(after_mlp.rho, 3)})$: "
         "attention moves the tokens together, the MLP mostly adds to $q$. Where the "
         "normalization sits (after the sum, or first in the branch) is what sets $q$ "
         "and the collapse through depth."),
        ("The course page says: \"transformers with residual connections can be stacked "
         "much deeper than those without, as skip connections prevent the degradation of "
         "information and gradients\". What does the derivation say?",
         "Information, read as the tokens' correlation $\\rho$: without skips one layer "
         f"nearly merges them ($\\rho_1 = {_n(rho_at('post-no-skip', 1))}$ for `{no_post}` "
         f"and `{no_pre}`, {_n(rho_at('attention-only', 1))} for attention alone); with "
         f"skips $\\rho_1 = {_n(rho_at('post', 1))}$ (post-LN) and "
         f"{_n(rho_at('pre', 1))} (pre-LN). But skips do not prevent the collapse in "
         f"depth: post-LN has {_merged('post')}; pre-LN slows it to "
         f"$\\rho_{{{DEPTH}}} = {_n(rho_at('pre', DEPTH), 3)}$ and only branches scaled by "
         f"$1/\\sqrt{{L}}$ keep $\\rho_{{{DEPTH}}} = {_n(rho_at('scaled', DEPTH), 3)}$. "
         f"Gradients ($L = {DEPTH}$): their second moments vanish neither way; "
         f"$d_0/d_L = {_n(grad_factor('post-no-skip'), 3)}$ without skips and "
         f"{_n(grad_factor('post'), 3)} with them in the post-LN layer "
         f"({_compared('post')}), {_n(grad_factor('pre-no-skip'), 3)} and "
         f"{_n(grad_factor('pre'), 3)} in the pre-LN layer ({_compared('pre')}), so "
         "the skips do not by themselves keep the gradients' size; their "
         f"correlation between two tokens is $\\rho^{{grad}}_0 = "
         f"{_n(grad_rho('post-no-skip'), 3)}$ without skips, "
         f"{_n(grad_rho('post'), 3)} and {_n(grad_rho('pre'), 3)} with. What the skip "
         "does keep is the gradients' differences between tokens: uniform attention "
         "alone hands every token the same gradient ($d - g = 0$), the skip carries "
         "$d - g$ on (derivation)."),
    )


def table() -> Table:
    """Every layer of :data:`~derive.studynotes.transformers.LAYERS` under standard
    attention: rho_k, q_L, d_0/d_L, rho^grad_0; and rho_L under uniform and tied attention.

    >>> table().rows[0][0]
    'attention only $\\\\operatorname{Attn}(x)$'
    """
    header = ("layer", *(f"$\\rho_{{{k}}}$" for k in TABLE_DEPTHS), f"$q_{{{DEPTH}}}$",
              "$d_0/d_L$", "$\\rho^{grad}_0$",
              *(f"$\\rho_{{{DEPTH}}}$, {mode}" for mode in MODES[1:]))
    rows = []
    for name, (_, label, _) in LAYERS.items():
        rows.append((label, *(number(rho_at(name, k), 4) for k in TABLE_DEPTHS),
                     number(q_at(name, DEPTH), 4), number(grad_factor(name), 4),
                     number(grad_rho(name), 3),
                     *(number(rho_at(name, DEPTH, mode), 4) for mode in MODES[1:])))
    return Table(f"{TOKENS} tokens with $q_0 = 1$ and $\\rho_0 = {latex(RHO0)}$, "
                 f"$L = {DEPTH}$ layers, GELU MLP (ratio 4), every matrix of variance "
                 "$1/\\text{fan-in}$, standard attention: the token correlation $\\rho_k$, "
                 "the second moment $q_L$, the gradient's growth $d_0/d_L$ and two "
                 "tokens' gradient correlation at the input $\\rho^{grad}_0$; the last "
                 "columns give $\\rho_L$ under uniform and tied attention",
                 header, tuple(rows))


def _cards() -> tuple[Card, ...]:
    same, cross, _ = _collapse_step()
    gains = mlp_gains()
    g, big_g, factor = _post_factor()
    return (
        card("transformer/rank-collapse",
             "Why does a stack of self-attention layers without skips merge its tokens "
             "($\\rho \\to 1$)?",
             "Each output token is a softmax-weighted mean of the values: "
             "$q' - c' = \\sigma^2 (q - c)(S - X)$, with $S = E[\\sum_j P_{1j}^2]$, "
             "$X = E[\\sum_j P_{1j} P_{2j}]$ of order $1/n_{tok}$ "
             f"(${_n(same, 3)}$, ${_n(cross, 3)}$ for 16 tokens at $\\rho = 1/2$): "
             f"$\\rho_1 = {_n(rho_at('attention-only', 1), 3)}$."),
        card("transformer/skip",
             "Why does the skip of $x + \\alpha \\operatorname{Attn}(x)$ keep a sequence's "
             "tokens apart within a layer?",
             "Attention adds about as much to the tokens' covariance $c$ as to their second "
             "moment $q$; the skip passes $q - c$ on: "
             "$q_k - c_k = (q_{k-1} - c_{k-1})(1 + \\alpha^2 \\sigma^2 (S - X))$. "
             "Uniform attention: $1 - \\rho_k = (1 - \\rho_{k-1})/(1 + \\alpha^2 "
             "\\sigma^2 m)$."),
        card("transformer/mlp",
             "Why can the MLP sublayer not merge a sequence's tokens?",
             "It acts on each token alone, through its activation's kernel: GELU maps "
             f"$\\rho = 1/2$ to $C(\\rho) = {_n(gains['C'])}$, closer to 1 (GELU's outputs "
             "have a mean) but below 1 for every $\\rho < 1$; only attention mixes tokens."),
        card("transformer/post-ln",
             "Why do post-LN transformer layers still collapse the tokens with depth?",
             "LN renormalizes each sum to $q = 1$, so every layer's attention keeps the "
             "same share of it and moves $\\rho$ toward 1 by as much: "
             f"$\\rho_{{10}} = {_n(rho_at('post', 10))}$ "
             "(16 tokens, GELU, standard attention)."),
        card("transformer/pre-ln",
             "Why do pre-LN transformer layers slow the tokens' collapse?",
             "LN hands each branch second moment $\\gamma^2$ whatever $q_{k-1}$, and "
             "$q_{k-1}$ grows like $k$: layer $k$'s branches carry a share of about "
             f"$1/k$. $\\rho_{{{DEPTH}}} = {_n(rho_at('pre', DEPTH), 3)}$ with "
             f"$q_{{{DEPTH}}} = {_n(q_at('pre', DEPTH), 3)}$."),
        card("transformer/scaled",
             "Why do branches scaled by $\\alpha = 1/\\sqrt{L}$ keep $\\rho$ moving by "
             "$O(1)$ over $L$ layers?",
             "Each branch's share of $q_k$ is $w \\le \\alpha^2 \\sigma^2 \\gamma^2/q_{k-1} "
             "\\le \\sigma^2 \\gamma^2 / L$, so $\\rho$ moves by $O(1/L)$ a layer, $O(1)$ "
             f"in all, and $q$ grows by $O(1)$: $\\rho_{{{DEPTH}}} = "
             f"{_n(rho_at('scaled', DEPTH), 3)}$ for $L = {DEPTH}$."),
        card("transformer/gradient-tokens",
             "Why does uniform attention without a skip hand every token the same gradient?",
             "Backward, the value $v_j$ gets $\\sum_i P_{ij}$ times the output gradients, "
             "$P_{ij} = 1/n_{tok}$: every token gets their mean, so $d - g = 0$. With the "
             "skip, $d_{k-1} - g_{k-1} = d_k - g_k$."),
        card("transformer/post-gradient",
             "Why does post-LN's gradient grow by a fixed factor a layer once the tokens "
             "have merged?",
             "LN divides the gradient's second moment by the sum's $1 + g$, the sum's "
             f"Jacobian multiplies it by $1 + G$: $g = E[\\operatorname{{gelu}}(u)^2] = "
             f"{_n(g, 3)}$, $G = E[\\operatorname{{gelu}}'(u)^2] = {_n(big_g, 3)}$, "
             f"factor ${_n(factor, 5)}$ (attention's is 1 at $\\rho = 1$)."),
    )


def transformer_section() -> Section:
    """The note: key results with reasons, the course page's claims checked, one
    derivation, one table, one figure and cards."""
    written = derivation()  # its assumptions join the note's, stated once
    return Section(
        "transformer-layers", "Transformer layers",
        key_results=_key_results(),
        assumptions=(
            f"Mean field at infinite width: a sequence of $n_{{tok}} = {TOKENS}$ "
            "exchangeable zero-mean Gaussian tokens with second moment $q_k$ per unit, "
            "covariance $c_k$ between two tokens and correlation $\\rho_k = c_k/q_k$, "
            f"$q_0 = 1$ and $\\rho_0 = {latex(RHO0)}$; gradient independence backward; "
            "the loss reads every token through the same linear readout, so the tokens' "
            "gradients are equal at the output ($\\rho^{grad}_L = 1$).",
            "Every weight matrix has variance $1/\\text{fan-in}$ ($W_Q$, $W_K$, $W_V$, "
            "$W_O$, and the MLP $W \\operatorname{gelu}(W x)$ with hidden width 4 times "
            "the width), no biases, LN's $\\gamma = 1$; $L = "
            f"{DEPTH}$ layers; transformer-scaled has $\\alpha = 1/\\sqrt{{{DEPTH}}}$.",
            "Standard attention: logits $q_i \\cdot k_j/\\sqrt{d_{head}}$, a Gaussian field "
            "whose law follows from the token kernel, the softmax's expectations over it "
            "computed numerically; uniform attention ($W_Q = W_K = 0$, every weight "
            "$1/n_{tok}$, as Noci et al. 2022 assume) and tied attention ($W_Q = W_K$ with "
            "$1/d_{head}$ scaling, Hron et al. 2020) in the table's last columns.",
            "At finite width with a fixed number of heads the attention weights stay "
            "random, so one network's token kernel fluctuates around these values: the "
            "model gives their expectation.",
            *(f"In the derivation: {a}." for a in written.assumptions),
        ),
        intro=("`derive.kernel(\"lecun\", \"gelu\", block=P, tokens=16, attention=A, "
               "mlp_ratio=4)` gives any of these stacks and its profiles; two inputs "
               "through residual blocks are in [[shattered-gradients|shattered gradients "
               "and the edge of chaos]], pre-LN against post-LN without attention in "
               "[[pre-vs-post-norm|pre vs post norm]].",),
        derivations=(replace(written, assumptions=()),),
        tables=(table(),),
        problems=_claims(),
        figures=(
            Figure("token-depth",
                   f"Standard attention, {TOKENS} tokens, $\\rho_0 = {latex(RHO0)}$: the "
                   "token correlation $\\rho_k$ and the second moment $q_k$ (log scale) "
                   f"against the layer $k$, to {DEPTH} layers."),
        ),
        links=("shattered-gradients", "pre-vs-post-norm", "layer-norm"),
        cards=_cards(),
    )
