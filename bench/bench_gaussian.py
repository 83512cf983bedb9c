"""Time the Gaussian moments: cold derivations, cached calls, tanh quadrature.

Run: ``python3 bench/bench_gaussian.py``. Prints a Markdown table. Cold
derivations run in a fresh process each (the cost of the first call); the rest
run in this process, interleaved round by round, so that a noisy shared
machine slows them alike. The tanh rows compare the machine-precision
exp-sinh rule with ``mpmath.quad`` at the same 15 digits, side by side.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import mpmath
import sympy

from derive.derivation.symbols import k, q
from derive.gaussian.moments import TanhMoment, _tanh_moment, gaussian_moment
from derive.inputs.choices import ACTIVATIONS

ROUNDS = 3


def cold(activation: str) -> float:
    """Seconds for the first call in a fresh process (import excluded)."""
    code = (
        "import time, derive.gaussian.moments as g, derive.derivation.symbols as m; "
        "t = time.perf_counter(); "
        f"g.gaussian_moment({activation!r}, m.q(m.k - 1)); "
        f"g.gaussian_moment({activation!r}, m.q(m.k - 1), derivative=True); "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout)


def per_call(fn: Callable[[int], object], calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls


def mpmath_tanh(value: float) -> float:
    """The same moment by mpmath.quad at 15 digits (the rule's slow alternative)."""
    with mpmath.workdps(15):
        std = mpmath.sqrt(value)
        return float(
            2 * mpmath.quad(lambda x: mpmath.tanh(std * x) ** 2 * mpmath.npdf(x), [0, mpmath.inf])
        )


def main() -> None:
    rows: dict[str, list[float]] = {}
    for activation in ACTIVATIONS:
        rows[f"first call, {activation} (both directions, fresh process)"] = [cold(activation)]
    for activation in ACTIVATIONS:  # warm the caches
        gaussian_moment(activation, q(k - 1))
    counter = iter(range(10**9))
    cases: dict[str, tuple[Callable[[int], object], int]] = {
        "cached call, gelu on q(k-1)": (lambda i: gaussian_moment("gelu", q(k - 1)), 2000),
        "new rational s2, gelu": (
            lambda i: gaussian_moment("gelu", sympy.Rational(next(counter) + 1, 7)), 50),
        "new rational s2, relu": (
            lambda i: gaussian_moment("relu", sympy.Rational(next(counter) + 1, 7)), 200),
        "tanh float, new value (exp-sinh rule)": (
            lambda i: float(TanhMoment(sympy.Float(1 + next(counter) * 1e-3))), 200),
        "tanh float, new value (mpmath.quad, 15 digits)": (
            lambda i: mpmath_tanh(1 + next(counter) * 1e-3), 20),
        "tanh float, cached value": (lambda i: float(TanhMoment(sympy.Float(1.5))), 2000),
        "tanh 30 digits, new value (mpmath.quad)": (
            lambda i: TanhMoment(sympy.Rational(1000 + next(counter), 1000)).evalf(30), 10),
    }
    for _ in range(ROUNDS):
        for name, (fn, calls) in cases.items():
            rows.setdefault(name, []).append(per_call(fn, calls))
    fast = statistics.median(rows["tanh float, new value (exp-sinh rule)"])
    slow = statistics.median(rows["tanh float, new value (mpmath.quad, 15 digits)"])
    print("| measurement | median time | per |")
    print("| --- | ---: | --- |")
    for name, times in rows.items():
        value = statistics.median(times)
        shown = f"{value * 1e3:.3f} ms" if value < 1 else f"{value:.2f} s"
        print(f"| {name} | {shown} | {'run' if 'first' in name else 'call'} |")
    print(f"\nmpmath.quad / exp-sinh rule at 15 digits: {slow / fast:.0f}x "
          f"(cache: {_tanh_moment.cache_info().currsize} values)")


if __name__ == "__main__":
    main()
