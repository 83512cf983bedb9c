"""Variance recursions: known results, closed forms against their recursions, values."""

import itertools
import math

import pytest
import sympy
from scipy import integrate, stats

import derive
from derive.blocks.presets import PRESETS
from derive.derivation.symbols import K, d, k, q, q0
from derive.errors import DeriveError
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS
from derive.recursions.analysis import VarianceAnalysis, compare, variance
from derive.recursions.recursion import Recursion

GRID = list(itertools.product(INITS, ACTIVATIONS, NORMS, BRANCHES))
g = sympy.Symbol("g", positive=True)


# --- literature: produced by the derivation, never typed into the code -------------------


def test_he_relu_doubles_per_block_udl_11_3() -> None:
    # Prince, Understanding Deep Learning, section 11.3: with He initialization and ReLU
    # the variance of a residual network doubles at every block, forward and backward.
    a = variance("he", "relu")
    assert a.forward.closed_form.rhs == 2**K * q0
    assert a.backward.closed_form.rhs == 2**K
    assert a.forward.growth == a.backward.growth == "exponential"


def test_xavier_relu_grows_by_three_halves() -> None:
    # Xavier on a square matrix gives n sigma_w^2 = 1 and E[relu(z)^2] = s/2: 1 + 1/2 per block.
    a = variance("xavier", "relu")
    assert a.forward.closed_form.rhs == sympy.Rational(3, 2) ** K * q0
    assert a.backward.closed_form.rhs == sympy.Rational(3, 2) ** K


def test_pre_norm_grows_linearly_and_backward_telescopes() -> None:
    a = variance("he", "relu", "pre", gamma=g)
    c = g**2  # n sigma_w^2 E[relu(z)^2] with z ~ N(0, g^2) is 2 * g^2 / 2
    assert sympy.simplify(a.forward.closed_form.rhs - (q0 + c * K)) == 0
    assert sympy.simplify(a.backward.closed_form.rhs - (q0 + c * K) / q0) == 0
    assert a.forward.growth == a.backward.growth == "linear"


def test_post_norm_is_constant_after_the_first_block() -> None:
    a = variance("xavier", "relu", "post", gamma=g)
    forward, backward = a.forward.closed_form.rhs, a.backward.closed_form.rhs
    assert forward.subs(K, 0) == q0 and forward.subs(K, 7) == g**2
    assert backward.subs(K, 0) == 1 and sympy.simplify(backward.subs(K, 7) - g**2 / q0) == 0
    assert a.forward.profile(3, q0=5) == [5, g**2, g**2, g**2]


# --- closed forms substituted back into their recursions, symbolic depth ----------------


def _forward_map(rec: Recursion, value: sympy.Expr) -> sympy.Expr:
    return rec.recurrence.rhs.subs(q(k - 1), value)


def _backward_factor(rec: Recursion, q_prev: sympy.Expr) -> sympy.Expr:
    return (rec.recurrence.rhs / d(k)).subs(q(k - 1), q_prev)


def _zero(expr: sympy.Expr) -> bool:
    expr = sympy.gammasimp(sympy.expand_func(expr))
    if sympy.simplify(expr) == 0:
        return True
    # unevaluated tanh moments: an exact zero must also vanish at sample depths
    return all(abs(complex(sympy.N(expr.subs(k, j)))) < 1e-10 for j in (2, 3, 7))


def _last(expr: sympy.Expr) -> tuple[sympy.Expr, int]:
    """The K >= 1 branch of a post-LN Piecewise, and the first block it holds from."""
    if isinstance(expr, sympy.Piecewise):
        return expr.args[-1].expr, 2
    return expr, 1


@pytest.mark.parametrize("init,activation,norm,branch", GRID)
def test_closed_forms_satisfy_their_recursions(init, activation, norm, branch) -> None:
    a = variance(init, activation, norm, branch)
    fwd, bwd = a.forward.closed_form, a.backward.closed_form
    if fwd is None:
        assert norm == "none" and activation in ("tanh", "gelu", "erf")
        assert a.forward.reason and bwd is None and a.backward.reason
        return
    sol, first = _last(fwd.rhs)
    assert fwd.rhs.subs(K, 0) == q0
    assert _zero(sympy.simplify(_forward_map(a.forward, q0) - fwd.rhs.subs(K, 1)))
    prev = sol.subs(K, k - 1) if first == 1 else sol
    assert _zero(sol.subs(K, k) - _forward_map(a.forward, prev))
    prod, first = _last(bwd.rhs)
    assert bwd.rhs.subs(K, 0) == 1
    assert _zero(bwd.rhs.subs(K, 1) - _backward_factor(a.backward, q0))
    q_prev = sol.subs(K, k - 1) if first == 1 else sol
    assert _zero(prod.subs(K, k) / prod.subs(K, k - 1) - _backward_factor(a.backward, q_prev))


def test_symbolic_parameters_still_solve() -> None:
    p, r, s = sympy.symbols("p r sigma", positive=True)
    a = variance("lecun", "leaky_relu", "pre", "mlp", mlp_ratio=r, dropout=p, gamma=g)
    sol = a.forward.closed_form.rhs
    assert sympy.simplify(sol.subs(K, k) - _forward_map(a.forward, sol.subs(K, k - 1))) == 0
    b = variance("he", "relu", sigma_w2=s)
    assert b.forward.closed_form.rhs == (1 + sympy.Symbol("n", positive=True) * s / 2) ** K * q0


@pytest.mark.parametrize("factor,start", [
    ((k + q0) / (k + q0 - 1), 1),          # telescopes to one factor
    ((k + 1) / (k + 4), 1),                # telescopes, the other way
    ((2 * k + 1) / (3 * k + q0), 2),       # different slopes: gammas and a power
    ((k + sympy.pi) / (k + sympy.sqrt(2)), 1),
    ((g * k + q0) / (g * k - g + q0 + 1), 1),
    (k / 5, 3),                            # one side constant
    ((10 - k) / (k + 1), 1),               # a factor that vanishes at k = 10
    ((k - 2) / (k + 1), 1),                # ... at k = 2
    ((k - 1) / (2 * k), 1),                # ... at the first k
    ((-2 * k + sympy.Rational(1, 3)) / (k + 2), 2),  # a negative slope, no zero
    ((K - k + 1) / k, 1),                  # the depth inside the factor
    (2**k * (k + 1), 1),                   # not a ratio of polynomials
])
def test_linear_products_match_multiplying_out(factor, start) -> None:
    from derive.recursions.closed_forms import solve_product

    closed = solve_product(factor, start)
    values = {q0: sympy.Rational(7, 3), g: sympy.Rational(5, 2)}
    for depth in range(start - 1, start + 12):
        direct = sympy.Mul(*[factor.subs(K, depth).subs(k, j) for j in range(start, depth + 1)])
        got = closed.subs(values).subs(K, depth)
        if isinstance(got, sympy.Product):
            got = got.doit()
        assert float(got) == pytest.approx(float(direct.subs(values)), rel=1e-12, abs=1e-300)


# --- values: .at and .profile against iterating the recurrence step by step -------------


def _iterate(analysis: VarianceAnalysis, depth: int, start: float) -> tuple[float, float]:
    qs = [sympy.Float(start, 30)]
    grad = sympy.Float(1, 30)
    for _ in range(depth):
        grad *= sympy.N(_backward_factor(analysis.backward, qs[-1]), 30)
        qs.append(sympy.N(_forward_map(analysis.forward, qs[-1]), 30))
    return float(qs[-1]), float(grad)


@pytest.mark.parametrize("init,activation,norm,branch", [
    ("he", "relu", "none", "single"), ("xavier", "leaky_relu", "pre", "mlp"),
    ("lecun", "gelu", "none", "single"), ("he", "gelu", "pre", "mlp"),
    ("xavier", "gelu", "post", "single"), ("he", "tanh", "none", "single"),
    ("xavier", "tanh", "pre", "single"), ("he", "tanh", "post", "mlp"),
])
def test_at_matches_stepwise_iteration(init, activation, norm, branch) -> None:
    a = variance(init, activation, norm, branch)
    depth, start = 6, sympy.Rational(3, 2)
    forward, backward = _iterate(a, depth, start)
    assert float(a.forward.at(depth, start)) == pytest.approx(forward, rel=1e-12)
    assert float(a.backward.at(depth, start)) == pytest.approx(backward, rel=1e-12)
    prof = a.backward.profile(depth, start)
    assert len(prof) == depth + 1 and float(prof[-1]) == 1
    assert float(prof[0]) == pytest.approx(backward, rel=1e-12)
    assert a.forward.profile(depth, start)[-1] == a.forward.at(depth, start)


def test_exact_values_are_rational() -> None:
    a = variance("xavier", "relu", "pre", dropout=0.5)
    assert a.forward.at(50) == 1 + 50 * sympy.Integer(1) / 2 / (1 - sympy.Rational(1, 2))
    assert isinstance(a.backward.at(50), sympy.Rational)
    assert variance("he", "relu").forward.at(50, q0=3) == 3 * 2**50


def test_gelu_pre_increment_matches_quadrature() -> None:
    # Independent: E[gelu(z)^2], z ~ N(0, 1), by numerical quadrature with SciPy.
    def gelu(z: float) -> float:
        return z * stats.norm.cdf(z)

    moment, _ = integrate.quad(lambda z: gelu(z) ** 2 * stats.norm.pdf(z), -40, 40)
    a = variance("he", "gelu", "pre")  # n sigma_w^2 = 2
    assert float(a.forward.at(10) - 1) == pytest.approx(10 * 2 * moment, rel=1e-10)


def test_tanh_pre_increment_matches_quadrature() -> None:
    t_moment, _ = integrate.quad(lambda z: math.tanh(z) ** 2 * stats.norm.pdf(z), -40, 40)
    assert float(variance("xavier", "tanh", "pre").forward.at(4)) == pytest.approx(
        1 + 4 * t_moment, rel=1e-10
    )


# --- the API around the recursions -------------------------------------------------------


def test_public_api_and_repr_latex() -> None:
    a = derive.variance("he", "relu", "pre")
    assert isinstance(a, derive.VarianceAnalysis) and isinstance(a.forward, derive.Recursion)
    assert "q_{K}" in a.forward._repr_latex_() and "d_{k - 1}" in a._repr_latex_()


def test_derivation_has_assumptions_steps_and_check() -> None:
    der = variance("he", "relu", "pre", "mlp").backward.derivation
    assert der.key == "variance/he/relu/pre/mlp/backward"
    assert len(der.assumptions) >= 6 and der.result.rhs == variance(
        "he", "relu", "pre", "mlp").backward.closed_form.rhs
    check = der.steps[-1]
    assert check.reason.startswith("check") and check.rhs == 0
    reasons = " ".join(s.reason for s in der.steps)
    assert "Gaussian moment" in reasons and "recurrence" in reasons
    fwd = variance("he", "tanh").forward.derivation
    assert any("No closed form" in note for note in fwd.notes)
    assert variance("he", "relu", dropout="1/10").forward.derivation.key.endswith(
        "dropout=1_10/forward")


def test_to_dict_is_json_ready_and_stable() -> None:
    import json

    first = json.dumps(variance("he", "gelu", "pre").to_dict(5), sort_keys=True)
    again = json.dumps(variance("he", "gelu", "pre").to_dict(5), sort_keys=True)
    assert first == again
    data = json.loads(first)
    assert data["forward"]["growth"] == "linear" and len(data["forward"]["profile"]) == 6
    assert data["backward"]["closed_form"].startswith("\\frac{d_{0}}{d_{K}}")


def test_compare_rows_cover_every_norm_and_direction() -> None:
    rows = compare("he", "relu", depth=4)
    assert [(r["norm"], r["direction"]) for r in rows] == [
        (n, dr) for n in NORMS for dr in ("forward", "backward")
    ]
    assert [r["value"] for r in rows] == [16, 16, 5, 5, 1, 1]


def test_power_law_exponent_matches_the_values() -> None:
    # Independent of the read-off: the slope of log(d_0/d_K) against log K at large K.
    rec = variance("he", "gelu", "pre").backward
    growth = rec.growth
    assert growth.startswith("power law, K^(")
    exponent = float(growth.split("K^(")[1].rstrip(")"))
    slope = math.log(float(rec.at(4000)) / float(rec.at(2000))) / math.log(2)
    assert slope == pytest.approx(exponent, abs=0.01)


def test_growth_without_closed_form_says_so() -> None:
    a = variance("he", "gelu")
    assert a.forward.closed_form is None and "from the iteration" in a.forward.growth
    assert a.forward.growth.startswith("exponential")
    assert variance("he", "tanh").forward.growth.startswith("linear")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"init": "kaiming"}, "unknown init 'kaiming': choose one of xavier, he, lecun"),
    ({"norm": "mid"}, "unknown block 'mid'"),
    ({"dropout": 1}, "dropout must be in [0, 1), got 1"),
    ({"mlp_ratio": 0}, "mlp_ratio must be > 0"),
    ({"gamma": -2}, "gamma must be > 0"),
])
def test_bad_configuration_raises(kwargs, fragment) -> None:
    with pytest.raises(DeriveError, match=None) as err:
        variance(**kwargs)
    assert fragment in str(err.value) and isinstance(err.value, ValueError)


def test_bad_depth_and_q0_raise() -> None:
    rec = variance().forward
    with pytest.raises(DeriveError, match=r"depth must be an integer >= 0 and <= 10\^18, got -1"):
        rec.at(-1)
    with pytest.raises(DeriveError, match=r"depth must be an integer >= 0 and <= 10\^18, got 2\.5"):
        rec.profile(2.5)
    with pytest.raises(DeriveError, match="q0 must be > 0"):
        rec.at(3, q0=-1)
    with pytest.raises(DeriveError, match="numeric iteration needs numbers"):
        variance("he", "tanh", sigma_w2="s").forward.at(3)


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_iterated_profiles_follow_the_closed_forms(preset: str, activation: str) -> None:
    """The float iteration a figure draws (and ``.at`` uses where no closed form exists)
    against the exact values of the closed forms; with BatchNorm it iterates c_k too."""
    from derive.simulation.networks import checkable

    a = derive.variance("he", activation, block=checkable(preset))
    forward, backward = a.forward.iterated(30), a.backward.iterated(30)
    exact_forward = [float(v) for v in a.forward.profile(30)]
    exact_backward = [float(v) for v in a.backward.profile(30)]  # d_k / d_K
    assert forward == pytest.approx(exact_forward, rel=1e-9)
    assert backward == pytest.approx([exact_backward[0] / v for v in exact_backward], rel=1e-9)
