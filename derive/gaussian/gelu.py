"""The second moments of gelu(z) = z Phi(z) and of gelu'(z) for z ~ N(0, s^2).

SymPy's ``integrate`` does not find E[z^2 Phi(z)^2] by itself, so the moment is
derived from smaller steps, each done by SymPy:

1. write z = s u with u ~ N(0, 1), and expand by linearity;
2. Stein's lemma E[u g(u)] = E[g'(u)], with g' from ``sympy.diff`` (Phi' = phi,
   phi'(x) = -x phi(x));
3. applied to g = Phi(su) phi(su), Stein's lemma gives a linear equation for
   E[u Phi(su) phi(su)], solved by ``sympy.solve``;
4. E[phi(su)^2] and E[u^2 phi(su)^2] are Gaussian integrals (``sympy.integrate``);
5. E[Phi(su)^2] is 1/4 at s = 0 plus the integral of its s-derivative
   (differentiation under the integral sign, then step 3), which the change of
   variables w = sqrt(1 + 2 t^2) turns into a rational integral.
"""

from __future__ import annotations

import functools

import sympy
from mpmath.libmp import prec_to_dps

from derive.derivation.value import Step
from derive.gaussian.expectations import Expectation, applied, s, u, z


class Phi(sympy.Function):
    """The standard normal CDF Phi, with Phi' = phi (:class:`NormalPDF`).

    >>> x = sympy.Symbol("x")
    >>> Phi(x).diff(x), Phi(0).rewrite(sympy.erf)
    (φ(x), 1/2)
    """

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return NormalPDF(self.args[0])

    def _eval_rewrite_as_erf(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return (1 + sympy.erf(x / sympy.sqrt(2))) / 2

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: object = None) -> str:
        out = rf"\Phi\left({printer._print(self.args[0])}\right)"
        return f"{out}^{{{exp}}}" if exp is not None else out

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"Φ({printer._print(self.args[0])})"


class NormalPDF(sympy.Function):
    """The standard normal density phi, with phi'(x) = -x phi(x).

    >>> x = sympy.Symbol("x")
    >>> NormalPDF(x).diff(x), NormalPDF(x).rewrite(sympy.exp)
    (-x*φ(x), sqrt(2)*exp(-x**2/2)/(2*sqrt(pi)))
    """

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return -self.args[0] * self

    def _eval_rewrite_as_exp(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return sympy.exp(-(x**2) / 2) / sympy.sqrt(2 * sympy.pi)

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: object = None) -> str:
        out = rf"\varphi\left({printer._print(self.args[0])}\right)"
        return f"{out}^{{{exp}}}" if exp is not None else out

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"φ({printer._print(self.args[0])})"


class Partial(sympy.Derivative):
    """A derivative that prints as ``∂/∂s E[...]`` in text (LaTeX as SymPy's).

    >>> from derive.derivation.printing import text
    >>> text(Partial(Expectation(Phi(s * u) ** 2), s))
    '∂/∂s E[Φ(s·u)²]'
    """

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        variables = "".join(f"∂{printer._print(v)}" for v in self.variables)
        return f"∂/{variables} {printer._print(self.expr)}"


class Definite(sympy.Integral):
    """A definite integral that prints as ``∫[a, b] f dx`` in text (LaTeX as SymPy's).

    >>> from derive.derivation.printing import text
    >>> t = sympy.Symbol("t")
    >>> text(Definite(t**2, (t, 0, s))), Definite(t**2, (t, 0, s)).doit()
    ('∫[0, s] t² dt', s**3/3)
    >>> Definite(t**2, (t, 0, 1)).evalf(5)
    0.33333
    """

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        plain = sympy.Integral(*self.args)
        return plain.evalf(prec_to_dps(prec))

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        out = printer._print(self.function)
        if isinstance(self.function, sympy.Add):
            out = f"({out})"
        for var, *bounds in self.limits:
            where = f"[{', '.join(printer._print(b) for b in bounds)}] " if bounds else ""
            out = f"∫{where}{out} d{printer._print(var)}"
        return out


def expectation(body: sympy.Expr, var: sympy.Symbol = u) -> sympy.Expr:
    """E[body] written out by linearity: sums split, factors free of ``var`` pulled out.

    >>> expectation(2 * s * u * Phi(s * u) + 3)
    2*s*E[u*Φ(s*u)] + 3
    """
    body = sympy.expand(body)
    total = sympy.Integer(0)
    for term in sympy.Add.make_args(body):
        const, rest = term.as_independent(var, as_Add=False)
        total += const * (Expectation(rest) if rest != 1 else 1)
    return total


def stein(g: sympy.Expr, var: sympy.Symbol = u) -> sympy.Expr:
    """Stein's lemma for u ~ N(0, 1): E[u g(u)] = E[g'(u)], as E[g'(u)] by linearity.

    >>> stein(u**2)
    2*E[u]
    """
    return expectation(sympy.diff(g, var), var)


def gaussian_integral(body: sympy.Expr, var: sympy.Symbol = u) -> sympy.Expr:
    """E[body] for ``var`` ~ N(0, 1), by ``sympy.integrate`` against the density.

    >>> gaussian_integral(NormalPDF(s * u) ** 2)
    1/(2*pi*sqrt(2*s**2 + 1))
    """
    density = NormalPDF(var).rewrite(sympy.exp)
    integrand = sympy.powsimp(sympy.expand(body.rewrite(sympy.exp) * density))
    # exp(-k u^2) with k a positive symbol: SymPy integrates it at once, then k -> its value
    rate, exponents = sympy.Dummy("k", positive=True), integrand.atoms(sympy.exp)
    value_of_rate = {}
    if len(exponents) == 1:
        (power,) = exponents
        k_value = sympy.cancel(-power.args[0] / var**2)
        if not k_value.has(var) and k_value.is_positive:
            integrand = integrand.xreplace({power: sympy.exp(-rate * var**2)})
            value_of_rate = {rate: k_value}
    value = sympy.integrate(integrand, (var, -sympy.oo, sympy.oo), conds="none")
    if value.has(sympy.Integral):  # pragma: no cover (SymPy found no closed form)
        raise ArithmeticError(f"no closed form found for E[{body}]")
    return sympy.simplify(value.subs(value_of_rate))


def _change_variable(integral: sympy.Integral, new: sympy.Symbol, old_of_new: sympy.Expr,
                     new_of_old: sympy.Expr) -> sympy.Integral:
    """The integral in ``new``, with the old variable ``old_of_new`` (increasing) and
    ``new = new_of_old``: integrand times d old/d new, limits mapped, then factored.

    What ``Integral.transform`` does, without solving for the inverse map (given).
    """
    ((old, low, high),) = integral.limits
    if new_of_old.subs(old, old_of_new) != new:  # pragma: no cover (a derivation invariant)
        raise AssertionError(f"{new_of_old} does not invert {old_of_new}")
    function = integral.function.subs(old, old_of_new) * sympy.diff(old_of_new, new)
    return Definite(sympy.factor(function),
                    (new, new_of_old.subs(old, low), new_of_old.subs(old, high)))


@functools.cache
def lemmas() -> tuple[Step, ...]:
    """The Gaussian lemmas the gelu moments rest on, each derived by SymPy.

    In order: E[phi(su)^2]; E[u Phi(su) phi(su)] (Stein's equation, then solved);
    dE[Phi(su)^2]/ds (under the integral, then in closed form); E[Phi(su)^2]
    (as an integral in s, after a change of variables, then in closed form);
    E[u^2 phi(su)^2]. The last step for each expectation holds its closed form.

    >>> lemmas()[-2].rhs
    atan(sqrt(2*s**2 + 1))/pi
    """
    pdf2_e = Expectation(NormalPDF(s * u) ** 2)
    pdf2 = gaussian_integral(pdf2_e.args[0])
    # Stein's lemma on g = Phi(su) phi(su): a linear equation for E[u Phi phi].
    cross = Expectation(u * Phi(s * u) * NormalPDF(s * u))
    equation = stein(Phi(s * u) * NormalPDF(s * u))
    (solved,) = sympy.solve(sympy.Eq(cross, equation), cross)
    solved = sympy.factor(solved)
    # d/ds E[Phi(su)^2] = E[d/ds Phi(su)^2] = 2 s E[u Phi(su) phi(su)] / s ...
    under = expectation(sympy.diff(Phi(s * u) ** 2, s))
    slope = sympy.factor(under.subs(cross, solved).subs(pdf2_e, pdf2))
    # ... integrated from s = 0, where Phi(0)^2 = 1/4
    t = sympy.Symbol("t", positive=True)
    at_zero = Phi(0).rewrite(sympy.erf) ** 2
    integral = at_zero + Definite(slope.subs(s, t), (t, 0, s))
    # the change of variables w = sqrt(1 + 2 t^2) makes the integrand rational
    w = sympy.Symbol("w", positive=True)
    rational = integral.replace(
        lambda e: isinstance(e, sympy.Integral),
        lambda e: _change_variable(e, w, sympy.sqrt((w**2 - 1) / 2), sympy.sqrt(1 + 2 * t**2)),
    )
    phi2 = sympy.simplify(rational.doit())
    phi2_e = Expectation(Phi(s * u) ** 2)
    u2pdf2_e = Expectation(u**2 * NormalPDF(s * u) ** 2)
    slope_e = Partial(phi2_e, s)
    return (
        Step(pdf2_e, pdf2, "a Gaussian integral (SymPy)"),
        Step(cross, equation, "Stein's lemma with $g(u) = \\Phi(su)\\varphi(su)$, "
             "using $\\Phi' = \\varphi$ and $\\varphi'(x) = -x \\varphi(x)$"),
        Step(cross, solved, "solve the linear equation for the unknown expectation"),
        Step(slope_e, under, "differentiate under the integral sign"),
        Step(slope_e, slope, "the solved equation and $\\mathbb{E}[\\varphi(su)^2]$ above"),
        Step(phi2_e, integral, "integrate in $s$ from $\\Phi(0)^2 = 1/4$ at $s = 0$"),
        Step(phi2_e, rational, "change of variables $w = \\sqrt{1 + 2 t^2}$"),
        Step(phi2_e, phi2, "a rational integral (SymPy)"),
        Step(u2pdf2_e, gaussian_integral(u2pdf2_e.args[0]), "a Gaussian integral (SymPy)"),
    )


def _known() -> dict[sympy.Expr, sympy.Expr]:
    """Expectation placeholder -> closed form, from :func:`lemmas` (last step wins)."""
    known: dict[sympy.Expr, sympy.Expr] = {}
    for step in lemmas():
        if isinstance(step.lhs, Expectation):
            known[step.lhs] = step.rhs
    return {lhs: sympy.simplify(rhs.subs(known)) for lhs, rhs in known.items()}


def _tidy(expr: sympy.Expr) -> sympy.Expr:
    """Collect a closed form over the atan term, each remaining fraction simplified."""
    expr = sympy.expand(expr)
    atan_terms = [t for t in sympy.Add.make_args(expr) if t.has(sympy.atan)]
    rest = sympy.Add(*[t for t in sympy.Add.make_args(expr) if not t.has(sympy.atan)])
    return sympy.factor(sympy.Add(*atan_terms)) + sympy.factor(rest)


@functools.cache
def gelu_steps(derivative: bool) -> tuple[Step, ...]:
    """The steps from E[gelu(z)^2] (or E[gelu'(z)^2]) to its closed form in s.

    >>> gelu_steps(False)[-1].rhs.subs(s, 1)
    sqrt(3)/(6*pi) + 1/3
    """
    gelu = z * Phi(z)
    body = sympy.diff(gelu, z) if derivative else gelu
    lhs = Expectation(applied("gelu", derivative) ** 2)
    scaled = expectation(body.subs(z, s * u) ** 2)
    definition = "$\\operatorname{gelu}(z) = z \\Phi(z)$"
    steps = [
        Step(lhs, Expectation(body**2), definition + (", differentiated" if derivative else "")),
        Step(lhs, scaled, "$z = s u$ with $u \\sim \\mathcal{N}(0, 1)$, and linearity"),
    ]
    current = scaled
    if not derivative:
        inner = Expectation(u**2 * Phi(s * u) ** 2)
        unrolled = stein(u * Phi(s * u) ** 2)
        reason = "Stein's lemma with $g(u) = u \\Phi(su)^2$"
        steps.append(Step(inner, unrolled, reason))
        current = current.subs(inner, unrolled)
    # every lemma but E[u^2 phi(su)^2], which only the derivative needs
    only_derivative = Expectation(u**2 * NormalPDF(s * u) ** 2)
    steps.extend(step for step in lemmas() if derivative or step.lhs != only_derivative)
    value = current.subs(_known())
    steps.append(Step(lhs, value, "substitute the lemmas"))
    steps.append(Step(lhs, _tidy(value), "simplify"))
    return tuple(steps)
