"""The package's layout holds: imports go one way, down the flow, with no circle.

Every ``import`` of a derive module is read from the source (including imports
inside functions and under ``TYPE_CHECKING``), so a circle cannot hide behind a
deferred import. The layers, from the command line down to the mathematics:
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "derive"

#: Subpackages (and top-level modules) from the top of the flow down; a module may
#: import from its own layer's package and from any layer below it, never above.
LAYERS = (
    ("__init__", "__main__"),
    ("commands",),
    ("studynotes",),
    ("vault",),
    ("deck",),
    ("rendering",),
    ("simulation",),
    ("pathsums",),
    ("recursions",),
    ("blocks",),
    ("gaussian",),
    ("derivation",),
    ("files",),
    ("inputs",),
    ("errors",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """(module imported, names taken from it, line) for every derive import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, (), node.lineno) for a in node.names
                      if a.name.split(".")[0] == "derive"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module.split(".")[0] == "derive"):
            names = tuple(a.name for a in node.names)
            found.append((node.module, names, node.lineno))
            # ``from derive.pkg import module`` imports that module too
            for name in names:
                candidate = PACKAGE.parent / (node.module.replace(".", "/") + f"/{name}")
                if candidate.with_suffix(".py").is_file() or candidate.is_dir():
                    found.append((f"{node.module}.{name}", (), node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import")
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_subpackage_and_module_has_a_layer() -> None:
    unplaced = sorted({_layer(m) for m in MODULES} - set(RANK))
    assert not unplaced, f"put these in LAYERS of tests/test_layout.py: {unplaced}"


def test_imports_point_down_the_flow() -> None:
    upward = []
    for module, imports in GRAPH.items():
        for target, _, line in imports:
            if target == "derive" or target not in MODULES:
                continue
            if RANK[_layer(target)] < RANK[_layer(module)]:
                upward.append(f"{MODULES[module]}:{line}: {module} imports {target}")
    assert not upward, "imports that run up the flow:\n" + "\n".join(upward)


def test_no_private_name_is_imported_from_another_subpackage() -> None:
    private = []
    for module, imports in GRAPH.items():
        for target, names, line in imports:
            if _layer(target) == _layer(module):
                continue
            hidden = [n for n in names if n.startswith("_")]
            hidden += [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
            if hidden:
                private.append(f"{MODULES[module]}:{line}: {', '.join(hidden)} from {target}")
    assert not private, "private names imported across subpackages:\n" + "\n".join(private)


def _cycle() -> list[str] | None:
    edges = {m: sorted({t for t, _, _ in imports if t in MODULES and t != m})
             for m, imports in GRAPH.items()}
    for m in list(edges):  # a package's __init__ is not an edge to its own modules
        edges[m] = [t for t in edges[m] if not (m.startswith(t + ".") and t != "derive")]
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_circle_not_even_a_deferred_one() -> None:
    cycle = _cycle()
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("layer", [name for names in LAYERS for name in names
                                   if (PACKAGE / name).is_dir()])
def test_every_subpackage_says_what_it_holds(layer: str) -> None:
    init = PACKAGE / layer / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), (
        f"derive/{layer}/__init__.py needs a docstring saying what the subpackage holds")
