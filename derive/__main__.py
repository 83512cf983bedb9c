"""`python -m derive` runs the command line."""

from derive.cli import run

run()
