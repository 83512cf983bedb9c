"""The concepts behind the notes, as Derivations built from SymPy equations.

- :func:`residual_block`: RB(x) = x + Dropout(F(x)), its unrolled form and the
  identity path in its derivative;
- :func:`layer_norm`: LN(x) = gamma (x - mu) / sigma + beta, whose output has
  mean beta and second moment gamma^2 whatever the input's scale, and its
  Jacobian (gamma/sigma) P, which every backward recursion through LN uses;
- :func:`pre_vs_post`: the second-moment recursions of a stack without
  normalization, with pre-norm and with post-norm, in the branch's forward
  gain g and backward gain G: exponential growth, linear growth (a power law
  K^(G/g) for the gradient), and the gamma^2 fixed point.

>>> [d.key for d in concepts()]
['concept/residual-block', 'concept/layer-norm', 'concept/pre-vs-post-norm']
"""

from __future__ import annotations

import functools

import sympy

from derive.derivation.printing import latex
from derive.derivation.symbols import K, d, k, q, q0
from derive.derivation.value import Derivation, Step

x = sympy.Symbol("x", real=True)
u = sympy.Symbol("u", real=True)
#: Dropout rate p, layer-norm gain gamma and shift beta, width n, unit index i.
p = sympy.Symbol("p", nonnegative=True)
gamma = sympy.Symbol("gamma", positive=True)
beta = sympy.Symbol("beta", real=True)
width = sympy.Symbol("n", integer=True, positive=True)
i = sympy.Symbol("i", integer=True)
scale = sympy.Symbol("a", positive=True)
#: The branch's forward gain g: E[f_k^2] = g E[u_k^2] for its input u_k.
g = sympy.Symbol("g", positive=True)
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
        from derive.derivation.printing import subscript

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


def _ln_jacobian_check(size: int = 3) -> None:
    """SymPy's Jacobian of LN on ``size`` units equals (gamma/sigma)(I - 11^T/n - xhat xhat^T/n)."""
    xs = sympy.symbols(f"x1:{size + 1}", real=True)
    mean = sum(xs) / size
    std = sympy.sqrt(sum((v - mean) ** 2 for v in xs) / size)
    ln_map = sympy.Matrix([gamma * (v - mean) / std + beta for v in xs])
    jac = ln_map.jacobian(sympy.Matrix(xs))
    xhat = sympy.Matrix([(v - mean) / std for v in xs])
    formula = gamma / std * (sympy.eye(size) - sympy.ones(size, size) / size
                             - xhat * xhat.T / size)
    point = dict(zip(xs, (sympy.Rational(3, 2), sympy.Integer(-1), sympy.Rational(1, 3)),
                     strict=False))
    gap = (jac - formula).subs(point).applyfunc(sympy.simplify)
    if gap != sympy.zeros(size, size):  # pragma: no cover (the formula would be wrong)
        raise AssertionError("LayerNorm Jacobian")


@functools.cache
def layer_norm() -> Derivation:
    """LN(x) = gamma (x - mu)/sigma + beta: its moments, scale invariance and its Jacobian.

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
    _ln_jacobian_check()
    # Shown with x_i, y_i and an averaging operator; computed above with Sum and Indexed.
    shown = {xi: sympy.Symbol("x_i", real=True)}
    y_i = sympy.Symbol("y_i", real=True)
    from derive.pathsums.notation import shown as show

    j_ln = show("J_LN", "J_{\\mathrm{LN}}")
    xhat, xhat_t = show("x̂", "\\hat{x}"), show("x̂ᵀ", "\\hat{x}^{T}")
    ones, ones_t = show("1", "\\mathbf{1}"), show("1ᵀ", "\\mathbf{1}^{T}")
    eye, projection = show("I", "I"), show("P", "P")
    kept_share = show("E‖Pδ‖²/E‖δ‖²",
                      "\\mathbb{E}\\lVert P\\delta \\rVert^{2} / "
                      "\\mathbb{E}\\lVert \\delta \\rVert^{2}")
    gradient_gain = show("d_in/d_out", "d_{\\mathrm{in}}/d_{\\mathrm{out}}")
    kept = 1 - 2 / width
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
        Step(j_ln, gamma / sigma * (eye - ones * ones_t / width - xhat * xhat_t / width),
             "differentiate $y_i$ in $x_j$ with $\\hat x = (x - \\mu)/\\sigma$: "
             "$\\partial \\mu/\\partial x_j = 1/n$ and "
             "$\\partial \\sigma/\\partial x_j = \\hat x_j/n$ give "
             "$\\partial y_i/\\partial x_j = (\\gamma/\\sigma)(\\delta_{ij} - 1/n - "
             "\\hat x_i \\hat x_j/n)$ (checked against the Jacobian of LN on three units)"),
        Step(projection, eye - ones * ones_t / width - xhat * xhat_t / width,
             "$\\mathbf{1}$ and $\\hat x$ are orthogonal, each of squared length $n$: $P$ "
             "projects out two directions, so $J_{LN} = (\\gamma/\\sigma) P$ is symmetric"),
        Step(kept_share, kept,
             "a backward gradient $\\delta$ uncorrelated with $\\mathbf{1}$ and $\\hat x$ "
             "keeps $n - 2$ of its $n$ directions"),
        Step(gradient_gain, gamma**2 / sigma**2 * kept,
             "so LN scales a gradient's second moment by $\\gamma^2/\\sigma^2$, that is by "
             "$\\gamma^2/q$ at large width for a zero-mean input of second moment $q$ "
             "(then $\\sigma^2 = q$)"),
    )
    return Derivation(
        title="Layer normalization",
        key="concept/layer-norm",
        assumptions=(
            "statistics over the $n$ units of one example (not over the batch)",
            "$\\sigma > 0$ (the small $\\epsilon$ added in practice is ignored)",
            "Jacobians in numerator layout: $(J)_{ij} = \\partial y_i/\\partial x_j$ "
            "(out $\\times$ in); a gradient flows back as $J^T \\delta$",
        ),
        steps=steps,
        result=steps[4],
        notes=(
            "Whatever the scale of its input, LN hands on a signal of second moment "
            "$\\gamma^2$: this is what pins post-norm activations and what keeps the "
            "pre-norm branch's input at a fixed scale. Its Jacobian, derived here once, "
            "is the factor $\\gamma^2/q$ in every backward recursion through a LayerNorm.",
        ),
    )


#: The branch's backward gain G (its forward gain is g): E[(J^T delta)^2] = G E[delta^2].
G = sympy.Symbol("G", positive=True)


@functools.cache
def pre_vs_post() -> Derivation:
    """Signal and gradient through depth, no norm, pre-norm, post-norm, in the gains g and G.

    >>> pre_vs_post().result.text()
    'd₀/d_K = (K·g·γ² + q₀)/q₀'
    """
    from derive.recursions.closed_forms import solve_affine

    gg = gamma**2
    none_q = solve_affine(1 + g, sympy.Integer(0))  # q_k = a q_{k-1} + b, unrolled
    pre_q = solve_affine(sympy.Integer(1), g * gg)
    none_ratio = sympy.product(1 + G, (k, 1, K))
    pre_factor = 1 + G * gg / pre_q.subs(K, k - 1)
    equal = sympy.simplify(sympy.product(sympy.together(pre_factor.subs(G, g)), (k, 1, K)))
    # Post-norm: from block 2 on the branch sees q = gamma^2, so each block multiplies by
    # gamma^2 (1 + G) / ((1 + g) gamma^2); block 1 sees q_0, where the gains are g(q_0) and
    # G(q_0), and multiplies by gamma^2 (1 + G(q_0))/((1 + g(q_0)) q_0).
    g_first, G_first = sympy.Function("g")(q0), sympy.Function("G")(q0)
    later = sympy.product((1 + G) / (1 + g), (k, 2, K))
    post_general = gg * (1 + G_first) / ((1 + g_first) * q0) * later
    post_ratio = sympy.powsimp(sympy.simplify(post_general.xreplace({g_first: g, G_first: G})))
    if sympy.simplify(post_ratio - gg / q0 * ((1 + G) / (1 + g)) ** K) != 0:  # pragma: no cover
        raise AssertionError("post-norm gradient ratio")
    post_share = sympy.powsimp(solve_affine(1 / (1 + g), sympy.Integer(0)).subs(q0, 1))
    pre_share = sympy.simplify(q0 / pre_q)
    ratio = d(0) / d(K)
    from derive.pathsums.notation import shown

    input_share = shown("share of x in q_K", "\\text{share of } x \\text{ in } q_{K}")
    steps = (
        Step(q(k), (1 + g) * q(k - 1),
             "no norm, $h_k = h_{k-1} + f_k(h_{k-1})$: the branch adds $g q_{k-1}$, "
             "uncorrelated with the skip path, and uncorrelated second moments add"),
        Step(q(K), none_q, "a geometric recurrence: multiply the $K$ factors $1 + g$"),
        Step(q(k), q(k - 1) + g * gg,
             "pre-norm, $h_k = h_{k-1} + f_k(\\text{LN}(h_{k-1}))$: the branch input has "
             "second moment $\\gamma^2$ whatever $q_{k-1}$, so every block adds $g \\gamma^2$"),
        Step(q(K), pre_q, "an arithmetic recurrence: add the $K$ constant steps"),
        Step(q(k), gg,
             "post-norm, $h_k = \\text{LN}(h_{k-1} + f_k(h_{k-1}))$: LN fixes the moment"),
        Step(ratio, none_ratio,
             "no norm backward: $d_{k-1} = (1 + G) d_k$ per block (gradient independence: "
             "the cross term vanishes)"),
        Step(ratio, sympy.Product(pre_factor, (k, 1, K)),
             "pre-norm backward: the branch path goes through LN, whose Jacobian scales "
             "a gradient's second moment by $\\gamma^2/q_{k-1}$ (derived in the layer norm "
             "note), so "
             "$d_{k-1} = d_k (1 + G \\gamma^2/q_{k-1})$"),
        Step(ratio, sympy.Symbol("K") ** (G / g), relation="\\propto",
             reason="for large $K$: the logarithm of the product is about "
                    "$\\sum_k G/(g k) \\approx (G/g) \\ln K$, a power law in $K$"),
        Step(ratio, sympy.factor(equal),
             "when $G = g$ (linear, ReLU, leaky ReLU, where $E[\\phi'(z)^2] s = E[\\phi(z)^2]$)"
             " the product telescopes: linear growth"),
        Step(ratio, post_general,
             "post-norm backward: LN after the sum scales a gradient's second moment by "
             "$\\gamma^2$ over the sum's second moment $(1 + g) q_{k-1}$, and the sum passes "
             "$1 + G$, so $d_{k-1} = d_k \\gamma^2 (1 + G)/((1 + g) q_{k-1})$; block 1 sees "
             "$q_0$, with the gains $g(q_0)$ and $G(q_0)$ at that moment, every later block "
             "$q_{k-1} = \\gamma^2$ ($K \\ge 1$)"),
        Step(ratio, post_ratio,
             "when $q_0 = \\gamma^2$, or for an activation whose gains do not depend on its "
             "input's moment (linear, ReLU, leaky ReLU): $g(q_0) = g$, $G(q_0) = G$"),
        Step(input_share, post_share,
             "post-norm: each LN divides the skip path's second moment by $1 + g$"),
        Step(input_share, pre_share,
             "pre-norm: the skip path carries $x$ untouched, its share is $q_0/q_K$"),
    )
    return Derivation(
        title="Pre-norm against post-norm",
        key="concept/pre-vs-post-norm",
        assumptions=(
            "forward gain $g$: the branch's output has $g$ times its input's second "
            "moment; backward gain $G$: the branch's Jacobian $J_k$ (numerator layout) "
            "multiplies a gradient's second moment by $G$. Both at the moment the branch "
            "sees: $\\gamma^2$ with pre-norm, and from block 2 on with post-norm",
            "skip and branch uncorrelated (not independent); gradient independence backward",
            "$q_0 = \\mathbb{E}[x^2]$ of a zero-mean input; $d_k$ is the second moment of "
            "the gradient at $h_k$; $\\gamma$ the LayerNorm gain at initialization, a scalar",
        ),
        steps=steps,
        result=Step(ratio, sympy.factor(equal)),
        notes=(
            "Pre-norm keeps the identity path: the forward moment grows linearly, and the "
            "gradient ratio grows as $K^{G/g}$: linearly only when $G = g$. With "
            "$\\tanh$ or GELU, $G > g$ and the gradient grows faster than linearly. "
            "Post-norm pins $q_k$ at $\\gamma^2$ and changes the gradient by "
            "$(1 + G)/(1 + g)$ per block (constant only when $G = g$), but it shrinks the "
            f"input's share of $q_K$ to ${latex(post_share)}$: the identity path is lost.",
        ),
    )


def concepts() -> tuple[Derivation, ...]:
    """The concept derivations, in the order the notes present them.

    >>> len(concepts())
    3
    """
    return (residual_block(), layer_norm(), pre_vs_post())
