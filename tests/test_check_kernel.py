"""`derive check --kernel`: two correlated inputs through finite networks, and the biases
and the fan-in weight variance of the NumPy networks.

Independent references: the arc-cosine kernel of ReLU (Cho & Saul 2009) and Sheppard's
orthant probability, written out here with ``math``; a linear block with dropout, a
bias and BatchNorm, worked by hand; and the second moments of He networks with biases
and with sigma_w^2/fan_in weights, worked by hand.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import derive.simulation.kernel_check as kernel_module
from derive.blocks.config import variance_config
from derive.blocks.nodes import Input
from derive.blocks.primitives import Weight
from derive.commands.cli import cli
from derive.errors import DeriveError
from derive.recursions.analysis import variance
from derive.simulation.kernel_check import (
    PLAIN_STACKS,
    PairDraws,
    compare_kernel,
    default_kernel_grid,
    derived_kernel,
    kernel_grid,
    measure_kernel,
    pair_inputs,
)
from derive.simulation.networks import Draws, Network, compare, grid, propagate


def arccos_relu(rho: float) -> float:
    """E[relu(u) relu(v)] / E[relu(u)^2] for unit Gaussians of correlation rho."""
    t = math.acos(rho)
    return (math.sin(t) + (math.pi - t) * math.cos(t)) / math.pi


def orthant(rho: float) -> float:
    """P(u > 0, v > 0) / P(u > 0) (Sheppard): E[relu'(u) relu'(v)] / E[relu'(u)^2]."""
    return (math.pi - math.acos(rho)) / math.pi


# --- biases and the fan-in convention in the NumPy networks --------------------------

def test_a_bias_is_shared_by_every_input_of_a_network() -> None:
    config = variance_config(init="he", sigma_b2="1/2")
    draws = Draws(1, 256, 8, seed=2, count=16)
    zero = np.zeros((16, 8, 256))
    out, _ = Weight(("W", 0), Input()).forward_np([zero], Network(config, draws, 0, zero))
    assert np.all(out == out[:, :1])  # W 0 + b = b, the same row for every input
    assert float((out * out).mean()) == pytest.approx(0.5, rel=0.05)


def test_without_biases_nothing_more_is_drawn() -> None:
    # the draws of a network without biases stay those of before biases existed
    kinds = {}
    for sigma_b2 in (0, "1/4"):
        draws = Draws(2, 32, 4, seed=1, count=2)
        propagate(variance_config(init="he", branch="mlp", sigma_b2=sigma_b2), draws)
        kinds[sigma_b2] = {spawn[0] for spawn in draws._arrays}  # (kind, key, shape, block)
    assert kinds == {0: {0, 1, 2}, "1/4": {0, 1, 2, 4}}  # inputs, readout, weights, biases


def test_biases_agree_with_the_derivation() -> None:
    # He + ReLU, x + W(relu(x)) + b: q_k = q + 2 (q/2) + 1/2 = 2 q + 1/2
    configs = grid(["he"], ["relu"], ["none"], ["single"], sigma_b2="1/2")
    rows = compare(configs, 3, 256, 8, batch=16)
    forward = [r.derived for r in rows if r.direction == "forward"]
    assert forward == pytest.approx([2.5, 5.5, 11.5])
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_fan_in_variance_reaches_every_matrix() -> None:
    # Var W = (3/2)/fan_in: W1 (fan-in n) gives 3/2 q, relu halves it, W2 (fan-in 2n)
    # gives 3/2 of that again: the branch adds 9/8 q, so q_k = (17/8)^k q_0
    configs = grid(["he"], ["relu"], ["none"], ["mlp"], mlp_ratio=2, fan_in_variance="3/2")
    rows = compare(configs, 3, 256, 8, batch=16)
    forward = [r.derived for r in rows if r.direction == "forward"]
    assert forward == pytest.approx([(17 / 8) ** k for k in (1, 2, 3)])
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_a_bias_after_batchnorm_is_shared_by_the_batch() -> None:
    # x + W(relu(W(BN(x)) + b) + b, He: BN gives q = 1, c = 0; W1 gives q = 2 + 1/2 and the
    # batch covariance c = 1/2 (the bias); relu's kernel at (5/2, rho = 1/5) and W2 give
    # the branch's covariance, which the next BatchNorm's gain 1/(q - c) sees
    relu = 2.5 * arccos_relu(0.2) / 2
    c_1 = 2 * relu + 0.5
    q_1 = 1 + 2 * 1.25 + 0.5
    branch_gain = 2 * 0.5 * 2  # W2, relu', W1
    d_1 = 1 + branch_gain / (q_1 - c_1)  # d_1 / d_2
    d_0 = 1 + branch_gain / 1.0  # d_0 / d_1: BN's input at k = 0 has q = 1, c = 0
    analysis = variance("he", "relu", branch="mlp", block="bn-first", sigma_b2="1/2")
    profile = [float(v) for v in analysis.backward.profile(2)]
    assert profile == pytest.approx([d_0 * d_1, d_1, 1.0], rel=1e-12)
    rows = compare([variance_config(init="he", branch="mlp", block="bn-first",
                                    sigma_b2="1/2")], 3, 256, 16, batch=16)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_cli_checks_biases_and_fan_in_variance() -> None:
    for option in (["--sigma-b2", "1/2"], ["--fan-in-variance", "3/2"]):
        result = CliRunner().invoke(cli, ["check", "--init", "he", "--activation", "tanh",
                                          "--norm", "pre", "--depth", "3", "--width", "128",
                                          "--seeds", "8", *option])
        assert result.exit_code == 0, result.output


# --- two correlated inputs -----------------------------------------------------------

def test_pairs_have_the_asked_moments_and_correlation() -> None:
    x = pair_inputs(PairDraws(1, 256, 512, count=2), 3.0, -0.25)
    a, b = x[:, :256], x[:, 256:]
    assert float((a * a).mean()) == pytest.approx(3.0, rel=0.01)
    assert float((b * b).mean()) == pytest.approx(3.0, rel=0.01)
    assert float((a * b).mean()) == pytest.approx(-0.75, abs=0.02)
    # different pairs are independent
    assert abs(float((a[:, :-1] * b[:, 1:]).mean())) < 0.02


def test_he_relu_one_plain_block_is_the_arccosine_kernel() -> None:
    # F(x) = W relu(x): rho_1 is the arc-cosine kernel of rho_0; backward, with the same
    # readout for both inputs, rho^grad_0 = E[relu'(u) relu'(v)] / E[relu'^2] (Sheppard)
    rho0 = 0.5
    [m] = measure_kernel([variance_config(init="he", block="F(x)")], depth=1, width=512,
                         seeds=8, pairs=64, rho0="1/2")
    assert m.forward["rho"][1] == pytest.approx(arccos_relu(rho0), abs=0.01)
    assert m.backward["rho"][0] == pytest.approx(orthant(rho0), abs=0.01)
    assert m.backward["rho"][1] == pytest.approx(1.0, abs=1e-6)
    assert m.forward_error[1] < 0.01
    derived = derived_kernel(variance_config(init="he", block="F(x)"), 1)
    assert derived["forward"]["rho"][1] == pytest.approx(arccos_relu(rho0), rel=1e-12)
    assert derived["backward"]["rho"][0] == pytest.approx(orthant(rho0), rel=1e-12)


def test_he_relu_plain_stack_iterates_the_arccosine_map() -> None:
    rho = [0.3]
    for _ in range(4):
        rho.append(arccos_relu(rho[-1]))
    [m] = measure_kernel([variance_config(init="he", block="phi(W(x))")], depth=4, width=512,
                         seeds=8, pairs=32, rho0="0.3")
    assert m.forward["rho"] == pytest.approx(rho, abs=0.02)


def test_dropout_masks_are_independent_across_inputs() -> None:
    # x + Dropout(W x, 1/2), Var W = 1/n: q_1 = q + 2 q, c_1 = c + c, so rho_1 = 2/3 rho_0;
    # backward d_0 = 1 + 2, g_0 = 1 + 1: rho^grad_0 = 2/3
    config = variance_config(init="xavier", block="x + Dropout(W(x), 1/2)")
    [m] = measure_kernel([config], depth=1, width=512, seeds=8, pairs=32, rho0="1/2")
    assert m.forward["rho"][1] == pytest.approx(1 / 3, abs=0.01)
    assert m.backward["rho"][0] == pytest.approx(2 / 3, abs=0.01)


def test_batchnorm_removes_the_bias_the_batch_shares() -> None:
    # W x + b, Var W = 1/n, sigma_b^2 = 1/2: c = 1/2 + 1/2, q = 1 + 1/2, rho = 2/3; after
    # BatchNorm the bias, shared by the whole batch, is gone: rho = 1/2 again
    # (in a batch of 2048 inputs: BatchNorm's finite-batch error falls like 1/batch)
    plain = variance_config(init="xavier", block="W(x)", sigma_b2="1/2")
    normed = variance_config(init="xavier", block="BN(W(x))", sigma_b2="1/2")
    unbiased = variance_config(init="xavier", block="BN(W(x))")
    [with_bias] = measure_kernel([plain], depth=1, width=256, seeds=4, pairs=64)
    after_bn, without = measure_kernel([normed, unbiased], depth=1, width=256, seeds=2,
                                       pairs=1024)
    assert with_bias.forward["rho"][1] == pytest.approx(2 / 3, abs=0.01)
    assert after_bn.forward["rho"][1] == pytest.approx(1 / 2, abs=0.005)
    assert after_bn.forward["rho"] == pytest.approx(without.forward["rho"], abs=1e-6)
    assert derived_kernel(normed, 1)["forward"]["rho"][1] == pytest.approx(0.5, rel=1e-12)
    assert derived_kernel(plain, 1)["forward"]["rho"][1] == pytest.approx(2 / 3, rel=1e-12)


def test_same_seed_same_measurement_whatever_the_company() -> None:
    he = variance_config(init="he", activation="tanh", block="pre", branch="mlp")
    others = kernel_grid(["xavier"], ["relu"], ["none"])
    settings = {"depth": 2, "width": 64, "seeds": 4, "pairs": 8}
    [alone] = measure_kernel([he], **settings)
    together = measure_kernel([*others, he], **settings)[-1]
    assert together.forward == alone.forward and together.backward == alone.backward
    other_seed = measure_kernel([he], seed=1, **settings)[0]
    assert other_seed.forward != alone.forward


def test_a_wrong_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    right = kernel_module.derived_kernel

    def wrong(config, depth, q0=1, rho0="1/2", width=256):  # type: ignore[no-untyped-def]
        profile = right(config, depth, q0, rho0, width)
        # dropout masks shared by both inputs: the branch's covariance over 1 - p too
        profile["forward"]["rho"] = [r + 0.1 * min(k, 1) for k, r in
                                     enumerate(profile["forward"]["rho"])]
        return profile

    monkeypatch.setattr(kernel_module, "derived_kernel", wrong)
    rows = compare_kernel([variance_config(init="he", block="none")], 2, 128, 4, pairs=16)
    assert not any(r.ok for r in rows if r.direction == "forward")
    assert all(r.ok for r in rows if r.direction == "backward")


def test_grids() -> None:
    labels = [c.label for c in default_kernel_grid()]
    assert len(labels) == len(set(labels)) == 215
    assert "lecun/gelu/phi(W(x))" in labels and "he/tanh/F(x)/mlp" in labels
    assert "xavier/relu/rescaled/single" not in labels  # other presets: He only
    assert len(kernel_grid()) == 3 * 5 * (2 * 12 + 1)
    assert PLAIN_STACKS == ("F(x)", "phi(W(x))")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rho0": 2}, "rho0 must be a number in \\[-1, 1\\], got 2"),
     ({"rho0": "nan"}, "rho0 must be a finite number"),
     ({"q0": 0}, "q0 must be a finite number > 0"),
     ({"tolerance": -1}, "tolerance must be a finite number > 0"),
     ({"pairs": 0}, "pairs must be an integer >= 1")])
def test_bad_input_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(DeriveError, match=message):
        compare_kernel([variance_config(init="he")], 2, 16, 1, **kwargs)


# --- the command line ----------------------------------------------------------------

SMALL = ["check", "--kernel", "--init", "he", "--activation", "relu", "--depth", "3",
         "--width", "128", "--seeds", "4"]


def test_cli_table_and_exit_code() -> None:
    result = CliRunner().invoke(cli, [*SMALL, "--block", "F(x)", "--block", "none",
                                      "--branch", "single"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["configuration", "direction", "k", "derived", "measured",
                                "s.e.", "abs.", "error", "ok"]
    assert [line.split()[:3] for line in lines[2:6]] == [
        ["he/relu/F(x)/single", "forward", "3"], ["he/relu/F(x)/single", "backward", "0"],
        ["he/relu/none/single", "forward", "3"], ["he/relu/none/single", "backward", "0"]]
    assert lines[-1].startswith("2 configurations, 12 correlations compared")
    assert lines[-1].endswith("all within 0.05")


def test_cli_exits_1_when_a_rule_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    right = kernel_module.derived_kernel

    def wrong(config, depth, q0=1, rho0="1/2", width=256):  # type: ignore[no-untyped-def]
        profile = right(config, depth, q0, rho0, width)
        profile["backward"]["rho"] = [r / 2 for r in profile["backward"]["rho"]]
        return profile

    monkeypatch.setattr(kernel_module, "derived_kernel", wrong)
    result = CliRunner().invoke(cli, [*SMALL, "--block", "F(x)", "--branch", "single"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "3 outside 0.05" in result.output


def test_cli_json_keys_and_reproducible() -> None:
    args = [*SMALL, "--block", "pre", "--branch", "mlp", "--rho0", "0.9", "--format", "json",
            "--blocks", "-t", "0.1"]
    first, second = CliRunner().invoke(cli, args), CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    document = json.loads(first.output)
    assert list(document) == ["settings", "ok", "rows"]
    assert document["settings"] == {"kernel": True, "depth": 3, "width": 128, "seeds": 4,
                                    "pairs": 16, "seed": 0, "q0": 1.0, "rho0": "9/10",
                                    "tolerance": 0.1}
    assert document["ok"] is True and len(document["rows"]) == 2 * 3
    assert list(document["rows"][0]) == ["configuration", "direction", "k", "derived",
                                         "measured", "stderr", "error", "tolerance", "ok"]
    first_row = document["rows"][0]
    assert (first_row["configuration"], first_row["direction"], first_row["k"]) == (
        "he/relu/pre/mlp", "forward", 1)


def test_cli_with_biases_and_fan_in_variance() -> None:
    result = CliRunner().invoke(cli, [*SMALL, "--block", "F(x)", "--activation", "tanh",
                                      "--sigma-b2", "1/2", "--fan-in-variance", "3/2",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert {r["configuration"] for r in rows} == {"he/relu/F(x)/single", "he/relu/F(x)/mlp",
                                                  "he/tanh/F(x)/single", "he/tanh/F(x)/mlp"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derive", "check", *args],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--kernel", "--rho0", "2"], "--rho0 must be a number in [-1, 1], got 2"),
     (["--kernel", "--rho0", "nan"], "--rho0 must be a finite number"),
     (["--kernel", "--rho0", "1/0"], "--rho0"),
     (["--kernel", "--rho0", "r"], "--rho0"),
     (["--rho0", "0.3"], "--rho0 goes with --kernel"),
     (["--kernel", "--weights"], "--kernel compares correlations: drop --weights"),
     (["--kernel", "--tolerance", "0"], "tolerance must be a finite number > 0"),
     (["--kernel", "--batch", "0"], "--batch must be an integer >= 1"),
     (["--kernel", "--sigma-b2", "-1"], "sigma_b2 must be >= 0"),
     (["--kernel", "--all", "--init", "he"], "--all checks the whole grid")])
def test_cli_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_default_kernel_check_passes() -> None:
    done = run("--kernel")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    summary = done.stdout.splitlines()[-1]
    assert summary.startswith("215 configurations, 2580 correlations compared")
    assert summary.endswith("all within 0.05")


@pytest.mark.slow
def test_kernel_check_with_biases_passes() -> None:
    configs = kernel_grid(["he", "xavier"], ["relu", "tanh", "erf"],
                          blocks=["F(x)", "phi(W(x))", "none", "pre", "post"],
                          sigma_b2="1/2")
    rows = compare_kernel(configs, tolerance=0.05)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
