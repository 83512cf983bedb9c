"""``derive check`` for blocks with ``Attn``: the derived token kernel against simulated
transformer stacks.

Each network sees one sequence of tokens; q_k, the tokens' correlation rho_k, the
gradients' d_k/d_K and their correlation rho^grad_k are derived by :func:`derive.kernel` and
measured on finite NumPy networks (:mod:`derive.simulation.token_check`); a table or
JSON, like ``derive check --kernel``'s, and one line for each quantity that disagrees.
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
    from derive.simulation.token_check import Finding, TokenRow

HEADER = ("configuration", "value", "k", "derived", "measured", "s.e.", "error", "ok")
#: What each quantity is, for the lines that report a disagreement.
MEANING = {"q_k": "the second moment q_k", "rho_k": "the tokens' correlation rho_k",
           "d_k/d_K": "the gradient's second moment d_k/d_K",
           "rho^grad_k": "the gradients' correlation rho^grad_k"}
#: What the finite networks keep that the mean-field model averages, by attention mode:
#: a line under the disagreements of a configuration of that mode.
FINITE = {
    "standard": ("standard attention's weights stay random in each network at any width (each "
                 "head draws its own logits): the mean-field model is their average, exact as "
                 "the heads grow; an error that falls like 1/heads (compare a larger --heads) "
                 "is that, one that does not is a wrong rule"),
    "tied": ("tied attention's logits are deterministic only as d_head = width/heads grows: "
             "its error falls like 1/d_head (compare a larger --width or fewer --heads)"),
}


@dataclass(frozen=True)
class TokenSettings:
    """The numbers of one token check (the JSON report's ``settings``, in this order)."""

    depth: int
    width: int
    heads: int
    seeds: int
    seed: int
    q0: float
    rho0: str
    tolerance: float
    relative: float

    def check_resources(self, configs: list[VarianceConfig]) -> None:
        """Refuse, before any work, heads that do not divide the width, configurations
        that cannot be simulated, or a simulation larger than allowed."""
        from derive.simulation.token_check import (
            check_heads,
            check_token_simulation,
            token_configs,
            token_rho0,
        )

        check_heads(self.width, self.heads)
        token_rho0(self.rho0)
        check_token_simulation(token_configs(configs, self.width), depth=self.depth,
                               width=self.width, seeds=self.seeds)

    def compare(self, configs: list[VarianceConfig],
                progress: Callable[[int], None] | None = None) -> list[TokenRow]:
        """The rows of :func:`derive.simulation.token_check.compare_tokens`."""
        from derive.simulation.token_check import compare_tokens

        return compare_tokens(configs, self.depth, self.width, self.heads, self.seeds,
                              q0=self.q0, rho0=self.rho0, tolerance=self.tolerance,
                              relative=self.relative, seed=self.seed, progress=progress)


def _shown(rows: list[TokenRow], every: bool) -> list[TokenRow]:
    """Every row, or the final row of each configuration and quantity plus failures."""
    if every:
        return rows
    last = {(r.label, r.quantity): i for i, r in enumerate(rows)}
    keep = set(last.values())
    return [r for i, r in enumerate(rows) if i in keep or not r.ok]


def _error(r: TokenRow) -> str:
    return f"{100 * r.error:.2f}%" if r.relative else f"{r.error:.4f}"


def _cells(r: TokenRow) -> tuple[str, ...]:
    return (r.label, r.quantity, str(r.k), f"{r.derived:.4f}", f"{r.measured:.4f}",
            f"{r.stderr:.4f}", _error(r), "ok" if r.ok else "FAIL")


def _allowed(r: TokenRow) -> str:
    return f"{100 * r.tolerance:g}%" if r.relative else f"{r.tolerance:g}"


def finding_line(f: Finding) -> str:
    """One line: what disagrees with the mean-field model, where, by how much, and whether
    the measurement's noise explains it.

    >>> from derive.simulation.token_check import TokenRow, findings
    >>> row = TokenRow("he/attention-only", "rho_k", 2, 0.5, 0.6, 0.01, 0.1, 0.05, False, False)
    >>> print(finding_line(findings([row])[0]))
    he/attention-only: the tokens' correlation rho_k differs from the mean-field model by 0.1000 at k=2 (derived 0.5000, measured 0.6000 +- 0.0100, 10.0 standard errors), outside 0.05 at k = 2: beyond the finite-width noise
    """  # noqa: E501
    r = f.worst
    layers = ", ".join(str(k) for k in f.layers)
    noise = (f"{r.deviations:.1f} standard errors" if r.deviations != float("inf")
             else "no standard error")
    verdict = ("beyond the finite-width noise" if f.beyond_noise else
               "within the measurement's noise (more --seeds would tell)")
    return (f"{f.label}: {MEANING[f.quantity]} differs from the mean-field model by "
            f"{_error(r)} at k={r.k} (derived {r.derived:.4f}, measured {r.measured:.4f} "
            f"+- {r.stderr:.4f}, {noise}), outside {_allowed(r)} at k = {layers}: {verdict}")


def notes(found: list[Finding], configs: list[VarianceConfig]) -> list[str]:
    """The lines of :data:`FINITE` for the attention modes of the configurations that
    disagree somewhere, in the order of :data:`FINITE`.

    >>> from derive.blocks.config import variance_config
    >>> from derive.simulation.token_check import TokenRow, findings
    >>> config = variance_config(block="Attn(x)", attention="tied")
    >>> row = TokenRow(config.label, "q_k", 2, 1.0, 1.2, 0.01, 0.2, 0.1, True, False)
    >>> [line[:20] for line in notes(findings([row]), [config])]
    ['Note: tied attention']
    """
    modes = {c.label: c.attention for c in configs}
    seen = {modes.get(f.label) for f in found}
    return [f"Note: {text}" for mode, text in FINITE.items() if mode in seen]


def _describe(configs: list[VarianceConfig], run: TokenSettings) -> str:
    """The sizes of the check in words, for the summary line."""
    kinds = sorted({(int(c.tokens), c.attention) for c in configs})
    sequences = "; ".join(f"{n} tokens, {mode} attention" for n, mode in kinds)
    return (f"depth {run.depth}, width {run.width}, {run.heads} head"
            f"{'s' * (run.heads != 1)} of {run.width // run.heads} units, {run.seeds} "
            f"networks of one sequence ({sequences}), rho0 = {run.rho0}, q0 = {run.q0:g}")


def text_report(rows: list[TokenRow], configs: list[VarianceConfig], run: TokenSettings,
                every: bool) -> str:
    """The table, a line for each quantity that disagrees, then one line: how much was
    compared, the largest errors, the verdict."""
    from derive.simulation.token_check import findings

    failed = [r for r in rows if not r.ok]
    count = len(configs)
    worst = {kind: max((r for r in rows if r.relative == kind), key=lambda r: r.error)
             for kind in (False, True)}
    largest = "; ".join(
        f"largest {name} {_error(r)} ({r.label} {r.quantity} k={r.k})"
        for name, r in (("correlation error", worst[False]),
                        ("relative error", worst[True])))
    summary = (
        f"{count} configuration{'s' * (count != 1)}, {len(rows)} values compared (q_k, "
        f"rho_k, d_k/d_K, rho^grad_k; {_describe(configs, run)}); {largest}; "
        + ("all within " if not failed else f"{len(failed)} outside ")
        + f"{run.tolerance:g} (correlations) and {100 * run.relative:g}% (q_k, d_k/d_K)"
    )
    found = findings(rows)
    lines = [finding_line(f) for f in found] + notes(found, configs)
    said = "\n".join(lines) + "\n\n" if lines else ""
    table = aligned(HEADER, (_cells(r) for r in _shown(rows, every)),
                    right={2, 3, 4, 5, 6})
    return f"{table}\n\n{said}{summary}"


def json_report(rows: list[TokenRow], configs: list[VarianceConfig], run: TokenSettings,
                every: bool) -> str:
    """The token check as a JSON document: its settings, whether every value agrees, the
    rows, and the quantities that disagree."""
    from derive.simulation.token_check import findings

    kinds = sorted({(int(c.tokens), c.attention) for c in configs})
    document = {
        "settings": {"tokens": [n for n, _ in kinds], "attention": [m for _, m in kinds],
                     **asdict(run)},
        "ok": all(r.ok for r in rows),
        "rows": [
            {"configuration": r.label, "quantity": r.quantity, "k": r.k,
             "derived": finite(r.derived), "measured": finite(r.measured),
             "stderr": finite(r.stderr), "error": finite(r.error), "relative": r.relative,
             "tolerance": r.tolerance, "ok": r.ok}
            for r in _shown(rows, every)
        ],
        "findings": [
            {"configuration": f.label, "quantity": f.quantity, "k": f.worst.k,
             "layers": list(f.layers), "derived": finite(f.worst.derived),
             "measured": finite(f.worst.measured), "stderr": finite(f.worst.stderr),
             "error": finite(f.worst.error), "relative": f.worst.relative,
             "tolerance": f.worst.tolerance, "standard_errors": finite(f.worst.deviations),
             "beyond_noise": f.beyond_noise, "line": finding_line(f)}
            for f in findings(rows)
        ],
        "notes": notes(findings(rows), configs),
    }
    return json.dumps(document, indent=2)


def compared(configs: list[VarianceConfig], run: TokenSettings) -> list[TokenRow]:
    """The rows of the token check, with a progress bar on a terminal."""
    from derive.simulation.token_check import TOKEN_CHUNK

    if not sys.stderr.isatty():
        return run.compare(configs)
    total = len(configs) + -(-max(run.seeds, 1) // TOKEN_CHUNK)
    with click.progressbar(length=total, label="Checking", file=sys.stderr) as bar:
        return run.compare(configs, progress=bar.update)


def token_configs(transformers: bool, inits: tuple[str, ...], activations: tuple[str, ...],
                  blocks: tuple[str, ...], branches: tuple[str, ...],
                  values: dict[str, object], parameters: dict[str, object]
                  ) -> list[VarianceConfig]:
    """The configurations of the token check: the blocks given (``transformers``: the
    five transformer presets) under the inits and activations given, He and ReLU where
    none is (a transformer's MLP targets He's variance; each further configuration
    costs a simulation of its own attention)."""
    from derive.blocks.presets import TRANSFORMER_PRESETS
    from derive.simulation.kernel_check import kernel_grid

    chosen = tuple(TRANSFORMER_PRESETS) if transformers else blocks
    return _distinct(kernel_grid(inits or ("he",), activations or ("relu",), (), branches,
                                 blocks=chosen, values=values, **parameters))


def _distinct(configs: list[VarianceConfig]) -> list[VarianceConfig]:
    """``configs`` without the repeats that differ in the init only, where the block has
    no weight matrix the init sets (``Attn(x)`` alone: attention's matrices have their own
    variances); the first of each is kept.

    >>> from derive.simulation.kernel_check import kernel_grid
    >>> [c.label for c in _distinct(kernel_grid(blocks=["Attn(x)"]))]
    ['xavier/attention-only/n=16 standard']
    """
    from derive.blocks.primitives import Weight

    seen, out = set(), []
    for config in configs:
        tree = config.block.expanded(config)
        weighted = any(isinstance(node, Weight) for node in tree.walk())
        key = config.label if weighted else config.label.split("/", 1)[1]
        if key not in seen:
            seen.add(key)
            out.append(config)
    return out
