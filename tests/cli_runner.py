"""Run derive's command line in the test process and read what it printed."""

from __future__ import annotations

import pytest

from derive.commands.cli import main


def invoke(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, str, str]:
    """``derive ARGV`` in process: (exit code, stdout, stderr), decoded as UTF-8."""
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsysbinary.readouterr()
    return done.value.code, out.decode(), err.decode()


def run_paths(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, str, str]:
    """``derive paths ARGS`` in process: (exit code, stdout, stderr)."""
    return invoke(capsysbinary, "paths", *args)
