"""Benchmark `derive check --kernel`: wall time of the default run against `import sympy`.

Each run is a fresh `derive check --kernel` process, as a user runs it (start-up
included, the BLAS library's default threads); `python -c 'import sympy'` is timed in
the same run, before and after each check, as the baseline that shows how fast the
machine is at the moment; then the same check with OPENBLAS_NUM_THREADS set to the
number of CPUs (the check uses one BLAS thread unless told). Also, inside one process
(one BLAS thread): the derivations of the grid (derive.kernel profiles) and the
simulation alone. Prints a Markdown table; the budget of the default run is 60 s.

Usage: python bench/bench_check_kernel.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from installed import compile_package

BASELINE = [sys.executable, "-c", "import sympy"]
CHECK = [sys.executable, "-m", "derive", "check", "--kernel"]


def wall(command: list[str], threads: str | None = None) -> tuple[float, int, str]:
    env = dict(os.environ)
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = threads
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()
    return time.perf_counter() - start, done.returncode, last


def main() -> None:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    rows: list[tuple[str, str, str]] = []
    checks, bases = [], []
    threaded = []
    for _ in range(args.repeat):
        bases.append(wall(BASELINE)[0])
        seconds, code, summary = wall(CHECK)
        bases.append(wall(BASELINE)[0])
        checks.append(seconds)
        rows.append(("`derive check --kernel` (defaults: one BLAS thread)", f"{seconds:.1f}",
                     f"exit {code}; {summary}"))
        seconds, code, _ = wall(CHECK, threads=str(os.cpu_count() or 1))
        threaded.append(seconds)
        rows.append((f"the same with OPENBLAS_NUM_THREADS={os.cpu_count()}", f"{seconds:.1f}",
                     f"exit {code}"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    base = statistics.median(bases)
    rows.append(("`python -c 'import sympy'` (median, same run)", f"{base:.2f}", ""))
    rows.append(("ratio of the median check to the baseline",
                 f"{statistics.median(checks) / base:.0f}x", f"peak {peak:.0f} MB"))
    rows.append(("ratio with every thread", f"{statistics.median(threaded) / base:.0f}x", ""))

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the command does
    from derive.simulation.kernel_check import (
        DEFAULTS,
        default_kernel_grid,
        derived_kernel,
        measure_kernel,
    )

    settings = {k: int(DEFAULTS[k]) for k in ("depth", "width", "seeds")}
    configs = default_kernel_grid()
    start = time.perf_counter()
    for config in configs:
        derived_kernel(config, settings["depth"], width=settings["width"])
    rows.append((f"derivations, {len(configs)} kernel profiles",
                 f"{time.perf_counter() - start:.1f}", "in process"))
    start = time.perf_counter()
    measure_kernel(configs, pairs=int(DEFAULTS["pairs"]), **settings)
    rows.append(("simulation of the grid", f"{time.perf_counter() - start:.1f}", "in process"))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"settings: {DEFAULTS}, {os.cpu_count()} CPUs, load average {load:.1f}\n")
    print("| measurement | seconds | note |")
    print("| --- | ---: | --- |")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds} | {note} |")


if __name__ == "__main__":
    main()
