"""Time one forward and backward of softmax self-attention's NumPy op.

Run: ``python3 bench/bench_attention_ops.py``. Prints a Markdown table: milliseconds
per forward + backward at networks = 4, tokens = 16, D = 256 (float64, per-network
matrices), for each mode and a few head counts; the median of several rounds,
interleaved so that a noisy shared machine slows every row alike. The matrix products
x W (four (tokens, D) x (D, D) per network) cost most; the per-head softmax is small.

``python3 bench/bench_attention_ops.py --finite-width`` (about 15 minutes) instead
measures the standard mode's output kernel at width 512 against the mean-field forward
rule, 1000 networks per case, for 1, 8, 32 and 128 heads: the softmax's part of
E[out_i^2] and E[out_i out_a] (the output's kernel minus the uniform mode's on the same
draws), measured and by the rule, and their difference in standard errors.
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import numpy as np

from derive.blocks.attention_ops import MODES, attention_backward, attention_forward

NETWORKS, TOKENS, WIDTH = 4, 16, 256
ROUNDS, CALLS = 7, 20


def case(mode: str, heads: int) -> tuple:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((NETWORKS, TOKENS, WIDTH))
    w = [rng.standard_normal((NETWORKS, WIDTH, WIDTH)) / WIDTH**0.5 for _ in range(4)]
    if mode == "tied":
        w[1] = w[0]
    return x, w, rng.standard_normal((NETWORKS, TOKENS, WIDTH))


def per_call(mode: str, heads: int, problem: tuple) -> float:
    x, w, grad = problem
    start = time.perf_counter()
    for _ in range(CALLS):
        _, cache = attention_forward(x, *w, heads=heads, mode=mode)
        attention_backward(grad, cache)
    return (time.perf_counter() - start) / CALLS


def main() -> None:
    rows = {(mode, heads): case(mode, heads) for mode in MODES for heads in (1, 8, 32)}
    times: dict[tuple, list[float]] = {key: [] for key in rows}
    for _ in range(ROUNDS):
        for (mode, heads), problem in rows.items():
            times[mode, heads].append(per_call(mode, heads, problem))
    print(f"networks={NETWORKS}, tokens={TOKENS}, D={WIDTH}, float64\n")
    print("| mode | heads | forward + backward (ms) |")
    print("|---|---:|---:|")
    for (mode, heads), values in times.items():
        print(f"| {mode} | {heads} | {1000 * statistics.median(values):.2f} |")


def overlaps(n: int, v: float, r: float, samples: int = 400_000) -> tuple[float, float]:
    """S and X of the design, by Monte Carlo of two rows of Gaussian logits."""
    rng = np.random.default_rng(5)
    common = rng.standard_normal((samples, 1, n)) * math.sqrt(r)
    logits = math.sqrt(v) * (common + rng.standard_normal((samples, 2, n)) * math.sqrt(1 - r))
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return float((p[:, 0] ** 2).sum(-1).mean()), float((p[:, 0] * p[:, 1]).sum(-1).mean())


def kernel(out: np.ndarray) -> np.ndarray:
    out = out.astype(np.float64)
    n = out.shape[1]
    square = (out**2).sum(axis=1)
    cross = (out.sum(axis=1) ** 2 - square) / (n * (n - 1))
    return np.stack([square.mean(-1) / n, cross.mean(-1)], axis=-1)


def finite_width(width: int = 512, q: float = 2.0, nets: int = 1000, chunk: int = 25) -> None:
    print(f"width={width}, q={q}, {nets} networks per case: softmax's part of q' and c'\n")
    print("| heads | d_h | n | rho | q' part | rule | z | c' part | rule | z |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for heads in (1, 8, 32, 128):
        for n in (4, 16):
            for rho in (0.2, 0.8):
                c = rho * q
                rng = np.random.default_rng(1)
                diffs = []
                for _ in range(nets // chunk):
                    x = (math.sqrt(c) * rng.standard_normal((chunk, 1, width))
                         + math.sqrt(q - c) * rng.standard_normal((chunk, n, width)))
                    x = x.astype(np.float32)
                    w = [rng.standard_normal((chunk, width, width), dtype=np.float32)
                         / math.sqrt(width) for _ in range(4)]
                    soft, _ = attention_forward(x, *w, heads=heads, mode="standard")
                    flat, _ = attention_forward(x, None, None, w[2], w[3], heads=heads,
                                                mode="uniform")
                    diffs.append(kernel(soft) - kernel(flat))
                d = np.concatenate(diffs)
                got, err = d.mean(axis=0), d.std(axis=0) / math.sqrt(len(d))
                s, x_ = overlaps(n, q * (q - c), rho)
                want = (q - c) * np.array([s - 1 / n, x_ - 1 / n])
                z = (got - want) / err
                print(f"| {heads} | {width // heads} | {n} | {rho} | {got[0]:.4f} | "
                      f"{want[0]:.4f} | {z[0]:+.1f} | {got[1]:.4f} | {want[1]:.4f} | "
                      f"{z[1]:+.1f} |", flush=True)


if __name__ == "__main__":
    if "--finite-width" in sys.argv[1:]:
        finite_width()
    else:
        main()
