"""erf as an activation: its Gaussian moments, the block language, the CLI and the API.

The moments are checked against scipy's quadrature and against the arcsin kernel's
diagonal as published (Williams 1997, "Computing with infinite networks"); the
variance profiles against a NumPy simulation written here, independent of derive's.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sympy
from scipy import integrate

import derive
from derive.blocks.block import MAX_NESTING, NESTING_COST
from derive.blocks.nodes import Input
from derive.blocks.parser import parse
from derive.blocks.primitives import ODD_ACTIVATIONS, Activation
from derive.errors import DeriveError
from derive.gaussian.mean import gaussian_mean
from derive.gaussian.moments import gaussian_moment, moment_derivation
from derive.inputs.choices import ACTIVATIONS, GRID_ACTIVATIONS
from tests.cli_runner import invoke

VARIANCES = (1e-3, 0.1, 0.5, 1.0, 3.0, 20.0)


def _expect(g, q: float) -> float:
    """E[g(z)] for z ~ N(0, q) by adaptive quadrature on the real line."""
    sd = math.sqrt(q)

    def f(x: float) -> float:
        return g(x) * math.exp(-x * x / (2 * q)) / (sd * math.sqrt(2 * math.pi))

    value, _ = integrate.quad(f, -math.inf, math.inf, epsabs=1e-14, epsrel=1e-12, limit=200)
    return value


def _erf_prime(x: float) -> float:
    return 2 / math.sqrt(math.pi) * math.exp(-x * x)


# --- the moments ---------------------------------------------------------------------


@pytest.mark.parametrize("q", VARIANCES)
def test_moments_match_quadrature(q: float) -> None:
    exact_q = sympy.nsimplify(q)
    forward = float(gaussian_moment("erf", exact_q))
    backward = float(gaussian_moment("erf", exact_q, derivative=True))
    assert forward == pytest.approx(_expect(lambda x: math.erf(x) ** 2, q), rel=1e-10)
    assert backward == pytest.approx(_expect(lambda x: _erf_prime(x) ** 2, q), rel=1e-10)


def test_moments_are_the_published_closed_forms() -> None:
    # Williams (1997): E[erf(u) erf(v)] = (2/pi) arcsin(2c / sqrt((1 + 2q_a)(1 + 2q_b))),
    # here on the diagonal; E[erf'(z)^2] = (4/pi) E[exp(-2 z^2)] = (4/pi) / sqrt(1 + 4q).
    q = sympy.Symbol("q", positive=True)
    forward = gaussian_moment("erf", q)
    backward = gaussian_moment("erf", q, derivative=True)
    assert sympy.simplify(forward - 2 / sympy.pi * sympy.asin(2 * q / (1 + 2 * q))) == 0
    assert sympy.simplify(backward - 4 / (sympy.pi * sympy.sqrt(1 + 4 * q))) == 0
    assert not forward.has(sympy.Float, sympy.Integral)


def test_moments_match_a_monte_carlo() -> None:
    rng = np.random.default_rng(7)
    from scipy.special import erf

    z = rng.standard_normal(400_000) * math.sqrt(2.0)
    assert float(gaussian_moment("erf", 2)) == pytest.approx(np.mean(erf(z) ** 2), rel=5e-3)
    derivative = 2 / math.sqrt(math.pi) * np.exp(-z * z)
    assert float(gaussian_moment("erf", 2, derivative=True)) == pytest.approx(
        np.mean(derivative**2), rel=1e-2)


def test_the_mean_is_zero() -> None:
    assert gaussian_mean("erf", 3) == 0
    assert gaussian_mean("erf", sympy.Symbol("v", positive=True)) == 0
    assert abs(_expect(math.erf, 3.0)) < 1e-12  # odd: the quadrature agrees


def test_the_derivation_prints_erf_and_ends_in_the_arcsin() -> None:
    derivation = moment_derivation("erf")
    assert derivation.key == "gaussian/erf/forward"
    assert r"\operatorname{erf}" in derivation.steps[0].latex()
    assert derivation.result.rhs.has(sympy.asin)
    assert moment_derivation("erf", True).result.rhs.free_symbols == {sympy.Symbol("s",
                                                                                   positive=True)}


# --- the primitive -------------------------------------------------------------------


def test_erf_is_odd_and_its_numpy_derivative_matches_finite_differences() -> None:
    assert "erf" in ODD_ACTIVATIONS
    v = np.linspace(-3.0, 3.0, 61)
    node = Activation(Input(), "erf")
    value, slope = node.forward_np([v], None)
    h = 1e-6
    ahead, _ = node.forward_np([v + h], None)
    behind, _ = node.forward_np([v - h], None)
    assert np.allclose(value, [math.erf(x) for x in v], atol=1e-15)
    assert np.allclose(slope, (ahead - behind) / (2 * h), atol=1e-8)
    assert np.allclose(-node.forward_np([-v], None)[0], value)


def test_the_gain_at_a_zero_input_is_the_limit_of_the_moment() -> None:
    # erf(W0(x)): the activation sees q = 0, where the rule uses phi'(0)^2
    config = derive.variance(init="he", block="x + W(erf(W0(x)))").config
    node = parse("erf(x)").expand(config)
    from derive.blocks.nodes import Moments

    (gain,) = node.gains([Moments(sympy.Integer(0))], config, Moments(sympy.Integer(1)))
    q = sympy.Symbol("q", positive=True)
    limit = sympy.limit(gaussian_moment("erf", q, derivative=True), q, 0)
    assert sympy.simplify(gain - limit) == 0


# --- the block language and the choices ----------------------------------------------


def test_the_parser_reads_erf() -> None:
    assert parse("x + W(erf(W(x)))").text() == "x + W(erf(W(x)))"
    # odd: erf(W x) changes sign with W, so x and erf(W(x)) add as uncorrelated terms
    assert parse("x + erf(W(x))").text() == "x + erf(W(x))"
    with pytest.raises(DeriveError, match="may be correlated"):
        parse("x + relu(W(x))")


def test_erf_is_a_reserved_name_not_a_symbol() -> None:
    with pytest.raises(DeriveError, match="erf"):
        parse("x + erf*F(x)")


def test_the_choices_accept_erf_and_the_grids_keep_the_five() -> None:
    assert "erf" in ACTIVATIONS
    assert GRID_ACTIVATIONS == ("linear", "relu", "leaky_relu", "tanh", "gelu")
    from derive.simulation.networks import default_grid, grid

    assert {c.activation for c in grid(["he"], [], ["pre"])} == set(GRID_ACTIVATIONS)
    assert {c.activation for c in grid(["he"], ["erf"], ["pre"])} == {"erf"}
    assert len(default_grid()) == 170


def test_inline_erf_is_the_configured_erf() -> None:
    inline = derive.variance(init="he", block="x + W(erf(x))")
    configured = derive.variance(init="he", activation="erf")
    for k in (1, 4):
        assert float(inline.forward.at(k)) == pytest.approx(float(configured.forward.at(k)),
                                                            rel=1e-12)


def test_nesting_counts_erf() -> None:
    allowed = MAX_NESTING // NESTING_COST["erf"]

    def nested(count: int) -> str:
        return "x + W(" + "erf(W(" * count + "x" + "))" * count + ")"

    assert parse(nested(allowed)).text() == nested(allowed)
    derive.block(nested(allowed)).expanded(derive.variance(init="he").config)
    with pytest.raises(DeriveError, match=rf"{allowed + 1} erf.* if erf \(each erf counts"):
        derive.block(nested(allowed + 1)).expanded(derive.variance(init="he").config)


# --- the command line and the API ----------------------------------------------------


def _simulate_erf_stack(depth: int, width: int, seeds: int, batch: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """h_k = h_{k-1} + W_k erf(h_{k-1}), W_k ~ N(0, 2/n) (He): E[h_k^2] and d_0/d_K."""
    from scipy.special import erf

    rng = np.random.default_rng(2024)
    forward, backward = np.zeros(depth + 1), np.zeros(depth + 1)
    for _ in range(seeds):
        h = rng.standard_normal((batch, width))
        hs, ws = [h], []
        for _k in range(depth):
            w = rng.standard_normal((width, width)) * math.sqrt(2.0 / width)
            h = h + erf(h) @ w.T
            hs.append(h)
            ws.append(w)
        g = rng.standard_normal((batch, width))
        grads = [g]
        for k in range(depth, 0, -1):
            slope = 2 / math.sqrt(math.pi) * np.exp(-hs[k - 1] ** 2)
            g = g + slope * (g @ ws[k - 1])
            grads.append(g)
        forward += [np.mean(x**2) for x in hs]
        backward += [np.mean(x**2) for x in reversed(grads)]
    return forward / seeds, backward / backward[-1]


def test_variance_agrees_with_a_numpy_simulation(capsysbinary: pytest.CaptureFixture[bytes]
                                                 ) -> None:
    depth = 4
    code, out, err = invoke(capsysbinary, "variance", "--init", "he", "--activation", "erf",
                            "--depth", str(depth), "--format", "json")
    assert code == 0 and err == ""
    report = json.loads(out)
    derived_forward = report["forward"]["profile_float"]
    derived_backward = report["backward"]["profile_float"]
    forward, backward = _simulate_erf_stack(depth, width=384, seeds=12, batch=32)
    assert derived_forward == pytest.approx(forward.tolist(), rel=0.03)
    assert derived_backward == pytest.approx(backward.tolist(), rel=0.03)
    api = derive.variance(init="he", activation="erf")
    assert float(api.forward.at(depth)) == pytest.approx(derived_forward[-1], rel=1e-12)


def test_paths_accepts_erf(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = invoke(capsysbinary, "paths", "--depth", "4", "--wrt", "x", "--lengths",
                            "--init", "he", "--activation", "erf")
    assert code == 0 and err == "" and "he/erf/none/single" in out


@pytest.mark.parametrize("argv", [
    ("variance", "--activation", "erff"),
    ("paths", "--depth", "3", "--activation", "erff"),
    ("check", "--activation", "erff"),
])
def test_a_bad_activation_name_gets_one_line(capsysbinary: pytest.CaptureFixture[bytes],
                                             argv: tuple[str, ...]) -> None:
    code, out, err = invoke(capsysbinary, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "erff" in err and "'erf'" in err
    assert "Traceback" not in err


def test_a_bad_function_in_a_block_names_erf(capsysbinary: pytest.CaptureFixture[bytes]
                                             ) -> None:
    code, out, err = invoke(capsysbinary, "variance", "--block", "x + W(erff(x))")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "unknown function 'erff'" in err and "linear, erf, std" in err


def test_the_api_refuses_a_bad_activation() -> None:
    with pytest.raises(DeriveError, match=r"unknown activation 'erff'.*gelu, erf"):
        derive.variance(activation="erff")
    with pytest.raises(DeriveError, match="erff"):
        derive.gaussian_moment("erff", 1)


@pytest.mark.slow
def test_check_passes_for_erf(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = invoke(capsysbinary, "check", "--init", "he", "--activation", "erf",
                            "--width", "256", "--seeds", "8", "--depth", "4")
    assert code == 0, out + err
    assert "22 configurations" in out and "all within 10%" in out
