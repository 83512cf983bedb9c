"""Gaussian moments of activations, checked against independent numerical quadrature."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import mpmath
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from derive.derivation.printing import latex, text
from derive.derivation.symbols import d, k, q
from derive.errors import DeriveError
from derive.gaussian.gelu import NormalPDF, Phi, lemmas, stein
from derive.gaussian.moments import (
    TANH_GUARD_DIGITS,
    Activation,
    Expectation,
    TanhDerivativeMoment,
    TanhMoment,
    gaussian_moment,
    moment_derivation,
    s,
    u,
    z,
)
from derive.inputs.choices import ACTIVATIONS

RTOL = 1e-10
VARIANCES = (1e-4, 0.04, 0.5, 1.0, 2.5, 9.0, 100.0)


# --- independent numerical definitions ----------------------------------------


def _cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _pdf(x: float) -> float:
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _phi(name: str, slope: float = 0.01):
    """The activation and its derivative as plain floats functions."""
    return {
        "linear": (lambda x: x, lambda x: 1.0),
        "relu": (lambda x: max(x, 0.0), lambda x: float(x > 0)),
        "leaky_relu": (lambda x: x if x > 0 else slope * x, lambda x: 1.0 if x > 0 else slope),
        "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
        "gelu": (lambda x: x * _cdf(x), lambda x: _cdf(x) + x * _pdf(x)),
        "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
    }[name]


def _quad_std(f, variance: float, scale: float | None = None) -> float:
    """E[f(z)] for z ~ N(0, variance), by scipy.integrate.quad in u = z / s.

    The line is cut at 0, +-1, +-8 and, where f varies on a scale of 1/s in u
    (``scale`` = s), at +-1/s, +-4/s and +-16/s.
    """
    std = math.sqrt(variance)
    scale = std if scale is None else scale

    def g(x: float) -> float:
        return f(std * x) * _pdf(x)

    cuts = {0.0, 1.0, 8.0} | {c / scale for c in (1.0, 4.0, 16.0) if c / scale < 8.0}
    edges = sorted({-c for c in cuts} | cuts)
    pieces = [(-math.inf, edges[0]), *itertools.pairwise(edges), (edges[-1], math.inf)]
    rough = sum(abs(integrate.quad(g, lo, hi)[0]) for lo, hi in pieces)
    opts = {"epsabs": 1e-14 * rough, "epsrel": 1e-13, "limit": 200}
    return sum(integrate.quad(g, lo, hi, **opts)[0] for lo, hi in pieces)


def _close(value: float, expected: float, rtol: float = RTOL) -> None:
    assert value == pytest.approx(expected, rel=rtol, abs=1e-300), (value, expected)


# --- the moments against quadrature --------------------------------------------------


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_moments_match_quadrature(activation: str, derivative: bool) -> None:
    f, df = _phi(activation)
    g = df if derivative else f
    for variance in VARIANCES:
        value = gaussian_moment(activation, sympy.Float(variance, 30), derivative=derivative)
        expected = _quad_std(lambda x, g=g: g(x) ** 2, variance)
        _close(float(value), expected)


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("activation", ("linear", "relu", "leaky_relu", "gelu"))
def test_closed_forms_are_exact(activation: str, derivative: bool) -> None:
    value = gaussian_moment(activation, sympy.Rational(3, 7), derivative=derivative)
    assert not value.has(sympy.Float, TanhMoment, Expectation)
    assert value.free_symbols == set()


def test_symbolic_variance_substitutes_to_numbers() -> None:
    v = sympy.Symbol("v", positive=True)
    for activation in ACTIVATIONS:
        for derivative in (False, True):
            expr = gaussian_moment(activation, v, derivative=derivative)
            direct = gaussian_moment(activation, sympy.Rational(5, 2), derivative=derivative)
            _close(float(expr.subs(v, sympy.Rational(5, 2))), float(direct))
            on_q = gaussian_moment(activation, q(k - 1), derivative=derivative)
            assert on_q.subs(q(k - 1), v) == expr


def test_leaky_relu_symbolic_slope() -> None:
    a, v = sympy.Symbol("a", nonnegative=True), sympy.Symbol("v", positive=True)
    forward = gaussian_moment("leaky_relu", v, negative_slope=a)
    backward = gaussian_moment("leaky_relu", v, derivative=True, negative_slope=a)
    for slope, variance in ((0.0, 1.0), (0.2, 3.0), (0.5, 0.01), (1.0, 2.0)):
        f, df = _phi("leaky_relu", slope)
        exact_slope = sympy.Rational(repr(slope))
        subs = {a: exact_slope, v: sympy.Rational(repr(variance))}
        _close(float(forward.subs(subs)), _quad_std(lambda x, f=f: f(x) ** 2, variance))
        _close(float(backward.subs(subs)), _quad_std(lambda x, g=df: g(x) ** 2, variance))
    # slope 1 is the identity, slope 0 is relu
    assert sympy.simplify(forward.subs(a, 1) - gaussian_moment("linear", v)) == 0
    assert sympy.simplify(forward.subs(a, 0) - gaussian_moment("relu", v)) == 0


def test_known_values() -> None:
    # He et al. (2015), Delving deep into rectifiers, eq. 7: E[relu(z)^2] = Var(z) / 2.
    assert gaussian_moment("relu", 2) == 1
    # E[gelu(u)^2] for u ~ N(0, 1) is 1/3 + sqrt(3)/(6 pi), about 0.42522: its 1/3 is
    # s^2 E[Phi(u)^2] = E[U^2] for U = Phi(u) ~ Uniform(0, 1) (probability integral
    # transform). The whole value is also checked against 30-digit quadrature.
    known = sympy.Rational(1, 3) + sympy.sqrt(3) / (6 * sympy.pi)
    value = gaussian_moment("gelu", 1)
    assert sympy.simplify(value - known) == 0
    assert abs(float(known) - 0.42522) < 1e-5
    with mpmath.workdps(30):
        ref = mpmath.quad(lambda x: (x * mpmath.ncdf(x)) ** 2 * mpmath.npdf(x),
                          [-mpmath.inf, 0, mpmath.inf])
        assert abs(sympy.N(value, 30) - sympy.Float(str(ref), 30)) < 1e-27
    phi2 = [step.rhs for step in lemmas() if step.lhs == Expectation(Phi(s * u) ** 2)][-1]
    assert phi2.subs(s, 1) == sympy.Rational(1, 3)


# --- the lemmas, each numerically --------------------------------------------------


def _quad_u(body: sympy.Expr, s_value: float) -> float:
    """E[body] over u ~ N(0, 1), the body lambdified with scipy's Phi and phi."""
    f = sympy.lambdify(
        u,
        body.subs(s, s_value),
        modules=[{"Phi": special.ndtr, "NormalPDF": lambda x: math.exp(-x * x / 2)
                  / math.sqrt(2 * math.pi)}, "math"],
    )
    return _quad_std(lambda x: float(f(x)), 1.0, scale=max(s_value, 1.0))


S_VALUES = (0.1, 0.7, 1.0, 2.0, 6.0)


@pytest.mark.parametrize("s_value", S_VALUES)
def test_stein_lemma_numerically(s_value: float) -> None:
    for g in (u * Phi(s * u) ** 2, Phi(s * u) * NormalPDF(s * u), u**3 * Phi(s * u)):
        lhs = _quad_u(u * g, s_value)
        rhs = sympy.diff(g, u)
        _close(_quad_u(rhs, s_value), lhs, 1e-9)
        # the engine's form: E[g'] by linearity, each expectation evaluated numerically
        by_parts = stein(g).replace(
            lambda e: isinstance(e, Expectation), lambda e: sympy.Float(_quad_u(e.args[0], s_value))
        )
        _close(float(by_parts.subs(s, s_value)), lhs, 1e-9)


@pytest.mark.parametrize("s_value", S_VALUES)
def test_lemmas_numerically(s_value: float) -> None:
    for step in lemmas():
        rhs = step.rhs.replace(
            lambda e: isinstance(e, Expectation), lambda e: sympy.Float(_quad_u(e.args[0], s_value))
        )
        value = float(rhs.subs(s, s_value))
        if isinstance(step.lhs, sympy.Derivative):
            inner = step.lhs.args[0].args[0]
            h = 1e-4
            expected = (_quad_u(inner, s_value + h) - _quad_u(inner, s_value - h)) / (2 * h)
            _close(value, expected, 1e-7)
        else:
            _close(value, _quad_u(step.lhs.args[0], s_value), 1e-9)


@pytest.mark.parametrize("s_value", S_VALUES)
def test_phi_squared_matches_arcsin_form(s_value: float) -> None:
    # Wikipedia, "List of integrals of Gaussian functions": int Phi(b x)^2 phi(x) dx
    # = 1/2 - 2 T(0, 1/sqrt(1 + 2 b^2)) with Owen's T(0, c) = arctan(c) / (2 pi);
    # equivalently 1/4 + arcsin(b^2 / (1 + b^2)) / (2 pi).
    (phi2,) = [step.rhs for step in lemmas() if step.lhs == Expectation(Phi(s * u) ** 2)][-1:]
    ours = float(phi2.subs(s, s_value))
    known = 0.25 + math.asin(s_value**2 / (1 + s_value**2)) / (2 * math.pi)
    owen = 0.5 - math.atan(1 / math.sqrt(1 + 2 * s_value**2)) / math.pi
    _close(ours, known, 1e-13)
    _close(ours, owen, 1e-13)


# --- every derivation step, numerically ----------------------------------------------


def _numeric(expr: sympy.Expr, variance: float, activation: str) -> float:
    """Evaluate a step side: expectations by quadrature, the rest by SymPy."""
    f, df = _phi(activation)

    def expect(e: sympy.Expr) -> sympy.Expr:
        body = e.args[0]
        if body.has(Activation):
            act = body.atoms(Activation).pop()
            g = df if act.args[0].name.endswith("'") else f
            power = sympy.Poly(body.subs(act, sympy.Symbol("X")), sympy.Symbol("X")).degree()
            return sympy.Float(_quad_std(lambda x: g(x) ** power, variance))
        if z in body.free_symbols:
            fz = sympy.lambdify(z, body, modules=[{"Phi": special.ndtr, "NormalPDF": _pdf}, "math"])
            return sympy.Float(_quad_std(lambda x: float(fz(x)), variance))
        return sympy.Float(_quad_u(body, math.sqrt(variance)))

    if isinstance(expr, sympy.Derivative):
        inner = expr.args[0].args[0]
        h, sv = 1e-5, math.sqrt(variance)
        return (_quad_u(inner, sv + h) - _quad_u(inner, sv - h)) / (2 * h)
    out = expr.replace(lambda e: isinstance(e, Expectation), expect)
    slope = sympy.Symbol("a", nonnegative=True)
    return float(out.subs({s: math.sqrt(variance), slope: sympy.Rational(1, 100)}).evalf(15))


@pytest.mark.slow
@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_step_holds_numerically(activation: str, derivative: bool) -> None:
    derivation = moment_derivation(activation, derivative)
    assert derivation.key == f"gaussian/{activation}/{'backward' if derivative else 'forward'}"
    assert derivation.result == derivation.steps[-1]
    for variance in (0.3, 2.0):
        for step in derivation:
            lhs = _numeric(step.lhs, variance, activation)
            rhs = _numeric(step.rhs, variance, activation)
            rtol = 1e-6 if isinstance(step.lhs, sympy.Derivative) else 1e-9
            _close(rhs, lhs, rtol)


def test_derivations_print() -> None:
    derivation = moment_derivation("gelu")
    tex = [step.latex() for step in derivation]
    assert any(r"\mathbb{E}" in line and r"\Phi" in line for line in tex)
    assert any(r"\varphi" in line for line in tex)
    assert all("Expectation" not in line and "NormalPDF" not in line for line in tex)
    assert "atan" in tex[-1] and r"\operatorname{gelu}" in tex[-1]
    assert "E[" in derivation.steps[0].text()
    # Stein's lemma and the Gaussian integrals are named in the reasons
    reasons = " ".join(step.reason for step in derivation)
    assert "Stein" in reasons and "Gaussian integral" in reasons


# --- tanh: unevaluated, numerical on demand ------------------------------------------


def _tanh_reference(variance: mpmath.mpf, derivative: bool, dps: int) -> mpmath.mpf:
    """Independent high-precision value: Gauss-Legendre on many panels of z = s u."""
    with mpmath.workdps(dps + 10):
        std = mpmath.sqrt(variance)

        def g(x):
            t = mpmath.tanh(std * x)
            return ((1 - t * t) ** 2 if derivative else t * t) * mpmath.npdf(x)

        scales = {mpmath.mpf(2) ** e / std for e in range(-4, 6)}
        fixed = {mpmath.mpf(v) for v in (0, 1, 2, 4, 8, 12, 40)}
        edges = [e for e in sorted(scales | fixed) if e <= 40] + [mpmath.inf]
        return 2 * mpmath.quad(g, edges, method="gauss-legendre")


@pytest.mark.slow
@pytest.mark.parametrize("derivative", [False, True])
def test_tanh_high_precision(derivative: bool) -> None:
    moment = TanhDerivativeMoment if derivative else TanhMoment
    for variance in ("1e-6", "0.3", "1", "7", "1e4", "1e10"):
        exact = sympy.Rational(variance) if "e" not in variance else sympy.Float(variance, 40)
        value = moment(exact)
        got = value.evalf(30)
        with mpmath.workdps(40):
            ref = _tanh_reference(mpmath.mpf(variance), derivative, 30)
            assert abs(got._to_mpmath(mpmath.mp.prec) - ref) <= mpmath.mpf(10) ** -28 * ref
        _close(float(value), float(ref), 1e-14)


def test_tanh_unevaluated_and_printing() -> None:
    v = sympy.Symbol("v", positive=True)
    assert isinstance(gaussian_moment("tanh", v), TanhMoment)
    assert isinstance(gaussian_moment("tanh", v, derivative=True), TanhDerivativeMoment)
    assert TanhMoment(0) == 0 and TanhDerivativeMoment(0) == 1
    assert TanhMoment(v).evalf() == TanhMoment(v)
    assert latex(TanhMoment(q(k - 1))) == (
        r"\mathbb{E}_{z \sim \mathcal{N}(0,\, q_{k - 1})}\left[\tanh^{2} z\right]"
    )
    assert "tanh" in text(TanhDerivativeMoment(d(k)))
    assert sympy.N(TanhMoment(1), 20) == TanhMoment(1).evalf(20)
    assert isinstance(TANH_GUARD_DIGITS, int) and TANH_GUARD_DIGITS > 0
    # usable inside recursions: a product with a symbol stays symbolic until evaluated
    expr = 2 * TanhMoment(q(k - 1))
    assert float(expr.subs(q(k - 1), 1)) == pytest.approx(2 * 0.3942944903978412, rel=1e-14)


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("swish", 1), {}, "unknown activation 'swish'"),
        ((None, 1), {}, "unknown activation None"),
        (("relu", 0), {}, "s2 must be a positive"),
        (("relu", -2), {}, "s2 must be a positive"),
        (("relu", sympy.I), {}, "s2 must be a positive"),
        (("relu", "1+"), {}, "s2 must be a positive"),
        (("relu", sympy.Symbol("w", negative=True)), {}, "s2 must be a positive"),
        (("relu", 1), {"derivative": "yes"}, "derivative must be True or False"),
        (("leaky_relu", 1), {"negative_slope": -0.5}, "negative_slope must be"),
        (("leaky_relu", 1), {"negative_slope": "?"}, "negative_slope must be"),
        (("relu", 1), {"negative_slope": -1}, "negative_slope must be"),
    ],
)
def test_bad_input(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(DeriveError, match=message.replace("(", r"\(")):
        gaussian_moment(*args, **kwargs)


def test_bad_input_derivation_and_tanh() -> None:
    with pytest.raises(DeriveError, match="unknown activation 'elu'"):
        moment_derivation("elu")
    with pytest.raises(DeriveError, match=r"unknown activation \['relu'\]"):
        moment_derivation(["relu"])
    with pytest.raises(DeriveError, match="derivative must be True or False"):
        moment_derivation("relu", [True])
    with pytest.raises(DeriveError, match="variance"):
        TanhMoment(-1)
    with pytest.raises(ValueError, match="choose one of linear, relu"):
        gaussian_moment("ReLU", 1)


def test_import_is_light() -> None:
    code = (
        "import sys, derive.gaussian.moments as g; "
        "assert 'derive.gaussian.gelu' not in sys.modules; "
        "assert g._moment_in_s.cache_info().currsize == 0; "
        "assert 'numpy' not in sys.modules and 'scipy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_repeated_calls_are_cached() -> None:
    gaussian_moment("gelu", q(k - 1))
    from derive.gaussian.moments import _moment

    before = _moment.cache_info().hits
    for _ in range(5):
        gaussian_moment("gelu", q(k - 1))
    assert _moment.cache_info().hits == before + 5


def test_plain_python_numbers_are_exact() -> None:
    assert gaussian_moment("relu", 0.5) == sympy.Rational(1, 4)
    assert gaussian_moment("leaky_relu", "3/2", negative_slope=0.1) == sympy.Rational(303, 400)
    assert isinstance(gaussian_moment("tanh", 0.5), TanhMoment)
    assert isinstance(gaussian_moment("tanh", sympy.Float(0.5)), sympy.Float)


@pytest.mark.slow
def test_same_output_in_fresh_processes() -> None:
    code = (
        "from derive.gaussian.moments import moment_derivation as m\n"
        "for a in ('leaky_relu', 'tanh', 'gelu'):\n"
        "    for flag in (False, True):\n"
        "        d = m(a, flag)\n"
        "        print(d.key, d.title, d.assumptions, d.notes)\n"
        "        for st in d:\n"
        "            print(st.latex(), '|', st.text(), '|', st.reason)\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONHASHSEED": seed})
        for seed in ("1", "2")
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > 30


@settings(max_examples=30, deadline=None)
@given(
    variance=st.floats(min_value=1e-3, max_value=1e3),
    activation=st.sampled_from(("gelu", "tanh")),
    derivative=st.booleans(),
)
def test_smooth_moments_at_random_variances(variance: float, activation: str,
                                            derivative: bool) -> None:
    f, df = _phi(activation)
    g = df if derivative else f
    value = gaussian_moment(activation, sympy.Float(variance, 30), derivative=derivative)
    _close(float(value), _quad_std(lambda x: g(x) ** 2, variance), 1e-9)


def test_phi_squared_equals_arcsin_form_symbolically() -> None:
    phi2 = [step.rhs for step in lemmas() if step.lhs == Expectation(Phi(s * u) ** 2)][-1]
    arcsin_form = sympy.Rational(1, 4) + sympy.asin(s**2 / (1 + s**2)) / (2 * sympy.pi)
    difference = phi2 - arcsin_form
    assert sympy.simplify(sympy.diff(difference, s)) == 0
    assert difference.subs(s, 0) == 0
