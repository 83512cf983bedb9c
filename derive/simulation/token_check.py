"""The tokens of one sequence through finite transformer stacks: the measured token kernel
against the derived one.

Each network sees ONE sequence of n tokens (its batch axis, which attention mixes),
x_i = sqrt(q0) (sqrt(rho0) z + sqrt(1 - rho0) z_i) with z and z_i standard normal: per
unit E[x_i^2] = q0 and E[x_i x_a] = rho0 q0 (i != a). Backward, every token reads the same
readout vector g (L = sum_i <g, h_K(i)>), so the gradients of all tokens are equal at the
output, as the two inputs of ``derive check --kernel`` are. Attention runs with ``heads``
heads of width/heads units (the :class:`derive.simulation.networks.Network` carries them).

Measured per layer k, as means over units, tokens (or pairs of different tokens) and
networks: q_k = E[h_k(i)^2], c_k = E[h_k(i) h_k(a)] and rho_k = c_k / q_k; d_k = E[(dL/dh_k(i))^2]
over d_K and rho^grad_k = E[dL/dh_k(i) dL/dh_k(a)] / d_k; each with the jackknife standard error
over the networks. :func:`compare_tokens` sets them against
:meth:`derive.recursions.kernel.KernelAnalysis.profile` (the mean-field model of
:mod:`derive.blocks.attention`): correlations within an absolute tolerance, q and d within
a relative one, and :func:`findings` names each quantity that disagrees, by how much, and
whether the disagreement is beyond the measurement's own noise.

>>> from derive.blocks.config import variance_config
>>> [m] = measure_tokens([variance_config(block="Attn(x)", tokens=4, attention="uniform")],
...                      depth=1, width=64, heads=1, seeds=4)
>>> [round(r, 1) for r in m.forward["rho"]]  # uniform attention: every token is the mean
[0.5, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from derive.blocks.config import VarianceConfig
from derive.errors import DeriveError
from derive.inputs.numbers import exact, shown
from derive.simulation.kernel_check import PairDraws, derived_kernel
from derive.simulation.networks import (
    _INPUT,
    _UPSTREAM,
    ROWS,
    _count,
    _positive,
    numeric,
    run_parts,
    skeleton,
)
from derive.simulation.resources import check_simulation

#: ``derive check``'s sizes for blocks with attention: layers, units, heads (d_head =
#: width/heads = 64), networks (one sequence each), the absolute tolerance on a
#: correlation and the relative one on q_k and d_k/d_K.
DEFAULTS = {"depth": 6, "width": 256, "heads": 4, "seeds": 64, "tolerance": 0.05,
            "relative": 0.1}
#: Networks drawn and run side by side: a sequence is only a few rows, so more networks
#: share each step of the interpreter than in the other checks.
TOKEN_CHUNK = 16
#: The quantities compared, in the order of the rows of each configuration.
QUANTITIES = ("q_k", "rho_k", "d_k/d_K", "rho^grad_k")
#: Which of them are correlations (an absolute tolerance); the others are relative.
CORRELATIONS = frozenset({"rho_k", "rho^grad_k"})
#: A difference of more than this many standard errors is not the measurement's noise.
NOISE = 3.0


@dataclass(frozen=True)
class TokenMeasurement:
    """The measured token kernel of one configuration over k = 0..K: ``forward`` (``q``,
    ``c``, ``rho``), ``backward`` (``d``, ``g``, ``rho``; second moments over d at the
    output), and the jackknife standard error of each (``forward_error``,
    ``backward_error``, the same keys)."""

    config: VarianceConfig
    heads: int
    forward: dict[str, list[float]]
    backward: dict[str, list[float]]
    forward_error: dict[str, list[float]]
    backward_error: dict[str, list[float]]


@dataclass(frozen=True)
class TokenRow:
    """A derived value against its measurement at layer ``k``: ``quantity`` one of
    :data:`QUANTITIES`; ``error`` = |measured - derived|, over |derived| where ``relative``;
    ``stderr`` the measurement's standard error (in the value's units); ``ok`` = error <=
    tolerance."""

    label: str
    quantity: str
    k: int
    derived: float
    measured: float
    stderr: float
    error: float
    tolerance: float
    relative: bool
    ok: bool

    @property
    def deviations(self) -> float:
        """|measured - derived| in standard errors of the measurement (inf without one)."""
        gap = abs(self.measured - self.derived)
        if not math.isfinite(gap):
            return math.inf
        if not self.stderr > 0:
            return math.inf if gap > 0 else 0.0
        return gap / self.stderr


@dataclass(frozen=True)
class Finding:
    """A quantity of one configuration outside its tolerance at some layer: ``worst`` its
    row farthest outside (by error over tolerance), ``layers`` the k where it is outside,
    ``beyond_noise`` whether that row's difference exceeds NOISE standard errors (a
    disagreement of the model, not of too few networks)."""

    label: str
    quantity: str
    worst: TokenRow
    layers: tuple[int, ...]
    beyond_noise: bool


class TokenDraws(PairDraws):
    """The float32 draws of :class:`derive.simulation.kernel_check.PairDraws` for networks
    that each see one sequence of ``tokens`` tokens through attention of ``heads`` heads:
    the part z every token shares and the readout vector g every token reads.

    >>> d = TokenDraws(2, 8, 3, heads=2, count=2)
    >>> g = d.upstream()
    >>> g.shape, bool((g == g[:, :1]).all()), d.shared().shape, d.heads
    ((2, 3, 8), True, (2, 1, 8), 2)
    """

    def __init__(self, depth: int, width: int, tokens: int, *, heads: int = 1, seed: int = 0,
                 first: int = 0, count: int = 1) -> None:
        super().__init__(depth, width, tokens, seed=seed, first=first, count=count)
        #: Heads of every attention layer (read by the networks these draws feed).
        self.heads = heads

    def shared(self) -> np.ndarray:
        """z, the normals (networks, 1, width) every token of a sequence shares."""
        return self._draw(_INPUT, ("shared",), (1, self.width), 0)

    def upstream(self) -> np.ndarray:
        """g of L, one standard normal vector per network, the same for every token."""
        one = self._draw(_UPSTREAM, ("shared",), (1, self.width), 0)
        return np.repeat(one, self.batch, axis=1)


def token_inputs(draws: TokenDraws, q0: float, rho0: float) -> np.ndarray:
    """The sequence of each network: x_i = sqrt(q0) (sqrt(rho0) z + sqrt(1 - rho0) z_i).

    >>> x = token_inputs(TokenDraws(1, 4096, 4, count=2), 2.0, 0.25)
    >>> round(float((x * x).mean()), 1), round(float((x[:, 0] * x[:, 1]).mean()), 1)
    (2.0, 0.5)
    """
    z, own = draws.shared(), draws.inputs()
    return math.sqrt(q0) * (math.sqrt(rho0) * z + math.sqrt(1.0 - rho0) * own)


def _token_sums(values: Sequence[np.ndarray]) -> np.ndarray:
    """(2, K+1, networks): per layer the sums over units and tokens of h_i^2, and over units
    and ordered pairs of different tokens of h_i h_a."""
    out = np.empty((2, len(values), values[0].shape[0]))
    for k, v in enumerate(values):
        v = v.astype(np.float64)
        squares = (v * v).sum(axis=(1, 2))
        total = v.sum(axis=1)
        out[0, k] = squares
        out[1, k] = (total * total).sum(axis=1) - squares
    return out


def _jackknife(sums: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The jackknife standard error over the networks (last axis of ``sums``) of
    ``statistic`` of the summed arrays."""
    count = sums.shape[-1]
    if count < 2:
        return np.full(statistic(sums.sum(axis=-1)).shape, math.nan)
    left_out = sums.sum(axis=-1, keepdims=True) - sums
    values = statistic(np.moveaxis(left_out, -1, 0))  # (networks, ...)
    spread = values - values.mean(axis=0)
    return np.sqrt((count - 1) / count * (spread * spread).sum(axis=0))


def _measurement(config: VarianceConfig, heads: int, forward: np.ndarray, backward: np.ndarray,
                 tokens: int, width: int) -> TokenMeasurement:
    """The profiles from the per-network sums (2, K+1, networks)."""
    networks = forward.shape[-1]
    pairs = tokens - 1

    def q(t: np.ndarray) -> np.ndarray:
        return t[..., 0, :] / (tokens * width * networks)

    def c(t: np.ndarray) -> np.ndarray:
        return t[..., 1, :] / (tokens * pairs * width * networks)

    def rho(t: np.ndarray) -> np.ndarray:
        return t[..., 1, :] / t[..., 0, :] / pairs

    def d(t: np.ndarray) -> np.ndarray:
        return t[..., 0, :] / t[..., 0, -1:]

    def g(t: np.ndarray) -> np.ndarray:
        return t[..., 1, :] / t[..., 0, -1:] / pairs

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        f_total, b_total = forward.sum(axis=-1), backward.sum(axis=-1)
        fwd = {"q": q(f_total), "c": c(f_total), "rho": rho(f_total)}
        bwd = {"d": d(b_total), "g": g(b_total), "rho": rho(b_total)}
        scale = networks / (networks - 1) if networks > 1 else 1.0
        # q and c are means: a left-out network's mean is over networks - 1
        f_err = {"q": _jackknife(forward, q) * scale, "c": _jackknife(forward, c) * scale,
                 "rho": _jackknife(forward, rho)}
        b_err = {"d": _jackknife(backward, d), "g": _jackknife(backward, g),
                 "rho": _jackknife(backward, rho)}
    return TokenMeasurement(config, heads,
                            {k: v.tolist() for k, v in fwd.items()},
                            {k: v.tolist() for k, v in bwd.items()},
                            {k: v.tolist() for k, v in f_err.items()},
                            {k: v.tolist() for k, v in b_err.items()})


def token_rho0(value: object) -> float:
    """The tokens' correlation rho0 as a float in [0, 1] (the inputs share sqrt(rho0) z),
    or a DeriveError naming it.

    >>> token_rho0("1/2")
    0.5
    >>> token_rho0(2)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: rho0 must be a number in [0, 1] for the tokens of a sequence (x_i = sqrt(q0) (sqrt(rho0) z + sqrt(1 - rho0) z_i)), got 2
    """  # noqa: E501
    correlation = exact(value, "rho0", symbol=False)
    if not (correlation.is_number and 0 <= correlation <= 1):
        raise DeriveError("rho0 must be a number in [0, 1] for the tokens of a sequence "
                          "(x_i = sqrt(q0) (sqrt(rho0) z + sqrt(1 - rho0) z_i)), got "
                          f"{shown(value)}")
    return float(correlation)


def _tokens(config: VarianceConfig) -> int:
    """The whole number of tokens of ``config``'s sequences, at least two."""
    n = config.tokens
    if not (n.is_Integer and int(n) >= 2):
        raise DeriveError(f"--tokens must be a whole number >= 2 to compare pairs of tokens of "
                          f"one sequence, got {n}")
    return int(n)


def token_configs(configs: Sequence[VarianceConfig], width: int) -> list[VarianceConfig]:
    """``configs`` checked for the token simulation: numbers only (:func:`numeric`), a
    block with ``Attn``, no BatchNorm (the batch axis holds the tokens), at least two
    tokens; else a DeriveError naming what.

    >>> from derive.blocks.config import variance_config
    >>> token_configs([variance_config(block="x + F(x)")], 64)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: the token check simulates blocks with Attn(.); x + F(x) has none: derive check --kernel compares two inputs
    """  # noqa: E501
    out = []
    for config in configs:
        config = numeric(config, width)
        if not config.block.has_attention:
            raise DeriveError(f"the token check simulates blocks with Attn(.); "
                              f"{config.block.text} has none: derive check --kernel compares "
                              "two inputs")
        if config.block.has_batchnorm:
            raise DeriveError(f"{config.block.text}: BatchNorm normalizes over a batch of "
                              "independent inputs, but here a network's batch is the tokens "
                              "of one sequence; the token check takes no BN(.)")
        _tokens(config)
        out.append(config)
    return out


def check_heads(width: int, heads: int) -> int:
    """``heads`` if it divides ``width``, else a DeriveError in one line naming both.

    >>> check_heads(256, 3)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: heads 3 does not divide the width 256: each head takes width/heads units
    """  # noqa: E501
    from derive.blocks.attention_ops import heads_problem

    problem = heads_problem(width, heads)
    if problem:
        raise DeriveError(problem)
    return int(heads)


def check_token_simulation(configs: Sequence[VarianceConfig], *, depth: int, width: int,
                           seeds: int) -> None:
    """Refuse, before any work, a token simulation that needs more memory or work than
    allowed (:func:`derive.simulation.resources.check_simulation`)."""
    check_simulation(configs, [(seeds, _tokens(c)) for c in configs], depth=depth,
                     width=width, seeds=seeds, batch=max(_tokens(c) for c in configs),
                     chunk=TOKEN_CHUNK, rows=ROWS, skeleton=skeleton)


def measure_tokens(configs: Sequence[VarianceConfig], *, depth: int, width: int, heads: int,
                   seeds: int, q0: object = 1, rho0: object = "1/2", seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> list[TokenMeasurement]:
    """Measured token kernels of ``configs``: ``seeds`` networks, each of one sequence of
    ``config.tokens`` tokens, drawn TOKEN_CHUNK at a time (``progress(1)`` after each
    chunk); configurations of one skeleton and token count share their draws.

    >>> from derive.blocks.config import variance_config
    >>> [m] = measure_tokens([variance_config(block="Attn(x)", tokens=2)], depth=1,
    ...                      width=512, heads=8, seeds=8)
    >>> round(m.forward["q"][1], 1)  # two tokens: q' = c + (q - c) E[P_11^2 + P_12^2]
    0.7
    """
    seeds, depth = _count(seeds, "seeds", 1), _count(depth, "depth", 1)
    width = _count(width, "width", 2)
    heads = check_heads(width, heads)
    q_start, correlation = _positive(q0, "q0"), token_rho0(rho0)
    configs = token_configs(configs, width)
    check_token_simulation(configs, depth=depth, width=width, seeds=seeds)
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        key = (_tokens(config), skeleton(config.block.expanded(config)))
        groups.setdefault(key, []).append(i)
    sums: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in configs]
    for first in range(0, seeds, TOKEN_CHUNK):
        count = min(TOKEN_CHUNK, seeds - first)
        draws: dict[int, TokenDraws] = {}
        for (tokens, _), members in groups.items():
            if tokens not in draws:
                draws[tokens] = TokenDraws(depth, width, tokens, heads=heads, seed=seed,
                                           first=first, count=count)
            sample = draws[tokens]
            x = token_inputs(sample, q_start, correlation)
            run_parts(configs, members, sample, x, _token_sums, sums)
        if progress is not None:
            progress(1)
    return [_measurement(config, heads, np.concatenate(f, axis=-1),
                         np.concatenate(b, axis=-1), _tokens(config), width)
            for config, (f, b) in zip(configs, sums, strict=True)]


def _row(label: str, quantity: str, k: int, want: float, got: float, stderr: float,
         tolerance: float, relative: float) -> TokenRow:
    correlation = quantity in CORRELATIONS
    gap = abs(got - want)
    if not correlation:
        gap = gap / abs(want) if want != 0 else gap
    error = float(gap) if math.isfinite(gap) else math.inf
    allowed = tolerance if correlation else relative
    return TokenRow(label, quantity, k, float(want), float(got), float(stderr), error,
                    allowed, not correlation, error <= allowed)


def compare_tokens(
    configs: Sequence[VarianceConfig], depth: int = 6, width: int = 256, heads: int = 4,
    seeds: int = 64, *, q0: object = 1, rho0: object = "1/2", tolerance: float = 0.05,
    relative: float = 0.1, seed: int = 0, progress: Callable[[int], None] | None = None,
) -> list[TokenRow]:
    """Derived token kernels against simulated networks at every layer: per configuration
    q_k and rho_k for k = 1..K, then d_k/d_K and rho^grad_k for k = K-1..0. ``tolerance``
    is absolute on the correlations, ``relative`` on q_k and d_k/d_K. ``progress(1)``
    follows each derivation and each chunk of networks.

    >>> from derive.blocks.config import variance_config
    >>> rows = compare_tokens([variance_config(block="x + Attn(LN(x))", attention="uniform")],
    ...                       1, 128, 2, 16)
    >>> [(r.quantity, r.k, round(r.derived, 4), r.ok) for r in rows]
    [('q_k', 1, 1.5312, True), ('rho_k', 1, 0.6735, True), ('d_k/d_K', 0, 2.0, True), ('rho^grad_k', 0, 1.0, True)]
    """  # noqa: E501
    configs = list(configs)
    depth, width = _count(depth, "depth", 1), _count(width, "width", 2)
    heads = check_heads(width, heads)
    tolerance, relative = _positive(tolerance, "tolerance"), _positive(relative, "relative")
    seeds = _count(seeds, "seeds", 1)
    _positive(q0, "q0"), token_rho0(rho0)
    configs = token_configs(configs, width)
    check_token_simulation(configs, depth=depth, width=width, seeds=seeds)
    predictions = []
    for config in configs:
        predictions.append(derived_kernel(config, depth, q0, rho0, width))
        if progress is not None:
            progress(1)
    measured = measure_tokens(configs, depth=depth, width=width, heads=heads, seeds=seeds,
                              q0=q0, rho0=rho0, seed=seed, progress=progress)
    rows: list[TokenRow] = []
    for config, want, got in zip(configs, predictions, measured, strict=True):
        label, f, b = config.label, want["forward"], want["backward"]
        for k in range(1, depth + 1):
            rows.append(_row(label, "q_k", k, f["q_a"][k], got.forward["q"][k],
                             got.forward_error["q"][k], tolerance, relative))
            rows.append(_row(label, "rho_k", k, f["rho"][k], got.forward["rho"][k],
                             got.forward_error["rho"][k], tolerance, relative))
        for k in reversed(range(depth)):
            rows.append(_row(label, "d_k/d_K", k, b["d_a"][k], got.backward["d"][k],
                             got.backward_error["d"][k], tolerance, relative))
            rows.append(_row(label, "rho^grad_k", k, b["rho"][k], got.backward["rho"][k],
                             got.backward_error["rho"][k], tolerance, relative))
    return rows


def findings(rows: Sequence[TokenRow]) -> list[Finding]:
    """Each quantity of each configuration that is outside its tolerance at some layer,
    in the order of the rows.

    >>> row = TokenRow("c", "rho_k", 3, 0.5, 0.6, 0.01, 0.1, 0.05, False, False)
    >>> [f.beyond_noise for f in findings([row])]
    [True]
    """
    found: dict[tuple[str, str], list[TokenRow]] = {}
    for r in rows:
        if not r.ok:
            found.setdefault((r.label, r.quantity), []).append(r)
    out = []
    for (label, quantity), bad in found.items():
        worst = max(bad, key=lambda r: r.error / r.tolerance)
        out.append(Finding(label, quantity, worst, tuple(sorted(r.k for r in bad)),
                           worst.deviations > NOISE))
    return out
