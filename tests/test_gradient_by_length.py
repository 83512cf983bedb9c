"""The gradient carried by each path length, against independent computations.

Independent checks: the binomial row (math.comb) for He + ReLU without
normalization; a brute-force sum over every subset of blocks of the product of
the per-block gains for pre-LN, with q_{k-1} = q_0 + k - 1 (UDL 11.4: pre-LN adds
one per block); the split gains summing back to Block.gain and their product to
the variance analysis's d_0/d_K; the closed forms against the computed means;
floats against exact rationals. Veit et al. (2016, "Residual networks behave like
ensembles of relatively shallow networks", sec. 4.2): for 54 blocks, paths of
length 5 to 17 are 0.45% of all paths. The shares measured in finite NumPy networks,
whose backward pass keeps one gradient per path length, against both.
"""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import pytest
import sympy
from cli_runner import invoke
from cli_runner import run_paths as run

from derive.blocks.block import block
from derive.blocks.config import variance_config
from derive.blocks.presets import PRESETS
from derive.errors import DeriveError
from derive.pathsums.by_length import MAX_DEPTH, path_gradients, term_gains
from derive.recursions.analysis import variance
from derive.recursions.block_maps import Q_PREV, block_input
from derive.simulation.networks import checkable, measure_lengths


def _fraction(value: sympy.Expr) -> Fraction:
    return Fraction(int(value.p), int(value.q))


def test_he_relu_without_norm_is_binomial_like_the_counts() -> None:
    g = path_gradients(54, "x", init="he")
    assert [_fraction(s) for s in g.gradient_shares] == [
        Fraction(math.comb(54, n), 2**54) for n in range(55)]
    assert g.counts == [math.comb(54, n) for n in range(55)]


def test_veit_54_blocks_lengths_5_to_17_are_045_percent_of_paths() -> None:
    path_share, gradient_share = path_gradients(54, "x", init="he").window(5, 17)
    assert round(100 * path_share, 2) == 0.45
    assert gradient_share == pytest.approx(path_share)  # He + ReLU: every path alike


def test_pre_ln_is_not_binomial_brute_force_over_subsets() -> None:
    depth, q0 = 8, Fraction(1)
    branch_gain = [1 / (q0 + k - 1) for k in range(1, depth + 1)]  # gamma^2 / q_{k-1}
    totals = [Fraction(0)] * (depth + 1)
    for chosen in itertools.product((0, 1), repeat=depth):
        weight = Fraction(1)
        for gain, on in zip(branch_gain, chosen, strict=True):
            weight *= gain if on else 1
        totals[sum(chosen)] += weight
    norm = sum(totals)
    g = path_gradients(depth, "x", init="he", block="pre")
    assert [_fraction(s) for s in g.gradient_shares] == [v / norm for v in totals]
    assert g.gradient_shares != [sympy.Rational(math.comb(depth, n), 2**depth)
                                 for n in range(depth + 1)]
    assert g.mean < g.path_mean


@pytest.mark.parametrize("spec", list(PRESETS))
def test_split_gains_add_up_to_the_block_gain(spec: str) -> None:
    config = variance_config(init="he", block=block(spec))
    x = block_input(config)
    assert sympy.simplify(sum(term_gains(config.block, config, x))
                          - config.block.gain(config, x)) == 0


@pytest.mark.parametrize("spec", ["none", "pre", "post", "rescaled", "sandwich"])
def test_product_of_block_gains_is_the_backward_profile(spec: str) -> None:
    """prod_k G_k(1) = d_0/d_K of the variance analysis."""
    depth = 6
    g = path_gradients(depth, "x", init="he", block=spec)
    total = sympy.Integer(1)
    for qv, _ in g.forward_moments(True):  # the same q_{k-1} as the shares
        total *= sum(c.xreplace({Q_PREV: qv}) for c in g.polynomial)
    assert sympy.simplify(total - variance("he", block=spec).backward.at(depth)) == 0


@pytest.mark.parametrize(("spec", "values"), [("pre", {}), ("none", {}),
                                              ("skipinit", {"alpha": "1/2"}), ("post", {})])
def test_closed_form_means_match_the_computed_ones(spec: str, values: dict) -> None:
    g = path_gradients(30, "x", init="he", block=spec, values=values)
    mean, var = g.closed_form
    K = sympy.Symbol("K", integer=True, nonnegative=True)
    assert float(mean.subs(K, 30)) == pytest.approx(g.mean, rel=1e-12)
    assert float(var.subs(K, 30)) == pytest.approx(g.spread**2, rel=1e-9)


def test_nf_resnet_mean_is_a_harmonic_tail() -> None:
    """q_{k-1} = 1 + (k-1) alpha^2, so p_k = alpha^2/(alpha^2 + q_{k-1}) = 1/(k + 25) at
    alpha = 1/5: the mean is H(K + 25) - H(25)."""
    g = path_gradients(8, "x", init="he", block="nf-resnet", values={"alpha": "1/5"})
    K = sympy.Symbol("K", integer=True, nonnegative=True)
    assert sympy.simplify(g.closed_form[0] - (sympy.harmonic(K + 25) - sympy.harmonic(25))) == 0


def test_constant_share_is_binomial_k_p() -> None:
    g = path_gradients(40, "x", init="he", block="skipinit", values={"alpha": "1/2"})
    p = Fraction(1, 5)  # alpha^2 / (1 + alpha^2)
    assert [_fraction(s) for s in g.gradient_shares] == [
        math.comb(40, n) * p**n * (1 - p) ** (40 - n) for n in range(41)]
    assert "binomial(40, p)" in g.effect() and "shorter" in g.effect()


def test_floats_agree_with_exact_and_any_depth_works() -> None:
    exact = path_gradients(54, "x", init="he", block="pre")
    floats = path_gradients(54, "x", init="he", block="pre", exact=False)
    assert [float(s) for s in exact.gradient_shares] == pytest.approx(floats.gradient_shares,
                                                                      abs=1e-14)
    deep = path_gradients(10_000, "x", init="he", block="pre")
    assert sum(deep.gradient_shares) == pytest.approx(1)
    assert deep.mean == pytest.approx(float(sympy.harmonic(10_001) - 1), rel=1e-9)


def test_wrt_a_block_uses_the_later_blocks_only() -> None:
    g = path_gradients(6, 2, init="he", block="pre")
    direct = path_gradients(6, "x", init="he", block="pre")
    assert len(g.rows) == 5 and len(direct.rows) == 7
    assert g.mean < direct.mean


def test_symbolic_shares_at_small_depth() -> None:
    g = path_gradients(3, "x", init="he", block="skipinit")
    alpha = sympy.Symbol("alpha", positive=True)
    assert sympy.simplify(g.gradient_shares[3] - alpha**6 / (1 + alpha**2) ** 3) == 0


def test_bad_input() -> None:
    with pytest.raises(DeriveError, match="up to depth"):
        path_gradients(MAX_DEPTH + 1, init="he")
    g = path_gradients(54, init="he")
    with pytest.raises(DeriveError, match=r"high must be an integer in 0\.\.54"):
        g.window(5, 55)
    with pytest.raises(DeriveError, match="exceeds"):
        g.window(17, 5)
    with pytest.raises(DeriveError, match="need numbers"):
        path_gradients(500, init="he", block="skipinit")
    with pytest.raises(DeriveError, match="q0 must be > 0"):
        path_gradients(5, init="he", q0=0)


def test_cli_length_table_json(capsysbinary) -> None:
    code, out, err = run(capsysbinary, "--depth", "54", "--wrt", "x", "--lengths", "--block",
                         "pre", "--init", "he", "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    rows = data["lengths"]
    assert [r["length"] for r in rows] == list(range(55))
    assert set(rows[0]) == {"length", "count", "path_share", "gradient_share"}
    assert rows[20]["count"] == math.comb(54, 20)
    assert sum(r["gradient_share"] for r in rows) == pytest.approx(1)
    assert data["mean"] == pytest.approx(float(sympy.harmonic(55) - 1))


def test_cli_length_table_text(capsysbinary) -> None:
    code, out, _ = run(capsysbinary, "--depth", "54", "--wrt", "x", "--lengths", "--init", "he",
                       "--span", "5..17")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["length", "count", "share", "of", "paths", "share", "of",
                                "gradient"]
    assert "lengths 5..17: 0.4537% of the paths, 0.4537% of the gradient" in out


def test_a_span_of_symbolic_shares_is_their_sum(capsysbinary) -> None:
    """With a symbol left in the block, the span's share of gradient is an expression: at
    alpha = 1/2 it is the sum of the shares derived with alpha = 1/2 from the start."""
    spec = "x + alpha*F(LN(x))"
    (alpha,) = block(spec).symbols
    _, share = path_gradients(6, "x", init="he", block=spec).window(1, 3)
    given = path_gradients(6, "x", init="he", block=spec, values={"alpha": "1/2"})
    assert sympy.simplify(share.xreplace({alpha: sympy.Rational(1, 2)})
                          - sum(given.gradient_shares[1:4])) == 0
    code, out, err = run(capsysbinary, "--depth", "6", "--wrt", "x", "--block", spec,
                         "--init", "he", "--span", "1..3", "--format", "json")
    assert (code, err) == (0, "")
    shown = sympy.sympify(json.loads(out)["span"]["gradient_share"], locals={"alpha": alpha})
    assert sympy.simplify(shown - share) == 0


def test_cli_block_expansion(capsysbinary) -> None:
    code, out, _ = run(capsysbinary, "--depth", "2", "--wrt", "x", "--block", "x + alpha*F(x)")
    assert code == 0
    assert out.splitlines()[0] == "∂y/∂x = I + α·J₁ + α·J₂ + α²·J₂J₁"
    code, out, _ = run(capsysbinary, "--depth", "3", "--block", "x + F(x)")
    assert out.splitlines()[0].startswith("∂y/∂f₁ = I + ∂f₂/∂f₁")  # the plain block: as ever


def test_cli_block_expansion_json(capsysbinary) -> None:
    code, out, _ = run(capsysbinary, "--depth", "13", "--wrt", "x", "--block", "pre",
                       "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["count"] == 2**13 == len(data["choices"])
    assert data["choices"][:3] == [[0] * 13, [0] * 12 + [1], [0] * 11 + [1, 0]]
    assert data["blocks"] == list(range(13, 0, -1))
    assert data["text"].count(" + ") == 2**13 - 1
    assert data["latex"].startswith("\\frac{\\partial y}{\\partial x} = I + J_{1} L_{1}")


@pytest.mark.parametrize(("args", "message"), [
    (["--depth", "54", "--lengths", "--init", "he", "--span", "0..99"], "0..53"),
    (["--depth", "54", "--lengths", "--init", "he", "--span", "five"], "--span takes LO..HI"),
    (["--depth", "200000", "--lengths", "--init", "he"], "up to depth"),
    (["--depth", "3", "--block", "x + G(x)"], "block 'x + G(x)'"),
    (["--depth", "3", "--block", "x + F(x) + F(LN(x))"], "one branch F"),
    (["--depth", "30", "--block", "pre"], "more than 2^22"),
])
def test_cli_bad_input_one_line_exit_2(capsysbinary, args: list[str], message: str) -> None:
    code, out, err = run(capsysbinary, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


# --- measured in finite networks -----------------------------------------------------

@pytest.mark.slow
def test_measured_shares_of_he_relu_are_binomial() -> None:
    """The simulation's split of the backward pass by length, against math.comb."""
    depth = 6
    measured = measure_lengths(variance_config(init="he"), depth=depth, width=512, seeds=32,
                               batch=16)
    want = [math.comb(depth, n) / 2**depth for n in range(depth + 1)]
    assert list(measured) == pytest.approx(want, rel=0.05)


@pytest.mark.parametrize(("spec", "activation", "branch"), [
    ("pre", "tanh", "single"), ("post", "gelu", "single"), ("bn-first", "relu", "single"),
    ("sandwich", "relu", "mlp"), ("nf-resnet", "gelu", "single"), ("dropout", "tanh", "single"),
    ("deepnorm", "relu", "single"), ("fixup", "relu", "single"),
])
@pytest.mark.slow
def test_derived_shares_agree_with_the_simulation(spec: str, activation: str,
                                                   branch: str) -> None:
    depth = 6
    config = variance_config(init="he", activation=activation, branch=branch,
                            block=checkable(spec))
    derived = path_gradients(depth, init="he", activation=activation, branch=branch,
                             block=checkable(spec)).gradient_shares
    measured = measure_lengths(config, depth=depth, width=512, seeds=32, batch=16)
    assert len(measured) == len([s for s in derived if s > 0])
    for want, got in zip(derived, measured, strict=False):
        assert float(got) == pytest.approx(float(want), rel=0.1)


@pytest.mark.slow
def test_cli_check_lengths_json(capsysbinary) -> None:
    code, out, err = invoke(capsysbinary, "check", "--init", "he", "--activation", "relu",
                            "--branch", "single", "--block", "pre", "--lengths", "--blocks",
                            "--format", "json")
    assert code == 0 and err == "", out
    data = json.loads(out)
    rows = [r for r in data["rows"] if r["direction"] == "lengths"]
    assert [r["k"] for r in rows] == list(range(7))
    assert rows[0]["derived"] == pytest.approx(1 / 7)  # pre-LN at depth 6: prod k/(k+1)
    assert data["settings"]["lengths"] is True and all(r["ok"] for r in rows)


def test_check_progress_counts_the_length_measurements() -> None:
    from derive.simulation.networks import CHUNK, compare, grid

    configs = grid(["he"], ["relu"], ["none", "pre"], ["single"])
    ticks: list[int] = []
    rows = compare(configs, 2, 64, 8, batch=4, lengths=True, progress=ticks.append)
    assert len(ticks) == 2 * len(configs) + -(-8 // CHUNK)
    assert [r.k for r in rows if r.direction == "lengths"] == [0, 1, 2, 0, 1, 2]
