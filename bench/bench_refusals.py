"""How fast derive answers or refuses the blocks and runs too large to derive or simulate.

Run: ``python3 bench/bench_refusals.py``. Each case is a fresh ``derive`` process (start-up
included); ``python -c 'import sympy'`` is timed in the same run, alternating with the
cases, as the baseline. Prints a Markdown table of median wall times, their ratio to the
baseline, and the exit code (2: refused in one line; 0: derived).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from installed import compile_package

NESTED = "x + " + "tanh(" * 20 + "F(x)" + ")" * 20
CASES = (
    ("20 nested tanh", ["variance", "--block", NESTED]),
    ("exact constant too large", ["variance", "--block", "x*((2**64)**64)**64"]),
    ("(10**40)**64 as a factor", ["variance", "--block", "x + (10**40)**64*F(x)"]),
    ("a complex factor", ["variance", "--block", "x + (-8)**(1/3)*F(x)"]),
    ("three Dropout terms, symbolic rates",
     ["variance", "--block", "x + Dropout(F(x), p1) + Dropout(F(x), p2) + Dropout(F(x), p3)"]),
    ("LN of a zero branch", ["variance", "--block", "x + LN(W0(x))"]),
    ("--weights at depth 10^18", ["variance", "--weights", "--depth", "1000000000000000000"]),
    ("check --seeds 10^18", ["check", "--seeds", "1000000000000000000"]),
    ("check --width 8192 --seeds 4", ["check", "--width", "8192", "--seeds", "4"]),
)
BASELINE = [sys.executable, "-c", "import sympy"]


def _wall(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - start, done.returncode


def main(repeat: int = 3) -> None:
    """Time every case against the baseline, alternating, and print one table."""
    compile_package()
    print("| case | exit code | median wall | `import sympy` | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, args in CASES:
        walls, bases, code = [], [], 0
        for _ in range(repeat):
            wall, code = _wall([sys.executable, "-m", "derive", *args])
            walls.append(wall)
            bases.append(_wall(BASELINE)[0])
        wall, base = statistics.median(walls), statistics.median(bases)
        print(f"| {name} | {code} | {wall:.2f} s | {base:.2f} s | {wall / base:.2f}× |")


if __name__ == "__main__":
    main()
