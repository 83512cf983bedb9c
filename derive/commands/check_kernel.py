"""``derive check --kernel``: the derived two-point kernel against simulated networks.

The correlations rho_k of two inputs and rho^grad_k of their gradients, derived by
:func:`derive.kernel` and measured on finite NumPy networks
(:mod:`derive.simulation.kernel_check`); a table or JSON, like ``derive check``'s.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click

from derive.commands.reports import aligned, finite

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.config import VarianceConfig
    from derive.simulation.kernel_check import KernelRow

HEADER = ("configuration", "direction", "k", "derived", "measured", "s.e.", "abs. error", "ok")
#: What each direction compares, for the summary line.
QUANTITY = {"forward": "rho_k", "backward": "rho^grad_k"}


@dataclass(frozen=True)
class KernelSettings:
    """The numbers of one kernel check (the JSON report's ``settings``, in this order)."""

    depth: int
    width: int
    seeds: int
    pairs: int
    seed: int
    q0: float
    rho0: str
    tolerance: float

    def check_resources(self, configs: list[VarianceConfig]) -> None:
        """Refuse, before any work, configurations that cannot be simulated at these
        numbers or would take more memory or time than allowed."""
        from derive.simulation.kernel_check import check_kernel_simulation

        check_kernel_simulation(configs, depth=self.depth, width=self.width, seeds=self.seeds,
                                pairs=self.pairs)

    def compare(self, configs: list[VarianceConfig],
                progress: Callable[[int], None] | None = None) -> list[KernelRow]:
        """The rows of :func:`derive.simulation.kernel_check.compare_kernel`."""
        from derive.simulation.kernel_check import compare_kernel

        return compare_kernel(configs, self.depth, self.width, self.seeds, pairs=self.pairs,
                              q0=self.q0, rho0=self.rho0, tolerance=self.tolerance,
                              seed=self.seed, progress=progress)


def kernel_configs(everything: bool, inits: tuple[str, ...], activations: tuple[str, ...],
                   norms: tuple[str, ...], blocks: tuple[str, ...], branches: tuple[str, ...],
                   values: dict[str, object], parameters: dict[str, object]
                   ) -> list[VarianceConfig]:
    """The configurations of ``--kernel``: the grid of the choices given (the presets and
    the plain stacks where no block is given), else the default kernel grid."""
    from derive.simulation.kernel_check import default_kernel_grid, kernel_grid

    if everything or inits or activations or norms or blocks or branches:
        return kernel_grid(inits, activations, norms, branches, blocks=blocks, values=values,
                           **parameters)
    return default_kernel_grid(values=values, **parameters)


def _shown(rows: list[KernelRow], every: bool) -> list[KernelRow]:
    """Every row, or the final row of each configuration and direction plus failures."""
    if every:
        return rows
    last = {(r.label, r.direction): i for i, r in enumerate(rows)}
    keep = set(last.values())
    return [r for i, r in enumerate(rows) if i in keep or not r.ok]


def _cells(r: KernelRow) -> tuple[str, ...]:
    return (r.label, r.direction, str(r.k), f"{r.derived:.4f}", f"{r.measured:.4f}",
            f"{r.stderr:.4f}", f"{r.error:.4f}", "ok" if r.ok else "FAIL")


def _table(rows: list[KernelRow]) -> str:
    return aligned(HEADER, (_cells(r) for r in rows), right={2, 3, 4, 5, 6})


def json_report(rows: list[KernelRow], run: KernelSettings, every: bool) -> str:
    """The kernel check as a JSON document: its settings, whether every correlation
    agrees, the rows."""
    document = {
        "settings": {"kernel": True, **asdict(run)},
        "ok": all(r.ok for r in rows),
        "rows": [
            {"configuration": r.label, "direction": r.direction, "k": r.k,
             "derived": finite(r.derived), "measured": finite(r.measured),
             "stderr": finite(r.stderr), "error": finite(r.error),
             "tolerance": r.tolerance, "ok": r.ok}
            for r in _shown(rows, every)
        ],
    }
    return json.dumps(document, indent=2)


def text_report(rows: list[KernelRow], configurations: int, run: KernelSettings,
                every: bool) -> str:
    """The table, then one line: how much was compared, the largest error, the verdict."""
    failed = [r for r in rows if not r.ok]
    worst = max(rows, key=lambda r: r.error)
    summary = (
        f"{configurations} configuration{'s' * (configurations != 1)}, {len(rows)} "
        "correlations compared (forward rho_k, backward rho^grad_k; "
        f"depth {run.depth}, width {run.width}, {run.seeds} networks of {run.pairs} input "
        f"pairs, rho0 = {run.rho0}, q0 = {run.q0:g}); largest error {worst.error:.4f} "
        f"({worst.label} {QUANTITY[worst.direction]} k={worst.k}); "
        + ("all within " if not failed else f"{len(failed)} outside ")
        + f"{run.tolerance:g}"
    )
    return f"{_table(_shown(rows, every))}\n\n{summary}"


def compared(configs: list[VarianceConfig], run: KernelSettings) -> list[KernelRow]:
    """The rows of the kernel check, with a progress bar on a terminal."""
    from derive.simulation.networks import CHUNK

    if not sys.stderr.isatty():
        return run.compare(configs)
    total = len(configs) + -(-max(run.seeds, 1) // CHUNK)
    with click.progressbar(length=total, label="Checking", file=sys.stderr) as bar:
        return run.compare(configs, progress=bar.update)
