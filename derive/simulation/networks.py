"""NumPy Monte Carlo of finite-width residual networks, checked against the derivation.

A network stacks K copies of a block, each with its own weights; the block's tree is
run by its primitives' own NumPy ops and hand-written backward passes
(:mod:`derive.blocks.primitives`). Measured: ``E[h_k^2]`` per unit, and
``E[(dL/dh_k)^2] / E[(dL/dh_K)^2]`` for ``L = <g, h_K>``, backpropagated by hand.
Each random array has its own stream (``SeedSequence(seed, spawn_key=(kind, key,
rows, cols, block, network))``), so configurations share their draws. BatchNorm's
statistics need a real batch: a block with BN runs its inputs in fewer networks of
larger batches (:func:`batching`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import sympy

from derive.blocks.config import VarianceConfig, variance_config
from derive.blocks.nodes import STD_X, Input, Node
from derive.blocks.primitives import LayerNorm, Weight
from derive.derivation.symbols import n as _n
from derive.errors import DeriveError
from derive.inputs.numbers import check_depth, exact, real, shown
from derive.inputs.parameters import given
from derive.simulation.resources import check_simulation

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.block import Block
    from derive.recursions.analysis import VarianceAnalysis

_INPUT, _UPSTREAM, _WEIGHT, _DROPOUT, _BIAS = range(5)
#: Networks drawn and run side by side (stacked along the first axis).
CHUNK = 4
#: A block with BatchNorm runs its inputs in at most this many networks per chunk.
BN_NETWORKS = 4
#: Configurations of one skeleton share their products up to this many input rows.
ROWS = 512

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


def _count(value: object, name: str, minimum: int) -> int:
    return check_depth(value, minimum=minimum, name=name)


def _positive(value: object, name: str) -> float:
    number = real(value, name)
    if not number > 0:
        raise DeriveError(f"{name} must be a finite number > 0, got {shown(value)}")
    return number


def _number(value: sympy.Expr, name: str) -> float:
    if not (isinstance(value, sympy.Expr) and value.is_number):
        raise DeriveError(f"{name} must be a number to simulate a network, got {value}")
    return float(value)


def numeric(config: VarianceConfig, width: int) -> VarianceConfig:
    """``config`` checked for simulation at ``width``: every value a number, every
    hidden width whole; or a DeriveError naming the value.

    >>> numeric(variance_config(init="he", branch="mlp", mlp_ratio=2), 64).label
    'he/relu/none/mlp'
    >>> numeric(variance_config(gamma="gamma"), 64)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: gamma must be a number to simulate a network, got gamma
    """
    width = _count(width, "width", 2)
    for name in ("mlp_ratio", "dropout", "gamma", "negative_slope", "sigma_b2"):
        _number(getattr(config, name), name)
    for name in ("sigma_w2", "fan_in_variance"):
        if getattr(config, name) is not None:
            _number(getattr(config, name), name)
    symbols = config.block.symbols
    if symbols:
        names = ", ".join(s.name for s in symbols)
        raise DeriveError(f"the block {config.block.text} must have numbers to simulate a "
                          f"network: give {names} a value (such as --set {symbols[0]}=1/2)")
    hidden = config.mlp_ratio * width
    if config.branch == "mlp" and not hidden.is_integer:
        raise DeriveError(f"mlp_ratio * width must be a whole number of hidden units, got {hidden}")
    return config


def batching(config: VarianceConfig, seeds: int, batch: int) -> tuple[int, int]:
    """(networks, inputs per network) for ``config``: as given, except that a block with
    BatchNorm runs the same number of inputs in at most BN_NETWORKS networks.

    >>> batching(variance_config(norm="bn-first"), 32, 16), batching(variance_config(), 32, 16)
    ((4, 128), (32, 16))
    """
    if not config.block.has_batchnorm or seeds <= BN_NETWORKS:
        return seeds, batch
    return BN_NETWORKS, seeds * batch // BN_NETWORKS


class Draws:
    """Standard normals (uniforms for dropout) of networks ``first .. first + count - 1``,
    each of ``depth`` blocks and ``width`` units seeing ``batch`` inputs; drawn on first use.

    >>> a, b = Draws(2, 8, 4, seed=1, count=3), Draws(2, 8, 4, seed=1, count=3)
    >>> a.weights(0, ("F", 0, "out"), 8, 8).shape, bool((a.upstream() == b.upstream()).all())
    ((3, 8, 8), True)
    """

    def __init__(
        self, depth: int, width: int, batch: int, *, seed: int = 0, first: int = 0, count: int = 1
    ) -> None:
        self.depth, self.width = _count(depth, "depth", 1), _count(width, "width", 2)
        self.batch, self.seed = _count(batch, "batch", 1), _count(seed, "seed", 0)
        self.networks = range(_count(first, "first", 0), first + _count(count, "count", 1))
        self._arrays: dict[tuple, np.ndarray] = {}

    def _draw(self, kind: int, key: tuple, shape: tuple[int, ...], block: int) -> np.ndarray:
        name = zlib.crc32(repr(key).encode())
        spawn = (kind, name, *shape, block)
        if spawn not in self._arrays:
            rngs = [np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(*spawn, s)))
                    for s in self.networks]
            draw = (lambda r: r.random(shape)) if kind == _DROPOUT else (
                lambda r: r.standard_normal(shape))
            self._arrays[spawn] = np.stack([draw(rng) for rng in rngs])
        return self._arrays[spawn]

    def weights(self, block: int, key: tuple, rows: int, cols: int) -> np.ndarray:
        """Standard normals (networks, rows, cols) of one weight matrix of one block."""
        return self._draw(_WEIGHT, key, (rows, cols), block)

    def uniforms(self, block: int, key: tuple, units: int) -> np.ndarray:
        """Uniforms (networks, batch, units) of one dropout mask of one block."""
        return self._draw(_DROPOUT, key, (self.batch, units), block)

    def biases(self, block: int, key: tuple, units: int) -> np.ndarray:
        """Standard normals (networks, 1, units) of the bias after one weight matrix of one
        block: a parameter, the same for every input of a network."""
        return self._draw(_BIAS, key, (1, units), block)

    def inputs(self) -> np.ndarray:
        """Standard normal inputs, shape (networks, batch, width)."""
        return self._draw(_INPUT, (), (self.batch, self.width), 0)

    def upstream(self) -> np.ndarray:
        """g of L = <g, h_K>, standard normal, shape (networks, batch, width)."""
        return self._draw(_UPSTREAM, (), (self.batch, self.width), 0)


class Network:
    """The numeric context of one block of a stack: its input, its draws, the config's
    numbers; the primitives' NumPy ops ask it for weights, masks and scalars."""

    def __init__(self, config: VarianceConfig, draws: Draws, block: int, x: np.ndarray) -> None:
        self.config = config
        self.draws, self.block, self.x = draws, block, x
        self.x_grad: np.ndarray | float = 0.0
        #: The weight matrix whose input and output gradient are kept (its key), and them.
        self.watched: tuple | None = None
        self.weight_input: np.ndarray | None = None
        self.weight_grad: np.ndarray | None = None
        self.gamma = float(config.gamma)
        self.slope = float(config.negative_slope)
        self.std_x = np.sqrt((x * x).mean(axis=(-2, -1), keepdims=True))
        #: Gradients carry a leading axis of path lengths (branches passed so far).
        self.by_length = False
        #: Heads of every attention layer: as the draws say (one unless they say).
        self.heads: int = int(getattr(draws, "heads", 1))

    def weight(self, key: tuple, fan_in: sympy.Expr, fan_out: sympy.Expr,
               variance: sympy.Expr) -> tuple[np.ndarray, float]:
        """The standard normals of the weight matrix ``key`` of this block, and the
        standard deviation that scales them to the given variance."""
        rows, cols = int(fan_in * self.draws.width), int(fan_out * self.draws.width)
        sigma = math.sqrt(float(variance.subs(_n, self.draws.width)))
        return self.draws.weights(self.block, key, rows, cols), sigma

    def bias(self, key: tuple, fan_out: sympy.Expr) -> np.ndarray | None:
        """The bias after the weight matrix ``key``, of variance ``sigma_b2`` per unit and
        shared by the inputs of each network; None when ``sigma_b2`` is 0 (nothing drawn)."""
        if self.config.sigma_b2 == 0:
            return None
        normals = self.draws.biases(self.block, key, int(fan_out * self.draws.width))
        return normals * math.sqrt(float(self.config.sigma_b2))

    def uniforms(self, key: tuple, shape: tuple[int, ...]) -> np.ndarray:
        """Uniforms of one dropout mask of this block."""
        return self.draws.uniforms(self.block, key, shape[-1])

    def scalar(self, value: sympy.Expr) -> np.ndarray | float:
        """A scalar of the block at initialization; ``std(x)`` is the measured std of the
        block's input (a constant: no gradient flows through it)."""
        if value.has(STD_X):
            return sympy.lambdify(STD_X, value, "numpy")(self.std_x)
        return float(value)


def skeleton(node: Node) -> tuple:
    """The shape of a tree that decides which weight matrices it multiplies by: trees of
    one skeleton share every product (their activations, scalars and norms may differ).

    >>> from derive.blocks.block import block
    >>> he, tanh = variance_config(init="he"), variance_config(activation="tanh")
    >>> skeleton(block("pre").expanded(he)) == skeleton(block("pre").expanded(tanh))
    True
    """
    head: tuple = (type(node).__name__,)
    if isinstance(node, Weight):
        head = (*head, node.key, node.fan_in, node.fan_out)
    return (*head, tuple(skeleton(child) for child in node.children))


def _as_weights(nodes: Sequence[Node]) -> list[Weight] | None:
    """The nodes of one skeleton as weight matrices, or None when they are not."""
    weights = [node for node in nodes if isinstance(node, Weight)]
    return weights if weights and len(weights) == len(nodes) else None


def _keep_weight_inputs(nodes: Sequence[Weight], inputs: Sequence[list[np.ndarray]],
                        nets: Sequence[Network]) -> None:
    """Keep the input of each network's watched weight matrix."""
    for node, values, net in zip(nodes, inputs, nets, strict=True):
        if net.watched == node.key:
            net.weight_input = values[0]


def _shared_product(nodes: Sequence[Weight], inputs: Sequence[list[np.ndarray]],
                    nets: Sequence[Network]) -> tuple[list[np.ndarray], tuple]:
    """One weight matrix of several configurations: their inputs side by side times the
    matrix's shared normals, each part scaled by its configuration's sigma; and the
    cache the backward pass reads."""
    drawn = [net.weight(node.key, node.fan_in, node.fan_out, node.variance(net.config))
             for node, net in zip(nodes, nets, strict=True)]
    normals, sigmas = drawn[0][0], [sigma for _, sigma in drawn]
    stacked = np.concatenate([values[0] for values in inputs], axis=1) @ normals
    outs = [part * sigma for part, sigma in
            zip(np.split(stacked, len(nodes), axis=1), sigmas, strict=True)]
    biases = [net.bias(node.key, node.fan_out) for node, net in zip(nodes, nets, strict=True)]
    outs = [out if bias is None else out + bias for out, bias in zip(outs, biases, strict=True)]
    return outs, ("shared", normals, sigmas)


def _forward(nodes: Sequence[Node], nets: Sequence[Network]) -> tuple[list[np.ndarray], tuple]:
    """Run one node of several configurations' trees (one skeleton) on their own inputs; a
    weight matrix multiplies all of them in one product."""
    children = [_forward([node.children[i] for node in nodes], nets)
                for i in range(len(nodes[0].children))]
    inputs = [[values[j] for values, _ in children] for j in range(len(nodes))]
    traces = [t for _, t in children]
    weights = _as_weights(nodes)
    if weights is not None:
        _keep_weight_inputs(weights, inputs, nets)
        if len(weights) > 1:
            outs, shared = _shared_product(weights, inputs, nets)
            return outs, (nodes, shared, traces)
    done = [node.forward_np(values, net) for node, values, net in zip(nodes, inputs, nets,
                                                                      strict=True)]
    return [out for out, _ in done], (nodes, [cache for _, cache in done], traces)


def _is_branch_output(node: Node) -> bool:
    """Whether ``node`` is the last weight matrix of a branch F: every path through the
    branch passes it once."""
    return isinstance(node, Weight) and node.key[0] == "F" and node.key[-1] == "out"


def _backward(trace: tuple, grads: Sequence[np.ndarray], nets: Sequence[Network]) -> None:
    nodes, cache, children = trace
    if nets[0].by_length and _is_branch_output(nodes[0]):
        # gradients by path length (leading axis): the branch adds one to the length
        grads = [np.concatenate([np.zeros_like(g[:1]), g[:-1]]) for g in grads]
    if isinstance(nodes[0], Weight):
        for node, g, net in zip(nodes, grads, nets, strict=True):
            if net.watched == node.key:
                net.weight_grad = g
    if isinstance(cache, tuple) and cache[0] == "shared":
        _, normals, sigmas = cache
        scaled = np.concatenate([g * s for g, s in zip(grads, sigmas, strict=True)], axis=1)
        parts = np.split(scaled @ normals.swapaxes(-1, -2), len(nodes), axis=1)
        per_node = [[part] for part in parts]
    else:
        per_node = [node.backward_np(g, c, net)
                    for node, g, c, net in zip(nodes, grads, cache, nets, strict=True)]
    for i, child in enumerate(children):
        _backward(child, [grads_[i] for grads_ in per_node], nets)


Trace = tuple[list[Network], tuple]


def _forward_pass(configs: Sequence[VarianceConfig], draws: Draws, x: np.ndarray, watch: bool,
                  forward: np.ndarray) -> tuple[list[list[np.ndarray]], list[Trace]]:
    """Run the blocks 1..K of every configuration: per configuration h_0..h_K, per block
    its networks and trace (for the backward pass); ``forward[i, k]`` gets the sum of
    h_k^2. With ``watch``, each network keeps the input of the block's last weight matrix."""
    trees = [c.block.expanded(c) for c in configs]
    watched = [c.block.last_weight(c) if watch else None for c in configs]
    forward[:, 0] = np.sum(x * x)
    hs, traces = [[x] for _ in configs], []
    for block in range(draws.depth):
        nets = [Network(c, draws, block, h[-1]) for c, h in zip(configs, hs, strict=True)]
        for net, target in zip(nets, watched, strict=True):
            net.watched = None if target is None else target.key
        outs, trace = _forward(trees, nets)
        traces.append((nets, trace))
        for i, out in enumerate(outs):
            hs[i].append(out)
            forward[i, block + 1] = np.sum(out * out)
    return hs, traces


def _upstream(configs: Sequence[VarianceConfig], draws: Draws, hs: list[list[np.ndarray]],
              final_norm: bool) -> list[np.ndarray]:
    """dL/dh_K per configuration: the draws' g of L = <g, h_K>, or with ``final_norm`` the
    gradient of L = <g, LN(h_K)>."""
    upstream = draws.upstream()
    if not final_norm:
        return [upstream] * len(configs)
    final = LayerNorm(Input())
    grads = []
    for config, h in zip(configs, hs, strict=True):
        net = Network(config, draws, draws.depth, h[-1])
        _, cache = final.forward_np([h[-1]], net)
        grads.append(final.backward_np(upstream, cache, net)[0])
    return grads


def _backward_pass(traces: list[Trace], grads: list[np.ndarray], lengths: int,
                   backward: np.ndarray, weights: np.ndarray) -> list[list[np.ndarray]]:
    """Backpropagate from dL/dh_K (``grads``) through the blocks K..1: per configuration
    the gradients dL/dh_K..dL/dh_0; ``backward[i, k]`` gets the sum of (dL/dh_k)^2 and
    ``weights[i, k]`` block k's watched matrix's sum of mean(g^2) mean(a^2). With
    ``lengths``, every gradient carries a leading axis of path lengths."""
    history = [[g] for g in grads]
    for block in reversed(range(len(traces))):
        nets, trace = traces[block]
        for net in nets:
            net.x_grad = np.zeros_like(net.x)
            net.by_length = bool(lengths)
        _backward(trace, grads, nets)
        grads = [np.asarray(net.x_grad) for net in nets]
        for i, g in enumerate(grads):
            history[i].append(g)
            backward[i, block] = np.sum(g * g)
        for i, net in enumerate(nets):
            if net.weight_grad is not None and net.weight_input is not None:
                a2 = (net.weight_input**2).mean(axis=-1)
                g2 = (net.weight_grad**2).mean(axis=-1)
                weights[i, block + 1] = np.sum(a2 * g2)
    return history


def _run(configs: Sequence[VarianceConfig], draws: Draws, x: np.ndarray,
         record: list | None = None, *, watch: bool = False, final_norm: bool = False,
         lengths: int = 0) -> list[tuple[np.ndarray, ...]]:
    """Forward and hand-written backward passes of stacks of one skeleton, block by block.
    Returns per configuration the sums of h_k^2 and of (dL/dh_k)^2, k = 0..K; with
    ``watch``, also per block the sum over inputs of mean(g^2) mean(a^2) for the last
    weight matrix (g its output gradient, a its input); ``final_norm``: L = <g, LN(h_K)>.
    ``lengths`` > 0: the gradient is split by the number of branches its paths pass
    (0 .. lengths - 1), and the sums of (dL/dh_0)^2 per length come last."""
    depth, count = draws.depth, len(configs)
    forward, backward = np.zeros((count, depth + 1)), np.zeros((count, depth + 1))
    weights = np.zeros((count, depth + 1))
    hs, traces = _forward_pass(configs, draws, x, watch, forward)
    grads = _upstream(configs, draws, hs, final_norm)
    for i, g in enumerate(grads):
        backward[i, depth] = np.sum(g * g)
    if lengths:  # every gradient starts at length 0
        grads = [np.concatenate([g[None], np.zeros((lengths - 1, *g.shape))]) for g in grads]
    history = _backward_pass(traces, grads, lengths, backward, weights)
    if record is not None:
        record.extend((h, g[::-1]) for h, g in zip(hs, history, strict=True))
    if lengths:
        at_input = [g[-1] for g in history]  # dL/dh_0, by path length
        by_length = [np.sum(g * g, axis=tuple(range(1, g.ndim))) for g in at_input]
        return list(zip(forward, backward, by_length, strict=True))
    if watch:
        return list(zip(forward, backward, weights, strict=True))
    return list(zip(forward, backward, strict=True))


def run_parts(configs: Sequence[VarianceConfig], members: Sequence[int], draws: Draws,
              x: np.ndarray, reduce: Callable[[Sequence[np.ndarray]], np.ndarray],
              sums: Sequence[tuple[list[np.ndarray], list[np.ndarray]]]) -> None:
    """Run the configurations ``members`` (indices into ``configs``, one skeleton) on the
    same draws and inputs ``x``, at most ROWS input rows at a time, and append what
    ``reduce`` makes of each one's forward and backward values to its ``sums``."""
    size = max(1, ROWS // x.shape[-2])
    for start in range(0, len(members), size):
        part = members[start:start + size]
        record: list = []
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            _run([configs[i] for i in part], draws, x, record)
        for i, (hs, grads) in zip(part, record, strict=True):
            sums[i][0].append(reduce(hs))
            sums[i][1].append(reduce(grads))
        del record


def propagate(config: VarianceConfig, draws: Draws, q0: float = 1.0,
              inputs: np.ndarray | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Activations h_0..h_K and gradients dL/dh_0..dL/dh_K of ``L = <g, h_K>``, for
    inputs ``sqrt(q0)`` times the draws' normals (or ``inputs``).

    >>> hs, grads = propagate(variance_config(init="he"), Draws(3, 8, 2, count=2))
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

    >>> [(f, b)] = measure([variance_config(init="he")], depth=2, width=128, seeds=2, batch=16)
    >>> [round(v) for v in f], [round(v) for v in b]
    ([1, 2, 4], [4, 2, 1])
    """
    seeds, q0 = _count(seeds, "seeds", 1), _positive(q0, "q0")
    depth, batch = _count(depth, "depth", 1), _count(batch, "batch", 1)
    configs = [numeric(config, width) for config in configs]
    plans = [batching(c, seeds, batch) for c in configs]
    check_simulation(configs, plans, depth=depth, width=width, seeds=seeds, batch=batch,
                     chunk=CHUNK, rows=ROWS, skeleton=skeleton)
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault((plans[i], skeleton(config.block.expanded(config))), []).append(i)
    totals = [(np.zeros(depth + 1), np.zeros(depth + 1)) for _ in configs]
    for first in range(0, seeds, CHUNK):
        draws: dict[int, Draws] = {}
        for ((networks, inputs), _), members in groups.items():
            count = min(CHUNK, networks - first)
            if count <= 0:
                continue
            if inputs not in draws:
                draws[inputs] = Draws(depth, width, inputs, seed=seed, first=first, count=count)
            sample = draws[inputs]
            x = sample.inputs() * math.sqrt(q0)
            size = max(1, ROWS // inputs)
            for start in range(0, len(members), size):
                part = members[start:start + size]
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    results = _run([configs[i] for i in part], sample, x)
                for i, (f, b) in zip(part, results, strict=True):
                    totals[i][0][:] += f
                    totals[i][1][:] += b
        if progress is not None:
            progress(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(f / (networks * inputs * width), b / b[-1])
                for (f, b), (networks, inputs) in zip(totals, plans, strict=True)]


def measure_weights(config: VarianceConfig, *, depth: int, width: int, seeds: int,
                    batch: int, q0: float = 1.0, seed: int = 0, final_norm: bool = False
                    ) -> np.ndarray:
    """Measured w_k = E[(dL/dW)^2] per entry of block k's last weight matrix, k = 1..K, per
    input (mean over networks and inputs of mean(g^2) mean(a^2)); ``final_norm``: a final
    LayerNorm after the last block.

    >>> w = measure_weights(variance_config(init="he", norm="post"), depth=2, width=256,
    ...                     seeds=2, batch=16)
    >>> [round(float(v), 1) for v in w]
    [0.2, 0.2]
    """
    total, inputs = _summed(config, depth, width, seeds, batch, q0, seed, watch=True,
                            final_norm=final_norm)
    return total[1:] / inputs


def _summed(config: VarianceConfig, depth: int, width: int, seeds: int, batch: int,
            q0: float, seed: int, *, watch: bool = False, final_norm: bool = False,
            lengths: int = 0) -> tuple[np.ndarray, int]:
    """The extra output of :func:`_run` (``watch`` or ``lengths``) for one configuration,
    summed over its networks drawn CHUNK at a time, and how many inputs they saw."""
    seeds, q0 = _count(seeds, "seeds", 1), _positive(q0, "q0")
    depth, batch = _count(depth, "depth", 1), _count(batch, "batch", 1)
    config = numeric(config, width)
    networks, inputs = batching(config, seeds, batch)
    check_simulation([config], [(networks, inputs)], depth=depth, width=width, seeds=seeds,
                     batch=batch, chunk=CHUNK, rows=ROWS, skeleton=skeleton, lengths=bool(lengths))
    total: np.ndarray | float = 0.0
    for first in range(0, networks, CHUNK):
        sample = Draws(depth, width, inputs, seed=seed, first=first,
                       count=min(CHUNK, networks - first))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            [(_, _, extra)] = _run([config], sample, sample.inputs() * math.sqrt(q0),
                                   watch=watch, final_norm=final_norm, lengths=lengths)
        total = total + extra
    return np.asarray(total), networks * inputs


def measure_lengths(config: VarianceConfig, *, depth: int, width: int, seeds: int,
                    batch: int, q0: float = 1.0, seed: int = 0) -> np.ndarray:
    """Measured share of E[(dL/dx)^2] carried by the paths through L branches, L = 0, 1,
    ...: the backward pass keeps one gradient per length (each branch F moves its
    gradient one length up), and the share is the mean of its square over the sum.

    >>> s = measure_lengths(variance_config(init="he"), depth=2, width=512, seeds=4, batch=64)
    >>> [round(float(v), 2) for v in s]  # binomial(2, 1/2): 1/4, 1/2, 1/4
    [0.25, 0.5, 0.25]
    """
    from derive.blocks.primitives import Branch

    branches = sum(1 for node in config.block.tree.walk() if isinstance(node, Branch))
    total, _ = _summed(config, depth, width, seeds, batch, q0, seed,
                       lengths=_count(depth, "depth", 1) * branches + 1)
    while len(total) > 1 and total[-1] == 0:
        total = total[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / total.sum()


def simulate(
    init: str = "xavier", activation: str = "relu", norm: str = "none", branch: str = "single",
    *, depth: int = 10, width: int = 512, seeds: int = 4, batch: int = 64, q0: float = 1,
    mlp_ratio: object = 1, dropout: object = 0, gamma: object = 1, sigma_w2: object = None,
    negative_slope: object = sympy.Rational(1, 100), sigma_b2: object = 0,
    fan_in_variance: object = None, seed: int = 0, block: object = None,
    values: dict[str, object] | None = None,
) -> Simulation:
    """Simulate ``seeds`` finite residual networks and measure their variance profiles.

    The block is ``norm`` unless ``block`` is given (a preset, an expression or a
    Block); ``values`` gives its symbols numbers (a preset has its own).

    He initialization with ReLU doubles E[h_k^2] per block (UDL 11.3):

    >>> sim = simulate("he", "relu", depth=3, width=256, seeds=2, batch=32)
    >>> [round(v) for v in sim.forward], [round(v) for v in sim.backward]
    ([1, 2, 4, 8], [8, 4, 2, 1])
    >>> simulate(gamma="gamma")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: gamma must be a number to simulate a network, got gamma
    """
    chosen = checkable(norm if block is None else block, values)
    config = variance_config(init, activation, norm, branch, mlp_ratio=mlp_ratio,
                             dropout=dropout, gamma=gamma, sigma_w2=sigma_w2,
                             negative_slope=negative_slope, sigma_b2=sigma_b2,
                             fan_in_variance=fan_in_variance, block=chosen)
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

    >>> derived(variance_config(init="he", norm="pre"), 3)
    ([1.0, 2.0, 3.0, 4.0], [4.0, 2.0, 1.3333333333333333, 1.0])
    """
    analysis = _analysis(config, width)
    q0_exact = sympy.nsimplify(q0)
    return ([float(v) for v in analysis.forward.profile(depth, q0=q0_exact)],
            [float(v) for v in analysis.backward.profile(depth, q0=q0_exact)])


def checkable(spec: object, values: dict[str, object] | None = None) -> Block:
    """The block of ``spec`` with numbers for its symbols, as the simulation needs: the
    given ``values``, else a preset's own check values.

    >>> checkable("skipinit").text
    'x + F(x)/2'
    """
    from derive.blocks.block import block
    from derive.blocks.presets import ALL_PRESETS

    chosen = block(spec)
    numbers: dict[str, object] = (dict(ALL_PRESETS[chosen.name].check)
                                  if chosen.name in ALL_PRESETS else {})
    numbers.update(values or {})
    names = {s.name for s in chosen.symbols}
    return chosen.substituted({k: exact(v, k) for k, v in numbers.items() if k in names})


def grid(inits: Sequence[str] = (), activations: Sequence[str] = (), norms: Sequence[str] = (),
         branches: Sequence[str] = (), *, blocks: Sequence[object] = (),
         values: dict[str, object] | None = None, **options: object) -> list[VarianceConfig]:
    """Every configuration of init x activation x block x branch; the blocks are ``norms``
    and ``blocks`` (empty: every choice, the activations of ``GRID_ACTIVATIONS``, and
    every preset).

    >>> len(grid()), grid(["he"], ["relu"], ["pre"])[1].label
    (330, 'he/relu/pre/mlp')
    """
    from derive.blocks.presets import PRESETS
    from derive.inputs.choices import BRANCHES, GRID_ACTIVATIONS, INITS

    specs = [checkable(spec, values) for spec in (*norms, *blocks) or PRESETS]
    options = given(options)
    return [
        variance_config(init=i, activation=a, branch=b, block=m, **options)  # type: ignore[arg-type]
        for i in inits or INITS for a in activations or GRID_ACTIVATIONS
        for m in specs for b in branches or BRANCHES
    ]


def default_grid(*, values: dict[str, object] | None = None,
                 **options: object) -> list[VarianceConfig]:
    """``derive check``'s default: the norm placements under every init, activation and
    branch, and the other presets under He initialization (whose variance they target).

    >>> len(default_grid())
    170
    """
    from derive.blocks.presets import NORM_PRESETS, PRESETS

    others = [name for name in PRESETS if name not in NORM_PRESETS]
    # every parameter of grid named, so that ``options`` only reach its **options
    return (grid(inits=(), activations=(), norms=NORM_PRESETS, branches=(), blocks=(),
                 values=values, **options)
            + grid(inits=["he"], activations=(), norms=(), branches=(), blocks=others,
                   values=values, **options))


def _row(label: str, direction: str, k: int, want: float, got: float, tol: float) -> CheckRow:
    with np.errstate(invalid="ignore", divide="ignore"):
        error = float(abs(got - want) / abs(want) if want != 0 else abs(got - want))
    error = error if math.isfinite(error) else math.inf
    return CheckRow(label, direction, k, float(want), float(got), error, tol, error <= tol)


def compare(
    configs: Sequence[VarianceConfig], depth: int = 6, width: int = 512, seeds: int = 32, *,
    batch: int = 16, q0: float = 1.0, tolerance: float = 0.1, seed: int = 0,
    predict: Prediction | None = None, progress: Callable[[int], None] | None = None,
    weights: bool = False, final_norm: bool = False, lengths: bool = False,
) -> list[CheckRow]:
    """Derived profiles against simulated networks at every block.

    Per configuration: forward q_k for k = 1..K, then backward d_k / d_K for
    k = K-1..0, so each direction ends with its final-depth row; with ``weights``,
    then E[(dL/dW)^2] of each block's last matrix for k = 1..K (behind a final
    LayerNorm with ``final_norm``); with ``lengths``, then the share of
    E[(dL/dx)^2] carried by the paths through L branches, ``k`` = L. ``predict``
    defaults to :func:`derived`; ``progress(1)`` follows each derivation, each
    chunk of networks and each configuration's weight and length measurement
    (``len(configs) * (1 + weights + lengths) + ceil(seeds / CHUNK)`` calls).

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
        if weights:
            rows += _weight_rows(c, depth, width, seeds, batch, q0, seed, tolerance, final_norm)
            if progress is not None:
                progress(1)
        if lengths:
            rows += _length_rows(c, depth, width, seeds, batch, q0, seed, tolerance)
            if progress is not None:
                progress(1)
    return rows


def _analysis(config: VarianceConfig, width: int, final_norm: bool = False) -> VarianceAnalysis:
    """The variance analysis of ``config`` with an explicit sigma_w2 made exact in n."""
    from derive.recursions.analysis import one_point, variance

    c = config
    sigma_w2 = None if c.sigma_w2 is None else c.sigma_w2 * width / _n
    return one_point(variance(c.init, c.activation, branch=c.branch, mlp_ratio=c.mlp_ratio,
                              dropout=c.dropout, gamma=c.gamma, sigma_w2=sigma_w2,
                              negative_slope=c.negative_slope, sigma_b2=c.sigma_b2,
                              fan_in_variance=c.fan_in_variance, block=c.block,
                              final_norm=final_norm))


def _length_rows(config: VarianceConfig, depth: int, width: int, seeds: int, batch: int,
                 q0: float, seed: int, tolerance: float) -> list[CheckRow]:
    """The derived share of E[(dL/dx)^2] of each path length against its measurement
    (``k`` is the length); lengths whose derived share is zero are left out."""
    from derive.pathsums.by_length import PathGradients

    want = PathGradients(depth, "x", _analysis(config, width), sympy.nsimplify(q0),
                         exact_mode=False).gradient_shares
    got = measure_lengths(config, depth=depth, width=width, seeds=seeds, batch=batch, q0=q0,
                          seed=seed)
    got = np.concatenate([got, np.zeros(max(0, len(want) - len(got)))])
    return [_row(config.label, "lengths", length, float(share), float(got[length]), tolerance)
            for length, share in enumerate(want) if share > 0]


def _weight_rows(config: VarianceConfig, depth: int, width: int, seeds: int, batch: int,
                 q0: float, seed: int, tolerance: float, final_norm: bool) -> list[CheckRow]:
    c = config
    analysis = _analysis(c, width, final_norm)
    if c.block.last_weight(c) is None:
        return []
    want = analysis.weights.profile(depth, sympy.nsimplify(q0))
    got = measure_weights(c, depth=depth, width=width, seeds=seeds, batch=batch, q0=q0,
                          seed=seed, final_norm=final_norm)
    return [_row(c.label, "weights", k, float(want[k - 1]), float(got[k - 1]), tolerance)
            for k in range(1, depth + 1)]

