"""UDL Notebook 11.1's experiment against its derivation: the autocorrelation of dy/dx
over the grid and its rms, averaged over simulated networks, against
:func:`derive.recursions.notebook_kernel.notebook_prediction`.

For each depth K, ``networks`` networks of the notebook's kind (width 200, seeds
``seed, seed+1, ...``) give dy/dx on the grid (:mod:`derive.simulation.notebook`). The
measured values are the mean over networks of the notebook's autocorrelation A(j) and
the rms of dy/dx over networks and grid; the derived ones the infinite-width mean of
A(j) (``mean_autocorrelation``) and the predicted rms. The tolerance of each value is
``Z`` standard errors of its Monte Carlo mean (the sample standard deviation over
networks over sqrt(networks); for the rms, by the delta method, the standard error of
the mean square over twice the rms): with Z = 4 a correct prediction fails one of the
24 default comparisons with a probability of about 1% (Student's t with 23 degrees of
freedom), and a finite-width bias shows once it exceeds the Monte Carlo spread. The
default counts keep the run near 10 s on one core.

>>> rows = notebook_check(depths=(1,), lags=(1,), networks={1: 50})
>>> [(r.quantity, r.ok) for r in rows]
[('A(1)', True), ('rms', True)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from derive.errors import DeriveError
from derive.inputs.numbers import integer
from derive.recursions.notebook_kernel import notebook_prediction
from derive.simulation.notebook import (
    autocorrelation,
    network_gradient,
    notebook_grid,
    notebook_network,
)

#: The depths the notebook asks for, the lags compared, and the networks at each depth.
DEPTHS = (1, 24, 50)
LAGS = (1, 2, 4, 8, 16, 32, 64)
NETWORKS = {1: 400, 24: 24, 50: 24}
#: Standard errors allowed between a derived value and its Monte Carlo mean.
Z = 4.0


@dataclass(frozen=True)
class NotebookRow:
    """One compared value: ``quantity`` is ``A(j)`` or ``rms``; ``error`` the standard
    error of the measured mean; ``ok`` when |measured - derived| <= tolerance."""

    depth: int
    quantity: str
    derived: float
    measured: float
    error: float
    tolerance: float
    networks: int

    @property
    def ok(self) -> bool:
        """Within the tolerance."""
        return abs(self.measured - self.derived) <= self.tolerance


def notebook_check(depths: Iterable[int] = DEPTHS, lags: Iterable[int] = LAGS, *,
                   networks: Mapping[int, int] | None = None, seed: int = 0,
                   width: int = 200) -> list[NotebookRow]:
    """Compare the notebook's autocorrelation at ``lags`` and the rms of dy/dx with the
    derivation at each depth (see the module's docstring).

    >>> notebook_check(depths=(0,))
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: depth must be an integer >= 1 and <= 200, got 0
    """
    chosen = [integer(d, "depth", minimum=1, maximum=200, text=False) for d in depths]
    lag_list = [integer(j, "lag", minimum=1, maximum=127, text=False) for j in lags]
    counts = dict(NETWORKS if networks is None else networks)
    start = integer(seed, "seed", minimum=0, maximum=2**62, text=False)
    if not chosen or not lag_list:
        raise DeriveError("notebook_check needs at least one depth and one lag")
    x = notebook_grid()
    rows: list[NotebookRow] = []
    for depth in chosen:
        count = integer(counts.get(depth, 24), "networks", minimum=2, maximum=10**5,
                        text=False)
        values, energies = [], []
        for offset in range(count):
            network = notebook_network(depth, width=width, seed=start + offset)
            gradient = network_gradient(x, network)
            values.append(autocorrelation(gradient, lag_list))
            energies.append(float(np.mean(gradient * gradient)))
        table, energy = np.array(values), np.array(energies)
        prediction = notebook_prediction(depth, width=width)
        for lag, derived, column in zip(lag_list, prediction.at(lag_list, mean=True),
                                        table.T, strict=True):
            error = float(column.std(ddof=1) / np.sqrt(count))
            rows.append(NotebookRow(depth, f"A({lag})", float(derived), float(column.mean()),
                                    error, Z * error, count))
        rms = float(np.sqrt(energy.mean()))
        error = float(energy.std(ddof=1) / np.sqrt(count) / (2 * rms))
        rows.append(NotebookRow(depth, "rms", prediction.rms, rms, error, Z * error, count))
    return rows


def notebook_report(rows: list[NotebookRow]) -> str:
    """The rows as a text table and a one-line verdict.

    >>> print(notebook_report([NotebookRow(1, "A(1)", 0.5, 0.51, 0.01, 0.04, 10)]))
    ... # doctest: +NORMALIZE_WHITESPACE
    K   value  derived     measured    std. error  tolerance  ok
    1   A(1)   0.5         0.51        0.01        0.04       yes
    <BLANKLINE>
    notebook 11.1: 1 values compared (width 200, mean over networks); all within 4 standard errors
    """
    header = ("K", "value", "derived", "measured", "std. error", "tolerance", "ok")
    cells = [header] + [(str(r.depth), r.quantity, f"{r.derived:.4g}", f"{r.measured:.4g}",
                         f"{r.error:.2g}", f"{r.tolerance:.2g}", "yes" if r.ok else "NO")
                        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    failed = sum(not r.ok for r in rows)
    verdict = ("all within" if not failed else f"{failed} outside") + f" {Z:g} standard errors"
    return (("\n".join(lines)) + f"\n\nnotebook 11.1: {len(rows)} values compared (width 200, "
            f"mean over networks); {verdict}")
