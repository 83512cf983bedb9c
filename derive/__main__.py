"""`python -m derive` runs the command line."""

from derive.commands.cli import run

run()
