"""The branch configuration: what the primitives of a block read.

A block's tree names its primitives (``W``, ``F``, activations, ``LN``, ``BN``,
``Dropout``); how they are initialised and what ``F`` expands to comes from one
:class:`BranchConfig`: the initialization (or an explicit weight variance), the
activation, the branch (``single`` W phi(h) or ``mlp`` W2 phi(W1 h)), its width
ratio, dropout, the gain of LayerNorm and BatchNorm, and leaky ReLU's slope.
:func:`branch_values` checks and parses the values a user gives; the dataclass
holds them exactly, already checked (:func:`derive.blocks.config.variance_config`
builds one together with its block).

>>> branch_values(init="he", dropout="1/10")["dropout"]
1/10
>>> branch_values(init="kaiming")
Traceback (most recent call last):
...
derive.errors.DeriveError: unknown init 'kaiming': choose one of xavier, he, lecun
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from derive.errors import DeriveError, choice_error
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS
from derive.inputs.parameters import given


@dataclass(frozen=True)
class BranchConfig:
    """The configuration the primitives read, with exact, checked values.

    >>> n = sympy.Symbol("n", positive=True)
    >>> BranchConfig(init="xavier").weight_variance(n, n)
    1/n
    """

    init: str = "xavier"
    activation: str = "relu"
    branch: str = "single"
    mlp_ratio: sympy.Expr = sympy.Integer(1)
    dropout: sympy.Expr = sympy.Integer(0)
    gamma: sympy.Expr = sympy.Integer(1)
    sigma_w2: sympy.Expr | None = None
    negative_slope: sympy.Expr = sympy.Rational(1, 100)
    #: The variance of the bias added after every weight matrix (0: no bias).
    sigma_b2: sympy.Expr = sympy.Integer(0)
    #: sigma_w^2 of Var W = sigma_w^2 / fan_in (Poole et al. 2016), or None.
    fan_in_variance: sympy.Expr | None = None
    #: The tokens n of a sequence, for blocks with attention (a number or a symbol).
    tokens: sympy.Expr = sympy.Integer(16)
    #: How attention starts: ``standard``, ``uniform`` or ``tied``
    #: (:data:`derive.inputs.choices.ATTENTION_MODES`).
    attention: str = "standard"
    #: sigma^2 of Var W = sigma^2 / fan_in for attention's W_Q and W_K, and W_V and W_O.
    qk_variance: sympy.Expr = sympy.Integer(1)
    vo_variance: sympy.Expr = sympy.Integer(1)

    def weight_variance(self, fan_in: sympy.Expr, fan_out: sympy.Expr) -> sympy.Expr:
        """Variance of one weight matrix's entries, from ``init`` (or ``sigma_w2``, or
        ``fan_in_variance`` over the fan-in)."""
        if self.sigma_w2 is not None:
            return self.sigma_w2
        if self.fan_in_variance is not None:
            return self.fan_in_variance / fan_in
        return {
            "xavier": 2 / (fan_in + fan_out),
            "he": 2 / fan_in,
            "lecun": 1 / fan_in,
        }[self.init]


def branch_values(init: object = "xavier", activation: object = "relu",
                  branch: object = "single", *, mlp_ratio: object = 1, dropout: object = 0,
                  gamma: object = 1, sigma_w2: object = None,
                  negative_slope: object = sympy.Rational(1, 100), sigma_b2: object = 0,
                  fan_in_variance: object = None, tokens: object = 16,
                  attention: object = "standard", qk_variance: object = 1,
                  vo_variance: object = 1) -> dict[str, object]:
    """The fields of a :class:`BranchConfig`, checked: the choices against their lists,
    the numbers parsed exactly (``0.1`` becomes ``1/10``; names become positive symbols).

    >>> branch_values(activation="tanh", gamma="g")["gamma"]
    g
    """
    for what, value, allowed in (("init", init, INITS), ("activation", activation, ACTIVATIONS),
                                 ("branch", branch, BRANCHES)):
        if value not in allowed:
            raise choice_error(what, value, allowed)
    numbers = given({"mlp_ratio": mlp_ratio, "dropout": dropout, "gamma": gamma,
                     "sigma_w2": sigma_w2, "negative_slope": negative_slope,
                     "sigma_b2": sigma_b2, "fan_in_variance": fan_in_variance,
                     "tokens": tokens, "attention": attention, "qk_variance": qk_variance,
                     "vo_variance": vo_variance})
    if numbers["sigma_w2"] is not None and numbers["fan_in_variance"] is not None:
        raise DeriveError("give one weight variance: sigma_w2 (per entry) or "
                          "fan_in_variance (sigma_w^2 / fan_in), not both")
    return {"init": init, "activation": activation, "branch": branch, **numbers}

