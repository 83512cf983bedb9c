"""The simulation of finite networks, its hand-written backward pass, and `derive check`.

The derived profiles come from derive.variance; the measured ones from NumPy
networks built here. Independent checks of the simulation itself: central
finite differences for the backward pass, and known results (UDL 11.3: He +
ReLU doubles E[h_k^2] per block) for the forward pass.
"""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import derive.simulation.networks as simulate_module
from derive.blocks.config import VarianceConfig, variance_config
from derive.blocks.presets import PRESETS
from derive.commands.cli import cli
from derive.errors import DeriveError
from derive.inputs.choices import ACTIVATIONS, BRANCHES, NORMS
from derive.simulation.networks import Draws, compare, derived, grid, measure, propagate, simulate

#: The grid's test settings: every block of every preset's 30 configurations within TOLERANCE.
GRID = {"depth": 4, "width": 256, "seeds": 16, "batch": 16, "tolerance": 0.1}


@pytest.mark.slow
def test_whole_grid_agrees_with_the_derivation() -> None:
    configs = grid()
    assert len(configs) == 3 * 5 * len(PRESETS) * 2
    rows = compare(configs, **GRID)
    assert len(rows) == len(configs) * 2 * GRID["depth"]
    bad = [r for r in rows if not r.ok]
    assert not bad, "\n".join(
        f"{r.label} {r.direction} k={r.k}: derived {r.derived:.5g} measured {r.measured:.5g}"
        for r in bad
    )
    # the margin: a typical block is well inside the tolerance
    assert np.median([r.error for r in rows]) < GRID["tolerance"] / 4


@pytest.mark.slow
def test_options_agree_with_the_derivation() -> None:
    configs = grid(["he", "xavier"], ["relu", "tanh"], NORMS, ["mlp"],
                   mlp_ratio=2, dropout="0.2", gamma="1.5")
    rows = compare(configs, depth=4, width=256, seeds=16, batch=8)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


@pytest.mark.parametrize(
    ("activation", "norm", "branch"), list(itertools.product(ACTIVATIONS, NORMS, BRANCHES))
)
def test_backward_pass_matches_finite_differences(activation: str, norm: str, branch: str) -> None:
    config = variance_config(init="he", activation=activation, norm=norm, branch=branch,
                            mlp_ratio=2, dropout="0.25", gamma="1.5", negative_slope="0.2")
    draws = Draws(3, 6, 2, seed=7, count=2)
    x = draws.inputs() * 1.3
    hs, grads = propagate(config, draws, inputs=x)
    g = draws.upstream()

    def loss(inputs: np.ndarray) -> float:
        return float(np.sum(g * propagate(config, draws, inputs=inputs)[0][-1]))

    eps = 1e-6
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        numeric[index] = (loss(x + step) - loss(x - step)) / (2 * eps)
    np.testing.assert_allclose(grads[0], numeric, rtol=1e-5, atol=1e-7)
    assert len(hs) == len(grads) == 4


def test_he_relu_doubles_per_block() -> None:
    # UDL 11.3: with He initialization the variance doubles in every residual block
    sim = simulate("he", "relu", depth=4, width=512, seeds=32, batch=8)
    doubling = 2.0 ** np.arange(5)
    np.testing.assert_allclose(sim.forward, doubling, rtol=0.1)
    np.testing.assert_allclose(sim.backward, doubling[::-1], rtol=0.1)


def test_pre_norm_grows_linearly() -> None:
    # pre-LN, He + ReLU: each block adds n sigma_w^2 E[relu(z)^2] = 1 for z ~ N(0, 1),
    # so q_k = q_0 + k, and the backward factors telescope to d_k / d_K = q_K / q_k
    sim = simulate("he", "relu", "pre", depth=4, width=512, seeds=32, batch=8, q0=2)
    q = 2.0 + np.arange(5)
    np.testing.assert_allclose(sim.forward, q, rtol=0.05)
    np.testing.assert_allclose(sim.backward, q[-1] / q, rtol=0.05)


def test_post_norm_fixes_the_second_moment() -> None:
    sim = simulate("he", "relu", "post", depth=3, width=64, seeds=2, batch=4, gamma=2, q0=3)
    np.testing.assert_allclose(sim.forward[1:], [4.0] * 3, rtol=1e-12)
    assert sim.forward[0] == pytest.approx(3, rel=0.1)


def test_same_seed_same_measurements() -> None:
    a = simulate("xavier", "gelu", "pre", "mlp", depth=3, width=64, seeds=5, batch=4, seed=3)
    b = simulate("xavier", "gelu", "pre", "mlp", depth=3, width=64, seeds=5, batch=4, seed=3)
    c = simulate("xavier", "gelu", "pre", "mlp", depth=3, width=64, seeds=5, batch=4, seed=4)
    assert a == b
    assert a.forward != c.forward


def test_measurement_does_not_depend_on_the_company() -> None:
    he = variance_config(init="he", activation="tanh", norm="pre", branch="mlp", dropout="0.1")
    others = grid(["xavier"], ["relu"], ["none"])
    settings = {"depth": 3, "width": 64, "seeds": 6, "batch": 4}
    [(alone_f, alone_b)] = measure([he], **settings)
    together = measure([*others, he], **settings)[-1]
    np.testing.assert_allclose(together[0], alone_f, rtol=1e-12)
    np.testing.assert_allclose(together[1], alone_b, rtol=1e-12)


def test_wrong_prediction_is_caught() -> None:
    def wrong(config: VarianceConfig, depth: int, q0: float, width: int) -> tuple:
        forward, backward = derived(config, depth, q0, width)
        return [v * 1.5 for v in forward], backward  # e.g. 3/2 instead of 2 per block

    configs = grid(["he"], ["relu"], ["none"], ["single"])
    rows = compare(configs, 4, 256, 8, batch=8, predict=wrong)
    assert not any(r.ok for r in rows if r.direction == "forward")
    assert all(r.ok for r in rows if r.direction == "backward")


def test_explicit_weight_variance_enters_as_n_sigma2() -> None:
    # sigma_w2 = 2/n is He initialization: the same derived profile at n = width
    he = derived(variance_config(init="he", activation="tanh"), 4)
    explicit = derived(variance_config(activation="tanh", sigma_w2="1/256"), 4, width=512)
    np.testing.assert_allclose(explicit, he, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": "gamma"}, "gamma must be a number"),
        ({"width": 1}, "width must be an integer >= 2"),
        ({"seeds": 0}, "seeds must be an integer >= 1"),
        ({"depth": 0}, "depth must be an integer >= 1"),
        ({"q0": -1}, "q0 must be a finite number > 0"),
        ({"branch": "mlp", "mlp_ratio": "1/3", "width": 64}, "whole number of hidden units"),
        ({"init": "kaiming"}, "unknown init 'kaiming'"),
    ],
)
def test_bad_input_names_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(DeriveError, match=message):
        simulate(**kwargs)


def test_bad_tolerance() -> None:
    with pytest.raises(DeriveError, match="tolerance must be a finite number > 0"):
        compare(grid(["he"], ["relu"], ["none"], ["single"]), 2, 16, 1, tolerance=0)


SMALL = ["--init", "he", "--activation", "relu", "--depth", "3", "--width", "64", "--seeds", "4"]


def test_cli_table_and_exit_code() -> None:
    result = CliRunner().invoke(cli, ["check", *SMALL, "--norm", "pre", "--tolerance", "0.3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["configuration", "direction", "k", "derived", "measured",
                                "rel.", "error", "ok"]
    assert any(line.startswith("he/relu/pre/single  forward") for line in lines)


def test_cli_exits_1_when_a_prediction_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(config: VarianceConfig, depth: int, q0: float, width: int) -> tuple:
        forward, backward = derived(config, depth, q0, width)
        return forward, [v / 2 for v in backward]

    monkeypatch.setattr(simulate_module, "derived", wrong)
    result = CliRunner().invoke(cli, ["check", *SMALL, "--norm", "none", "--branch", "single"])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_cli_json_is_reproducible() -> None:
    args = ["check", *SMALL, "--norm", "post", "--format", "json", "--blocks", "-t", "0.5"]
    first, second = CliRunner().invoke(cli, args), CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    document = json.loads(first.output)
    assert document["ok"] is True
    assert len(document["rows"]) == 2 * 2 * 3


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derive", "check", *args],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depth", "0"], "depth must be an integer >= 1"),
        (["--init", "kaiming"], "kaiming"),
        (["--gamma", "g", *SMALL], "--gamma must be a finite number"),
        (["--all", "--init", "he"], "--all"),
        (["--tolerance", "-1", *SMALL], "tolerance must be a finite number > 0"),
        (["--q0", "inf", *SMALL], "--q0 must be a finite number"),
        (["--q0", "0", *SMALL], "q0 must be a finite number > 0"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
