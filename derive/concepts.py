"""The concepts behind the notes, as Derivations built from SymPy equations.

- :func:`residual_block`: RB(x) = x + Dropout(F(x)), its unrolled form and the
  identity path in its derivative;
- :func:`layer_norm`: LN(x) = gamma (x - mu) / sigma + beta, whose output has
  mean beta and second moment gamma^2 whatever the input's scale;
- :func:`pre_vs_post`: the second-moment recursions of a stack without
  normalization, with pre-norm and with post-norm, solved by ``rsolve`` and
  ``product``: exponential growth, linear growth, and the gamma^2 fixed point.

>>> [d.key for d in concepts()]
['concept/residual-block', 'concept/layer-norm', 'concept/pre-vs-post-norm']
"""

from __future__ import annotations

import functools

import sympy

from derive.derivation import Derivation, Step
from derive.model import K, d, k, q, q0
from derive.printing import latex

x = sympy.Symbol("x", real=True)
u = sympy.Symbol("u", real=True)
#: Dropout rate p, layer-norm gain gamma and shift beta, width n, unit index i.
p = sympy.Symbol("p", nonnegative=True)
gamma = sympy.Symbol("gamma", positive=True)
beta = sympy.Symbol("beta", real=True)
width = sympy.Symbol("n", integer=True, positive=True)
i = sympy.Symbol("i", integer=True)
scale = sympy.Symbol("a", positive=True)
#: Branch gain g (no norm: E[f_k^2] = g q_{k-1}) and pre-norm branch moment c.
g = sympy.Symbol("g", positive=True)
c = sympy.Symbol("c", positive=True)
mu, sigma = sympy.Symbol("mu", real=True), sympy.Symbol("sigma", positive=True)
units = sympy.IndexedBase("x")


class _Operator(sympy.Function):
    """An opaque named map, printed as an upright operator name."""

    name = "F"

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: str | None = None) -> str:
        args = ", ".join(printer._print(a) for a in self.args)
        plain = "'" in self.name or len(self.name) == 1
        name = self.name if plain else rf"\operatorname{{{self.name}}}"
        out = rf"{name}\left({args}\right)"
        return out if exp is None else rf"{out}^{{{exp}}}"

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"{self.name}({', '.join(printer._print(a) for a in self.args)})"


class RB(_Operator):
    """The residual block as a whole."""

    name = "RB"


class Dropout(_Operator):
    """Dropout of its argument."""

    name = "Dropout"


class LN(_Operator):
    """Layer normalization of its argument."""

    name = "LN"


class Mean(_Operator):
    """The expectation over the dropout mask, E[...]."""

    name = "E"

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: str | None = None) -> str:
        return rf"\mathbb{{E}}\left[{printer._print(self.args[0])}\right]"

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"E[{printer._print(self.args[0])}]"


class UnitMean(_Operator):
    """The average over the n units, (1/n) sum_i of its argument (display only)."""

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: str | None = None) -> str:
        body = printer._print(self.args[0])
        return rf"\frac{{1}}{{n}} \sum_{{i=1}}^{{n}} {body}"

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"(1/n)·Σᵢ {printer._print(self.args[0])}"


class FPrime(_Operator):
    """The derivative of the branch, F'."""

    name = "F'"


class Branch(_Operator):
    """The branch F of the block."""

    name = "F"

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return FPrime(*self.args)


class RBPrime(_Operator):
    """The derivative of the residual block, RB'."""

    name = "RB'"


class Block(_Operator):
    """Block j's branch applied to h: ``Block(j, h)`` prints as f_j(h)."""

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: str | None = None) -> str:
        j, h = self.args
        return rf"f_{{{printer._print(j)}}}\left({printer._print(h)}\right)"

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        from derive.printing import subscript

        j, h = self.args
        return f"f{subscript(str(j))}({printer._print(h)})"


@functools.cache
def residual_block(unrolled: int = 3) -> Derivation:
    """RB(x) = x + Dropout(F(x)): dropout's moments, the unrolled stack, the identity path.

    >>> residual_block().result.text()
    "RB'(x) = F'(x) + 1"
    """
    mask = sympy.Symbol("m", nonnegative=True)
    kept = 1 - p
    # Inverted dropout: m ~ Bernoulli(1 - p), Dropout(u) = m u / (1 - p).
    dropped = mask * u / kept
    first = sympy.simplify(kept * dropped.subs(mask, 1) + p * dropped.subs(mask, 0))
    second = sympy.simplify(kept * dropped.subs(mask, 1) ** 2 + p * dropped.subs(mask, 0) ** 2)
    # Shown as u^2/(1 - p): the same value, in the order a reader expects.
    shown = sympy.Mul(u**2, sympy.Pow(1 - p, -1, evaluate=False), evaluate=False)
    if sympy.simplify(shown - second) != 0:  # pragma: no cover (a SymPy regression)
        raise AssertionError("dropout second moment")
    h = x
    for j in range(1, unrolled + 1):
        h = h + Block(j, h)
    slope = sympy.diff(x + Branch(x), x)
    steps = (
        Step(RB(x), x + Dropout(Branch(x)),
             "definition: the skip path adds the input unchanged"),
        Step(Mean(Dropout(u)), first,
             "inverted dropout keeps a unit with probability $1 - p$ and divides it by $1 - p$"),
        Step(Mean(Dropout(u) ** 2), shown,
             "so dropout leaves the mean alone and scales the second moment by $1/(1 - p)$"),
        Step(sympy.Symbol(f"h_{unrolled}"), h,
             f"{unrolled} blocks $h_k = h_{{k-1}} + f_k(h_{{k-1}})$ unrolled by substitution "
             "(at evaluation, dropout is the identity)"),
        Step(RBPrime(x), slope,
             "differentiate (evaluation mode): the 1 is the identity path"),
    )
    return Derivation(
        title="The residual block",
        key="concept/residual-block",
        assumptions=(
            "$F$ is any differentiable branch (a few layers); $x$ a scalar for the derivative",
            "dropout with rate $p$ multiplies each unit by an independent mask "
            "$m \\sim \\text{Bernoulli}(1 - p)$ and divides by $1 - p$",
        ),
        steps=steps,
        result=steps[-1],
        notes=(
            "Because every block adds to its input, the derivative of a stack is a product "
            "of factors (identity plus Jacobian), which expands into a sum over paths: "
            "see the gradient paths.",
        ),
    )


@functools.cache
def layer_norm() -> Derivation:
    """LN(x) = gamma (x - mu)/sigma + beta: output mean beta, second moment gamma^2, scale-free.

    >>> layer_norm().result.rhs
    gamma**2
    """
    xi = units[i]
    mean_def = sympy.Sum(xi, (i, 1, width)) / width
    var_def = sympy.Sum((xi - mu) ** 2, (i, 1, width)) / width
    ln_i = gamma * (xi - mu) / sigma + beta
    # Mean of the outputs: linearity of the sum, then the definition of mu.
    out_mean = sympy.expand(sympy.Sum(ln_i, (i, 1, width)).doit() / width)
    out_mean = sympy.simplify(out_mean.subs(mu, mean_def).doit())
    # Second moment of the outputs (beta = 0): pull constants out, use sigma^2.
    moment = sympy.factor_terms(sympy.Sum((ln_i - beta) ** 2, (i, 1, width)) / width)
    moment = moment.subs(var_def * width, width * sigma**2)
    # Scale invariance: x -> a x scales mu and sigma by a.
    scaled = gamma * (scale * xi - scale * mu) / (scale * sigma) + beta
    if sympy.simplify(scaled - ln_i) != 0:  # pragma: no cover (a SymPy regression)
        raise AssertionError("layer norm is not scale invariant")
    # Shown with x_i, y_i and an averaging operator; computed above with Sum and Indexed.
    shown = {xi: sympy.Symbol("x_i", real=True)}
    y_i = sympy.Symbol("y_i", real=True)
    steps = (
        Step(mu, UnitMean((mean_def * width).function.xreplace(shown)),
             "mean over the $n$ units of one example"),
        Step(sigma**2, UnitMean(((xi - mu) ** 2).xreplace(shown)),
             "variance over the same units"),
        Step(y_i, ln_i.xreplace(shown),
             "normalize, then apply the learned gain $\\gamma$ and shift $\\beta$"),
        Step(UnitMean(y_i), out_mean,
             "average the outputs: the centred inputs sum to zero"),
        Step(UnitMean(y_i**2), moment,
             "second moment of the outputs with $\\beta = 0$: pull out $\\gamma^2/\\sigma^2$"),
        Step(scaled.xreplace(shown), ln_i.xreplace(shown),
             "rescale the input $x \\to a x$ ($a > 0$): $\\mu$ and $\\sigma$ scale by $a$, "
             "the output does not change"),
    )
    return Derivation(
        title="Layer normalization",
        key="concept/layer-norm",
        assumptions=(
            "statistics over the $n$ units of one example (not over the batch)",
            "$\\sigma > 0$ (the small $\\epsilon$ added in practice is ignored)",
        ),
        steps=steps,
        result=steps[4],
        notes=(
            "Whatever the scale of its input, LN hands on a signal of second moment "
            "$\\gamma^2$: this is what pins post-norm activations and what keeps the "
            "pre-norm branch's input at a fixed scale.",
        ),
    )


def _solve(recurrence: sympy.Expr, start: sympy.Expr) -> sympy.Expr:
    """Solve a first-order recurrence in q (zero form) with q(0) = start, at k = K."""
    solution = sympy.rsolve(recurrence, q(k), {q(0): start})
    return sympy.simplify(solution.subs(k, K))


@functools.cache
def pre_vs_post() -> Derivation:
    """Second moment and gradient through depth: no norm, pre-norm, post-norm.

    >>> r = pre_vs_post()
    >>> r.result.latex()
    '\\\\frac{d_{0}}{d_{K}} = \\\\frac{K c + q_{0}}{q_{0}}'
    """
    none_rec = q(k) - (1 + g) * q(k - 1)
    pre_rec = q(k) - q(k - 1) - c
    none_q, pre_q = _solve(none_rec, q0), _solve(pre_rec, q0)
    # Backward: d_{k-1} = d_k (1 + g) without norm; d_k (1 + c/q_{k-1}) with pre-norm.
    none_ratio = sympy.simplify(sympy.product(1 + g, (k, 1, K)))
    pre_factor = 1 + c / pre_q.subs(K, k - 1)
    pre_ratio = sympy.simplify(sympy.product(sympy.together(pre_factor), (k, 1, K)))
    # Post-norm: each LN divides the identity path by the root of E[u_k^2] / gamma^2 = 1 + g.
    share = sympy.Function("s")
    post_share = sympy.rsolve(share(k) - share(k - 1) / (1 + g), share(k), {share(0): 1})
    post_share = sympy.simplify(post_share.subs(k, K))
    pre_share = sympy.simplify(q0 / pre_q)
    ratio = d(0) / d(K)
    steps = (
        Step(q(k), (1 + g) * q(k - 1),
             "no norm, $h_k = h_{k-1} + f_k(h_{k-1})$: the branch adds $g q_{k-1}$, "
             "independent of the skip path"),
        Step(q(K), none_q, "solved (rsolve): exponential growth"),
        Step(q(k), q(k - 1) + c,
             "pre-norm, $h_k = h_{k-1} + f_k(\\text{LN}(h_{k-1}))$: the branch input has "
             "second moment $\\gamma^2$, so the branch adds a constant $c$"),
        Step(q(K), pre_q, "solved (rsolve): linear growth"),
        Step(q(k), gamma**2,
             "post-norm, $h_k = \\text{LN}(h_{k-1} + f_k(h_{k-1}))$: LN fixes the moment"),
        Step(ratio, none_ratio, "no norm backward: $d_{k-1} = (1 + g) d_k$ per block, product"),
        Step(ratio, sympy.Product(pre_factor, (k, 1, K)),
             "pre-norm backward: the branch Jacobian through LN scales as "
             "$\\gamma/\\sqrt{q_{k-1}}$, so $d_{k-1} = d_k (1 + c/q_{k-1})$"),
        Step(ratio, pre_ratio, "the product telescopes (SymPy product)"),
        Step(sympy.Symbol("s_K"), post_share,
             "post-norm: share of the input $x$ in $q_K$; each LN divides the skip path "
             "by $\\sqrt{1 + g}$"),
        Step(sympy.Symbol("s_K"), pre_share,
             "pre-norm: the skip path carries $x$ untouched, its share is $q_0/q_K$"),
    )
    return Derivation(
        title="Pre-norm against post-norm",
        key="concept/pre-vs-post-norm",
        assumptions=(
            "mean field: infinite width, branch output independent of the skip path",
            "no norm: the branch's second moment is $g$ times its input's; "
            "pre-norm: a constant $c$ (its input is normalized)",
            "$q_0 = \\mathbb{E}[x^2]$; $d_k$ is the second moment of the gradient at $h_k$",
        ),
        steps=steps,
        result=Step(ratio, pre_ratio),
        notes=(
            f"Pre-norm keeps the signal: the identity path is never rescaled, the forward "
            f"moment grows linearly (${latex(pre_q)}$) and the gradient ratio "
            f"${latex(pre_ratio)}$ grows only linearly with depth, against "
            f"${latex(none_ratio)}$ without normalization. Post-norm pins $q_k$ at the "
            f"fixed point ${latex(gamma**2)}$ but shrinks the input's share to "
            f"${latex(post_share)}$, geometric in depth: deep post-norm stacks lose the "
            f"identity path and need warm-up to train.",
        ),
    )


def concepts() -> tuple[Derivation, ...]:
    """The concept derivations, in the order the notes present them.

    >>> len(concepts())
    3
    """
    return (residual_block(), layer_norm(), pre_vs_post())
