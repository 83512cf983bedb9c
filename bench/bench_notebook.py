"""Time the NumPy reproduction of UDL Notebook 11.1 (shattered gradients).

Run: ``python3 bench/bench_notebook.py``. Prints a Markdown table: the seconds for one
network's ``dy/dx`` on the 256-point grid at width 200 (draws, forward and backward
pass), for each variant at K = 24 and 50, and for the autocorrelation averaged over 20
networks at K = 50; minimum and median of the rounds, interleaved round by round so
that a noisy shared machine slows them alike. OpenBLAS's threads fight other processes
for the cores: ``OPENBLAS_NUM_THREADS=1`` is often faster on a busy 2-core machine.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from derive.simulation.notebook import VARIANTS, mean_autocorrelation, notebook_gradients

ROUNDS = 5


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    cases: dict[str, Callable[[], object]] = {}
    for variant in VARIANTS:
        for depth in (24, 50):
            cases[f"`notebook_gradients({depth}, variant={variant!r})`"] = (
                lambda d=depth, v=variant: notebook_gradients(d, variant=v))
    cases["`mean_autocorrelation(50, n_networks=20)`"] = (
        lambda: mean_autocorrelation(50, n_networks=20))
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            times[name].append(seconds(fn))
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"OpenBLAS threads: {threads}, load average {os.getloadavg()[0]:.2f}\n")
    print("| case | min s | median s |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {min(values):.3f} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    main()
