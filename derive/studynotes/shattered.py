"""The note on shattered gradients and the edge of chaos: two inputs through depth.

Its numbers come from :mod:`derive.studynotes.correlations` (the kernel engine, the
phases, the reproduction of UDL notebook 11.1), its derivation from
:mod:`derive.studynotes.correlation_map`; this module writes them up: key results with
their reasons, one table, three figures and cards that ask why.

>>> section = shattered_section()
>>> section.key, len(section.tables), [f.stem for f in section.figures]
('shattered-gradients', 1, ['correlation-depth', 'phase-diagram', 'notebook-gradients'])
"""

from __future__ import annotations

import math
from dataclasses import replace

import sympy

from derive.deck.cards import Card
from derive.derivation.printing import latex
from derive.rendering.render import Figure, Table
from derive.studynotes.correlation_map import branch_maps, derivation, near_one_laws, rho_prev
from derive.studynotes.correlations import (
    BLOCKS,
    FIGURE_DEPTH,
    NOTEBOOK_DEPTHS,
    RHO0,
    RUN_DEPTHS,
    SAME_AS_RESIDUAL,
    analysis,
    critical_lines,
    critical_phase,
    erf_slope_inverse,
    factor_at,
    grad_at,
    he_phase,
    law_cell,
    laws,
    notebook_derived,
    notebook_pair,
    notebook_phase,
    notebook_statistics,
    rho_at,
)
from derive.studynotes.parts import Section, card, number

#: A block's row says this where its maps are those of x + F(x) (checked).
SAME = "as $x + F(x)$ (the same maps)"
#: What a row without a law says.
ITERATED = "iterated (no law derived)"


def exact(value: float | None) -> sympy.Expr | float:
    """A float that is a fraction of small integers as that fraction, else the float.

    >>> exact(0.005), exact(0.1 + 0.2)
    (1/200, 0.30000000000000004)
    """
    if value is None:  # pragma: no cover (a phase without the value the note needs)
        raise AssertionError("the engine gave no value")
    fraction = sympy.Rational(value).limit_denominator(1000)
    return fraction if float(fraction) == value else value


def inline(value: object, digits: int = 4) -> str:
    """:func:`~derive.studynotes.parts.number` for use inside math (no dollars).

    >>> print(inline(exact(0.005)), inline(2.7e-5, 3))
    \\frac{1}{200} 2.70 \\cdot 10^{-5}
    """
    return number(value, digits).strip("$")


def table(depths: tuple[int, ...] = (10, 50)) -> Table:
    """Every block of :data:`~derive.studynotes.correlations.BLOCKS` under He and ReLU:
    rho_K and rho^grad_0 at ``depths``, d_0/d_K at the first, and the laws.

    >>> table((10,)).rows[1][:4]
    ('$x + F(x)$', '0.799', '0.241', '1024')
    """
    header = ("block", *(f"$\\rho_{{{n}}}$" for n in depths),
              *(f"$\\rho^{{grad}}_0$, $K = {n}$" for n in depths),
              f"$d_0/d_K$, $K = {depths[0]}$", "law of $\\rho_k$", "law of $\\rho^{grad}_0$")
    rows = []
    for name, (_, _, label) in BLOCKS.items():
        if name in SAME_AS_RESIDUAL:
            laws(name)  # compares the maps
            cells: tuple[str, ...] = (SAME, SAME)
        elif not laws(name)[0].latex:
            cells = (ITERATED, ITERATED)
        else:
            cells = tuple(law_cell(law) for law in laws(name))
        rows.append((label, *(number(rho_at(name, n), 3) for n in depths),
                     *(number(grad_at(name, n), 3) for n in depths),
                     number(factor_at(name, depths[0]), 4), *cells))
    return Table(f"He initialization, ReLU, two inputs with $q_0 = 1$ and "
                 f"$\\rho_0 = {latex(RHO0)}$: their correlation $\\rho_K$, their gradients' "
                 "correlation at the input $\\rho^{grad}_0$ (output at $K$), the gradient's "
                 "growth $d_0/d_K$, and the laws in depth", header, tuple(rows))


def _at(name: str, depths: tuple[int, ...], of: str = "grad") -> str:
    get = grad_at if of == "grad" else rho_at
    return " and ".join(f"{number(get(name, n), 3)} at $K = {n}$" for n in depths)


def _factor() -> str:
    """The branch's gradient factor D(rho) of He + ReLU, in LaTeX (from the engine)."""
    return latex(branch_maps()[3].xreplace({rho_prev: sympy.Symbol("rho")}))


def _correlation_results(depths: tuple[int, ...]) -> tuple[str, ...]:
    plain_f, plain_b = laws("plain")
    res_f, res_b = laws("residual")
    pre_f, pre_b = laws("pre")
    drop_f, drop_b = laws("dropout")
    near = near_one_laws()
    bn = analysis("bn-first", 1).forward_states[1]
    if drop_f.limit is None or bn.m is None:  # pragma: no cover (the engine changed)
        raise AssertionError("dropout's fixed point, BN's batch covariance")
    return (
        "Residual connections keep the gradients of two inputs correlated: with "
        f"$\\rho_0 = {latex(RHO0)}$ their correlation at the input, $\\rho^{{grad}}_0$, is "
        f"{_at('plain', depths)} for a plain stack $F(x)$, {_at('residual', depths)} for "
        "$x + F(x)$ (and its rescaled and post-LN forms), because the skip's Jacobian $I$ "
        "is the same for both inputs, so each block multiplies $\\rho^{grad}$ by the "
        f"average of $1$ and the branch's factor $\\dot C(\\rho) = {_factor()}$ instead "
        "of by $\\dot C(\\rho)$ alone.",
        f"Plain and residual stacks decorrelate by the same powers of depth, ${plain_f.latex}$ "
        f"and ${plain_b.latex}$ for $F(x)$, ${res_f.latex}$ and ${res_b.latex}$ for "
        "$x + F(x)$, because the skip halves each block's step toward $\\rho = 1$ "
        f"(${latex(near['residual'] / near['plain'])}$ times the constant) and dilutes each "
        "gradient factor by as much, which cancels in the exponent "
        f"${latex(near['rate'])}$ (derivation below); only the constants differ.",
        f"Pre-LN keeps the gradients far more correlated, {_at('pre', depths)}, with "
        f"${pre_f.latex}$ and ${pre_b.latex}$, because LN hands each branch second moment "
        "$\\gamma^2$ while $q_{k-1}$ grows like $k$: block $k$'s branch carries a share of "
        "about $1/k$, and later blocks barely move either correlation.",
        f"Dropout (${_dropout()}$ on the branch) makes the correlation settle below 1, "
        f"$\\rho_k \\to {inline(drop_f.limit, 3)}$ with ${drop_f.latex}$, and "
        f"${drop_b.latex}$, because independent masks scale each input's second moment by "
        "$1/(1 - p)$ but not their covariance: $\\rho = 1$ is no longer a fixed point.",
        f"BatchNorm first in the branch keeps $\\rho_k$ near ${latex(RHO0)}$ "
        f"({_at('bn-first', depths, 'rho')}; $\\rho^{{grad}}_0$ {_at('bn-first', depths)}; "
        "iterated, no law derived), because BN subtracts from each unit the covariance "
        "$m$ that every input of the batch shares (the ReLU's outputs have a mean; "
        f"$m_1 = {inline(bn.m, 3)}$), so its branch sees $(c - m)/(q - m) < \\rho$.",
    )


def _dropout() -> str:
    """The dropout rate of the compared block, as ``p = 1/10``."""
    (name, value), = BLOCKS["dropout"][1]
    return f"{name} = {latex(sympy.Rational(value))}"


def _chaos_results(first: int) -> tuple[str, ...]:
    lines = critical_lines()
    tanh, erf = dict(lines["tanh"]), dict(lines["erf"])
    he = he_phase()
    block, branch = factor_at("residual", 1), factor_at("plain", 1)
    return (
        "The edge of chaos of a plain network $\\phi(W h + b)$ (Poole et al. 2016; Schoenholz "
        "et al. 2017) is $\\chi_1 = \\sigma_w^2 E[\\phi'(h)^2] = 1$ at the fixed point $q^*$, "
        "because $\\chi_1$ is both a layer's factor on a gradient's second moment and the "
        "correlation map's slope at $\\rho = 1$: below it (ordered) correlations go to 1 and "
        "gradients vanish, above it (chaotic) $\\rho = 1$ repels and gradients grow.",
        f"For tanh the critical line runs from $\\sigma_w^2 = {inline(tanh[0.0], 4)}$ at "
        f"$\\sigma_b^2 = 0$ through {number(tanh[0.5], 4)} at $\\sigma_b^2 = 0.5$ to "
        f"{number(tanh[1.0], 4)} at $\\sigma_b^2 = 1$, for erf from {number(erf[0.0], 4)} "
        f"$= {latex(erf_slope_inverse())}$ to {number(erf[1.0], 4)}, because biases raise "
        f"$q^*$ (tanh: {number(critical_phase('tanh', 0.5).q_star, 3)} at "
        f"$\\sigma_b^2 = 0.5$, {number(critical_phase('tanh', 1.0).q_star, 3)} at 1), where "
        "$E[\\phi'(h)^2]$ is smaller, so $\\sigma_w^2$ must grow to keep $\\chi_1 = 1$. He and "
        f"ReLU ($\\sigma_w^2 = {inline(exact(he.sigma_w2))}$, no bias) have "
        f"$\\chi_1 = {inline(exact(he.chi_1))}$ whatever $q$, because ReLU's derivative is 1 "
        "on half the Gaussian.",
        "A residual block $x + F(x)$ under He is not at the edge of chaos in the "
        "mean-squared-singular-value sense: its Jacobian $I + J_k$ multiplies a gradient's "
        f"second moment by ${inline(block)}$ ($d_0/d_K = "
        f"{inline(factor_at('residual', first))}$ at $K = {first}$), a plain block's by "
        f"$\\chi_1 = {inline(branch)}$, because the identity adds its own $1$ to the "
        "branch's factor. What it shares with a critical network is the correlation map's "
        "slope $1$ at $\\rho = 1$, hence power laws rather than geometric ones; "
        f"$(x + F(x))/\\sqrt{{2}}$ brings the factor back to "
        f"${inline(factor_at('rescaled', 1))}$ (post-LN: ${inline(factor_at('post', 1))}$) "
        "with the same correlations.",
    )


def _notebook_laws() -> tuple[str, str]:
    """The notebook's gradient: its rms falls like chi_1^(K/2) and E[(dy/dx)^2] =
    chi_1^K/D, in LaTeX (chi_1 = 1/2 is written as 2^(-K/2) and 2^(-K)/D)."""
    from derive.simulation.notebook import WIDTH

    chi = exact(notebook_phase().chi_1)
    if notebook_derived(1)[1] * WIDTH != float(chi):  # pragma: no cover (the engine changed)
        raise AssertionError("E[(dy/dx)^2] = chi_1^K/D")
    base = latex(1 / chi)
    return f"{base}^{{-K/2}}", f"{base}^{{-K}}/D"


def _notebook_results() -> tuple[str, ...]:
    from derive.simulation.notebook import WIDTH

    nb = notebook_phase()
    x, _, rho_pair = notebook_pair()
    derived = [notebook_derived(n) for n in NOTEBOOK_DEPTHS]
    measured = [notebook_statistics(n) for n in RUN_DEPTHS]
    ks = ", ".join(str(n) for n in NOTEBOOK_DEPTHS)
    runs = ", ".join(str(n) for n in RUN_DEPTHS)
    if nb.rho_star != 1 or nb.chi_c != nb.chi_1:  # pragma: no cover (the engine changed)
        raise AssertionError("the notebook's network: rho* = 1, chi_c = chi_1")
    shrink, size = _notebook_laws()
    return (
        f"UDL notebook 11.1's hidden layers (every weight and bias $N(0, 1/D)$, $D = {WIDTH}$, so "
        f"$\\sigma_w^2 = {inline(exact(nb.sigma_w2))}$ and "
        f"$\\sigma_b^2 = {inline(exact(nb.sigma_b2))}$) are in the {nb.phase} phase, "
        f"$\\chi_1 = {inline(exact(nb.chi_1))}$ "
        f"($q^* = {inline(nb.q_star, 3)}$, $\\xi_c = {inline(nb.xi_c, 3)}$), so two inputs' "
        "correlation goes to 1 geometrically and the gradients of neighbouring grid points "
        f"($x = \\pm {latex(x)}$, $\\rho_0 = {inline(rho_pair, 6)}$) stay correlated, "
        f"$\\rho^{{grad}} = {', '.join(inline(r, 3) for r, _ in derived)}$ at $K = {ks}$, "
        f"while they shrink like ${shrink}$: $E[(dy/dx)^2] = {size}$, rms "
        f"{', '.join(number(math.sqrt(e), 2) for _, e in derived)}.",
        "The reproduction (the notebook's own draws, `np.random.seed(1)`) shows just that, "
        "an autocorrelation at one grid step of "
        f"{', '.join(number(a, 3) for _, a in measured)} and an rms of $dy/dx$ of "
        f"{', '.join(number(r, 2) for r, _ in measured)} at $K = {runs}$: smooth, shrinking "
        "gradients rather than the white noise of Balduzzi et al. (2017), because the "
        f"network is {nb.phase}, which is why the notebook's author doubts the replication.",
    )


def _cards(depths: tuple[int, ...]) -> tuple[Card, ...]:
    from derive.derivation.symbols import K

    last = depths[-1]
    plain_b, res_b = laws("plain")[1], laws("residual")[1]
    drop_f = laws("dropout")[0]
    near = near_one_laws()
    rate, log_rate = latex(near["rate"]), latex(near["log_rate"])
    nb, he = notebook_phase(), he_phase()
    settled = notebook_derived(NOTEBOOK_DEPTHS[-1])[0]
    block = exact(factor_at("residual", 1))
    shrink, _ = _notebook_laws()
    return (
        card("shattered/residual",
             "Why does $x + F(x)$ keep the gradients of two inputs more correlated than a "
             "plain $F(x)$ stack (He init, ReLU)?",
             "The skip's Jacobian $I$ is the same for both inputs, so each block multiplies "
             "the gradients' correlation by the average of $1$ and the branch's factor "
             f"$\\dot C(\\rho) = {_factor()}$: at $K = {last}$, "
             f"{number(grad_at('residual', last), 3)} against "
             f"{number(grad_at('plain', last), 3)}."),
        card("shattered/same-power",
             "Why do the gradient correlations $\\rho^{grad}_0$ of plain $F(x)$ and of "
             f"$x + F(x)$ (He, ReLU) both fall like $K^{{-{rate}}}$?",
             "The skip halves each block's step toward $\\rho = 1$ and halves each gradient "
             f"factor's deficit; the two cancel: $h_k \\approx 1 - {rate}/k$ either way. Only "
             f"the constants differ: ${plain_b.latex}$, ${res_b.latex}$."),
        card("shattered/pre-ln",
             "Why does pre-LN keep the gradients of two inputs correlated far deeper than "
             "$x + F(x)$?",
             "LN hands each branch second moment $\\gamma^2$ while $q_{k-1}$ grows like $k$, "
             "so block $k$'s branch carries a share of about $1/k$: the gradient factors are "
             f"$1 - {log_rate}/(k \\ln k)$, and $\\rho^{{grad}}_0$ falls only like "
             f"$(\\ln K)^{{-{log_rate}}}$ ({number(grad_at('pre', last), 3)} at $K = {last}$)."),
        card("shattered/dropout",
             "Why does dropout on the branch make the correlation $\\rho_k$ of two inputs "
             "settle below 1?",
             "Independent masks scale each input's second moment by $1/(1 - p)$ but not "
             "their covariance, so the branch maps $\\rho = 1$ to $1 - p$: it is no longer "
             f"a fixed point. With ${_dropout()}$, $\\rho_k \\to {inline(drop_f.limit, 3)}$, "
             "and the gradients' correlation decays geometrically."),
        card("shattered/edge-of-chaos",
             "Why is $\\chi_1 = \\sigma_w^2 E[\\phi'(h)^2] = 1$ the edge of chaos of a plain "
             "network $\\phi(W h + b)$?",
             "$\\chi_1$ is a layer's factor on a gradient's second moment and the slope of "
             "the correlation map at $\\rho = 1$: below 1 correlations go to 1 and gradients "
             "vanish (ordered); above 1, $\\rho = 1$ repels, correlations settle below 1 and "
             "gradients grow (chaotic)."),
        card("shattered/he-relu",
             "Why does He initialization put a plain ReLU network at the edge of chaos, "
             "whatever the input's scale?",
             "$\\chi_1 = \\sigma_w^2 E[\\operatorname{relu}'(h)^2] = "
             f"{inline(exact(he.sigma_w2))} \\cdot "
             f"{inline(exact(he.chi_1) / exact(he.sigma_w2))} = "
             f"{inline(exact(he.chi_1))}$: ReLU's derivative is 1 on half the Gaussian, for "
             "any variance."),
        card("shattered/residual-msv",
             "Why is $x + F(x)$ under He init not at the edge of chaos in the "
             "mean-squared-singular-value sense?",
             "Its Jacobian $I + J_k$ multiplies a gradient's second moment by "
             f"$1 + G = {inline(block)}$, the identity's 1 plus the branch's: "
             f"$d_0/d_K = {latex(block**K)}$. It shares with a critical network only the "
             "correlation map's slope 1 at $\\rho = 1$; $(x + F(x))/\\sqrt{2}$ or post-LN "
             "make the factor 1, with the same correlations."),
        card("shattered/notebook",
             "Why do the gradients of UDL notebook 11.1 (every weight and bias "
             "$N(0, 1/D)$, ReLU) not shatter?",
             f"Its hidden layers are {nb.phase}: $\\chi_1 = \\sigma_w^2 "
             f"E[\\operatorname{{relu}}'(h)^2] = {inline(exact(nb.chi_1))}$. Two inputs' "
             "correlation goes to 1 geometrically, so the gradient factors approach 1 fast: "
             f"neighbouring grid points keep $\\rho^{{grad}} \\approx {inline(settled, 3)}$, "
             f"while $dy/dx$ shrinks like ${shrink}$."),
    )


def shattered_section(depths: tuple[int, ...] = (10, 50)) -> Section:
    """The note: key results with reasons, one derivation, one table, three figures and
    cards, with values at the first and last of ``depths``."""
    chosen = (depths[0], depths[-1]) if len(depths) > 1 else (depths[0],)
    written = derivation()  # its assumptions join the note's, stated once
    return Section(
        "shattered-gradients", "Shattered gradients and the edge of chaos",
        key_results=(*_correlation_results(chosen), *_chaos_results(chosen[0]),
                     *_notebook_results()),
        assumptions=(
            "Mean field at infinite width: two zero-mean Gaussian inputs $a$, $b$ per unit "
            "with second moments $q_a = q_b = q_k$, covariance $c_k$ and correlation "
            "$\\rho_k = c_k/q_k$; gradient independence backward; the loss reads both "
            "outputs through the same linear readout, so $\\rho^{grad}_K = 1$ at the output.",
            "He initialization and ReLU, the branch $F(x) = W \\operatorname{relu}(x)$, "
            f"$q_0 = 1$ and $\\rho_0 = {latex(RHO0)}$ unless said otherwise; BatchNorm with "
            "the statistics of an infinite batch of independent inputs; dropout's masks "
            "drawn independently for the two inputs.",
            "Phases are those of plain networks $\\phi(W h + b)$ with "
            "$\\operatorname{Var} W = \\sigma_w^2/\\text{fan-in}$ and biases of variance "
            "$\\sigma_b^2$ (He is $\\sigma_w^2 = 2$).",
            *(f"In the derivation: {a}." for a in written.assumptions),
        ),
        intro=("`derive.recursions.kernel.kernel(\"he\", \"relu\", block=B, rho0=R)` "
               "gives any of these stacks, its profiles and its laws; their second moments "
               "alone are in [[variance|variance under initialization]] and "
               "[[block-variants|residual block variants]].",),
        derivations=(replace(written, assumptions=()),),
        tables=(table(chosen),),
        figures=(
            Figure("correlation-depth",
                   f"He initialization, ReLU, $\\rho_0 = {latex(RHO0)}$: $1 - \\rho_k$ against "
                   "$k$, and $\\rho^{grad}_0$ against the depth $K$, on log-log axes "
                   f"(to {FIGURE_DEPTH} blocks; $(x + F(x))/\\sqrt{{2}}$ and post-LN lie on "
                   "$x + F(x)$)."),
            Figure("phase-diagram",
                   "The edge of chaos in the $(\\sigma_w^2, \\sigma_b^2)$ plane: the critical "
                   "lines $\\chi_1 = 1$ of erf and tanh (derived points), erf's ordered "
                   "region shaded and the phases named as derived for erf; ReLU's line, with "
                   "the notebook's network and He marked."),
            Figure("notebook-gradients",
                   "UDL notebook 11.1 (as UDL fig. 11.3): $dy/dx$ across the input grid at "
                   f"$K = {', '.join(str(n) for n in RUN_DEPTHS)}$, the notebook's own draws; "
                   "the residual rows put a skip around each hidden layer (an extension with "
                   "the same draws; at $K = 1$ it is the plain network)."),
        ),
        links=("variance", "block-variants", "pre-vs-post-norm"),
        cards=_cards(chosen),
    )
