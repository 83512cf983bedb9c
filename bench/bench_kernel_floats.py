"""Time the float two-point kernels per activation, against ``import sympy``.

Run: ``python3 bench/bench_kernel_floats.py``. Each activation's ``kernel_float`` and
``derivative_kernel_float`` run over a fixed set of points (q_a, q_b log-spaced over
[1e-3, 1e4], rho over [-1, 1] with +-1 itself), round by round, interleaved with the
baseline, a fresh ``python -c 'import sympy'``, so that a noisy shared machine slows them
alike. kernels.py (exact SymPy, or adaptive quadrature for tanh and gelu) on a few of the
same points shows what the float path saves; for tanh and gelu, the slowest point
(best of 10 calls each) bounds the cost of a call. The last rows run a depth-50 kernel
recursion (two inputs through a plain tanh or gelu MLP, four calls a layer). Prints a
Markdown table of medians over the rounds.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import sympy

from derive.gaussian.kernel_floats import (
    FLOAT_ACTIVATIONS,
    derivative_kernel_float,
    kernel_float,
)
from derive.gaussian.kernels import derivative_kernel, kernel

ROUNDS = 5
QS = (1e-3, 0.03, 1.0, 30.0, 1e3, 1e4)
RHOS = (-1.0, -0.9, -0.3, 0.0, 0.5, 0.99, 1.0)
POINTS = [(qa, qb, rho * math.sqrt(qa * qb))
          for qa, qb, rho in itertools.product(QS, QS, RHOS)]
BASELINE = [sys.executable, "-c", "import sympy"]


def per_call(function: Callable[[str, float, float, float], float], name: str,
             points: list[tuple[float, float, float]]) -> float:
    """Seconds per call over ``points``."""
    start = time.perf_counter()
    for qa, qb, c in points:
        function(name, qa, qb, c)
    return (time.perf_counter() - start) / len(points)


def exact_per_call(name: str, points: list[tuple[float, float, float]]) -> float:
    """Seconds per call of kernels.py (kernel and derivative kernel alternately)."""
    start = time.perf_counter()
    for i, (qa, qb, c) in enumerate(points):
        function = derivative_kernel if i % 2 else kernel
        c_exact = sympy.Rational(repr(c / math.sqrt(qa * qb))) * sympy.sqrt(
            sympy.Rational(repr(qa)) * sympy.Rational(repr(qb)))
        float(function(name, sympy.Rational(repr(qa)), sympy.Rational(repr(qb)), c_exact))
    return (time.perf_counter() - start) / len(points)


def slowest(function: Callable[[str, float, float, float], float], name: str) -> float:
    """Seconds per call at the slowest point (each point: the best of 10 calls)."""
    worst = 0.0
    for point in POINTS:
        best = math.inf
        for _ in range(10):
            start = time.perf_counter()
            function(name, *point)
            best = min(best, time.perf_counter() - start)
        worst = max(worst, best)
    return worst


def recursion(name: str, depth: int = 50) -> float:
    """Seconds for a depth-``depth`` recursion of (q_a, q_b, c) and the gradient kernel."""
    start = time.perf_counter()
    qa, qb, c, g = 1.0, 2.0, 0.5, 1.0
    for _ in range(depth):
        g *= derivative_kernel_float(name, qa, qb, c)
        qa, qb, c = (kernel_float(name, qa, qa, qa) * 2, kernel_float(name, qb, qb, qb) * 2,
                     kernel_float(name, qa, qb, c) * 2)
    return time.perf_counter() - start


def main() -> None:
    rows: dict[str, list[float]] = {}
    few = POINTS[::19]  # 14 points, every q_a and rho
    for name in FLOAT_ACTIVATIONS:  # warm the cached rules and the imports
        per_call(kernel_float, name, POINTS[:5])
        per_call(derivative_kernel_float, name, POINTS[:5])
    for _ in range(ROUNDS):
        start = time.perf_counter()
        subprocess.run(BASELINE, check=True, capture_output=True)
        rows.setdefault("baseline: `python -c 'import sympy'`", []).append(
            time.perf_counter() - start)
        for name in FLOAT_ACTIVATIONS:
            rows.setdefault(f"kernel_float, {name}", []).append(
                per_call(kernel_float, name, POINTS))
            rows.setdefault(f"derivative_kernel_float, {name}", []).append(
                per_call(derivative_kernel_float, name, POINTS))
        for name in ("tanh", "gelu"):
            for function in (kernel_float, derivative_kernel_float):
                rows.setdefault(f"{function.__name__}, {name}: slowest point", []).append(
                    slowest(function, name))
        for name in ("tanh", "gelu", "relu"):
            rows.setdefault(f"kernels.py (exact or quad), {name}", []).append(
                exact_per_call(name, few))
        for name in ("tanh", "gelu"):
            rows.setdefault(f"depth-50 recursion, {name} (200 calls)", []).append(
                recursion(name))
    base = statistics.median(rows["baseline: `python -c 'import sympy'`"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(POINTS)} points a round, {ROUNDS} rounds, load average {load:.1f}\n")
    print("| measurement | median | calls in one `import sympy` |")
    print("| --- | ---: | ---: |")
    for label, times in rows.items():
        value = statistics.median(times)
        shown = f"{value * 1e6:.1f} µs" if value < 1e-3 else f"{value * 1e3:.1f} ms"
        ratio = "" if label.startswith("baseline") else f"{base / value:,.0f}"
        print(f"| {label} | {shown} | {ratio} |")


if __name__ == "__main__":
    main()
