"""Every docstring example in the package runs and prints what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import derive

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(derive.__path__, prefix="derive.")
    if info.name != "derive.__main__"
)


#: Modules whose examples derive whole notes or simulate networks: end-to-end (slow).
SLOW = ("derive.studynotes.", "derive.simulation.")


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name.startswith(SLOW) else name
    for name in MODULES])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_every_public_function_has_an_example() -> None:
    missing = []
    for name in derive.__all__:
        obj = getattr(derive, name)
        if callable(obj) and ">>>" not in (obj.__doc__ or ""):
            missing.append(name)
    assert not missing, f"public names without a runnable example: {missing}"
