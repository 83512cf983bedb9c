"""How long one ``derive kernel`` takes, start-up included (target: under 2 s).

Run: ``python3 bench/bench_kernel_cli.py [--repeat N]``. Each case is a fresh
``python -m derive kernel ...`` process; ``python -c 'import sympy'`` is timed in the
same run, alternating with the cases, as the baseline. Prints a Markdown table of the
median and the slowest wall time of each case, the baseline's median and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from installed import compile_package

CASES = (
    ("defaults (xavier, relu, x + F(x))", []),
    ("--activation tanh", ["--activation", "tanh"]),
    ("--init he --block 'F(x)' (with the phase)", ["--init", "he", "--block", "F(x)"]),
    ("--init he --norm pre", ["--init", "he", "--norm", "pre"]),
    ("--init he --dropout 0.1 --format json", ["--init", "he", "--dropout", "0.1",
                                               "--format", "json"]),
    ("tanh(W(x)), --fan-in-variance 2 --sigma-b2 0.1 --depth 50",
     ["--block", "tanh(W(x))", "--fan-in-variance", "2", "--sigma-b2", "0.1",
      "--depth", "50"]),
)
BASELINE = [sys.executable, "-c", "import sympy"]


def _wall(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - start, done.returncode


def main(repeat: int = 5) -> None:
    """Time every case against the baseline, alternating, and print one table."""
    compile_package()
    _wall([sys.executable, "-m", "derive", "kernel"])  # warm the file cache
    print("| case | exit code | median wall | slowest | `import sympy` | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, args in CASES:
        walls, bases, code = [], [], 0
        for _ in range(repeat):
            wall, code = _wall([sys.executable, "-m", "derive", "kernel", *args])
            walls.append(wall)
            bases.append(_wall(BASELINE)[0])
        wall, base = statistics.median(walls), statistics.median(bases)
        print(f"| {name} | {code} | {wall:.2f} s | {max(walls):.2f} s | {base:.2f} s | "
              f"{wall / base:.2f}× |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each case")
    main(parser.parse_args().repeat)
