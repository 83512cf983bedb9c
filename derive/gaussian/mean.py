"""Gaussian means of activations: E[phi(z)] for z ~ N(0, s^2).

BatchNorm's batch statistics see the covariance of two independent inputs of a
batch, and an activation whose two inputs are independent gives it
E[phi(z)] E[phi(z')] = E[phi(z)]^2. The means are derived, not typed in: SymPy
integrates the density for linear, relu and leaky_relu; for gelu (z Phi(z)),
z = s u and Stein's lemma give s^2 E[phi(su)], a Gaussian integral (the steps of
:mod:`derive.gaussian.gelu`); tanh and erf are odd, which SymPy shows, so their means are zero.

>>> gaussian_mean("relu", 1)
sqrt(2)/(2*sqrt(pi))
>>> gaussian_mean("tanh", 3), gaussian_mean("erf", 3)
(0, 0)
"""

from __future__ import annotations

import functools

import sympy

from derive.gaussian.expectations import Expectation, a, s, u, z
from derive.gaussian.gelu import Phi, expectation, gaussian_integral, stein
from derive.gaussian.moments import DEFAULT_SLOPE

_v = sympy.Dummy("v", positive=True)


def _phi(activation: str) -> sympy.Expr:
    if activation == "linear":
        return z
    if activation == "relu":
        return sympy.Piecewise((z, z > 0), (0, True))
    if activation == "leaky_relu":
        return sympy.Piecewise((z, z > 0), (a * z, True))
    if activation == "gelu":
        return z * (1 + sympy.erf(z / sympy.sqrt(2))) / 2
    if activation == "erf":
        return sympy.erf(z)
    return sympy.tanh(z)


@functools.cache
def _mean_in_variance(activation: str) -> sympy.Expr:
    phi = _phi(activation)
    if sympy.simplify(phi.subs(z, -z) + phi) == 0:  # odd: the mean of a symmetric law is 0
        return sympy.Integer(0)
    density = sympy.exp(-(z**2) / (2 * s**2)) / (s * sympy.sqrt(2 * sympy.pi))
    if activation == "gelu":  # SymPy integrates z Phi(z) too, but Stein's lemma is faster
        mean = _gelu_mean()
    elif isinstance(phi, sympy.Piecewise):
        (pos, _), (neg, _) = phi.args
        mean = (sympy.integrate(pos * density, (z, 0, sympy.oo))
                + sympy.integrate(neg * density, (z, -sympy.oo, 0)))
    else:
        mean = sympy.integrate(phi * density, (z, -sympy.oo, sympy.oo))
    return sympy.factor(sympy.simplify(mean)).subs(s, sympy.sqrt(_v))


def _gelu_mean() -> sympy.Expr:
    """E[z Phi(z)] in s: z = s u, Stein's lemma on E[u Phi(su)], then a Gaussian integral."""
    inner = Expectation(u * Phi(s * u))
    mean = expectation((z * Phi(z)).subs(z, s * u)).subs(inner, stein(Phi(s * u)))
    return mean.replace(lambda e: isinstance(e, Expectation),
                        lambda e: gaussian_integral(e.args[0]))


def gaussian_mean(activation: str, s2: object, *,
                  negative_slope: object = DEFAULT_SLOPE) -> sympy.Expr:
    """E[phi(z)] for z ~ N(0, s2), exact.

    >>> gaussian_mean("leaky_relu", 1, negative_slope=0)
    sqrt(2)/(2*sqrt(pi))
    >>> gaussian_mean("gelu", 1)
    1/(2*sqrt(pi))
    """
    return _mean(activation, sympy.sympify(s2), sympy.sympify(negative_slope))


@functools.lru_cache(maxsize=4096)
def _mean(activation: str, s2: sympy.Expr, slope: sympy.Expr) -> sympy.Expr:
    value = _mean_in_variance(activation).xreplace({_v: s2, a: slope})
    return sympy.simplify(value) if value.is_number else value
