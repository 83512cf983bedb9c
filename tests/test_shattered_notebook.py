"""The NumPy reproduction of UDL Notebook 11.1 (shattered gradients): the hand-written
backward pass against finite differences of the forward pass, the notebook's network and
draws against formulas written out by hand, its autocorrelation against
``numpy.correlate``, and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from derive.errors import DeriveError
from derive.simulation.notebook import (
    VARIANTS,
    autocorrelation,
    mean_autocorrelation,
    network_gradient,
    network_output,
    notebook_gradients,
    notebook_grid,
    notebook_network,
)


def _jacobian(x: np.ndarray, net, variant: str, h: float = 1e-6) -> np.ndarray:
    """J[i, j] = d y_j / d x_i by central differences, one input perturbed at a time."""
    rows = []
    for i in range(len(x)):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        rows.append((network_output(up, net, variant=variant)
                     - network_output(down, net, variant=variant)) / (2 * h))
    return np.array(rows)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_backward_matches_finite_differences(variant, depth):
    x = np.random.default_rng(7).uniform(-2, 2, size=24)
    net = notebook_network(depth, width=12, seed=3, weight_variance=2 / 12)
    jacobian = _jacobian(x, net, variant)
    gradient = network_gradient(x, net, variant=variant)
    # the backward pass seeded with ones at every output: d(sum_j y_j)/dx_i
    assert np.allclose(gradient, jacobian.sum(axis=1), rtol=1e-6, atol=1e-8)
    if not variant.endswith("_bn"):
        # inputs do not interact: the Jacobian is diagonal and the gradient is dy_i/dx_i
        assert np.allclose(jacobian - np.diag(np.diag(jacobian)), 0, atol=1e-8)
        assert np.allclose(gradient, np.diag(jacobian), rtol=1e-6, atol=1e-8)
    else:
        # BN over the batch couples the inputs
        assert np.abs(jacobian - np.diag(np.diag(jacobian))).max() > 1e-6


def test_one_layer_gradient_is_the_formula_by_hand():
    # y = b_1 + sum_j W1_j ReLU(W0_j x + b0_j), so dy/dx = sum_j W1_j W0_j [W0_j x + b0_j >= 0]
    net = notebook_network(1, width=200, seed=5)
    x, g = notebook_gradients(1, seed=5)
    w0, b0, w1 = (net.weights[0][:, 0].tolist(), net.biases[0].tolist(),
                  net.weights[1][0].tolist())
    for xi, gi in zip(x.tolist(), g.tolist(), strict=True):
        by_hand = sum(a * c for a, b, c in zip(w0, b0, w1, strict=True) if a * xi + b >= 0)
        assert gi == pytest.approx(by_hand, rel=1e-12, abs=1e-15)
    # a staircase: it changes only where x crosses a kink -b0/W0 of some unit
    kinks = -np.array(b0) / np.array(w0)
    steps = np.nonzero(np.diff(g))[0]
    for i in steps:
        assert ((kinks > x[i]) & (kinks <= x[i + 1])).any()


def test_the_variants_coincide_at_one_layer():
    x = notebook_grid()
    net = notebook_network(1, seed=2)
    plain, residual = (network_gradient(x, net, variant=v) for v in ("plain", "residual"))
    plain_bn, residual_bn = (network_gradient(x, net, variant=v)
                             for v in ("plain_bn", "residual_bn"))
    assert np.array_equal(plain, residual) and np.array_equal(plain_bn, residual_bn)
    assert not np.allclose(plain, plain_bn)


def test_batchnorm_is_over_the_grid():
    # BN of the first layer over the batch removes the inputs' mean: shifting every
    # input by the same amount leaves every output unchanged, so d(sum y)/dx sums to 0
    x = notebook_grid()
    net = notebook_network(6, seed=4)
    y = network_output(x, net, variant="plain_bn")
    assert np.allclose(network_output(x + 0.37, net, variant="plain_bn"), y,
                       rtol=1e-9, atol=1e-12)
    g = network_gradient(x, net, variant="plain_bn")
    assert abs(g.sum()) < 1e-9 * np.abs(g).sum()
    # without BN the outputs do move
    assert not np.allclose(network_output(x + 0.37, net), network_output(x, net))


def test_the_draws_are_the_notebooks_order_and_variances():
    depth, width = 3, 5
    net = notebook_network(depth, width=width, seed=1, legacy=True)
    flat = np.random.RandomState(1).normal(size=2 * width + width + 1
                                           + (depth - 1) * (width * width + width))
    s = np.sqrt(1 / width)
    cuts = np.cumsum([width, width, width, 1] + [width * width, width] * (depth - 1))[:-1]
    parts = np.split(flat, cuts)
    assert np.array_equal(net.weights[0], parts[0].reshape(width, 1) * s)
    assert np.array_equal(net.weights[depth], parts[1].reshape(1, width) * s)
    assert np.array_equal(net.biases[0], parts[2] * s)
    assert np.array_equal(net.biases[depth], parts[3] * s)
    for k in range(1, depth):
        assert np.array_equal(net.weights[k], parts[2 + 2 * k].reshape(width, width) * s)
        assert np.array_equal(net.biases[k], parts[3 + 2 * k] * s)


def test_the_variances_can_be_replaced():
    net = notebook_network(2, width=400, seed=0, weight_variance=2 / 400, bias_variance=0.0)
    assert np.var(net.weights[1]) == pytest.approx(2 / 400, rel=0.02)
    assert all(not b.any() for b in net.biases)
    default = notebook_network(2, width=400, seed=0)
    assert np.var(default.biases[1]) == pytest.approx(1 / 400, rel=0.2)


def test_the_grid_is_the_notebooks():
    x = notebook_grid()
    assert x.tolist() == [-2 + i / 64 for i in range(256)]


@pytest.mark.parametrize("n", [256, 255, 7])
def test_autocorrelation_is_numpy_correlate_same_over_its_centre(n):
    g = np.random.default_rng(n).normal(size=n).cumsum()
    ac = np.correlate(g, g, mode="same")
    expected = ac[n // 2:] / ac[n // 2]
    assert np.allclose(autocorrelation(g), expected, rtol=1e-12, atol=1e-12)
    # a stack of gradients is done row by row
    stack = np.stack([g, -2 * g, g[::-1]])
    rows = autocorrelation(stack)
    assert rows.shape == (3, n - n // 2)
    assert np.allclose(rows[1], expected)


def test_autocorrelation_has_no_mean_removed_and_no_overlap_count():
    n = 256
    assert np.allclose(autocorrelation(np.full(n, 3.0), [0, 64, 128, 255]),
                       [(n - j) / n for j in (0, 64, 128, 255)])


def test_a_deep_notebook_network_is_not_white_noise():
    # the notebook's own networks (seed 1): still strongly correlated at lag 1 for K = 50,
    # where a white-noise gradient would give about 0
    for depth in (1, 24, 50):
        _, g = notebook_gradients(depth, seed=1, legacy=True)
        assert autocorrelation(g, [1])[0] > 0.9
    white = np.random.default_rng(0).normal(size=256)
    assert abs(autocorrelation(white, [1])[0]) < 0.2


def test_gradients_are_deterministic_and_depend_on_the_seed():
    for variant in VARIANTS:
        x, g = notebook_gradients(5, variant=variant, seed=11)
        x2, g2 = notebook_gradients(5, variant=variant, seed=11)
        assert x.tobytes() == x2.tobytes() and g.tobytes() == g2.tobytes()
        assert not np.array_equal(g, notebook_gradients(5, variant=variant, seed=12)[1])


def test_mean_autocorrelation_averages_the_networks_of_consecutive_seeds():
    lags = [0, 1, 5, 40]
    mean = mean_autocorrelation(3, variant="residual", n_networks=4, seed=9, lags=lags,
                                width=30)
    rows = [np.correlate(g, g, "same")[128:][lags] / np.correlate(g, g, "same")[128]
            for g in (notebook_gradients(3, variant="residual", seed=s, width=30)[1]
                      for s in range(9, 13))]
    assert np.allclose(mean, np.mean(rows, axis=0), rtol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: notebook_gradients(0), "depth must be an integer >= 1"),
    (lambda: notebook_gradients(3, variant="resnet"), "unknown variant 'resnet'"),
    (lambda: notebook_gradients(3, width=0), "width must be an integer >= 1"),
    (lambda: notebook_gradients(3, n_inputs=1), "n_inputs must be an integer >= 2"),
    (lambda: notebook_network(2, weight_variance=-1.0), "weight_variance must be a finite"),
    (lambda: notebook_network(2, bias_variance=float("nan")), "bias_variance must be"),
    (lambda: autocorrelation(np.ones(8), [8]), "lags must be integers in 0..7"),
    (lambda: autocorrelation(np.ones(8), []), "lags must be integers in 0..7"),
    (lambda: autocorrelation(np.ones(1)), "dy_dx must be an array of at least 2"),
    (lambda: network_gradient(np.array([[1.0]]), notebook_network(1)), "x must be a 1-D"),
    (lambda: mean_autocorrelation(10**6, n_networks=10), "more than the 5e+12 allowed"),
])
def test_bad_input_is_refused_in_one_line(call, message):
    with pytest.raises(DeriveError, match=message.replace("(", r"\(").replace("+", r"\+")):
        call()


def test_relu_derivative_is_one_at_zero_as_the_notebooks_indicator():
    # with no biases every preactivation is 0 at x = 0: all units count as active, and
    # dy/dx(0) is the plain product of the weight matrices W_K ... W_1 W_0
    net = notebook_network(4, width=10, seed=6, bias_variance=0.0)
    product = net.weights[0]
    for w in net.weights[1:]:
        product = w @ product
    assert network_gradient(np.array([0.0]), net)[0] == pytest.approx(product[0, 0], rel=1e-12)
