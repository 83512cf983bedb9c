"""The gradient-paths note: the product of (I + J_k), its 2^K paths, UDL problem 11.2, and
the gradient each path length carries (:mod:`derive.studynotes.path_gradients`).

Every count here comes from :mod:`derive.pathsums.expansion` (terms enumerated or counted)
and is checked against SymPy's binomial sums.

>>> section = paths_section(4)
>>> section.key, len(section.cards) >= 6
('gradient-paths', True)
"""

from __future__ import annotations

import functools

import sympy

from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step
from derive.pathsums.notation import shown
from derive.rendering.render import Figure, Table
from derive.studynotes.parts import Section, card, math, plural

#: The worked problem's depths (UDL problem 11.2: three and five blocks, beside four).
PROBLEM_DEPTHS = (3, 4, 5)
#: Above this many terms a card asks for the product and the count, not the sum.
CARD_TERMS = 8


def _product(blocks: range | tuple[int, ...], symbolic: bool = False) -> sympy.Symbol:
    """(I + J_K) ... (I + J_1): the later block on the left."""
    if symbolic:
        return shown("(I + J_K)(I + J_{K-1})⋯(I + J₁)",
                     "(I + J_{K})(I + J_{K-1}) \\cdots (I + J_{1})")
    order = sorted(blocks, reverse=True)
    text = "".join(f"(I + J{_sub(b)})" for b in order)
    tex = "".join(f"(I + J_{{{b}}})" for b in order)
    return shown(text, tex)


def _sub(number: int) -> str:
    from derive.derivation.printing import subscript

    return subscript(str(number))


@functools.cache
def counts() -> dict[str, sympy.Expr]:
    """Solved once: the total 2^K, the mean length K/2, the paths through f_1.

    Block K's factor (I + J_K) doubles the paths of K - 1 blocks (each takes the
    skip or the branch), and adds a branch to half of them: c_K = 2 c_{K-1} with
    c_0 = 1, m_K = m_{K-1} + 1/2 with m_0 = 0; the paths through f_1 double from
    one at K = 1. Each solution is checked against sums of binomials.

    >>> counts()["total"], counts()["mean"], counts()["through_first"]
    (2**K, K/2, 2**(K - 1))
    """
    from math import comb

    from derive.derivation.symbols import K, q0
    from derive.recursions.closed_forms import solve_affine

    depth, length = sympy.Symbol("K", integer=True, positive=True), sympy.Symbol("L")
    doubling = solve_affine(sympy.Integer(2), sympy.Integer(0))  # c_K = 2^K c_0, unrolled
    total = doubling.xreplace({q0: 1, K: depth})
    mean = solve_affine(sympy.Integer(1), sympy.Rational(1, 2)).xreplace({q0: 0, K: depth})
    first = doubling.xreplace({q0: 1, K: depth - 1})  # from c_1 = 1
    for n in range(1, 11):
        paths = [comb(n, j) for j in range(n + 1)]
        if (total.subs(depth, n), mean.subs(depth, n) * sum(paths),
                first.subs(depth, n)) != (sum(paths), sum(j * p for j, p in enumerate(paths)),
                                          sum(comb(n - 1, j) for j in range(n))):
            raise AssertionError("path counts")  # pragma: no cover
    return {"K": depth, "L": length, "total": total, "mean": mean, "through_first": first}


def through_first(depth: int) -> int:
    """How many paths of dy/dx pass through block 1's branch, counted term by term.

    >>> through_first(4)
    8
    """
    from derive.pathsums.expansion import iter_terms

    return sum(1 for term in iter_terms(depth, "x") if 1 in term)


def _derivation(depth: int) -> Derivation:
    from derive.pathsums.expansion import PathSum, count_paths

    c = counts()
    K, L = c["K"], c["L"]
    h = sympy.Function("h")
    k = sympy.Symbol("k", integer=True)
    grad_x = shown("∂y/∂x", "\\frac{\\partial y}{\\partial x}")
    grad_1 = shown("∂y/∂f₁", "\\frac{\\partial y}{\\partial f_{1}}")
    jac = PathSum(depth, 1, notation="jacobian")
    udl = PathSum(depth, 1, notation="udl")
    n_paths = shown("#paths(x → y)", "\\#\\,\\text{paths}(x \\to y)")
    n_length = shown("#paths of length L", "\\#\\,\\text{paths of length } L")
    if count_paths(depth, "x") != c["total"].subs(K, depth):  # pragma: no cover
        raise AssertionError("the path count disagrees with derive.pathsums.expansion")
    steps = (
        Step(h(k), shown("hₖ₋₁ + fₖ(hₖ₋₁)", "h_{k-1} + f_{k}(h_{k-1})"),
             "residual block $k$: the skip path plus the branch"),
        Step(shown("∂hₖ/∂hₖ₋₁", "\\frac{\\partial h_{k}}{\\partial h_{k-1}}"),
             shown("I + Jₖ", "I + J_{k}"),
             "differentiate: the skip path gives $I$, the branch its Jacobian $J_k$"),
        Step(grad_x, _product((), symbolic=True),
             "chain rule through the $K$ blocks: each factor multiplies from the left, so "
             "the later block stands on the left (Jacobians do not commute)"),
        Step(grad_1, _product(range(2, depth + 1)),
             f"$f_1$ enters $h_1$ unchanged, then passes blocks 2 to {depth}"),
        Step(grad_1, shown(jac.text().split(" = ", 1)[1], jac.latex()),
             "expand: each factor gives $I$ or $J_k$; one term for each subset of the later "
             "blocks, in the book's order (binary counting, block 2 the lowest bit)"),
        Step(grad_1, shown(udl.text().split(" = ", 1)[1], udl.latex()),
             "the book's notation: $J_a$ reached from block $b$ is written "
             "$\\partial f_a/\\partial f_b$"),
        Step(n_length, sympy.binomial(K, L),
             "a path of length $L$ passes the branches of $L$ of the $K$ blocks: choose them"),
        Step(n_paths, sympy.Sum(sympy.binomial(K, L), (L, 0, K)), "every length counts"),
        Step(n_paths, c["total"],
             "each block doubles the paths (each takes its skip or its branch): "
             "$c_K = 2 c_{K-1}$ from $c_0 = 1$; the binomial theorem $(1 + 1)^K$ says the same"),
        Step(shown("mean length", "\\text{mean length}"), c["mean"],
             "each block adds its branch to half of the paths: $m_K = m_{K-1} + 1/2$"),
    )
    return Derivation(
        title=f"Paths through {plural(depth, 'residual block')}",
        key=f"paths/depth-{depth}",
        steps=steps,
        notes=(
            f"The terms of $\\partial y/\\partial f_1$ are those of eq. 11.6 of Prince, "
            f"Understanding Deep Learning, in its order; for {plural(depth, 'block')} there "
            f"{'is' if count_paths(depth, 1) == 1 else 'are'} {count_paths(depth, 1)} of them, "
            f"and {count_paths(depth, 'x')} paths from $x$.",
        ),
    )


def _typical(depth: int) -> tuple[int, int]:
    """Paths whose length is within one of depth/2, and the total (counted)."""
    from derive.pathsums.expansion import path_lengths

    lengths = dict(path_lengths(depth, "x"))
    near = sum(n for length, n in lengths.items() if abs(2 * length - depth) <= 2)
    return near, sum(lengths.values())


def paths_section(depth: int) -> Section:
    """The gradient-paths note for a path sum of ``depth`` blocks (and problem 11.2)."""
    from derive.pathsums.expansion import PathSum, count_paths, path_lengths
    from derive.studynotes.path_gradients import VEIT_DEPTH, weighted_parts

    c = counts()
    K = c["K"]
    weighted = weighted_parts()
    near, total = _typical(depth)
    first = through_first(depth)
    if first != c["through_first"].subs(K, depth):  # pragma: no cover
        raise AssertionError("paths through f_1: the count and the formula disagree")
    deepest = max(max(PROBLEM_DEPTHS), depth)
    lengths = {n: dict(path_lengths(n, "x")) for n in sorted({*PROBLEM_DEPTHS, depth})}
    table = Table(
        "Paths from $x$ to $y$ by length $L$ (branches passed), for "
        + ", ".join(plural(n, "block") for n in lengths),
        ("$L$", *(f"$K = {n}$" for n in lengths)),
        tuple((str(j), *(str(lengths[n].get(j, "")) for n in lengths))
              for j in range(deepest + 1)))
    rows = "; ".join(f"{n} blocks: " + ", ".join(str(v) for v in lengths[n].values())
                     for n in PROBLEM_DEPTHS if n != 4)
    problems = (
        ("UDL problem 11.2: unravelling four blocks gives 1, 4, 6, 4 and 1 paths of "
         "lengths 0 to 4. How many paths of each length do three and five blocks give, "
         "and what is the rule for $K$ blocks?",
         f"{rows} (lengths 0 up). Rule: ${latex(sympy.binomial(K, c['L']))}$ paths of "
         f"length $L$, because a path chooses which $L$ of the $K$ branches it passes; "
         f"${latex(c['total'])}$ in all."),
        (f"How many of the {count_paths(depth, 'x')} paths of $\\partial y/\\partial x$ "
         f"({plural(depth, 'block')}) contain $f_1$?",
         f"{first}, that is ${latex(c['through_first'])}$: the path takes $J_1$, and "
         f"each of the other {depth - 1} blocks still chooses $I$ or $J_k$ (counted term by "
         "term)."),
    )
    jac = PathSum(depth, 1, notation="jacobian")
    define = "$J_k = \\partial f_k/\\partial h_{k-1}$, $h_k = h_{k-1} + f_k(h_{k-1})$"
    if jac.count <= CARD_TERMS:
        terms_card = card(f"gradient-paths/terms-{depth}",
                          f"Expand $\\partial y/\\partial f_1$ for {plural(depth, 'block')} "
                          f"({define}).", f"${jac.latex()}$")
    else:
        terms_card = card(f"gradient-paths/terms-{depth}",
                          f"$\\partial y/\\partial f_1$ for {plural(depth, 'block')} "
                          f"({define}): the product, and how many terms?",
                          f"${latex(_product(range(2, depth + 1)))}$: "
                          f"{jac.count} terms, one for each subset of blocks 2 to {depth}")
    cards = (
        terms_card,
        card("gradient-paths/order",
             "In which order do the factors of $\\partial y/\\partial x$ stand for $K$ blocks "
             f"({define})?",
             "$(I + J_K)(I + J_{K-1}) \\cdots (I + J_1)$: the later block on the left"),
        card("gradient-paths/count",
             "How many paths lead from $x$ to $y$ through $K$ residual blocks?",
             f"${latex(c['total'])}$: each block passes its input through the skip "
             "path or the branch"),
        card("gradient-paths/lengths",
             "How many paths from $x$ to $y$ pass the branches of exactly $L$ of $K$ blocks?",
             f"${latex(sympy.binomial(K, c['L']))}$: choose which $L$ branches"),
        card("gradient-paths/through-f1",
             f"How many of the {count_paths(depth, 'x')} paths of $\\partial y/\\partial x$ "
             f"through {plural(depth, 'block')} contain $f_1$?",
             f"{first}: $J_1$ is on the path, the other {depth - 1} blocks choose freely"),
        card("gradient-paths/typical-length",
             "What is the mean length (branches passed) of the paths through $K$ blocks?",
             f"${latex(c['mean'])}$: each branch is on half of the paths"),
    )
    return Section(
        "gradient-paths", "Gradient paths",
        key_results=(
            f"$\\partial y/\\partial x = (I + J_K) \\cdots (I + J_1)$ has "
            f"${latex(c['total'])}$ paths: each of the $K$ "
            "[[residual-block|residual blocks]] passes its input through the skip path "
            "or the branch.",
            f"${latex(sympy.binomial(K, c['L']))}$ of them pass $L$ branches, with mean "
            f"length ${latex(c['mean'])}$: most paths have about half the depth "
            f"({near} of the {total} paths through {plural(depth, 'block')} "
            f"{'is' if near == 1 else 'are'} within one of {math(sympy.Rational(depth, 2))}).",
            f"$f_1$ is on {first} of the {total} paths through {plural(depth, 'block')} "
            f"(${latex(c['through_first'])}$): the other blocks choose freely.",
            *weighted.key_results,
        ),
        assumptions=(
            f"$h_0 = x$, $h_k = h_{{k-1}} + f_k(h_{{k-1}})$ for $k = 1, \\dots, K$, "
            f"$y = h_K$; the notes expand $K = {depth}$",
            "$J_k = \\partial f_k/\\partial h_{k-1}$, the Jacobian of block $k$'s branch in "
            "numerator layout (out $\\times$ in); the book's $\\partial f_a/\\partial f_b$ "
            "is the direct partial $J_a$",
        ),
        derivations=(_derivation(depth), weighted.derivation),
        tables=(table, weighted.table, weighted.weights),
        figures=(Figure("path-lengths", f"How many of the {total} paths from $x$ to $y$ "
                        f"pass $L$ of the {depth} branches."),
                 Figure("gradient-lengths", f"{VEIT_DEPTH} blocks, He initialization, ReLU: "
                        "the share of the paths of each length (bars) and the share of "
                        "the gradient they carry (lines). The rescaled block's line lies on "
                        "the plain block's: it scales skip and branch alike.")),
        links=("residual-block", "variance", "block-variants"),
        cards=(*cards, *weighted.cards),
        problems=problems,
    )
