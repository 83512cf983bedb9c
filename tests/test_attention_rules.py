"""Attention's mean-field rules against finite matrices written here from the definition:
multi-head softmax self-attention, its backward by hand (softmax, queries, keys, values),
tokens with a given second moment and covariance, and gradients at the output with a given
second moment and covariance (gradient independence: drawn apart from the forward)."""

from __future__ import annotations

import numpy as np
import pytest

from derive.blocks.config import variance_config
from derive.blocks.nodes import Kernel


def _tokens(rng: np.random.Generator, n: int, width: int, q: float, rho: float) -> np.ndarray:
    shared = rng.standard_normal((1, width))
    return np.sqrt(q) * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((n, width)))


def _kernel(h: np.ndarray) -> tuple[float, float]:
    n, width = h.shape
    gram = h @ h.T / width
    return float(np.trace(gram) / n), float((gram.sum() - np.trace(gram)) / (n * (n - 1)))


def _attention(rng: np.random.Generator, n: int, width: int, heads: int, q: float, rho: float,
               d: float, g: float) -> tuple[float, float, float, float]:
    """One finite layer: the output's (q', c') and the input gradients' (d', g')."""
    head = width // heads
    x = _tokens(rng, n, width, q, rho)
    w_q, w_k, w_v, w_o = rng.standard_normal((4, width, width)) / np.sqrt(width)
    queries, keys, values = x @ w_q, x @ w_k, x @ w_v
    out = np.zeros_like(values)
    grad_out = _tokens(rng, n, width, d, g / d) @ w_o.T
    grad_q, grad_k, grad_v = (np.zeros_like(values) for _ in range(3))
    for h in range(heads):
        cols = slice(h * head, (h + 1) * head)
        logits = queries[:, cols] @ keys[:, cols].T / np.sqrt(head)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, cols] = p @ values[:, cols]
        grad_p = grad_out[:, cols] @ values[:, cols].T
        grad_logits = p * (grad_p - (p * grad_p).sum(axis=1, keepdims=True))
        grad_v[:, cols] = p.T @ grad_out[:, cols]
        grad_q[:, cols] = grad_logits @ keys[:, cols] / np.sqrt(head)
        grad_k[:, cols] = grad_logits.T @ queries[:, cols] / np.sqrt(head)
    grad_x = grad_v @ w_v.T + grad_q @ w_q.T + grad_k @ w_k.T
    return (*_kernel(out @ w_o), *_kernel(grad_x))


@pytest.mark.slow
@pytest.mark.parametrize(("n", "q", "rho", "d", "g"), [
    (3, 2.0, 0.8, 1.0, 0.7), (8, 1.0, 0.3, 1.0, 0.4), (16, 1.0, 0.1, 1.0, 0.2)])
def test_standard_attention_rules_match_finite_attention(n: int, q: float, rho: float,
                                                         d: float, g: float) -> None:
    rng = np.random.default_rng(n)
    config = variance_config(block="Attn(x)", tokens=n, attention="standard")
    state = Kernel(q, q, rho * q)
    forward = config.block.kernel_forward(config, state)
    backward = config.block.kernel_gain(config, state).apply(d, d, g)
    runs = np.array([_attention(rng, n, 1024, 8, q, rho, d, g) for _ in range(40)])
    mean, error = runs.mean(axis=0), runs.std(axis=0) / np.sqrt(len(runs))
    want = (forward.q_a, forward.c, backward[0], backward[2])
    for got, err, value in zip(mean, error, want, strict=True):
        assert abs(got - value) < 4 * err + 0.01 * abs(value), (got, value, err)
