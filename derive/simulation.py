"""NumPy Monte Carlo of finite-width residual networks, checked against the derivation.

The networks are those of :mod:`derive.variance_analysis` (LayerNorm none/pre/post with gain
gamma, branch ``W phi(h)`` or ``W2 phi(W1 h)``, Gaussian weights, zero biases,
inverted dropout on the branch). Measured: ``E[h_k^2]`` per unit, and
``E[(dL/dh_k)^2] / E[(dL/dh_K)^2]`` for ``L = <g, h_K>``, backpropagated by hand.
Each random array has its own stream (``SeedSequence(seed, spawn_key=(kind, rows,
cols, network))``): configurations run together share their draws and products.
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

_INPUT, _UPSTREAM, _FIRST, _SECOND, _DROPOUT = range(5)
#: Networks drawn and run side by side (stacked along the first axis), and how many
#: configurations share their products at a time (bounds the memory the caches take).
CHUNK, GROUP = 4, 30

_erf = np.frompyfunc(math.erf, 1, 1)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: A prediction: (config, depth, q0, width) -> (q_0..q_K, d_k/d_K for k = 0..K).
Prediction = Callable[[VarianceConfig, int, float, int], tuple[Sequence[float], Sequence[float]]]


@dataclass(frozen=True)
class Simulation:
    """Measured profiles: ``forward[k]`` = q_k and ``backward[k]`` = d_k / d_K, k = 0..K."""

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
class CheckRow:
    """A derived value against its measurement at block ``k`` (forward q_k, backward
    d_k / d_K); ``error`` = |measured - derived| / |derived|, ``ok`` = error <= tolerance."""

    label: str
    direction: str
    k: int
    derived: float
    measured: float
    error: float
    tolerance: float
    ok: bool


@dataclass(frozen=True)
class _Numeric:
    activation: str
    norm: str
    branch: str
    hidden: int
    sigma_first: float
    sigma_second: float
    dropout: float
    gamma: float
    slope: float


def _count(value: object, name: str, minimum: int) -> int:
    return check_depth(value, minimum=minimum, name=name)


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise DeriveError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _number(value: sympy.Expr, name: str) -> float:
    if not (isinstance(value, sympy.Expr) and value.is_number):
        raise DeriveError(f"{name} must be a number to simulate a network, got {value}")
    return float(value)


def numeric(config: VarianceConfig, width: int) -> _Numeric:
    """The numbers a network of ``width`` units needs, or a DeriveError naming the value.

    >>> numeric(VarianceConfig(init="he", branch="mlp", mlp_ratio=2), 64).hidden
    128
    >>> numeric(VarianceConfig(gamma="gamma"), 64)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: gamma must be a number to simulate a network, got gamma
    """
    width, mlp = _count(width, "width", 2), config.branch == "mlp"
    hidden = config.mlp_ratio * width
    _number(config.mlp_ratio, "mlp_ratio")
    if mlp and not hidden.is_integer:
        raise DeriveError(f"mlp_ratio * width must be a whole number of hidden units, got {hidden}")
    hidden = int(hidden) if mlp else width
    n_in, n_out = sympy.Integer(width), sympy.Integer(hidden)
    first = _number(config.weight_variance(n_in, n_out), "sigma_w2") if mlp else 1.0
    second = _number(config.weight_variance(n_out, n_in), "sigma_w2")
    return _Numeric(
        config.activation, config.norm, config.branch, hidden, math.sqrt(first),
        math.sqrt(second), _number(config.dropout, "dropout"), _number(config.gamma, "gamma"),
        _number(config.negative_slope, "negative_slope"),
    )


class Draws:
    """Standard normals (uniforms for dropout) of networks ``first .. first + count - 1``,
    each of ``depth`` blocks and ``width`` units seeing ``batch`` inputs; drawn on first use.

    >>> a, b = Draws(2, 8, 4, seed=1, count=3), Draws(2, 8, 4, seed=1, count=3)
    >>> a.get(_SECOND, 8, 8).shape, bool((a.upstream() == b.upstream()).all())
    ((2, 3, 8, 8), True)
    """

    def __init__(
        self, depth: int, width: int, batch: int, *, seed: int = 0, first: int = 0, count: int = 1
    ) -> None:
        self.depth, self.width = _count(depth, "depth", 1), _count(width, "width", 2)
        self.batch, self.seed = _count(batch, "batch", 1), _count(seed, "seed", 0)
        self.networks = range(_count(first, "first", 0), first + _count(count, "count", 1))
        self._arrays: dict[tuple[int, int, int], np.ndarray] = {}

    def get(self, kind: int, rows: int = 0, cols: int = 0) -> np.ndarray:
        """Normals (networks, batch, cols) for inputs and g, uniforms (depth, networks,
        batch, cols) for dropout, normal weights (depth, networks, rows, cols)."""
        key = (kind, rows, cols or self.width)
        if key not in self._arrays:
            rngs = [np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(*key, s)))
                    for s in self.networks]
            if kind in (_INPUT, _UPSTREAM):
                array = np.stack([rng.standard_normal((self.batch, key[2])) for rng in rngs])
            elif kind == _DROPOUT:
                shape = (self.depth, self.batch, key[2])
                array = np.stack([rng.random(shape) for rng in rngs], axis=1)
            else:
                shape = (self.depth, rows, cols)
                array = np.stack([rng.standard_normal(shape) for rng in rngs], axis=1)
            self._arrays[key] = array
        return self._arrays[key]

    def inputs(self) -> np.ndarray:
        """Standard normal inputs, shape (networks, batch, width)."""
        return self.get(_INPUT)

    def upstream(self) -> np.ndarray:
        """g of L = <g, h_K>, standard normal, shape (networks, batch, width)."""
        return self.get(_UPSTREAM)


def _activation(name: str, z: np.ndarray, slope: float) -> tuple[np.ndarray, np.ndarray]:
    """phi(z) and phi'(z); gelu is exact, z Phi(z), with Phi from math.erf."""
    if name == "linear":
        return z, np.ones_like(z)
    if name in ("relu", "leaky_relu"):
        positive, low = z > 0, slope if name == "leaky_relu" else 0.0
        return np.where(positive, z, low * z), np.where(positive, 1.0, low)
    if name == "tanh":
        t = np.tanh(z)
        return t, 1.0 - t * t
    cdf = 0.5 * (1.0 + _erf(z * (1.0 / math.sqrt(2.0))).astype(np.float64))
    return z * cdf, cdf + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _norm(x: np.ndarray, gamma: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """LayerNorm over each sample's units (beta = 0), with its backward cache."""
    centred = x - x.mean(axis=-1, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=-1, keepdims=True))
    return gamma * (centred / std), (centred / std, std)


def _norm_backward(grad: np.ndarray, cache: tuple[np.ndarray, ...], gamma: float) -> np.ndarray:
    """The gradient at LayerNorm's input from the gradient at its output."""
    y, std = cache
    gy = gamma * grad
    return (gy - gy.mean(axis=-1, keepdims=True) - y * (gy * y).mean(axis=-1, keepdims=True)) / std


def _run(params: list[_Numeric], draws: Draws, x: np.ndarray, record: list | None = None
         ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Forward and hand-written backward passes of several configurations, block by
    block; configurations that share a weight matrix are multiplied by it in one
    product. Returns per configuration the sums of h_k^2 and of (dL/dh_k)^2."""
    depth, count = draws.depth, len(params)
    mlp = [i for i, p in enumerate(params) if p.branch == "mlp"]
    first = {m: draws.get(_FIRST, draws.width, m) for m in {params[i].hidden for i in mlp}}
    second = {m: draws.get(_SECOND, m, draws.width) for m in {p.hidden for p in params}}
    uniforms = draws.get(_DROPOUT) if any(p.dropout > 0 for p in params) else None
    forward, backward = np.zeros((count, depth + 1)), np.zeros((count, depth + 1))
    caches: list[list[tuple]] = [[] for _ in params]
    trace = [([x], []) for _ in params] if record is not None else []

    def multiply(values: list, table: dict, members: Sequence[int], block: int, back: bool) -> None:
        for m, weights in table.items():
            group = [i for i in members if params[i].hidden == m]
            w = weights[block].swapaxes(-1, -2) if back else weights[block]
            stacked = np.concatenate([values[i] for i in group], axis=1) @ w
            for i, product in zip(group, np.split(stacked, len(group), axis=1), strict=True):
                sigma = params[i].sigma_first if table is first else params[i].sigma_second
                values[i] = product * sigma

    hs = [x] * count
    forward[:, 0] = np.sum(x * x)
    for block in range(depth):
        pre = [_norm(hs[i], p.gamma) if p.norm == "pre" else (hs[i], None)
               for i, p in enumerate(params)]
        z = [a for a, _ in pre]
        multiply(z, first, mlp, block, False)
        u_dphi = [_activation(p.activation, z[i], p.slope) for i, p in enumerate(params)]
        f = [u for u, _ in u_dphi]
        multiply(f, second, range(count), block, False)
        for i, p in enumerate(params):
            mask = None
            if p.dropout > 0 and uniforms is not None:
                mask = (uniforms[block] >= p.dropout) * (1.0 / (1.0 - p.dropout))
                f[i] = f[i] * mask
            h, post = _norm(hs[i] + f[i], p.gamma) if p.norm == "post" else (hs[i] + f[i], None)
            hs[i] = h
            forward[i, block + 1] = np.sum(h * h)
            caches[i].append((pre[i][1], u_dphi[i][1], mask, post))
            if trace:
                trace[i][0].append(h)
    grads = [draws.upstream()] * count
    backward[:, depth] = np.sum(grads[0] * grads[0])
    for _, grads_ in trace:
        grads_.append(grads[0])
    for block in reversed(range(depth)):
        through, branch = list(grads), list(grads)
        for i, p in enumerate(params):
            _, _, mask, post = caches[i][block]
            if post is not None:
                through[i] = _norm_backward(grads[i], post, p.gamma)
            branch[i] = through[i] if mask is None else through[i] * mask
        multiply(branch, second, range(count), block, True)
        for i in range(count):
            branch[i] = branch[i] * caches[i][block][1]
        multiply(branch, first, mlp, block, True)
        for i, p in enumerate(params):
            norm_in = caches[i][block][0]
            if norm_in is not None:
                branch[i] = _norm_backward(branch[i], norm_in, p.gamma)
            grads[i] = through[i] + branch[i]
            backward[i, block] = np.sum(grads[i] * grads[i])
            if trace:
                trace[i][1].append(grads[i])
    if record is not None:
        record.extend((hs_, grads_[::-1]) for hs_, grads_ in trace)
    return list(zip(forward, backward, strict=True))


def propagate(config: VarianceConfig, draws: Draws, q0: float = 1.0,
              inputs: np.ndarray | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Activations h_0..h_K and gradients dL/dh_0..dL/dh_K of ``L = <g, h_K>``, for
    inputs ``sqrt(q0)`` times the draws' normals (or ``inputs``).

    >>> hs, grads = propagate(VarianceConfig(init="he"), Draws(3, 8, 2, count=2))
    >>> len(hs), hs[0].shape, bool((grads[-1] == Draws(3, 8, 2, count=2).upstream()).all())
    (4, (2, 2, 8), True)
    """
    x = draws.inputs() * math.sqrt(q0) if inputs is None else inputs
    record: list = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _run([numeric(config, draws.width)], draws, x, record)
    return record[0]


def measure(configs: Sequence[VarianceConfig], *, depth: int, width: int, seeds: int, batch: int,
            q0: float = 1.0, seed: int = 0, progress: Callable[[int], None] | None = None
            ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Measured (forward, backward) profiles: mean h_k^2, and mean (dL/dh_k)^2 over
    mean (dL/dh_K)^2, k = 0..K; means over units, inputs and ``seeds`` networks,
    drawn CHUNK at a time (``progress(1)`` after each chunk).

    >>> [(f, b)] = measure([VarianceConfig(init="he")], depth=2, width=128, seeds=2, batch=16)
    >>> [round(v) for v in f], [round(v) for v in b]
    ([1, 2, 4], [4, 2, 1])
    """
    seeds, q0 = _count(seeds, "seeds", 1), _positive(q0, "q0")
    depth, batch = _count(depth, "depth", 1), _count(batch, "batch", 1)
    params = [numeric(config, width) for config in configs]
    totals = [(np.zeros(depth + 1), np.zeros(depth + 1)) for _ in params]
    for first in range(0, seeds, CHUNK):
        draws = Draws(depth, width, batch, seed=seed, first=first, count=min(CHUNK, seeds - first))
        x, results = draws.inputs() * math.sqrt(q0), []
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, len(params), GROUP):
                results += _run(params[start : start + GROUP], draws, x)
        for (forward, backward), (f, b) in zip(totals, results, strict=True):
            forward += f
            backward += b
        if progress is not None:
            progress(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(f / (seeds * batch * width), b / b[-1]) for f, b in totals]


def simulate(
    init: str = "xavier", activation: str = "relu", norm: str = "none", branch: str = "single",
    *, depth: int = 10, width: int = 512, seeds: int = 4, batch: int = 64, q0: float = 1,
    mlp_ratio: object = 1, dropout: object = 0, gamma: object = 1, sigma_w2: object = None,
    negative_slope: object = sympy.Rational(1, 100), seed: int = 0,
) -> Simulation:
    """Simulate ``seeds`` finite residual networks and measure their variance profiles.

    He initialization with ReLU doubles E[h_k^2] per block (UDL 11.3):

    >>> sim = simulate("he", "relu", depth=3, width=256, seeds=2, batch=32)
    >>> [round(v) for v in sim.forward], [round(v) for v in sim.backward]
    ([1, 2, 4, 8], [8, 4, 2, 1])
    >>> simulate(gamma="gamma")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: gamma must be a number to simulate a network, got gamma
    """
    config = VarianceConfig(init, activation, norm, branch, mlp_ratio, dropout, gamma, sigma_w2,
                            negative_slope)
    depth, width = _count(depth, "depth", 1), _count(width, "width", 2)
    batch, seed = _count(batch, "batch", 1), _count(seed, "seed", 0)
    [(forward, backward)] = measure(
        [config], depth=depth, width=width, seeds=seeds, batch=batch, q0=q0, seed=seed
    )
    return Simulation(config, depth, width, seeds, batch, float(q0), seed,
                      tuple(forward.tolist()), tuple(backward.tolist()))


def derived(config: VarianceConfig, depth: int, q0: float = 1.0, width: int = 512
            ) -> tuple[list[float], list[float]]:
    """The profiles :func:`derive.variance` derives, as floats, for ``width`` units.

    An explicit ``sigma_w2`` enters the mean field as ``n sigma_w2``: it is passed
    on as ``c / n`` with ``c = width sigma_w2``, so that n cancels exactly.

    >>> derived(VarianceConfig(init="he", norm="pre"), 3)
    ([1.0, 2.0, 3.0, 4.0], [4.0, 2.0, 1.3333333333333333, 1.0])
    """
    from derive.model import n
    from derive.variance_analysis import variance

    c = config
    sigma_w2 = None if c.sigma_w2 is None else c.sigma_w2 * width / n
    analysis = variance(c.init, c.activation, c.norm, c.branch, mlp_ratio=c.mlp_ratio,
                        dropout=c.dropout, gamma=c.gamma, sigma_w2=sigma_w2,
                        negative_slope=c.negative_slope)
    q0_exact = sympy.nsimplify(q0)
    return ([float(v) for v in analysis.forward.profile(depth, q0=q0_exact)],
            [float(v) for v in analysis.backward.profile(depth, q0=q0_exact)])


def grid(inits: Sequence[str] = (), activations: Sequence[str] = (), norms: Sequence[str] = (),
         branches: Sequence[str] = (), **options: object) -> list[VarianceConfig]:
    """Every configuration of init x activation x norm x branch (empty: every choice).

    >>> len(grid()), grid(["he"], ["relu"], ["pre"])[1].label
    (90, 'he/relu/pre/mlp')
    """
    from derive.model import ACTIVATIONS, BRANCHES, INITS, NORMS

    return [
        VarianceConfig(init=i, activation=a, norm=m, branch=b, **options)  # type: ignore[arg-type]
        for i in inits or INITS for a in activations or ACTIVATIONS
        for m in norms or NORMS for b in branches or BRANCHES
    ]


def _row(label: str, direction: str, k: int, want: float, got: float, tol: float) -> CheckRow:
    with np.errstate(invalid="ignore", divide="ignore"):
        error = float(abs(got - want) / abs(want) if want != 0 else abs(got - want))
    error = error if math.isfinite(error) else math.inf
    return CheckRow(label, direction, k, float(want), float(got), error, tol, error <= tol)


def compare(
    configs: Sequence[VarianceConfig], depth: int = 6, width: int = 512, seeds: int = 32, *,
    batch: int = 16, q0: float = 1.0, tolerance: float = 0.1, seed: int = 0,
    predict: Prediction | None = None, progress: Callable[[int], None] | None = None,
) -> list[CheckRow]:
    """Derived profiles against simulated networks at every block.

    Per configuration: forward q_k for k = 1..K, then backward d_k / d_K for
    k = K-1..0, so each direction ends with its final-depth row. ``predict``
    defaults to :func:`derived`; ``progress(1)`` follows each derivation and each
    chunk of networks (``len(configs) + ceil(seeds / CHUNK)`` calls).

    >>> rows = compare(grid(["he"], ["relu"], ["none"], ["single"]), 3, 256, 4)
    >>> [(r.direction, r.k, r.derived, r.ok) for r in rows if r.k in (0, 3)]
    [('forward', 3, 8.0, True), ('backward', 0, 8.0, True)]
    """
    configs = list(configs)
    depth, width = _count(depth, "depth", 1), _count(width, "width", 2)
    tolerance, q0 = _positive(tolerance, "tolerance"), _positive(q0, "q0")
    _count(seeds, "seeds", 1), _count(batch, "batch", 1)
    predict, predictions = predict or derived, []
    for config in [c for c in configs if numeric(c, width)]:
        predictions.append(predict(config, depth, q0, width))
        if progress is not None:
            progress(1)
    measured = measure(configs, depth=depth, width=width, seeds=seeds, batch=batch, q0=q0,
                       seed=seed, progress=progress)
    rows = []
    for c, (want_f, want_b), (got_f, got_b) in zip(configs, predictions, measured, strict=True):
        rows += [_row(c.label, "forward", k, want_f[k], got_f[k], tolerance)
                 for k in range(1, depth + 1)]
        rows += [_row(c.label, "backward", k, want_b[k], got_b[k], tolerance)
                 for k in reversed(range(depth))]
    return rows

