"""One parser for every number: exact values, refusals, and every API argument."""

from __future__ import annotations

import decimal
import fractions

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import derive
from derive.errors import DeriveError
from derive.inputs.numbers import MAX_DIGITS, exact, integer, real, shown


@pytest.mark.parametrize("text", ["2", "-3", "0.1", ".5", "5.", "1e-3", "2.5E+2", "1/3",
                                  " 7 / 21 ", "-0.25/0.5", "0e999999", "1" + "0" * 299])
def test_text_is_exact_as_fractions_reads_it(text: str) -> None:
    value = exact(text, "gamma")
    parts = [fractions.Fraction(p.strip()) for p in text.split("/")]
    expected = parts[0] / parts[1] if len(parts) == 2 else parts[0]
    assert isinstance(value, sympy.Rational)
    assert (value.p, value.q) == (expected.numerator, expected.denominator)


@settings(max_examples=200, deadline=None)
@given(st.fractions(max_denominator=10**40), st.integers(-50, 50))
def test_fractions_and_decimals_round_trip(value: fractions.Fraction, shift: int) -> None:
    assert exact(f"{value.numerator}/{value.denominator}", "x") == sympy.Rational(
        value.numerator, value.denominator)
    text = f"{value.numerator}e{shift}"
    assert exact(text, "x") == sympy.Rational(fractions.Fraction(text))


def test_other_number_types_are_exact() -> None:
    assert exact(0.1, "p") == sympy.Rational(1, 10)
    assert exact(fractions.Fraction(1, 3), "p") == sympy.Rational(1, 3)
    assert exact(decimal.Decimal("0.125"), "p") == sympy.Rational(1, 8)
    assert exact(np.float64(0.5), "p") == sympy.Rational(1, 2)
    assert exact(np.int64(7), "p") == 7
    assert exact(sympy.sqrt(2), "p") == sympy.sqrt(2)
    name = exact("sigma_w2", "p")
    assert name == sympy.Symbol("sigma_w2", positive=True) and name.is_positive
    assert real("1/4", "q0") == 0.25 and integer("12", "depth") == 12


BAD = [
    "1/0", "0/0", "nan", "inf", "-inf", "Infinity", "1e400", "1e-400", "1e99999999999",
    "9" * 5000, "1+", "2**3", "__import__('os')", "", float("nan"), float("inf"),
    float("-inf"), 10**400, 1e300 * 10, True, 1 + 2j, decimal.Decimal("NaN"),
    decimal.Decimal("Infinity"), sympy.nan, sympy.oo, -sympy.oo, sympy.zoo, sympy.I,
    sympy.Float("inf"), sympy.Integer(10) ** 400, sympy.Eq(1, 2), [1], None,
]


@pytest.mark.parametrize("value", BAD, ids=[shown(v) for v in BAD])
def test_every_bad_value_is_a_derive_error(value: object) -> None:
    with pytest.raises(DeriveError, match="gamma must be a finite number"):
        exact(value, "gamma")


#: Every API argument that takes a number, called with a bad value.
API = {
    "mlp_ratio": lambda v: derive.variance("he", "relu", branch="mlp", mlp_ratio=v),
    "dropout": lambda v: derive.variance(dropout=v),
    "gamma": lambda v: derive.variance(norm="pre", gamma=v),
    "sigma_w2": lambda v: derive.variance(sigma_w2=v),
    "negative_slope": lambda v: derive.variance(activation="leaky_relu", negative_slope=v),
    "q0": lambda v: derive.variance("he").forward.at(3, q0=v),
    "profile q0": lambda v: derive.variance("he").backward.profile(3, q0=v),
    "config gamma": lambda v: derive.variance_config(gamma=v),
    "s2": lambda v: derive.gaussian_moment("relu", v),
    "simulate q0": lambda v: derive.simulate(depth=1, width=4, seeds=1, batch=1, q0=v),
    "simulate gamma": lambda v: derive.simulate(depth=1, width=4, seeds=1, batch=1, gamma=v),
}
API_BAD = ["1/0", "0/0", "nan", "-inf", "1e400", float("nan"), float("inf"), 10**400,
           1e308, sympy.zoo, sympy.I, decimal.Decimal("NaN")]


@pytest.mark.parametrize("argument", sorted(API))
@pytest.mark.parametrize("value", API_BAD, ids=[shown(v) for v in API_BAD])
def test_api_raises_derive_error_never_another(argument: str, value: object) -> None:
    with pytest.raises(DeriveError):
        API[argument](value)


DEPTHS = [-1, 2.5, "4", True, 10**19, 10**30, 10**5000, float("inf"), None]


@pytest.mark.parametrize("depth", DEPTHS, ids=[shown(d) for d in DEPTHS])
def test_every_depth_argument_refuses_bad_depths(depth: object) -> None:
    for call in (derive.paths, derive.count_paths, derive.path_lengths,
                 lambda d: derive.variance("he").forward.at(d),
                 lambda d: derive.variance().to_dict(d),
                 lambda d: derive.simulate(depth=d, width=4, seeds=1, batch=1)):
        with pytest.raises(DeriveError, match="must be an integer"):
            call(depth)


def test_symbols_only_where_allowed() -> None:
    assert derive.variance(norm="pre", gamma="g").config.gamma == sympy.Symbol("g", positive=True)
    with pytest.raises(DeriveError, match="gamma must be a number"):
        derive.simulate(depth=1, width=4, seeds=1, batch=1, gamma="g")
    with pytest.raises(DeriveError, match=f"at most {MAX_DIGITS} digits, got 'g'"):
        exact("g", "q0", symbol=False)
