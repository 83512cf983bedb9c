"""Huge depths and sizes answer or refuse at once, with values checked independently."""

from __future__ import annotations

import json
import math
import tracemalloc

import mpmath
import pytest
import sympy

import derive
from derive.blocks.config import variance_config
from derive.commands.cli import main
from derive.errors import DeriveError
from derive.recursions.closed_forms import EXACT_DIGITS, MAX_ITERATED, PROFILE_POINTS
from derive.simulation import resources
from derive.simulation.networks import measure


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out, err


def _mpmath_power(base: mpmath.mpf, exponent: int) -> str:
    with mpmath.workdps(len(str(exponent)) + 30):
        return mpmath.nstr(mpmath.power(base, exponent), 14, min_fixed=1, max_fixed=0)


# --- paths ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [10**12, 10**18])
def test_count_is_right_in_every_digit_at_any_depth(capsys, depth: int) -> None:
    code, out, _ = run(capsys, "paths", "--depth", str(depth), "--count")
    exponent = depth - 1
    assert code == 0 and out.startswith(f"2^{exponent} ≈ ")
    mantissa, power = out.split("≈ ")[1].strip().split("e")
    expected_mantissa, expected_power = _mpmath_power(mpmath.mpf(2), exponent).split("e")
    assert int(power) == int(expected_power)
    assert abs(float(mantissa) - float(expected_mantissa)) < 1e-5


@pytest.mark.parametrize(("args", "message"), [
    (("--depth", "1000000000000"), "use --count"),
    (("--depth", "100000000000000000000"), "--depth must be an integer >= 1 and <= 10^18"),
    (("--depth", "1000000000000", "--lengths"), "more than 200001: use --count"),
    (("--depth", "60", "--force"), "more than the 2^48 that can be listed even with --force"),
])
def test_huge_paths_refuse_in_one_line(capsys, args: tuple[str, ...], message: str) -> None:
    code, out, err = run(capsys, "paths", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_api_counts_refuse_or_answer_exactly() -> None:
    assert derive.count_paths(10**6).bit_length() == 10**6
    for depth in (10**12, 10**18):
        with pytest.raises(DeriveError, match=f"has 2\\^{depth - 1} terms"):
            derive.count_paths(depth)
    with pytest.raises(DeriveError, match="must be an integer >= 1 and <= 10\\^18"):
        derive.count_paths(10**30)
    lengths = derive.path_lengths(10**12)
    assert len(lengths) == 10**12 and lengths[3] == math.comb(10**12 - 1, 3)
    p = derive.paths(10**12)
    assert "\\cdots" in p._repr_latex_() and p.later == 10**12 - 1
    for attempt in (lambda: len(p), lambda: p.count, lambda: p.blocks, lambda: p.derivation,
                    lambda: next(iter(derive.paths(10**12, force=True))), p.check_size):
        with pytest.raises(DeriveError):
            attempt()
    assert next(iter(derive.paths(60, force=True))) == ()


# --- variance ------------------------------------------------------------------------

def test_values_stay_exact_while_python_prints_them() -> None:
    he = derive.variance("he", "relu")
    exact_depth = int(EXACT_DIGITS / math.log10(2))  # the last 2^K of at most 4300 digits
    assert he.forward.at(exact_depth) == 2**exact_depth
    assert isinstance(he.forward.at(exact_depth + 10), sympy.Float)
    for depth in (20_000, 10**9, 10**18):
        for value in (he.forward.at(depth), he.backward.at(depth)):
            mantissa, power = str(value).split("e+")
            expected_mantissa, expected_power = _mpmath_power(mpmath.mpf(2), depth).split("e")
            assert int(power) == int(expected_power)
            assert abs(float(mantissa) / float(expected_mantissa) - 1) < 1e-13


def test_xavier_at_depth_100000_against_mpmath() -> None:
    value = derive.variance("xavier", "relu").forward.at(100_000)
    expected = mpmath.power(mpmath.mpf(3) / 2, 100_000)
    assert abs(mpmath.mpf(value) / expected - 1) < 1e-13
    symbolic = derive.variance("xavier", "relu").forward.at(100_000, q0="s")
    assert symbolic.free_symbols == {sympy.Symbol("s", positive=True)}


def test_profile_at_blocks_is_the_full_profile_there() -> None:
    for norm in ("none", "pre", "post"):
        analysis = derive.variance("he", "relu", norm)
        for recursion in (analysis.forward, analysis.backward):
            full = recursion.profile(40)
            assert recursion.profile(40, blocks=[0, 7, 40]) == [full[0], full[7], full[40]]


def test_json_profile_is_sampled_and_valid_at_depth_100000() -> None:
    data = derive.variance("he", "relu").to_dict(100_000)
    text = json.dumps(data, allow_nan=False)
    assert len(text) < 500_000
    forward = data["forward"]
    assert forward["profile_sampled"] is True and len(forward["profile"]) == PROFILE_POINTS
    assert forward["profile_k"][0] == 0 and forward["profile_k"][-1] == 100_000
    assert forward["profile_float"][-1] is None  # 2^100000 is no double
    small = derive.variance("he", "relu").forward.to_dict(3)
    assert small["profile_sampled"] is False and small["profile_k"] == [0, 1, 2, 3]


def test_iteration_without_closed_form_refuses_past_its_cap(capsys) -> None:
    tanh = derive.variance("xavier", "tanh")
    with pytest.raises(DeriveError, match=f"iterated block by block, up to depth {MAX_ITERATED}"):
        tanh.forward.at(MAX_ITERATED + 1)
    code, _, err = run(capsys, "variance", "--activation", "tanh", "--depth", "1000000000")
    assert code == 2 and "no closed form" in err


@pytest.mark.parametrize("args", [
    ("--init", "he", "--depth", "20000"), ("--depth", "100000"),
    ("--init", "he", "--depth", "1000000000"), ("--init", "he", "--compare", "--depth", "100000"),
])
def test_variance_prints_values_at_huge_depths(capsys, args: tuple[str, ...]) -> None:
    code, out, err = run(capsys, "variance", *args)
    assert code == 0 and err == ""
    assert "e+" in out


def test_variance_json_at_depth_100000(capsys) -> None:
    code, out, _ = run(capsys, "variance", "--init", "he", "--depth", "100000", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["forward"]["value"].startswith("9.99002093014")
    assert len(data["backward"]["profile"]) == PROFILE_POINTS


# --- resources -----------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--width", "--batch"])
def test_check_refuses_what_the_machine_cannot_hold(capsys, option: str) -> None:
    code, out, err = run(capsys, "check", option, str(10**12))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "of memory, more than the" in err and "available" in err


def test_the_guard_uses_what_the_machine_has(monkeypatch) -> None:
    config = variance_config(init="he")
    monkeypatch.setattr(resources, "available_memory", lambda: 10**6)
    with pytest.raises(DeriveError, match=r"more than the 1\.0 MB available"):
        measure([config], depth=2, width=128, seeds=2, batch=4)
    monkeypatch.setattr(resources, "available_memory", lambda: None)
    assert len(measure([config], depth=2, width=128, seeds=2, batch=4)) == 1


def test_the_estimate_bounds_what_the_simulation_takes() -> None:
    from derive.simulation.networks import CHUNK, ROWS, batching, grid, numeric, skeleton

    for configs in (grid(["he"], ["relu"], ["pre"], ["single"]),
                    grid(["he"], ["relu"], dropout="1/10"), grid([], ["tanh"], ["none"], [])):
        configs = [numeric(c, 256) for c in configs]
        estimate = resources.simulation_bytes(configs, [batching(c, CHUNK, 8) for c in configs],
                                              depth=4, width=256, chunk=CHUNK, rows=ROWS,
                                              skeleton=skeleton)
        tracemalloc.start()
        measure(configs, depth=4, width=256, seeds=CHUNK, batch=8)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        arrays = estimate - resources.RUN_OVERHEAD  # what tracemalloc sees: NumPy's arrays
        assert peak < arrays < peak * 4, (len(configs), peak, estimate)


def test_available_memory_reads_the_machine() -> None:
    available = resources.available_memory()
    assert available is None or 10**6 < available < 10**16
