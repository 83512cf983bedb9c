"""The maps of one block, folded from its primitives: q_{k-1} -> q_k, the backward factor
d_{k-1}/d_k and, where BatchNorm needs it, the map of c_k, the covariance per unit of
two independent inputs of a batch.

>>> from derive.blocks.config import variance_config
>>> block_maps(variance_config(init="he", norm="pre"))
(x + 1, 1 + 1/x, None)
"""

from __future__ import annotations

import sympy

from derive.blocks.config import VarianceConfig
from derive.blocks.nodes import Moments
from derive.errors import DeriveError

#: The block input's second moment q_{k-1}, and the covariance c_{k-1} per unit of two
#: independent inputs of a batch (tracked only for BatchNorm), as positive placeholders.
Q_PREV = sympy.Symbol("x", positive=True)
C_PREV = sympy.Symbol("c", nonnegative=True)
#: The two-point maps' placeholders: the block input's second moment q_{k-1} (both
#: inputs alike) and the inputs' correlation rho_{k-1}.
Q_IN = sympy.Symbol("Q", positive=True)
R_IN = sympy.Symbol("R", real=True)
#: The covariance c_k, a sequence like q_k.
c_seq = sympy.Function("c")


def block_input(config: VarianceConfig) -> Moments:
    """The moments of a block's input h_{k-1}: q_{k-1} and, where BatchNorm needs it,
    c_{k-1}, as placeholders; c_0 = 0 (independent inputs), and a block that maps
    c = 0 to c = 0 keeps it zero at every depth.

    >>> from derive.blocks.config import variance_config
    >>> block_input(variance_config(norm="bn-first"))
    Moments(q=x, c=c)
    """
    block = config.block
    if not block.has_batchnorm:
        return Moments(Q_PREV)
    zero = Moments(Q_PREV, sympy.Integer(0))
    return zero if block.forward(config, zero).c == 0 else Moments(Q_PREV, C_PREV)


def block_maps(config: VarianceConfig) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
    """The forward map q_{k-1} -> q_k, the backward factor d_{k-1}/d_k and, where
    BatchNorm needs it, the map of c, as expressions in ``Q_PREV`` (and ``C_PREV``), folded from
    the block's primitives."""
    block = config.block
    x = block_input(config)
    out = block.forward(config, x)
    if out.q.has(C_PREV):  # pragma: no cover (no primitive's q depends on c)
        raise DeriveError(f"the second moment of {block.text} depends on the batch covariance")
    cross = out.c if x.c is not None and x.c != 0 else None
    return sympy.collect(out.q, Q_PREV), block.gain(config, x), cross
