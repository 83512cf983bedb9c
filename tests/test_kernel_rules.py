"""The two-point rules of every primitive and of whole blocks, against Monte Carlo.

Everything measured here is computed by NumPy code written in this file from the
mathematics (the primitives' definitions, their transposed Jacobians written out by
hand), never by the package's own ``forward_np`` / ``backward_np``:

* each primitive alone: Gaussian pairs (u, v) with a chosen (q_a, q_b, c), the primitive
  applied, (q_a', q_b', c') measured and compared with ``node.kernel``; backward, gradient
  pairs with a chosen (d_a, d_b, g), independent of the forward values (gradient
  independence), the transposed Jacobian applied and the factors compared with
  ``node.kernel_gains``;
* one finite block of each kind (``Block.kernel_forward`` and ``kernel_gain``);
* known results, with their sources, produced by the derivation and compared with the
  paper's formula evaluated here.

Tolerances are five standard errors of the Monte Carlo mean (measured from the samples),
plus, where a finite width biases the estimate, a stated O(1/n) allowance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from scipy.special import erf as np_erf
from scipy.special import ndtr

from derive.blocks.block import block
from derive.blocks.branch import BranchConfig
from derive.blocks.nodes import STD_X, Input, Kernel, Scale, Sum
from derive.blocks.primitives import Activation, BatchNorm, Dropout, LayerNorm, Weight
from derive.recursions.kernel import kernel as derive_kernel
from derive.recursions.kernel import kernel as kernel_analysis
from derive.recursions.phase import critical_line, phase

SAMPLES = 1_000_000
#: Standard errors allowed between a rule and its Monte Carlo mean.
SIGMAS = 5.0


# --- Monte Carlo helpers --------------------------------------------------------------

def gaussian_pairs(rng: np.random.Generator, q_a: float, q_b: float, c: float,
                   shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) with Var u = q_a, Var v = q_b, Cov(u, v) = c, by the Cholesky factor of
    [[q_a, c], [c, q_b]] written out."""
    z1, z2 = rng.standard_normal((2, *shape))
    rho = c / math.sqrt(q_a * q_b)
    u = math.sqrt(q_a) * z1
    v = math.sqrt(q_b) * (rho * z1 + math.sqrt(max(0.0, 1 - rho * rho)) * z2)
    return u, v


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    """The sample mean and its standard error."""
    flat = np.asarray(values, dtype=float).ravel()
    return float(flat.mean()), float(flat.std() / math.sqrt(flat.size))


def assert_matches(rule: object, samples: np.ndarray, what: str, allowance: float = 0.0) -> None:
    """``rule`` lies within SIGMAS standard errors (plus ``allowance``) of the samples' mean."""
    mean, error = mean_and_error(samples)
    value = float(rule)  # type: ignore[arg-type]
    tolerance = SIGMAS * error + allowance + 1e-12 * max(1.0, abs(mean))
    assert abs(value - mean) <= tolerance, (
        f"{what}: rule {value:.6g}, Monte Carlo {mean:.6g} +- {error:.2g} "
        f"(tolerance {tolerance:.2g})")


def assert_between_networks(rule: object, estimates: list[float], what: str,
                            allowance: float = 0.0) -> None:
    """As :func:`assert_matches`, for one estimate per independently drawn network."""
    values = np.asarray(estimates)
    mean = float(values.mean())
    error = float(values.std(ddof=1) / math.sqrt(values.size))
    value = float(rule)  # type: ignore[arg-type]
    tolerance = SIGMAS * error + allowance
    assert abs(value - mean) <= tolerance, (
        f"{what}: rule {value:.6g}, Monte Carlo {mean:.6g} +- {error:.2g} "
        f"(tolerance {tolerance:.2g})")


# --- the activations, written out -----------------------------------------------------

def activation(name: str, z: np.ndarray, slope: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(phi(z), phi'(z)) from each activation's definition."""
    if name == "linear":
        return z, np.ones_like(z)
    if name == "relu":
        return np.maximum(z, 0.0), (z > 0).astype(float)
    if name == "leaky_relu":
        return np.where(z > 0, z, slope * z), np.where(z > 0, 1.0, slope)
    if name == "tanh":
        t = np.tanh(z)
        return t, 1.0 - t * t
    if name == "gelu":  # z Phi(z), Phi the standard normal CDF
        return z * ndtr(z), ndtr(z) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    assert name == "erf"
    return np_erf(z), 2 / math.sqrt(math.pi) * np.exp(-z * z)


ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "gelu", "erf")


def random_states(seed: int, count: int) -> list[tuple[float, float, float]]:
    """(q_a, q_b, c) with q in [0.2, 6] and rho in [-0.95, 0.95]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        q_a, q_b = rng.uniform(0.2, 6.0, 2)
        rho = rng.uniform(-0.95, 0.95)
        out.append((float(q_a), float(q_b), float(rho * math.sqrt(q_a * q_b))))
    return out


#: Two random states for each activation, and one at large q (where a fixed 2-D
#: Gauss-Hermite rule would no longer be accurate) with a strong correlation.
ACTIVATION_CASES = [(name, state) for i, name in enumerate(ACTIVATIONS)
                    for state in [*random_states(10 + i, 2), (16.0, 9.0, 0.8 * 12.0)]]


@pytest.mark.parametrize(("name", "state"), ACTIVATION_CASES,
                         ids=[f"{n}-{i % 3}" for i, (n, _) in enumerate(ACTIVATION_CASES)])
def test_activation_kernel_and_derivative_kernel_match_monte_carlo(
        name: str, state: tuple[float, float, float]) -> None:
    q_a, q_b, c = state
    config = BranchConfig(negative_slope=sympy.Rational(1, 5))
    rng = np.random.default_rng(ACTIVATION_CASES.index((name, state)))
    u, v = gaussian_pairs(rng, q_a, q_b, c, (SAMPLES,))
    (fu, du), (fv, dv) = activation(name, u), activation(name, v)
    node = Activation(Input(), name)
    x = Kernel(q_a, q_b, c)
    out = node.kernel([x], config, x)
    assert_matches(out.q_a, fu * fu, f"{name} q_a'")
    assert_matches(out.q_b, fv * fv, f"{name} q_b'")
    assert_matches(out.c, fu * fv, f"{name} c'")
    # backward: gradient pairs independent of (u, v), through diag(phi'(u)), diag(phi'(v))
    d_a, d_b, g = 1.3, 0.7, 0.6
    ga, gb = gaussian_pairs(rng, d_a, d_b, g, (SAMPLES,))
    (gains,) = node.kernel_gains([x], config, x)
    assert_matches(gains.a * d_a, (du * ga) ** 2, f"{name} d_a'")
    assert_matches(gains.b * d_b, (dv * gb) ** 2, f"{name} d_b'")
    assert_matches(gains.ab * g, (du * ga) * (dv * gb), f"{name} g'")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_covariance_with_another_member_of_the_batch(name: str) -> None:
    """m' = E[phi(u) phi(w)] for w an independent member of the batch: Cov(u, w) = m."""
    q, c, m = 1.7, 0.9, 0.4
    rng = np.random.default_rng(5)
    u, w = gaussian_pairs(rng, q, q, m, (SAMPLES,))
    x = Kernel(q, q, c, m)
    config = BranchConfig(negative_slope=sympy.Rational(1, 5))
    out = Activation(Input(), name).kernel([x], config, x)
    assert_matches(out.m, activation(name, u)[0] * activation(name, w)[0], f"{name} m'")


# --- the weight matrix ---------------------------------------------------------------

WEIGHT_CASES = [
    # (config, fan_in, fan_out, entry variance at n = 1 as a function of n)
    ("he", BranchConfig(init="he"), 1, 1, lambda n: 2 / n),
    ("xavier wide out", BranchConfig(init="xavier"), 1, 4, lambda n: 2 / (5 * n)),
    ("fan-in variance and bias", BranchConfig(fan_in_variance=sympy.Rational(3, 2),
                                              sigma_b2=sympy.Rational(2, 5)),
     2, 1, lambda n: 1.5 / (2 * n)),
]


@pytest.mark.parametrize(("label", "config", "fan_in", "fan_out", "variance"), WEIGHT_CASES,
                         ids=[c[0] for c in WEIGHT_CASES])
def test_weight_rule_matches_random_matrices(label: str, config: BranchConfig, fan_in: int,
                                             fan_out: int, variance) -> None:
    n, networks, pairs = 200, 40, 40
    n_in, n_out = fan_in * n, fan_out * n
    q_a, q_b, c, m = 1.4, 1.4, 0.5, 0.3
    sigma_b2 = float(config.sigma_b2)
    rng = np.random.default_rng(11)
    node = Weight(("W", 0), Input(), sympy.Integer(fan_in), sympy.Integer(fan_out))
    x = Kernel(q_a, q_b, c, m)
    out = node.kernel([x], config, x)
    (gains,) = node.kernel_gains([x], config, x)
    d_a, d_b, g = 0.8, 1.2, -0.5
    measured: dict[str, list[float]] = {k: [] for k in ("q_a", "q_b", "c", "m", "a", "b", "ab")}
    for _ in range(networks):
        W = rng.standard_normal((n_out, n_in)) * math.sqrt(variance(n))
        bias = rng.standard_normal(n_out) * math.sqrt(sigma_b2)
        # a, b and e: e is another member of the batch, Cov(a, e) = Cov(b, e) = m
        z = rng.standard_normal((3, pairs, n_in))
        shared = math.sqrt(m) * z[0]
        ua, ub = gaussian_pairs(rng, q_a - m, q_b - m, c - m, (pairs, n_in))
        xa, xb = shared + ua, shared + ub
        xe = shared + math.sqrt(q_a - m) * z[1]
        ha, hb, he = np.split(np.concatenate([xa, xb, xe]) @ W.T + bias, 3)
        measured["q_a"].append(float((ha * ha).mean()))
        measured["q_b"].append(float((hb * hb).mean()))
        measured["c"].append(float((ha * hb).mean()))
        measured["m"].append(float((ha * he).mean()))
        ga, gb = gaussian_pairs(rng, d_a, d_b, g, (pairs, n_out))
        back_a, back_b = np.split(np.concatenate([ga, gb]) @ W, 2)  # W^T g, as rows
        measured["a"].append(float((back_a * back_a).mean()) / d_a)
        measured["b"].append(float((back_b * back_b).mean()) / d_b)
        measured["ab"].append(float((back_a * back_b).mean()) / g)
    for key, rule in (("q_a", out.q_a), ("q_b", out.q_b), ("c", out.c), ("m", out.m),
                      ("a", gains.a), ("b", gains.b), ("ab", gains.ab)):
        assert_between_networks(rule, measured[key], f"{label}: {key}")


# --- LayerNorm over a real vector of units ----------------------------------------------

def layernorm(v: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """gamma (v - mean)/std over the units (last axis); returns (output, (v - mean)/std)
    and the std."""
    centred = v - v.mean(axis=-1, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=-1, keepdims=True))
    return gamma * centred / std, std


def layernorm_transpose(g: np.ndarray, y: np.ndarray, std: np.ndarray,
                        gamma: float) -> np.ndarray:
    """J^T g for J = (gamma/std)(I - 1 1^T/n - y y^T/n), y the normalized vector: the
    derivative of (v - mean)/std by hand (J is symmetric)."""
    return gamma / std * (g - g.mean(axis=-1, keepdims=True)
                          - y * (g * y).mean(axis=-1, keepdims=True))


LN_WIDTH, LN_VECTORS = 2000, 400


def _layernorm_measure(xa: np.ndarray, xb: np.ndarray, gamma: float, rng: np.random.Generator,
                       grads: tuple[float, float, float]) -> dict[str, np.ndarray]:
    oa, sa = layernorm(xa, gamma)
    ob, sb = layernorm(xb, gamma)
    ga, gb = gaussian_pairs(rng, *grads, xa.shape)
    ba = layernorm_transpose(ga, oa / gamma, sa, gamma)
    bb = layernorm_transpose(gb, ob / gamma, sb, gamma)
    return {"q_a": oa * oa, "q_b": ob * ob, "c": oa * ob, "a": ba * ba, "b": bb * bb,
            "ab": ba * bb}


@pytest.mark.parametrize("state", [(1.0, 1.0, 0.5), (2.5, 0.4, -0.6), (9.0, 4.0, 5.4)])
def test_layernorm_rule_on_centred_units(state: tuple[float, float, float]) -> None:
    gamma = 1.5
    config = BranchConfig(gamma=sympy.Rational(3, 2))
    rng = np.random.default_rng(21)
    xa, xb = gaussian_pairs(rng, *state, (LN_VECTORS, LN_WIDTH))
    grads = (1.1, 0.6, 0.4)
    measured = _layernorm_measure(xa, xb, gamma, rng, grads)
    x = Kernel(*state)
    out = LayerNorm(Input()).kernel([x], config, x)
    (gains,) = LayerNorm(Input()).kernel_gains([x], config, x)
    # finite n: the sample std and the removed directions bias the means by O(1/n)
    allowance = 4 / LN_WIDTH
    assert_matches(out.q_a, measured["q_a"], "LN q_a'")
    assert_matches(out.q_b, measured["q_b"], "LN q_b'")
    assert_matches(out.c, measured["c"], "LN c'", allowance * gamma**2)
    assert_matches(gains.a * grads[0], measured["a"], "LN d_a'", allowance * gains.a * grads[0])
    assert_matches(gains.b * grads[1], measured["b"], "LN d_b'", allowance * gains.b * grads[1])
    assert_matches(gains.ab * grads[2], measured["ab"], "LN g'",
                   allowance * math.sqrt(gains.a * gains.b) * grads[2])


def _relu_arc_cosine(q: float, rho: float) -> tuple[float, float]:
    """E[relu(u) relu(v)] (Cho & Saul 2009) and E[relu(u)] for variances q, correlation rho."""
    theta = math.acos(rho)
    return (q / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * rho),
            math.sqrt(q / (2 * math.pi)))


def test_layernorm_rule_after_relu() -> None:
    """derive refuses LN(relu(z)): for z Gaussian with q = 1, rho = 0, what the units give
    is the centred correlation (E[relu relu] - E[relu]^2)/(E[relu^2] - E[relu]^2) = 0, and the gain
    gamma^2/(E[relu^2] - E[relu]^2) = 2 pi/(pi - 1)."""
    q, rho = 1.0, 0.0
    rng = np.random.default_rng(23)
    za, zb = gaussian_pairs(rng, q, q, rho * q, (LN_VECTORS, LN_WIDTH))
    xa, xb = np.maximum(za, 0.0), np.maximum(zb, 0.0)
    grads = (1.0, 1.0, 0.5)
    measured = _layernorm_measure(xa, xb, 1.0, rng, grads)
    cross, mean = _relu_arc_cosine(q, rho)
    centred_rho = (cross - mean**2) / (q / 2 - mean**2)
    assert abs(float(measured["c"].mean()) - centred_rho) < 0.01  # the units do what LN does
    x = Kernel(q / 2, q / 2, cross)  # relu's output state
    out = LayerNorm(Input()).kernel([x], BranchConfig(), x)
    assert abs(float(out.c) - float(measured["c"].mean())) > 0.2  # the rule needs centred units
    # so derive refuses a LayerNorm of uncentred units, forward, backward and two-point
    import derive
    with pytest.raises(derive.DeriveError, match="nonzero mean"):
        derive.variance("he", block="x + W(LN(relu(W(x))))")
    with pytest.raises(derive.DeriveError, match="nonzero mean"):
        derive_kernel("he", block="x + W(LN(relu(W(x))))")


# --- BatchNorm over a real batch ----------------------------------------------------------

def batchnorm(v: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gamma (v - batch mean)/batch std per unit (the batch on axis -2)."""
    centred = v - v.mean(axis=-2, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=-2, keepdims=True))
    y = centred / std
    return gamma * y, y, std


def batchnorm_transpose(g: np.ndarray, y: np.ndarray, std: np.ndarray, gamma: float) -> np.ndarray:
    """J^T g over the batch: (gamma/std)(g - mean_batch(g) - y mean_batch(g y))."""
    return gamma / std * (g - g.mean(axis=-2, keepdims=True)
                          - y * (g * y).mean(axis=-2, keepdims=True))


@pytest.mark.parametrize(("q", "c", "m"), [(1.0, 0.6, 0.3), (2.0, -0.4, 0.5), (1.5, 0.9, 0.0)])
def test_batchnorm_rule_over_a_real_batch(q: float, c: float, m: float) -> None:
    """A batch of independent inputs that share, per unit, a component of variance m (what
    a bias or a common input leaves), with probe pairs (a, b) of covariance c among them."""
    gamma, units, pairs, others = 1.5, 3000, 64, 896
    batch = 2 * pairs + others
    rng = np.random.default_rng(31)
    shared = rng.standard_normal((units, 1, 1)) * math.sqrt(m)
    ea, eb = gaussian_pairs(rng, q - m, q - m, c - m, (units, pairs, 1))
    rest = rng.standard_normal((units, others, 1)) * math.sqrt(q - m)
    v = shared + np.concatenate([ea, eb, rest], axis=1)  # (units, batch, 1): unit-wise
    out, y, std = batchnorm(v, gamma)
    oa, ob, orest = out[:, :pairs], out[:, pairs:2 * pairs], out[:, 2 * pairs:]
    x = Kernel(q, q, c, m)
    config = BranchConfig(gamma=sympy.Rational(3, 2))
    rule = BatchNorm(Input()).kernel([x], config, x)
    assert rule.m == 0 and rule.q_a == gamma**2
    assert_matches(rule.c, oa * ob, "BN c'", 2 * gamma**2 / batch)
    assert_matches(rule.q_a, oa * oa, "BN q_a'", 2 * gamma**2 / batch)
    # m': an a-probe against the independent members
    cross = oa[:, :, 0].mean(axis=1) * orest[:, :, 0].mean(axis=1)
    assert_matches(rule.m, cross * 1.0, "BN m'", 2 * gamma**2 / batch)
    # backward: every member gets a gradient, the probe pairs correlated (d_a, d_b, g)
    d_a, d_b, g = 1.2, 0.8, 0.5
    gpa, gpb = gaussian_pairs(rng, d_a, d_b, g, (units, pairs, 1))
    grad = np.concatenate([gpa, gpb, rng.standard_normal((units, others, 1))], axis=1)
    back = batchnorm_transpose(grad, y, std, gamma)
    ba, bb = back[:, :pairs], back[:, pairs:2 * pairs]
    (gains,) = BatchNorm(Input()).kernel_gains([x], config, x)
    scale = float(gains.a)
    assert_matches(gains.a * d_a, ba * ba, "BN d_a'", 4 * scale / batch)
    assert_matches(gains.b * d_b, bb * bb, "BN d_b'", 4 * scale / batch)
    assert_matches(gains.ab * g, ba * bb, "BN g'", 4 * scale / batch)


def test_batchnorm_is_not_layernorm_when_the_batch_shares_a_component() -> None:
    """The measured c' sits at gamma^2 (c - m)/(q - m), far from LayerNorm's c/q: the
    batch test above can tell the two apart."""
    q, c, m = 1.0, 0.6, 0.3
    x = Kernel(q, q, c, m)
    bn = BatchNorm(Input()).kernel([x], BranchConfig(), x)
    assert abs(bn.c - (c - m) / (q - m)) < 1e-15
    assert abs(bn.c - c / q) > 0.1


# --- Dropout, Scale, Sum ------------------------------------------------------------------

def test_dropout_with_independent_masks() -> None:
    p = 0.3
    q_a, q_b, c, m = 1.2, 2.0, 0.7, 0.4
    rng = np.random.default_rng(41)
    u, v = gaussian_pairs(rng, q_a, q_b, c, (SAMPLES,))
    mask_a = (rng.random(SAMPLES) >= p) / (1 - p)
    mask_b = (rng.random(SAMPLES) >= p) / (1 - p)
    node = Dropout(Input(), sympy.Rational(3, 10))
    x = Kernel(q_a, q_b, c, m)
    out = node.kernel([x], BranchConfig(), x)
    assert out.m == m
    assert_matches(out.q_a, (u * mask_a) ** 2, "dropout q_a'")
    assert_matches(out.q_b, (v * mask_b) ** 2, "dropout q_b'")
    assert_matches(out.c, (u * mask_a) * (v * mask_b), "dropout c'")
    d_a, d_b, g = 1.0, 0.5, 0.4
    ga, gb = gaussian_pairs(rng, d_a, d_b, g, (SAMPLES,))
    (gains,) = node.kernel_gains([x], BranchConfig(), x)
    assert_matches(gains.a * d_a, (ga * mask_a) ** 2, "dropout d_a'")
    assert_matches(gains.b * d_b, (gb * mask_b) ** 2, "dropout d_b'")
    assert_matches(gains.ab * g, (ga * mask_a) * (gb * mask_b), "dropout g'")


@pytest.mark.parametrize("factor", [sympy.Rational(3, 2), 1 / STD_X, sympy.sqrt(2) * STD_X])
def test_scale_including_the_std_of_each_input(factor: sympy.Expr) -> None:
    """std(x) is each input's own std over its units (sqrt of its q)."""
    n, vectors = 2000, 200
    q_a, q_b, c = 2.5, 0.6, -0.9
    rng = np.random.default_rng(43)
    xa, xb = gaussian_pairs(rng, q_a, q_b, c, (vectors, n))

    def value(v: np.ndarray) -> np.ndarray:
        std = np.sqrt((v * v).mean(axis=-1, keepdims=True))  # this input's std over units
        return sympy.lambdify(STD_X, factor, "numpy")(std) * np.ones_like(std)

    fa, fb = value(xa), value(xb)
    oa, ob = fa * xa, fb * xb
    node = Scale(factor, Input())
    x = Kernel(q_a, q_b, c)
    out = node.kernel([x], BranchConfig(), x)
    assert_matches(out.q_a, oa * oa, "scale q_a'", 4 / n * float(out.q_a))
    assert_matches(out.q_b, ob * ob, "scale q_b'", 4 / n * float(out.q_b))
    assert_matches(out.c, oa * ob, "scale c'", 4 / n * abs(float(out.c)))
    d_a, d_b, g = 1.0, 2.0, 0.8
    ga, gb = gaussian_pairs(rng, d_a, d_b, g, (vectors, n))
    (gains,) = node.kernel_gains([x], BranchConfig(), x)
    ba, bb = fa * ga, fb * gb
    assert_matches(gains.a * d_a, ba * ba, "scale d_a'", 4 / n * float(gains.a))
    assert_matches(gains.b * d_b, bb * bb, "scale d_b'", 4 / n * float(gains.b))
    assert_matches(gains.ab * g, ba * bb, "scale g'", 4 / n * float(gains.ab))


def test_sum_adds_kernels_because_the_cross_terms_vanish() -> None:
    """x + W relu(x) (+ bias): the measured kernel of the sum is the sum of the measured
    kernels of its terms, for two inputs: E[x_a (W relu(x_b))_i] = 0."""
    n, networks, pairs = 300, 30, 40
    q_a, q_b, c, sigma_b2 = 1.3, 0.8, 0.6, 0.25
    rng = np.random.default_rng(47)
    keys = ("q_a", "q_b", "c")
    sums: dict[str, list[float]] = {k: [] for k in keys}
    added: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(networks):
        W = rng.standard_normal((n, n)) * math.sqrt(2 / n)
        bias = rng.standard_normal(n) * math.sqrt(sigma_b2)
        xa, xb = gaussian_pairs(rng, q_a, q_b, c, (pairs, n))
        fa, fb = np.split(np.maximum(np.concatenate([xa, xb]), 0) @ W.T + bias, 2)
        terms = [Kernel(float((xa * xa).mean()), float((xb * xb).mean()), float((xa * xb).mean())),
                 Kernel(float((fa * fa).mean()), float((fb * fb).mean()), float((fa * fb).mean()))]
        node = Sum((Input(), Weight(("W", 0), Activation(Input(), "relu"))))
        rule = node.kernel(terms, BranchConfig(init="he"), terms[0])
        sa, sb = xa + fa, xb + fb
        for key, measured, predicted in zip(
                keys, ((sa * sa).mean(), (sb * sb).mean(), (sa * sb).mean()),
                (rule.q_a, rule.q_b, rule.c), strict=True):
            sums[key].append(float(measured))
            added[key].append(float(predicted))
    for key in keys:
        difference = np.asarray(sums[key]) - np.asarray(added[key])  # the cross terms
        assert_between_networks(0.0, list(difference), f"sum {key}")
    for gains in node.kernel_gains(terms, BranchConfig(init="he"), terms[0]):
        assert (gains.a, gains.b, gains.ab) == (1.0, 1.0, 1.0)  # the identity to each term


# --- one finite block of each kind --------------------------------------------------------

class FiniteBlock:
    """One block at width n, written from its definition, forward and transposed."""

    def __init__(self, kind: str, n: int, rng: np.random.Generator, *, activation_name: str,
                 sigma_w2: float, sigma_b2: float, gamma: float) -> None:
        self.kind, self.name, self.gamma = kind, activation_name, gamma
        self.W = rng.standard_normal((n, n)) * math.sqrt(sigma_w2 / n)
        self.b = rng.standard_normal(n) * math.sqrt(sigma_b2)

    def branch(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F(v) = W phi(v) + b, and phi'(v)."""
        f, df = activation(self.name, v)
        return f @ self.W.T + self.b, df

    def forward_backward(self, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The block's output at x (members on axis -2, units on -1) and the gradient at x
        from the gradient g at the output."""
        kind, gamma = self.kind, self.gamma
        if kind in ("x + F(x)", "(x + F(x))/sqrt(2)", "F(x)"):
            f, df = self.branch(x)
            scale = 1 / math.sqrt(2) if kind.endswith("sqrt(2)") else 1.0
            skip = 0.0 if kind == "F(x)" else 1.0
            out = scale * (skip * x + f)
            return out, scale * (skip * g + df * (g @ self.W))
        if kind == "x + F(LN(x))":
            ln, std = layernorm(x, gamma)
            f, df = self.branch(ln)
            return x + f, g + layernorm_transpose(df * (g @ self.W), ln / gamma, std, gamma)
        if kind == "LN(x + F(x))":
            f, df = self.branch(x)
            out, std = layernorm(x + f, gamma)
            gs = layernorm_transpose(g, out / gamma, std, gamma)
            return out, gs + df * (gs @ self.W)
        if kind == "x + F(BN(x))":
            bn, y, std = batchnorm(x, gamma)
            f, df = self.branch(bn)
            return x + f, g + batchnorm_transpose(df * (g @ self.W), y, std, gamma)
        assert kind == "phi(W(x))"
        h = x @ self.W.T + self.b
        out, dh = activation(self.name, h)
        return out, (g * dh) @ self.W


BLOCK_CASES = [
    # (block, init or fan-in variance, activation, sigma_b^2, gamma)
    ("x + F(x)", "he", "relu", 0.0, 1.0),
    ("x + F(x)", 1.5, "tanh", 0.2, 1.0),
    ("x + F(LN(x))", "he", "gelu", 0.0, 1.0),
    ("LN(x + F(x))", "he", "relu", 0.1, 1.5),
    ("(x + F(x))/sqrt(2)", "he", "erf", 0.0, 1.0),
    ("x + F(BN(x))", "he", "relu", 0.0, 1.0),
    ("F(x)", "he", "relu", 0.0, 1.0),
    ("F(x)", 1.2, "erf", 0.3, 1.0),
    ("phi(W(x))", 1.5, "tanh", 0.3, 1.0),
    ("phi(W(x))", "he", "leaky_relu", 0.5, 1.0),
]


def _block_config(init: object, name: str, sigma_b2: float,
                  gamma: float) -> tuple[BranchConfig, float]:
    exact = sympy.nsimplify
    common = {"activation": name, "sigma_b2": exact(sigma_b2), "gamma": exact(gamma),
              "negative_slope": sympy.Rational(1, 5)}
    if init == "he":
        return BranchConfig(init="he", **common), 2.0
    return BranchConfig(fan_in_variance=exact(init), **common), float(init)


@pytest.mark.parametrize(("kind", "init", "name", "sigma_b2", "gamma"), BLOCK_CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in BLOCK_CASES])
def test_block_fold_matches_one_finite_block(kind: str, init: object, name: str,
                                             sigma_b2: float, gamma: float) -> None:
    n, networks, pairs = 256, 24, 48
    q_a, q_b, c = (1.5, 1.5, 0.6) if kind.endswith("BN(x))") else (1.5, 0.7, 0.6)
    d_a, d_b, g = 1.0, 0.6, 0.45
    config, sigma_w2 = _block_config(init, name, sigma_b2, gamma)
    chosen = block(kind)
    x = Kernel(q_a, q_b, c, 0.0 if chosen.has_batchnorm else None)
    out = chosen.kernel_forward(config, x)
    gains = chosen.kernel_gain(config, x)
    rng = np.random.default_rng(53 + BLOCK_CASES.index((kind, init, name, sigma_b2, gamma)))
    keys = ("q_a", "q_b", "c", "m", "d_a", "d_b", "g")
    measured: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(networks):
        net = FiniteBlock(kind, n, rng, activation_name=name, sigma_w2=sigma_w2,
                          sigma_b2=sigma_b2, gamma=gamma)
        xa, xb = gaussian_pairs(rng, q_a, q_b, c, (pairs, n))
        ga, gb = gaussian_pairs(rng, d_a, d_b, g, (pairs, n))
        # the a's and b's are one batch of 2 * pairs inputs (BatchNorm's statistics)
        y, back = net.forward_backward(np.concatenate([xa, xb]), np.concatenate([ga, gb]))
        ya, yb, ba, bb = y[:pairs], y[pairs:], back[:pairs], back[pairs:]
        measured["q_a"].append(float((ya * ya).mean()))
        measured["q_b"].append(float((yb * yb).mean()))
        measured["c"].append(float((ya * yb).mean()))
        total = ya.sum(axis=0)  # m: two different a-inputs (independent)
        measured["m"].append(float(((total * total).sum() - (ya * ya).sum())
                                   / (pairs * (pairs - 1) * n)))
        measured["d_a"].append(float((ba * ba).mean()))
        measured["d_b"].append(float((bb * bb).mean()))
        measured["g"].append(float((ba * bb).mean()))
    predicted = {"q_a": out.q_a, "q_b": out.q_b, "c": out.c, "m": out.m,
                 "d_a": gains.a * d_a, "d_b": gains.b * d_b, "g": gains.ab * g}
    for key in keys:
        if predicted[key] is None:
            continue
        # finite width (and batch): O(1/n) corrections to the mean-field values
        scale = max(abs(float(predicted[key])), float(out.q_a) if key in ("c", "m")
                    else abs(float(predicted[key])))
        assert_between_networks(predicted[key], measured[key], f"{kind} {name}: {key}",
                                4 / n * scale)


# --- known results, with their sources ---------------------------------------------------

def test_arc_cosine_kernel_at_zero_correlation() -> None:
    """Cho & Saul 2009, the degree-1 arc-cosine kernel: E[relu(u) relu(v)] =
    sqrt(q_a q_b) (sin t + (pi - t) cos t)/(2 pi), t = arccos rho; at rho = 0, c' =
    q/(2 pi), so a He weight (x2) over relu's q/2 gives rho' = 1/pi."""
    q = sympy.Symbol("q", positive=True)
    node, config = Activation(Input(), "relu"), BranchConfig()
    exact = node.kernel([Kernel(q, q, sympy.Integer(0))], config, Kernel(q, q, sympy.Integer(0)))
    assert sympy.simplify(exact.c - q / (2 * sympy.pi)) == 0
    assert sympy.simplify(exact.q_a - q / 2) == 0
    t = math.acos(0.0)
    paper = 1.7 / (2 * math.pi) * (math.sin(t) + (math.pi - t) * math.cos(t))
    floats = node.kernel([Kernel(1.7, 1.7, 0.0)], config, Kernel(1.7, 1.7, 0.0))
    assert floats.c == pytest.approx(paper, rel=1e-14)
    he = block("F(x)").kernel_forward(BranchConfig(init="he"), Kernel(1.7, 1.7, 0.0))
    assert he.rho == pytest.approx(1 / math.pi, rel=1e-14) and he.q_a == pytest.approx(1.7)
    assert kernel_analysis("he", "relu", block="F(x)", rho0=0, depth=1).profile()[
        "forward"]["rho"][1] == pytest.approx(1 / math.pi, rel=1e-14)


def test_he_relu_has_chi_1_one() -> None:
    """chi_1 = sigma_w^2 E[phi'(z)^2] (Poole et al. 2016; Schoenholz et al. 2017); ReLU's
    phi' is 1 on half the line, so He's sigma_w^2 = 2 gives 1 at every q and bias."""
    paper = 2 * 0.5
    for sigma_b2 in (0, "1/2", 3):
        assert float(phase("relu", 2, sigma_b2).chi_1) == paper
    # the same slope as the block's gradient factor at rho = 1: d_{k-1}/d_k of W relu
    gains = block("F(x)").kernel_gain(BranchConfig(init="he"), Kernel(1.0, 1.0, 1.0))
    assert float(gains.a) == paper and float(gains.ab) == pytest.approx(paper, abs=1e-7)


@pytest.mark.parametrize("state", [(0.3, 2.0, -0.5), (1.0, 1.0, 0.4), (25.0, 4.0, 9.0)])
def test_erf_arcsin_kernel(state: tuple[float, float, float]) -> None:
    """Williams 1997: E[erf(u) erf(v)] = (2/pi) arcsin(2c/sqrt((1 + 2 q_a)(1 + 2 q_b)));
    its derivative kernel E[erf'(u) erf'(v)] = (4/pi)/sqrt((1 + 2q_a)(1 + 2q_b) - 4c^2)
    (a Gaussian integral of exp(-u^2 - v^2)), through the Activation node's rules."""
    q_a, q_b, c = state
    node, config = Activation(Input(), "erf"), BranchConfig()
    x = Kernel(q_a, q_b, c)
    out = node.kernel([x], config, x)
    (gains,) = node.kernel_gains([x], config, x)
    paper = 2 / math.pi * math.asin(2 * c / math.sqrt((1 + 2 * q_a) * (1 + 2 * q_b)))
    slope = 4 / math.pi / math.sqrt((1 + 2 * q_a) * (1 + 2 * q_b) - 4 * c * c)
    assert float(out.c) == pytest.approx(paper, rel=1e-12)
    assert float(out.q_a) == pytest.approx(2 / math.pi * math.asin(2 * q_a / (1 + 2 * q_a)),
                                           rel=1e-12)
    assert float(gains.ab) == pytest.approx(slope, rel=1e-12)
    qa, qb, cc = sympy.Rational(3, 10), sympy.Integer(2), sympy.Rational(-1, 2)
    exact = node.kernel([Kernel(qa, qb, cc)], config, Kernel(qa, qb, cc))
    formula = 2 / sympy.pi * sympy.asin(2 * cc / sympy.sqrt((1 + 2 * qa) * (1 + 2 * qb)))
    assert sympy.N(exact.c - formula, 30) == 0


def _tanh_length_and_slope(q: float, sigma_w2: float, sigma_b2: float) -> tuple[float, float]:
    """sigma_w^2 E[tanh(sqrt q z)^2] + sigma_b^2 and chi_1 = sigma_w^2 E[tanh'(sqrt q z)^2],
    by adaptive quadrature over the standard normal density."""
    from scipy.integrate import quad

    def density(z: float) -> float:
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    s = math.sqrt(q)
    second = quad(lambda z: math.tanh(s * z) ** 2 * density(z), -12, 12, limit=200)[0]
    slope = quad(lambda z: (1 - math.tanh(s * z) ** 2) ** 2 * density(z), -12, 12, limit=200)[0]
    return sigma_w2 * second + sigma_b2, sigma_w2 * slope


def test_tanh_critical_line() -> None:
    """Poole et al. 2016: at sigma_b^2 = 0 the order-to-chaos transition of tanh is at
    sigma_w^2 = 1 (q* = 0, chi_1 = sigma_w^2 tanh'(0)^2); away from it, the line is where
    chi_1 = 1 at the length map's fixed point q*, found here by plain iteration."""
    from scipy.optimize import brentq

    assert critical_line("tanh", [0]) == [(0.0, 1.0)]
    assert (phase("tanh", "0.95", 0).phase, phase("tanh", 1, 0).phase,
            phase("tanh", "1.05", 0).phase) == ("ordered", "critical", "chaotic")

    def chi_minus_one(sigma_w2: float, sigma_b2: float) -> float:
        q = 1.0
        for _ in range(2000):  # the length map is a contraction near its fixed point
            q_next, _ = _tanh_length_and_slope(q, sigma_w2, sigma_b2)
            if abs(q_next - q) < 1e-13:
                break
            q = q_next
        return _tanh_length_and_slope(q, sigma_w2, sigma_b2)[1] - 1

    for sigma_b2, sigma_w2 in critical_line("tanh", [0.05, 0.3]):
        own = brentq(lambda w, b=sigma_b2: chi_minus_one(w, b), 1.0, 4.0, xtol=1e-10)
        assert sigma_w2 == pytest.approx(own, rel=1e-6)


def _erf_rho_map(rho: float, q: float, sigma_w2: float, sigma_b2: float) -> float:
    """Williams' kernel at variances q: (sigma_w^2 (2/pi) arcsin(2 rho q/(1 + 2q)) + b)/q."""
    return (sigma_w2 * 2 / math.pi * math.asin(2 * rho * q / (1 + 2 * q)) + sigma_b2) / q


def test_xi_c_is_minus_one_over_ln_chi_c() -> None:
    """Schoenholz et al. 2017, eq. (9): |rho_k - rho*| ~ exp(-k/xi_c), xi_c = -1/ln chi_c;
    the ratio of successive distances of the erf correlation map (Williams' kernel at
    q*) is chi_c, and the e-folding depth is xi_c."""
    sigma_w2, sigma_b2 = 2.0, 0.1
    p = phase("erf", sigma_w2, "1/10")
    q = p.q_star
    rhos = [0.99]
    for _ in range(400):
        rhos.append(_erf_rho_map(rhos[-1], q, sigma_w2, sigma_b2))
    star = rhos[-1]
    assert star == pytest.approx(p.rho_star, abs=1e-12)
    # from rho_0 = 0.99 the ratio settles slowly (by k = 200 the distance is 1e-7, and
    # the ratio's own correction, G''/2 times the distance, is below 1e-7)
    distances = [r - star for r in rhos[:300]]
    ratio = distances[201] / distances[200]
    assert ratio == pytest.approx(p.chi_c, rel=1e-6)
    assert p.xi_c == pytest.approx(-1 / math.log(ratio), rel=1e-5)
    # the e-folding depth measured over 50 blocks
    assert -50 / math.log(distances[250] / distances[200]) == pytest.approx(p.xi_c, rel=1e-5)


def test_kernel_law_depth_scale_is_minus_one_over_ln_rate() -> None:
    """The geometric law of the dropout block (x + Dropout(F(x), 1/10), He, relu): the
    depth scale printed is -1/ln of the rate, and the rate is the measured ratio of
    successive distances to rho* of the map iterated here:
    rho' = (1-p)/(2-p) (rho + (sqrt(1 - rho^2) + (pi - arccos rho) rho)/pi)."""
    law = kernel_analysis("he", "relu", block="dropout", values={"p": "1/10"}).forward_law
    p = 0.1

    def step(r: float) -> float:
        return (1 - p) / (2 - p) * (r + (math.sqrt(1 - r * r) + (math.pi - math.acos(r)) * r)
                                    / math.pi)

    rhos = [0.5]
    for _ in range(300):
        rhos.append(step(rhos[-1]))
    star = rhos[-1]
    # at k = 80 the distance is ~1e-8: far above rounding, and the ratio's correction
    # (the map's curvature times the distance) is below 1e-7
    ratio = (star - rhos[81]) / (star - rhos[80])
    assert law.kind == "geometric"
    assert float(law.limit) == pytest.approx(star, abs=1e-12)
    assert float(law.rate) == pytest.approx(ratio, rel=1e-6)
    assert law.depth_scale == pytest.approx(-1 / math.log(ratio), rel=1e-6)
