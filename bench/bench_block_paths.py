"""Speed of `derive paths --block EXPR` and of the gradient shares by path length.

Run: python3 bench/bench_block_paths.py [--repeat 3]

Prints a Markdown table. Command-line timings are wall clock of a child process
(start-up and the SymPy import included), with the child's peak RSS (see
bench_paths.run_cli); the API timing runs in this process after a warm-up.
"""

from __future__ import annotations

import argparse
import time

from bench_paths import best_of, run_cli
from installed import compile_package

BLOCKS = ("x + F(LN(x))", "LN(x + F(x))", "(x + F(x))/sqrt(2)", "x + alpha*F(x)")


def main() -> None:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    repeat = parser.parse_args().repeat
    rows: list[tuple[str, str, str, bool]] = []

    for spec in BLOCKS:
        wall, rss = run_cli(["paths", "--depth", "20", "--block", spec], repeat)
        rows.append((f"`derive paths --depth 20 --block '{spec}'` (524,288 terms), wall / RSS",
                     f"{wall:.2f} s / {rss:.0f} MB", "< 2 s, < 150 MB", wall < 2 and rss < 150))
    wall, rss = run_cli(["paths", "--depth", "20"], repeat)
    rows.append(("`derive paths --depth 20` (the plain block, unchanged), wall / RSS",
                 f"{wall:.2f} s / {rss:.0f} MB", "< 3 s, < 150 MB", wall < 3 and rss < 150))

    wall, _ = run_cli(["paths", "--depth", "54", "--wrt", "x", "--lengths", "--block", "pre",
                       "--init", "he"], repeat)
    rows.append(("`derive paths --depth 54 --wrt x --lengths --block pre --init he` (exact)",
                 f"{wall:.2f} s", "< 1 s", wall < 1))
    for spec in ("none", "pre", "post"):
        args = ["paths", "--depth", "10000", "--wrt", "x", "--lengths", "--block", spec,
                "--init", "he"]
        wall, rss = run_cli(args, repeat)
        rows.append((f"`derive paths --depth 10000 --wrt x --lengths --block {spec} --init he`",
                     f"{wall:.2f} s / {rss:.0f} MB", "< 1 s", wall < 1))

    from derive.pathsums.by_length import path_gradients

    path_gradients(10, block="pre", init="he")  # warm the block's rules
    seconds = best_of(lambda: path_gradients(10_000, block="pre", init="he").rows, repeat)
    rows.append(("`path_gradients(10_000, block='pre', init='he').rows` in process",
                 f"{seconds:.2f} s", "< 1 s", seconds < 1))
    start = time.perf_counter()
    deepest = path_gradients(100_000, block="pre", init="he")
    assert len(deepest.rows) == 100_001
    rows.append(("`path_gradients(100_000, block='pre', init='he')` (the deepest allowed)",
                 f"{time.perf_counter() - start:.1f} s", "works", True))

    print("| measurement | result | target | met |")
    print("| --- | ---: | --- | :---: |")
    for name, result, target, met in rows:
        print(f"| {name} | {result} | {target} | {'yes' if met else 'NO'} |")


if __name__ == "__main__":
    main()
