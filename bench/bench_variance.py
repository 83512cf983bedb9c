"""Speed of the variance derivation: the full grid, the command line, and the shape cache.

Run: ``python3 bench/bench_variance.py``. Prints a Markdown table. Each grid
measurement runs in a fresh interpreter (cold caches, imports included), and
the compared variants run side by side in the same invocation.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

from installed import compile_package

GRID = """
import time
t0 = time.perf_counter()
c0 = time.process_time()
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS
from derive.recursions.analysis import variance
for init in INITS:
    for act in ACTIVATIONS:
        for norm in NORMS:
            for branch in BRANCHES:
                a = variance(init, act, norm, branch)
                for r in (a.forward, a.backward):
                    r.closed_form, r.growth, r.at(50)
print(time.perf_counter() - t0, time.process_time() - c0)
"""

SHAPES = """
import time, sympy
from derive.derivation.symbols import k, q, q0
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS
from derive.recursions.block_maps import Q_PREV
from derive.recursions.analysis import variance
from derive.recursions import closed_forms
pairs = []
for init in INITS:
    for act in ("linear", "relu", "leaky_relu"):
        for norm in ("none", "pre"):
            for branch in BRANCHES:
                step = variance(init, act, norm, branch).forward.step
                pairs.append(closed_forms.affine_coefficients(step, Q_PREV))
sympy.rsolve(q(k) - 2 * q(k - 1), q(k), {q(0): q0})  # rsolve's own first-call set-up
t0 = time.perf_counter()
for a, b in pairs:
    sympy.rsolve(q(k) - a * q(k - 1) - b, q(k), {q(0): q0})
t1 = time.perf_counter()
for a, b in pairs:
    closed_forms.solve_affine_by_shape(a, b)
t2 = time.perf_counter()
for a, b in pairs:
    closed_forms.solve_affine(a, b)
t3 = time.perf_counter()
print(len(pairs), t1 - t0, t2 - t1, t3 - t2)
"""


def python_output(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def wall_time(args: list[str], repeat: int = 3) -> tuple[float, float]:
    """Median wall time and CPU time (user + sys) of ``derive ARGS`` in a fresh process."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "derive", *args], capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    """Run the measurements and print one Markdown table."""
    compile_package()
    rows = []
    grid = min(tuple(float(v) for v in python_output(GRID).split()) for _ in range(2))
    rows.append(("full grid: 90 configurations x 2 directions, closed forms, growth, "
                 "values at K = 50 (cold, fresh process, imports included, best of 2)",
                 f"{grid[0]:.2f} s wall, {grid[1]:.2f} s CPU", "< 10 s"))
    for args in (["variance"],
                 ["variance", "--init", "he", "--activation", "gelu", "--norm", "pre"],
                 ["variance", "--activation", "tanh", "--depth", "50"],
                 ["variance", "--init", "he", "--compare"]):
        wall, cpu = wall_time(args)
        rows.append((f"`derive {' '.join(args)}`, start-up included (median of 3)",
                     f"{wall:.2f} s wall, {cpu:.2f} s CPU", "< 2 s"))
    for args in (["variance", "--init", "he", "--depth", "20000"],
                 ["variance", "--init", "he", "--depth", "1000000000000000000"],
                 ["variance", "--depth", "100000", "--format", "json"]):
        wall, cpu = wall_time(args)
        rows.append((f"`derive {' '.join(args)}`, start-up included (median of 3)",
                     f"{wall:.2f} s wall, {cpu:.2f} s CPU", "answers at once"))
    count, direct, shape, shipped = python_output(SHAPES).split()
    direct_s = float(direct)
    rows.append((f"rsolve on each of {count} affine forward recursions (no cache)",
                 f"{direct_s:.3f} s", "1x"))
    rows.append(("shape solved once with symbolic a, b, then substituted",
                 f"{float(shape):.3f} s", f"{direct_s / float(shape):.1f}x faster"))
    rows.append(("shipped solve_affine (numeric: the unrolled shape, cached by coefficients)",
                 f"{float(shipped):.3f} s", f"{direct_s / float(shipped):.1f}x faster"))
    print("| measurement | result | target / ratio |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
