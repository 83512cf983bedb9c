"""Two-point Gaussian expectations as floats (a stand-in over the exact kernels)."""

from __future__ import annotations

import math

from derive.gaussian import kernels


def kernel_float(activation: str, q_a: float, q_b: float, c: float, *,
                 negative_slope: float = 0.01) -> float:
    """E[phi(u) phi(v)] as a float."""
    if q_a == 0 or q_b == 0:
        return 0.0
    bound = math.sqrt(q_a * q_b)
    c = min(max(c, -bound), bound)
    return float(kernels.kernel(activation, q_a, q_b, c, negative_slope=negative_slope))


def derivative_kernel_float(activation: str, q_a: float, q_b: float, c: float, *,
                            negative_slope: float = 0.01) -> float:
    """E[phi'(u) phi'(v)] as a float."""
    bound = math.sqrt(q_a * q_b)
    c = min(max(c, -bound), bound)
    return float(kernels.derivative_kernel(activation, q_a, q_b, c,
                                           negative_slope=negative_slope))
