"""Two correlated inputs through finite networks: the measured kernel against the derived one.

Each network sees ``pairs`` pairs of inputs (a_i, b_i), x_a = sqrt(q0) z and
x_b = sqrt(q0) (rho0 z + sqrt(1 - rho0^2) z'), z and z' standard normal: per unit,
E[x_a^2] = E[x_b^2] = q0 and E[x_a x_b] = rho0 q0; different pairs are independent.
The pairs run as one batch (a_1..a_P, b_1..b_P) through the stack of
:mod:`derive.simulation.networks`, so BatchNorm normalizes over all 2P inputs; its
two-point rule is for two typical members of a batch of independent inputs, and a
member's own partner is one of the 2P - 1 others: it moves the batch mean by O(1/P),
the size of the finite-batch correction that independent inputs have too.
Backward, both inputs of a pair read the same readout vector g_i (L = sum_i <g_i,
h_K(a_i)> + <g_i, h_K(b_i)>, g_i standard normal, independent across pairs), so the
gradients of a pair are equal at the output.

Measured per depth k, as means over units, pairs and networks: q_a, q_b and c =
E[h_k(a) h_k(b)], rho_k = c / sqrt(q_a q_b); d_a, d_b and g = E[dL/dh_k(a) dL/dh_k(b)],
rho^grad_k = g / sqrt(d_a d_b). :func:`compare_kernel` sets them against
:meth:`derive.recursions.kernel.KernelAnalysis.profile`.

>>> from derive.blocks.config import variance_config
>>> [m] = measure_kernel([variance_config(init="he", block="F(x)")], depth=1, width=512,
...                      seeds=4, pairs=64, rho0=0)
>>> abs(m.forward["rho"][1] - 1 / math.pi) < 0.02  # the arc-cosine kernel at rho = 0: 1/pi
True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import sympy

from derive.blocks.config import VarianceConfig
from derive.derivation.symbols import n as _n
from derive.errors import DeriveError
from derive.inputs.numbers import exact, shown
from derive.simulation.networks import (
    CHUNK,
    ROWS,
    Draws,
    _count,
    _positive,
    batching,
    grid,
    numeric,
    run_parts,
    skeleton,
)
from derive.simulation.resources import check_simulation

#: The plain stacks (no skip connection) checked beside the presets.
PLAIN_STACKS = ("F(x)", "phi(W(x))")
#: A block with BatchNorm runs its pairs in at most BN_NETWORKS networks of at least this
#: many pairs each: BatchNorm's rule is for a large batch, and its error falls like 1/batch.
BN_PAIRS = 128
#: ``derive check --kernel``'s sizes: blocks, units, networks, pairs per network, and the
#: absolute tolerance on a correlation (the finite-width error is at most about 0.025 here).
DEFAULTS = {"depth": 6, "width": 512, "seeds": 8, "pairs": 16, "tolerance": 0.05}
#: What each side of a pair is summed into, forward and backward.
FORWARD_KEYS, BACKWARD_KEYS = ("q_a", "q_b", "c"), ("d_a", "d_b", "g")


@dataclass(frozen=True)
class KernelMeasurement:
    """The measured two-point profiles of one configuration over k = 0..K: ``forward``
    (``q_a``, ``q_b``, ``c``, ``rho``) and ``backward`` (``d_a``, ``d_b``, ``g``,
    ``rho``; the second moments over d_a at the output), and the Monte Carlo standard
    error of each ``rho`` (the jackknife over the networks)."""

    config: VarianceConfig
    forward: dict[str, list[float]]
    backward: dict[str, list[float]]
    forward_error: list[float]
    backward_error: list[float]


@dataclass(frozen=True)
class KernelRow:
    """A derived correlation against its measurement at block ``k``: ``forward`` rho_k,
    ``backward`` rho^grad_k; ``error`` = |measured - derived| (absolute), ``stderr`` the
    measurement's Monte Carlo standard error, ``ok`` = error <= tolerance."""

    label: str
    direction: str
    k: int
    derived: float
    measured: float
    stderr: float
    error: float
    tolerance: float
    ok: bool


class PairDraws(Draws):
    """The draws of :class:`derive.simulation.networks.Draws` for ``batch`` = 2P inputs that
    are P pairs: the two inputs of a pair share their readout vector. Every array is
    single precision (float32), so the networks run in float32, as trained networks do:
    a correlation is compared to a few thousandths, far above float32's rounding.

    >>> d = PairDraws(2, 8, 4, count=2)
    >>> bool((d.upstream()[:, :2] == d.upstream()[:, 2:]).all()), d.inputs().dtype
    (True, dtype('float32'))
    """

    def __init__(self, depth: int, width: int, batch: int, *, seed: int = 0, first: int = 0,
                 count: int = 1) -> None:
        super().__init__(depth, width, batch, seed=seed, first=first, count=count)
        self._single: dict[tuple, np.ndarray] = {}

    def _draw(self, kind: int, key: tuple, shape: tuple[int, ...], block: int) -> np.ndarray:
        """The parent's array of these normals (or uniforms), kept in float32 only."""
        name = (kind, key, shape, block)
        if name not in self._single:
            self._single[name] = super()._draw(kind, key, shape, block).astype(np.float32)
            self._arrays.clear()  # the float64 original is not needed again
        return self._single[name]

    def upstream(self) -> np.ndarray:
        """g of L, one standard normal vector per pair, the same for both inputs."""
        half = super().upstream()[:, : self.batch // 2]
        return np.concatenate([half, half], axis=1)


def pair_inputs(draws: Draws, q0: float, rho0: float) -> np.ndarray:
    """The batch (a_1..a_P, b_1..b_P) of P = batch/2 pairs, from the draws' normals.

    >>> x = pair_inputs(Draws(1, 1024, 64, count=1), 2.0, 0.5)  # 32 pairs
    >>> a, b = x[0, :32], x[0, 32:]
    >>> round(float((a * a).mean()), 1), round(float((a * b).mean()), 1)
    (2.0, 1.0)
    """
    z = draws.inputs()
    half = z.shape[1] // 2
    first, second = z[:, :half], z[:, half:2 * half]
    partner = rho0 * first + math.sqrt(max(0.0, 1.0 - rho0 * rho0)) * second
    return math.sqrt(q0) * np.concatenate([first, partner], axis=1)


def _pair_sums(values: Sequence[np.ndarray], pairs: int) -> np.ndarray:
    """(3, K+1, networks): the sums over units and pairs of a*a, b*b and a*b, per depth."""
    out = np.empty((3, len(values), values[0].shape[0]))
    for k, v in enumerate(values):
        a, b = v[:, :pairs], v[:, pairs:2 * pairs]
        for row, (left, right) in enumerate(((a, a), (b, b), (a, b))):
            out[row, k] = (left.astype(np.float64) * right).sum(axis=(1, 2))
    return out


def _correlation(sums: np.ndarray) -> np.ndarray:
    """c / sqrt(q_a q_b) per depth from sums (3, K+1, ...) over the last axis."""
    total = sums.sum(axis=-1)
    return total[2] / np.sqrt(total[0] * total[1])


def _jackknife(sums: np.ndarray) -> np.ndarray:
    """The jackknife standard error of :func:`_correlation` over the networks (last axis)."""
    count = sums.shape[-1]
    if count < 2:
        return np.full(sums.shape[1], math.nan)
    total = sums.sum(axis=-1, keepdims=True)
    left_out = total - sums  # (3, K+1, networks): every network but one
    rho = left_out[2] / np.sqrt(left_out[0] * left_out[1])
    spread = rho - rho.mean(axis=-1, keepdims=True)
    return np.sqrt((count - 1) / count * (spread * spread).sum(axis=-1))


def _measurement(config: VarianceConfig, forward: np.ndarray,
                 backward: np.ndarray, size: int) -> KernelMeasurement:
    """The profiles from the per-network sums (3, K+1, networks) of ``size`` values each."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        f_total, b_total = forward.sum(axis=-1) / size, backward.sum(axis=-1) / size
        b_total = b_total / b_total[0, -1]
        rho_f, rho_b = _correlation(forward), _correlation(backward)
        err_f, err_b = _jackknife(forward), _jackknife(backward)
    fwd = {key: f_total[i].tolist() for i, key in enumerate(FORWARD_KEYS)}
    bwd = {key: b_total[i].tolist() for i, key in enumerate(BACKWARD_KEYS)}
    return KernelMeasurement(config, {**fwd, "rho": rho_f.tolist()},
                             {**bwd, "rho": rho_b.tolist()}, err_f.tolist(), err_b.tolist())


def pair_batching(config: VarianceConfig, seeds: int, pairs: int) -> tuple[int, int]:
    """(networks, pairs per network) for ``config``: as given, except that a block with
    BatchNorm runs its pairs in at most BN_NETWORKS networks of at least BN_PAIRS pairs.

    >>> from derive.blocks.config import variance_config as config
    >>> pair_batching(config(norm="bn-first"), 8, 16), pair_batching(config(), 8, 16)
    ((4, 128), (8, 16))
    """
    if not config.block.has_batchnorm:
        return seeds, pairs
    networks, per_network = batching(config, seeds, pairs)
    return networks, max(per_network, BN_PAIRS)


def check_kernel_simulation(configs: Sequence[VarianceConfig], *, depth: int, width: int,
                            seeds: int, pairs: int) -> list[tuple[int, int]]:
    """(networks, pairs per network) of each configuration, once the simulation is known
    to fit the machine's memory and the work allowed
    (:func:`derive.simulation.resources.check_simulation`); else a DeriveError.

    >>> from derive.blocks.config import variance_config
    >>> check_kernel_simulation([variance_config()], depth=6, width=512, seeds=8, pairs=16)
    [(8, 16)]
    """
    checked = [numeric(config, width) for config in configs]
    plans = [pair_batching(c, seeds, pairs) for c in checked]
    check_simulation(checked, [(networks, 2 * inputs) for networks, inputs in plans],
                     depth=depth, width=width, seeds=seeds, batch=2 * pairs, chunk=CHUNK,
                     rows=ROWS, skeleton=skeleton)
    return plans


def _rho0(value: object) -> float:
    correlation = exact(value, "rho0", symbol=False)
    if not (correlation.is_number and -1 <= correlation <= 1):
        raise DeriveError(f"rho0 must be a number in [-1, 1], got {shown(value)}")
    return float(correlation)


def measure_kernel(configs: Sequence[VarianceConfig], *, depth: int, width: int, seeds: int,
                   pairs: int, q0: object = 1, rho0: object = "1/2", seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> list[KernelMeasurement]:
    """Measured two-point profiles of ``configs``: ``seeds`` networks of ``pairs`` input
    pairs each (a block with BatchNorm: fewer networks of larger batches,
    :func:`pair_batching`), drawn CHUNK networks at a time
    (``progress(1)`` after each chunk). Configurations of one skeleton share their draws
    and products.

    >>> from derive.blocks.config import variance_config
    >>> [m] = measure_kernel([variance_config(activation="linear", block="F(x)")], depth=2,
    ...                      width=64, seeds=2, pairs=8)
    >>> [round(r, 1) for r in m.forward["rho"]]  # a linear map keeps the correlation
    [0.5, 0.5, 0.5]
    """
    seeds, depth = _count(seeds, "seeds", 1), _count(depth, "depth", 1)
    pairs, width = _count(pairs, "pairs", 1), _count(width, "width", 2)
    q_start, correlation = _positive(q0, "q0"), _rho0(rho0)
    configs = [numeric(config, width) for config in configs]
    plans = check_kernel_simulation(configs, depth=depth, width=width, seeds=seeds, pairs=pairs)
    batches = [(networks, 2 * inputs) for networks, inputs in plans]
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault((batches[i], skeleton(config.block.expanded(config))), []).append(i)
    sums: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in configs]
    for first in range(0, seeds, CHUNK):
        draws: dict[int, PairDraws] = {}
        for ((networks, inputs), _), members in groups.items():
            count = min(CHUNK, networks - first)
            if count <= 0:
                continue
            if inputs not in draws:
                draws[inputs] = PairDraws(depth, width, inputs, seed=seed, first=first,
                                          count=count)
            sample = draws[inputs]
            x = pair_inputs(sample, q_start, correlation)
            run_parts(configs, members, sample, x,
                      functools.partial(_pair_sums, pairs=inputs // 2), sums)
        if progress is not None:
            progress(1)
    return [_measurement(config, np.concatenate(f, axis=-1), np.concatenate(b, axis=-1),
                         networks * inputs * width)
            for config, (f, b), (networks, inputs) in zip(configs, sums, plans, strict=True)]


def derived_kernel(config: VarianceConfig, depth: int, q0: object = 1, rho0: object = "1/2",
                   width: int = 512) -> dict[str, dict[str, list[float]]]:
    """The profiles :func:`derive.kernel` derives for ``config``, as floats; an explicit
    ``sigma_w2`` enters as ``n sigma_w2`` with n = ``width``.

    >>> from derive.blocks.config import variance_config
    >>> p = derived_kernel(variance_config(init="he", block="F(x)"), 1, rho0=0)
    >>> round(p["forward"]["rho"][1], 6), p["backward"]["rho"][1]
    (0.31831, 1.0)
    """
    from derive.recursions.kernel import KernelAnalysis

    if config.sigma_w2 is not None:
        config = dataclasses.replace(config, sigma_w2=config.sigma_w2 * width / _n)
    analysis = KernelAnalysis(config, sympy.nsimplify(_positive(q0, "q0")),
                              sympy.nsimplify(_rho0(rho0)), _count(depth, "depth", 1))
    return analysis.profile()


def kernel_grid(inits: Sequence[str] = (), activations: Sequence[str] = (),
                norms: Sequence[str] = (), branches: Sequence[str] = (), *,
                blocks: Sequence[object] = (), values: dict[str, object] | None = None,
                **options: object) -> list[VarianceConfig]:
    """The configurations of init x activation x block x branch (as
    :func:`derive.simulation.networks.grid`, empty meaning every choice, and every
    preset and plain stack), each once: a block without a branch ``F`` is the same
    stack under either branch.

    >>> [c.label for c in kernel_grid(["he"], ["relu"], blocks=PLAIN_STACKS)]
    ['he/relu/F(x)/single', 'he/relu/F(x)/mlp', 'he/relu/phi(W(x))']
    """
    from derive.blocks.presets import PRESETS

    chosen = (*norms, *blocks) or (*PRESETS, *PLAIN_STACKS)
    configs = grid(inits, activations, norms=(), branches=branches, blocks=chosen,
                   values=values, **options)
    return _distinct(configs)


def _distinct(configs: Sequence[VarianceConfig]) -> list[VarianceConfig]:
    seen: set[str] = set()
    out = []
    for config in configs:
        if config.label not in seen:
            seen.add(config.label)
            out.append(config)
    return out


def default_kernel_grid(*, values: dict[str, object] | None = None,
                        **options: object) -> list[VarianceConfig]:
    """``derive check --kernel``'s default: the norm placements and the plain stacks under
    every init, activation and branch, the other presets under He initialization.

    >>> len(default_kernel_grid())
    215
    """
    from derive.blocks.presets import NORM_PRESETS, PRESETS

    others = [name for name in PRESETS if name not in NORM_PRESETS]
    # every parameter of kernel_grid named, so that ``options`` only reach its **options
    return _distinct(
        kernel_grid((), (), (), (), blocks=(*NORM_PRESETS, *PLAIN_STACKS), values=values,
                    **options)
        + kernel_grid(["he"], (), (), (), blocks=others, values=values, **options))


def _row(label: str, direction: str, k: int, want: float, got: float, stderr: float,
         tolerance: float) -> KernelRow:
    error = abs(got - want)
    error = error if math.isfinite(error) else math.inf
    return KernelRow(label, direction, k, float(want), float(got), float(stderr), error,
                     tolerance, error <= tolerance)


def compare_kernel(
    configs: Sequence[VarianceConfig], depth: int = 6, width: int = 512, seeds: int = 8, *,
    pairs: int = 16, q0: object = 1, rho0: object = "1/2", tolerance: float = 0.05,
    seed: int = 0, progress: Callable[[int], None] | None = None,
) -> list[KernelRow]:
    """Derived correlations against simulated networks at every block: per configuration
    forward rho_k for k = 1..K, then backward rho^grad_k for k = K-1..0 (rho^grad_K = 1
    on both sides). ``tolerance`` is absolute, on the correlation. ``progress(1)`` follows
    each derivation and each chunk of networks.

    >>> from derive.blocks.config import variance_config
    >>> rows = compare_kernel([variance_config(init="he", block="F(x)")], 2, 256, 4)
    >>> [(r.direction, r.k, round(r.derived, 4), r.ok) for r in rows]
    [('forward', 1, 0.609, True), ('forward', 2, 0.6839, True), ('backward', 1, 0.7084, True), ('backward', 0, 0.4723, True)]
    """  # noqa: E501
    configs = list(configs)
    depth, width = _count(depth, "depth", 1), _count(width, "width", 2)
    tolerance = _positive(tolerance, "tolerance")
    seeds, pairs = _count(seeds, "seeds", 1), _count(pairs, "pairs", 1)
    _positive(q0, "q0"), _rho0(rho0)
    check_kernel_simulation(configs, depth=depth, width=width, seeds=seeds, pairs=pairs)
    predictions = []
    for config in configs:
        predictions.append(derived_kernel(numeric(config, width), depth, q0, rho0, width))
        if progress is not None:
            progress(1)
    measured = measure_kernel(configs, depth=depth, width=width, seeds=seeds, pairs=pairs,
                              q0=q0, rho0=rho0, seed=seed, progress=progress)
    rows = []
    for config, want, got in zip(configs, predictions, measured, strict=True):
        label = config.label
        rows += [_row(label, "forward", k, want["forward"]["rho"][k], got.forward["rho"][k],
                      got.forward_error[k], tolerance) for k in range(1, depth + 1)]
        rows += [_row(label, "backward", k, want["backward"]["rho"][k],
                      got.backward["rho"][k], got.backward_error[k], tolerance)
                 for k in reversed(range(depth))]
    return rows

