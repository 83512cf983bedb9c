"""Gaussian moments of activations: E[phi(z)^2] and E[phi'(z)^2] for z ~ N(0, s^2).

The variance recursions need these for the forward and the backward pass. They
are derived, not typed in: linear, relu and leaky_relu by SymPy integrating the
density over the half-lines where phi is linear; gelu (z Phi(z)) by Stein's
lemma and Gaussian integrals in :mod:`derive.gaussian.gelu`; erf by differentiating in
the variance, Stein's lemma and Gaussian integrals in :mod:`derive.gaussian.erf`; tanh
has no closed form and
stays the unevaluated :class:`TanhMoment` (:class:`TanhDerivativeMoment`),
evaluated by quadrature at numbers. Derivations are cached and none runs at import.
"""

from __future__ import annotations

import functools

import sympy

from derive.derivation.printing import latex
from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError, choice_error
from derive.gaussian.expectations import Activation, Expectation, a, applied, s, u, z
from derive.inputs.choices import ACTIVATIONS
from derive.inputs.numbers import exact

#: The default negative slope of leaky_relu (as in PyTorch).
DEFAULT_SLOPE = sympy.Rational(1, 100)

__all__ = ["DEFAULT_SLOPE", "Activation", "Expectation", "a", "gaussian_moment",
           "moment_derivation", "s", "u", "z"]


# --- tanh: no closed form, numerical quadrature --------------------------------------

#: Extra decimal digits of working precision for mpmath quadrature of the tanh moments.
TANH_GUARD_DIGITS = 10
#: Largest precision in bits served by the machine-precision rule (SymPy asks for
#: 53 + 4 guard bits when it evaluates to 15 digits, as ``float`` and ``N`` do).
TANH_FAST_MAX_PREC = 60
#: Step of that double-exponential (exp-sinh) rule, and the relative agreement of its
#: step-h and step-h/2 sums it needs (its error squares when the step halves).
TANH_DE_STEP = 1 / 64
TANH_DE_AGREEMENT = 1e-8


@functools.lru_cache(maxsize=1)
def _de_nodes() -> tuple[object, object]:
    """Nodes and weights of the exp-sinh rule on [0, oo), step TANH_DE_STEP."""
    import numpy as np

    t = np.arange(-5.0, 3.2 + TANH_DE_STEP / 2, TANH_DE_STEP)
    nodes = np.exp(np.pi / 2 * np.sinh(t))
    weights = TANH_DE_STEP * np.pi / 2 * np.cosh(t) * nodes
    return nodes, weights * np.exp(-(nodes**2) / 2) * (2 / np.sqrt(2 * np.pi))


def _tanh_fast(derivative: bool, variance: float) -> float | None:
    """E by the exp-sinh rule in double precision, or None if it has not converged."""
    import numpy as np

    nodes, weights = _de_nodes()
    x = np.sqrt(variance) * nodes
    with np.errstate(over="ignore", under="ignore"):
        values = 1 / np.cosh(x) ** 4 if derivative else np.tanh(x) ** 2
    terms = weights * values
    fine = float(np.sum(terms))
    coarse = 2 * float(np.sum(terms[::2]))
    if fine > 0 and abs(fine - coarse) <= TANH_DE_AGREEMENT * fine:
        return fine
    return None


@functools.lru_cache(maxsize=65536)
def _tanh_moment(derivative: bool, arg: sympy.Expr, prec: int) -> sympy.Float:
    """E[tanh(z)^2] or E[tanh'(z)^2] at variance ``arg`` to ``prec`` bits."""
    import mpmath

    dps = mpmath.libmp.prec_to_dps(prec) + TANH_GUARD_DIGITS
    variance = arg.evalf(dps)
    if prec <= TANH_FAST_MAX_PREC:
        value = _tanh_fast(derivative, float(variance))
        if value is not None:
            return sympy.Float(value, precision=prec)
    with mpmath.workdps(dps):
        std = mpmath.sqrt(variance._to_mpmath(mpmath.mp.prec))
        if derivative:
            def integrand(x):
                return mpmath.sech(std * x) ** 4 * mpmath.npdf(x)
        else:
            def integrand(x):
                return mpmath.tanh(std * x) ** 2 * mpmath.npdf(x)
        value = 2 * mpmath.quad(integrand, [0, min(1 / std, 1), mpmath.inf])
        return sympy.Float(value, precision=prec)


class _TanhMomentBase(sympy.Function):
    nargs = 1
    _derivative = False
    _body_latex = r"\tanh^{2} z"
    _body_text = "tanh(z)²"

    @classmethod
    def eval(cls, arg: sympy.Expr) -> sympy.Expr | None:
        if arg.is_number and (arg.is_extended_real is False or arg.is_negative):
            raise DeriveError(f"the variance of z must be >= 0, got {arg}")
        if arg.is_zero:
            return sympy.Integer(1 if cls._derivative else 0)
        return None

    def _eval_evalf(self, prec: int) -> sympy.Float | None:
        arg = self.args[0]
        if not arg.is_number:
            return None
        return _tanh_moment(self._derivative, arg, prec)

    def _eval_is_positive(self) -> bool | None:
        return True if self.args[0].is_positive else None

    def _latex(self, printer: sympy.printing.latex.LatexPrinter, exp: object = None) -> str:
        arg = printer._print(self.args[0])
        out = rf"\mathbb{{E}}_{{z \sim \mathcal{{N}}(0,\, {arg})}}\left[{self._body_latex}\right]"
        return rf"\left({out}\right)^{{{exp}}}" if exp is not None else out

    def _sympystr(self, printer: sympy.printing.str.StrPrinter) -> str:
        return f"E[{self._body_text}]_(z~N(0, {printer._print(self.args[0])}))"


class TanhMoment(_TanhMomentBase):
    """E[tanh(z)^2] for z ~ N(0, s2): no closed form, so it stays unevaluated.

    With a numeric argument it evaluates by quadrature (``.evalf(n)``, ``float``,
    ``sympy.N``): at machine precision (n <= 15 digits, up to ``TANH_FAST_MAX_PREC``
    bits) by an exp-sinh rule in NumPy, relative error about 1e-16, whose step-h and
    step-h/2 sums must agree (else it falls back); otherwise by ``mpmath.quad``
    with a working precision of n + ``TANH_GUARD_DIGITS`` decimal digits. Values
    are cached by (argument, precision).

    >>> TanhMoment(1).evalf(20)
    0.39429449039784117442
    >>> TanhMoment(0)
    0
    """


class TanhDerivativeMoment(_TanhMomentBase):
    """E[tanh'(z)^2] = E[(1 - tanh(z)^2)^2] for z ~ N(0, s2), unevaluated.

    Evaluated numerically as :class:`TanhMoment` is (same precision rules).

    >>> float(TanhDerivativeMoment(1))  # doctest: +ELLIPSIS
    0.4644...
    >>> TanhDerivativeMoment(0)
    1
    """

    _derivative = True
    _body_latex = r"\tanh'(z)^{2}"
    _body_text = "tanh'(z)²"


def _checkapplied(activation: object) -> str:
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise choice_error("activation", activation, ACTIVATIONS)
    return activation


def _check_derivative(derivative: object) -> bool:
    if not isinstance(derivative, bool):
        raise DeriveError(f"derivative must be True or False, got {derivative!r}")
    return derivative


def _check_variance(s2: object) -> sympy.Expr:
    """The variance as a SymPy expression; numbers must be real, finite and > 0."""
    error = DeriveError(f"s2 must be a positive number or expression, got {s2!r}")
    try:
        value = s2 if isinstance(s2, sympy.Basic) else exact(s2, "s2")
    except DeriveError:
        raise error from None
    if not isinstance(value, sympy.Expr) or value.is_nonpositive or value.is_finite is False:
        raise error
    if value.is_extended_real is False or (value.is_number and not value.is_positive):
        raise error
    return value


def _check_slope(slope: object) -> sympy.Expr:
    value = exact(slope, "negative_slope")
    if value.is_number and (value.is_extended_real is not True or value < 0):
        raise DeriveError(f"negative_slope must be a real number >= 0, got {slope!r}")
    return value


def _density(var: sympy.Symbol, std: sympy.Expr) -> sympy.Expr:
    """The N(0, std^2) density in ``var``."""
    return sympy.exp(-(var**2) / (2 * std**2)) / (std * sympy.sqrt(2 * sympy.pi))


#: activation -> phi (or phi') on z > 0 and on z < 0
_PIECES = {"linear": ((z, z), (1, 1)), "relu": ((z, 0), (1, 0)),
           "leaky_relu": ((z, a * z), (1, a))}


@functools.cache
def _piecewise_linear(activation: str, derivative: bool) -> tuple[Step, ...]:
    """Steps for linear, relu and leaky_relu: integrate where the activation is linear."""
    pos, neg = _PIECES[activation][derivative]
    p = _density(z, s)
    what = "its derivative" if derivative else "the activation"
    if pos == neg:
        integral = sympy.Integral(pos**2 * p, (z, -sympy.oo, sympy.oo))
        reason = f"{what} is ${latex(pos)}$ on the whole line"
    else:
        halves = ((pos, (z, 0, sympy.oo)), (neg, (z, -sympy.oo, 0)))
        integral = sympy.Add(*[sympy.Integral(f**2 * p, lim) for f, lim in halves if f != 0])
        reason = f"{what} is ${latex(pos)}$ for $z > 0$ and ${latex(neg)}$ for $z < 0$"
    value = sympy.factor(integral.doit())
    lhs = Expectation(applied(activation, derivative) ** 2)
    return (
        Step(lhs, integral, f"integrate against the Gaussian density: {reason}"),
        Step(lhs, value, "Gaussian integrals (SymPy)"),
    )


def _derivation_steps(activation: str, derivative: bool) -> tuple[Step, ...]:
    if activation in ("linear", "relu", "leaky_relu"):
        return _piecewise_linear(activation, derivative)
    if activation == "gelu":
        from derive.gaussian.gelu import gelu_steps

        return gelu_steps(derivative)
    if activation == "erf":
        from derive.gaussian.erf import erf_steps

        return erf_steps(derivative)
    moment = TanhDerivativeMoment if derivative else TanhMoment
    lhs = Expectation(applied("tanh", derivative) ** 2)
    body = (1 - sympy.tanh(s * u) ** 2) ** 2 if derivative else sympy.tanh(s * u) ** 2
    return (
        Step(lhs, Expectation(body), "$z = s u$ with $u \\sim \\mathcal{N}(0, 1)$"),
        Step(lhs, moment(s**2), "no closed form: evaluated by numerical quadrature"),
    )


@functools.cache
def _moment_in_s(activation: str, derivative: bool) -> sympy.Expr:
    """The derived moment as an expression in s (and the slope symbol a)."""
    return _derivation_steps(activation, derivative)[-1].rhs


#: The variance s^2 as one positive symbol, for fast substitution.
_v = sympy.Dummy("v", positive=True)


@functools.cache
def _moment_in_variance(activation: str, derivative: bool) -> sympy.Expr:
    """The derived moment with s^2 as the symbol ``_v`` (s appears only as s^2)."""
    expr = _moment_in_s(activation, derivative).subs(s, sympy.sqrt(_v))
    if s in expr.free_symbols:  # pragma: no cover (a derivation invariant)
        raise AssertionError(f"moment not a function of s^2: {expr}")
    return expr


@functools.lru_cache(maxsize=4096)
def _moment(activation: str, s2: sympy.Expr, derivative: bool, slope: sympy.Expr) -> sympy.Expr:
    return _moment_in_variance(activation, derivative).xreplace({_v: s2, a: slope})


def gaussian_moment(
    activation: str,
    s2: object,
    *,
    derivative: bool = False,
    negative_slope: object = DEFAULT_SLOPE,
) -> sympy.Expr:
    """E[phi(z)^2] (or E[phi'(z)^2] with ``derivative=True``) for z ~ N(0, s2).

    ``s2`` is a number or a SymPy expression (assumed positive), e.g. ``q(k - 1)``.

    >>> gaussian_moment("relu", 3), gaussian_moment("relu", 3, derivative=True)
    (3/2, 1/2)
    >>> gaussian_moment("leaky_relu", sympy.Symbol("v"), negative_slope="a")
    v*(a**2 + 1)/2
    >>> gaussian_moment("gelu", 1)
    sqrt(3)/(6*pi) + 1/3
    >>> gaussian_moment("erf", 1), gaussian_moment("erf", 1, derivative=True)
    (2*asin(2/3)/pi, 4*sqrt(5)/(5*pi))
    >>> float(gaussian_moment("tanh", 1))  # doctest: +ELLIPSIS
    0.3942...
    """
    name = _checkapplied(activation)
    flag = _check_derivative(derivative)
    variance = _check_variance(s2)
    slope = _check_slope(negative_slope)
    return _moment(name, variance, flag, slope if name == "leaky_relu" else DEFAULT_SLOPE)


#: How each activation is named in titles.
_NAMES = {"relu": "ReLU", "leaky_relu": "leaky ReLU", "gelu": "GELU"}

_STEIN = (
    "Stein's lemma: for $u \\sim \\mathcal{N}(0, 1)$ and differentiable $g$ with "
    "$\\mathbb{E}|g'(u)| < \\infty$, $\\mathbb{E}[u g(u)] = \\mathbb{E}[g'(u)]$ "
    "(integrate by parts, using $\\varphi'(u) = -u \\varphi(u)$)."
)


def _value_note(activation: str, derivative: bool) -> str:
    """The result at s^2 = 1, exactly where it is exact, and to 10 digits."""
    value = _moment(activation, sympy.Integer(1), derivative, DEFAULT_SLOPE)
    where = "$s^2 = 1$" + (" and $a = 1/100$" if activation == "leaky_relu" else "")
    if value.is_Rational:
        return f"At {where}: ${latex(value)}$."
    return f"At {where}: ${latex(value)} \\approx {sympy.N(value, 10)}$."


def moment_derivation(activation: str, derivative: bool = False) -> Derivation:
    """The derivation of E[phi(z)^2] (or E[phi'(z)^2]) as a :class:`Derivation`.

    >>> d = moment_derivation("relu")
    >>> d.key, d.result.rhs
    ('gaussian/relu/forward', s**2/2)
    >>> d.notes
    ('At $s^2 = 1$: $\\\\frac{1}{2}$.',)
    """
    return _moment_derivation(_checkapplied(activation), _check_derivative(derivative))


@functools.cache
def _moment_derivation(name: str, flag: bool) -> Derivation:
    steps = _derivation_steps(name, flag)
    what = "derivative" if flag else "output"
    assumptions = ["$z \\sim \\mathcal{N}(0, s^2)$ with $s > 0$"]
    notes = [_value_note(name, flag)]
    if name == "gelu":
        assumptions.append(
            "$\\Phi$ and $\\varphi$ are the standard normal CDF and density; "
            "$u \\sim \\mathcal{N}(0, 1)$ and $z = s u$"
        )
        notes.insert(0, _STEIN)
    if name == "leaky_relu":
        assumptions.append("$a \\ge 0$ is the negative slope")
    if name == "tanh":
        notes.append(
            "Evaluated by numerical quadrature: an exp-sinh rule at machine precision, "
            f"else mpmath with {TANH_GUARD_DIGITS} guard digits."
        )
    return Derivation(
        title=f"Second moment of the {_NAMES.get(name, name)} {what} under a Gaussian input",
        key=f"gaussian/{name}/{'backward' if flag else 'forward'}",
        assumptions=tuple(assumptions),
        steps=steps,
        result=steps[-1],
        notes=tuple(notes),
    )
