"""Time ``gaussian_overlaps`` at n = 16, 256, 4096 and v = 0.5, 5, 50, against ``import numpy``.

Run: ``python3 bench/bench_softmax_overlaps.py``. Each round times a fresh
``python -c 'import numpy'`` (the baseline), then one uncached call per point (n, v, r) for
r in (-0.5, 0.5, 0.95) (every round shifts r by 1e-9 so that the cache of earlier rounds
does not answer), then a cached call. The points run in a child process twice: with
NumPy's BLAS on one thread (as the test suite runs it) and with its default threads, since
on a busy machine BLAS threads that contend for the cores can slow the matrix products.
Prints a Markdown table of medians over the rounds, in milliseconds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

ROUNDS = 5
TOKENS = (16, 256, 4096)
VARIANCES = (0.5, 5.0, 50.0)
CORRELATIONS = (-0.5, 0.5, 0.95)
BASELINE = [sys.executable, "-c", "import numpy"]

CHILD = """
import json, sys, time
from derive.gaussian.softmax import gaussian_overlaps
rounds, tokens, variances, correlations = json.loads(sys.argv[1])
gaussian_overlaps(2, 1.0, 0.5)  # imports numpy and scipy
out = {}
for k in range(rounds):
    for n in tokens:
        for v in variances:
            times = []
            for r in correlations:
                r = r + 1e-9 * (k + 1)
                start = time.perf_counter()
                gaussian_overlaps(n, v, r)
                times.append(time.perf_counter() - start)
            start = time.perf_counter()
            gaussian_overlaps(n, v, r)
            cached = time.perf_counter() - start
            out.setdefault(f"{n} {v}", []).append([max(times), statistics.mean(times), cached])
print(json.dumps(out))
"""


def child(threads: str | None) -> dict[str, list[list[float]]]:
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
        if threads is not None:
            env[name] = threads
    code = "import statistics\n" + CHILD
    args = json.dumps([ROUNDS, TOKENS, VARIANCES, CORRELATIONS])
    result = subprocess.run([sys.executable, "-c", code, args], env=env, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout)


def main() -> None:
    baseline = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        subprocess.run(BASELINE, check=True, capture_output=True)
        baseline.append(time.perf_counter() - start)
    one, default = child("1"), child(None)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base = statistics.median(baseline) * 1e3
    print(f"{ROUNDS} rounds, load average {load:.1f}; baseline `python -c 'import numpy'`: "
          f"{base:.1f} ms\n")
    print("| n | v | slowest r, BLAS 1 thread | mean over r | cached | "
          "slowest r, default BLAS threads |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, rows in one.items():
        n, v = key.split()
        worst, mean, cached = (statistics.median(col) * 1e3 for col in zip(*rows, strict=True))
        other = statistics.median(r[0] for r in default[key]) * 1e3
        print(f"| {n} | {v} | {worst:.1f} ms | {mean:.1f} ms | {cached * 1e3:.1f} µs "
              f"| {other:.1f} ms |")


if __name__ == "__main__":
    main()
