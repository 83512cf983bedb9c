"""Parameter gradients through depth: E[(dL/dW)^2] of each block's last weight matrix.

Xiong et al. 2020 ("On layer normalization in the transformer architecture"): with
post-LN the gradient of the last blocks' weights stays of order one as the depth
grows; with pre-LN and a final LayerNorm it shrinks like 1/K. Both come out of the
derivation here, and the NumPy simulation measures the same quantity.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import sympy

import derive
from derive.blocks.config import variance_config
from derive.derivation.symbols import K
from derive.inputs.choices import ACTIVATIONS
from derive.simulation.networks import measure_weights


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_post_ln_keeps_the_last_blocks_weight_gradient_of_order_one(activation: str) -> None:
    weights = derive.variance("he", activation, "post", final_norm=True).weights
    last = weights.last.rhs
    assert not last.has(K) and weights.growth == "constant"
    assert 0.1 < float(last) < 1


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_pre_ln_with_a_final_ln_shrinks_like_one_over_depth(activation: str) -> None:
    weights = derive.variance("he", activation, "pre", final_norm=True).weights
    assert weights.growth == "decays like 1/K"
    ratio = sympy.limit(weights.last.rhs.xreplace({sympy.Symbol("q_0", positive=True): 1}) * K,
                        K, sympy.oo)
    assert 0 < float(ratio) < 1


def test_profile_is_exact_and_follows_the_closed_form() -> None:
    weights = derive.variance("he", "relu", "pre", final_norm=True).weights
    assert weights.profile(4) == [sympy.Rational(1, 4), sympy.Rational(1, 6),
                                  sympy.Rational(1, 8), sympy.Rational(1, 10)]
    k = sympy.Symbol("k", integer=True)
    closed = weights.closed_form.rhs
    values = [closed.xreplace({k: j, sympy.Symbol("q_0", positive=True): 1}) for j in (1, 2, 3)]
    assert values == weights.profile(4)[:3]


@pytest.mark.slow
@pytest.mark.parametrize(("block", "final_norm"), [
    ("pre", True), ("pre", False), ("post", True), ("none", False), ("sandwich", True),
    ("rescaled", False), ("x + F(BN(x))", True),
])
def test_weight_gradients_agree_with_the_simulation(block: str, final_norm: bool) -> None:
    depth = 6
    derived = derive.variance("he", "relu", block=block, final_norm=final_norm).weights
    measured = measure_weights(variance_config(init="he", block=derive.block(block)),
                               depth=depth, width=512, seeds=8, batch=32,
                               final_norm=final_norm)
    for want, got in zip(derived.profile(depth), measured, strict=True):
        assert float(got) == pytest.approx(float(want), rel=0.1)


def test_cli_weights_and_final_norm() -> None:
    done = subprocess.run([sys.executable, "-m", "derive", "variance", "--init", "he",
                           "--norm", "pre", "--weights", "--final-norm", "--depth", "4"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "decays like 1/K" in done.stdout and "1/4, 1/6, 1/8, 1/10" in done.stdout
    assert "mean squared singular value" in done.stdout
