"""Renderers, concepts and plots: layout checks and independent numerical checks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy

import derive.rendering.render as render
from derive.derivation.symbols import K, d, k, q, q0
from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError
from derive.rendering import plots
from derive.studynotes import concepts

x = sympy.Symbol("x")


def _demo() -> Derivation:
    long = sum(x**i for i in range(1, 40))
    return Derivation(
        "Demo of $x$", "demo/long", ("$x$ is real, 50% & more",),
        (Step(x**2, x * x, "definition"), Step(q(k), long, "a long sum")),
        Step(x**2, x * x),
    )


def test_text_has_unicode_formulas_and_reasons():
    out = render.render(_demo(), "text")
    assert "x² = x²    (definition)" in out
    assert "qₖ = x³⁹" in out


def test_latex_fragment_uses_align_and_escapes_prose():
    out = render.render(_demo(), "latex")
    assert "\\begin{align*}" in out and "eqnarray" not in out
    assert "50\\% \\& more" in out
    assert out.count("\\begin{align*}") == out.count("\\end{align*}")


def test_long_equation_is_broken_and_loses_no_term():
    rows = render.tex_lines(Step(q(k), sum(x**i for i in range(1, 40))))
    assert len(rows) > 1
    for row in rows:  # each row fits the width budget
        assert render._visible(row) <= render.LINE_WIDTH + 12
    joined = " ".join(r.replace("&\\quad", "").replace("&=", "=") for r in rows)
    exponents = sorted(int(e) for e in re.findall(r"x\^\{(\d+)\}", joined))
    assert exponents == list(range(2, 40))


def test_markdown_math_has_no_space_inside_inline_dollars_and_own_line_display():
    out = render.render(_demo(), "markdown")
    spans = re.findall(r"\$([^$\n]+)\$", out.replace("$$", ""))
    assert spans and all(span == span.strip() for span in spans)
    lines = out.splitlines()
    for line in lines:
        if "$$" in line:
            assert line == "$$", line
    assert "\\begin{aligned}" in out  # the long sum is split into rows


def test_text_prose_turns_latex_into_unicode():
    assert render.text_prose(r"$\frac{K c + q_{0}}{q_{0}}$") == "(K c + q₀)/(q₀)"
    assert render.text_prose(r"$\left(g + 1\right)^{K}$") == "(g + 1)ᴷ"


def test_bad_format_and_object_raise_derive_error():
    with pytest.raises(DeriveError, match="unknown format 'pdf'"):
        render.render(_demo(), "pdf")
    with pytest.raises(DeriveError, match="cannot render int"):
        render.render(3, "text")


def test_templates_folder_missing_a_template_is_named(tmp_path):
    (tmp_path / "notes.tex.j2").write_text("x")
    with pytest.raises(DeriveError, match=r"missing derivation\.md\.j2"):
        render.template_dir(tmp_path)


def test_override_templates_are_used(tmp_path):
    for name in render.TEMPLATES:
        (tmp_path / name).write_text("custom {{ derivation.key }}\n")
    assert render.render(_demo(), "text", templates=tmp_path) == "custom demo/long\n"


def test_variance_and_path_objects_render():
    import derive

    out = render.render(derive.variance("he", "relu", "pre"), "text")
    assert "q₀" in out
    assert "I" in render.render(derive.PathSum(3), "text")


# ---- concepts: checked against computations that do not reuse the derivation


def test_pre_vs_post_closed_forms_match_iterated_recursions():
    pp = concepts.pre_vs_post()
    g, G, gamma = concepts.g, concepts.G, concepts.gamma
    values = {g: 0.7, G: 0.9, gamma: 1.3, q0: 0.6}
    # no norm and pre-norm forward: iterate q_k by hand
    qn, qp = 0.6, 0.6
    for _ in range(9):
        qn, qp = qn * 1.7, qp + 0.7 * 1.3**2
    assert float(pp.steps[1].rhs.subs(values).subs(K, 9)) == pytest.approx(qn, rel=1e-12)
    assert float(pp.steps[3].rhs.subs(values).subs(K, 9)) == pytest.approx(qp, rel=1e-12)
    # pre-norm backward with G = g telescopes to (q_0 + K g gamma^2)/q_0
    ratio, qk = 1.0, 0.6
    for _ in range(9):
        ratio *= 1 + 0.7 * 1.3**2 / qk
        qk += 0.7 * 1.3**2
    assert float(pp.result.rhs.subs(values).subs(K, 9)) == pytest.approx(ratio, rel=1e-12)
    # and with G != g it grows as K^(G/g): the log-log slope between K = 2000 and 4000
    def pre_ratio(depth: int, a: float = 0.9 * 1.69, c: float = 0.7 * 1.69) -> float:
        total = 0.0
        for j in range(depth):
            total += np.log1p(a / (0.6 + j * c))
        return total
    slope = (pre_ratio(4000) - pre_ratio(2000)) / np.log(2)
    assert slope == pytest.approx(0.9 / 0.7, rel=0.01)
    # post-norm backward: gamma^2 (1 + G)/((1 + g) q_0) per first block, then (1+G)/(1+g)
    # (gains that do not depend on the moment: g(q_0) = g, G(q_0) = G)
    post = pp.steps[10].rhs.subs(values).subs(K, 5)
    by_hand = 1.3**2 * 1.9 / (1.7 * 0.6) * (1.9 / 1.7) ** 4
    assert float(post) == pytest.approx(by_hand, rel=1e-12)
    # the general form, block 1 with its own gains g(q_0) = 0.5, G(q_0) = 0.8
    first = {sympy.Function("g")(q0): 0.5, sympy.Function("G")(q0): 0.8}
    post = pp.steps[9].rhs.subs(first).subs(values).subs(K, 5)
    by_hand = 1.3**2 * 1.8 / (1.5 * 0.6) * (1.9 / 1.7) ** 4
    assert float(post) == pytest.approx(by_hand, rel=1e-12)
    assert pp.result.lhs == d(0) / d(K)


def test_layer_norm_jacobian_matches_finite_differences():
    rng = np.random.default_rng(2)
    x, gamma, eps = rng.normal(0.0, 2.0, size=6), 1.4, 1e-6

    def ln(v):
        return gamma * (v - v.mean()) / v.std()

    numeric = np.stack([(ln(x + eps * e) - ln(x - eps * e)) / (2 * eps) for e in np.eye(6)],
                       axis=1)
    xhat, n = (x - x.mean()) / x.std(), 6
    formula = gamma / x.std() * (np.eye(n) - np.ones((n, n)) / n - np.outer(xhat, xhat) / n)
    assert np.allclose(numeric, formula, atol=1e-6)
    step = concepts.layer_norm().steps[6]
    assert "J_LN" in step.text() and "x̂·x̂ᵀ/n" in step.text()


def test_layer_norm_moments_match_numpy():
    rng = np.random.default_rng(0)
    h = rng.normal(3.0, 5.0, size=1000)
    gamma, beta = 1.7, 0.4
    y = gamma * (h - h.mean()) / h.std() + beta
    ln = concepts.layer_norm()
    assert float(ln.steps[3].rhs.subs(concepts.beta, beta)) == pytest.approx(y.mean())
    assert float(ln.result.rhs.subs(concepts.gamma, gamma)) == pytest.approx(
        ((y - beta) ** 2).mean()
    )


def test_dropout_moments_match_simulation():
    rng = np.random.default_rng(1)
    p, u = 0.3, 2.0
    kept = rng.random(400_000) >= p
    out = kept * u / (1 - p)
    rb = concepts.residual_block()
    assert float(rb.steps[1].rhs.subs(concepts.u, u)) == pytest.approx(out.mean(), rel=0.01)
    second = float(rb.steps[2].rhs.subs({concepts.u: u, concepts.p: p}))
    assert second == pytest.approx((out**2).mean(), rel=0.01)


def test_residual_block_derivative_matches_finite_difference():
    rb = concepts.residual_block()
    branch = np.tanh  # a concrete branch F; F' = 1 - tanh^2
    x0, eps = 0.37, 1e-6
    numeric = ((x0 + eps + branch(x0 + eps)) - (x0 - eps + branch(x0 - eps))) / (2 * eps)
    slope = rb.result.rhs.replace(lambda e: isinstance(e, concepts.FPrime),
                                  lambda e: 1 - sympy.tanh(e.args[0]) ** 2)
    assert float(slope.subs(concepts.x, x0)) == pytest.approx(numeric, rel=1e-8)


# ---- plots


def test_plots_are_byte_identical_and_valid():
    series = {"none": ([1, 2, 4], [4, 2, 1]), "pre": ([1, 2, 3], [3, 1.5, 1])}
    first, second = plots.moments_figure(series, "t"), plots.moments_figure(series, "t")
    assert first == second
    assert first["png"].startswith(b"\x89PNG") and first["pdf"].startswith(b"%PDF-")
    assert b"CreationDate" not in first["pdf"]
    bars = plots.path_length_figure({0: 1, 1: 4, 2: 6, 3: 4, 4: 1})
    assert bars == plots.path_length_figure({0: 1, 1: 4, 2: 6, 3: 4, 4: 1})


def test_atoms_of_the_same_text_keep_their_own_latex():
    from derive.derivation.printing import latex, text
    from derive.pathsums.notation import shown

    first = shown("#paths of length L", r"\#\,\text{paths of length } L")
    second = shown("#paths of length L", r"\#\,\text{paths with } L \text{ factors}")
    assert first != second and text(first) == text(second) == "#paths of length L"
    assert latex(first) == r"\#\,\text{paths of length } L"  # made first, printed as made
    assert latex(second) == r"\#\,\text{paths with } L \text{ factors}"


@pytest.mark.parametrize("fmt", ["text", "latex", "markdown"])
def test_render_takes_every_result_object(fmt):
    import derive

    analysis = derive.variance("he", "relu", "pre", final_norm=True)
    results = {
        "PathSum": derive.paths(3),
        "BlockPathSum": derive.paths(3, "x", block="post"),
        "PathGradients": derive.path_gradients(8, init="he", block="pre"),
        "VarianceAnalysis": analysis,
        "Recursion": analysis.forward,
        "WeightGradients": analysis.weights,
    }
    for name, obj in results.items():
        out = render.render(obj, fmt)
        assert out.strip(), name
    # what each shows is its own: the block path sum's count, the shares' mean
    assert "8" in render.render(results["BlockPathSum"], "text").splitlines()[-1]
    mean = sum(i * float(s) for i, s in enumerate(results["PathGradients"].gradient_shares))
    assert f"{mean:.4g}" in render.render(results["PathGradients"], "text")
