"""derive: symbolic derivations for deep residual networks.

>>> import derive
>>> derive.count_paths(4)
8

The public names load on first use, so ``import derive`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "DeriveError": "derive.errors",
    "Block": "derive.blocks.block",
    "block": "derive.blocks.block",
    "Step": "derive.derivation",
    "Derivation": "derive.derivation",
    "VarianceConfig": "derive.model",
    "PathSum": "derive.pathsum",
    "paths": "derive.pathsum",
    "count_paths": "derive.pathsum",
    "path_lengths": "derive.pathsum",
    "BlockPathSum": "derive.block_paths",
    "PathGradients": "derive.gradient_by_length",
    "path_gradients": "derive.gradient_by_length",
    "gaussian_moment": "derive.gaussian",
    "variance": "derive.variance_analysis",
    "VarianceAnalysis": "derive.variance_analysis",
    "Recursion": "derive.variance_analysis",
    "simulate": "derive.simulation",
    "render": "derive.rendering",
    "notes": "derive.notes_writer",
}

__all__ = [
    "Block",
    "BlockPathSum",
    "Derivation",
    "DeriveError",
    "PathGradients",
    "PathSum",
    "Recursion",
    "Step",
    "VarianceAnalysis",
    "VarianceConfig",
    "block",
    "count_paths",
    "gaussian_moment",
    "notes",
    "path_gradients",
    "path_lengths",
    "paths",
    "render",
    "simulate",
    "variance",
]

if TYPE_CHECKING:  # pragma: no cover
    from derive.block_paths import BlockPathSum
    from derive.blocks.block import Block, block
    from derive.derivation import Derivation, Step
    from derive.errors import DeriveError
    from derive.gaussian import gaussian_moment
    from derive.gradient_by_length import PathGradients, path_gradients
    from derive.model import VarianceConfig
    from derive.notes_writer import notes
    from derive.pathsum import PathSum, count_paths, path_lengths, paths
    from derive.rendering import render
    from derive.simulation import simulate
    from derive.variance_analysis import Recursion, VarianceAnalysis, variance


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'derive' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
