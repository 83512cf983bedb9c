"""The derived prediction for UDL Notebook 11.1 against a hand derivation, a Gaussian
Monte Carlo and the notebook's network simulated (derive/simulation/notebook.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from derive.errors import DeriveError
from derive.recursions.notebook_kernel import (
    gaussian_mean_autocorrelation,
    notebook_config,
    notebook_grid,
    notebook_prediction,
)
from derive.simulation import notebook as sim
from derive.simulation.notebook_check import notebook_check, notebook_report
from tests.cli_runner import invoke

LAGS = [1, 2, 4, 8, 16, 32, 64]


def _one_layer_by_hand(x: np.ndarray, width: int) -> np.ndarray:
    """K = 1: dy/dx(x) = sum_i v_i w_i 1(w_i x + beta_i > 0), with v_i, w_i, beta_i
    independent N(0, s), s = 1/D. So E[dy/dx(a) dy/dx(b)] = D s E[w^2 1(w a + beta > 0)
    1(w b + beta > 0)] = E[w^2 1 1] for one unit. Write (w, beta) = r (cos t, sin t): r and
    t are independent, E[r^2] = 2s, t uniform on [0, 2 pi). With phi(x) = atan2(1, x), the
    direction of (x, 1), w x + beta > 0 is |t - phi(x)| < pi/2; both hold on the arc from
    max(phi_a, phi_b) - pi/2 to min(phi_a, phi_b) + pi/2, of length pi - theta,
    theta = |phi_a - phi_b|. Over it, int cos^2 t dt = (pi - theta)/2 + (sin 2t_2 -
    sin 2t_1)/4 = (pi - theta)/2 + cos(phi_a + phi_b) sin(theta)/2. Hence
    E[w^2 1 1] = (2s / 2pi) ((pi - theta)/2 + cos(phi_a + phi_b) sin(theta)/2)."""
    s = 1.0 / width
    phi = np.arctan2(1.0, x)
    theta = np.abs(phi[:, None] - phi[None, :])
    total = phi[:, None] + phi[None, :]
    return s * ((math.pi - theta) + np.cos(total) * np.sin(theta)) / (2 * math.pi)


@pytest.mark.parametrize("width", [200, 37])
def test_one_layer_matches_the_hand_derivation(width: int) -> None:
    p = notebook_prediction(1, width=width)
    expected = _one_layer_by_hand(p.x, width)
    assert np.allclose(p.covariance, expected, rtol=1e-7, atol=0)


def test_one_layer_against_the_exact_average_of_the_simulation() -> None:
    # At K = 1 E[g(a) g(b)] is exact at any width: the sample mean over networks of
    # g(x_i) g(x_j) must agree within its Monte Carlo error.
    x = sim.notebook_grid()
    grads = np.array([sim.network_gradient(x, sim.notebook_network(1, seed=s))
                      for s in range(1500)])
    pairs = [(0, 0), (128, 129), (100, 140), (10, 250)]
    p = notebook_prediction(1)
    for i, j in pairs:
        product = grads[:, i] * grads[:, j]
        error = product.std(ddof=1) / math.sqrt(len(product))
        assert abs(product.mean() - p.covariance[i, j]) < 4 * error


def test_grid_and_configuration_are_the_notebooks() -> None:
    assert np.array_equal(notebook_grid(), sim.notebook_grid())
    config = notebook_config(200)
    assert config.block.text == "W(relu(x))"
    assert float(config.sigma_b2) == 1 / 200


@pytest.mark.parametrize("depth", [1, 2, 7, 24, 50])
def test_rms_shrinks_like_two_to_minus_half_the_depth(depth: int) -> None:
    # On the diagonal E[(dy/dx)^2] = s/2 at K = 1 (w -> -w, beta -> -beta flips the
    # switch), and each further layer multiplies it by E[ReLU'^2] * D * (1/D) = 1/2.
    p = notebook_prediction(depth)
    by_hand = math.sqrt(1 / 200 / 2 * 0.5 ** (depth - 1))
    assert p.rms == pytest.approx(by_hand, rel=1e-7)
    assert np.allclose(np.diag(p.covariance), by_hand ** 2, rtol=1e-7)


def test_phase_of_the_hidden_layers() -> None:
    ph = notebook_prediction(3).phase
    assert (ph.phase, ph.chi_1, ph.rho_star) == ("ordered", 0.5, 1.0)
    assert ph.q_star == pytest.approx(2 / 200)          # q* = sigma_b^2 / (1 - 1/2)
    assert ph.xi_c == pytest.approx(1 / math.log(2))


def test_forward_correlations_approach_one_geometrically() -> None:
    gaps = [1 - notebook_prediction(k).hidden_correlation[0, 255] for k in (6, 8, 10, 12)]
    ratios = [later / earlier for earlier, later in itertools.pairwise(gaps)]
    assert all(0.2 < r < 0.3 for r in ratios)           # about chi_1^2 = 1/4 per 2 layers


def test_correlation_settles_with_depth() -> None:
    a, b = notebook_prediction(24), notebook_prediction(50)
    assert np.allclose(a.correlation, b.correlation, atol=1e-3)
    assert np.diag(a.correlation, 1).min() > 0.97      # neighbours stay correlated


def test_gaussian_mean_autocorrelation_against_sampling() -> None:
    covariance = notebook_prediction(4).covariance
    rng = np.random.default_rng(5)
    draws = rng.multivariate_normal(np.zeros(len(covariance)), covariance, size=4000,
                                    method="eigh")
    sampled = sim.autocorrelation(draws, LAGS)
    derived = gaussian_mean_autocorrelation(covariance, LAGS)
    error = sampled.std(axis=0, ddof=1) / math.sqrt(len(draws))
    assert np.all(np.abs(sampled.mean(axis=0) - derived) < 4 * error)
    assert gaussian_mean_autocorrelation(covariance, [0])[0] == pytest.approx(1, abs=1e-8)


def test_prediction_against_the_simulated_notebook_at_depth_four() -> None:
    # Width 200, 300 networks: the mean of the notebook's autocorrelation, and the ratio of
    # the means of its two sums (the ratio of expectations).
    x = sim.notebook_grid()
    grads = np.array([sim.network_gradient(x, sim.notebook_network(4, seed=s))
                      for s in range(300)])
    p = notebook_prediction(4)
    table = sim.autocorrelation(grads, LAGS)
    error = table.std(axis=0, ddof=1) / math.sqrt(len(table))
    assert np.all(np.abs(table.mean(axis=0) - p.at(LAGS, mean=True)) < 4 * error)
    energy = (grads * grads).sum(axis=1)
    ratio = (table * energy[:, None]).sum(axis=0) / energy.sum()
    assert np.allclose(ratio, p.at(LAGS), atol=0.03)


def test_bad_input() -> None:
    with pytest.raises(DeriveError, match="depth"):
        notebook_prediction(0)
    with pytest.raises(DeriveError, match="lags"):
        notebook_prediction(1).at([128])
    with pytest.raises(DeriveError, match="depth"):
        notebook_check(depths=(0,))


def test_check_reports_a_failure() -> None:
    rows = notebook_check(depths=(1,), lags=(1,), networks={1: 30})
    assert all(r.ok for r in rows)
    wrong = [type(r)(r.depth, r.quantity, r.derived + 10 * r.tolerance, r.measured, r.error,
                     r.tolerance, r.networks) for r in rows]
    assert "2 outside" in notebook_report(wrong)


@pytest.mark.slow
def test_check_notebook_command(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, _ = invoke(capsysbinary, "check", "--notebook")
    assert code == 0, out
    assert "24 values compared" in out and "all within 4 standard errors" in out
