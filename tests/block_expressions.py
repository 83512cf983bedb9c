"""Random block expressions for the budget tests: the block language, and what is not.

:func:`expressions` draws text in the block language (nested functions, sums,
products, powers, numbers of every size and sign, symbols), mixed with what a
user or an attacker may type instead: symbols named like SymPy's functions and
constants, unicode, code-like text, and broken syntax.
"""

from __future__ import annotations

from hypothesis import strategies as st

#: Names SymPy gives its functions and constants, and names the block language keeps.
SYMPY_NAMES = ("gamma", "beta", "zeta", "sin", "exp", "log", "sqrt", "Sum", "Integral",
               "Symbol", "Function", "Rational", "Lambda", "N", "S", "O", "Q", "E", "I",
               "oo", "zoo", "nan", "pi", "Piecewise", "Max", "binomial", "factorial", "re",
               "im", "Abs", "sign", "c", "w", "q", "d", "n", "k", "K", "q_0", "alpha", "p",
               "alpha_1", "p2", "sigma_w2", "phi", "std", "erf", "lowergamma", "Eq")
#: Text that is not part of the block language, some of it code.
JUNK = ("__import__('os')", "x.__class__", "[x for x in F]", "lambda: x", "f'{x}'",
        "x if x else x", "(x, x)", "{x: 1}", "x @ x", "x // 2", "x % 2", "not x", "x < 1",
        "open('/etc/passwd')", "exec('1')", "eval", "x[0]", "*x", "x + ", "((x)", "1j*x",
        "α*F(x)", "x²", "√2*x", "x + F(x)\u200b", "ｘ + F(x)", "x + 'a'", "b'x'", "...",
        "None*x", "True*x", "x + F(x); 1", "0x10*x", "1_000*x", "1e400*x", "1e-400*x")
FUNCTIONS = ("F", "F0", "W", "W0", "LN", "BN", "phi", "relu", "leaky_relu", "tanh", "gelu",
             "linear")


def numbers() -> st.SearchStrategy[str]:
    """Numbers as a user writes them: small and huge, signed, decimal, fractions, powers."""
    integer = st.integers(min_value=-10**45, max_value=10**45).map(str)
    small = st.integers(min_value=-9, max_value=9).map(str)
    decimal = st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
    fraction = st.tuples(small, st.integers(min_value=-5, max_value=9)).map(
        lambda t: f"({t[0]}/{t[1]})")
    power = st.tuples(st.sampled_from(("2", "10", "-8", "(1/3)", "0", "-1", "(2**64)")),
                      st.sampled_from(("2", "64", "(1/3)", "(1/2)", "-1", "65", "0.5",
                                       "alpha", "(-2)"))).map(lambda t: f"{t[0]}**{t[1]}")
    return st.one_of(small, integer, decimal, fraction, power,
                     st.sampled_from(("sqrt(2)", "sqrt(-1)", "1/sqrt(3)", "0", "1e300",
                                      "0.1", "1/0")))


def scalars() -> st.SearchStrategy[str]:
    """Scalars: numbers, symbols (named like SymPy's), and products and powers of them."""
    atom = st.one_of(numbers(), st.sampled_from(SYMPY_NAMES), st.just("std(x)"),
                     st.sampled_from(("alpha", "beta", "a1", "a2", "s", "t")))
    return st.recursive(atom, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(("*", "/", "**", "+", "-")), inner).map(
            lambda t: f"({t[0]}{t[1]}{t[2]})"),
        inner.map(lambda s: f"sqrt({s})")), max_leaves=4)


def vectors() -> st.SearchStrategy[str]:
    """Vectors in x: nested functions, sums and differences, scaled and divided terms."""
    rates = st.one_of(st.sampled_from(("0.1", "1/3", "0", "p", "p1", "p2", "q1", "0.5")),
                      scalars())

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(st.sampled_from(FUNCTIONS), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(FUNCTIONS), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(inner, rates).map(lambda t: f"Dropout({t[0]}, {t[1]})"),
            st.tuples(inner, st.sampled_from(("+", "-")), st.sampled_from(("F", "W")),
                      inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}({t[3]})"),
            st.tuples(inner, st.sampled_from(("+", "-")), inner).map(
                lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(scalars(), inner).map(lambda t: f"{t[0]}*({t[1]})"),
            st.tuples(inner, scalars()).map(lambda t: f"({t[0]})/{t[1]}"),
            st.integers(min_value=2, max_value=25).map(
                lambda depth: "tanh(" * depth + "F(x)" + ")" * depth))
    return st.recursive(st.sampled_from(("F(x)", "W(x)", "F0(x)", "x", "F(LN(x))")), extend,
                        max_leaves=8)


def expressions() -> st.SearchStrategy[str]:
    """Block expressions, most of them residual (``x + ...``), with junk mixed in."""
    residual = vectors().map(lambda v: f"x + {v}")
    return st.one_of(residual, residual, vectors(), st.sampled_from(JUNK),
                     st.tuples(residual, st.sampled_from(JUNK)).map(
                         lambda t: f"{t[0]} + {t[1]}"),
                     st.text(max_size=30))
