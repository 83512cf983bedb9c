"""Configurations and the symbols of the residual stack.

Notation (see the README): blocks are numbered 1..N, h_0 = x,
h_k = h_{k-1} + f_k(h_{k-1}), y = h_N, and J_k = df_k/dh_{k-1} is a
non-commutative matrix symbol. q_k = E[h_k^2] and d_k = E[(dL/dh_k)^2] per unit
are sequence functions of the block index, so that ``rsolve`` can solve them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sympy

from derive.errors import choice_error
from derive.inputs import numbers
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.block import Block

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


def check_depth(depth: object, *, minimum: int = 1, name: str = "depth",
                maximum: int | None = numbers.MAX_DEPTH) -> int:
    """Return ``depth`` as an int in ``minimum..maximum``, or raise DeriveError naming it.

    >>> check_depth(4)
    4
    >>> check_depth(0)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: depth must be an integer >= 1 and <= 10^18, got 0
    """
    return numbers.integer(depth, name, minimum=minimum, maximum=maximum, text=False)


def exact(value: object, name: str) -> sympy.Expr:
    """An exact SymPy value: ints and decimal floats become rationals, names symbols.

    See :func:`derive.inputs.numbers.exact`, which this is.

    >>> exact(0.1, "dropout"), exact("gamma", "gamma"), exact(2, "gamma")
    (1/10, gamma, 2)
    """
    return numbers.exact(value, name)


@dataclass(frozen=True)
class VarianceConfig:
    """One residual stack at initialization: what the variance derivation takes.

    Numbers are stored exactly (``0.1`` becomes ``1/10``); names become
    positive symbols. ``sigma_w2``, when given, replaces ``init`` for every
    weight matrix.

    >>> VarianceConfig(init="he", activation="relu").norm
    'none'
    >>> VarianceConfig(init="kaiming")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: unknown init 'kaiming': choose one of xavier, he, lecun
    """

    init: str = "xavier"
    activation: str = "relu"
    #: The block: a preset name (``none``, ``pre``, ``post`` or one of the literature's),
    #: an expression such as ``x + F(LN(x))``, or a Block; stored as the block's name.
    norm: str = "none"
    branch: str = "single"
    mlp_ratio: sympy.Expr = sympy.Integer(1)
    dropout: sympy.Expr = sympy.Integer(0)
    gamma: sympy.Expr = sympy.Integer(1)
    sigma_w2: sympy.Expr | None = None
    negative_slope: sympy.Expr = sympy.Rational(1, 100)
    #: The block, when given as such (else parsed from ``norm``).
    block: Block = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        from derive.blocks.block import block as parse_block
        from derive.inputs.parameters import checked

        for what, value, allowed in (
            ("init", self.init, INITS),
            ("activation", self.activation, ACTIVATIONS),
            ("branch", self.branch, BRANCHES),
        ):
            if value not in allowed:
                raise choice_error(what, value, allowed)
        set_ = object.__setattr__
        the_block = parse_block(self.norm if self.block is None else self.block)
        set_(self, "block", the_block)
        set_(self, "norm", the_block.text if the_block.name not in NORMS else the_block.name)
        for name in ("mlp_ratio", "dropout", "gamma", "negative_slope", "sigma_w2"):
            if getattr(self, name) is not None:
                set_(self, name, checked(name, getattr(self, name)))

    @property
    def label(self) -> str:
        """A short stable name, e.g. ``he/relu/pre/single``: the activation and the branch
        only where the block uses them (a block written with its own matrices and
        activations, ``x + W(gelu(W(LN(x))))``, is ``he/x + W(gelu(W(LN(x))))``).

        >>> VarianceConfig(init="he", norm="x + W(gelu(W(x)))").label
        'he/x + W(gelu(W(x)))'
        """
        from derive.blocks.primitives import Activation, Branch

        nodes = self.block.tree.walk()
        branch = any(isinstance(node, Branch) for node in nodes)
        activation = branch or any(isinstance(node, Activation) and node.name is None
                                   for node in nodes)
        parts = (self.init, self.activation if activation else None, self.block.name,
                 self.branch if branch else None)
        return "/".join(part for part in parts if part is not None)

    def weight_variance(self, fan_in: sympy.Expr, fan_out: sympy.Expr) -> sympy.Expr:
        """Variance of one weight matrix's entries, from ``init`` (or ``sigma_w2``).

        >>> VarianceConfig(init="xavier").weight_variance(n, n)
        1/n
        """
        if self.sigma_w2 is not None:
            return self.sigma_w2
        return {
            "xavier": 2 / (fan_in + fan_out),
            "he": 2 / fan_in,
            "lecun": 1 / fan_in,
        }[self.init]
