"""`derive paths`: formats, streaming output, counts, lengths and bad input."""

from __future__ import annotations

import decimal
import json
import math
import subprocess
import sys

import pytest
from cli_runner import run_paths as run

from derive.pathsums.expansion import iter_terms
from derive.pathsums.limits import Wrt
from derive.pathsums.notation import gradient_latex, term_latex

# Prince, Understanding Deep Learning, eq. 11.6 (later blocks on the left).
EQ_11_6 = (
    "∂y/∂f₁ = I + ∂f₂/∂f₁ + ∂f₃/∂f₁ + (∂f₃/∂f₂)(∂f₂/∂f₁) + ∂f₄/∂f₁ + (∂f₄/∂f₂)(∂f₂/∂f₁)"
    " + (∂f₄/∂f₃)(∂f₃/∂f₁) + (∂f₄/∂f₃)(∂f₃/∂f₂)(∂f₂/∂f₁)"
)


def test_depth_four_text_is_eq_11_6(capsysbinary) -> None:
    code, out, err = run(capsysbinary, "--depth", "4")
    assert (code, err) == (0, "")
    assert out == EQ_11_6 + "\n8 terms (2^3), one path per subset of blocks 2..4\n"


def test_jacobian_notation_and_wrt_x(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "3", "--wrt", "x", "--notation", "jacobian")
    first = out.splitlines()[0]
    assert first == "∂y/∂x = I + J₁ + J₂ + J₂J₁ + J₃ + J₃J₁ + J₃J₂ + J₃J₂J₁"


def test_json_is_ordered_complete_and_stable(capsysbinary) -> None:
    args = ("--depth", "12", "--wrt", "2", "--format", "json")
    code, out, _ = run(capsysbinary, *args)
    _, again, _ = run(capsysbinary, *args)
    assert code == 0 and out == again
    terms = list(iter_terms(12, 2))
    expected = {
        "depth": 12,
        "wrt": 2,
        "notation": "udl",
        "count": 1024,
        "terms": [list(t) for t in terms],
        "latex": gradient_latex(Wrt(2)) + " = " + " + ".join(term_latex(t, Wrt(2)) for t in terms),
    }
    assert out == json.dumps(expected) + "\n"
    data = json.loads(out)
    assert data["terms"][:4] == [[], [3], [4], [4, 3]] and len(data["terms"]) == 2**10


def test_json_wrt_x(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "2", "--wrt", "x", "--format", "json")
    assert json.loads(out)["wrt"] == "x" and json.loads(out)["terms"] == [[], [1], [2], [2, 1]]


def test_latex_is_an_align_broken_over_lines(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "6", "--format", "latex")
    lines = out.splitlines()
    assert lines[0].startswith("% 32 terms") and lines[1:3] == ["{\\allowdisplaybreaks",
                                                                "\\begin{align*}"]
    assert lines[-2:] == ["\\end{align*}", "}"]
    rows = lines[3:-2]
    assert len(rows) > 3 and rows[0].startswith(gradient_latex(Wrt(1)) + " &= I + ")
    assert all(r.endswith(" \\\\") for r in rows[:-1]) and all(r.startswith("&") for r in rows[1:])
    body = " ".join(r.removesuffix(" \\\\") for r in rows)
    assert body.count("\\frac{\\partial f_") == sum(len(t) for t in iter_terms(6))


def test_short_latex_is_a_bare_align(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "3", "--format", "latex", "--notation", "jacobian")
    assert out == ("% 4 terms (2^2), one path per subset of blocks 2..3\n\\begin{align*}\n"
                   "\\frac{\\partial y}{\\partial f_{1}} &= I + J_{2} + J_{3} + J_{3} J_{2}\n"
                   "\\end{align*}\n")


def test_markdown_is_display_math(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "4", "--format", "markdown", "--notation", "jacobian")
    assert out.startswith("$$\n\\begin{aligned}\n\\frac{\\partial y}{\\partial f_{1}} &= I + J_{2}")
    assert "\\end{aligned}\n$$\n\n8 terms (2^3)" in out


def test_count_and_lengths(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "13", "--count", "--lengths")
    lines = out.splitlines()
    assert lines[0] == "4096" and lines[2].split() == ["length", "terms"]
    rows = [tuple(map(int, line.split())) for line in lines[3:]]
    assert rows == [(r, math.comb(12, r)) for r in range(13)]
    _, out, _ = run(capsysbinary, "--depth", "13", "--wrt", "x", "--lengths", "--count",
                    "--format", "json")
    data = json.loads(out)
    assert data["count"] == 8192 and data["log2_count"] == 13
    assert data["lengths"] == {str(r): math.comb(13, r) for r in range(14)}


def test_count_at_depth_10000_is_exact(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "10000", "--count")
    assert out == str(2**9999) + "\n"


def test_huge_numbers_are_shown_short(capsysbinary) -> None:
    _, out, _ = run(capsysbinary, "--depth", "100000", "--count")
    exact = decimal.Context(prec=6).power(decimal.Decimal(2), 99999)  # rounded once
    mantissa, exponent = f"{exact:e}".split("e")
    assert out == f"2^99999 ≈ {mantissa}e{int(exponent)}\n" == "2^99999 ≈ 4.99501e30102\n"
    _, out, _ = run(capsysbinary, "--depth", "100000", "--count", "--format", "latex")
    assert out == "2^{99999} \\approx 4.99501 \\times 10^{30102}\n"
    _, out, _ = run(capsysbinary, "--depth", "20000", "--wrt", "x", "--lengths",
                    "--format", "json")
    lengths = json.loads(out)["lengths"]
    assert len(lengths) == 20001 and lengths["2"] == 20000 * 19999 // 2
    middle = lengths["10000"]  # C(20000, 10000) ≈ 2^20000 / sqrt(pi * 10000)
    mantissa, exponent = middle.split("e")
    expected = 20000 * math.log10(2) - 0.5 * math.log10(math.pi * 10000)
    assert abs(math.log10(float(mantissa)) + int(exponent) - expected) < 1e-4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--depth", "0"), "--depth must be an integer >= 1 and <= 10^18, got '0'"),
        (("--depth", "abc"), "--depth must be an integer >= 1 and <= 10^18, got 'abc'"),
        (("--depth", "2.5"), "got '2.5'"),
        (("--depth", "4", "--wrt", "5"), "--wrt must be a block index 1..4 or 'x', got '5'"),
        (("--depth", "4", "--wrt", "0"), "got '0'"),
        (("--depth", "4", "--wrt", "y"), "got 'y'"),
        (("--format", "pdf"), "'pdf' is not one of 'text', 'latex', 'markdown', 'json'"),
        (("--notation", "book"), "'book' is not one of 'udl', 'jacobian'"),
        (("--depth", "24"), "2^23 terms, more than 2^22 = 4194304 to enumerate: use --count or"),
        (("--depth", "0", "--count"), "got '0'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsysbinary, args, message) -> None:
    code, out, err = run(capsysbinary, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_force_lifts_the_limit(capsysbinary, monkeypatch) -> None:
    monkeypatch.setattr("derive.pathsums.limits.MAX_TERMS", 4)
    code, _, err = run(capsysbinary, "--depth", "4", "--notation", "jacobian")
    assert code == 2 and "--force" in err
    code, out, _ = run(capsysbinary, "--depth", "4", "--notation", "jacobian", "--force")
    assert code == 0 and out.startswith("∂y/∂f₁ = I + J₂ + J₃ + J₃J₂ + J₄ + ")


def test_help_has_examples(capsysbinary) -> None:
    code, out, _ = run(capsysbinary, "--help")
    assert code == 0 and "Examples:" in out and "derive paths --depth 4 --wrt x" in out


def test_subprocess_no_traceback_and_no_sympy() -> None:
    code = (
        "import sys\n"
        "from derive.commands.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    sys.stderr.write('sympy loaded' if 'sympy' in sys.modules else '')\n"
    )
    ok = subprocess.run([sys.executable, "-c", code, "paths", "--depth", "5"],
                        capture_output=True, text=True, encoding="utf-8")
    assert ok.returncode == 0 and ok.stderr == "" and ok.stdout.count(" + ") == 15
    bad = subprocess.run([sys.executable, "-m", "derive", "paths", "--wrt", "z"],
                         capture_output=True, text=True, encoding="utf-8")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "derive: error: --wrt must be a block index 1..4 or 'x', got 'z'\n"
