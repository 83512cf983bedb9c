"""How long the two-point kernels of every preset and plain stack take over the grid.

Run: ``python3 bench/bench_kernel_grid.py``. In one fresh process, derive computes the
forward and backward kernel profiles (``derive.kernel(...).profile()``, rho_0 = 1/2,
depth 50) of every preset and the plain stacks ``F(x)`` and ``phi(W(x))``, for every
init x activation (the notes' five) x branch; presets with symbols take their check
values. ``python -c 'import sympy'`` is timed in the same run, alternating, as the
baseline. Prints a Markdown table of median wall times (start-up included).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from installed import compile_package

GRID = """
import derive
from derive.blocks.presets import PRESETS
from derive.inputs.choices import BRANCHES, GRID_ACTIVATIONS, INITS
blocks = [(p.name, p.check) for p in PRESETS.values()] + [("F(x)", {}), ("phi(W(x))", {})]
count = 0
for name, values in blocks:
    for init in INITS:
        for activation in GRID_ACTIVATIONS:
            for branch in BRANCHES:
                derive.kernel(init, activation, branch=branch, block=name, values=values,
                              depth=50).profile()
                count += 1
print(count)
"""
CASES = (("every preset and plain stack, depth 50", [sys.executable, "-c", GRID]),)
BASELINE = [sys.executable, "-c", "import sympy"]


def _wall(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=True, text=True)
    return time.perf_counter() - start, done.stdout.strip()


def main(repeat: int = 3) -> None:
    """Time the grid against the baseline, alternating, and print one table."""
    compile_package()
    print("| case | configurations | median wall | `import sympy` | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, command in CASES:
        walls, bases, count = [], [], ""
        for _ in range(repeat):
            wall, count = _wall(command)
            walls.append(wall)
            bases.append(_wall(BASELINE)[0])
        wall, base = statistics.median(walls), statistics.median(bases)
        print(f"| {name} | {count} | {wall:.2f} s | {base:.2f} s | {wall / base:.1f}× |")


if __name__ == "__main__":
    main()
