"""Wall time of ``derive notes`` (fresh process each run), printed as a Markdown table.

Run: ``python3 bench/bench_notes.py [--repeat 3]``. The runs of every command
are interleaved, so a noisy shared machine slows them alike; the table gives
the median wall time, the CPU time of the child (user + system, less
sensitive to load) and the ratio to ``derive --help`` (interpreter and start-up).
The budget for ``derive notes --format all`` (no --pdf) is 5 s, met by every run
that derives everything (``--no-cache``); the last row reads what a previous run
kept in the cache. A second process derives some sections and draws the
figures, so the CPU column (both processes) can exceed the wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from installed import compile_package

BUDGET = 5.0


CACHED = "derive notes --format all (a second run: cached)"


def _commands(out: Path) -> dict[str, list[str]]:
    derive = [sys.executable, "-m", "derive"]
    notes = [*derive, "notes", "--force", "--out"]
    return {
        "derive --help": [*derive, "--help"],
        "derive notes --format anki --no-cache": [*notes, str(out / "anki"), "--format",
                                                  "anki", "--no-cache"],
        "derive notes --format markdown --no-cache": [*notes, str(out / "md"), "--format",
                                                      "markdown", "--no-cache"],
        "derive notes --format all --no-cache": [*notes, str(out / "all"), "--format", "all",
                                                 "--no-cache"],
        CACHED: [*notes, str(out / "cached"), "--format", "all"],
    }


def main() -> None:
    compile_package()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="derive-bench-")
    try:
        _measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args: argparse.Namespace, tmp: str) -> None:
    commands = _commands(Path(tmp))
    env = dict(os.environ, DERIVE_CACHE_DIR=str(Path(tmp) / "cache"))
    subprocess.run(commands[CACHED], check=True, capture_output=True, env=env)  # fills it
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, command in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env)
            times[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime + after.ru_stime
                             - before.ru_utime - before.ru_stime)
    base = statistics.median(times["derive --help"])
    print(f"| command | median wall (s) of {args.repeat} | min wall (s) | median CPU (s) | "
          "ratio to --help | every run within 5 s |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        judged = name == "derive notes --format all --no-cache"
        verdict = ("yes" if max(values) < BUDGET else "no") if judged else ""
        print(f"| `{name}` | {median:.2f} | {min(values):.2f} | "
              f"{statistics.median(cpu[name]):.2f} | {median / base:.1f} | {verdict} |")
    main_cpu, drawing_cpu = zip(*(_split(Path(tmp)) for _ in range(args.repeat)), strict=True)
    print(f"\n`--format all --no-cache`, CPU of each process (median of {args.repeat}): first "
          f"{statistics.median(main_cpu):.2f} s, second process (sections and figures) "
          f"{statistics.median(drawing_cpu):.2f} s; "
          "on an idle machine the wall time is about the larger of the two.")


def _split(tmp: Path) -> tuple[float, float]:
    """CPU seconds of the first process and of the second, for --format all."""
    code = ("import resource, sys, time; import derive.studynotes.writer as n; "
            "n.build(sys.argv[1], 'all', 4, force=True, cache=False); "
            "c = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(time.process_time(), c.ru_utime + c.ru_stime)")
    with tempfile.TemporaryDirectory(dir=tmp) as out:
        done = subprocess.run([sys.executable, "-c", code, str(Path(out) / "o")], check=True,
                              capture_output=True, text=True)
    first, second = (float(v) for v in done.stdout.split())
    return first, second


if __name__ == "__main__":
    main()
