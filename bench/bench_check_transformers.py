"""Benchmark `derive check --transformers`: wall time of the default run against `import sympy`.

Each run is a fresh `derive check --transformers` process, as a user runs it (start-up
included, one BLAS thread unless OPENBLAS_NUM_THREADS says otherwise); `python -c 'import
sympy'` is timed in the same run, before and after each check, as the baseline that shows
how fast the machine is at the moment; then the same check with OPENBLAS_NUM_THREADS set to
the number of CPUs. Also, inside one process (one BLAS thread): the derivations of the five
presets (derive.kernel profiles, standard attention's softmax quadratures included) and
the simulation alone, and the CPU time of the default run (on a shared machine the wall
time also holds the time other processes took). Prints a Markdown table; the budget of
the default run is 60 s.

Usage: python bench/bench_check_transformers.py [--repeat N]
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
CHECK = [sys.executable, "-m", "derive", "check", "--transformers"]


def wall(command: list[str], threads: str | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the child, exit code, last line of output)."""
    env = dict(os.environ)
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = threads
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()
    return seconds, cpu, done.returncode, last


def main() -> None:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    rows: list[tuple[str, str, str]] = []
    checks, bases, threaded = [], [], []
    for _ in range(args.repeat):
        bases.append(wall(BASELINE)[0])
        seconds, cpu, code, summary = wall(CHECK)
        bases.append(wall(BASELINE)[0])
        checks.append(seconds)
        rows.append(("`derive check --transformers` (defaults: one BLAS thread)",
                     f"{seconds:.1f}", f"exit {code}; CPU {cpu:.1f} s; {summary}"))
        seconds, cpu, code, _ = wall(CHECK, threads=str(os.cpu_count() or 1))
        threaded.append(seconds)
        rows.append((f"the same with OPENBLAS_NUM_THREADS={os.cpu_count()}", f"{seconds:.1f}",
                     f"exit {code}; CPU {cpu:.1f} s"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    base = statistics.median(bases)
    rows.append(("`python -c 'import sympy'` (median, same run)", f"{base:.2f}", ""))
    rows.append(("ratio of the median check to the baseline",
                 f"{statistics.median(checks) / base:.0f}x", f"peak {peak:.0f} MB"))
    rows.append(("ratio with every thread", f"{statistics.median(threaded) / base:.0f}x", ""))

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the command does
    from derive.blocks.presets import TRANSFORMER_PRESETS
    from derive.simulation.kernel_check import derived_kernel, kernel_grid
    from derive.simulation.token_check import DEFAULTS, measure_tokens

    configs = kernel_grid(["he"], ["relu"], blocks=tuple(TRANSFORMER_PRESETS))
    start = time.perf_counter()
    for config in configs:
        derived_kernel(config, int(DEFAULTS["depth"]), width=int(DEFAULTS["width"]))
    rows.append((f"derivations, {len(configs)} token-kernel profiles",
                 f"{time.perf_counter() - start:.1f}", "in process"))
    start = time.perf_counter()
    measure_tokens(configs, **{k: int(DEFAULTS[k]) for k in ("depth", "width", "heads",
                                                              "seeds")})
    rows.append(("simulation of the five presets", f"{time.perf_counter() - start:.1f}",
                 "in process"))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"settings: {DEFAULTS}, {os.cpu_count()} CPUs, load average {load:.1f}\n")
    print("| measurement | seconds | note |")
    print("| --- | ---: | --- |")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds} | {note} |")


if __name__ == "__main__":
    main()
