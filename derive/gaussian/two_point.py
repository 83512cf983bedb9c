"""The two-point expectations a rule asks for, exact or in floats, from one entry point.

:func:`expectation` gives E[phi(u) phi(v)] (or, with ``derivative``, E[phi'(u) phi'(v)])
for (u, v) jointly Gaussian with variances ``q_a``, ``q_b`` and covariance ``c``:
exact SymPy values (:mod:`derive.gaussian.kernels`) for expressions, and floats
(:mod:`derive.gaussian.kernel_floats`) when every argument is a float.

>>> round(expectation("relu", 2.0, 2.0, 0.0), 12)
0.318309886184
>>> expectation("relu", sympy.Integer(2), sympy.Integer(2), sympy.Integer(0))
1/pi
"""

from __future__ import annotations

from typing import TypeAlias

import sympy

from derive.gaussian import kernels

Number: TypeAlias = float | sympy.Expr
#: leaky_relu's default negative slope.
DEFAULT_SLOPE = sympy.Rational(1, 100)


def expectation(activation: str, q_a: Number, q_b: Number, c: Number, *,
                negative_slope: Number = DEFAULT_SLOPE,
                derivative: bool = False) -> Number:
    """E[phi(u) phi(v)] (``derivative``: E[phi'(u) phi'(v)]) for the activation ``activation``.

    >>> expectation("linear", 1.0, 4.0, 1.5)
    1.5
    """
    if isinstance(q_a, float) and isinstance(q_b, float) and isinstance(c, float):
        return _float(activation, q_a, q_b, c, float(negative_slope), derivative)
    rule = kernels.derivative_kernel if derivative else kernels.kernel
    return rule(activation, q_a, q_b, c, negative_slope=negative_slope)


def _float(activation: str, q_a: float, q_b: float, c: float, slope: float,
           derivative: bool) -> float:
    from derive.gaussian import kernel_floats

    rule = kernel_floats.derivative_kernel_float if derivative else kernel_floats.kernel_float
    return rule(activation, q_a, q_b, c, negative_slope=slope)
