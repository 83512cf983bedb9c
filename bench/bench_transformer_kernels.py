"""How long the token kernels of the transformer presets take, and one ``derive kernel``
of a transformer layer.

Run: ``python3 bench/bench_transformer_kernels.py [--repeat N]``. Two cases, each a fresh
process timed with start-up:

- every transformer preset (``derive.blocks.presets.TRANSFORMER_PRESETS``, check values
  for their symbols) under each of the three attention modes, 16 tokens, depth 50, GELU
  and an MLP ratio of 4, forward and backward profiles, in one process (target: the
  standard mode's five presets under 10 s together);
- ``derive kernel --block transformer-pre --tokens 16 --depth 50`` (target: under 3 s).

``python -c 'import sympy'`` is timed in the same run, alternating, as the baseline.
Prints a Markdown table of median wall times and their ratio to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from installed import compile_package

PRESETS = """
import sys
import derive
from derive.blocks.presets import TRANSFORMER_PRESETS
count = 0
for mode in sys.argv[1].split(","):
    for preset in TRANSFORMER_PRESETS.values():
        derive.kernel(activation="gelu", mlp_ratio=4, block=preset.name, values=preset.check,
                      tokens=16, attention=mode, depth=50).profile()
        count += 1
print(count)
"""
CASES = (
    ("5 transformer presets, standard attention, depth 50, 16 tokens",
     [sys.executable, "-c", PRESETS, "standard"]),
    ("the same under uniform and tied attention (10 profiles)",
     [sys.executable, "-c", PRESETS, "uniform,tied"]),
    ("derive kernel --block transformer-pre --tokens 16 --depth 50",
     [sys.executable, "-m", "derive", "kernel", "--block", "transformer-pre", "--tokens", "16",
      "--depth", "50", "--activation", "gelu", "--mlp-ratio", "4"]),
    ("derive kernel --block attention-only --tokens 16 --depth 50 --format json",
     [sys.executable, "-m", "derive", "kernel", "--block", "attention-only", "--tokens", "16",
      "--depth", "50", "--format", "json"]),
)
BASELINE = [sys.executable, "-c", "import sympy"]


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, text=True)
    return time.perf_counter() - start


def main(repeat: int = 3) -> None:
    """Time every case against the baseline, alternating, and print one table."""
    compile_package()
    print("| case | median wall | slowest | `import sympy` | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, command in CASES:
        walls, bases = [], []
        for _ in range(repeat):
            walls.append(_wall(command))
            bases.append(_wall(BASELINE))
        wall, base = statistics.median(walls), statistics.median(bases)
        print(f"| {name} | {wall:.2f} s | {max(walls):.2f} s | {base:.2f} s | "
              f"{wall / base:.1f}× |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case")
    main(parser.parse_args().repeat)
