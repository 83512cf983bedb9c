"""derive: symbolic derivations for deep residual networks.

>>> import derive
>>> derive.count_paths(4)
8
>>> derive.variance("he", "relu").forward.closed_form.rhs.subs(derive.K, 10)
1024*q_0

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
    "Step": "derive.derivation.value",
    "Derivation": "derive.derivation.value",
    "VarianceConfig": "derive.blocks.config",
    "variance_config": "derive.blocks.config",
    "PathSum": "derive.pathsums.expansion",
    "paths": "derive.pathsums.expansion",
    "count_paths": "derive.pathsums.expansion",
    "path_lengths": "derive.pathsums.expansion",
    "BlockPathSum": "derive.pathsums.block_paths",
    "PathGradients": "derive.pathsums.by_length",
    "path_gradients": "derive.pathsums.by_length",
    "gaussian_moment": "derive.gaussian.moments",
    "variance": "derive.recursions.analysis",
    "VarianceAnalysis": "derive.recursions.analysis",
    "Recursion": "derive.recursions.recursion",
    "kernel": "derive.recursions.kernel",
    "KernelAnalysis": "derive.recursions.kernel",
    "phase": "derive.recursions.phase",
    "critical_line": "derive.recursions.phase",
    "simulate": "derive.simulation.networks",
    "render": "derive.rendering.render",
    "notes": "derive.studynotes.writer",
    "K": "derive.derivation.symbols",
    "k": "derive.derivation.symbols",
    "q0": "derive.derivation.symbols",
}

__all__ = [
    "Block",
    "BlockPathSum",
    "Derivation",
    "DeriveError",
    "K",
    "KernelAnalysis",
    "PathGradients",
    "PathSum",
    "Recursion",
    "Step",
    "VarianceAnalysis",
    "VarianceConfig",
    "block",
    "count_paths",
    "critical_line",
    "gaussian_moment",
    "k",
    "kernel",
    "notes",
    "path_gradients",
    "path_lengths",
    "paths",
    "phase",
    "q0",
    "render",
    "simulate",
    "variance",
    "variance_config",
]

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.block import Block, block
    from derive.blocks.config import VarianceConfig, variance_config
    from derive.derivation.symbols import K, k, q0
    from derive.derivation.value import Derivation, Step
    from derive.errors import DeriveError
    from derive.gaussian.moments import gaussian_moment
    from derive.pathsums.block_paths import BlockPathSum
    from derive.pathsums.by_length import PathGradients, path_gradients
    from derive.pathsums.expansion import PathSum, count_paths, path_lengths, paths
    from derive.recursions.analysis import VarianceAnalysis, variance
    from derive.recursions.kernel import KernelAnalysis, kernel
    from derive.recursions.phase import critical_line, phase
    from derive.recursions.recursion import Recursion
    from derive.rendering.render import render
    from derive.simulation.networks import simulate
    from derive.studynotes.writer import notes


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'derive' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
