"""The ``derive`` command line: a click group whose commands load on demand.

Each command lives in ``derive/commands/<name>.py`` and is a thin layer over
the API. Bad input (a click usage error or a :class:`DeriveError`) prints one
line on stderr and exits with code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from derive.errors import DeriveError

#: command name -> (module, attribute), imported only when the command runs.
COMMANDS = {
    "paths": ("derive.commands.paths", "paths"),
    "variance": ("derive.commands.variance", "variance"),
    "kernel": ("derive.commands.kernel", "kernel"),
    "check": ("derive.commands.check", "check"),
    "notes": ("derive.commands.notes", "notes"),
}


class PipeClosed(Exception):
    """The reader of our output went away (``derive paths ... | head``): not an error."""


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is used."""

    def invoke(self, ctx: click.Context) -> object:
        # click turns a closed pipe into exit code 1; derive's design says 0
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise PipeClosed() from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        try:
            return getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="derive")
def cli() -> None:
    """Symbolic derivations for deep residual networks.

    \b
    derive paths --depth 4        the eight terms of dy/df1 (Prince, UDL eq. 11.6)
    derive variance --init he     how E[h_k^2] and gradients evolve with depth
    derive kernel --init he       two inputs: their correlation and their gradients'
    derive check                  compare the derivations with simulated networks
    derive notes                  LaTeX, Markdown, Obsidian + Anki study notes
    """


def fail(message: str) -> None:
    """Print one error line on stderr and exit with code 2."""
    click.echo(f"derive: error: {message}", err=True)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; bad input exits with code 2 and one line of error."""
    try:
        # outside standalone mode click returns the status of a command that exits early
        # (``derive check`` with values outside its tolerance) instead of exiting
        status = cli.main(args=argv, prog_name="derive", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("derive: aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:
        fail(err.format_message())
    except click.ClickException as err:
        click.echo(f"derive: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except DeriveError as err:
        fail(str(err))
    except (BrokenPipeError, PipeClosed):
        _silence_stdout()
        sys.exit(0)
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


def run() -> None:
    """The console script (and ``python -m derive``): :func:`main`, then an exit that skips
    tearing down the interpreter's objects, which takes about half a second once SymPy's
    caches are full. Output is flushed first; with a child process still running, the
    interpreter exits as usual and lets it finish."""
    import contextlib
    import os

    try:
        main()
        code: object = 0
    except SystemExit as done:
        code = done.code
    if code is None:
        code = 0
    if not isinstance(code, int):
        click.echo(str(code), err=True)
        code = 1
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        _silence_stdout()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    pool = sys.modules.get("multiprocessing")  # no child process unless it was imported
    if pool is not None and pool.active_children():
        sys.exit(code)
    os._exit(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
