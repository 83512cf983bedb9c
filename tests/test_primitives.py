"""Each primitive's rules against a Monte Carlo of that primitive alone, and each
hand-written backward against finite differences.

The forward rule (output second moment, and the covariance c of two independent
inputs where it is tracked) and the backward gain E[(J^T g)^2]/E[g^2] are evaluated
by the primitive's own ``moments`` / ``gains`` at the measured input moments, and
compared with the same primitive's NumPy op on Gaussian inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

from derive.blocks.config import VarianceConfig, variance_config
from derive.blocks.nodes import Input, Moments, Node, Scale, Sum
from derive.blocks.primitives import Activation, BatchNorm, Branch, Dropout, LayerNorm, Weight
from derive.simulation.networks import Draws, Network

WIDTH, BATCH, NETWORKS = 512, 256, 4


def _inputs(q: float, c: float, seed: int = 1) -> np.ndarray:
    """Inputs of second moment q per unit whose per-unit batch means have second moment c:
    x[b, i] = m[i] + e[b, i], the mean shared by the batch (what BatchNorm sees)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((NETWORKS, 1, WIDTH)) * np.sqrt(c)
    noise = rng.standard_normal((NETWORKS, BATCH, WIDTH)) * np.sqrt(q - c)
    return means + noise


def _measure(node, config: VarianceConfig, x: np.ndarray) -> tuple[float, float, float]:
    """(E[out^2], c of the output, gain) measured on the NumPy op."""
    draws = Draws(1, WIDTH, BATCH, seed=3, count=NETWORKS)
    net = Network(config, draws, 0, x)
    values = [child.forward_np([], net)[0] for child in node.children]
    out, cache = node.forward_np(values, net)
    g = np.random.default_rng(7).standard_normal(out.shape)
    (back,) = node.backward_np(g, cache, net)
    mean = out.mean(axis=-2)
    cross = float((mean * mean).mean() - (out * out).mean() / out.shape[-2])
    return float((out * out).mean()), cross, float((back * back).mean() / (g * g).mean())


CONFIG = variance_config(init="he", gamma=sympy.Rational(3, 2), dropout=0)
CASES = [
    ("W", Weight(("W", 0), Input())),
    ("zero W", Weight(("W", 0), Input(), zero=True)),
    ("wide W", Weight(("W", 0), Input(), sympy.Integer(1), sympy.Integer(2))),
    ("relu", Activation(Input(), "relu")),
    ("leaky_relu", Activation(Input(), "leaky_relu")),
    ("tanh", Activation(Input(), "tanh")),
    ("gelu", Activation(Input(), "gelu")),
    ("linear", Activation(Input(), "linear")),
    ("LN", LayerNorm(Input())),
    ("BN", BatchNorm(Input())),
    ("dropout", Dropout(Input(), sympy.Rational(1, 5), ("D", 0))),
    ("scale", Scale(sympy.Rational(3, 4), Input())),
    ("F", Branch(0, Input())),
]


#: (name, node, q, c): every primitive at independent inputs (c = 0), and at inputs whose
#: batch shares a mean (c > 0) where the rule covers it (activations, and so branches:
#: only linear).
RULE_CASES = [(name, node, q, c) for name, node in CASES for q, c in ((2.0, 0.0), (1.5, 0.6))
              if c == 0 or not isinstance(node, Activation | Branch)
              or getattr(node, "name", None) == "linear"]


@pytest.mark.parametrize(("name", "node", "q", "c"), RULE_CASES,
                         ids=[f"{name}-c={c}" for name, _, _, c in RULE_CASES])
def test_rule_matches_a_monte_carlo_of_the_primitive(name: str, node, q: float, c: float) -> None:
    x = _inputs(q, c)
    measured_q = float((x * x).mean())
    measured_c = float((x.mean(axis=-2) ** 2).mean() - measured_q / BATCH)
    state = Moments(sympy.Float(measured_q),
                    sympy.Integer(0) if c == 0 else sympy.Float(measured_c))
    out = node.moments([state], CONFIG, state)
    (gain,) = node.gains([state], CONFIG, state)
    got_q, got_c, got_gain = _measure(node, CONFIG, x)
    assert got_q == pytest.approx(float(out.q), rel=0.03, abs=1e-12)
    assert got_gain == pytest.approx(float(gain), rel=0.03, abs=1e-12)
    assert got_c == pytest.approx(float(out.c), rel=0.1, abs=0.02)


def test_batchnorm_gain_is_not_layernorms_when_the_batch_shares_a_mean() -> None:
    """With c > 0 BatchNorm divides by the batch variance q - c, LayerNorm by q."""
    x = _inputs(2.0, 1.0)
    state = Moments(sympy.Integer(2), sympy.Integer(1))
    bn, ln = BatchNorm(Input()), LayerNorm(Input())
    _, _, bn_gain = _measure(bn, CONFIG, x)
    (ln_rule,) = ln.gains([state], CONFIG, state)
    (bn_rule,) = bn.gains([state], CONFIG, state)
    assert bn_gain == pytest.approx(float(bn_rule), rel=0.03)
    assert abs(bn_gain - float(ln_rule)) > 0.3 * float(ln_rule)


def _finite_difference(node, config: VarianceConfig, seed: int) -> tuple[float, float]:
    """<g, J v> by central differences, and <J^T g, v> by the hand-written backward."""
    rng = np.random.default_rng(seed)
    shape = (1, 8, 16)
    x = rng.standard_normal(shape) + 0.3
    v = rng.standard_normal(shape)
    draws = Draws(1, 16, 8, seed=seed)

    def run(inp: np.ndarray) -> tuple[np.ndarray, object, Network]:
        net = Network(config, draws, 0, inp)
        values = [child.forward_np([], net)[0] for child in node.children]
        out, cache = node.forward_np(values, net)
        return out, cache, net

    eps = 1e-6
    plus, _, _ = run(x + eps * v)
    minus, _, _ = run(x - eps * v)
    out, cache, net = run(x)
    g = rng.standard_normal(out.shape)
    (back,) = node.backward_np(g, cache, net)
    return float((g * (plus - minus)).sum() / (2 * eps)), float((back * v).sum())


@pytest.mark.parametrize(("name", "node"), [c for c in CASES if c[0] != "dropout"],
                         ids=[c[0] for c in CASES if c[0] != "dropout"])
def test_backward_matches_finite_differences(name: str, node) -> None:
    numeric, by_hand = _finite_difference(node, CONFIG, seed=5)
    assert by_hand == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def test_sum_of_uncorrelated_terms_adds_their_moments() -> None:
    node = Sum((Input(), Weight(("W", 0), Input())))
    x = _inputs(2.0, 0.0)
    draws = Draws(1, WIDTH, BATCH, seed=3, count=NETWORKS)
    net = Network(CONFIG, draws, 0, x)
    out, _ = node.forward_np([x, Weight(("W", 0), Input()).forward_np([x], net)[0]], net)
    state = Moments(sympy.Integer(2))
    rule = node.moments([state, Moments(sympy.Integer(4))], CONFIG, state)
    assert float((out * out).mean()) == pytest.approx(float(rule.q), rel=0.03)


@pytest.mark.parametrize("config", [
    variance_config(init="he", branch="mlp", mlp_ratio=2, activation="tanh", dropout="1/5"),
    variance_config(init="lecun", activation="gelu")], ids=["mlp-tanh-dropout", "gelu"])
def test_a_branch_carries_the_rules_of_its_expansion(config: VarianceConfig) -> None:
    """F's own rules (the fold of its chain) match a Monte Carlo of F, and its backward
    the finite differences, for an mlp branch with dropout too."""
    node = Branch(0, Input())
    x = _inputs(2.0, 0.0)
    state = Moments(sympy.Float(float((x * x).mean())), sympy.Integer(0))
    got_q, _, got_gain = _measure(node, config, x)
    assert got_q == pytest.approx(float(node.moments([state], config, state).q), rel=0.04)
    assert got_gain == pytest.approx(float(node.gains([state], config, state)[0]), rel=0.04)
    if config.dropout == 0:
        numeric, by_hand = _finite_difference(node, config, seed=5)
        assert by_hand == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def test_a_node_without_a_rule_cannot_be_built() -> None:
    class Forgetful(Node):  # every rule but the backward gains
        def text(self) -> str:
            return "G(x)"

        def display(self, arg: sympy.Expr) -> sympy.Expr:
            return arg

        def moments(self, inputs, config, x):  # type: ignore[no-untyped-def]
            return x

        def jacobian(self, inputs, names):  # type: ignore[no-untyped-def]
            return inputs[0]

        def reason(self, config) -> str:  # type: ignore[no-untyped-def]
            return ""

        def forward_np(self, values, net):  # type: ignore[no-untyped-def]
            return values[0], None

        def backward_np(self, grad, cache, net):  # type: ignore[no-untyped-def]
            return [grad]

    with pytest.raises(TypeError, match="gains"):
        Forgetful()  # type: ignore[abstract]
