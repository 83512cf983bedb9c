"""Speed of `derive paths`: streaming, start-up, counts, and SymPy's expand for scale.

Run: python3 bench/bench_paths.py [--repeat 3]

Prints a Markdown table. Command-line timings are wall clock of a child process
(start-up included), with the child's peak RSS from os.wait4; the depth-16
comparison runs our enumeration and sympy.expand of the same non-commutative
product side by side in this process, so the ratio is robust on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from installed import compile_package


def _command() -> list[str]:
    exe = shutil.which("derive")
    return [exe] if exe else [sys.executable, "-m", "derive"]


def run_cli(args: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time (s) and the largest peak RSS (MB) of ``derive ARGS`` > /dev/null.

    The peak RSS comes from GNU time's report on its own child, when installed:
    a child forked straight from this process would inherit this process's
    high-water mark on Linux.
    """
    timer = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    best, peak = float("inf"), 0.0
    for _ in range(repeat):
        prefix = [timer, "-f", "%M"] if timer else []
        start = time.perf_counter()
        child = subprocess.run([*prefix, *_command(), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, check=False)
        wall = time.perf_counter() - start
        if child.returncode != 0:
            raise SystemExit(f"derive {' '.join(args)} failed: {child.stderr.strip()}")
        rss = float(child.stderr.split()[-1]) / 1024 if timer else float("nan")
        best, peak = min(best, wall), max(peak, rss)
    return best, peak


def best_of(function, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    repeat = parser.parse_args().repeat

    rows: list[tuple[str, str, str, bool]] = []

    wall, rss = run_cli(["paths", "--depth", "20", "--format", "text"], repeat)
    rows.append(("`derive paths --depth 20 --format text` (524,288 terms), wall",
                 f"{wall:.2f} s", "< 3 s", wall < 3))
    rows.append(("same, peak RSS", f"{rss:.0f} MB", "< 150 MB", rss < 150))
    wall, rss = run_cli(["paths", "--depth", "20", "--notation", "jacobian"], repeat)
    rows.append(("`derive paths --depth 20 --notation jacobian`, wall / peak RSS",
                 f"{wall:.2f} s / {rss:.0f} MB", "-", True))

    wall, _ = run_cli(["paths", "--depth", "4"], max(repeat, 5))
    rows.append(("`derive paths --depth 4` (start-up included), wall", f"{wall:.2f} s",
                 "< 1 s", wall < 1))
    for flag in ("--count", "--lengths"):
        wall, _ = run_cli(["paths", "--depth", "10000", flag], repeat)
        rows.append((f"`derive paths --depth 10000 {flag}`, wall", f"{wall:.2f} s", "< 1 s",
                     wall < 1))
    wall, rss = run_cli(["paths", "--depth", "100000", "--count", "--lengths"], 1)
    rows.append(("`derive paths --depth 100000 --count --lengths`, wall / peak RSS",
                 f"{wall:.2f} s / {rss:.0f} MB", "works", True))

    for args in (["--depth", "1000000000000000000", "--count"],
                 ["--depth", "200000", "--lengths"]):
        wall, rss = run_cli(["paths", *args], 1)
        rows.append((f"`derive paths {' '.join(args)}`, wall / peak RSS",
                     f"{wall:.2f} s / {rss:.0f} MB", "at once", wall < 10))

    import sympy  # after the command-line runs: only this process needs it

    from derive.pathsums.expansion import PathSum, iter_terms
    from derive.pathsums.notation import iter_text_chunks

    depth = 16
    ours_text = best_of(lambda: sum(map(len, iter_text_chunks(depth))), repeat)
    ours_terms = best_of(lambda: sum(1 for _ in iter_terms(depth)), repeat)
    product = PathSum(depth).factored
    start = time.perf_counter()
    expanded = sympy.expand(product)
    theirs = time.perf_counter() - start
    assert len(expanded.args) == 2 ** (depth - 1)
    ratio = theirs / ours_text
    rows.append((f"depth {depth}: all 32,768 terms as text (in process)", f"{ours_text:.3f} s",
                 "-", True))
    rows.append((f"depth {depth}: all terms as tuples (in process)", f"{ours_terms:.3f} s", "-",
                 True))
    rows.append((f"depth {depth}: `sympy.expand` of the product", f"{theirs:.2f} s", "-", True))
    rows.append(("speed-up over `sympy.expand` (text)", f"{ratio:.0f}x", ">= 50x", ratio >= 50))

    print("| measurement | result | target | ok |")
    print("| --- | ---: | ---: | :---: |")
    for name, value, target, ok in rows:
        print(f"| {name} | {value} | {target} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
