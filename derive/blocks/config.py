"""The analysis configuration: a parsed block and the branch configuration it is read with.

:class:`VarianceConfig` is what every derivation of a residual stack takes (the
recursions, the gradient by path length, the simulation): a :class:`BranchConfig`
(what the primitives read) together with the parsed :class:`Block`. Build one with
:func:`variance_config`, which parses the block and checks every value.

>>> config = variance_config(init="he", norm="pre")
>>> config.label, config.block.text
('he/relu/pre/single', 'x + F(LN(x))')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from derive.blocks.block import Block
from derive.blocks.block import block as parse_block
from derive.blocks.branch import BranchConfig, branch_values
from derive.blocks.primitives import Activation, Branch


@dataclass(frozen=True)
class VarianceConfig(BranchConfig):
    """One residual stack at initialization: the branch configuration and the block.

    A VarianceConfig is a :class:`BranchConfig`, so the primitives read it as such.

    >>> variance_config(activation="tanh", block="x + alpha*F(x)").block.symbols
    (alpha,)
    """

    block: Block = field(kw_only=True)

    @property
    def label(self) -> str:
        """A short stable name, e.g. ``he/relu/pre/single``: the activation and the branch
        only where the block uses them (a block written with its own matrices and
        activations, ``x + W(gelu(W(LN(x))))``, is ``he/x + W(gelu(W(LN(x))))``).

        >>> variance_config(init="he", norm="x + W(gelu(W(x)))").label
        'he/x + W(gelu(W(x)))'
        """
        nodes = self.block.tree.walk()
        branch = any(type(node) is Branch for node in nodes)
        activation = any(isinstance(node, Branch) or (isinstance(node, Activation)
                                                      and node.name is None)
                         for node in nodes)
        tokens = (f"n={self.tokens} {self.attention}" if self.block.has_attention else None)
        parts = (self.init, self.activation if activation else None, self.block.name,
                 self.branch if branch else None, tokens)
        return "/".join(part for part in parts if part is not None)


def variance_config(init: object = "xavier", activation: object = "relu", norm: object = "none",
                    branch: object = "single", *, mlp_ratio: object = 1, dropout: object = 0,
                    gamma: object = 1, sigma_w2: object = None,
                    negative_slope: object = sympy.Rational(1, 100), sigma_b2: object = 0,
                    fan_in_variance: object = None, block: object = None, tokens: object = 16,
                    attention: object = "standard", qk_variance: object = 1,
                    vo_variance: object = 1) -> VarianceConfig:
    """A checked :class:`VarianceConfig`. The block is ``norm`` (a preset name: ``none``,
    ``pre``, ``post`` or one of the literature's) unless ``block`` is given (a preset
    name, an expression such as ``x + F(LN(x))``, or a Block). Numbers are stored
    exactly (``0.1`` becomes ``1/10``); names become positive symbols; ``sigma_w2``,
    when given, replaces ``init`` for every weight matrix.

    >>> variance_config(init="he", dropout=0.1).dropout
    1/10
    >>> variance_config(init="kaiming")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: unknown init 'kaiming': choose one of xavier, he, lecun
    """
    values = branch_values(init, activation, branch, mlp_ratio=mlp_ratio, dropout=dropout,
                           gamma=gamma, sigma_w2=sigma_w2, negative_slope=negative_slope,
                           sigma_b2=sigma_b2, fan_in_variance=fan_in_variance,
                           tokens=tokens, attention=attention, qk_variance=qk_variance,
                           vo_variance=vo_variance)
    return VarianceConfig(**values, block=parse_block(norm if block is None else block))  # type: ignore[arg-type]

