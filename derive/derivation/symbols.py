"""The symbols of the notation, one convention everywhere (see the README's Notation).

Blocks are numbered 1..N, h_0 = x, h_k = B_k(h_{k-1}), y = h_N; J_k = df_k/dh_{k-1}
is a non-commutative matrix symbol. q_k = E[h_k^2] and d_k = E[(dL/dh_k)^2] per unit
are sequence functions of the block index k; K is the depth and n the width.

>>> q(k - 1), d(K), q0
(q(k - 1), d(K), q_0)
"""

from __future__ import annotations

import sympy

#: Symbolic block index k, symbolic depth K, width n.
k = sympy.Symbol("k", integer=True)
K = sympy.Symbol("K", integer=True, nonnegative=True)
n = sympy.Symbol("n", positive=True)
#: Forward second moment q_k and backward second moment d_k, per unit.
q = sympy.Function("q")
d = sympy.Function("d")
#: q_0 = E[x^2], kept symbolic.
q0 = sympy.Symbol("q_0", positive=True)


def jacobian(block: int) -> sympy.Symbol:
    """The non-commutative Jacobian symbol J_block = df_block/dh_{block-1}.

    >>> J2, J3 = jacobian(2), jacobian(3)
    >>> J3 * J2 == J2 * J3
    False
    """
    return sympy.Symbol(f"J_{block}", commutative=False)
