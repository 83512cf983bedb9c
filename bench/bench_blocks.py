"""Speed of the block language: every preset over the grid, and one block on the command line.

Run: ``python3 bench/bench_blocks.py``. Prints a Markdown table. The grid runs in a
fresh interpreter (cold caches, imports included); each command is a fresh process.
"""

from __future__ import annotations

from bench_variance import python_output, wall_time
from installed import compile_package

GRID = """
import time
t0 = time.perf_counter()
c0 = time.process_time()
from derive.blocks.presets import PRESETS
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS
from derive.simulation.networks import checkable
from derive.recursions.analysis import variance
count = 0
for preset in PRESETS:
    name = checkable(preset)  # the symbols at the check's values, so every value is a number
    for init in INITS:
        for act in ACTIVATIONS:
            for branch in BRANCHES:
                a = variance(init, act, branch=branch, block=name)
                for r in (a.forward, a.backward):
                    r.closed_form, r.growth, r.at(50)
                count += 1
print(count, time.perf_counter() - t0, time.process_time() - c0)
"""

COMMANDS = (
    ["variance", "--init", "he", "--block", "(x + F(x))/sqrt(2)"],
    ["variance", "--init", "he", "--block", "x + alpha*F(x/std(x))"],
    ["variance", "--init", "he", "--activation", "gelu", "--block", "x + F(BN(x))"],
    ["variance", "--block", "x + LN(F(LN(x)))", "--activation", "tanh", "--branch", "mlp"],
    ["variance", "--init", "he", "--compare"],
)


def main() -> None:
    """Run the measurements and print one Markdown table."""
    compile_package()
    runs = [tuple(float(v) for v in python_output(GRID).split()) for _ in range(2)]
    count, wall, cpu = min(runs, key=lambda r: r[1])
    rows = [(f"every preset over the grid: {int(count)} configurations x 2 directions, closed "
             "forms, growth, values at K = 50 (cold, fresh process, best of 2)",
             f"{wall:.2f} s wall, {cpu:.2f} s CPU", "< 10 s")]
    for args in COMMANDS:
        wall, cpu = wall_time(args)
        shown = " ".join(f"'{a}'" if " " in a or "(" in a else a for a in args)
        rows.append((f"`derive {shown}`, start-up included (median of 3)",
                     f"{wall:.2f} s wall, {cpu:.2f} s CPU", "< 2 s"))
    print("| measurement | result | target |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
