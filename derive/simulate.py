"""NumPy Monte Carlo of finite-width residual networks at initialization.

The networks follow the variance model of :mod:`derive.variance` exactly:
``norm`` places LayerNorm (none, pre, post), ``branch`` is ``W phi(h)`` or
``W2 phi(W1 h)``, weights are zero-mean Gaussians with the variance of
``VarianceConfig.weight_variance``, biases are zero, and inverted dropout acts
on the branch output. The forward profile is the measured ``E[h_k^2]`` per
unit; the backward profile is ``E[(dL/dh_k)^2] / E[(dL/dh_K)^2]`` for
``L = <g, h_K>``, backpropagated by hand through the same weights and masks.

Several independent networks (``seeds``) are stacked along a leading axis and
run together. Every random array comes from its own stream,
``default_rng(SeedSequence(seed, spawn_key=(kind, rows, cols, s)))``, so a
configuration's numbers do not depend on what else is simulated beside it,
and configurations compared together share their draws (common random
numbers): only the scale of each weight matrix differs between them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import sympy

from derive.errors import DeriveError
from derive.model import VarianceConfig, check_depth

#: Stream kinds for the random arrays (part of each stream's spawn key).
_INPUT, _UPSTREAM, _FIRST, _SECOND, _DROPOUT = range(5)

_erf = np.frompyfunc(math.erf, 1, 1)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Simulation:
    """Measured profiles of one configuration: ``forward[k]`` is q_k for k = 0..K,
    ``backward[k]`` is d_k / d_K for k = 0..K (so ``backward[-1] == 1``)."""

    config: VarianceConfig
    depth: int
    width: int
    seeds: int
    batch: int
    q0: float
    seed: int
    forward: tuple[float, ...]
    backward: tuple[float, ...]


@dataclass(frozen=True)
class _Numeric:
    """A configuration's numbers, as the simulation uses them."""

    activation: str
    norm: str
    branch: str
    hidden: int
    sigma_first: float
    sigma_second: float
    dropout: float
    gamma: float
    slope: float


def _number(value: sympy.Expr, name: str) -> float:
    if not (isinstance(value, sympy.Expr) and value.is_number):
        raise DeriveError(f"{name} must be a number to simulate a network, got {value}")
    return float(value)


def _count(value: object, name: str, minimum: int) -> int:
    return check_depth(value, minimum=minimum, name=name)


def numeric(config: VarianceConfig, width: int) -> _Numeric:
    """The numbers a finite network of ``width`` units needs, or a DeriveError.

    >>> numeric(VarianceConfig(init="he", branch="mlp", mlp_ratio=2), 64).hidden
    128
    >>> numeric(VarianceConfig(gamma="gamma"), 64)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: gamma must be a number to simulate a network, got gamma
    """
    width = _count(width, "width", 2)
    ratio = config.mlp_ratio
    _number(ratio, "mlp_ratio")
    hidden_exact = ratio * width
    if config.branch == "mlp" and not hidden_exact.is_integer:
        raise DeriveError(
            f"mlp_ratio * width must be a whole number of hidden units, got {hidden_exact}"
        )
    hidden = int(hidden_exact) if config.branch == "mlp" else width
    n_in, n_out = sympy.Integer(width), sympy.Integer(hidden)
    if config.branch == "mlp":
        first = _number(config.weight_variance(n_in, n_out), "sigma_w2")
        second = _number(config.weight_variance(n_out, n_in), "sigma_w2")
    else:
        first, second = 1.0, _number(config.weight_variance(n_in, n_in), "sigma_w2")
    return _Numeric(
        activation=config.activation,
        norm=config.norm,
        branch=config.branch,
        hidden=hidden,
        sigma_first=math.sqrt(first),
        sigma_second=math.sqrt(second),
        dropout=_number(config.dropout, "dropout"),
        gamma=_number(config.gamma, "gamma"),
        slope=_number(config.negative_slope, "negative_slope"),
    )


class Draws:
    """The random arrays of networks ``first .. first + count - 1``, drawn on first use.

    Each network has ``depth`` blocks of ``width`` units and sees ``batch``
    inputs; the arrays are standard normals (uniforms for dropout), scaled by
    each configuration as it runs, and stacked along a networks axis.

    >>> a, b = Draws(2, 8, 4, seed=1, count=3), Draws(2, 8, 4, seed=1, count=3)
    >>> bool((a.weights(_SECOND, 8, 8) == b.weights(_SECOND, 8, 8)).all())
    True
    >>> a.weights(_SECOND, 8, 8).shape
    (2, 3, 8, 8)
    """

    def __init__(
        self, depth: int, width: int, batch: int, *, seed: int = 0, first: int = 0, count: int = 1
    ) -> None:
        self.depth = _count(depth, "depth", 1)
        self.width = _count(width, "width", 2)
        self.batch = _count(batch, "batch", 1)
        self.seed = _count(seed, "seed", 0)
        self.networks = range(_count(first, "first", 0), first + _count(count, "count", 1))
        self._arrays: dict[tuple[int, int, int], np.ndarray] = {}

    def _rngs(self, kind: int, rows: int, cols: int) -> list[np.random.Generator]:
        key = (kind, rows, cols)
        return [
            np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(*key, s)))
            for s in self.networks
        ]

    def _get(self, kind: int, rows: int, cols: int) -> np.ndarray:
        key = (kind, rows, cols)
        if key not in self._arrays:
            rngs = self._rngs(kind, rows, cols)
            if kind in (_INPUT, _UPSTREAM):
                array = np.stack([rng.standard_normal((self.batch, cols)) for rng in rngs])
            elif kind == _DROPOUT:
                shape = (self.depth, self.batch, cols)
                array = np.stack([rng.random(shape) for rng in rngs], axis=1)
            else:
                shape = (self.depth, rows, cols)
                array = np.stack([rng.standard_normal(shape) for rng in rngs], axis=1)
            self._arrays[key] = array
        return self._arrays[key]

    def inputs(self) -> np.ndarray:
        """Standard normal inputs, shape (networks, batch, width)."""
        return self._get(_INPUT, 0, self.width)

    def upstream(self) -> np.ndarray:
        """The vector g of L = <g, h_K>, standard normal, shape (networks, batch, width)."""
        return self._get(_UPSTREAM, 0, self.width)

    def weights(self, kind: int, rows: int, cols: int) -> np.ndarray:
        """Standard normal weights, shape (depth, networks, rows, cols)."""
        return self._get(kind, rows, cols)

    def uniforms(self) -> np.ndarray:
        """Uniforms on [0, 1) for dropout masks, shape (depth, networks, batch, width)."""
        return self._get(_DROPOUT, 0, self.width)


def _activation(name: str, z: np.ndarray, slope: float) -> tuple[np.ndarray, np.ndarray]:
    """phi(z) and phi'(z)."""
    if name == "linear":
        return z, np.ones_like(z)
    if name == "relu":
        positive = z > 0
        return np.where(positive, z, 0.0), positive.astype(np.float64)
    if name == "leaky_relu":
        positive = z > 0
        return np.where(positive, z, slope * z), np.where(positive, 1.0, slope)
    if name == "tanh":
        t = np.tanh(z)
        return t, 1.0 - t * t
    cdf = 0.5 * (1.0 + _erf(z * (1.0 / math.sqrt(2.0))).astype(np.float64))
    return z * cdf, cdf + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _norm(x: np.ndarray, gamma: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """LayerNorm over the units of each sample (beta = 0), with its backward cache."""
    centred = x - x.mean(axis=-1, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=-1, keepdims=True))
    y = centred / std
    return gamma * y, (y, std)


def _norm_backward(
    grad: np.ndarray, cache: tuple[np.ndarray, np.ndarray], gamma: float
) -> np.ndarray:
    """The gradient at LayerNorm's input, given the gradient at its output."""
    y, std = cache
    gy = gamma * grad
    mean = gy.mean(axis=-1, keepdims=True)
    along = (gy * y).mean(axis=-1, keepdims=True)
    return (gy - mean - y * along) / std


def _apply(arrays: list[np.ndarray], weights: np.ndarray) -> list[np.ndarray]:
    """``a @ weights`` for each array, as one matrix product over their stacked rows."""
    if len(arrays) == 1:
        return [arrays[0] @ weights]
    return np.split(np.concatenate(arrays, axis=1) @ weights, len(arrays), axis=1)


def _backward_of(weights: np.ndarray) -> np.ndarray:
    return weights.swapaxes(-1, -2)


def _run(
    params: list[_Numeric],
    draws: Draws,
    x: np.ndarray,
    record: list[tuple[list[np.ndarray], list[np.ndarray]]] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Forward and hand-written backward passes of several configurations on one
    set of draws, block by block; the configurations sharing a weight matrix are
    multiplied by it together. Returns the sums of h_k^2 and (dL/dh_k)^2."""
    depth, count = draws.depth, len(params)
    mlp = [i for i, p in enumerate(params) if p.branch == "mlp"]
    sizes = {p.hidden for p in params}
    first = {m: draws.weights(_FIRST, draws.width, m) for m in {params[i].hidden for i in mlp}}
    second = {m: draws.weights(_SECOND, m, draws.width) for m in sizes}
    uniforms = draws.uniforms() if any(p.dropout > 0 for p in params) else None
    forward, backward = np.zeros((count, depth + 1)), np.zeros((count, depth + 1))
    hs = [x] * count
    forward[:, 0] = np.sum(x * x)
    caches: list[list[tuple]] = [[] for _ in params]
    trace = [([x], []) for _ in params] if record is not None else None

    def grouped(values, table, scale, members, block, transpose=False):  # type: ignore[no-untyped-def]
        for m, weights in table.items():
            group = [i for i in members if params[i].hidden == m]
            w = weights[block]
            products = _apply([values[i] for i in group], _backward_of(w) if transpose else w)
            for i, product in zip(group, products, strict=True):
                values[i] = product * scale(i)

    for block in range(depth):
        xs, norm_in = hs, [None] * count
        z = list(xs)
        for i, p in enumerate(params):
            if p.norm == "pre":
                z[i], norm_in[i] = _norm(xs[i], p.gamma)
        grouped(z, first, lambda i: params[i].sigma_first, mlp, block)
        u, dphi = [], []
        for i, p in enumerate(params):
            value, slope = _activation(p.activation, z[i], p.slope)
            u.append(value)
            dphi.append(slope)
        grouped(u, second, lambda i: params[i].sigma_second, range(count), block)
        new = []
        for i, p in enumerate(params):
            mask = None
            if p.dropout > 0 and uniforms is not None:
                mask = (uniforms[block] >= p.dropout) * (1.0 / (1.0 - p.dropout))
                u[i] = u[i] * mask
            h, norm_out = _norm(xs[i] + u[i], p.gamma) if p.norm == "post" else (xs[i] + u[i], None)
            new.append(h)
            forward[i, block + 1] = np.sum(h * h)
            caches[i].append((norm_in[i], dphi[i], mask, norm_out))
            if trace is not None:
                trace[i][0].append(h)
        hs = new
    grads = [draws.upstream()] * count
    backward[:, depth] = np.sum(grads[0] * grads[0])
    if trace is not None:
        for i in range(count):
            trace[i][1].append(grads[0])
    for block in reversed(range(depth)):
        through, branch = list(grads), list(grads)
        for i, p in enumerate(params):
            _, _, mask, norm_out = caches[i][block]
            if norm_out is not None:
                through[i] = _norm_backward(grads[i], norm_out, p.gamma)
            branch[i] = through[i] if mask is None else through[i] * mask
        grouped(branch, second, lambda i: params[i].sigma_second, range(count), block, True)
        for i in range(count):
            branch[i] = branch[i] * caches[i][block][1]
        grouped(branch, first, lambda i: params[i].sigma_first, mlp, block, True)
        for i, p in enumerate(params):
            norm_in = caches[i][block][0]
            if norm_in is not None:
                branch[i] = _norm_backward(branch[i], norm_in, p.gamma)
            grads[i] = through[i] + branch[i]
            backward[i, block] = np.sum(grads[i] * grads[i])
            if trace is not None:
                trace[i][1].append(grads[i])
    if record is not None and trace is not None:
        record.extend((f, b[::-1]) for f, b in trace)
    return list(zip(forward, backward, strict=True))


def propagate(
    config: VarianceConfig, draws: Draws, q0: float = 1.0, inputs: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Activations h_0..h_K and gradients dL/dh_0..dL/dh_K of ``L = <g, h_K>``.

    The inputs are ``sqrt(q0)`` times the standard normals of ``draws`` unless
    ``inputs`` is given; the backward pass is written out by hand (LayerNorm,
    dropout masks, activation derivatives) through the same weights and masks.

    >>> hs, grads = propagate(VarianceConfig(init="he"), Draws(3, 8, 2, count=2))
    >>> len(hs), hs[0].shape, bool((grads[-1] == Draws(3, 8, 2, count=2).upstream()).all())
    (4, (2, 2, 8), True)
    """
    x = draws.inputs() * math.sqrt(q0) if inputs is None else inputs
    record: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _run([numeric(config, draws.width)], draws, x, record)
    return record[0]


#: Networks run side by side (stacked along the first axis) in one batch of draws.
CHUNK = 4


def measure(
    configs: Sequence[VarianceConfig],
    *,
    depth: int,
    width: int,
    seeds: int,
    batch: int,
    q0: float = 1.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Measured (forward, backward) profiles of each configuration.

    forward[k] is the mean of h_k^2 (k = 0..K); backward[k] is the mean of
    (dL/dh_k)^2 divided by the measured mean of (dL/dh_K)^2. Means run over
    units, inputs and ``seeds`` networks, which are drawn ``CHUNK`` at a time and
    shared by all configurations (only the weights' scales differ). ``progress``
    is called with 1 after each chunk.

    >>> [(f, b)] = measure([VarianceConfig(init="he")], depth=2, width=128, seeds=2, batch=16)
    >>> [round(v) for v in f], [round(v) for v in b]
    ([1, 2, 4], [4, 2, 1])
    """
    configs = list(configs)
    seeds = _count(seeds, "seeds", 1)
    q0 = _positive(q0, "q0")
    params = [numeric(config, width) for config in configs]
    totals = [(np.zeros(depth + 1), np.zeros(depth + 1)) for _ in configs]
    for first in range(0, seeds, CHUNK):
        draws = Draws(depth, width, batch, seed=seed, first=first, count=min(CHUNK, seeds - first))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            results = _run(params, draws, draws.inputs() * math.sqrt(q0))
        for (forward, backward), (f, b) in zip(totals, results, strict=True):
            forward += f
            backward += b
        if progress is not None:
            progress(1)
    count = seeds * _count(batch, "batch", 1) * width
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(forward / count, backward / backward[-1]) for forward, backward in totals]


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise DeriveError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def simulate(
    init: str = "xavier",
    activation: str = "relu",
    norm: str = "none",
    branch: str = "single",
    *,
    depth: int = 10,
    width: int = 512,
    seeds: int = 4,
    batch: int = 64,
    q0: float = 1,
    mlp_ratio: object = 1,
    dropout: object = 0,
    gamma: object = 1,
    sigma_w2: object = None,
    negative_slope: object = sympy.Rational(1, 100),
    seed: int = 0,
) -> Simulation:
    """Simulate finite residual networks and measure their variance profiles.

    He initialization with ReLU doubles E[h_k^2] per block (UDL 11.3):

    >>> sim = simulate("he", "relu", depth=3, width=256, seeds=2, batch=32)
    >>> [round(v) for v in sim.forward]
    [1, 2, 4, 8]
    >>> simulate(gamma="gamma")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: gamma must be a number to simulate a network, got gamma
    """
    config = VarianceConfig(
        init=init,
        activation=activation,
        norm=norm,
        branch=branch,
        mlp_ratio=mlp_ratio,
        dropout=dropout,
        gamma=gamma,
        sigma_w2=sigma_w2,
        negative_slope=negative_slope,
    )
    depth, width = _count(depth, "depth", 1), _count(width, "width", 2)
    batch, seed = _count(batch, "batch", 1), _count(seed, "seed", 0)
    [(forward, backward)] = measure(
        [config], depth=depth, width=width, seeds=seeds, batch=batch, q0=q0, seed=seed
    )
    return Simulation(
        config=config,
        depth=depth,
        width=width,
        seeds=seeds,
        batch=batch,
        q0=float(q0),
        seed=seed,
        forward=tuple(forward.tolist()),
        backward=tuple(backward.tolist()),
    )


DIRECTIONS = ("forward", "backward")

#: A prediction: (config, depth, q0, width) -> (q_0..q_K, d_k/d_K for k = 0..K).
Prediction = Callable[[VarianceConfig, int, float, int], tuple[Sequence[float], Sequence[float]]]


@dataclass(frozen=True)
class CheckRow:
    """One comparison of a derived value with its measurement.

    ``direction`` is forward (q_k) or backward (d_k / d_K); ``error`` is
    ``|measured - derived| / |derived|`` and ``ok`` is ``error <= tolerance``.
    """

    label: str
    direction: str
    k: int
    derived: float
    measured: float
    error: float
    tolerance: float
    ok: bool


def derived(
    config: VarianceConfig, depth: int, q0: float = 1.0, width: int = 512
) -> tuple[list[float], list[float]]:
    """The derived profiles of :func:`derive.variance` as floats, for ``width`` units.

    An explicit ``sigma_w2`` enters the mean field as ``n * sigma_w2``; it is
    passed on as ``c / n`` with ``c = width * sigma_w2`` so that n cancels.

    >>> derived(VarianceConfig(init="he", norm="pre"), 3)
    ([1.0, 2.0, 3.0, 4.0], [4.0, 2.0, 1.3333333333333333, 1.0])
    """
    from derive.model import n
    from derive.variance import variance

    sigma_w2 = None if config.sigma_w2 is None else config.sigma_w2 * width / n
    analysis = variance(
        config.init,
        config.activation,
        config.norm,
        config.branch,
        mlp_ratio=config.mlp_ratio,
        dropout=config.dropout,
        gamma=config.gamma,
        sigma_w2=sigma_w2,
        negative_slope=config.negative_slope,
    )
    forward = [float(v) for v in analysis.forward.profile(depth, q0=sympy.nsimplify(q0))]
    backward = [float(v) for v in analysis.backward.profile(depth, q0=sympy.nsimplify(q0))]
    return forward, backward


def grid(
    inits: Sequence[str] = (),
    activations: Sequence[str] = (),
    norms: Sequence[str] = (),
    branches: Sequence[str] = (),
    **options: object,
) -> list[VarianceConfig]:
    """Every configuration of init x activation x norm x branch (empty: all choices).

    >>> len(grid()), grid(["he"], ["relu"], ["pre"])[1].label
    (90, 'he/relu/pre/mlp')
    """
    from derive.model import ACTIVATIONS, BRANCHES, INITS, NORMS

    return [
        VarianceConfig(init=i, activation=a, norm=m, branch=b, **options)  # type: ignore[arg-type]
        for i in inits or INITS
        for a in activations or ACTIVATIONS
        for m in norms or NORMS
        for b in branches or BRANCHES
    ]


def steps(configs: int, seeds: int) -> int:
    """How many times :func:`compare` reports progress for ``configs`` configurations.

    >>> steps(90, 16)
    94
    """
    return configs + -(-seeds // CHUNK)


def _row(label: str, direction: str, k: int, want: float, got: float, tol: float) -> CheckRow:
    with np.errstate(invalid="ignore", divide="ignore"):
        error = float(abs(got - want) / abs(want) if want != 0 else abs(got - want))
    if not math.isfinite(error):
        error = math.inf
    return CheckRow(label, direction, k, float(want), float(got), float(error), tol, error <= tol)


def compare(
    configs: Sequence[VarianceConfig],
    depth: int = 8,
    width: int = 512,
    seeds: int = 16,
    *,
    batch: int = 16,
    q0: float = 1.0,
    tolerance: float = 0.1,
    seed: int = 0,
    predict: Prediction | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[CheckRow]:
    """Compare derived profiles with simulated networks at every block.

    Rows per configuration: forward q_k for k = 1..K, then backward d_k / d_K
    for k = K-1..0, so each direction ends with its final-depth row.
    ``predict`` defaults to :func:`derived`; ``progress`` is called with 1 per
    step (see :func:`steps`).

    >>> rows = compare(grid(["he"], ["relu"], ["none"], ["single"]), 3, 256, 4)
    >>> [(r.direction, r.k, r.derived, r.ok) for r in rows if r.k in (0, 3)]
    [('forward', 3, 8.0, True), ('backward', 0, 8.0, True)]
    """
    configs = list(configs)
    depth, width = _count(depth, "depth", 1), _count(width, "width", 2)
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or tolerance <= 0:
        raise DeriveError(f"tolerance must be a number > 0, got {tolerance!r}")
    q0 = _positive(q0, "q0")
    predict = predict or derived
    predictions = []
    for config in configs:
        numeric(config, width)
        predictions.append(predict(config, depth, q0, width))
        if progress is not None:
            progress(1)
    measured = measure(
        configs, depth=depth, width=width, seeds=seeds, batch=batch, q0=q0, seed=seed,
        progress=progress,
    )
    rows = []
    for config, (want_f, want_b), (got_f, got_b) in zip(
        configs, predictions, measured, strict=True
    ):
        for k in range(1, depth + 1):
            rows.append(_row(config.label, "forward", k, want_f[k], got_f[k], tolerance))
        for k in reversed(range(depth)):
            rows.append(_row(config.label, "backward", k, want_b[k], got_b[k], tolerance))
    return rows
