"""derive variance for blocks with Attn: the token kernel's recursions, their closed forms,
iterated values and the weight gradients of each sublayer's last matrix, each checked
against a computation written here (a hand derivation, or the token kernel's own folds
iterated directly)."""

from __future__ import annotations

import json
import math

import pytest
import sympy

import derive
from derive.blocks.config import variance_config
from derive.blocks.nodes import Kernel
from derive.derivation.symbols import K, q0
from derive.recursions.block_maps import C_PREV, Q_PREV
from derive.recursions.token_moments import TokenVarianceAnalysis, rho_0, token_maps
from tests.cli_runner import invoke

k = sympy.Symbol("k", integer=True)


def _iterate(config, q_start: float, rho_start: float, depth: int) -> list[Kernel]:
    """The token kernel through ``depth`` layers by Block.kernel_forward, from here."""
    states = [Kernel(q_start, q_start, rho_start * q_start)]
    for _ in range(depth):
        states.append(config.block.kernel_forward(config, states[-1]))
    return states


def _backward(config, states: list[Kernel]) -> list[tuple[float, float, float]]:
    """(d_a, d_b, g) at k = 0..K from (1, 1, 1) at the output, by Block.kernel_gain."""
    out = [(1.0, 1.0, 1.0)]
    for j in range(len(states) - 1, 0, -1):
        out.append(config.block.kernel_gain(config, states[j - 1]).apply(*out[-1]))
    return out[::-1]


# --- uniform x + Attn(x): a hand derivation -------------------------------------------
def test_uniform_attention_residual_against_the_hand_derivation() -> None:
    # Every output token of uniform attention is the mean of the values: q_attn = c_attn =
    # s2 (c + (q - c)/n). The skip adds q and c, so q_k - c_k = q_0 (1 - rho_0) at every k,
    # and q_k = (1 + s2) q_{k-1} - s2 (1 - 1/n) q_0 (1 - rho_0): with s2 = 1,
    # q_K = 2^K (q_0 - delta) + delta, delta = (1 - 1/n)(1 - rho_0) q_0.
    # Backward, every token's gradient becomes the mean of the gradients, so d_k - g_k stays
    # d_K - g_K = 0 and d_{k-1} = (1 + s2) d_k: d_0/d_K = 2^K.
    n = 4
    a = derive.variance(block="x + Attn(x)", attention="uniform", tokens=n)
    q_closed, c_closed = (eq.rhs for eq in a.forward.closed_form)
    delta = sympy.Rational(n - 1, n) * (1 - rho_0) * q0
    assert sympy.simplify(q_closed - (2**K * (q0 - delta) + delta)) == 0
    assert sympy.simplify(q_closed - c_closed - q0 * (1 - rho_0)) == 0
    assert a.backward.closed_form.rhs == 2**K
    b = derive.variance(block="x + Attn(x)", attention="uniform", tokens=n, q0=3, rho0="1/3")
    q_at, c_at = b.forward.at(7)
    hand = 2**7 * (3 - sympy.Rational(3, 4) * sympy.Rational(2, 3) * 3) + sympy.Rational(3, 2)
    assert (q_at, c_at) == (hand, hand - 2)
    assert b.backward.at(7) == 128


def test_closed_forms_satisfy_their_recursions_and_the_iterated_kernel() -> None:
    # x + Attn(x); x + MLP(x) with uniform attention and a linear MLP: affine in (q, c)
    config = variance_config(block="x + Attn(x); x + MLP(x)", attention="uniform", tokens=5,
                             activation="linear", init="lecun", vo_variance=2)
    a = derive.variance(block="x + Attn(x); x + MLP(x)", attention="uniform", tokens=5,
                        activation="linear", init="lecun", vo_variance=2, q0=2, rho0="1/4")
    maps = token_maps(config)
    q_closed, c_closed = (eq.rhs for eq in a.forward.closed_form)
    at_k = {Q_PREV: q_closed.xreplace({K: k - 1}), C_PREV: c_closed.xreplace({K: k - 1})}
    assert sympy.simplify(q_closed.xreplace({K: k}) - maps.q.xreplace(at_k)) == 0
    assert sympy.simplify(c_closed.xreplace({K: k}) - maps.c.xreplace(at_k)) == 0
    assert (q_closed.xreplace({K: 0}), c_closed.xreplace({K: 0})) == (q0, rho_0 * q0)
    states = _iterate(config, 2.0, 0.25, 8)
    for depth in (1, 5, 8):
        q_at, c_at = a.forward.at(depth)
        assert float(q_at) == pytest.approx(states[depth].q_a, rel=1e-12)
        assert float(c_at) == pytest.approx(states[depth].c, rel=1e-12)
        grads = _backward(config, states[:depth + 1])
        assert float(a.backward.at(depth)) == pytest.approx(grads[0][0], rel=1e-12)


def test_post_ln_second_moment_is_solved_alone() -> None:
    a = derive.variance(block="transformer-post", attention="uniform", activation="relu")
    closed, c_closed = a.forward.closed_form
    assert c_closed is None and "c_k is iterated" in a.forward.reason
    assert closed.rhs.xreplace({K: 0}) == q0 and closed.rhs.xreplace({K: 3}) == 1
    config = variance_config(block="transformer-post", attention="uniform", activation="relu")
    states = _iterate(config, 1.0, 0.5, 4)
    assert float(a.forward.at(4)[1]) == pytest.approx(states[4].c, rel=1e-12)


def test_iterated_values_match_the_token_kernel_folds() -> None:
    options = {"attention": "uniform", "activation": "relu", "init": "he", "mlp_ratio": 4}
    config = variance_config(block="transformer-pre", **options)
    a = derive.variance(block="transformer-pre", **options)
    assert a.forward.closed_form == (None, None) and a.backward.closed_form is None
    assert a.forward.recurrence[0].rhs.has(sympy.Function("c")(k - 1))  # c enters q
    states = _iterate(config, 1.0, 0.5, 6)
    grads = _backward(config, states)
    assert float(a.forward.at(6)[0]) == pytest.approx(states[6].q_a, rel=1e-12)
    assert float(a.backward.at(6)) == pytest.approx(grads[0][0], rel=1e-12)
    assert [g for _, g in a.gradients(6)] == pytest.approx([g[2] for g in grads], rel=1e-12)


def test_standard_attention_names_its_softmax_expectations() -> None:
    a = derive.variance(block="transformer-pre", activation="gelu", mlp_ratio=4)
    assert {"S", "X", "S_logit", "X_logit", "κ_gelu"} <= set(a.named)
    config = variance_config(block="transformer-pre", activation="gelu", mlp_ratio=4)
    states = _iterate(config, 1.0, 0.5, 2)
    assert float(a.forward.at(2)[0]) == pytest.approx(states[2].q_a, rel=1e-9)


# --- weight gradients ----------------------------------------------------------------
def test_weight_gradients_of_uniform_residual_attention_by_hand() -> None:
    # W_O's output is the layer's output (a sum), its input every token's head output, the
    # mean of the values: A_q = A_c = c + (q - c)/n at layer k's input; d_k = g_k =
    # 2^(K-k). L summed over n tokens: w_k = n d A_q + n (n - 1) g A_c = n^2 2^(K-k) A.
    n, depth = 4, 6
    a = derive.variance(block="x + Attn(x)", attention="uniform", tokens=n)
    profile = derive.kernel(block="x + Attn(x)", attention="uniform", tokens=n, depth=depth
                            ).profile()["forward"]
    (row,) = a.weights.rows(depth)
    for j in range(1, depth + 1):
        q, c = profile["q_a"][j - 1], profile["c"][j - 1]
        assert row[j - 1] == pytest.approx(n * n * 2.0**(depth - j) * (c + (q - c) / n))


def test_weight_gradients_of_pre_ln_layers_against_the_kernel_profile() -> None:
    # LeCun, ReLU, MLP ratio 4, uniform attention, pre-LN. At layer k with input (q, c)
    # and the gradients (d_k, g_k) of derive.kernel's profile:
    # attention sublayer: LN gives (1, rho); uniform Attn outputs A = rho + (1 - rho)/n,
    # so the middle state is (q + A, c + A), rho_m = (c + A)/(q + A);
    # MLP sublayer: W_in gives (1, rho_m); relu: A_q = 1/2, A_c the arc-cosine kernel;
    # W_out's output gradient is the layer's (d_k, g_k).
    # Middle gradient: the skip plus W_out (1/4), relu' (1/2 or (pi - acos rho_m)/(2 pi)),
    # W_in (4) and LN (1/q_m): d' = d_k (1 + 1/(2 q_m)), g' = g_k (1 + kappa'/q_m).
    n, depth = 16, 5
    options = {"attention": "uniform", "tokens": n, "init": "lecun", "activation": "relu",
               "mlp_ratio": 4}
    a = derive.variance(block="transformer-pre", **options)
    profile = derive.kernel(block="transformer-pre", depth=depth, **options).profile()
    w_o, w_out = a.weights.rows(depth)
    for j in range(1, depth + 1):
        q, c = profile["forward"]["q_a"][j - 1], profile["forward"]["c"][j - 1]
        d_k, g_k = profile["backward"]["d_a"][j], profile["backward"]["g"][j]
        rho = c / q
        attn = rho + (1 - rho) / n
        q_m, c_m = q + attn, c + attn
        rho_m = c_m / q_m
        a_q = 0.5
        a_c = (math.sqrt(1 - rho_m**2) + (math.pi - math.acos(rho_m)) * rho_m) / (2 * math.pi)
        assert w_out[j - 1] == pytest.approx(n * d_k * a_q + n * (n - 1) * g_k * a_c)
        slope = (math.pi - math.acos(rho_m)) / (2 * math.pi)
        d_m, g_m = d_k * (1 + 0.5 / q_m), g_k * (1 + slope / q_m)
        assert w_o[j - 1] == pytest.approx(n * d_m * attn + n * (n - 1) * g_m * attn)


def test_final_norm_scales_every_weight_gradient_by_one_over_q_k() -> None:
    options = {"attention": "uniform", "activation": "relu", "mlp_ratio": 4}
    plain = derive.variance(block="transformer-pre", **options).weights.rows(4)
    normed = derive.variance(block="transformer-pre", final_norm=True, **options)
    q_k = float(normed.forward.at(4)[0])
    for row, scaled in zip(plain, normed.weights.rows(4), strict=True):
        assert scaled == pytest.approx([v / q_k for v in row])


# --- the command ----------------------------------------------------------------------
def test_json_keys(capsysbinary) -> None:
    code, out, err = invoke(capsysbinary, "variance", "--block", "x + Attn(x)",
                            "--attention", "uniform", "--depth", "3", "--weights",
                            "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"config", "depth", "q0", "rho0", "token_covariance",
                         "named_functions", "forward", "backward", "weights"}
    assert set(data["forward"]) == {"recurrence", "recurrence_text", "closed_form", "reason",
                                    "growth", "value", "profile"}
    assert data["forward"]["profile"]["q"][0] == 1.0 and data["backward"]["value"] == "8"
    assert set(data["weights"]["matrices"][0]) == {"matrix", "sublayer", "profile",
                                                  "last_over_first"}


def test_text_says_the_token_covariance_enters(capsysbinary) -> None:
    code, out, _ = invoke(capsysbinary, "variance", "--block", "x + Attn(x)", "--attention",
                          "uniform", "--tokens", "2", "--depth", "2")
    assert code == 0
    assert "qₖ depends on cₖ₋₁, the covariance of two tokens" in out
    assert "q_2 = 13/4, c_2 = 11/4" in out  # 2^2 (1 - 1/4) + 1/4, less 1/2


@pytest.mark.parametrize("args", [
    ("--block", "x + Attn(x)", "--rho0", "2"),
    ("--block", "x + Attn(x)", "--q0", "a"),
    ("--block", "x + F(x)", "--rho0", "1/3"),
    ("--block", "transformer-pre", "--compare"),
    ("--block", "transformer-scaled"),
])
def test_bad_input_is_one_line(capsysbinary, args) -> None:
    code, out, err = invoke(capsysbinary, "variance", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("derive: error: "), err


def test_api_type_and_refusals() -> None:
    assert isinstance(derive.variance(block="attention-only", attention="uniform"),
                      TokenVarianceAnalysis)
    with pytest.raises(derive.DeriveError, match="rho0"):
        derive.variance("he", rho0="1/2")
