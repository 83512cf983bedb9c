"""The click types of every numeric option, thin wrappers over :mod:`derive.inputs.numbers`.

A bad value raises :class:`~derive.errors.DeriveError` naming the option as
typed (``--gamma must be ...``), which ``derive.commands.cli.main`` prints as one line
with exit code 2.

>>> Integer(minimum=1).convert("12", None, None), Exact(symbols=False).convert("1/4", None, None)
(12, 1/4)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from derive.inputs import numbers
from derive.inputs.parameters import PARAMETERS


def presets_epilog(text: str) -> str:
    """A command's epilog ``text``, then the presets ``--block`` takes, one a line.

    >>> presets_epilog("Notes.").splitlines()[2]
    'Presets for --block (and their sources):'
    """
    from derive.blocks.presets import describe

    presets = "\n".join(f"  {line}" for line in describe().splitlines())
    return f"{text}\n\b\nPresets for --block (and their sources):\n{presets}\n"


def symbol_settings(help: str = "A number for one of the block's symbols (repeatable), e.g. "
                    "alpha=1/2.") -> Any:
    """``--set NAME=VALUE`` (repeatable), read by :func:`derive.inputs.parameters.symbol_values`."""
    return click.option("--set", "settings", multiple=True, metavar="NAME=VALUE", help=help)


def option_name(param: click.Parameter | None) -> str:
    """The option's long name as a user types it (``--mlp-ratio``), or ``value``.

    >>> option_name(click.Option(["--depth", "-K"]))
    '--depth'
    """
    if param is None:
        return "value"
    names = getattr(param, "opts", None) or [param.name or "value"]
    return max(names, key=len)


class Integer(click.ParamType):
    """An integer in ``minimum..maximum``, parsed by :func:`derive.inputs.numbers.integer`."""

    name = "integer"

    def __init__(self, minimum: int = 0, maximum: int | None = numbers.MAX_DEPTH) -> None:
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        return numbers.integer(value, option_name(param), minimum=self.minimum,
                               maximum=self.maximum)


class Exact(click.ParamType):
    """An exact number (or a symbol name, if ``symbols``): :func:`derive.inputs.numbers.exact`."""

    name = "number"

    def __init__(self, symbols: bool = True, infinite: bool = False) -> None:
        self.symbols, self.infinite = symbols, infinite

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        if self.infinite:
            from derive.inputs.parameters import unbounded

            limit = unbounded(value)
            if limit is not None:
                return limit
        return numbers.exact(value, option_name(param), symbol=self.symbols)


class Real(click.ParamType):
    """A finite number as a float, parsed exactly first (:func:`derive.inputs.numbers.real`)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        return numbers.real(value, option_name(param))


def parameter_options(command: Callable[..., Any] | None = None, *, symbols: bool = True,
                      defaults: bool = True) -> Any:
    """Add every parameter of :data:`derive.inputs.parameters.PARAMETERS` to a click
    command (``@parameter_options``), as exact numbers parsed by derive.inputs.numbers;
    ``@parameter_options(symbols=False)`` refuses symbol names, and
    ``@parameter_options(defaults=False)`` leaves an option not given as None (nothing is
    parsed, so a command that may not need them starts without SymPy)."""
    if command is None:
        return lambda decorated: parameter_options(decorated, symbols=symbols, defaults=defaults)
    for p in reversed(PARAMETERS):
        shown = f" [default: {p.default}]" if p.default is not None and not defaults else ""
        if p.choices is not None:
            command = click.option(p.flag, p.name, type=click.Choice(p.choices),
                                   default=p.default if defaults else None,
                                   show_default=defaults, help=p.help + shown)(command)
            continue
        command = click.option(p.flag, p.name, type=Exact(symbols, p.infinite),
                               default=p.default if defaults else None, metavar=p.metavar,
                               show_default=defaults and p.default is not None,
                               help=p.help + shown)(command)
    return command
