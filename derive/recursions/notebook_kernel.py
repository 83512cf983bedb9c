"""The mean-field prediction for UDL Notebook 11.1's network: E[dy/dx(x_a) dy/dx(x_b)] for
every pair of the notebook's 256 grid inputs, from derive's two-point rules.

**The network** (:mod:`derive.simulation.notebook` reproduces it): a 1-D input x, D units
a layer, K ReLU layers, every weight and every bias N(0, 1/D)::

    f_0 = b_0 + W_0 x,   f_k = b_k + W_k ReLU(f_{k-1}) (k = 1..K-1),   y = b_K + W_K ReLU(f_{K-1})

**The kernel.** Per unit, f_0(x) = w x + beta with w, beta ~ N(0, 1/D), so the first
layer's two-point state is ``Kernel(x_a^2, x_b^2, x_a x_b)`` scaled by Var W_0 = 1/D and
shifted by the bias variance 1/D: q(x) = (x^2 + 1)/D, c = (x_a x_b + 1)/D (the input layer
has fan-in 1 and the same per-entry variance 1/D as the others; the fan-in convention
would give it 1). Every later map, f_{k-1} -> f_k and f_{K-1} -> y, is derive's block
``W(relu(x))`` under ``fan_in_variance=1, sigma_b2=1/D``: Var W = 1/n per entry, 1/D at
width D, and a bias of variance 1/D (:func:`notebook_config` checks both). Its rule
``Block.kernel_forward`` (the arc-cosine kernel of ReLU) is taken once as a SymPy map
c' = F(q_a, q_b, c), q' = F(q, q, q), and evaluated on all 256 x 256 pairs at once.

**The gradient.** At infinite width y(x) is a Gaussian process over x with covariance
c_K(a, b), the K-th iterate of the map, so dy/dx is one with covariance
G(a, b) = d^2 c_K / (da db). The chain rule through one map carries, per input, q and
A = dq/dx, and per pair c, B_a = dc/da, B_b = dc/db and G::

    G' = F_c G + F_{q_a q_b} A_a A_b + F_{q_a c} A_a B_b + F_{q_b c} A_b B_a + F_{cc} B_a B_b
    B_a' = F_{q_a} A_a + F_c B_a,    A' = (dq'/dq) A

with the partial derivatives of F taken by SymPy from the rule (F_c = E[ReLU'(u) ReLU'(v)],
Price's theorem: the two-point backward factor of the block). The second-order terms
carry 1/sqrt(q_a q_b - c^2); where rounding leaves q_a q_b - c^2 <= 0 (the diagonal,
and pairs whose correlation is within rounding of 1) they are taken as 0, their limit
at the diagonal. F_c G alone is the two-point backward under gradient independence
(``Block.kernel_gain``); it is not exact here: the input is 1-D and q(x) varies along
the grid, so each unit's ReLU switch is correlated with the unit's derivative in x (the
terms in A and B). Alone it overstates the correlation: the mean A(64) at K = 50 would
be 0.23, where this gives 0.12 and 100 simulated networks 0.10 +- 0.03.

**What it says** (:func:`notebook_prediction`): the hidden layers sit in the ordered phase
(``phase("relu", 1, 1/D)``: chi_1 = 1/2, q* = 2/D, rho* = 1): every pair's forward
correlation approaches 1 geometrically, 1 - rho_k shrinking by chi_1 = 1/2 per layer,
and A, B and their terms fade by 1/2 a layer, so the gradient's correlation settles after
a dozen layers (K = 24 and K = 50 agree to 1e-4); on the diagonal G' = F_c(rho = 1) G =
E[ReLU'^2] G = G/2, so dy/dx shrinks like 2^(-K/2): rms(dy/dx) = 2^(-K/2)/sqrt(D).

**The autocorrelation.** The notebook's A(j) = sum_n g[n+j] g[n] / sum_n g[n]^2 of one
network is a ratio of two random sums, and they do not concentrate as the width grows:
at infinite width dy/dx over the grid is a Gaussian process with covariance G, one
random function per network. Two predictions follow from G:

* ``autocorrelation``, the ratio of expectations sum_n G(x_{n+j}, x_n) / sum_n G(x_n, x_n):
  what the ratio of the sums averaged over networks approaches (it weights each network
  by its sum_n g[n]^2);
* ``mean_autocorrelation``, the expectation of the ratio itself for g ~ N(0, G), the
  infinite-width limit of the notebook's autocorrelation averaged over networks
  (``derive.simulation.notebook.mean_autocorrelation``). With 1/(g'g) = int_0^inf
  exp(-s g'g) ds and the Gaussian integral of exp(-s g'g) against g'A_j g, where A_j is
  the lag-j shift made symmetric, E[g'A_j g / g'g] = int_0^inf tr(A_j G (I + 2sG)^-1)
  det(I + 2sG)^(-1/2) ds: in G's eigenbasis (eigenvalues l_i, vectors u_i), a sum over i
  of (u_i'A_j u_i) l_i times a 1-D integral, taken by the trapezoid rule in ln s
  (``MEAN_NODES`` nodes on s l_max in [1e-12, 1e22]; the lag-0 value, exactly 1, comes
  out within 1e-9).

The second is smaller: networks whose gradient is large keep it correlated over longer
distances, and the ratio of expectations weights them more.

**Not derived here**: the notebook's BatchNorm extension (``plain_bn`` in the
reproduction) normalizes each unit over the 256 grid inputs, a batch of strongly
correlated inputs; derive's BN rule is for two typical members of a batch of
independent inputs and does not apply to it.

>>> p = notebook_prediction(1)
>>> round(p.rms, 6), [round(float(a), 4) for a in p.at([1, 64], mean=True)]
(0.05, [0.9875, 0.4069])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import numpy as np
import sympy

from derive.blocks.config import VarianceConfig, variance_config
from derive.blocks.nodes import Kernel
from derive.blocks.primitives import Weight, n
from derive.errors import DeriveError
from derive.inputs.numbers import integer
from derive.recursions.phase import Phase, phase

#: The notebook's width D and its number of grid inputs on [-2, 2).
NOTEBOOK_WIDTH, NOTEBOOK_INPUTS = 200, 256
#: The deepest network predicted (the product over layers is exact at any depth).
MAX_NOTEBOOK_DEPTH = 10_000
#: Trapezoid nodes in ln s of the mean autocorrelation's integral, and its range of s l_max.
MEAN_NODES, MEAN_RANGE = 4000, (1e-12, 1e22)

_QA, _QB = sympy.symbols("q_a q_b", positive=True)
_C = sympy.Symbol("c", real=True)
_X = sympy.Symbol("x", real=True)
_T = sympy.Symbol("t", positive=True)


@dataclass(frozen=True)
class NotebookPrediction:
    """The mean-field prediction for the notebook's network of ``depth`` ReLU layers.

    ``covariance[i, j]`` is G(x_i, x_j) = E[dy/dx(x_i) dy/dx(x_j)] over the grid ``x``;
    ``correlation`` is G over sqrt(G_ii G_jj); ``rms`` is sqrt of the grid's mean of
    G(x_i, x_i), the predicted rms of dy/dx; ``autocorrelation[j]`` (j = 0..N/2 - 1) is
    sum_n G(x_{n+j}, x_n) / sum_n G(x_n, x_n), the ratio of expectations;
    ``mean_autocorrelation[j]`` the expected notebook autocorrelation of g ~ N(0, G), the
    infinite-width mean over networks; ``hidden_correlation`` is the forward
    correlation rho(x_i, x_j) of the last hidden layer f_{K-1}; ``phase`` the hidden
    layers' phase (``derive.recursions.phase``).
    """

    depth: int
    width: int
    x: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    hidden_correlation: np.ndarray
    rms: float
    autocorrelation: np.ndarray
    mean_autocorrelation: np.ndarray
    phase: Phase

    def at(self, lags: Iterable[int], *, mean: bool = False) -> np.ndarray:
        """The predicted autocorrelation at ``lags``: the ratio of expectations, or with
        ``mean`` the mean over networks of the ratio.

        >>> notebook_prediction(2).at([0])
        array([1.])
        """
        chosen = list(lags)
        size = len(self.autocorrelation)
        if not chosen or any(isinstance(j, bool) or not isinstance(j, (int, np.integer))
                             or not 0 <= j < size for j in chosen):
            raise DeriveError(f"lags must be integers in 0..{size - 1} (at least one), "
                              f"got {chosen!r}")
        values = self.mean_autocorrelation if mean else self.autocorrelation
        return values[np.array(chosen, dtype=int)]


def notebook_grid(n_inputs: int = NOTEBOOK_INPUTS) -> np.ndarray:
    """The notebook's inputs ``np.arange(-2, 2, 4/n_inputs)``.

    >>> float(notebook_grid()[128]), len(notebook_grid())
    (0.0, 256)
    """
    count = integer(n_inputs, "n_inputs", minimum=2, maximum=4096, text=False)
    return np.arange(count) * (4.0 / count) - 2.0


@lru_cache(maxsize=16)
def notebook_config(width: int = NOTEBOOK_WIDTH) -> VarianceConfig:
    """The hidden layers as a derive block: ``W(relu(x))`` with Var W = sigma_w^2/fan_in,
    sigma_w^2 = 1, and a bias of variance 1/width; checked to give the notebook's
    per-entry variance 1/width at width n = width.

    >>> notebook_config(200).block.text, notebook_config(200).sigma_b2
    ('W(relu(x))', 1/200)
    """
    width = integer(width, "width", minimum=1, maximum=10**6, text=False)
    config = variance_config(activation="relu", block="W(relu(x))", fan_in_variance=1,
                             sigma_b2=sympy.Rational(1, width))
    matrix = _matrix(config)
    if matrix.variance(config).subs(n, width) != sympy.Rational(1, width):
        raise DeriveError(f"the block's weights do not have variance 1/{width}")  # pragma: no cover
    return config


def _matrix(config: VarianceConfig) -> Weight:
    (matrix,) = [node for node in config.block.expanded(config).walk()
                 if isinstance(node, Weight)]
    return matrix


def _safe_acos(z: np.ndarray) -> np.ndarray:
    """arccos with its argument clipped to [-1, 1], where rounding can push c/sqrt(q_a q_b)."""
    return np.arccos(np.clip(z, -1.0, 1.0))


def _safe_sqrt(z: np.ndarray) -> np.ndarray:
    """sqrt of a quantity that is >= 0 (1 - rho^2, a variance) but may round below 0."""
    return np.sqrt(np.maximum(z, 0.0))


_MODULES = [{"acos": _safe_acos, "sqrt": _safe_sqrt}, "numpy"]


@dataclass(frozen=True)
class _Maps:
    """The first layer's state and the notebook's layer map, with the derivatives the chain
    rule needs, as NumPy functions."""

    first: tuple[Callable[..., np.ndarray], ...]   # q_0, A_0 (of x); c_0, B_a, B_b, G_0 (x_a, x_b)
    length: Callable[..., np.ndarray]              # q' from q
    slope: Callable[..., np.ndarray]               # dq'/dq
    cross: Callable[..., np.ndarray]               # c' = F(q_a, q_b, c)
    first_order: tuple[Callable[..., np.ndarray], ...]    # F_qa, F_qb, F_c
    second_order: tuple[Callable[..., np.ndarray], ...]   # F_qaqb, F_qac, F_qbc, F_cc


def _first_layer_state(xa: sympy.Expr, xb: sympy.Expr, variance: sympy.Expr,
                       bias: sympy.Expr) -> Kernel:
    """f_0 = W_0 x + b_0 per unit: the inputs' products scaled by Var W_0, plus Var b_0."""
    root = sympy.sqrt(variance)
    return Kernel(xa * xa, xb * xb, xa * xb).scaled(root, root).shifted(bias)


@lru_cache(maxsize=16)
def _maps(width: int) -> _Maps:
    config = notebook_config(width)
    variance = _matrix(config).variance(config).subs(n, width)
    out = config.block.kernel_forward(config, Kernel(_QA, _QB, _C))
    xa, xb = sympy.symbols("x_a x_b", real=True)
    first = _first_layer_state(xa, xb, variance, config.sigma_b2)

    def numeric(args: tuple[sympy.Symbol, ...], expr: sympy.Expr) -> Callable[..., np.ndarray]:
        return sympy.lambdify(args, sympy.simplify(expr), modules=_MODULES)

    pair = (_QA, _QB, _C)
    first, out = cast(Any, first), cast(Any, out)  # SymPy states: symbols in, expressions out
    return _Maps(
        first=(numeric((xa,), first.q_a), numeric((xa,), first.q_a.diff(xa)),
               numeric((xa, xb), first.c), numeric((xa, xb), first.c.diff(xa)),
               numeric((xa, xb), first.c.diff(xb)), numeric((xa, xb), first.c.diff(xa, xb))),
        length=numeric((_QA,), out.q_a), slope=numeric((_QA,), out.q_a.diff(_QA)),
        cross=numeric(pair, out.c),
        first_order=tuple(numeric(pair, out.c.diff(v)) for v in pair),
        second_order=tuple(numeric(pair, out.c.diff(*vs))
                           for vs in ((_QA, _QB), (_QA, _C), (_QB, _C), (_C, _C))))


def _full(value: object, shape: tuple[int, ...]) -> np.ndarray:
    return np.array(np.broadcast_to(np.asarray(value, dtype=float), shape))


def gaussian_mean_autocorrelation(covariance: np.ndarray, lags: Iterable[int]) -> np.ndarray:
    """E[sum_n g[n+j] g[n] / sum_n g[n]^2] for g ~ N(0, covariance), at each lag j: the
    integral of the module's docstring in the covariance's eigenbasis.

    >>> bool(np.allclose(gaussian_mean_autocorrelation(np.eye(4), [0, 1]), [1.0, 0.0]))
    True
    """
    matrix = np.asarray(covariance, dtype=float)
    size = len(matrix)
    values, vectors = np.linalg.eigh(matrix / np.trace(matrix))   # the ratio ignores scale
    values = np.maximum(values, 0.0)                              # rounding below 0
    low, high = MEAN_RANGE
    logs = np.linspace(np.log(low / values[-1]), np.log(high / values[-1]), MEAN_NODES)
    s = np.exp(logs)[:, None]
    spread = 2.0 * s * values[None, :]
    density = np.exp(-0.5 * np.log1p(spread).sum(axis=1))[:, None]     # det(I + 2sG)^(-1/2)
    weights = np.trapezoid(values[None, :] / (1.0 + spread) * density * s,
                           dx=logs[1] - logs[0], axis=0)
    shifted = np.array([(vectors[j:] * vectors[:size - j]).sum(axis=0) for j in lags])
    return shifted @ weights


def notebook_prediction(depth: int, *, width: int = NOTEBOOK_WIDTH) -> NotebookPrediction:
    """The mean-field E[dy/dx(x_i) dy/dx(x_j)] of the notebook's network with ``depth``
    ReLU layers (K) of ``width`` units (D), on its 256-point grid, and what follows from
    it (see the module's docstring).

    >>> p = notebook_prediction(50)
    >>> p.phase.phase, p.phase.chi_1
    ('ordered', 0.5)
    >>> round(p.rms * 2 ** (50 / 2), 4)  # dy/dx shrinks like 2^(-K/2)
    0.0707
    """
    depth = integer(depth, "depth", minimum=1, maximum=MAX_NOTEBOOK_DEPTH, text=False)
    width = integer(width, "width", minimum=1, maximum=10**6, text=False)
    maps = _maps(width)
    x = notebook_grid()
    size = len(x)
    pairs, a, b = (size, size), x[:, None], x[None, :]
    q, slope_q = (_full(f(x), (size,)) for f in maps.first[:2])
    c, b_a, b_b, covariance = (_full(f(a, b), pairs) for f in maps.first[2:])
    hidden = c
    for layer in range(1, depth + 1):             # f_1, ..., f_{K-1}, then y
        q_a, q_b, a_a, a_b = q[:, None], q[None, :], slope_q[:, None], slope_q[None, :]
        f_qa, f_qb, f_c = (_full(f(q_a, q_b, c), pairs) for f in maps.first_order)
        with np.errstate(divide="ignore", invalid="ignore"):
            f_qaqb, f_qac, f_qbc, f_cc = (f(q_a, q_b, c) for f in maps.second_order)
            second = f_qaqb * a_a * a_b + f_qac * a_a * b_b + f_qbc * a_b * b_a + f_cc * b_a * b_b
        second = np.where(q_a * q_b - c * c > 0, second, 0.0)
        covariance = f_c * covariance + second
        b_a, b_b = f_qa * a_a + f_c * b_a, f_qb * a_b + f_c * b_b
        c = _full(maps.cross(q_a, q_b, c), pairs)
        slope_q = _full(maps.slope(q), (size,)) * slope_q
        q = _full(maps.length(q), (size,))
        np.fill_diagonal(c, q)                    # c(a, a) = q(a), exactly
        if layer == depth - 1:
            hidden = c
    hidden_q = np.diag(hidden)
    diagonal = np.diag(covariance)
    correlation = covariance / np.sqrt(np.outer(diagonal, diagonal))
    lags = range(size - size // 2)
    total = float(np.trace(covariance))
    auto = np.array([np.trace(covariance, offset=j) / total for j in lags])
    mean = gaussian_mean_autocorrelation(covariance, lags)
    return NotebookPrediction(
        depth=depth, width=width, x=x, covariance=covariance, correlation=correlation,
        hidden_correlation=hidden / np.sqrt(np.outer(hidden_q, hidden_q)),
        rms=float(np.sqrt(diagonal.mean())), autocorrelation=auto, mean_autocorrelation=mean,
        phase=phase("relu", 1, sympy.Rational(1, width)))
