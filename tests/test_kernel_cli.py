"""`derive kernel` on the command line and `derive.kernel` in the API.

The values are checked against the arc-cosine kernels of Cho & Saul (2009), written out
here with ``math``: for u, v Gaussian with variance q and correlation r,
E[relu(u) relu(v)] = q (sqrt(1 - r^2) + (pi - acos r) r) / (2 pi) and
E[step(u) step(v)] = (pi - acos r) / (2 pi).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from cli_runner import invoke

import derive
from derive.commands.kernel import plain_stack, prose
from derive.errors import DeriveError


def run(capsysbinary, *args: str) -> tuple[int, str, str]:
    return invoke(capsysbinary, "kernel", *args)


def data(capsysbinary, *args: str) -> dict:
    code, out, err = run(capsysbinary, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))


def arc_cosine(r: float) -> float:
    """rho after one He ReLU layer W relu(.): 2 E[relu(u) relu(v)] / q (Cho & Saul)."""
    return (math.sqrt(1 - r * r) + (math.pi - math.acos(r)) * r) / math.pi


def step_correlation(r: float) -> float:
    """The gradients' correlation factor of one ReLU: E[step step] / E[step^2]."""
    return (math.pi - math.acos(r)) / math.pi


# --- text ---------------------------------------------------------------------------------

def test_text_has_the_header_and_both_sections(capsysbinary) -> None:
    code, out, err = run(capsysbinary, "--init", "he", "--depth", "5")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("he/relu/none/single: two inputs") and "ρ₀ = 1/2" in lines[0]
    assert lines[1] == "block: B(x) = x + F(x) (He et al. 2016; UDL 11.2)"
    forward, backward = out.index("\nforward: "), out.index("\nbackward: ")
    assert forward < backward and "\nphase: " not in out  # a residual block has no phase
    for section in (out[forward:backward], out[backward:]):
        for row in ("recursion", "law", "why", "at K = 5"):
            assert f"\n  {row}" in section, (row, section)
    assert "ρₖ = " in out[forward:backward] and "ρᵍʳᵃᵈₖ₋₁ = " in out[backward:]
    assert "ρᵍʳᵃᵈ₀ = " in out[backward:] and "ρ_5 = " in out[forward:backward]


@pytest.mark.parametrize("args", [
    ("--init", "he", "--block", "F(x)"), ("--init", "he", "--norm", "pre"),
    ("--init", "he", "--dropout", "0.1"), ("--init", "lecun", "--activation", "linear"),
    ("--init", "he", "--block", "bn-first"), ("--activation", "tanh"),
    ("--activation", "erf", "--block", "F(x)", "--sigma-b2", "0.1")])
def test_text_reads_in_a_terminal(capsysbinary, args) -> None:
    code, out, _ = run(capsysbinary, *args)
    assert code == 0
    assert "$" not in out and "\\" not in out and "**" not in out, out


def test_the_laws_reason_is_written_without_latex() -> None:
    assert prose(r"shrinks by $\frac{2 \sqrt{2}}{3 \pi}\,\epsilon^{\frac{3}{2}}$ a block") == (
        "shrinks by (2 √2)/(3 π) ε^(3/2) a block")
    assert prose(r"at $\rho^* = 1$, $k^{-3}$, $\chi_c$") == "at ρ* = 1, k⁻³, χ_c"


def test_a_plain_stack_gets_its_phase(capsysbinary) -> None:
    code, out, _ = run(capsysbinary, "--init", "he", "--block", "F(x)")
    assert code == 0
    phase = out[out.index("\nphase: "):]
    assert "hₖ = W·φ(hₖ₋₁) + b" in phase and "critical" in phase
    assert "\n  χ₁           1:" in phase  # He + ReLU: chi_1 = 2 E[step^2] = 1


def test_without_a_fixed_point_the_phase_does_not_decide_the_correlation(capsysbinary) -> None:
    # He + leaky ReLU: chi_1 = 2 (1 + a^2)/2 > 1, yet q_k grows without a fixed point, and
    # without a bias the correlation map of a homogeneous activation does not see sigma_w^2
    d = data(capsysbinary, "--init", "he", "--activation", "leaky_relu", "--block", "F(x)",
             "--negative-slope", "0.5", "--depth", "3")
    assert d["phase"]["chi_1"] == pytest.approx(1.25) and d["phase"]["phase"] == "chaotic"
    assert d["phase"]["q_star"] is None and "no fixed point q* > 0" in d["phase"]["note"]
    assert d["forward"]["law"]["limit"] == 1.0  # the correlation still goes to 1
    code, out, _ = run(capsysbinary, "--init", "he", "--activation", "leaky_relu",
                       "--block", "F(x)", "--negative-slope", "0.5", "--depth", "3")
    assert code == 0
    assert "\n  phase        chaotic by χ₁ alone: the length map has no fixed point" in out


def test_the_phase_of_phi_of_w_names_the_pre_activations(capsysbinary) -> None:
    code, out, _ = run(capsysbinary, "--init", "lecun", "--block", "relu(W(x))", "--depth", "2")
    assert code == 0 and "pre-activations uₖ" in out and "ordered" in out


@pytest.mark.parametrize(("init", "extra", "sigma_w2"), [
    ("xavier", (), "1"), ("he", (), "2"), ("lecun", (), "1"),
    ("he", ("--fan-in-variance", "3"), "3")])
def test_the_phase_uses_the_fan_in_variance_the_config_implies(capsysbinary, init, extra,
                                                              sigma_w2) -> None:
    phase = data(capsysbinary, "--init", init, "--block", "F(x)", "--depth", "2", *extra)["phase"]
    assert phase["network"] == "W(phi(x))" and phase["sigma_w2"] == sigma_w2
    # ReLU: chi_1 = sigma_w^2 E[step(z)^2] = sigma_w^2 / 2
    assert phase["chi_1"] == pytest.approx(int(sigma_w2) / 2, abs=1e-12)
    assert phase["phase"] == {"1": "ordered", "2": "critical", "3": "chaotic"}[sigma_w2]


@pytest.mark.parametrize("args", [("--block", "x + F(x)"), ("--block", "F(x)", "--branch", "mlp"),
                                  ("--block", "F(x)", "--dropout", "0.1"),
                                  ("--block", "W(W(x))"), ("--block", "F(LN(x))")])
def test_no_phase_where_the_block_is_not_a_plain_stack(capsysbinary, args) -> None:
    assert data(capsysbinary, "--init", "he", "--depth", "2", *args)["phase"] is None


def test_plain_stack_recognizes_the_two_forms() -> None:
    assert plain_stack(derive.variance_config(block="tanh(W(x))")) == ("tanh", "phi(W(x))")
    assert plain_stack(derive.variance_config(activation="erf", block="F(x)")) == (
        "erf", "W(phi(x))")
    assert plain_stack(derive.variance_config(block="W0(relu(x))")) is None


# --- json ---------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [0, 1, 7])
def test_json_lists_run_over_every_depth(capsysbinary, depth) -> None:
    d = data(capsysbinary, "--init", "he", "--rho0", "0.3", "--depth", str(depth))
    assert sorted(d["forward"]) == ["c", "law", "map", "q_a", "q_b", "rho"]
    assert sorted(d["backward"]) == ["d_a", "d_b", "g", "law", "map", "rho"]
    for name in ("q_a", "q_b", "c", "rho"):
        assert len(d["forward"][name]) == depth + 1
    for name in ("d_a", "d_b", "g", "rho"):
        assert len(d["backward"][name]) == depth + 1
        assert d["backward"][name][-1] == 1.0  # normalized at the output
    assert d["forward"]["rho"][0] == 0.3 and d["forward"]["q_a"][0] == 1.0
    assert d["forward"]["map"].startswith("\\rho_{k} = ")
    assert d["backward"]["map"].startswith("\\rho^{grad}_{k - 1} = ")
    assert d["rho0"] == "3/10" and d["depth"] == depth


@pytest.mark.parametrize("rho0", [-0.9, -0.3, 0.0, 0.5, 0.99])
def test_plain_he_relu_follows_the_arc_cosine_kernel(capsysbinary, rho0) -> None:
    d = data(capsysbinary, "--init", "he", "--block", "F(x)", "--rho0", str(rho0),
             "--depth", "4", "--q0", "3")
    expected = [rho0]
    for _ in range(4):
        expected.append(arc_cosine(expected[-1]))
    assert d["forward"]["rho"] == pytest.approx(expected, abs=1e-12)
    assert d["forward"]["q_a"] == pytest.approx([3.0] * 5, rel=1e-12)  # He keeps q
    # backward: the gradients' correlation at the input is the product of the factors
    grads = [1.0]
    for index in range(4, 0, -1):
        grads.append(grads[-1] * step_correlation(expected[index - 1]))
    assert d["backward"]["rho"] == pytest.approx(grads[::-1], abs=1e-12)


@pytest.mark.parametrize("rho0", [-0.5, 0.2, 0.8])
def test_residual_he_relu_averages_the_skip_and_the_branch(capsysbinary, rho0) -> None:
    d = data(capsysbinary, "--init", "he", "--rho0", str(rho0), "--depth", "1")
    # x + F(x): q doubles, c = c_0 + q_0 * arc_cosine(rho_0)
    assert d["forward"]["rho"][1] == pytest.approx((rho0 + arc_cosine(rho0)) / 2, abs=1e-12)
    assert d["forward"]["q_a"][1] == pytest.approx(2.0, rel=1e-12)


def test_lecun_linear_plain_is_the_identity(capsysbinary) -> None:
    d = data(capsysbinary, "--init", "lecun", "--activation", "linear", "--block", "F(x)",
             "--rho0", "-0.4", "--depth", "6")
    assert d["forward"]["rho"] == pytest.approx([-0.4] * 7, abs=1e-14)
    assert d["backward"]["rho"] == pytest.approx([1.0] * 7, abs=1e-14)
    assert d["forward"]["map"] == "\\rho_{k} = \\rho_{k - 1}"


def test_json_is_byte_identical_across_runs() -> None:
    args = [sys.executable, "-m", "derive", "kernel", "--init", "he", "--dropout", "0.1",
            "--rho0", "0.2", "--format", "json"]
    first, second = (subprocess.run(args, capture_output=True, check=True).stdout
                     for _ in range(2))
    assert first == second and b'"forward"' in first


# --- bad input ----------------------------------------------------------------------------

BAD = [
    (("--rho0", "2"), "--rho0", "[-1, 1]"), (("--rho0", "-1.01"), "--rho0", "[-1, 1]"),
    (("--rho0", "nan"), "--rho0", "finite"), (("--rho0", "inf"), "--rho0", "finite"),
    (("--rho0", "1/0"), "--rho0", "zero denominator"), (("--rho0", "half"), "--rho0", "number"),
    (("--sigma-b2", "-1"), "--sigma-b2", ">= 0"), (("--fan-in-variance", "0"),
                                                   "--fan-in-variance", "> 0"),
    (("--fan-in-variance", "-2"), "--fan-in-variance", "> 0"),
    (("--sigma-w2", "0"), "--sigma-w2", "> 0"), (("--sigma-w2", "-1"), "--sigma-w2", "> 0"),
    (("--sigma-w2", "2", "--fan-in-variance", "2"), "--fan-in-variance", "give one"),
    (("--sigma-w2", "2"), "--sigma-w2", "use --fan-in-variance"),
    (("--q0", "0"), "--q0", "> 0"), (("--q0", "-1"), "--q0", "> 0"),
    (("--q0", "q"), "--q0", "number"), (("--depth", "10001"), "--depth", "10000"),
    (("--block", "x + alpha*F(x)"), "--set", "alpha"),
    (("--gamma", "g", "--norm", "pre"), "--gamma", "number"),
    (("--norm", "pre", "--block", "F(x)"), "--block", "one of them"),
    (("--init", "he", "--depth", "2000"), "--depth", "range of a double"),
]


@pytest.mark.parametrize(("args", "option", "words"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_is_one_line_naming_the_option(capsysbinary, args, option, words) -> None:
    code, out, err = run(capsysbinary, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("derive: error: "), err
    assert option in err and words in err and "Traceback" not in err, err


def test_an_engine_refusal_is_passed_on_as_it_is(capsysbinary) -> None:
    code, _, err = run(capsysbinary, "--block", "x + LN(W0(x))")
    assert code == 2 and "LayerNorm" in err and "--depth" not in err


# --- the API ------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"rho0": 2}, {"rho0": "nan"}, {"rho0": "1/0"}, {"q0": 0}, {"sigma_b2": -1},
    {"fan_in_variance": 0}, {"sigma_w2": 2}, {"sigma_w2": 2, "fan_in_variance": 2},
    {"depth": 10001}, {"block": "x + alpha*F(x)"}])
def test_the_api_raises_derive_error(options) -> None:
    with pytest.raises(DeriveError) as refused:
        derive.kernel(**options).profile()
    assert isinstance(refused.value, ValueError) and "\n" not in str(refused.value)


def test_the_api_exports_and_displays_as_latex() -> None:
    for name in ("kernel", "KernelAnalysis", "phase", "critical_line"):
        assert name in derive.__all__ and getattr(derive, name) is not None
    assert not isinstance(derive.kernel, type(derive)) and callable(derive.phase)
    analysis = derive.kernel("he", "relu", block="F(x)", depth=3)
    assert isinstance(analysis, derive.KernelAnalysis)
    tex = analysis._repr_latex_()
    assert tex.startswith("$\\begin{gathered}") and tex.endswith("\\end{gathered}$")
    assert "\\rho_{k} = " in tex and "\\rho^{grad}_{k - 1} = " in tex
    assert "\\text{he/relu/F(x)/single}" in tex and "k^{-2}" in tex
    rho3 = arc_cosine(arc_cosine(arc_cosine(0.5)))
    assert f"\\rho_{{3}} = {rho3:.6g}" in tex
    numeric = derive.kernel(activation="leaky_relu", block="bn-first")._repr_latex_()
    assert "\\text{BatchNorm" in numeric and "leaky\\_relu" in numeric
