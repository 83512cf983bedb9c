"""The scalar parameters of a residual stack, in one table that the API and every
command read: their names, flags, defaults, help and the values they allow.

>>> [p.flag for p in PARAMETERS]
['--mlp-ratio', '--dropout', '--gamma', '--sigma-w2', '--negative-slope', '--sigma-b2', \
'--fan-in-variance', '--tokens', '--attention', '--qk-variance', '--vo-variance']
>>> checked("dropout", "1/10")
1/10
>>> checked("dropout", 1)
Traceback (most recent call last):
...
derive.errors.DeriveError: dropout must be in [0, 1), got 1
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from derive.errors import DeriveError
from derive.inputs.choices import ATTENTION_MODES

if TYPE_CHECKING:  # pragma: no cover (imported where the values are built)
    import sympy


def _positive(name: str, value: sympy.Expr) -> None:
    if value.is_number and not value > 0:
        raise DeriveError(f"{name} must be > 0, got {value}")


def _rate(name: str, value: sympy.Expr) -> None:
    if value.is_number and not (0 <= value < 1):
        raise DeriveError(f"{name} must be in [0, 1), got {value}")


def _nonnegative(name: str, value: sympy.Expr) -> None:
    if value.is_number and not value >= 0:
        raise DeriveError(f"{name} must be >= 0, got {value}")


#: The most tokens a sequence may hold (the softmax expectations are computed up to it).
MAX_TOKENS = 4096


def _tokens(name: str, value: sympy.Expr) -> None:
    if value.is_number and not (value.is_Integer and 1 <= value <= MAX_TOKENS) and not (
            value.is_infinite and value > 0):
        raise DeriveError(f"{name} must be a whole number of tokens from 1 to {MAX_TOKENS}, "
                          f"oo for the limit of many tokens, or a symbol name; got {value}")


#: How the limit of infinitely many is written (``--tokens oo``).
INFINITE = ("oo", "inf", "infinity")


def unbounded(value: object) -> sympy.Expr | None:
    """sympy.oo for a value that names infinity (``oo``, ``inf``, math.inf), else None.

    >>> unbounded("oo"), unbounded("16")
    (oo, None)
    """
    import math

    import sympy

    if isinstance(value, str) and value.strip().lower() in INFINITE:
        return sympy.oo
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return sympy.oo
    if isinstance(value, sympy.Basic) and value == sympy.oo:
        return sympy.oo
    return None


def _any(name: str, value: object) -> None:
    """A choice: click (or :func:`checked`) has already checked it against its list."""


@dataclass(frozen=True)
class Parameter:
    """One scalar of the stack: ``name`` in the API, ``flag`` on the command line."""

    name: str
    default: str | None
    metavar: str
    help: str
    rule: Callable[[str, sympy.Expr], None]
    #: The allowed words of a parameter that is a choice, not a number.
    choices: tuple[str, ...] | None = None
    #: Whether the parameter takes ``oo``, the limit of infinitely many.
    infinite: bool = False

    @property
    def flag(self) -> str:
        """The command-line option, e.g. ``--mlp-ratio``."""
        return "--" + self.name.replace("_", "-")


PARAMETERS = (
    Parameter("mlp_ratio", "1", "R", "Hidden width / n of the mlp branch.", _positive),
    Parameter("dropout", "0", "P", "Dropout rate p in [0, 1) on the output of every F.", _rate),
    Parameter("gamma", "1", "G", "LayerNorm and BatchNorm gain: a number or a symbol name.",
              _positive),
    Parameter("sigma_w2", None, "S", "Weight variance of every matrix (overrides --init).",
              _positive),
    Parameter("negative_slope", "1/100", "A", "leaky_relu slope.", _nonnegative),
    Parameter("sigma_b2", "0", "B", "Variance of a bias added after every weight matrix.",
              _nonnegative),
    Parameter("fan_in_variance", None, "S", "sigma_w^2 in the convention Var W = "
              "sigma_w^2/fan_in of Poole et al. 2016 (He: 2, LeCun: 1; overrides --init).",
              _positive),
    Parameter("tokens", "16", "N", "Tokens n of each sequence, for blocks with Attn(.): a "
              f"whole number from 1 to {MAX_TOKENS}, oo for the limit of many tokens, or a "
              "symbol name.", _tokens, infinite=True),
    Parameter("attention", "standard", "MODE", "How Attn(.) starts: standard (logits "
              "q.k/sqrt(d_head), random at any width), uniform (queries and keys at zero, "
              "P = 1/n) or tied (W_Q = W_K with 1/d_head scaling).", _any,
              ATTENTION_MODES),
    Parameter("qk_variance", "1", "S", "sigma^2 of Var W = sigma^2/fan_in for W_Q and W_K "
              "of Attn(.).", _positive),
    Parameter("vo_variance", "1", "S", "sigma^2 of Var W = sigma^2/fan_in for W_V and W_O "
              "of Attn(.).", _positive),
)
BY_NAME = {p.name: p for p in PARAMETERS}


def checked(name: str, value: object) -> sympy.Expr:
    """``value`` of parameter ``name`` as an exact SymPy value, or a DeriveError.

    >>> checked("gamma", "g"), checked("mlp_ratio", 0.5)
    (g, 1/2)
    """
    from derive.inputs.numbers import exact

    choices = BY_NAME[name].choices
    if choices is not None:
        if value not in choices:
            from derive.errors import choice_error

            raise choice_error(name, value, choices)
        return value  # type: ignore[return-value]
    limit = unbounded(value) if BY_NAME[name].infinite else None
    result = exact(value, name) if limit is None else limit
    BY_NAME[name].rule(name, result)
    return result


def given(values: dict[str, object]) -> dict[str, sympy.Expr | None]:
    """Parameters given to the API, checked: None only where a parameter has no default
    (``sigma_w2``), every other value as :func:`checked` reads it.

    >>> given({"dropout": "0.1", "sigma_w2": None})
    {'dropout': 1/10, 'sigma_w2': None}
    >>> given({"mlp_ratio": None})
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: mlp_ratio must be a number (default 1) or a symbol name, got None
    """
    out: dict[str, sympy.Expr | None] = {}
    for name, value in values.items():
        if name not in BY_NAME:  # not a parameter: left to the caller's own signature
            out[name] = value  # type: ignore[assignment]
        elif value is None and BY_NAME[name].default is not None:
            raise DeriveError(f"{name} must be a number (default {BY_NAME[name].default}) or "
                              "a symbol name, got None")
        else:
            out[name] = None if value is None else checked(name, value)
    return out


def symbol_values(pairs: tuple[str, ...]) -> dict[str, sympy.Expr]:
    """``--set name=value`` pairs as exact values: positive numbers, each name once.

    >>> symbol_values(("alpha=1/2",))
    {'alpha': 1/2}
    >>> symbol_values(("alpha",))
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: --set takes name=value, such as alpha=1/2, got 'alpha'
    """
    from derive.inputs.numbers import exact, shown

    out: dict[str, sympy.Expr] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise DeriveError(f"--set takes name=value, such as alpha=1/2, got {shown(pair)}")
        value = exact(text.strip(), f"--set {name}")
        if not value.is_number:
            raise DeriveError(f"--set {name} needs a number, got {shown(text.strip())}")
        if name in out:
            raise DeriveError(f"--set {name} is given twice ({out[name]} and {value}): give "
                              "each symbol one value")
        if not value > 0:
            raise DeriveError(f"--set {name} must be > 0 (a block's symbols are positive), "
                              f"got {value}")
        out[name] = value
    return out
