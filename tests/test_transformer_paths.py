"""`derive paths` through transformer layers: the terms of dy/df_1 and dy/dx, their count
and lengths, and each length's share of a token's gradient through the token kernel.

The expected terms are built here from each layer's factors written by hand, e.g.
(I + M_k L_{k,2})(I + A_k L_{k,1}) for pre-LN, and multiplied out by SymPy; the expected
shares come from a direct sum over the paths of products of 2x2 maps of (d, g) written
from the mean-field formulas of attention, LayerNorm and the ReLU MLP.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import sympy
from cli_runner import run_paths as run

import derive
from derive.blocks.block import block
from derive.errors import DeriveError
from derive.pathsums.block_paths import BlockPathSum
from derive.pathsums.token_paths import token_path_gradients

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _sym(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, commutative=False)


def _A(k: int) -> sympy.Symbol:
    return _sym(f"A_{k}")


def _M(k: int) -> sympy.Symbol:
    return _sym(f"M_{k}")


def _L(k: int, i: int) -> sympy.Symbol:
    return _sym(f"L_{{{k},{i}}}")


alpha, beta = sympy.symbols("alpha beta", positive=True)

#: Each preset's sublayers, later first: (their factor outside the sum, skip weight, branch
#: weight, the branch's factors) for layer k, as the product of the chain rule.
LAYERS = {
    "transformer-pre": lambda k: [(1, 1, 1, (_M(k), _L(k, 2))), (1, 1, 1, (_A(k), _L(k, 1)))],
    "transformer-post": lambda k: [(_L(k, 2), 1, 1, (_M(k),)), (_L(k, 1), 1, 1, (_A(k),))],
    "transformer-scaled": lambda k: [(1, 1, alpha, (_M(k), _L(k, 2))),
                                     (1, 1, alpha, (_A(k), _L(k, 1)))],
    "transformer-deepnorm": lambda k: [(_L(k, 2), alpha, beta, (_M(k),)),
                                       (_L(k, 1), alpha, beta, (_A(k),))],
}
#: dh_j/df_j: how the output of layer j's MLP reaches the layer's output.
TAILS = {"transformer-pre": lambda j: 1, "transformer-post": lambda j: _L(j, 2),
         "transformer-scaled": lambda j: alpha, "transformer-deepnorm": lambda j: beta * _L(j, 2)}


def _sublayer_terms(k: int, name: str) -> list[list[tuple[sympy.Expr, int]]]:
    """Per sublayer (later first): its two terms (skip first) with their branch counts."""
    out = []
    for outside, skip, weight, factors in LAYERS[name](k):
        out.append([(outside * skip, 0), (outside * weight * sympy.Mul(*factors), 1)])
    return out


def _brute_terms(name: str, depth: int, j: int) -> list[tuple[sympy.Expr, int]]:
    """Every term of dy/df_j (j = 0: dy/dx) in the book's order: one term per choice in each
    sublayer, counting with layer j+1's first sublayer as the lowest digit."""
    digits = [s for k in range(depth, j, -1) for s in _sublayer_terms(k, name)]
    tail = 1 if j == 0 else TAILS[name](j)
    out = []
    for choice in itertools.product(range(2), repeat=len(digits)):
        picked = [digits[i][c] for i, c in enumerate(choice)]
        out.append((sympy.Mul(*(p[0] for p in picked)) * tail, sum(p[1] for p in picked)))
    return out


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize(("depth", "wrt"), [(1, "x"), (2, "x"), (3, 1), (3, "x"), (4, 1)])
def test_terms_order_and_lengths_against_brute_force(name: str, depth: int, wrt) -> None:
    j = 0 if wrt == "x" else wrt
    expected = _brute_terms(name, depth, j)
    s = BlockPathSum(depth, wrt, block(name))
    got = [s.term(c) for c in s]
    assert [sympy.expand(t.expr) for t in got] == [sympy.expand(e) for e, _ in expected]
    assert [t.branches for t in got] == [n for _, n in expected]
    histogram = [0] * (max(n for _, n in expected) + 1)
    for _, n in expected:
        histogram[n] += 1
    assert s.count == len(expected) == 4 ** (depth - j)
    assert list(s.lengths.values()) == histogram
    m = 2 * (depth - j)
    assert histogram == [math.comb(m, length) for length in range(m + 1)]


def test_printed_sum_is_the_chain_rule_product(capsysbinary) -> None:
    code, out, err = run(capsysbinary, "--block", "transformer-pre", "--depth", "3")
    assert (code, err) == (0, "")
    first, summary = out.splitlines()

    def shown(k: int, chosen: tuple[int, int]) -> str:
        later = f"M{k}L{k},2" if chosen[0] else ""
        earlier = f"A{k}L{k},1" if chosen[1] else ""
        return (later + earlier).translate(_SUB)

    terms = [shown(3, c3) + shown(2, c2) or "I"
             for c3 in itertools.product((0, 1), repeat=2)
             for c2 in itertools.product((0, 1), repeat=2)]
    assert first == "∂y/∂f₁ = " + " + ".join(terms)
    assert summary.count("each layer k contributes") == 1
    assert "each layer k contributes (I + MₖLₖ,₂)(I + AₖLₖ,₁), the later sublayer's" in summary


@pytest.mark.parametrize(("name", "factor"), [
    ("transformer-post", "Lₖ,₂(I + Mₖ)Lₖ,₁(I + Aₖ)"),
    ("transformer-scaled", "(I + α·MₖLₖ,₂)(I + α·AₖLₖ,₁)"),
    ("transformer-deepnorm", "Lₖ,₂(α·I + β·Mₖ)Lₖ,₁(α·I + β·Aₖ)"),
])
def test_layer_factor_named_as_the_terms(capsysbinary, name: str, factor: str) -> None:
    _, out, _ = run(capsysbinary, "--block", name, "--depth", "2")
    first, summary = out.splitlines()
    assert f"each layer k contributes {factor}," in summary
    for piece in ("M₂", "A₂", "L₂,₂" if "L" in factor else "M₂"):
        assert piece in first


@pytest.mark.parametrize(("spec", "radix"), [("x + Attn(x)", 2), ("LN(x + Attn(x))", 2),
                                             ("attention-only", 1), ("transformer-pre", 4)])
def test_count_and_lengths_cli(capsysbinary, spec: str, radix: int) -> None:
    code, out, _ = run(capsysbinary, "--block", spec, "--depth", "5", "--count")
    assert code == 0 and out == f"{radix ** 4}\n"
    code, out, err = run(capsysbinary, "--block", spec, "--depth", "5", "--lengths",
                         "--attention", "uniform", "--tokens", "4", "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    per_layer = {1: [0, 1], 2: [1, 1], 4: [1, 2, 1]}[radix]
    total = [1]
    for _ in range(4):
        total = list(np.convolve(total, per_layer))
    assert [r["count"] for r in data["lengths"]] == total
    shares = [r["gradient_share"] for r in data["lengths"]]
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-12)
    assert math.isclose(sum(data["gradients"]), data["total"], rel_tol=1e-12)
    assert data["tokens"] == 4 and data["attention"] == "uniform" and data["rho0"] == "1/2"


def test_path_closed_form_against_the_counts() -> None:
    g = token_path_gradients(6, "x", block="transformer-post", tokens=2, attention="uniform")
    mean, variance = g.path_closed_form
    K = derive.K
    assert mean.subs(K, 6) == sympy.Rational(sum(n * c for n, c in enumerate(g.counts)),
                                            sum(g.counts))
    second = sympy.Rational(sum(n * n * c for n, c in enumerate(g.counts)), sum(g.counts))
    assert variance.subs(K, 6) == second - mean.subs(K, 6) ** 2


# --- the shares, by a direct sum over the paths ----------------------------------------
def _relu_corr(rho: float) -> float:
    """E[relu(u) relu(v)] / (q/2) for a unit-variance pair of correlation rho."""
    return (math.sqrt(1 - rho * rho) + (math.pi - math.acos(rho)) * rho) / math.pi


def _pre_ln_by_hand(depth: int, j: int, n: int, q0: float, rho0: float) -> list[float]:
    """Contributions by length to d at x (j = 0) or f_j for transformer-pre, He, ReLU,
    mlp ratio 1, uniform attention over n tokens: forward (q, c) per layer, backward 2x2
    maps of (d, g), summed over every path."""
    q, c = q0, rho0 * q0
    layers = []  # per layer: (sublayer 2's map, sublayer 1's map), each through its branch
    for _ in range(depth):
        # sublayer 1: LN -> (1, c/q); uniform attention: q' = c' = c/q + (1 - c/q)/n
        r = c / q
        qa = r + (1 - r) / n
        qu, cu = q + qa, c + qa
        attn = np.array([[1 / n, (n - 1) / n], [1 / n, (n - 1) / n]])
        through_1 = np.diag([1 / q, 1 / q]) @ attn  # then LN's gain at h's q
        # sublayer 2: LN -> (1, rho_u); W (x2), relu, W (x2)
        ru = cu / qu
        qm, cm = 2.0, 2.0 * _relu_corr(ru)
        mlp = np.diag([2.0, 4 * (math.pi - math.acos(ru)) / (2 * math.pi)])
        through_2 = np.diag([1 / qu, 1 / qu]) @ mlp
        layers.append((through_2, through_1))
        q, c = qu + qm, cu + cm
    sublayers = [m for k in range(depth, j, -1) for m in layers[k - 1]]
    out = [0.0] * (len(sublayers) + 1)
    for choice in itertools.product((0, 1), repeat=len(sublayers)):
        vector = np.ones(2)
        for picked, matrix in zip(choice, sublayers, strict=True):
            if picked:
                vector = matrix @ vector
        out[sum(choice)] += vector[0]
    return out


@pytest.mark.parametrize(("depth", "wrt", "n", "q0", "rho0"),
                         [(3, "x", 3, 1, "1/2"), (3, 1, 4, 2, "0.2"), (2, "x", 2, 1, "-0.3")])
def test_shares_against_a_direct_sum_over_paths(depth, wrt, n, q0, rho0) -> None:
    j = 0 if wrt == "x" else wrt
    expected = _pre_ln_by_hand(depth, j, n, float(q0), float(sympy.Rational(rho0)))
    g = token_path_gradients(depth, wrt, block="transformer-pre", init="he", activation="relu",
                             mlp_ratio=1, attention="uniform", tokens=n, q0=q0, rho0=rho0)
    assert g.gradients == pytest.approx(expected, rel=1e-9, abs=1e-12)
    total = sum(expected)
    assert g.gradient_shares == pytest.approx([v / total for v in expected], rel=1e-9)


@pytest.mark.parametrize("name", ["transformer-pre", "transformer-post", "x + Attn(x)",
                                  "LN(x + Attn(x))", "attention-only",
                                  "x + Attn(LN(x)); x + MLP(LN(x))"])
@pytest.mark.parametrize("attention", ["standard", "tied"])
def test_contributions_add_up_to_the_profiles_d0(name: str, attention: str) -> None:
    options = dict(init="he", activation="gelu", mlp_ratio=4, tokens=5, attention=attention)
    g = token_path_gradients(3, "x", block=name, **options)
    profile = derive.kernel(block=name, depth=3, **options).profile()["backward"]["d_a"]
    assert math.isclose(sum(g.gradients), profile[0], rel_tol=1e-10)
    assert math.isclose(sum(g.gradient_shares), 1.0, rel_tol=1e-12)


def test_deepnorm_with_values_and_wrt_one_adds_up() -> None:
    options = dict(init="he", tokens=3, attention="uniform", values={"alpha": 2, "beta": "1/2"})
    g = token_path_gradients(3, 1, block="transformer-deepnorm", **options)
    back = derive.kernel(block="transformer-deepnorm", depth=3, **options).backward_states[1]
    # f_1 reaches h_1 through beta L_{1,2}: LN's gain at its input's q, times beta^2
    assert math.isclose(g.total, g.profile_total, rel_tol=1e-12)
    assert g.total < back.d_a  # beta^2 = 1/4 and LN's gain shrink it


def test_lengths_text_and_json(capsysbinary) -> None:
    args = ("--block", "transformer-pre", "--depth", "4", "--lengths", "--init", "he",
            "--activation", "gelu", "--mlp-ratio", "4", "--attention", "uniform")
    code, out, err = run(capsysbinary, *args)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert "16 tokens, uniform attention, rho0 = 1/2" in lines[0]
    assert [line.split()[1] for line in lines[2:9]] == [str(math.comb(6, n)) for n in range(7)]
    assert sum(line.startswith("each layer k contributes") for line in lines) == 1
    assert any(line.startswith("no closed form in the depth K") for line in lines)
    _, again, _ = run(capsysbinary, *args)
    assert again == out
    _, data, _ = run(capsysbinary, *args, "--format", "json")
    parsed = json.loads(data)
    g = token_path_gradients(4, 1, block="transformer-pre", init="he", activation="gelu",
                             mlp_ratio=4, attention="uniform")
    assert [r["gradient_share"] for r in parsed["lengths"]] == g.gradient_shares
    assert parsed["closed_form"] is None and parsed["path_closed_form"]["mean"] == "K - 1"


@pytest.mark.parametrize(("args", "message"), [
    (("--tokens", "0"), "tokens must be a whole number of tokens from 1 to 4096"),
    (("--rho0", "2"), "--rho0 must be a number in [-1, 1]"),
    (("--rho0", "r"), "--rho0"),
    (("--tokens", "n"), "--tokens n is a symbol: a kernel profile needs a whole number of tokens"),
    (("--block", "transformer-scaled"), "give them with --set"),
])
def test_bad_input_is_one_line_exit_2(capsysbinary, args, message: str) -> None:
    base = ("--block", "transformer-pre", "--depth", "3", "--lengths")
    code, out, err = run(capsysbinary, *base, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_api_refuses_a_depth_mismatch_and_bad_rho0() -> None:
    with pytest.raises(DeriveError, match="rho0 must be in"):
        token_path_gradients(2, block="x + Attn(x)", rho0=3)
