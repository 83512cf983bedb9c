"""Configuration validation, exact numbers, and the notation's printers."""

import pytest
import sympy

from derive.blocks.config import variance_config
from derive.derivation.printing import latex, text
from derive.derivation.symbols import jacobian, n, q
from derive.errors import DeriveError
from derive.inputs.numbers import check_depth, exact


def test_unknown_block_names_the_presets_and_the_language() -> None:
    with pytest.raises(DeriveError, match=r"unknown block 'batch': choose a preset \(none, pre, "
                       r"post, rescaled,.*\) or write an expression in x"):
        variance_config(norm="batch")


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("init", "kaiming", "xavier, he, lecun"),
        ("activation", "swish", "linear, relu, leaky_relu, tanh, gelu"),
        ("branch", "attention", "single, mlp"),
    ],
)
def test_unknown_names_list_the_choices(field: str, value: str, allowed: str) -> None:
    with pytest.raises(DeriveError, match=f"unknown {field} '{value}': choose one of {allowed}"):
        variance_config(**{field: value})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": 1}, "dropout must be in \\[0, 1\\), got 1"),
        ({"dropout": -0.1}, "dropout must be in \\[0, 1\\), got -1/10"),
        ({"mlp_ratio": 0}, "mlp_ratio must be > 0, got 0"),
        ({"gamma": -2}, "gamma must be > 0, got -2"),
        ({"sigma_w2": 0}, "sigma_w2 must be > 0, got 0"),
        ({"gamma": "1+"}, "gamma must be a finite number .* or a symbol name, got '1\\+'"),
    ],
)
def test_out_of_range_values_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        variance_config(**kwargs)


def test_numbers_are_stored_exactly() -> None:
    config = variance_config(dropout=0.1, gamma="g", mlp_ratio=4)
    assert config.dropout == sympy.Rational(1, 10)
    assert config.gamma == sympy.Symbol("g", positive=True)
    assert exact("3/4", "x") == sympy.Rational(3, 4)


def test_weight_variances_follow_their_definitions() -> None:
    fan_in, fan_out = sympy.symbols("a b", positive=True)
    assert variance_config(init="xavier").weight_variance(fan_in, fan_out) == 2 / (fan_in + fan_out)
    assert variance_config(init="he").weight_variance(fan_in, fan_out) == 2 / fan_in
    assert variance_config(init="lecun").weight_variance(fan_in, fan_out) == 1 / fan_in
    assert variance_config(init="he", sigma_w2=3).weight_variance(n, n) == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True, None])
def test_depth_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(DeriveError, match="depth must be an integer >= 1"):
        check_depth(bad)


def test_jacobians_do_not_commute() -> None:
    assert jacobian(4) * jacobian(3) != jacobian(3) * jacobian(4)


def test_sequences_print_with_subscripts() -> None:
    k = sympy.Symbol("k")
    assert latex(q(k - 1) + 1) == "q_{k - 1} + 1"
    assert text(q(k - 1) + 1) == "qₖ₋₁ + 1"
    assert text(sympy.Symbol("gamma") ** 2) == "γ²"
