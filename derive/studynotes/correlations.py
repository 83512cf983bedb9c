"""The numbers of the note on shattered gradients and the edge of chaos, from the engine.

Two inputs through depth under He initialization and ReLU (the profiles and laws of
:func:`derive.recursions.kernel.kernel`), the phases and critical lines of plain networks
(:mod:`derive.recursions.phase`), and UDL notebook 11.1 both derived (its network's
kernel) and reproduced (:mod:`derive.simulation.notebook`, the notebook's own draws).
Each value is computed once a process (``functools.cache``); :func:`figures` hands the
figures' data to :mod:`derive.rendering.plots`.

>>> round(grad_at("residual", 10), 4)
0.2413
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import sympy

if TYPE_CHECKING:  # pragma: no cover
    from derive.recursions.correlation_laws import Law
    from derive.recursions.kernel import KernelAnalysis
    from derive.recursions.phase import Phase

#: The blocks compared (He, ReLU): key -> (block or preset, its symbols' values, label).
BLOCKS: dict[str, tuple[str, tuple[tuple[str, str], ...], str]] = {
    "plain": ("F(x)", (), "plain $F(x)$"),
    "residual": ("none", (), "$x + F(x)$"),
    "rescaled": ("rescaled", (), "$(x + F(x))/\\sqrt{2}$"),
    "post": ("post", (), "post-LN $\\operatorname{LN}(x + F(x))$"),
    "pre": ("pre", (), "pre-LN $x + F(\\operatorname{LN}(x))$"),
    "bn-first": ("bn-first", (), "BN first $x + F(\\operatorname{BN}(x))$"),
    "dropout": ("dropout", (("p", "1/10"),), "dropout $p = 1/10$ on $F$"),
}
#: Blocks whose laws are derived; the others share a block's maps (checked) or have none.
WITH_LAWS = ("plain", "residual", "pre", "dropout")
#: Blocks whose correlation maps are those of x + F(x) (checked when the note is built).
SAME_AS_RESIDUAL = ("rescaled", "post")
#: The blocks drawn against depth, as the figure's legend names them.
DRAWN = {"plain": "plain F(x)", "residual": "x + F(x)", "pre": "pre-LN x + F(LN(x))",
         "bn-first": "BN first x + F(BN(x))", "dropout": "x + Dropout(F(x), 1/10)"}
#: The two inputs' correlation, and the depth of the figure of correlations.
RHO0 = sympy.Rational(1, 2)
FIGURE_DEPTH = 200
#: The notebook's depths (K = 1, and 24 and 50 of its TODO), and those it is run at here
#: (UDL fig. 11.3 shows K = 1 and 24).
NOTEBOOK_DEPTHS = (1, 24, 50)
RUN_DEPTHS = (1, 24)
#: The critical lines' sigma_b^2 (derived points, joined in the figure).
TANH_BIASES = ("0", "1/4", "1/2", "1")
ERF_BIASES = ("0", "1/2", "1")
#: Where the figure writes the phases (sigma_w^2, sigma_b^2), each derived there: for erf
#: (its kernel has a closed form) and for ReLU.
REGIONS = {"erf": ((0.5, 0.75), (3.0, 0.5)), "relu": ((1.0, 0.5), (3.0, 0.5))}
#: The sigma_b^2 at which ReLU's critical line is derived.
RELU_BIASES = ("0", "1")

# --- two inputs through depth --------------------------------------------------------------

@functools.cache
def analysis(name: str, depth: int = 10) -> KernelAnalysis:
    """The kernel analysis of block ``name`` of :data:`BLOCKS` (He, ReLU, rho_0 = 1/2).

    >>> round(analysis("plain", 10).profile()["forward"]["rho"][-1], 4)
    0.8976
    """
    from derive.recursions.kernel import kernel

    block, values, _ = BLOCKS[name]
    return kernel("he", "relu", block=block, values=dict(values) or None, rho0=RHO0,
                  depth=depth)


def rho_at(name: str, depth: int) -> float:
    """rho_K of block ``name`` at ``depth``."""
    return analysis(name, depth).profile()["forward"]["rho"][-1]


def grad_at(name: str, depth: int) -> float:
    """rho^grad_0 of a stack of ``depth`` blocks ``name`` (the output at K = depth)."""
    return analysis(name, depth).profile()["backward"]["rho"][0]


def factor_at(name: str, depth: int) -> float:
    """d_0/d_K of a stack of ``depth`` blocks ``name``: the mean squared singular value of
    dy/dx, relative to the output's."""
    return analysis(name, depth).profile()["backward"]["d_a"][0]


@functools.cache
def curves(name: str, depth: int = FIGURE_DEPTH) -> tuple[list[float], list[float]]:
    """1 - rho_k for k = 0..depth, and rho^grad_0 of a stack of K blocks for K = 0..depth.

    The gradients' correlation is a product of one factor a block, each at the forward
    state of its input, so one backward pass from ``depth`` gives every K:
    rho^grad_0(K) = rho^grad_0(depth) / rho^grad_K(depth).

    >>> [round(v, 4) for v in curves("plain", 2)[1]]
    [1.0, 0.6667, 0.4723]
    """
    profile = analysis(name, depth).profile()
    forward, backward = profile["forward"]["rho"], profile["backward"]["rho"]
    return [1 - r for r in forward], [backward[0] / r for r in backward]


@functools.cache
def laws(name: str) -> tuple[Law, Law]:
    """The forward law (of 1 - rho_k) and backward law (of rho^grad_0) of block ``name``;
    the blocks of :data:`SAME_AS_RESIDUAL` take x + F(x)'s after their maps are compared.

    >>> laws("residual")[0].latex
    '1 - \\\\rho_k \\\\simeq 18 \\\\pi^{2}\\\\, k^{-2}'
    """
    if name in SAME_AS_RESIDUAL:
        ours, theirs = analysis(name), analysis("residual")
        if (ours.forward_map != theirs.forward_map
                or ours.backward_map != theirs.backward_map):  # pragma: no cover
            raise AssertionError(f"{name}: its maps are not those of x + F(x)")
        return laws("residual")
    a = analysis(name)
    forward, backward = a.forward_law, a.backward_law
    return forward, backward  # type: ignore[return-value]


def law_cell(law: Law) -> str:
    """A law as a table cell: its LaTeX, or why there is none."""
    return f"${law.latex}$" if law.latex else "iterated (no law derived)"


@functools.cache
def notebook_pair() -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """(x, q_0, rho_0) of the pair of grid inputs x_a = -x, x_b = x one grid step apart
    (distance 4/N) in the notebook's first layer f_0 = b_0 + W_0 x, whose weight and bias
    have variance 1/D: q_0 = (x^2 + 1)/D, c_0 = (x_a x_b + 1)/D.

    >>> notebook_pair()[0]
    1/128
    """
    from derive.simulation.notebook import N_INPUTS, WIDTH

    x = sympy.Rational(4, N_INPUTS) / 2
    q0 = (x**2 + 1) / WIDTH
    c0 = (-x * x + 1) / WIDTH
    return x, q0, c0 / q0


@functools.cache
def notebook_phase() -> Phase:
    """The phase of the notebook's hidden layers: sigma_w^2 = D * (1/D) = 1, sigma_b^2 = 1/D.

    >>> notebook_phase().phase, notebook_phase().chi_1
    ('ordered', 0.5)
    """
    from derive.recursions.phase import phase
    from derive.simulation.notebook import WIDTH

    return phase("relu", 1, sympy.Rational(1, WIDTH))


@functools.cache
def notebook_derived(depth: int) -> tuple[float, float]:
    """The mean-field (rho^grad, E[(dy/dx)^2]) of the notebook's network of ``depth``
    layers for the pair :func:`notebook_pair`: K blocks W relu(.) + b from f_0 to y;
    E[(dy/dx)^2] = d_0/D, since the output layer has one unit (its backward gain is 1/D in
    place of sigma_w^2 = 1) and the input layer passes D (1/D) = 1.

    >>> [round(v, 4) for v in notebook_derived(1)]
    [0.995, 0.0025]
    """
    from derive.recursions.kernel import kernel
    from derive.simulation.notebook import WIDTH

    _, q0, rho0 = notebook_pair()
    a = kernel("he", "relu", block="F(x)", fan_in_variance=1,
               sigma_b2=sympy.Rational(1, WIDTH), q0=q0, rho0=rho0, depth=depth)
    backward = a.profile()["backward"]
    return backward["rho"][0], backward["d_a"][0] / WIDTH


@functools.cache
def notebook_measured(depth: int, variant: str = "plain") -> tuple[list[float], list[float]]:
    """(x, dy/dx) on the notebook's grid for its own draws (``np.random.seed(1)``)."""
    from derive.simulation.notebook import notebook_gradients

    x, gradient = notebook_gradients(depth, variant=variant, seed=1, legacy=True)
    return [float(v) for v in x], [float(v) for v in gradient]


def notebook_statistics(depth: int) -> tuple[float, float]:
    """(rms of dy/dx, the notebook's autocorrelation at one grid step) of its own network.

    >>> [round(v, 3) for v in notebook_statistics(1)]
    [0.021, 0.981]
    """
    import numpy as np

    from derive.simulation.notebook import autocorrelation

    gradient = np.array(notebook_measured(depth)[1])
    return (float(np.sqrt(np.mean(gradient**2))),
            float(autocorrelation(gradient, [1])[0]))


@functools.cache
def critical_lines() -> dict[str, list[tuple[float, float]]]:
    """The critical lines (sigma_b^2, sigma_w^2) of tanh and erf, as derived.

    >>> critical_lines()["tanh"][0]
    (0.0, 1.0)
    """
    from derive.recursions.phase import critical_line

    return {name: [(float(s), float(v)) for s, v in critical_line(name, biases)]
            for name, biases in (("tanh", TANH_BIASES), ("erf", ERF_BIASES),
                                 ("relu", RELU_BIASES))}


@functools.cache
def regions(activation: str) -> dict[str, tuple[float, float]]:
    """The phase at each point of :data:`REGIONS` for ``activation``, derived: its name ->
    (sigma_w^2, sigma_b^2).

    >>> regions("relu")
    {'ordered': (1.0, 0.5), 'chaotic': (3.0, 0.5)}
    """
    from derive.recursions.phase import phase

    return {str(phase(activation, sw, sb).phase): (sw, sb)
            for sw, sb in REGIONS[activation]}


def critical_phase(activation: str, sigma_b2: float) -> Phase:
    """The phase on the critical line of ``activation`` at ``sigma_b2`` (one of its
    derived points): its q* and chi_1 = 1.

    >>> round(critical_phase("tanh", 1.0).q_star, 3)
    3.036
    """
    from derive.recursions.phase import phase

    return phase(activation, dict(critical_lines()[activation])[sigma_b2], sigma_b2)


@functools.cache
def he_phase() -> Phase:
    """He + ReLU without biases: sigma_w^2 = 2, sigma_b^2 = 0."""
    from derive.recursions.phase import phase

    return phase("relu", 2, 0)


def erf_slope_inverse() -> sympy.Expr:
    """1/erf'(0)^2, where the erf critical line meets sigma_b^2 = 0 (phi'(0)^2 sigma_w^2 = 1).

    >>> erf_slope_inverse()
    pi/4
    """
    x = sympy.Symbol("x")
    return 1 / sympy.diff(sympy.erf(x), x).subs(x, 0) ** 2


def figures() -> dict[str, tuple[str, tuple[object, ...], dict[str, object]]]:
    """The figures' data: stem -> (plotting function in :mod:`derive.rendering.plots`, its
    arguments)."""
    from derive.simulation.notebook import WIDTH

    forward, backward = {}, {}
    for name, label in DRAWN.items():
        forward[label], backward[label] = curves(name)
    lines = critical_lines()
    nb, he = notebook_phase(), he_phase()
    x = notebook_measured(RUN_DEPTHS[0])[0]
    rows: dict[str, dict[str, list[float]]] = {"plain": {}, "residual": {}}
    for n in RUN_DEPTHS:
        rows["plain"][f"K = {n}"] = notebook_measured(n)[1]
        # at K = 1 the residual variant has no skip: it is the plain network
        rows["residual"][f"K = {n}"] = notebook_measured(n, "residual" if n > 1 else "plain")[1]
    return {
        "correlation-depth": ("correlation_figure", (
            {"1 − ρₖ (two inputs)": forward, "ρ₀ᵍʳᵃᵈ (their gradients), output at K": backward},
            f"He initialization, ReLU, ρ₀ = {RHO0}"), {"floor": 1e-7}),
        "phase-diagram": ("phase_figure", ({
            "erf and tanh": {"lines": {"erf": lines["erf"], "tanh": lines["tanh"]},
                             "regions": regions("erf")},
            "ReLU": {"lines": {"ReLU": lines["relu"]},
                     "points": {f"notebook 11.1 ({nb.phase})": (nb.sigma_w2, nb.sigma_b2),
                                f"He ({he.phase})": (he.sigma_w2, he.sigma_b2)},
                     "regions": regions("relu")}},
            "Plain networks φ(Wh + b): the edge of chaos χ₁ = 1"), {}),
        "notebook-gradients": ("input_gradient_figure", (
            x, rows, f"UDL notebook 11.1 (D = {WIDTH}, weights and biases N(0, 1/D), its "
            "own draws): dy/dx"), {}),
    }
