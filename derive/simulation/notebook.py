"""The shattered-gradients experiment of UDL Notebook 11.1, in NumPy, with a hand-written
backward pass.

Prince's *Understanding Deep Learning* has a companion notebook for section 11.1,
``Notebooks/Chap11/11_1_Shattered_Gradients.ipynb`` (udlbook/udlbook; the code cells are
unchanged in substance in every version of the file). This module reproduces it.

**The notebook's network** (``init_params``, ``forward_pass``), 1-D input ``x``, ``D``
hidden units a layer (``D = 200``), ``K`` hidden layers (``K = 1``, and the TODO asks for
24 and 50), ReLU::

    f_0 = b_0 + W_0 x                  W_0: D x 1
    f_k = b_k + W_k ReLU(f_{k-1})      W_k: D x D,  k = 1..K-1
    y   = b_K + W_K ReLU(f_{K-1})      W_K: 1 x D

**Initialization**: every weight AND every bias is N(0, 1/D), the input layer (fan-in 1)
and the output layer included; the markdown calls this "Glorot initialization (He
initialization without the factor of two)"::

    sigma_sq_omega = 1.0/D
    all_weights[0] = np.random.normal(size=(D, D_i))*np.sqrt(sigma_sq_omega)
    all_biases[layer] = np.random.normal(size=(D,1))* np.sqrt(sigma_sq_omega)

The draws come from ``np.random.seed(1)`` (the same network on every call) in the order
W_0, W_K, b_0, b_K, then W_k, b_k for k = 1..K-1. There is no output scaling and no
normalization of the input layer (its weights have variance 1/D for fan-in 1).

**The gradient**: ``calc_input_output_gradient`` backpropagates ``dl/df_K = 1`` through
the whole grid at once (the grid is a batch of independent inputs), with the ReLU's
derivative taken as 1 at 0 (``x_in[x_in>=0] = 1``); the plot is ``dy/dx`` against ``x``.
It sizes its lists and runs its loop with the global ``K``, not the network's depth
(``for layer in range(K,-1,-1)``): ``plot_derivatives(24, D)`` called while the global
``K`` is still 1 backpropagates from the wrong layer and plots another quantity.

**The grid**: ``x_in = np.arange(-2,2, 4.0/256.0)``: 256 points from -2 to 2 - 1/64 in
steps of 1/64 (2 itself is not included; ``x_in[128] == 0``).

**The autocorrelation**: ``autocorr`` is a TODO stub (``ac = np.ones((256,1))``) whose
instruction is "Use the numpy function "correlate" with the mode set to "same"", i.e.
``np.correlate(dydx, dydx, mode="same")``; ``plot_autocorr`` then takes
``ac = ac / ac[128]``, keeps ``ac[128:]`` and plots it against ``x_in[128:]`` ("Distance",
0 to 2 - 1/64). With ``g = dy/dx`` on the grid that is, for lag ``j = 0..127``::

    A(j) = sum_{n=0}^{N-1-j} g[n+j] g[n]  /  sum_n g[n]^2,     distance = 4 j / N

raw products: no mean subtracted, no division by the number of overlapping terms (so a
constant gradient gives the ramp ``(N - j)/N``, not 1), one network (seed 1), no average.
The notebook plots it for K = 1 and K = 50.

**What it shows**: the notebook stores no outputs. Run here with its own draws
(``legacy=True, seed=1``): at K = 1, ``dy/dx`` is a staircase, flat between the kinks
``x = -b_0/W_0`` of the units (rms about 2e-2); at K = 24 and 50 the flat regions are
gone (the value changes at nearly every grid step) but the curve still wanders like a
random walk, not white noise (rms of the steps / rms of the values: 0.18, 0.23, 0.30
for K = 1, 24, 50; white noise gives sqrt(2)), and it is about 2^(-K/2) smaller (rms 1e-5
at K = 24, 1e-9 at K = 50). Its autocorrelation at distance 1/64 is 0.98, 0.97, 0.96 for
K = 1, 24, 50 (averaged over 50 networks: 0.99, 0.97, 0.97), where Balduzzi et al.
(2017) show a 24-layer feedforward net's gradient as white noise. Hence the author's
"Do you find this a convincing replication of the experiment in the original paper?
(I don't)". The same networks with BN over the grid before every ReLU
(``variant="plain_bn"``) give white-noise gradients at K = 24 (mean autocorrelation
at distance 1/64 about 0).

**Extensions (not in Notebook 11.1)**: the notebook has no residual or BatchNorm variant.
The other variants keep its parameters, draws and head, and put the ReLU (and BN, if
any) at the start of each residual branch, before its linear layer, as Notebooks
11.2/11.3 and the book's figures 11.5b and 11.6c do::

    plain_bn:     z_k = b_k + W_k ReLU(BN(z_{k-1}))             k = 1..K-1
    residual:     z_k = z_{k-1} + b_k + W_k ReLU(z_{k-1})
    residual_bn:  z_k = z_{k-1} + b_k + W_k ReLU(BN(z_{k-1}))
    all:          z_0 = b_0 + W_0 x,   y = b_K + W_K ReLU(z_{K-1})   (BN(z_{K-1}) with BN)

so every variant has K ReLUs on its longest path, and at K = 1 the variants without BN
are the notebook's network, those with BN one another. BN normalizes each unit over the
N grid inputs (mean and biased variance over the batch, ``eps = 1e-5``, no affine, as
``torch.nn.BatchNorm1d`` in training mode at initialization). With BN the grid's
outputs depend on one another, and the backward pass, seeded with ones at every output
as the notebook's is, gives ``d(sum_j y_j)/dx_i`` (what autodiff of the summed output
gives), not the diagonal ``dy_i/dx_i``; without BN the two are equal.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from derive.errors import DeriveError, choice_error
from derive.inputs.numbers import integer
from derive.simulation.resources import DRAW, MAX_WORK, available_memory, format_bytes

#: The variants: the notebook's plain network, and three extensions (not in the notebook).
VARIANTS = ("plain", "plain_bn", "residual", "residual_bn")
#: The notebook's sizes: D hidden units a layer, N grid inputs on [-2, 2).
WIDTH, N_INPUTS = 200, 256
#: BatchNorm's epsilon (torch.nn.BatchNorm1d's default).
BN_EPS = 1e-5


@dataclass(frozen=True)
class NotebookNetwork:
    """One network's parameters: ``weights[k]`` and ``biases[k]`` for k = 0..K, shaped as
    the notebook's (``W_0``: D x 1, ``W_k``: D x D, ``W_K``: 1 x D; biases 1-D)."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def depth(self) -> int:
        """K, the number of hidden layers."""
        return len(self.weights) - 1


def notebook_grid(n_inputs: int = N_INPUTS) -> np.ndarray:
    """The notebook's inputs: ``np.arange(-2, 2, 4/n_inputs)``, ``n_inputs`` points.

    >>> x = notebook_grid()
    >>> len(x), float(x[0]), float(x[128]), float(x[-1])
    (256, -2.0, 0.0, 1.984375)
    """
    n = integer(n_inputs, "n_inputs", minimum=2, maximum=10**6, text=False)
    return np.arange(n) * (4.0 / n) - 2.0


def notebook_network(depth: int, *, width: int = WIDTH, seed: int = 0, legacy: bool = False,
                     weight_variance: float | None = None,
                     bias_variance: float | None = None) -> NotebookNetwork:
    """Draw the notebook's parameters: every weight and bias N(0, 1/width), in the
    notebook's order (W_0, W_K, b_0, b_K, then W_k, b_k for k = 1..K-1).
    ``weight_variance`` and ``bias_variance`` replace the 1/width of every layer's
    weights or biases (the same draws, rescaled).

    ``legacy=False`` draws from ``numpy.random.default_rng(seed)``; ``legacy=True`` from
    ``numpy.random.RandomState(seed)``, which with ``seed=1`` is the notebook's
    ``np.random.seed(1)``: the very network it plots.

    >>> net = notebook_network(3, width=4, seed=1, legacy=True)
    >>> [w.shape for w in net.weights], net.depth
    ([(4, 1), (4, 4), (4, 4), (1, 4)], 3)
    >>> round(float(net.weights[0][0, 0]), 6) == round(1.6243453636632417 / 2, 6)
    True
    """
    depth, width = _sizes(depth, width)
    seed = integer(seed, "seed", minimum=0, maximum=2**32 - 1 if legacy else 2**63, text=False)
    normal = (np.random.RandomState(seed).normal if legacy
              else np.random.default_rng(seed).standard_normal)
    scale = np.sqrt(_variance(weight_variance, "weight_variance", width))
    shift = np.sqrt(_variance(bias_variance, "bias_variance", width))
    weights: list[np.ndarray] = [np.empty(0)] * (depth + 1)
    biases: list[np.ndarray] = [np.empty(0)] * (depth + 1)
    weights[0] = normal(size=(width, 1)) * scale
    weights[depth] = normal(size=(1, width)) * scale
    biases[0] = normal(size=(width, 1))[:, 0] * shift
    biases[depth] = normal(size=(1, 1))[:, 0] * shift
    for k in range(1, depth):
        weights[k] = normal(size=(width, width)) * scale
        biases[k] = normal(size=(width, 1))[:, 0] * shift
    return NotebookNetwork(tuple(weights), tuple(biases))


def network_output(x: np.ndarray, network: NotebookNetwork, *,
                   variant: str = "plain") -> np.ndarray:
    """The outputs ``y`` (shape (N,)) of ``network`` at the inputs ``x`` (shape (N,)); with
    ``residual_bn`` the N inputs are one batch.

    >>> net = notebook_network(1, width=3, seed=0)
    >>> x = np.array([-1.0, 0.5])
    >>> h = np.maximum(net.weights[0][:, 0] * x[:, None] + net.biases[0], 0)
    >>> bool(np.allclose(network_output(x, net), h @ net.weights[1][0] + net.biases[1]))
    True
    """
    return _forward(_inputs(x), network, _variant(variant))[0]


def network_gradient(x: np.ndarray, network: NotebookNetwork, *,
                     variant: str = "plain") -> np.ndarray:
    """``dy/dx`` at each input by a hand-written backward pass seeded with ones at the
    outputs (``d(sum_j y_j)/dx_i``; for the plain and residual variants, ``dy_i/dx_i``).

    >>> net = notebook_network(1, width=3, seed=0)
    >>> x = np.array([-1.0, 0.5])
    >>> w0, b0, w1 = net.weights[0][:, 0], net.biases[0], net.weights[1][0]
    >>> by_hand = ((w0 * x[:, None] + b0 >= 0) * w0) @ w1
    >>> bool(np.allclose(network_gradient(x, net), by_hand))
    True
    """
    variant = _variant(variant)
    _, cache = _forward(_inputs(x), network, variant)
    return _backward(network, variant, cache)


def notebook_gradients(depth: int, *, variant: str = "plain", seed: int = 0,
                       n_inputs: int = N_INPUTS, width: int = WIDTH,
                       legacy: bool = False, weight_variance: float | None = None,
                       bias_variance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, dy/dx)`` on the notebook's grid for one network drawn by
    :func:`notebook_network` (which takes ``seed``, ``legacy`` and the variances);
    ``seed=1, legacy=True`` is the notebook's own figure.

    >>> x, g = notebook_gradients(50)
    >>> x.shape, g.shape
    ((256,), (256,))
    >>> x2, g2 = notebook_gradients(50)
    >>> bool((g == g2).all())
    True
    """
    variant = _variant(variant)
    depth, width = _sizes(depth, width)
    x = notebook_grid(n_inputs)
    _check_work(depth, width, len(x), 1)
    network = notebook_network(depth, width=width, seed=seed, legacy=legacy,
                               weight_variance=weight_variance, bias_variance=bias_variance)
    return x, network_gradient(x, network, variant=variant)


def autocorrelation(dy_dx: np.ndarray, lags: Iterable[int] | None = None) -> np.ndarray:
    """The notebook's autocorrelation of a gradient on the grid, along the last axis:
    ``A(j) = sum_n g[n+j] g[n] / sum_n g[n]^2`` (``np.correlate(g, g, "same")`` divided by
    its value at lag 0), at ``lags`` (default ``0..N-1-N//2``, the ``ac[128:]`` the
    notebook plots). The distance of lag ``j`` is ``4 j / N``. A gradient that is zero
    everywhere gives NaN.

    >>> autocorrelation(np.ones(4))
    array([1.  , 0.75])
    >>> autocorrelation(np.array([[1.0, -1.0, 1.0, -1.0]]), lags=[0, 1, 3])
    array([[ 1.  , -0.75, -0.25]])
    """
    g = np.asarray(dy_dx, dtype=float)
    if g.ndim < 1 or g.shape[-1] < 2:
        raise DeriveError(f"dy_dx must be an array of at least 2 values along its last axis, "
                          f"got shape {g.shape}")
    n = g.shape[-1]
    chosen = _lags(lags, n)
    energy = np.einsum("...n,...n->...", g, g)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = [np.einsum("...n,...n->...", g[..., j:], g[..., :n - j]) / energy
                for j in chosen]
    return np.stack(rows, axis=-1)


def mean_autocorrelation(depth: int, *, variant: str = "plain", n_networks: int = 100,
                         seed: int = 0, lags: Iterable[int] | None = None,
                         n_inputs: int = N_INPUTS, width: int = WIDTH,
                         weight_variance: float | None = None,
                         bias_variance: float | None = None) -> np.ndarray:
    """The notebook's :func:`autocorrelation`, averaged over ``n_networks`` networks drawn
    with seeds ``seed, seed+1, ...`` (``numpy.random.default_rng``; the variances as in
    :func:`notebook_network`).

    >>> a = mean_autocorrelation(2, n_networks=3, lags=[0, 1], width=20)
    >>> float(a[0]), bool(0 < a[1] < 1)
    (1.0, True)
    """
    variant = _variant(variant)
    depth, width = _sizes(depth, width)
    count = integer(n_networks, "n_networks", minimum=1, maximum=10**6, text=False)
    start = integer(seed, "seed", minimum=0, maximum=2**63, text=False)
    x = notebook_grid(n_inputs)
    chosen = _lags(lags, len(x))
    _check_work(depth, width, len(x), count)
    total = np.zeros(len(chosen))
    for offset in range(count):
        network = notebook_network(depth, width=width, seed=start + offset,
                                   weight_variance=weight_variance,
                                   bias_variance=bias_variance)
        total += autocorrelation(network_gradient(x, network, variant=variant), chosen)
    return total / count


def _variant(variant: object) -> str:
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise choice_error("variant", variant, VARIANTS)
    return variant


def _sizes(depth: object, width: object) -> tuple[int, int]:
    return (integer(depth, "depth", minimum=1, maximum=10**6, text=False),
            integer(width, "width", minimum=1, maximum=10**6, text=False))


def _variance(value: object, name: str, width: int) -> float:
    if value is None:
        return 1.0 / width
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not 0 <= float(value) < float("inf")):
        raise DeriveError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _inputs(x: object) -> np.ndarray:
    values = np.asarray(x, dtype=float)
    if values.ndim != 1 or len(values) < 1 or not np.isfinite(values).all():
        raise DeriveError(f"x must be a 1-D array of finite inputs, got shape {values.shape}")
    return values


def _lags(lags: Iterable[int] | None, n: int) -> list[int]:
    if lags is None:
        return list(range(n - n // 2))
    chosen = list(lags)
    bad = [lag for lag in chosen if not isinstance(lag, numbers.Integral)
           or isinstance(lag, bool) or not 0 <= lag < n]
    if bad or not chosen:
        raise DeriveError(f"lags must be integers in 0..{n - 1} (at least one), "
                          f"got {bad[0] if bad else chosen!r}")
    return [int(lag) for lag in chosen]


def _check_work(depth: int, width: int, n_inputs: int, networks: int) -> None:
    """Refuse an experiment with more work than MAX_WORK or more memory than there is."""
    work = networks * depth * width * width * (2 * n_inputs + DRAW)
    if work > MAX_WORK:
        raise DeriveError(
            f"the notebook experiment at depth {depth}, width {width}, {n_inputs} inputs and "
            f"{networks} network{'s' * (networks != 1)} needs about {float(work):.1e} "
            f"operations, more than the {float(MAX_WORK):.0e} allowed: lower the depth, the "
            "width, the inputs or the networks")
    needed = 8 * depth * width * (width + 4 * n_inputs)
    available = available_memory()
    if available is not None and needed > available:
        raise DeriveError(
            f"the notebook experiment at depth {depth}, width {width} needs about "
            f"{format_bytes(needed)} of memory, more than the {format_bytes(available)} "
            "available: lower the depth, the width or the inputs")


def _forward(x: np.ndarray, network: NotebookNetwork, variant: str
             ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray | None]]]:
    """Outputs (N,) and, for each ReLU k = 1..K, its input and BN's 1/std (None without
    BN); batch-major (N x D)."""
    weights, biases, depth = network.weights, network.biases, network.depth
    normalized, residual = variant.endswith("_bn"), variant.startswith("residual")
    z = x[:, None] * weights[0][:, 0] + biases[0]
    cache: list[tuple[np.ndarray, np.ndarray | None]] = []
    for k in range(1, depth + 1):
        scale = 1.0 / np.sqrt(z.var(axis=0) + BN_EPS) if normalized else None
        relu_in = (z - z.mean(axis=0)) * scale if scale is not None else z
        cache.append((relu_in, scale))
        out = np.maximum(relu_in, 0.0) @ weights[k].T + biases[k]
        z = z + out if residual and k < depth else out
    return z[:, 0], cache


def _backward(network: NotebookNetwork, variant: str,
              cache: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """d(sum y)/dx from the forward cache; the ReLU's derivative is 1 at 0, as the
    notebook's indicator function."""
    weights, depth = network.weights, network.depth
    residual = variant.startswith("residual")
    grad = np.ones((cache[0][0].shape[0], 1))    # dL/dy, L = sum of the outputs
    for k in range(depth, 0, -1):
        relu_in, scale = cache[k - 1]
        through = (grad @ weights[k]) * (relu_in >= 0)
        if scale is not None:                    # BN over the batch, mean and variance
            through = scale * (through - through.mean(axis=0)
                               - relu_in * (through * relu_in).mean(axis=0))
        grad = grad + through if residual and k < depth else through
    return grad @ weights[0][:, 0]
