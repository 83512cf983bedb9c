"""Benchmark `derive check`: wall time of the default run (the whole grid) and its parts.

Prints a Markdown table. Rows:
- `derive check` with its defaults, as a user runs it (a fresh process), with the
  BLAS library's default threads and with one thread (OPENBLAS_NUM_THREADS=1);
- inside one process: the derivations of the grid's configurations (every preset,
  derive.variance) and the simulation of the whole grid, run side by side;
- shared products against one configuration at a time, for a slice of the grid.

Usage: python bench/bench_check.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable

from installed import compile_package

DEFAULTS = {"depth": 6, "width": 512, "seeds": 32, "batch": 16}


def cli_run(threads: str | None) -> tuple[float, int]:
    env = dict(os.environ)
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = threads
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "derive", "check"], env=env,
                          capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done.returncode


def timed(function: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    rows: list[tuple[str, float, str]] = []
    for _ in range(args.repeat):
        for threads, name in ((None, "default threads"), ("1", "OPENBLAS_NUM_THREADS=1")):
            seconds, code = cli_run(threads)
            rows.append((f"`derive check` (every preset, 170 configurations), {name}", seconds,
                         f"exit {code}"))

    from derive.simulation.networks import default_grid, derived, grid, measure

    configs = default_grid()
    depth = DEFAULTS["depth"]
    rows.append((f"derivations, {len(configs)} x derive.variance profiles",
                 timed(lambda: [derived(c, depth) for c in configs]), "in process"))
    rows.append(("simulation of the grid (shared products)",
                 timed(measure, configs, **DEFAULTS), "in process"))
    part = grid(["he"], None, ["pre"])
    together = timed(measure, part, **DEFAULTS)
    alone = sum(timed(measure, [c], **DEFAULTS) for c in part)
    rows.append((f"{len(part)} configurations together", together, "in process"))
    rows.append((f"{len(part)} configurations one at a time", alone,
                 f"ratio {alone / together:.2f}"))

    print(f"settings: {DEFAULTS}, {os.cpu_count()} CPUs\n")
    print("| measurement | seconds | note |")
    print("| --- | ---: | --- |")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.1f} | {note} |")


if __name__ == "__main__":
    main()
