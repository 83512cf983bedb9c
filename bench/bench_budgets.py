"""Benchmark the simulation's work estimate against the wall time it stands for.

Prints a Markdown table: for a few runs of ``derive.simulation.networks.compare``
(one configuration or a grid, small and large widths, many seeds, ``--weights``
and ``--lengths``), the work :func:`derive.simulation.resources.simulation_work`
estimates, the wall time, and their ratio, the operations a second this machine
does. ``MAX_WORK`` and the weights ``ELEMENT``, ``DRAW`` and ``STEP`` of
``derive/simulation/resources.py`` are set from such tables.

Usage: python bench/bench_budgets.py
"""

from __future__ import annotations

import time

from derive.simulation.networks import CHUNK, batching, compare, derived, grid, numeric
from derive.simulation.resources import simulation_work

RUNS = [
    ("he/relu/none/single, width 16, 4000 networks",
     grid(["he"], ["relu"], ["none"], ["single"]), dict(width=16, seeds=4000)),
    ("he/relu/none/single, width 2048, 4 networks",
     grid(["he"], ["relu"], ["none"], ["single"]), dict(width=2048, seeds=4)),
    ("he/relu/pre/mlp (ratio 4), width 512, 8 networks",
     grid(["he"], ["relu"], ["pre"], ["mlp"], mlp_ratio=4), dict(width=512, seeds=8)),
    ("bn-first, width 256, 64 networks",
     grid(["he"], ["relu"], [], ["single"], blocks=["bn-first"]), dict(width=256, seeds=64)),
    ("he, relu and tanh, every preset, width 128, 16 networks",
     grid(["he"], ["relu", "tanh"]), dict(width=128, seeds=16)),
    ("he/relu/pre/single --weights, width 256, 32 networks",
     grid(["he"], ["relu"], ["pre"], ["single"]), dict(width=256, seeds=32, weights=True)),
    ("he/relu/none/single --lengths, depth 30, width 128",
     grid(["he"], ["relu"], ["none"], ["single"]), dict(width=128, seeds=16, depth=30,
                                                        lengths=True)),
]


def main() -> None:
    print("| run | estimated work | wall time | operations a second |")
    print("| --- | --- | --- | --- |")
    for name, configs, options in RUNS:
        depth, width, seeds = options.get("depth", 6), options["width"], options["seeds"]
        weights, lengths = options.get("weights", False), options.get("lengths", False)
        configs = [numeric(c, width) for c in configs]
        work = simulation_work(configs, [batching(c, seeds, 16) for c in configs], depth=depth,
                               width=width, seeds=seeds, chunk=CHUNK, weights=weights,
                               lengths=lengths)
        for config in configs:  # the derivations apart: only the simulation is timed
            derived(config, depth)
        start = time.perf_counter()
        compare(configs, depth, width, seeds, batch=16, weights=weights, lengths=lengths)
        wall = time.perf_counter() - start
        print(f"| {name} | {work:.2e} | {wall:.1f} s | {work / wall:.1e} |", flush=True)


if __name__ == "__main__":
    main()
