"""The block language: parsing, presets, known results from the literature, and the
three norm placements against an independent statement of their recursions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sympy

import derive
from derive.blocks.block import block
from derive.blocks.presets import PRESETS
from derive.derivation.symbols import K, k, q, q0
from derive.errors import DeriveError
from derive.gaussian.moments import gaussian_moment
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS
from derive.simulation.networks import compare, grid

alpha = sympy.Symbol("alpha", positive=True)


# --- known results, with their sources; all come out of the derivation -------------
def test_a_scalar_on_the_branch_gives_one_plus_alpha_squared_per_block() -> None:
    """SkipInit (De & Smith 2020): with He + ReLU, x + alpha F(x) gives (1 + alpha^2)^K q_0."""
    closed = derive.variance("he", "relu", block="x + alpha*F(x)").forward.closed_form
    assert sympy.simplify(closed.rhs - (1 + alpha**2) ** K * q0) == 0


def test_rescaling_the_sum_by_one_over_sqrt_two_keeps_the_variance() -> None:
    """UDL 11.3: (x + F(x))/sqrt(2) keeps q_K = q_0 under He + ReLU."""
    a = derive.variance("he", "relu", block="(x + F(x))/sqrt(2)")
    assert a.forward.closed_form.rhs == q0 and a.backward.closed_form.rhs == 1


def test_batchnorm_first_in_the_branch_adds_one_unit_per_block() -> None:
    """UDL 11.4.1 (fig. 11.6c): BN first in the branch adds one unit of variance per block."""
    closed = derive.variance("he", "relu", block="x + F(BN(x))").forward.closed_form
    assert sympy.expand(closed.rhs - (q0 + K)) == 0


def test_nf_resnet_grows_by_alpha_squared_per_block() -> None:
    """Brock et al. 2021 (NF-ResNets): x + alpha F(x/std(x)) gives q_K = q_0 + K alpha^2."""
    closed = derive.variance("he", "relu", block="x + alpha*F(x/std(x))").forward.closed_form
    assert sympy.expand(closed.rhs - (q0 + K * alpha**2)) == 0


def test_fixup_and_post_norm_presets_keep_the_forward_constant() -> None:
    assert derive.variance("he", block="fixup").forward.closed_form.rhs == q0
    assert derive.variance("he", block="deepnorm").forward.at(7) == 1


def test_exact_irrational_values_stay_exact() -> None:
    value = derive.variance("he", "gelu", "pre").forward.at(1)
    assert value == sympy.Rational(5, 3) + sympy.sqrt(3) / (3 * sympy.pi)


# --- the norm presets are the blocks of before -------------------------------------
def _reference(init: str, activation: str, norm: str, branch: str) -> tuple[sympy.Expr, ...]:
    """The three placements written out by hand (single: W phi(h), mlp: W2 phi(W1 h) at
    ratio 1): forward map and backward factor in x = q_{k-1}."""
    x = sympy.Symbol("x", positive=True)
    var = {"xavier": 1, "he": 2, "lecun": 1}[init]  # n times the weight variance, n x n
    hidden = var if branch == "mlp" else 1

    def forward(s: sympy.Expr) -> sympy.Expr:
        return var * gaussian_moment(activation, hidden * s)

    def gain(s: sympy.Expr) -> sympy.Expr:
        return var * hidden * gaussian_moment(activation, hidden * s, derivative=True)

    if norm == "none":
        return x + forward(x), 1 + gain(x)
    if norm == "pre":
        return x + forward(sympy.Integer(1)), 1 + gain(sympy.Integer(1)) / x
    return sympy.Integer(1), (1 + gain(x)) / (x + forward(x))


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("norm", ["none", "pre", "post"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("init", INITS)
def test_norm_presets_give_the_recursions_of_their_blocks(init, activation, norm, branch) -> None:
    a = derive.variance(init, activation, norm, branch)
    forward, factor = _reference(init, activation, norm, branch)
    x = sympy.Symbol("x", positive=True)
    backward = a.backward.recurrence.rhs / sympy.Function("d")(k)
    for got, want in ((a.forward.recurrence.rhs, forward), (backward, factor)):
        for value in (sympy.Rational(1, 2), sympy.Integer(3)):
            g = got.xreplace({q(k - 1): value})
            w = want.xreplace({x: value})
            assert float(g) == pytest.approx(float(w), rel=1e-12)


# --- parsing --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "shown"), [
    ("x + F(x)", "x + F(x)"),
    ("(x + F(x))/sqrt(2)", "(x + F(x))/sqrt(2)"),
    ("x + Dropout(F(x), 0.1)", "x + Dropout(F(x), 1/10)"),
    ("x + Dropout(F(x), p=1/4)", "x + Dropout(F(x), 1/4)"),
    ("LN(alpha*x + F(x))", "LN(alpha*x + F(x))"),
    ("x + W(gelu(W(LN(x))))", "x + W(gelu(W(LN(x))))"),
    ("x - F(x)", "x - F(x)"),
])
def test_blocks_parse_and_print_back(text: str, shown: str) -> None:
    b = block(text)
    assert b.text == shown and block(b.text).text == shown


def test_every_preset_parses_and_names_its_source() -> None:
    for name, preset in PRESETS.items():
        b = block(name)
        assert b.name == name and b.text == block(preset.expression).text and b.source


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "the block is empty"),
    ("x + foo(x)", "unknown function 'foo'"),
    ("x +", "syntax error"),
    ("2*alpha", "does not use its input x"),
    ("h + F(h)", "'h' is a scalar symbol"),
    ("x + Dropout(F(x), 1)", "Dropout's rate must be in [0, 1)"),
    ("x + Dropout(F(x), 1.5)", "Dropout's rate must be in [0, 1)"),
    ("x" + " + F(x)" * 100, "characters long"),
    ("__import__('os').system('ls')", "only the functions F, F0, W"),
    ("__import__('os')", "unknown function '__import__'"),
    ("x.__class__", "attribute is not part of the block language"),
    ("[x for x in F]", "listcomp is not part of the block language"),
    ("lambda: x", "lambda is not part of the block language"),
    ("x + 'a'", "is not a number"),
    ("x + LN(x)", "may be correlated at initialization"),
    ("x + x", "the terms x and x of the sum"),
    ("x * F(x)", "product of two vectors"),
    ("x + 1", "a bias"),
    ("2**1000*x", "too large"),
    ("x/0", "division by zero"),
    ("x + nan*F(x)", "'nan' is not a finite number"),
    ("inf*x + F(x)", "'inf' is not a finite number"),
    ("std(F(x))", "std takes the block input"),
    ("x + F(x, x)", "F takes one argument"),
])
def test_bad_blocks_get_one_line_naming_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(DeriveError) as err:
        block(text)
    message = str(err.value)
    assert fragment in message and "\n" not in message and isinstance(err.value, ValueError)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derive", *args], capture_output=True,
                          text=True, check=False)


def test_cli_bad_block_is_one_line_and_exit_two() -> None:
    done = run("variance", "--block", "x + eval(x)")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unknown function 'eval'" in done.stderr


def test_cli_variance_block_json_carries_the_block() -> None:
    done = run("variance", "--init", "he", "--block", "rescaled", "--format", "json")
    data = json.loads(done.stdout)
    assert data["config"]["block"]["expression"] == "(x + F(x))/sqrt(2)"
    assert data["config"]["block"]["source"] == "UDL 11.3"
    assert data["forward"]["closed_form"] == "q_{K} = q_{0}"


def test_cli_set_gives_a_symbol_a_value() -> None:
    done = run("variance", "--init", "he", "--block", "x + alpha*F(x)", "--set", "alpha=1",
               "--depth", "3")
    assert done.returncode == 0 and "q_3 = 8" in done.stdout
    bad = run("variance", "--block", "x + F(x)", "--set", "alpha=1")
    assert bad.returncode == 2 and "has no symbol 'alpha'" in bad.stderr


def test_norm_and_block_together_are_refused() -> None:
    done = run("variance", "--norm", "pre", "--block", "post")
    assert done.returncode == 2 and "give one of them" in done.stderr


# --- BatchNorm is not LayerNorm: the simulation over a real batch decides ------------
def test_batchnorm_agrees_with_the_simulation_and_layernorms_rule_does_not() -> None:
    configs = grid(["he"], ["relu"], [], ["single"], blocks=["BN(x + F(x))", "x + F(BN(x))"])
    rows = compare(configs, depth=4, width=256, seeds=8, batch=32)
    assert all(r.ok for r in rows)
    # LayerNorm's rule for the same placement predicts d_0/d_K = 1 after post-LN: far off.
    ln = derive.variance("he", "relu", "post").backward.profile(4)
    measured = next(r for r in rows if r.label.endswith("BN(x + F(x))/single")
                and r.direction == "backward" and r.k == 0).measured
    assert abs(measured - float(ln[0])) > 0.5


@pytest.mark.slow
def test_compare_with_a_symbol_and_no_closed_form_says_what_it_needs() -> None:
    done = run("variance", "--activation", "gelu", "--compare")
    assert done.returncode == 0
    row = next(line for line in done.stdout.splitlines() if line.startswith("skipinit"))
    assert "needs a value for alpha" in row and "depends on alpha" in row
