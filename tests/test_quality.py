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


@pytest.mark.slow
def test_mypy_passes() -> None:
    """The types carry the design: mypy finds no error in the package."""
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy", "derive"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_function_is_too_complex_to_hold_in_mind() -> None:
    """No function or method has a cyclomatic complexity above 15 (radon's count)."""
    cc = pytest.importorskip("radon.complexity")
    worst = []
    for path in sorted((ROOT / "derive").rglob("*.py")):
        for block in cc.cc_visit(path.read_text()):
            if block.complexity > 15:
                worst.append(f"{path.relative_to(ROOT)}:{block.lineno} {block.name} "
                             f"({block.complexity})")
    assert not worst, "split these into named steps:\n" + "\n".join(worst)
