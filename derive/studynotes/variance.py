"""The variance note: a branch's gains g and G, then tables per configuration.

The recursions in the gains are derived once, in the pre-vs-post note
(:func:`derive.studynotes.concepts.pre_vs_post`); here the gains come from the
initialization and the activation (one derivation), and every value in a table
or on a card is computed by ``derive.variance(init, activation, norm)``.

>>> gains("he", "relu")
(1, 1)
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, TypedDict

import sympy

from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step
from derive.pathsums.notation import shown
from derive.rendering.render import Figure, Table
from derive.studynotes.parts import Section, card, number, readable

if TYPE_CHECKING:  # pragma: no cover
    from derive.recursions.analysis import VarianceAnalysis
    from derive.recursions.recursion import Recursion

#: Activations shown in the tables and figures, and how a reader names them.
ACTIVATION_NAMES = {"linear": "linear", "relu": "ReLU", "leaky_relu": "leaky ReLU",
                    "tanh": "tanh", "gelu": "GELU", "erf": "erf"}
INIT_NAMES = {"xavier": "Xavier", "he": "He", "lecun": "LeCun"}
BLOCK_NAMES = {"none": "no norm", "pre": "pre-LN", "post": "post-LN"}
BLOCK_TITLES = {"none": "No norm, $h_k = h_{k-1} + f_k(h_{k-1})$",
                "pre": "Pre-LN, $h_k = h_{k-1} + f_k(\\operatorname{LN}(h_{k-1}))$",
                "post": "Post-LN, $h_k = \\operatorname{LN}(h_{k-1} + f_k(h_{k-1}))$"}
INITS = ("xavier", "he")
#: Activations drawn against depth (one line each).
CURVES = ("relu", "tanh", "gelu")


class SimulationSize(TypedDict):
    """The size of a simulation: blocks, units a layer, networks, inputs a batch."""

    depth: int
    width: int
    seeds: int
    batch: int


#: The simulation shown beside the derived values: small, so the notes stay fast.
SIM: SimulationSize = {"depth": 6, "width": 256, "seeds": 4, "batch": 8}
#: Relative error within which a simulated value counts as agreeing (finite width).
TOLERANCE = 0.15
#: A closed form longer than this (LaTeX characters) is given by its growth instead.
SHORT = 40


#: Per block: profiles (q_k, d_k/d_K) for k = 0..depth, derived (exact) or simulated.
Derived = dict[str, tuple[list[sympy.Expr], list[sympy.Expr]]]
Measured = dict[str, tuple[tuple[float, ...], tuple[float, ...]]]


def _analysis(init: str, activation: str, norm: str) -> VarianceAnalysis:
    from derive.recursions.analysis import one_point, variance

    return one_point(variance(init, activation, norm))


@functools.cache
def gains(init: str, activation: str) -> tuple[sympy.Expr, sympy.Expr]:
    """The branch's forward gain g and backward gain G at input moment 1 (computed).

    Read off the pre-LN recurrences at q_{k-1} = 1 (LN gain 1): q_k = 1 + g and
    d_{k-1} = (1 + G) d_k.

    >>> gains("xavier", "relu")
    (1/2, 1/2)
    """
    from derive.derivation.symbols import d, k, q

    pre = _analysis(init, activation, "pre")
    at_one = {q(k - 1): sympy.Integer(1), d(k): sympy.Integer(1)}
    forward = pre.forward.recurrence.rhs.xreplace(at_one) - 1
    backward = pre.backward.recurrence.rhs.xreplace(at_one) - 1
    return tuple(sympy.nsimplify(v) if v.is_Rational else v.doit() for v in (forward, backward))


def _ratio(init: str, activation: str) -> float:
    g, G = gains(init, activation)
    return float(G) / float(g)


def _form(recursion: Recursion) -> str:
    """A short closed form (K >= 1) in math, else the growth in words."""
    closed = recursion.closed_form
    if closed is not None:
        rhs = closed.rhs
        if isinstance(rhs, sympy.Piecewise):
            rhs = rhs.args[-1].expr
        rhs = readable(rhs)
        shown_rhs = latex(rhs)
        if len(shown_rhs) <= SHORT and not rhs.has(sympy.gamma) and "E[" not in str(rhs):
            return f"${shown_rhs}$"
    return growth(recursion.growth)


def growth(words: str) -> str:
    """The API's growth in the notes' words: ``power law, K^(1.18)`` -> ``$\\propto K^{1.18}$``,
    ``decays like K^(-1/2)`` -> ``decays $\\propto K^{-1/2}$``.

    A growth read off the iterated recursion (no closed form) is marked with a dagger.

    >>> growth("power law, K^(1.18)"), growth("linear (from the iteration, no closed form)")
    ('$\\\\propto K^{1.18}$', 'linear$^{\\\\dagger}$')
    >>> growth("decays like K^(-1.5) (from the iteration, no closed form)")
    'decays $\\\\propto K^{-1.5}{}^{\\\\dagger}$'
    """
    found = re.fullmatch(r"power law, K\^\(([0-9.]+)\)", words)
    if found:
        return f"$\\propto K^{{{found[1]}}}$"
    iterated = " (from the iteration, no closed form)"
    found = re.fullmatch(r"decays like K\^\((-[0-9./]+)\)", words.removesuffix(iterated))
    if found:
        dagger = "{}^{\\dagger}" if words.endswith(iterated) else ""
        return f"decays $\\propto K^{{{found[1]}}}{dagger}$"
    words = words.replace("faster than linear, slower than exponential", "superlinear")
    return words.replace(" (from the iteration, no closed form)", "$^{\\dagger}$")


def _gain_derivation() -> Derivation:
    """g and G of a branch f = W phi(u), in symbols, then for ReLU under He and Xavier."""
    from derive.gaussian.moments import gaussian_moment

    s, n, sw = (sympy.Symbol("s", positive=True), sympy.Symbol("n", positive=True),
                sympy.Symbol("sigma_w", positive=True) ** 2)
    phi2 = shown("E[φ(z)²]", "\\mathbb{E}[\\phi(z)^{2}]")
    dphi2 = shown("E[φ′(z)²]", "\\mathbb{E}[\\phi'(z)^{2}]")
    relu, drelu = gaussian_moment("relu", s), gaussian_moment("relu", s, derivative=True)
    g_relu, G_relu = sympy.simplify(n * sw * relu / s), sympy.simplify(n * sw * drelu)
    g_he, g_xavier = g_relu.subs(sw, 2 / n), g_relu.subs(sw, 2 / (n + n))
    ef2 = shown("E[f²]", "\\mathbb{E}[f^{2}]")
    jt = shown("E[(Jᵀδ)²]", "\\mathbb{E}[(J^{T}\\delta)^{2}]")
    g_, G_ = sympy.Symbol("g"), sympy.Symbol("G")
    steps = (
        Step(ef2, n * sw * phi2,
             "$f = W \\phi(u)$: each output sums $n$ uncorrelated products $W_{ij}\\phi(u_j)$ "
             "of zero-mean weights; $z \\sim N(0, s)$ with $s = E[u^2]$"),
        Step(g_, n * sw * phi2 / s, "the forward gain is $E[f^2]/E[u^2]$"),
        Step(jt, n * sw * dphi2 * shown("E[δ²]", "\\mathbb{E}[\\delta^{2}]"),
             "$J = W \\operatorname{diag}(\\phi'(z))$ (out $\\times$ in), so "
             "$J^T\\delta = \\operatorname{diag}(\\phi'(z)) W^T \\delta$; $W^T$ is treated as "
             "independent of the forward pass (gradient independence)"),
        Step(G_, n * sw * dphi2, "the backward gain is $E[(J^T\\delta)^2]/E[\\delta^2]$"),
        Step(g_, g_relu, f"ReLU: $E[\\phi(z)^2] = {latex(relu)}$, half of the Gaussian"),
        Step(G_, G_relu, f"ReLU: $\\phi'(z)^2$ is 1 on half the line, ${latex(drelu)}$"),
        Step(g_, g_he, "He, $\\sigma_w^2 = 2/n$: the branch keeps its input's moment"),
        Step(g_, g_xavier, "Xavier with equal fans, $\\sigma_w^2 = 2/(n + n)$"),
    )
    return Derivation(
        "Gains of a branch at initialization", "variance/gains", steps=steps,
        notes=("For ReLU, linear and leaky ReLU $g = G$ at every input moment: they are "
               "positively homogeneous. For tanh and GELU the gains depend on $s$; the "
               "table gives them at $s = 1$ ($\\gamma^2$, what the branch sees after LN).",))


def _gain_table() -> Table:
    from derive.inputs.choices import GRID_ACTIVATIONS

    rows = []
    for activation in GRID_ACTIVATIONS:
        for init in INITS:
            g, G = gains(init, activation)
            rows.append((ACTIVATION_NAMES[activation], INIT_NAMES[init], number(g), number(G),
                         f"{_ratio(init, activation):.3g}"))
    return Table("Forward gain $g$ and backward gain $G$ of one branch at input moment "
                 "$s = 1$ (computed)", ("activation", "init", "$g$", "$G$", "$G/g$"),
                 tuple(rows))


def _block_table(norm: str, depths: tuple[int, ...]) -> Table:
    from derive.inputs.choices import GRID_ACTIVATIONS

    rows = []
    for activation in GRID_ACTIVATIONS:
        for init in INITS:
            a = _analysis(init, activation, norm)
            rows.append((ACTIVATION_NAMES[activation], INIT_NAMES[init], _form(a.forward),
                         _form(a.backward),
                         *(number(a.forward.at(K)) for K in depths),
                         *(number(a.backward.at(K)) for K in depths)))
    return Table(
        f"{BLOCK_TITLES[norm]}: $q_K$ and $d_0/d_K$ for $K \\ge 1$, $q_0 = 1$ (values "
        "computed; $^{\\dagger}$ growth of the iterated recursion, which has no closed form)",
        ("activation", "init", "$q_K$", "$d_0/d_K$", *(f"$q_{{{K}}}$" for K in depths),
         *(f"$d_0/d_{{{K}}}$" for K in depths)), tuple(rows))


@functools.cache
def measure(blocks: tuple[str, ...]) -> Measured:
    """Simulated profiles (forward, backward) of He + ReLU networks, one pair a block.

    >>> [round(v) for v in measure(("none",))["none"][0]][:3]
    [1, 2, 4]
    """
    from derive.simulation.networks import simulate

    runs = {norm: simulate("he", "relu", norm, **SIM) for norm in blocks}
    return {norm: (run.forward, run.backward) for norm, run in runs.items()}


@functools.cache
def simulated(blocks: tuple[str, ...]) -> tuple[Table, dict[str, tuple[Derived, Measured]]]:
    """Derived against simulated values (He, ReLU), and the profiles drawn: (derived,
    measured) by initialization.

    >>> simulated(("post",))[0].rows[0][:3]
    ('He, ReLU, post-LN', 'forward', '$1$')
    """
    depth = SIM["depth"]
    rows = []
    profiles: dict[str, tuple[Derived, Measured]] = {}
    runs = measure(blocks)
    for init in ("he",):
        derived: Derived = {}
        measured: Measured = {}
        for norm in blocks:
            a = _analysis(init, "relu", norm)
            derived[norm] = (a.forward.profile(depth), a.backward.profile(depth))
            measured[norm] = runs[norm]
            run_forward, run_backward = runs[norm]
            for direction, value, got in (("forward", a.forward.at(depth), run_forward[-1]),
                                          ("backward", a.backward.at(depth), run_backward[0])):
                error = abs(got - float(value)) / abs(float(value))
                rows.append((f"{INIT_NAMES[init]}, ReLU, {BLOCK_NAMES[norm]}", direction,
                             number(value), f"{got:.4g}", f"{error:.1%}",
                             "yes" if error <= TOLERANCE else "no"))
        profiles[init] = (derived, measured)
    table = Table(f"Derived against simulated at $K = {depth}$ (width {SIM['width']}, "
                  f"{SIM['seeds']} seeds, batch {SIM['batch']}, $q_0 = 1$); agreement within "
                  f"{TOLERANCE:.0%}", ("network", "direction", "derived", "simulated",
                                       "error", "agrees"), tuple(rows))
    return table, profiles


def curves(norm: str, depth: int, direction: str) -> dict[str, list[float]]:
    """He init: q_k (forward) or d_0/d_k (backward) for k = 0..depth, one list an activation.

    >>> curves("pre", 3, "backward")["ReLU"]
    [1.0, 2.0, 3.0, 4.0]
    """
    out = {}
    for activation in CURVES:
        a = _analysis("he", activation, norm)
        recursion = a.forward if direction == "forward" else a.backward
        out[ACTIVATION_NAMES[activation]] = recursion.iterated(depth)
    return out


def shifted_q1() -> float:
    """q_1 of He + ReLU for x ~ N(1, 1): 2 + 2 E[relu(x)^2], not 2 q_0 = 4.

    E[relu(x)^2] = (mu^2 + 1) Phi(mu) + mu phi(mu) for x ~ N(mu, 1).

    >>> round(shifted_q1(), 2)
    5.85
    """
    import math

    mu = 1.0
    cdf = 0.5 * (1 + math.erf(mu / math.sqrt(2)))
    pdf = math.exp(-mu * mu / 2) / math.sqrt(2 * math.pi)
    return (mu * mu + 1) + 2 * ((mu * mu + 1) * cdf + mu * pdf)


def variance_section(blocks: tuple[str, ...], depths: tuple[int, ...]) -> Section:
    """The variance note for the chosen blocks (norm placements) and depths.

    >>> [t.caption[:6] for t in variance_section(("pre",), (10,)).tables]
    ['Forwar', 'Pre-LN', 'Derive']
    """
    from derive.gaussian.moments import gaussian_moment

    g_he, G_relu = gains("he", "relu")
    s = sympy.Symbol("s", positive=True)
    half = sympy.simplify(gaussian_moment("relu", s) / s)
    g_x = gains("xavier", "relu")[0]
    factor = sympy.Symbol("a", positive=True)
    (root,) = sympy.solve(factor**2 * (1 + g_he) - 1, factor)
    scale = sympy.Pow(sympy.sqrt(1 + g_he), -1, evaluate=False)
    if sympy.simplify(scale - root) != 0:  # pragma: no cover
        raise AssertionError("the scale factor")
    none, pre = _analysis("he", "relu", "none"), _analysis("he", "relu", "pre")
    tanh_pre, gelu_pre = _ratio("he", "tanh"), _ratio("he", "gelu")
    K = sympy.Symbol("K")
    results = (
        f"He with ReLU doubles $q_k = E[h_k^2]$ at every block without norm "
        f"(${latex(none.forward.solved.rhs)}$): the branch has gain $g = {g_he}$, so it "
        "adds a term of the same second moment, uncorrelated with the skip path.",
        f"Scaling the sum by ${latex(scale)}$, $h_k = (h_{{k-1}} + f_k)/\\sqrt{{2}}$, keeps "
        "$q_k = q_0$: it halves the doubled second moment.",
        f"Pre-LN adds a constant per block (${latex(pre.forward.solved.rhs)}$): LN hands "
        "the branch a second moment $\\gamma^2 = 1$ whatever $q_{k-1}$.",
        f"Post-LN keeps $q_k = \\gamma^2 = 1$, but the input's share of $q_K$ is "
        f"${latex(2 ** -K)}$: each LN divides the skip path's second moment by $1 + g = 2$.",
        f"Gradients follow the backward gain $G$: with pre-LN $d_0/d_K \\propto K^{{G/g}}$, "
        f"linear for ReLU ($G = g$) but $K^{{{tanh_pre:.2f}}}$ for tanh and "
        f"$K^{{{gelu_pre:.2f}}}$ for GELU, whose $G$ exceeds $g$.",
    )
    tables = (_gain_table(), *(_block_table(n, depths) for n in blocks))
    sim_table, _ = simulated(blocks)
    tanh_post = _analysis("he", "tanh", "post")
    gt, Gt = gains("he", "tanh")
    cards = (
        card("variance/he-doubles",
             "Why does He initialization double $q_k = E[h_k^2]$ at each residual block "
             "$h_k = h_{k-1} + W \\operatorname{relu}(h_{k-1})$?",
             f"The branch's gain is $g = n \\sigma_w^2 E[\\operatorname{{relu}}(z)^2]/s = "
             f"n \\cdot (2/n) \\cdot {latex(half)} = {g_he}$: it adds a term of the same second "
             "moment, uncorrelated with the skip, so $q_k = 2 q_{k-1}$."),
        card("variance/xavier-relu",
             "Without norm, Xavier init and ReLU: how does $q_K = E[h_K^2]$ grow with the "
             "number of blocks $K$?",
             f"${latex(_analysis('xavier', 'relu', 'none').forward.solved.rhs)}$: "
             f"Xavier's $\\sigma_w^2 = 1/n$ gives the branch gain $g = {latex(g_x)}$."),
        card("variance/post-ln-share",
             "Post-LN, He init, ReLU: what share of $q_K = E[h_K^2]$ comes from the input $x$ "
             "after $K$ blocks?",
             f"${latex(2 ** -K)}$: each LN divides the skip path's second moment by "
             f"$1 + g = {1 + g_he}$."),
        card("variance/pre-ln-tanh",
             "Pre-LN with tanh, He init: how does the gradient ratio $d_0/d_K$ (second "
             "moments at input and output) grow with depth $K$?",
             f"As $K^{{{tanh_pre:.2f}}}$, that is $K^{{G/g}}$: tanh's backward gain "
             f"$G = {float(Gt):.3f}$ exceeds its forward gain $g = {float(gt):.3f}$."),
        card("variance/post-ln-gradient",
             "Post-LN: by what factor does the gradient's second moment change per block, in "
             "the branch's forward gain $g$ and backward gain $G$?",
             f"$(1 + G)/(1 + g)$: {latex((1 + G_relu) / (1 + g_he))} for ReLU; "
             f"{(1 + float(Gt)) / (1 + float(gt)):.3f} for tanh "
             f"under He init ($d_0/d_{{10}} = {float(tanh_post.backward.at(10)):.3g}$)."),
    )
    return Section(
        "variance", "Variance under initialization",
        key_results=results,
        assumptions=(
            "mean field: infinite width $n$; a pre-activation of second moment $s$ is "
            "$z \\sim N(0, s)$, so inputs are zero-mean Gaussian, not only of second moment "
            f"$q_0$ (with $x \\sim N(1, 1)$, $q_0 = 2$, He and ReLU give "
            f"$q_1 \\approx {shifted_q1():.2f}$, not 4)",
            "weights i.i.d., zero mean, variance $2/(n_{in} + n_{out})$ (Xavier) or "
            "$2/n_{in}$ (He); biases zero",
            "He's ReLU form $2/n_{in}$ is used for leaky ReLU too; He et al.'s leaky-ReLU "
            "form $2/((1 + a^2) n_{in})$ would make $g = 1$ exactly (here $a = 0.01$)",
            "skip and branch are uncorrelated (not independent): "
            "$E[h\\, W\\phi(u)] = 0$ because $W$ is zero-mean",
            "LayerNorm at initialization: scalar gain $\\gamma = 1$, shift $\\beta = 0$",
            "backward: gradient independence, $d_K = 1$; Jacobians in numerator layout "
            "(out $\\times$ in), so a gradient flows back as $J^T\\delta$",
        ),
        intro=("The recursions in the gains, for each block, are derived in "
               "[[pre-vs-post-norm|pre-norm against post-norm]]; here the gains come from "
               "the initialization and the activation, and the tables give every "
               "configuration. The figures below draw $q_k$ over "
               f"{max(depths)} blocks and the check against a simulation.",),
        derivations=(_gain_derivation(),),
        tables=(*tables, sim_table),
        figures=(Figure("signal-depth", f"$q_k$ over {max(depths)} blocks, He "
                        "initialization, one panel per block, one line per activation "
                        "(log scale): exponential, linear and constant."),
                 Figure("simulation-check", f"Derived (lines) against simulated (circles) "
                        f"second moments, He initialization, ReLU, {SIM['depth']} blocks.")),
        links=("pre-vs-post-norm", "gradient-paths"),
        cards=cards,
    )


def power_law_exponent(init: str, activation: str) -> float:
    """G/g, the exponent of d_0/d_K under pre-LN (for G = g: 1, linear).

    >>> round(power_law_exponent("he", "tanh"), 2)
    1.18
    """
    return _ratio(init, activation)
