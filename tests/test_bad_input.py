"""Bad input over every option of every command, enumerated from the click commands.

Each command in derive.commands.cli.COMMANDS is loaded and each of its options is read
off the click command itself, so an option added later is covered by itself:
a numeric option must use derive's number types (or a click range type), and
every one gets the same table of bad values. Each case must end in one line on
stderr naming the option, exit code 2, nothing on stdout and no traceback.
"""

from __future__ import annotations

import click
import pytest

from derive.commands.cli import COMMANDS, cli, main
from derive.commands.options import Exact, Integer, Real, option_name

#: Values no number option accepts.
BAD_NUMBERS = (
    "1/0", "0/0", "nan", "NaN", "inf", "-inf", "+inf", "infinity", "oo", "zoo",
    "1e400", "-1e400", "1e-400", "1e99999999999", "9" * 5000, "1" + "0" * 400, "", " ",
    "1+", "1/2/3", "2**3", "__import__('os')", "1e", ".", "/",
)
#: Integers out of range or not integers at all.
BAD_INTEGERS = ("-1", "2.5", "1e3", "10**30", "100000000000000000000", "0x10", "four")
#: Names are numbers only where a symbol is allowed.
BAD_FOR_NUMBERS_ONLY = ("gamma", "x1")
#: Text options that are not numbers, and how a bad value for them is caught elsewhere.
TEXT_OPTIONS = {("paths", "--wrt"): "a block index or x", ("notes", "--out"): "a folder",
                ("notes", "--templates"): "a folder", ("variance", "--block"): "an expression",
                ("check", "--block"): "an expression", ("variance", "--set"): "name=value",
                ("check", "--set"): "name=value", ("notes", "--tags"): "tag names",
                ("notes", "--deck"): "a deck name", ("notes", "--style"): "a style",
                ("notes", "--name"): "NAME=TITLE", ("notes", "--concepts"): "names",
                ("notes", "--blocks"): "blocks", ("notes", "--depths"): "a list of depths",
                ("notes", "--config"): "a file", ("paths", "--block"): "an expression",
                ("paths", "--set"): "name=value", ("paths", "--span"): "LO..HI",
                ("kernel", "--block"): "an expression", ("kernel", "--set"): "name=value"}
#: The arguments each command needs besides the option under test, so that only it is bad.
CONTEXT = {"paths": [], "variance": [], "check": ["--init", "he", "--activation", "relu",
                                                  "--norm", "none", "--branch", "single"],
           "notes": ["--out", "{tmp}"], "kernel": []}


def _options() -> list[tuple[str, click.Option]]:
    found = []
    for name in sorted(COMMANDS):
        command = cli.get_command(click.Context(cli), name)
        assert command is not None, name
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag and param.name != "help":
                found.append((name, param))
    return found


OPTIONS = _options()


def _kind(command: str, param: click.Option) -> str:
    kind = param.type
    if isinstance(kind, Integer | click.IntRange):
        return "integer"
    if isinstance(kind, Exact):
        return "symbol" if kind.symbols else "number"
    if isinstance(kind, Real):
        return "number"
    if isinstance(kind, click.Choice):
        return "choice"
    assert (command, option_name(param)) in TEXT_OPTIONS, (
        f"derive {command} {option_name(param)} has type {kind!r}: numeric options use "
        "derive.commands.options (Integer, Exact, Real); other text options are listed here"
    )
    return "text"


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for command, param in OPTIONS:
        kind, name = _kind(command, param), option_name(param)
        values: tuple[str, ...] = ()
        if kind in ("integer", "number", "symbol"):
            values = BAD_NUMBERS
            if isinstance(param.type, Exact) and param.type.infinite:  # --tokens oo: the limit
                values = tuple(v for v in values if v.lstrip("+") not in ("inf", "infinity",
                                                                           "oo"))
        if kind == "integer":
            values += BAD_INTEGERS
        if kind == "number":
            values += BAD_FOR_NUMBERS_ONLY
        if kind == "choice":
            values = ("nope", "", "1/0")
        if (command, name) == ("paths", "--wrt"):
            values = (*BAD_NUMBERS, *BAD_INTEGERS, "5", "y")
        if (command, name) == ("notes", "--depths"):
            values = (*BAD_NUMBERS[:13], *BAD_INTEGERS, "4,1/0", "4, nan")
        if name == "--set":
            values = ("alpha", "=1", "1=2", *(f"alpha={v}" for v in (*BAD_NUMBERS, "beta")))
        cases += [(command, name, value) for value in values]
    return cases


CASES = _cases()


def test_every_command_and_option_is_enumerated() -> None:
    names = {(command, option_name(param)) for command, param in OPTIONS}
    assert {command for command, _ in names} == set(COMMANDS)
    for expected in [("paths", "--depth"), ("variance", "--gamma"), ("variance", "--q0"),
                     ("check", "--width"), ("check", "--batch"), ("check", "--tolerance"),
                     ("notes", "--depth")]:
        assert expected in names
    numeric = [n for c, p in OPTIONS if (n := _kind(c, p)) in ("integer", "number", "symbol")]
    assert len(numeric) >= 20 and len(CASES) > 500


def _id(case: tuple[str, str, str]) -> str:
    command, option, value = case
    return f"{command} {option} {value if len(value) <= 20 else value[:8] + '...'}"


OWN_TYPES = {(c, option_name(p)) for c, p in OPTIONS if isinstance(p.type, Integer | Exact | Real)}


@pytest.mark.parametrize(("command", "option", "value"), CASES, ids=[_id(c) for c in CASES])
def test_bad_value_is_one_line_naming_the_option(capsys, tmp_path, command, option,
                                                 value) -> None:
    context = [arg.format(tmp=tmp_path / "out") for arg in CONTEXT[command]]
    with pytest.raises(SystemExit) as done:
        main([command, *context, option, value])
    out, err = capsys.readouterr()
    assert done.value.code == 2, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("derive: error: "), err
    assert (option in err or option.lstrip("-") in err) and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything is written
    if (command, option) in OWN_TYPES:  # click's own types repeat the whole value
        assert len(err) < 300, err
