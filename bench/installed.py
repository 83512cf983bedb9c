"""Benchmarks time derive as an installed package runs: with its bytecode compiled.

``pip install`` compiles every module; a source checkout run with
``PYTHONDONTWRITEBYTECODE`` set (or freshly edited) would instead compile derive
at every start, which is not what a user's command pays.
"""

from __future__ import annotations

import compileall
import importlib.util
from pathlib import Path


def compile_package() -> None:
    """Write the bytecode of every module of the derive package that is imported."""
    spec = importlib.util.find_spec("derive")
    if spec is None or spec.origin is None:
        raise SystemExit("derive is not importable: install it (pip install -e .)")
    compileall.compile_dir(str(Path(spec.origin).parent), quiet=1)
