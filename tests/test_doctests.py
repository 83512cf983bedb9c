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


@pytest.mark.parametrize("name", MODULES)
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
