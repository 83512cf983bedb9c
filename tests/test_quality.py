"""The code base passes the linter, and `import derive` stays cheap."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_clean() -> None:
    result = subprocess.run(
        ["ruff", "check", "derive", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_is_cheap() -> None:
    heavy = "('sympy', 'numpy', 'matplotlib', 'genanki')"
    code = f"import sys, derive; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_public_names_match_their_exports() -> None:
    import derive

    assert sorted(derive.__all__) == sorted(derive._EXPORTS)


def test_public_functions_are_not_shadowed_by_modules() -> None:
    import importlib
    import pkgutil

    import derive

    for info in pkgutil.walk_packages(derive.__path__, prefix="derive."):
        if info.name != "derive.__main__":
            importlib.import_module(info.name)
    for name in ("paths", "count_paths", "path_lengths", "variance", "simulate", "render", "notes"):
        assert callable(getattr(derive, name)), name
        assert not isinstance(getattr(derive, name), type(derive)), f"derive.{name} is a module"
