"""The gradient carried by each path length through layers that mix tokens (attention).

A block with ``Attn`` has no one-point recursion: attention mixes the gradients of the
tokens of a sequence. The state of two tokens a and b of one sequence is the token
kernel (q, c) forward and (d_a, d_b, g) backward (:mod:`derive.recursions.kernel`).
Under gradient independence different paths are uncorrelated, and one path carries the
product of its nodes' two-point gain maps (``KernelGains``, a 3x3 map where attention
mixes d_a, d_b and g), taken at the forward token kernel of its layer. Applied to the
output's (d_a, d_b, g) = (1, 1, 1) (both tokens read the same readout), its d_a component
is the path's share of a token's gradient second moment. Grouping each layer's terms by
the branches they pass (F, Attn, MLP) gives a polynomial in t with 3x3 coefficients,

    G_k(t) = sum over layer k's terms of map(term) t^{#branches},

and the paths through L branches carry the d_a component of [t^L] G_{j+1}(t) ... G_K(t)
(1, 1, 1). Summed over L this is the kernel profile's d at x (or at f_j).

>>> g = token_path_gradients(2, "x", block="x + Attn(x)", attention="uniform", tokens=2)
>>> [round(s, 6) for s in g.gradient_shares], round(g.total, 6)
([0.25, 0.5, 0.25], 4.0)
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import sympy

from derive.blocks.block import Block
from derive.blocks.config import VarianceConfig
from derive.blocks.nodes import Kernel, KernelGains, Node
from derive.derivation.printing import text
from derive.errors import DeriveError
from derive.pathsums.block_paths import (
    BlockPathSum,
    block_terms,
    branch_counts,
    tail_route,
    term_route,
)
from derive.pathsums.by_length import LengthShares, Share
from derive.pathsums.layer_factors import layer_factor
from derive.pathsums.limits import WrtLike, check_path_args
from derive.recursions.kernel import KernelAnalysis, kernel

#: The identity map of (d_a, d_b, g).
_IDENTITY = np.eye(3)


def _rows(gains: KernelGains) -> np.ndarray:
    """A map's three rows as floats: (d_a, d_b, g) at the input = rows @ at the output."""
    return np.array([[float(v) for v in row] for row in gains.rows()])


def _route_map(spec: Block, config: VarianceConfig, route: list[tuple[Node, int]],
               state: Kernel, cache: dict[int, tuple[KernelGains, ...]]) -> np.ndarray:
    """The product of the gain maps along ``route`` (from the output down), the layer's
    input having the token kernel ``state``."""
    states = spec.kernels(config, state)
    out = _IDENTITY
    for node, i in route:
        if id(node) not in cache:
            cache[id(node)] = node.kernel_gains([states[c] for c in node.children], config,
                                                state)
        out = _rows(cache[id(node)][i]) @ out
    return out


def layer_polynomial(config: VarianceConfig, state: Kernel) -> list[np.ndarray]:
    """G_k(t) of one layer whose input has the token kernel ``state``: the coefficient of
    t^L is the sum of the 3x3 gain maps (rows: d_a, d_b, g at the input) of the layer's
    terms through L branches.

    >>> from derive.blocks.config import variance_config
    >>> config = variance_config(block="x + Attn(x)", attention="uniform", tokens=2)
    >>> [m.tolist() for m in layer_polynomial(config, Kernel(1.0, 1.0, 0.5))]
    [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], \
[0.25, 0.25, 0.5]]]
    """
    spec = config.block
    terms = block_terms(spec, 1)
    poly = [np.zeros((3, 3)) for _ in range(max(t.branches for t in terms) + 1)]
    cache: dict[int, tuple[KernelGains, ...]] = {}
    for term in terms:
        poly[term.branches] = poly[term.branches] + _route_map(
            spec, config, term_route(spec, config, term.path), state, cache)
    return poly


class TokenPathGradients(LengthShares):
    """Path counts and each length's share of a token's gradient second moment for a
    stack of blocks that mix tokens, through the token kernel (see the module).

    >>> g = token_path_gradients(3, block="transformer-pre", init="he", tokens=4,
    ...                          attention="uniform")
    >>> g.counts, round(sum(g.gradient_shares), 12)
    ([1, 4, 6, 4, 1], 1.0)
    """

    exact = False

    def __init__(self, depth: int, wrt: WrtLike, analysis: KernelAnalysis) -> None:
        depth, wrt = check_path_args(depth, wrt)
        if analysis.depth != depth:
            raise DeriveError(f"the kernel profile has {analysis.depth} layers, the path sum "
                              f"{depth}")
        self.depth, self.wrt, self.analysis = depth, wrt, analysis
        self.config: VarianceConfig = analysis.config
        self.q0, self.rho0 = analysis.q0, analysis.rho0
        self.paths = BlockPathSum(depth, wrt, self.config.block)
        #: The first layer whose factor the gradient passes: j + 1 (1 for x).
        self.first = wrt.start + 1
        states = analysis.forward_states
        #: G_k(t) of the layers k = first..K, each at its input's token kernel.
        self.polynomials = [layer_polynomial(self.config, states[k - 1])
                            for k in range(self.first, depth + 1)]
        #: Each length's (d_a, d_b, g) at x (or f_j), the output's being (1, 1, 1).
        self.states = self._states()
        #: Each length's contribution to d at x (or at f_j), per unit of the output's d.
        self.gradients = [float(v) for v in self.states[:, 0]]
        #: Their sum: the gradient second moment at x (or f_j) over the output's.
        self.total = float(sum(self.gradients))
        if not self.total > 0:
            raise DeriveError(f"no gradient reaches the input through {self.config.block.text}")
        self.gradient_shares: list[Share] = [v / self.total for v in self.gradients]

    def _states(self) -> np.ndarray:
        """[t^L] G_first(t) ... G_K(t) (1, 1, 1), then the way from layer j's output to
        f_j: one row (d_a, d_b, g) per length L."""
        vectors = np.ones((1, 3))
        for poly in reversed(self.polynomials):  # layer K first: the chain rule's order
            out = np.zeros((len(vectors) + len(poly) - 1, 3))
            for length, matrix in enumerate(poly):
                out[length:length + len(vectors)] += vectors @ matrix.T
            vectors = out
        if not self.wrt.is_input:
            spec = self.config.block
            state = self.analysis.forward_states[self.wrt.start - 1]
            tail = _route_map(spec, self.config, tail_route(spec, self.config), state, {})
            vectors = vectors @ tail.T
        return vectors

    @property
    def profile_total(self) -> float:
        """d at x (or at f_j) from the kernel profile (:attr:`KernelAnalysis.backward_states`,
        its output's d being 1), which the lengths' contributions add up to.

        >>> g = token_path_gradients(2, "x", block="x + Attn(x)", tokens=2)
        >>> abs(g.profile_total - g.total) < 1e-12
        True
        """
        back = self.analysis.backward_states[self.wrt.start]
        if self.wrt.is_input:
            return back.d_a
        spec = self.config.block
        state = self.analysis.forward_states[self.wrt.start - 1]
        tail = _route_map(spec, self.config, tail_route(spec, self.config), state, {})
        return float((tail @ np.array([back.d_a, back.d_b, back.g]))[0])

    # --- words ----------------------------------------------------------------------
    @property
    def tokens(self) -> sympy.Expr:
        """The tokens n of each sequence."""
        return self.config.tokens

    @property
    def setting(self) -> str:
        """The token kernel's inputs, for the table's title."""
        return (f", {self.tokens} token{'s' if self.tokens != 1 else ''}, "
                f"{self.config.attention} attention, "
                f"rho0 = {self.rho0}")

    @property
    def mixes(self) -> bool:
        """Whether some layer's map mixes the gradients of the two tokens."""
        return any(np.any(m[:2, 2]) or np.any(m[2, :2]) or m[0, 1] or m[1, 0]
                   for poly in self.polynomials for m in poly)

    @cached_property
    def path_closed_form(self) -> tuple[sympy.Expr, sympy.Expr]:
        """(mean, variance) of the length over the paths, each counted once, in the depth K:
        the later layers' lengths are independent, each distributed as the layer's terms'
        branch counts.

        >>> token_path_gradients(3, block="transformer-pre", tokens=2).path_closed_form
        (K - 1, (K - 1)/2)
        """
        from derive.derivation.symbols import K

        t = sympy.Symbol("t")
        counts = sum(c * t**i for i, c in enumerate(branch_counts(self.config.block)))
        at = {t: 1}
        total = counts.xreplace(at)
        mean = sympy.diff(counts, t).xreplace(at) / total
        variance = sympy.diff(counts, t, 2).xreplace(at) / total + mean - mean**2
        layers = K - self.wrt.start
        return sympy.factor(layers * mean), sympy.factor(layers * variance)

    @property
    def closed_form_reason(self) -> str:
        """Why the gradient-weighted length has no closed form in the depth K."""
        if self.mixes:
            return ("attention mixes the two tokens' gradients, so how a layer splits the "
                    "gradient by length depends on the gradients' correlation below it (a 3x3 "
                    "map, not a number): the layers' lengths are not independent")
        return ("the token kernel's profile is iterated layer by layer, not solved in the "
                "depth K")

    def notes(self) -> list[str]:
        """The layer's factor and the path counts' closed form, and why the gradient-weighted
        length has none."""
        spec = self.config.block
        factor = layer_factor(spec)[0]
        counts = ", ".join(f"{c} pass{'es' if c == 1 else ''} {i}"
                           for i, c in enumerate(branch_counts(spec)) if c)
        mean, variance = self.path_closed_form
        radix = self.paths.radix
        if len(spec.sublayers) > 1:
            layer = (f"each layer k contributes {factor} (the later sublayer's factor on the "
                     "left)")
        else:
            layer = f"each block k contributes {factor}"
        return [
            f"{layer}, {radix} term{'s' if radix > 1 else ''} by the branches they pass: "
            f"{counts}; over the paths the length has mean {text(mean)} and variance "
            f"{text(variance)}",
            f"the lengths' gradients add up to d = {self.total:.6g} at {self._start} (the "
            "output's d being 1), as the token kernel profile gives",
            f"no closed form in the depth K for the gradient-weighted length: "
            f"{self.closed_form_reason}",
        ]

    @property
    def _start(self) -> str:
        return "x" if self.wrt.is_input else f"f_{self.wrt.start}"

    def report_fields(self) -> dict[str, object]:
        """The token kernel's inputs, each length's contribution to d, their total and the
        layer's factor, for the JSON output."""
        mean, variance = self.path_closed_form
        return {"tokens": int(self.tokens), "attention": self.config.attention,
                "rho0": str(self.rho0), "layer": layer_factor(self.config.block)[0],
                "gradients": self.gradients, "total": self.total,
                "path_closed_form": {"mean": text(mean), "variance": text(variance)},
                "closed_form_reason": self.closed_form_reason}

    def effect(self) -> str:
        """The gradient-weighted length against the path counts', in words.

        >>> g = token_path_gradients(2, "x", block="x + Attn(x)", tokens=2, attention="uniform")
        >>> g.effect().split(":")[0]
        'at depth 2 the gradient-weighted length is 1 ± 0.707 against 1 ± 0.707 for the path \
counts'
        """
        mean, spread = float(self.mean), float(self.spread)
        shorter = mean < self.path_mean * (1 - 1e-9)
        longer = mean > self.path_mean * (1 + 1e-9)
        verdict = ("the effective paths are shorter than the typical path" if shorter else
                   "the effective paths are longer than the typical path" if longer else
                   "every path carries the same gradient, as the counts say")
        return (f"at depth {self.depth} the gradient-weighted length is {mean:.4g} ± "
                f"{spread:.3g} against {self.path_mean:.4g} ± {self.path_spread:.3g} for the "
                f"path counts: {verdict}")


def token_path_gradients(depth: int, wrt: WrtLike = 1, *, block: object = "transformer-pre",
                         init: str = "xavier", activation: str = "relu",
                         branch: str = "single", q0: object = 1, rho0: object = "1/2",
                         values: dict[str, object] | None = None,
                         **options: object) -> TokenPathGradients:
    """Path counts and each length's share of a token's gradient second moment for
    ``depth`` blocks of ``block`` (with ``Attn``), the forward token kernel starting at
    second moment ``q0`` and token correlation ``rho0``; ``options`` are those of
    :func:`derive.kernel` (``tokens``, ``attention``, ``mlp_ratio``, ...).

    >>> g = token_path_gradients(2, "x", block="x + Attn(x)", attention="uniform", tokens=2)
    >>> g.counts, [round(v, 6) for v in g.gradients]
    ([1, 2, 1], [1.0, 2.0, 1.0])
    """
    analysis = kernel(init, activation, branch=branch, block=block, values=values, q0=q0,
                      rho0=rho0, depth=depth, **options)  # type: ignore[arg-type]
    if not analysis.config.tokens.is_Integer:
        raise DeriveError(f"gradient shares through attention need a number of tokens, got "
                          f"{analysis.config.tokens}")
    return TokenPathGradients(depth, wrt, analysis)
