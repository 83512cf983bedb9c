"""``derive check``: compare the derived variance profiles with simulated networks."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.config import VarianceConfig
    from derive.simulation.networks import CheckRow

from derive.commands.options import Exact, Integer, Real, parameter_options, symbol_settings
from derive.commands.reports import aligned, finite
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS

EPILOG = """\b
Examples:
  derive check                                 every preset: 170 configurations
  derive check --all                           every preset under every init: 330
  derive check --init he --activation relu     one init and activation, every preset and branch
  derive check --norm pre --blocks             every block, not only the final depth
  derive check --block 'x + F(BN(x))' --block 'x + alpha*F(x)' --set alpha=1/2
  derive check --branch mlp --mlp-ratio 4 --dropout 0.1 --format json
  derive check --init he --activation relu --branch single --lengths
  derive check --kernel                        two inputs: correlations, 215 configurations
  derive check --kernel --block 'F(x)' --block none --rho0 0.9 --depth 10
  derive check --transformers                  the five transformer presets: tokens of a sequence
  derive check --block transformer-pre --tokens 16 --heads 8 --width 512
  derive check --transformers --attention tied --format json

\b
--kernel runs pairs of inputs (correlation --rho0, E[x^2] = --q0) through the
networks, and compares the correlation rho_k of the two inputs at every block
and rho^grad_k of their gradients (both read through the same readout) with
the derived two-point kernel (derive.kernel), over the grid above plus the
plain stacks F(x) and phi(W(x)). Its defaults: depth 6, width 512, 8 networks
of 16 pairs (a block with BatchNorm: 4 networks of 128 pairs), tolerance 0.05
on each correlation (absolute), which covers the finite-width error, about
12/width at depth 6 for the worst block (post-LN, linear, mlp).

\b
A block with Attn(.) (--transformers: the five transformer presets) is
checked on the tokens of a sequence, with or without --kernel, under He
and ReLU unless --init and --activation say: each network sees one sequence
of --tokens tokens (per unit E[x^2] = --q0, correlation --rho0 in [0, 1]),
attention has --heads heads of width/heads units, and every token's
gradient reads the same readout. Compared at every layer with derive
kernel's mean-field profile: q_k and d_k/d_K (relative tolerance 10%),
the tokens' correlation rho_k and the gradients' rho^grad_k (absolute,
--tolerance, default 0.05). Defaults: depth 6, width 256, 4 heads
(d_head = 64), 64 networks. Finite heads keep the attention weights random
in each network, which the mean-field model averages: from the second
attention layer on its error falls like 1/heads, not with the width; at
these defaults the five presets agree within about 0.02 on a correlation
(uniform and tied attention too: tied's error falls like 1/d_head). A value
outside its tolerance gets a line that names it, by how much, and whether
it is beyond the measurement's noise.

\b
Exit status: 0 when every block agrees within the tolerance, 1 when some
block does not, 2 on bad input.
"""

HEADER = ("configuration", "direction", "k", "derived", "measured", "rel. error", "ok")


def _shown(rows: list[CheckRow], every: bool) -> list[CheckRow]:
    """Every row, or the final-depth row of each configuration and direction plus failures."""
    if every:
        return rows
    last = {(r.label, r.direction): i for i, r in enumerate(rows)}
    keep = set(last.values())
    return [r for i, r in enumerate(rows) if i in keep or not r.ok]


def _cells(r: CheckRow) -> tuple[str, ...]:
    error = f"{100 * r.error:.2f}%"
    return (r.label, r.direction, str(r.k), f"{r.derived:.6g}", f"{r.measured:.6g}", error,
            "ok" if r.ok else "FAIL")


def _table(rows: list[CheckRow]) -> str:
    return aligned(HEADER, (_cells(r) for r in rows), right={2, 3, 4, 5})


@dataclass(frozen=True)
class CheckSettings:
    """The numbers of one check (the JSON report's ``settings``, in this order)."""

    depth: int
    width: int
    seeds: int
    batch: int
    seed: int
    q0: float
    tolerance: float
    weights: bool
    final_norm: bool
    lengths: bool

    def check_resources(self, configs: list[VarianceConfig]) -> None:
        """Refuse, before any work, configurations that cannot be simulated at these
        numbers or would take more memory or time than allowed."""
        from derive.simulation.networks import CHUNK, ROWS, batching, numeric, skeleton
        from derive.simulation.resources import check_simulation

        checked = [numeric(c, self.width) for c in configs]
        plans = [batching(c, self.seeds, self.batch) for c in checked]
        check_simulation(checked, plans, depth=self.depth, width=self.width, seeds=self.seeds,
                         batch=self.batch, chunk=CHUNK, rows=ROWS, skeleton=skeleton,
                         weights=self.weights, lengths=self.lengths)

    def compare(self, configs: list[VarianceConfig],
                progress: Callable[[int], None] | None = None) -> list[CheckRow]:
        """The rows of :func:`derive.simulation.networks.compare` at these numbers."""
        from derive.simulation.networks import compare

        return compare(configs, depth=self.depth, width=self.width, seeds=self.seeds,
                       batch=self.batch, q0=self.q0, tolerance=self.tolerance, seed=self.seed,
                       weights=self.weights, final_norm=self.final_norm, lengths=self.lengths,
                       progress=progress)


def _configs(everything: bool, inits: tuple[str, ...], activations: tuple[str, ...],
             norms: tuple[str, ...], blocks: tuple[str, ...], branches: tuple[str, ...],
             settings: tuple[str, ...], parameters: dict[str, object]) -> list[VarianceConfig]:
    """The configurations chosen on the command line: the grid of the choices given
    (--all: every choice), else the default grid."""
    from derive.inputs.parameters import symbol_values
    from derive.simulation.networks import default_grid, grid

    chosen = inits or activations or norms or blocks or branches
    if everything and chosen:
        raise click.UsageError(
            "--all checks the whole grid: drop --init, --activation, --norm, --block and --branch"
        )
    values = symbol_values(settings)
    if everything or chosen:
        return grid(inits, activations, norms, branches, blocks=blocks, values=values,
                    **parameters)
    return default_grid(values=values, **parameters)


def _compared(configs: list[VarianceConfig], run: CheckSettings) -> list[CheckRow]:
    """The rows of the check, with a progress bar on a terminal."""
    from derive.simulation.networks import CHUNK

    if not sys.stderr.isatty():
        return run.compare(configs)
    total = len(configs) * (1 + run.weights + run.lengths) + -(-max(run.seeds, 1) // CHUNK)
    with click.progressbar(length=total, label="Checking", file=sys.stderr) as bar:
        return run.compare(configs, progress=bar.update)


def _json_report(rows: list[CheckRow], run: CheckSettings, every: bool) -> str:
    """The check as a JSON document: its settings, whether every value agrees, the rows."""
    document = {
        "settings": asdict(run),
        "ok": all(r.ok for r in rows),
        "rows": [
            {"configuration": r.label, "direction": r.direction, "k": r.k,
             "derived": finite(r.derived), "measured": finite(r.measured),
             "error": finite(r.error), "tolerance": r.tolerance, "ok": r.ok}
            for r in _shown(rows, every)
        ],
    }
    return json.dumps(document, indent=2)


def _text_report(rows: list[CheckRow], configurations: int, run: CheckSettings,
                 every: bool) -> str:
    """The table, then one line: how much was compared, the largest error, the verdict."""
    failed = [r for r in rows if not r.ok]
    worst = max(rows, key=lambda r: r.error)
    summary = (
        f"{configurations} configuration{'s' * (configurations != 1)}, {len(rows)} values "
        "compared "
        f"(depth {run.depth}, width {run.width}, {run.seeds} networks of {run.batch} inputs); "
        f"largest relative error {100 * worst.error:.2f}% ({worst.label} {worst.direction} "
        f"k={worst.k}); "
        + ("all within " if not failed else f"{len(failed)} outside ")
        + f"{100 * run.tolerance:g}%"
    )
    return f"{_table(_shown(rows, every))}\n\n{summary}"


@click.command(epilog=EPILOG)
@click.option("--init", "inits", multiple=True, type=click.Choice(INITS),
              help="Initialization (repeat for several; default all).")
@click.option("--activation", "activations", multiple=True, type=click.Choice(ACTIVATIONS),
              help="Activation (repeat for several; default all but erf).")
@click.option("--norm", "norms", multiple=True, type=click.Choice(NORMS),
              help="LayerNorm placement (repeat for several).")
@click.option("--block", "blocks_", multiple=True, metavar="EXPR",
              help="A block: a preset or an expression in x (repeat for several; default: "
                   "every preset of derive variance --help).")
@symbol_settings("A number for a block's symbol (repeatable); presets have their own.")
@click.option("--branch", "branches", multiple=True, type=click.Choice(BRANCHES),
              help="Residual branch (repeat for several; default all).")
@click.option("--all", "everything", is_flag=True,
              help="Check the whole grid: every preset under every init (330 configurations). "
                   "Without it and without a choice above: the norm placements under every "
                   "init, the other presets under He (170).")
@click.option("--depth", "-K", type=Integer(1), default=6, show_default=True, help="Blocks K.")
@click.option("--width", "-n", type=Integer(2), default=None,
              help="Units per layer.  [default: 512; blocks with Attn: 256]")
@click.option("--heads", type=Integer(0), default=None,
              help="Heads of every Attn(.), each of width/heads units; must divide the "
                   "width.  [default: 4]")
@click.option("--seeds", type=Integer(1), default=None,
              help="Independent networks per configuration.  [default: 32; --kernel: 8; "
                   "blocks with Attn: 64, one sequence each]")
@click.option("--batch", type=Integer(1), default=None,
              help="Inputs per network (--kernel: pairs of inputs).  [default: 16]")
@click.option("--seed", type=Integer(0), default=0, show_default=True, help="Seed of all draws.")
@click.option("--q0", type=Real(), default=1.0, show_default=True, help="E[x^2] of the inputs.")
@parameter_options(symbols=False)
@click.option("--tolerance", "-t", type=Real(), default=None,
              help="Largest relative error accepted at any block (--kernel: largest absolute "
                   "difference of a correlation).  [default: 0.1; --kernel: 0.05]")
@click.option("--blocks", is_flag=True, help="Show every block, not only the final depth.")
@click.option("--weights", is_flag=True,
              help="Also compare E[(dL/dW)^2] of each block's last weight matrix.")
@click.option("--final-norm", is_flag=True,
              help="With --weights: a final LayerNorm after the last block.")
@click.option("--lengths", is_flag=True,
              help="Also compare the share of E[(dL/dx)^2] carried by the paths through L "
                   "branches (k = L), measured by splitting the backward pass by length.")
@click.option("--notebook", is_flag=True,
              help="Only compare UDL notebook 11.1's experiment (the autocorrelation of dy/dx "
                   "on its grid at K = 1, 24, 50, and its rms) with its derivation; takes "
                   "--seed.")
@click.option("--kernel", is_flag=True,
              help="Compare the correlations of two inputs (rho_k) and of their gradients "
                   "(rho^grad_k) with the derived two-point kernel, instead of the second "
                   "moments.")
@click.option("--rho0", type=Exact(symbols=False), default=None, metavar="RHO",
              help="With --kernel: the correlation of the two inputs, in [-1, 1]; for "
                   "blocks with Attn: of two tokens, in [0, 1].  [default: 1/2]")
@click.option("--transformers", is_flag=True,
              help="Check the five transformer presets (their own values for alpha and "
                   "beta) on the tokens of a sequence.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def check(
    inits: tuple[str, ...],
    activations: tuple[str, ...],
    norms: tuple[str, ...],
    blocks_: tuple[str, ...],
    settings: tuple[str, ...],
    branches: tuple[str, ...],
    everything: bool,
    depth: int,
    width: int | None,
    heads: int | None,
    seeds: int | None,
    batch: int | None,
    seed: int,
    q0: float,
    tolerance: float | None,
    blocks: bool,
    weights: bool,
    final_norm: bool,
    lengths: bool,
    notebook: bool,
    kernel: bool,
    rho0: object,
    transformers: bool,
    fmt: str,
    **parameters: object,
) -> None:
    """Compare the derived variance profiles with simulated finite networks.

    Builds real networks in NumPy for each configuration (init x activation x
    block x branch), measures E[h_k^2] and the backpropagated E[(dL/dh_k)^2]
    at every block, and compares them with the derivation of `derive variance`;
    --weights adds the gradient of each block's last weight matrix, --lengths the
    share of the input gradient carried by each path length (`derive paths
    --lengths`). The table shows each configuration's final depth (or longest
    path) and any value outside the tolerance (--blocks: every value). --kernel
    compares the correlations of two inputs instead (see below).
    """
    if notebook:
        _notebook(seed, fmt)
        return
    if transformers or _with_attention(blocks_, norms):
        _check_tokens(transformers, everything, (inits, activations, norms, blocks_, branches),
                      settings, parameters, (depth, width, heads, seeds, batch), seed, q0,
                      tolerance, rho0, (blocks, weights, final_norm, lengths), fmt)
        return
    width = _without_attention(heads, width)
    if kernel:
        _check_kernel(everything, (inits, activations, norms, blocks_, branches), settings,
                      parameters, depth, width, seeds, batch, seed, q0, tolerance, rho0,
                      (blocks, weights, final_norm, lengths), fmt)
        return
    if rho0 is not None:
        raise click.UsageError("--rho0 goes with --kernel")
    configs = _configs(everything, inits, activations, norms, blocks_, branches, settings,
                       parameters)
    if final_norm and not weights:
        raise click.UsageError("--final-norm goes with --weights")
    run = CheckSettings(depth, width, 32 if seeds is None else seeds,
                        16 if batch is None else batch, seed, q0,
                        0.1 if tolerance is None else tolerance, weights, final_norm, lengths)
    run.check_resources(configs)
    rows = _compared(configs, run)
    if fmt == "json":
        click.echo(_json_report(rows, run, blocks))
    else:
        click.echo(_text_report(rows, len(configs), run, blocks))
    if any(not r.ok for r in rows):
        raise click.exceptions.Exit(1)


def _notebook(seed: int, fmt: str) -> None:
    """``--notebook``: notebook 11.1's experiment against its derivation; exit 1 outside."""
    from derive.simulation.notebook_check import notebook_check, notebook_report

    rows = notebook_check(seed=seed)
    if fmt == "json":
        click.echo(json.dumps({"notebook": [{**asdict(r), "ok": r.ok} for r in rows]},
                              indent=2))
    else:
        click.echo(notebook_report(rows))
    if any(not r.ok for r in rows):
        raise click.exceptions.Exit(1)


def _kernel_options(everything: bool, choices: tuple[tuple[str, ...], ...], rho0: object,
                    flags: tuple[bool, bool, bool, bool]) -> str:
    """Refuse what --kernel does not take; the input correlation as text (default 1/2)."""
    from derive.errors import DeriveError

    _, weights, final_norm, lengths = flags
    extra = [name for name, given in (("--weights", weights), ("--final-norm", final_norm),
                                      ("--lengths", lengths)) if given]
    if extra:
        raise click.UsageError(f"--kernel compares correlations: drop {' and '.join(extra)}")
    if everything and any(choices):
        raise click.UsageError(
            "--all checks the whole grid: drop --init, --activation, --norm, --block and --branch"
        )
    if rho0 is not None and not (-1 <= rho0 <= 1):  # type: ignore[operator]
        raise DeriveError(f"--rho0 must be a number in [-1, 1], got {rho0}")
    return "1/2" if rho0 is None else str(rho0)


def _check_kernel(everything: bool, choices: tuple[tuple[str, ...], ...],
                  settings: tuple[str, ...], parameters: dict[str, object], depth: int,
                  width: int, seeds: int | None, batch: int | None, seed: int, q0: float,
                  tolerance: float | None, rho0: object,
                  flags: tuple[bool, bool, bool, bool], fmt: str) -> None:
    """``derive check --kernel``: the correlations of two inputs, derived against measured."""

    every = flags[0]
    correlation = _kernel_options(everything, choices, rho0, flags)
    inits, activations, norms, blocks_, branches = choices
    # its products are many and small (width x width): one BLAS thread each is faster, and
    # several times faster where the cores are shared (bench/bench_check_kernel.py); an
    # OPENBLAS_NUM_THREADS the user set wins, and NumPy reads it when first imported
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from derive.commands.check_kernel import (
        KernelSettings,
        compared,
        json_report,
        kernel_configs,
        text_report,
    )
    from derive.inputs.parameters import symbol_values
    from derive.simulation.kernel_check import DEFAULTS

    run = KernelSettings(depth, width, int(DEFAULTS["seeds"]) if seeds is None else seeds,
                         int(DEFAULTS["pairs"]) if batch is None else batch, seed, q0,
                         correlation,
                         float(DEFAULTS["tolerance"]) if tolerance is None else tolerance)
    configs = kernel_configs(everything, inits, activations, norms, blocks_, branches,
                             symbol_values(settings), parameters)
    run.check_resources(configs)
    rows = compared(configs, run)
    if fmt == "json":
        click.echo(json_report(rows, run, every))
    else:
        click.echo(text_report(rows, len(configs), run, every))
    if any(not r.ok for r in rows):
        raise click.exceptions.Exit(1)


def _without_attention(heads: int | None, width: int | None) -> int:
    """The width of a check of blocks without ``Attn`` (default 512); --heads refused."""
    if heads is not None:
        raise click.UsageError("--heads goes with blocks that hold Attn(.), such as "
                               "--block transformer-pre or --transformers")
    return 512 if width is None else width


def _with_attention(blocks: tuple[str, ...], norms: tuple[str, ...]) -> bool:
    """Whether the blocks given hold ``Attn`` (then every one must: the token check
    simulates sequences, the others independent inputs)."""
    from derive.blocks.block import block

    if not blocks:
        return False
    holding = [spec for spec in blocks if block(spec).has_attention]
    if holding and (len(holding) < len(blocks) or norms):
        other = next(iter([*norms, *(b for b in blocks if b not in holding)]))
        raise click.UsageError(
            f"{other} has no Attn(.) and {holding[0]} has: blocks with attention are checked "
            "on the tokens of a sequence, the others on independent inputs; check them apart")
    return bool(holding)


def _token_options(transformers: bool, everything: bool, blocks: bool, batch: int | None,
                   flags: tuple[bool, bool, bool, bool]) -> None:
    """Refuse what the token check does not take."""
    _, weights, final_norm, lengths = flags
    extra = [name for name, given in (("--weights", weights), ("--final-norm", final_norm),
                                      ("--lengths", lengths), ("--all", everything),
                                      ("--batch", batch is not None)) if given]
    if extra:
        raise click.UsageError(
            f"blocks with Attn(.) are checked on one sequence of --tokens tokens per network: "
            f"drop {' and '.join(extra)}")
    if transformers and blocks:
        raise click.UsageError("--transformers checks the five transformer presets: drop "
                               "--block and --norm")


def _check_tokens(transformers: bool, everything: bool, choices: tuple[tuple[str, ...], ...],
                  settings: tuple[str, ...], parameters: dict[str, object],
                  sizes: tuple[int, int | None, int | None, int | None, int | None], seed: int,
                  q0: float, tolerance: float | None, rho0: object,
                  flags: tuple[bool, bool, bool, bool], fmt: str) -> None:
    """Blocks with ``Attn``: the token kernel of one sequence, derived against measured."""
    every = flags[0]
    inits, activations, norms, blocks_, branches = choices
    depth, width, heads, seeds, batch = sizes
    _token_options(transformers, everything, bool(blocks_ or norms), batch, flags)
    if "numpy" not in sys.modules:  # one BLAS thread: see _check_kernel
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from derive.commands.check_tokens import (
        TokenSettings,
        compared,
        json_report,
        text_report,
        token_configs,
    )
    from derive.inputs.parameters import symbol_values
    from derive.simulation.token_check import DEFAULTS

    run = TokenSettings(
        depth, int(DEFAULTS["width"]) if width is None else width,
        int(DEFAULTS["heads"]) if heads is None else heads,
        int(DEFAULTS["seeds"]) if seeds is None else seeds, seed, q0,
        "1/2" if rho0 is None else str(rho0),
        float(DEFAULTS["tolerance"]) if tolerance is None else tolerance,
        float(DEFAULTS["relative"]))
    configs = token_configs(transformers, inits, activations, blocks_, branches,
                            symbol_values(settings), parameters)
    run.check_resources(configs)
    rows = compared(configs, run)
    if fmt == "json":
        click.echo(json_report(rows, configs, run, every))
    else:
        click.echo(text_report(rows, configs, run, every))
    if any(not r.ok for r in rows):
        raise click.exceptions.Exit(1)
