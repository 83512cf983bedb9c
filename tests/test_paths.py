"""The path expansion of dy/df_j against the chain rule, counts and the book.

Independent checks: SymPy's Matrix.jacobian of a concrete residual stack
(explicit non-linear maps with distinct, non-commuting Jacobians), a NumPy
product of (I + J_k), math.comb and Pascal's rule, SymPy's own expansion of
the product, and eq. 11.6 of Prince, Understanding Deep Learning (ch. 11).
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import sympy
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import derive
from derive.derivation.symbols import jacobian
from derive.errors import DeriveError
from derive.pathsums.expansion import MAX_TERMS, PathSum, count_paths, iter_terms, path_lengths
from derive.pathsums.limits import Wrt
from derive.pathsums.notation import latex_lines

DIM = 2
_H = sympy.symbols(f"h0:{DIM}")
_U = sympy.symbols(f"u0:{DIM}")


def _block(k: int) -> sympy.Matrix:
    """f_k(h): a distinct linear map plus quadratic terms, as a function of _H."""
    h = sympy.Matrix(_H)
    a = sympy.Matrix(DIM, DIM, lambda r, c: Fraction((k * (r + 2) + 3 * c + 1) % 7 - 3, 5))
    b = sympy.Matrix(DIM, DIM, lambda r, c: Fraction((k + 2 * r + c) % 5 - 2, 9))
    squares = sympy.Matrix([v**2 for v in _H])
    return a * h + b * squares + sympy.Matrix([Fraction(k, 11) * _H[0] * _H[1]] * DIM)


def _stack(depth: int) -> list[sympy.Matrix]:
    return [_block(k) for k in range(1, depth + 1)]


def _apply(f: sympy.Matrix, h: sympy.Matrix) -> sympy.Matrix:
    return f.xreplace(dict(zip(_H, h, strict=True)))


X0 = sympy.Matrix([sympy.Rational(1, 2), sympy.Rational(-1, 3)])


def _first_order(h: sympy.Matrix) -> sympy.Matrix:
    """Drop the terms of degree >= 2 in u: they do not change dy/du at u = 0."""

    def truncate(expr: sympy.Expr) -> sympy.Expr:
        poly = sympy.Poly(expr, *_U)
        return sum(
            (c * sympy.Mul(*(u**e for u, e in zip(_U, m, strict=True)))
             for m, c in poly.terms() if sum(m) <= 1),
            sympy.Integer(0),
        )

    return h.applyfunc(truncate)


def _chain_rule(depth: int, wrt: int | str, truncate: bool = True) -> sympy.Matrix:
    """dy/d(output of f_j) by SymPy: perturb h_j by u, differentiate y at u = 0."""
    u = sympy.Matrix(_U)
    j = 0 if wrt == "x" else wrt
    h = X0 + u if j == 0 else X0
    for k, f in enumerate(_stack(depth), start=1):
        h = h + _apply(f, h)
        if k == j:
            h = h + u
        if truncate and k >= j:
            h = _first_order(h)
    return h.jacobian(u).xreplace(dict.fromkeys(_U, 0)).applyfunc(sympy.nsimplify)


def _concrete_jacobians(depth: int) -> dict[int, sympy.Matrix]:
    """J_k = df_k/dh at the unperturbed h_{k-1}."""
    out, h = {}, X0
    for k, f in enumerate(_stack(depth), start=1):
        out[k] = _apply(f.jacobian(sympy.Matrix(_H)), h)
        h = h + _apply(f, h)
    return out


def _expansion(terms, jacobians: dict[int, sympy.Matrix]) -> sympy.Matrix:
    total = sympy.zeros(DIM, DIM)
    for term in terms:
        product = sympy.eye(DIM)
        for block in term:  # left to right, as written
            product = product * jacobians[block]
        total += product
    return total


CASES = [(n, w) for n in range(1, 7) for w in [*range(1, n + 1), "x"]]


@pytest.mark.parametrize(("depth", "wrt"), CASES)
def test_expansion_equals_chain_rule(depth: int, wrt: int | str) -> None:
    expected = _chain_rule(depth, wrt)
    got = _expansion(PathSum(depth, wrt).terms, _concrete_jacobians(depth))
    assert got == expected


def test_truncation_does_not_change_the_jacobian() -> None:
    """The full polynomial y(u), differentiated as is, gives the same matrix."""
    assert _chain_rule(4, "x", truncate=False) == _chain_rule(4, "x")
    assert _chain_rule(3, 1, truncate=False) == _chain_rule(3, 1)


def test_the_check_can_fail_jacobians_do_not_commute() -> None:
    """Writing the factors right to left gives a different matrix: order is tested."""
    jac = _concrete_jacobians(4)
    assert jac[3] * jac[2] != jac[2] * jac[3]
    reversed_terms = [tuple(reversed(t)) for t in PathSum(4, "x").terms]
    assert _expansion(reversed_terms, jac) != _chain_rule(4, "x")


@pytest.mark.parametrize(("depth", "wrt"), [(3, 1), (4, "x"), (5, 2)])
def test_expr_equals_chain_rule(depth: int, wrt: int | str) -> None:
    """The SymPy sum, with each J_k replaced by its concrete matrix."""
    jac = _concrete_jacobians(depth)
    total = sympy.zeros(DIM, DIM)
    for term in sympy.Add.make_args(PathSum(depth, wrt).expr):
        coefficient, factors = term.args_cnc()
        product = sympy.eye(DIM) * sympy.Mul(*coefficient)
        for symbol in factors:
            product = product * jac[int(symbol.name.split("_")[1])]
        total += product
    assert total == _chain_rule(depth, wrt)


@pytest.mark.parametrize(("depth", "wrt"), [(1, 1), (3, 1), (4, "x"), (6, 2)])
def test_expr_is_sympys_expansion_of_the_product(depth: int, wrt: int | str) -> None:
    paths = PathSum(depth, wrt)
    assert sympy.expand(paths.factored) == paths.expr
    assert len(sympy.Add.make_args(paths.expr)) == paths.count


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(1, 12),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    dim=st.integers(2, 4),
)
def test_random_matrices_product_equals_sum(depth: int, data, seed: int, dim: int) -> None:
    wrt = data.draw(st.sampled_from([*range(1, depth + 1), "x"]))
    rng = np.random.default_rng(seed)
    jac = {k: rng.normal(scale=0.6 / dim**0.5, size=(dim, dim)) for k in range(1, depth + 1)}
    product = np.eye(dim)
    for k in range(depth, 0 if wrt == "x" else wrt, -1):
        product = product @ (np.eye(dim) + jac[k])
    total = np.zeros((dim, dim))
    for term in PathSum(depth, wrt):
        factor = np.eye(dim)
        for block in term:
            factor = factor @ jac[block]
        total += factor
    np.testing.assert_allclose(total, product, rtol=1e-10, atol=1e-12)


# Prince, Understanding Deep Learning (2023), eq. 11.6, with the errata's order
# (later blocks on the left): the eight terms of df/df1 for four blocks.
EQ_11_6 = [
    "I",
    "∂f₂/∂f₁",
    "∂f₃/∂f₁",
    "(∂f₃/∂f₂)(∂f₂/∂f₁)",
    "∂f₄/∂f₁",
    "(∂f₄/∂f₂)(∂f₂/∂f₁)",
    "(∂f₄/∂f₃)(∂f₃/∂f₁)",
    "(∂f₄/∂f₃)(∂f₃/∂f₂)(∂f₂/∂f₁)",
]


def test_depth_four_is_eq_11_6_in_order() -> None:
    from derive.pathsums.notation import term_text

    paths = derive.paths(4)
    assert paths.terms == ((), (2,), (3,), (3, 2), (4,), (4, 2), (4, 3), (4, 3, 2))
    assert [term_text(t) for t in paths] == EQ_11_6
    assert paths.text() == "∂y/∂f₁ = " + " + ".join(EQ_11_6)


@pytest.mark.parametrize(("depth", "wrt"), [(1, 1), (5, "x"), (12, 3), (14, "x"), (15, 1)])
def test_order_is_binary_counting_with_block_j_plus_1_lowest(depth: int, wrt: int | str) -> None:
    j = 0 if wrt == "x" else wrt
    blocks = range(j + 1, depth + 1)
    expected = [
        tuple(sorted((b for b in blocks if index >> (b - j - 1) & 1), reverse=True))
        for index in range(2 ** len(blocks))
    ]
    assert list(iter_terms(depth, wrt)) == expected


def test_each_subset_appears_once() -> None:
    terms = list(iter_terms(10, "x"))
    subsets = {frozenset(t) for t in terms}
    expected = {frozenset(c) for r in range(11) for c in itertools.combinations(range(1, 11), r)}
    assert len(terms) == len(subsets) and subsets == expected


def test_counts_and_lengths_by_enumeration() -> None:
    for depth in range(1, 11):
        for wrt in [*range(1, depth + 1), "x"]:
            terms = list(iter_terms(depth, wrt))
            assert count_paths(depth, wrt) == len(terms) == len(derive.paths(depth, wrt))
            assert dict(path_lengths(depth, wrt)) == dict(Counter(len(t) for t in terms))


@pytest.mark.parametrize("depth", [1, 7, 60, 1000])
def test_lengths_are_binomial(depth: int) -> None:
    lengths = path_lengths(depth, 1)
    m = depth - 1
    assert list(lengths) == list(range(m + 1))
    assert list(lengths.values()) == [math.comb(m, r) for r in range(m + 1)]
    assert sum(lengths.values()) == count_paths(depth) == 2**m
    assert lengths == {r: math.comb(m, r) for r in range(m + 1)}


def test_lengths_sum_to_the_count_at_depth_20000() -> None:
    lengths = path_lengths(20_000, "x")
    assert sum(lengths.values()) == count_paths(20_000, "x") == 2**20_000
    assert lengths[1] == 20_000 and lengths[19_999] == 20_000 and lengths[2] == 19_999 * 10_000


def test_huge_depth_counts_without_enumerating() -> None:
    assert count_paths(100_000) == 1 << 99_999
    assert count_paths(100_000, "x").bit_length() == 100_001
    big, smaller = path_lengths(100_000, "x"), path_lengths(99_999, "x")
    for r in (1, 2, 777, 50_000, 99_999):  # Pascal's rule, exact
        assert big[r] == smaller[r] + smaller[r - 1]
    assert big[100_000] == 1 and len(big) == 100_001
    paths = derive.paths(100_000)
    assert paths.count == 1 << 99_999
    with pytest.raises(DeriveError, match="len"):
        len(paths)


def test_enumeration_is_refused_past_the_limit_unless_forced() -> None:
    paths = derive.paths(30)
    assert paths.count > MAX_TERMS
    for action in (lambda: iter(paths), lambda: paths.terms, paths.text, lambda: paths.expr):
        with pytest.raises(DeriveError, match=r"2\^29 = 536870912 terms.*force=True"):
            action()
    forced = iter(derive.paths(40, force=True))  # streams: no 2^39 terms in memory
    assert [next(forced) for _ in range(4)] == [(), (2,), (3,), (3, 2)]
    assert derive.paths(23).count == MAX_TERMS  # 2^22 terms: allowed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "depth must be an integer >= 1 and <= 10\\^18, got 0"),
        ((-3,), "got -3"),
        ((2.5,), "got 2.5"),
        ((True,), "got True"),
        (("4",), "got '4'"),
        ((4, 0), "wrt must be a block index 1..4 or 'x', got 0"),
        ((4, 5), "got 5"),
        ((4, "y"), "got 'y'"),
        ((4, True), "got True"),
    ],
)
def test_bad_input_names_the_value(args: tuple, message: str) -> None:
    for function in (derive.paths, count_paths, path_lengths):
        with pytest.raises(DeriveError, match=message.replace("(", r"\(")):
            function(*args)
    with pytest.raises(ValueError):
        derive.paths(*args)


@pytest.mark.parametrize(("given", "start", "later"), [(1, 1, 5), (3, 3, 3), ("x", 0, 6)])
def test_wrt_is_parsed_once_into_the_block_the_gradient_starts_from(
        given: int | str, start: int, later: int) -> None:
    """1, 3 and "x" (and the parsed Wrt itself) give the same sum: its later blocks are
    start+1..N, counted here directly."""
    parsed = derive.paths(6, given).wrt
    assert parsed == Wrt(start) and parsed.is_input == (given == "x")
    assert parsed.later(6) == later == len(range(start + 1, 7))
    assert count_paths(6, parsed) == count_paths(6, given) == 2**later
    assert derive.paths(6, parsed) == derive.paths(6, given)
    assert derive.paths(6, given, block="pre").wrt == parsed
    assert json.loads(json.dumps(parsed.value)) == given and str(parsed) == str(given)
    assert repr(derive.paths(6, given)) == (f"PathSum(depth=6, wrt={given!r}, notation='udl', "
                                            "force=False)")
    with pytest.raises(DeriveError, match=r"wrt must be a block index 1\.\.2 or 'x', got Wrt"):
        derive.paths(2, Wrt(3))


def test_unknown_notation() -> None:
    with pytest.raises(DeriveError, match="unknown notation 'book': choose one of udl, jacobian"):
        derive.paths(4, notation="book")


def test_sympy_and_jupyter_display() -> None:
    paths = derive.paths(3, notation="jacobian")
    assert sympy.latex(paths) == "I + J_{2} + J_{3} + J_{3} J_{2}"
    assert paths._repr_latex_() == (
        "$\\begin{aligned}\n\\frac{\\partial y}{\\partial f_{1}} &= I + J_{2} + J_{3} + J_{3} J_{2}"
        "\n\\end{aligned}$"
    )
    big = derive.paths(40)
    assert "\\cdots" in sympy.latex(big) and len(big._repr_latex_()) < 2000
    assert big._repr_latex_().startswith("$\\displaystyle \\frac{\\partial y}{\\partial f_{1}} = I")


def test_jacobian_symbols_are_the_models() -> None:
    assert PathSum(3).expr.free_symbols == {jacobian(2), jacobian(3)}
    assert PathSum(3, "x").factored.args == (1 + jacobian(3), 1 + jacobian(2), 1 + jacobian(1))


def test_derivation_steps() -> None:
    d = derive.paths(4).derivation
    assert d.key == "paths/depth-4/wrt-1"
    assert derive.paths(4, "x").derivation.key == "paths/depth-4/wrt-x"
    texts = [step.text() for step in d.steps]
    assert "∂y/∂f₁ = (I + J₄)(I + J₃)(I + J₂)" in texts
    assert "∂y/∂f₁ = I + J₂ + J₃ + J₃J₂ + J₄ + J₄J₂ + J₄J₃ + J₄J₃J₂" in texts
    assert d.result.text() == "∂y/∂f₁ = " + " + ".join(EQ_11_6)
    assert "#paths = 8" in texts
    assert any(s.rhs == 2 ** sympy.Symbol("m", integer=True, positive=True) for s in d.steps)
    general = next(st.rhs for st in d.steps if {str(x) for x in st.rhs.free_symbols} == {"N", "j"})
    for depth, wrt in ((4, 1), (9, 3), (60, 7)):  # SymPy's product against count_paths
        n_, j_ = sorted(general.free_symbols, key=str)
        assert general.xreplace({n_: depth, j_: wrt}) == count_paths(depth, wrt)
    for step in d.steps:  # every step prints both ways
        assert step.latex() and step.text()
    big = derive.paths(200).derivation  # shows the product and counts, not 2^199 terms
    assert len(big.result.latex()) < 2000 and "\\cdots" in big.result.latex()


def test_same_inputs_same_output() -> None:
    first = derive.paths(7, 2).text(), derive.paths(7, 2).latex_lines()
    second = derive.paths(7, 2).text(), derive.paths(7, 2).latex_lines()
    assert first == second


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_lines_fit_an_article_page(tmp_path) -> None:
    """pdflatex reports no overfull line for the broken sums (article, 10pt)."""
    from derive.commands.paths import paths as command

    cases = [(4, 1), (6, "x"), (9, 1), (16, 13), (40, 37), (99, 96)]
    body = [
        "\\begin{align*}\n" + " \\\\\n".join(derive.paths(n, w, notation=nt).latex_lines())
        + "\n\\end{align*}"
        for nt in ("udl", "jacobian") for n, w in cases
    ]
    body += [  # one term longer than a row: it continues on the next rows
        "\\begin{align*}\n" + " \\\\\n".join(latex_lines([(), tuple(range(30, 1, -1))], Wrt(1), nt))
        + "\n\\end{align*}"
        for nt in ("udl", "jacobian")
    ]
    runner = CliRunner()
    body.append(runner.invoke(command, ["--depth", "7", "--format", "latex"]).output)
    tex = tmp_path / "paths.tex"
    tex.write_text("\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
                   + "\n".join(body) + "\n\\end{document}\n", encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paths.log").read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, log[-2000:]
    assert "Overfull \\hbox" not in log
    wide = "\n".join(derive.paths(9, 1).latex_lines(width=80))  # the check can fail
    tex.write_text(tex.read_text().replace("\\end{document}",
                                           f"\\begin{{align*}}\n{wide}\n\\end{{align*}}\n"
                                           "\\end{document}"), encoding="utf-8")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", tex.name], cwd=tmp_path,
                   capture_output=True, text=True, timeout=120)
    assert "Overfull \\hbox" in (tmp_path / "paths.log").read_text(errors="replace")
