"""The finite-width NumPy op of multi-head softmax self-attention, with its hand-written
backward.

Arrays have shape (networks, tokens, D): the batch axis of a network holds the n tokens
of one sequence, and attention mixes along it. The h heads are the h blocks of
d_h = D / h consecutive columns of Q = x W_Q, K = x W_K and V = x W_V; each head's
output o_i = sum_j P_ij v_j is concatenated back to D units, then multiplied by W_O.

Modes: ``"standard"`` (logits q_i . k_j / sqrt(d_h)), ``"tied"`` (W_K = W_Q and logits
q_i . k_j / d_h) and ``"uniform"`` (W_Q = W_K = 0 at initialization: P_ij = 1/n exactly,
no logits computed).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((2, 3, 4))
>>> w = [rng.standard_normal((4, 4)) / 2 for _ in range(4)]
>>> out, cache = attention_forward(x, *w, heads=2, mode="standard")
>>> out.shape, attention_backward(np.ones_like(out), cache).shape
((2, 3, 4), (2, 3, 4))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from derive.errors import DeriveError, choice_error

#: The attention modes, in the order they are offered.
MODES = ("standard", "tied", "uniform")
#: The names of the four biases, after W_Q, W_K, W_V and W_O.
BIASES = ("q", "k", "v", "o")


@dataclass(frozen=True)
class AttentionCache:
    """What the backward needs from the forward: the matrices, the per-head queries, keys
    and values (networks, heads, tokens, d_h), the attention weights and the logits
    (networks, heads, tokens, tokens; both None in uniform mode) and the logits' scale."""

    mode: str
    heads: int
    w_q: np.ndarray | None
    w_k: np.ndarray | None
    w_v: np.ndarray
    w_o: np.ndarray
    queries: np.ndarray | None
    keys: np.ndarray | None
    values: np.ndarray
    weights: np.ndarray | None
    logits: np.ndarray | None
    scale: float


def heads_problem(width: int, heads: int) -> str | None:
    """Why ``heads`` heads do not fit a width of ``width`` units, in one line; None if
    they do (``heads`` is an integer >= 1 that divides the width).

    >>> heads_problem(512, 8) is None
    True
    >>> print(heads_problem(512, 3))
    heads 3 does not divide the width 512: each head takes width/heads units
    >>> print(heads_problem(512, 0))
    heads must be an integer >= 1 dividing the width 512, got 0
    """
    if isinstance(heads, bool) or not isinstance(heads, int | np.integer) or heads < 1:
        return f"heads must be an integer >= 1 dividing the width {width}, got {heads!r}"
    if width % heads:
        return f"heads {heads} does not divide the width {width}: each head takes width/heads units"
    return None


def _split(a: np.ndarray, heads: int) -> np.ndarray:
    """(networks, tokens, D) -> (networks, heads, tokens, D/heads)."""
    nets, tokens, width = a.shape
    return a.reshape(nets, tokens, heads, width // heads).transpose(0, 2, 1, 3)


def _merge(a: np.ndarray) -> np.ndarray:
    """(networks, heads, tokens, d_h) -> (networks, tokens, heads * d_h)."""
    nets, heads, tokens, d_h = a.shape
    return a.transpose(0, 2, 1, 3).reshape(nets, tokens, heads * d_h)


def _affine(x: np.ndarray, w: np.ndarray, biases: dict[str, np.ndarray] | None,
            name: str) -> np.ndarray:
    out = x @ w
    if biases is not None and biases.get(name) is not None:
        out = out + biases[name]
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (the keys), with each row's maximum subtracted first."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _check(x: np.ndarray, heads: int, mode: str) -> None:
    if mode not in MODES:
        raise choice_error("attention mode", mode, MODES)
    if x.ndim != 3:
        raise DeriveError(f"attention input must have shape (networks, tokens, D), "
                          f"got shape {x.shape}")
    problem = heads_problem(x.shape[-1], heads)
    if problem:
        raise DeriveError(problem)


def attention_forward(
    x: np.ndarray, w_q: np.ndarray | None, w_k: np.ndarray | None, w_v: np.ndarray,
    w_o: np.ndarray, *, heads: int, mode: str,
    biases: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, AttentionCache]:
    """Softmax self-attention of the tokens of each network, and the cache its backward
    needs.

    ``x``: (networks, tokens, D); each ``w_*``: (networks, D, D) or (D, D), already scaled
    to its variance; ``biases``: None or a dict of some of ``"q"``, ``"k"``, ``"v"``,
    ``"o"`` to (networks, 1, D) or (D,) arrays, added after each matrix. In ``"tied"``
    mode the caller passes ``w_k = w_q`` (``w_k = None`` means the same); in
    ``"uniform"`` mode ``w_q`` and ``w_k`` are not used (they may be None).

    >>> import numpy as np
    >>> x = np.arange(6.0).reshape(1, 3, 2)
    >>> eye = np.eye(2)
    >>> out, _ = attention_forward(x, None, None, eye, eye, heads=1, mode="uniform")
    >>> out[0].tolist()
    [[2.0, 3.0], [2.0, 3.0], [2.0, 3.0]]
    """
    _check(x, heads, mode)
    values = _split(_affine(x, w_v, biases, "v"), heads)
    d_h = x.shape[-1] // heads
    if mode == "uniform":
        mixed = np.broadcast_to(values.mean(axis=-2, keepdims=True), values.shape)
        out = _affine(_merge(mixed), w_o, biases, "o")
        return out, AttentionCache(mode, heads, None, None, w_v, w_o, None, None, values,
                                   None, None, 0.0)
    if mode == "tied" and w_k is None:
        w_k = w_q
    if w_q is None or w_k is None:
        raise DeriveError(f"attention mode {mode!r} needs the query and key matrices, got None")
    scale = 1.0 / d_h if mode == "tied" else 1.0 / math.sqrt(d_h)
    queries = _split(_affine(x, w_q, biases, "q"), heads)
    keys = _split(_affine(x, w_k, biases, "k"), heads)
    logits = (queries @ keys.swapaxes(-1, -2)) * scale
    weights = _softmax(logits)
    out = _affine(_merge(weights @ values), w_o, biases, "o")
    return out, AttentionCache(mode, heads, w_q, w_k, w_v, w_o, queries, keys, values,
                               weights, logits, scale)


def _transpose(w: np.ndarray) -> np.ndarray:
    return w.swapaxes(-1, -2)


def attention_backward(grad_out: np.ndarray, cache: AttentionCache) -> np.ndarray:
    """The gradient at the attention's input x, given the gradient at its output.

    Through W_O, then the value path (P^T g per head), and, unless the mode is
    ``"uniform"``, the softmax (dL/ds_ij = P_ij (dL/dP_ij - sum_b P_ib dL/dP_ib)) and the
    query and key paths, each back through its own matrix (in ``"tied"`` mode both
    through the same one, so their contributions add). Biases add constants, so they
    enter only through the queries, keys and values the forward kept.

    >>> import numpy as np
    >>> x = np.arange(6.0).reshape(1, 3, 2)
    >>> eye = np.eye(2)
    >>> _, cache = attention_forward(x, None, None, eye, eye, heads=1, mode="uniform")
    >>> attention_backward(np.ones((1, 3, 2)), cache)[0].tolist()
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """
    grad_mixed = _split(grad_out @ _transpose(cache.w_o), cache.heads)
    if cache.weights is None:  # uniform: every value gets the mean of the rows' gradients
        grad_values = np.broadcast_to(grad_mixed.mean(axis=-2, keepdims=True), grad_mixed.shape)
        return _merge(grad_values) @ _transpose(cache.w_v)
    weights = cache.weights
    grad_values = weights.swapaxes(-1, -2) @ grad_mixed
    grad_weights = grad_mixed @ cache.values.swapaxes(-1, -2)
    grad_logits = weights * (grad_weights - (weights * grad_weights).sum(axis=-1, keepdims=True))
    grad_logits = grad_logits * cache.scale
    assert cache.queries is not None and cache.keys is not None
    assert cache.w_q is not None and cache.w_k is not None
    grad_queries = grad_logits @ cache.keys
    grad_keys = grad_logits.swapaxes(-1, -2) @ cache.queries
    return (_merge(grad_values) @ _transpose(cache.w_v)
            + _merge(grad_queries) @ _transpose(cache.w_q)
            + _merge(grad_keys) @ _transpose(cache.w_k))
