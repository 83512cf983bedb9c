"""Transformer layers in the block language: sublayers, Attn and MLP, the presets, and the
two-point gains that mix two tokens' gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from derive.blocks.block import block
from derive.blocks.config import variance_config
from derive.blocks.nodes import Kernel, KernelGains, Stage
from derive.blocks.presets import TRANSFORMER_PRESETS
from derive.errors import DeriveError


@pytest.mark.parametrize("name", list(TRANSFORMER_PRESETS))
def test_every_transformer_preset_parses_back_to_itself(name: str) -> None:
    b = block(name)
    assert b.name == name
    assert b.text == TRANSFORMER_PRESETS[name].expression
    assert block(b.text).name == name  # the expression is recognised as the preset
    assert b.has_attention


def test_a_layer_is_its_sublayers_in_order() -> None:
    b = block("x + Attn(LN(x)); x + MLP(LN(x))")
    assert b.sublayers == ("x + Attn(LN(x))", "x + MLP(LN(x))")
    stages = [node for node in b.tree.walk() if isinstance(node, Stage)]
    assert stages and all(s.child.text() == "x + Attn(LN(x))" for s in stages)


def test_mlp_is_two_matrices_around_the_activation_whatever_the_branch() -> None:
    config = variance_config(activation="gelu", mlp_ratio=4, branch="single",
                             block="x + MLP(x)")
    assert config.block.expanded(config).text() == "x + W(gelu(W(x)))"


@pytest.mark.parametrize(("text", "says"), [
    ("x + Attn(LN(x));", "empty"),
    ("; x + F(x)", "empty"),
    ("x + Attn(x);; x + MLP(x)", "empty"),
    ("x + Attn(x, x)", "Attn takes one argument"),
    ("x + Attn()", "Attn takes one argument"),
    ("x + Attn(2)", "Attn takes a vector"),
    ("x + MLP(x); x", "identity"),
    ("; ".join(["x + F(x)"] * 9), "at most 8"),
])
def test_bad_layers_get_one_line(text: str, says: str) -> None:
    with pytest.raises(DeriveError) as err:
        block(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_one_point_rules_refuse_attention_with_the_reason() -> None:
    config = variance_config(block="x + Attn(x)")
    import sympy

    from derive.blocks.nodes import Moments

    with pytest.raises(DeriveError, match="mixes the tokens"):
        config.block.forward(config, Moments(sympy.Integer(1)))


def test_mixing_gains_compose_as_matrices() -> None:
    rng = np.random.default_rng(0)
    first, second = rng.uniform(0.1, 2, (3, 3)), rng.uniform(0.1, 2, (3, 3))
    a = KernelGains.mixing(first.tolist())
    b = KernelGains.mixing(second.tolist())
    # a at the output side, then b below it: d_in = second @ first @ d_out
    assert np.allclose(np.array(a.times(b).rows(), dtype=float), second @ first)
    assert np.allclose(np.array(a.plus(b).rows(), dtype=float), first + second)
    diagonal = KernelGains(2.0, 3.0, 5.0)
    assert np.allclose(np.array(diagonal.times(a).rows(), dtype=float),
                       first @ np.diag([2.0, 3.0, 5.0]))
    assert a.correlation_factor is None and diagonal.correlation_factor == 2.5


def _tokens(rng: np.random.Generator, n: int, width: int, q: float, rho: float) -> np.ndarray:
    shared = rng.standard_normal((1, width))
    own = rng.standard_normal((n, width))
    return np.sqrt(q) * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own)


def _kernel(h: np.ndarray) -> tuple[float, float]:
    n, width = h.shape
    gram = h @ h.T / width
    return float(np.trace(gram) / n), float((gram.sum() - np.trace(gram)) / (n * (n - 1)))


@pytest.mark.parametrize("mode", ["uniform", "tied"])
def test_deterministic_attention_matches_finite_matrices(mode: str) -> None:
    """Uniform and tied attention against finite networks written here from the definition:
    P = 1/n, or softmax(x W^T W x^T / d) with one shared W, then W_V and W_O."""
    rng = np.random.default_rng(1)
    n, width, q, rho = 6, 1024, 1.0, 0.4
    config = variance_config(block="Attn(x)", attention=mode, tokens=n)
    out = config.block.kernel_forward(config, Kernel(q, q, rho * q))
    got_q, got_c = [], []
    for _ in range(20):
        x = _tokens(rng, n, width, q, rho)
        if mode == "uniform":
            p = np.full((n, n), 1.0 / n)
        else:
            w = rng.standard_normal((width, width)) / np.sqrt(width)
            queries = x @ w
            logits = queries @ queries.T / width
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
        w_v = rng.standard_normal((width, width)) / np.sqrt(width)
        w_o = rng.standard_normal((width, width)) / np.sqrt(width)
        h = p @ (x @ w_v) @ w_o
        qq, cc = _kernel(h)
        got_q.append(qq)
        got_c.append(cc)
    assert abs(np.mean(got_q) - out.q_a) < 0.03 * out.q_a
    assert abs(np.mean(got_c) - out.c) < 0.03 * out.q_a


def test_uniform_attention_makes_every_token_the_mean_token() -> None:
    config = variance_config(block="Attn(x)", attention="uniform", tokens=8)
    out = config.block.kernel_forward(config, Kernel(2.0, 2.0, 0.5))
    assert out.q_a == pytest.approx(0.5 + 1.5 / 8) and out.rho == pytest.approx(1.0)


def test_uniform_attention_backward_matches_finite_matrices() -> None:
    """The gradients' kernel through uniform attention: d' and g' from gradients at the output
    with second moment d and covariance g between tokens, by finite matrices."""
    rng = np.random.default_rng(2)
    n, width, d, g = 5, 1024, 1.0, 0.3
    config = variance_config(block="Attn(x)", attention="uniform", tokens=n)
    (gains,) = [config.block.kernel_gain(config, Kernel(1.0, 1.0, 0.5))]
    want = gains.apply(d, d, g)
    got_d, got_g = [], []
    for _ in range(20):
        grad = _tokens(rng, n, width, d, g / d)
        w_v = rng.standard_normal((width, width)) / np.sqrt(width)
        w_o = rng.standard_normal((width, width)) / np.sqrt(width)
        p = np.full((n, n), 1.0 / n)
        back = p.T @ (grad @ w_o.T) @ w_v.T
        dd, gg = _kernel(back)
        got_d.append(dd)
        got_g.append(gg)
    assert abs(np.mean(got_d) - want[0]) < 0.03 and abs(np.mean(got_g) - want[2]) < 0.03


def test_a_layer_folds_its_sublayers_in_turn() -> None:
    layer = variance_config(init="he", activation="gelu", mlp_ratio=4, attention="uniform",
                            block="x + Attn(LN(x)); x + MLP(LN(x))")
    first = variance_config(init="he", activation="gelu", mlp_ratio=4, attention="uniform",
                            block="x + Attn(LN(x))")
    second = variance_config(init="he", activation="gelu", mlp_ratio=4, attention="uniform",
                             block="x + MLP(LN(x))")
    start = Kernel(1.5, 1.5, 0.6)
    middle = first.block.kernel_forward(first, start)
    end = second.block.kernel_forward(second, middle)
    out = layer.block.kernel_forward(layer, start)
    assert (out.q_a, out.c) == pytest.approx((end.q_a, end.c), rel=1e-12)
    composed = second.block.kernel_gain(second, middle).times(
        first.block.kernel_gain(first, start))
    whole = layer.block.kernel_gain(layer, start)
    assert np.allclose(np.array(whole.rows(), dtype=float),
                       np.array(composed.rows(), dtype=float))


def test_many_tokens_limit_of_uniform_attention_with_a_skip() -> None:
    """x + Attn(x) as n -> infinity: the attention output is the mean token, of second moment
    c, so rho' = (c + c)/(q + c) = 2 rho/(1 + rho), by hand."""
    import derive

    a = derive.kernel(block="x + Attn(x)", attention="uniform", tokens="oo", depth=3)
    rhos = a.profile()["forward"]["rho"]
    for before, after in itertools.pairwise(rhos):
        assert after == pytest.approx(2 * before / (1 + before), rel=1e-12)


@pytest.mark.parametrize("mode", ["standard", "uniform", "tied"])
def test_the_limit_of_many_tokens_is_where_many_tokens_go(mode: str) -> None:
    """The rules at n = oo against n = 4096: they differ by O(e^(2v)/n) (v = q(q - c) = 1/2
    here)."""
    state = Kernel(1.0, 1.0, 0.5)
    rows = []
    for tokens in (4096, "oo"):
        config = variance_config(block="Attn(x)", attention=mode, tokens=tokens)
        out = config.block.kernel_forward(config, state)
        gains = config.block.kernel_gain(config, state).apply(1.0, 1.0, 0.7)
        rows.append((out.q_a, out.c, gains[0], gains[2]))
    assert rows[0] == pytest.approx(rows[1], abs=20 * np.exp(1.0) / 4096)


def test_one_token_attends_to_itself() -> None:
    """n = 1: softmax over one key is 1, so Attn(x) = W_O W_V x: q and c scale by 1, and the
    gradients too."""
    config = variance_config(block="Attn(x)", tokens=1)
    out = config.block.kernel_forward(config, Kernel(2.0, 2.0, 0.6))
    assert (out.q_a, out.c) == (2.0, 0.6)
    assert config.block.kernel_gain(config, Kernel(2.0, 2.0, 0.6)).apply(1.0, 1.0, 0.3) == \
        pytest.approx((1.0, 1.0, 0.3))


@pytest.mark.parametrize(("tokens", "rho0", "says"), [
    (16, "-1/2", "at least -1/15"), ("oo", "-0.01", "at least 0"), (0, "1/2", "tokens"),
    (5000, "1/2", "from 1 to 4096"), ("2.5", "1/2", "whole number")])
def test_token_kernels_refuse_what_no_sequence_has(tokens: object, rho0: str, says: str) -> None:
    import derive

    with pytest.raises(DeriveError, match=says) as err:
        derive.kernel(block="transformer-pre", tokens=tokens, rho0=rho0, depth=2)
    assert "\n" not in str(err.value)


def test_standard_attention_alone_collapses_faster_than_geometrically() -> None:
    """Attn(x) under standard attention: 1 - rho' = (q - c)(S - X) / q', and S - X vanishes
    with q - c (the logits' variance), so the ratio (1 - rho_{k+1}) / (1 - rho_k) falls
    block after block: the law says so, and does not say rho = 1 from the first block."""
    import derive

    a = derive.kernel(block="Attn(x)", tokens=16, depth=4)
    gaps = [1 - r for r in a.profile()["forward"]["rho"]]
    ratios = [after / before for before, after in itertools.pairwise(gaps) if before > 1e-14]
    assert gaps[1] > 1e-3 and all(b < a for a, b in itertools.pairwise(ratios))
    assert a.forward_law.kind == "superlinear" and "from k = 1" not in a.forward_law.text
    uniform = derive.kernel(block="Attn(x)", tokens=16, depth=4, attention="uniform")
    assert uniform.forward_law.kind == "limit" and uniform.profile()["forward"]["rho"][1] == 1


@pytest.mark.parametrize(("block", "activation"), [("transformer-pre", "gelu"),
                                                   ("x + Attn(LN(x))", "relu")])
def test_pre_ln_rank_collapse_follows_its_power_law(block: str, activation: str) -> None:
    """The law's exponent 1 - beta/a against the local exponent of a long iteration of the
    layer's own rules: d ln(1 - rho_k) / d ln k between k = 2000 and 4000 (a smooth
    activation: a kink's sqrt(1 - rho) corrections would fade too slowly to see it)."""
    import math

    import derive

    short = derive.kernel("he", activation, block=block, attention="uniform", depth=50)
    law = short.forward_law
    assert law.kind == "power" and float(law.limit) == 1
    long = derive.kernel("he", activation, block=block, attention="uniform", depth=4000)
    gaps = [1 - r for r in long.profile()["forward"]["rho"]]
    local = -math.log(gaps[4000] / gaps[2000]) / math.log(2)
    assert abs(local - float(law.power)) < 0.01, (local, law.power)
