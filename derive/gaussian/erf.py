"""The second moments of erf(z) and of erf'(z) for z ~ N(0, s^2).

Each step is done by SymPy, with the tools of :mod:`derive.gaussian.gelu`:

1. write z = s u with u ~ N(0, 1);
2. the derivative: erf'(z)^2 = 4 e^{-2 z^2} / pi, and E[e^{-2 s^2 u^2}] is a Gaussian
   integral (``sympy.integrate``);
3. the activation: differentiate E[erf(su)^2] in s under the integral sign; Stein's
   lemma E[u g(u)] = E[g'(u)] with g = erf(su) e^{-s^2 u^2} gives a linear equation
   for the expectation that appears, solved by ``sympy.solve``; then integrate in s
   from erf(0)^2 = 0, and the change of variables w = sqrt(1 + 4 t^2) makes the
   integrand rational;
4. the result, (4 atan(sqrt(1 + 4 s^2)) - pi)/pi, is the arcsin kernel of
   :mod:`derive.gaussian.kernels` (Williams 1997) on its diagonal u = v: both vanish
   at s = 0 and SymPy shows that their derivatives in s agree, so the last step
   writes it in that form.

>>> erf_steps(True)[-1].rhs
4/(pi*sqrt(4*s**2 + 1))
>>> erf_steps(False)[-1].rhs
2*asin(2*s**2/(2*s**2 + 1))/pi
"""

from __future__ import annotations

import functools

import sympy

from derive.derivation.value import Step
from derive.gaussian.expectations import Expectation, applied, s, u, z
from derive.gaussian.gelu import (
    Definite,
    Partial,
    _change_variable,
    expectation,
    gaussian_integral,
    stein,
)
from derive.gaussian.kernels import kernel

__all__ = ["erf_steps"]

_DEFINITION = "$\\operatorname{erf}'(z) = 2 e^{-z^{2}} / \\sqrt{\\pi}$"


def _derivative_steps() -> tuple[Step, ...]:
    lhs = Expectation(applied("erf", True) ** 2)
    body = sympy.diff(sympy.erf(z), z) ** 2
    scaled = expectation(body.subs(z, s * u))
    known = {e: gaussian_integral(e.args[0]) for e in scaled.atoms(Expectation)}
    return (
        Step(lhs, Expectation(body), _DEFINITION),
        Step(lhs, scaled, "$z = s u$ with $u \\sim \\mathcal{N}(0, 1)$, and linearity"),
        Step(lhs, sympy.factor(scaled.subs(known)), "a Gaussian integral (SymPy)"),
    )


def _activation_steps() -> tuple[Step, ...]:
    lhs = Expectation(applied("erf", False) ** 2)
    square = Expectation(sympy.erf(s * u) ** 2)
    # d/ds E[erf(su)^2] = E[d/ds erf(su)^2]: one unknown expectation E[u e^{-s^2 u^2} erf(su)]
    under = expectation(sympy.diff(sympy.erf(s * u) ** 2, s))
    (cross,) = under.atoms(Expectation)
    # Stein's lemma on g = erf(su) e^{-s^2 u^2} gives a linear equation for it
    equation = stein(sympy.erf(s * u) * sympy.exp(-(s**2) * u**2))
    (solved,) = sympy.solve(sympy.Eq(cross, equation), cross)
    solved = sympy.factor(solved)
    known = {e: gaussian_integral(e.args[0]) for e in solved.atoms(Expectation)}
    slope = sympy.factor(under.subs(cross, solved).subs(known))
    # integrated from s = 0, where erf(0)^2 = 0
    t = sympy.Symbol("t", positive=True)
    integral = sympy.erf(0) ** 2 + Definite(slope.subs(s, t), (t, 0, s))
    w = sympy.Symbol("w", positive=True)
    rational = _change_variable(integral, w, sympy.sqrt(w**2 - 1) / 2, sympy.sqrt(1 + 4 * t**2))
    value = sympy.simplify(rational.doit())
    arcsin = kernel("erf", s**2, s**2, s**2)
    same = (sympy.simplify(sympy.diff(value - arcsin, s)) == 0
            and sympy.simplify((value - arcsin).subs(s, 0)) == 0)
    if not same:  # pragma: no cover (a derivation invariant)
        raise AssertionError(f"{value} is not the arcsin kernel {arcsin} on the diagonal")
    slope_e = Partial(square, s)
    steps = [
        Step(lhs, square, "$z = s u$ with $u \\sim \\mathcal{N}(0, 1)$"),
        Step(slope_e, under, "differentiate under the integral sign, with " + _DEFINITION),
        Step(cross, equation, "Stein's lemma with "
             "$g(u) = \\operatorname{erf}(su) e^{-s^{2} u^{2}}$"),
        Step(cross, solved, "solve the linear equation for the unknown expectation"),
    ]
    steps.extend(Step(e, v, "a Gaussian integral (SymPy)") for e, v in known.items())
    steps.extend([
        Step(slope_e, slope, "the solved equation and the Gaussian integral above"),
        Step(lhs, integral, "integrate in $s$ from $\\operatorname{erf}(0)^2 = 0$ at $s = 0$"),
        Step(lhs, rational, "change of variables $w = \\sqrt{1 + 4 t^2}$"),
        Step(lhs, value, "a rational integral (SymPy)"),
        Step(lhs, arcsin, "the arcsin kernel (Williams 1997) at $u = v$: both vanish at "
             "$s = 0$ and their derivatives in $s$ agree (SymPy)"),
    ])
    return tuple(steps)


@functools.cache
def erf_steps(derivative: bool) -> tuple[Step, ...]:
    """The steps from E[erf(z)^2] (or E[erf'(z)^2]) to its closed form in s.

    >>> erf_steps(False)[-1].rhs.subs(s, 1)
    2*asin(2/3)/pi
    """
    return _derivative_steps() if derivative else _activation_steps()
