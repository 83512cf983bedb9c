"""``derive variance``: how E[h_k^2] and the gradients evolve with depth."""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

import click

from derive.commands.options import (
    Exact,
    Integer,
    parameter_options,
    presets_epilog,
    symbol_settings,
)
from derive.errors import DeriveError
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS

if TYPE_CHECKING:  # pragma: no cover
    import sympy

    from derive.recursions.analysis import VarianceAnalysis

EPILOG = """\b
Examples:
  derive variance --init he                      q_K = 2^K q_0: doubles per block (UDL 11.3)
  derive variance --init he --norm pre           q_K = q_0 + K: linear growth
  derive variance --activation tanh --depth 50   no closed form: iterated numerically
  derive variance --branch mlp --mlp-ratio 4 --dropout 0.1 --format json
  derive variance --init he --block rescaled     (x + F(x))/sqrt(2) keeps q_K = q_0 (UDL 11.3)
  derive variance --init he --block 'x + alpha*F(x)'   q_K = (1 + alpha^2)^K q_0
  derive variance --init he --compare            every preset, both directions
"""

#: Closed forms longer than this are not shown in the text comparison table.
WIDE = 60

_PROSE = {
    "\\mapsto": "↦", "\\sim": "~", "\\gamma": "γ", "\\phi": "φ", "\\to": "→", "\\infty": "∞",
    "q_{k-1}": "qₖ₋₁", "q_k": "qₖ", "d_k": "dₖ", "\\partial": "∂",
}


def _plain(prose: str | None) -> str:
    """Prose with inline LaTeX, made readable in a terminal."""
    out = prose or ""
    for tex, uni in _PROSE.items():
        out = out.replace(tex, uni)
    return re.sub(r"[${}]", "", out)


def _text(expr: object) -> str:
    """One-line text of a formula; the post-LN Piecewise reads 'a if K = 0, else b'."""
    import sympy

    from derive.derivation.printing import text

    if isinstance(expr, sympy.Piecewise):
        first, rest = expr.args[0], expr.args[-1]
        return f"{text(first.expr)} if {text(first.cond.lhs)} = {text(first.cond.rhs)}, " \
               f"else {text(rest.expr)}"
    return text(expr)


def _eq_text(eq: object) -> str:
    return f"{_text(eq.lhs)} = {_text(eq.rhs)}"  # type: ignore[attr-defined]


def _value_name(direction: str, depth: int) -> str:
    return f"q_{depth}" if direction == "forward" else f"d_0/d_{depth}"


def _value_text(value: object) -> str:
    """An exact value, with its decimal where it is irrational; long ones as the decimal."""
    import sympy

    if isinstance(value, str):
        return value
    if not isinstance(value, sympy.Expr) or not value.is_number or value.is_Rational:
        return _text(value)
    number = float(value)  # past a double's range: SymPy's own six digits, 3.98028e+6020
    decimal = f"{number:.6g}" if math.isfinite(number) else str(sympy.Float(value, 6))
    if isinstance(value, sympy.Float):
        return decimal
    shown = "" if _printed_atoms(value) > 40 else _text(value)  # longer than 40 characters
    if shown and len(shown) <= 40:
        return f"{shown} ≈ {decimal}"
    return f"≈ {decimal} (exact: --format json)"


def _printed_atoms(expr: object) -> int:
    """How many atoms the text of ``expr`` prints, each in at least one character (the
    exponents of powers aside, which may print as a root sign): a lower bound on its
    length that needs no printing."""
    args = getattr(expr, "args", ())
    if not args:
        return 1
    if getattr(expr, "is_Pow", False):
        return _printed_atoms(args[0])
    return sum(_printed_atoms(a) for a in args)


def _equals(name: str, value: str) -> str:
    return f"{name} {value}" if value.startswith("≈") else f"{name} = {value}"


def _single_text(analysis: object, recursions: list, depth: int, q0: object) -> str:
    config = analysis.config  # type: ignore[attr-defined]
    block = config.block
    source = f" ({block.source})" if block.source else ""
    lines = [f"{config.label}: mean field, infinite width, q₀ = {_text(q0)}",
             f"block: B(x) = {block.text}{source}"]
    cross = analysis.cross  # type: ignore[attr-defined]
    if cross is not None:
        closed = _eq_text(cross.closed_form) if cross.closed_form is not None else "iterated"
        lines.append(f"batch covariance (what BatchNorm sees): {_eq_text(cross.recurrence)}, "
                     f"c₀ = 0; {closed}")
    heads = {"forward": "forward: qₖ = E[hₖ²] per unit",
             "backward": "backward: dₖ = E[(∂L/∂hₖ)²] per unit, d_K = 1"}
    for r in recursions:
        closed = _eq_text(r.closed_form) if r.closed_form is not None else (
            "none: " + _plain(r.reason))
        rows = [("recurrence", _eq_text(r.recurrence)), ("closed form", closed),
                ("growth", r.growth),
                (f"at K = {depth}", _equals(_value_name(r.direction, depth),
                                            _value_text(r.at(depth, q0))))]
        if r.direction == "backward":
            rows.append(("spectrum", "d₀/d_K is the mean squared singular value of ∂y/∂x; "
                         "each block's factor, that of ∂hₖ/∂hₖ₋₁"))
        lines += ["", heads[r.direction]]
        lines += [f"  {name:<12} {value}" for name, value in rows]
    return "\n".join(lines)


def _weights_text(analysis: object, depth: int, q0: object) -> str:
    """The weight-gradient section: closed form, the last block's growth, the profile."""
    weights = analysis.weights  # type: ignore[attr-defined]
    config = analysis.config  # type: ignore[attr-defined]
    target = config.block.last_weight(config)
    loss = "L = ⟨g, LN(h_K)⟩ (final LayerNorm)" if weights.final_norm else "L = ⟨g, h_K⟩"
    closed = weights.closed_form
    rows = [("closed form", "none (iterated)" if closed is None else _eq_text(closed))]
    if weights.last is not None:
        rows.append(("last block", f"{_eq_text(weights.last)}: {weights.growth}"))
    values = ", ".join(_value_text(v).split(" ≈ ")[-1].lstrip("≈ ")
                       for v in weights.profile(depth, q0))
    rows.append((f"k = 1..{depth}", values))
    head = (f"weight gradients: wₖ = E[(∂L/∂W)²] per entry of block k's last matrix "
            f"{target.text() if target is not None else ''}; {loss}")
    return "\n".join(["", "", head, *(f"  {name:<12} {value}" for name, value in rows)])


def _single_latex(recursions: list, depth: int, q0: object, markdown: bool) -> str:
    from derive.derivation.printing import latex

    out = []
    for r in recursions:
        eqs = [latex(r.recurrence.lhs) + " &= " + latex(r.recurrence.rhs)]
        if r.closed_form is not None:
            eqs.append(latex(r.closed_form.lhs) + " &= " + latex(r.closed_form.rhs))
        body = "\\begin{aligned}\n" + " \\\\\n".join(eqs) + "\n\\end{aligned}"
        value = latex(r.at(depth, q0))
        if markdown:
            out.append(f"### {r.direction.capitalize()}\n\n$$\n{body}\n$$\n")
            if r.closed_form is None:
                out.append(f"- no closed form: {r.reason}")
            out.append(f"- growth: {r.growth}\n- at $K = {depth}$, $q_0 = {q0}$: ${value}$\n")
        else:
            out.append(f"% {r.config.label} {r.direction}\n\\[\n{body}\n\\]")
            if r.closed_form is None:
                out.append(f"% no closed form: {r.reason}")
            out.append(f"% growth: {r.growth}; at K = {depth}, q_0 = {q0}: {value}")
    return "\n".join(out).rstrip()


def _compare_output(rows: list, fmt: str, depth: int, title: str) -> str:
    from derive.derivation.printing import latex

    def closed(row: dict, tex: bool) -> str:
        if row["closed_form"] is None:
            return "no closed form (iterated)"
        eq = row["closed_form"]
        return f"${latex(eq.lhs)} = {latex(eq.rhs)}$" if tex else _eq_text(eq)

    head = ("block", "direction", "closed form", "growth", f"value at K = {depth}")
    if fmt == "latex":
        def cell(value: object) -> str:
            return value if isinstance(value, str) else f"${latex(value)}$"

        body = [" & ".join((r["norm"], r["direction"], closed(r, True), r["growth"],
                            cell(r["value"]))) + " \\\\" for r in rows]
        return "\n".join(["% " + title, "\\begin{tabular}{lllll}", " & ".join(head) + " \\\\",
                          "\\hline", *body, "\\end{tabular}"])
    table = [(r["norm"], r["direction"], closed(r, fmt == "markdown"), r["growth"],
              _value_text(r["value"]) if fmt == "text" or isinstance(r["value"], str)
              else _text(r["value"])) for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join([f"**{title}**", "", *lines,
                          *("| " + " | ".join(t) + " |" for t in table)])
    table = [(a, b, c if len(c) <= WIDE else f"(long: derive variance --block {a})",
              d.split(" (")[0], e) for a, b, c, d, e in table]
    widths = [max(len(x) for x in col) for col in zip(head, *table, strict=True)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [title, fmt_row.format(*head).rstrip(), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [fmt_row.format(*t).rstrip() for t in table])


def _q0(text: str) -> sympy.Expr:
    """--q0 as an exact value: a number > 0 or a symbol name."""
    from derive.inputs.numbers import positive

    return positive(text, "q0", shown="--q0")


def _compare_report(init: str, activation: str, branch: str, block_spec: str | None,
                    options: dict[str, sympy.Expr | None], depth: int, q0: sympy.Expr,
                    direction: str, fmt: str) -> str:
    """--compare: every preset (and the --block) in one table, or a JSON list of rows."""
    from derive.blocks.presets import PRESETS
    from derive.recursions.analysis import compare as compare_rows

    specs = [*PRESETS] + ([block_spec] if block_spec else [])
    rows = compare_rows(init, activation, branch, depth=depth, q0=q0, blocks=specs, **options)
    if direction != "both":
        rows = [r for r in rows if r["direction"] == direction]
    if fmt == "json":
        return _compare_json(rows)
    title = f"{init}/{activation}/{branch}: every preset, q₀ = {q0}"
    return _compare_output(rows, fmt, depth, title)


def _compare_json(rows: list) -> str:
    """The rows of --compare as JSON, the formulas in LaTeX."""
    from derive.derivation.printing import latex

    data = [{"norm": r["norm"], "block": r["block"], "direction": r["direction"],
             "recurrence": latex(r["recurrence"]),
             "closed_form": None if r["closed_form"] is None else latex(r["closed_form"]),
             "reason": r["reason"], "growth": r["growth"], "value": str(r["value"])}
            for r in rows]
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def _single_report(analysis: VarianceAnalysis, depth: int, q0: sympy.Expr, direction: str,
                   fmt: str, weights: bool) -> str:
    """One block's recurrences in the wanted directions (and its weight gradients), in
    one format."""
    wanted = ("forward", "backward") if direction == "both" else (direction,)
    recursions = [getattr(analysis, name) for name in wanted]
    if fmt == "json":
        data = analysis.to_dict(depth, q0)
        for name in ("forward", "backward"):
            if name not in wanted:
                del data[name]
        if weights:
            data["weights"] = analysis.weights.to_dict(depth, q0)
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    if fmt == "text":
        text = _single_text(analysis, recursions, depth, q0)
        return text + (_weights_text(analysis, depth, q0) if weights else "")
    return _single_latex(recursions, depth, q0, markdown=fmt == "markdown")


@click.command(epilog=presets_epilog(EPILOG))
@click.option("--init", type=click.Choice(INITS), default="xavier", show_default=True,
              help="Weight initialization (variance 2/(fan_in+fan_out), 2/fan_in, 1/fan_in).")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="relu", show_default=True,
              help="phi; gelu is exact: z Phi(z).")
@click.option("--norm", type=click.Choice(NORMS), default=None,
              help="LayerNorm placement, a preset: none x + F(x), pre x + F(LN(x)), "
                   "post LN(x + F(x)). [default: none]")
@click.option("--block", "block_spec", default=None, metavar="EXPR",
              help="The block: a preset (below) or an expression in x, such as "
                   "'(x + F(x))/sqrt(2)' or 'x + alpha*F(LN(x))'.")
@symbol_settings()
@click.option("--branch", type=click.Choice(BRANCHES), default="single", show_default=True,
              help="F: single W phi(h); mlp W2 phi(W1 h).")
@parameter_options
@click.option("--q0", type=Exact(), default="1", show_default=True, metavar="Q0",
              help="E[x^2]: a number or a symbol name.")
@click.option("--depth", type=Integer(0), default=10, show_default=True, metavar="K",
              help="Depth K for the values.")
@click.option("--rho0", type=Exact(symbols=False), default=None, metavar="RHO0",
              help="A block with Attn: the tokens' initial correlation. [default: 1/2]")
@click.option("--direction", type=click.Choice(("forward", "backward", "both")), default="both",
              show_default=True, help="forward q_k, backward d_k (gradients), or both.")
@click.option("--format", "fmt", type=click.Choice(("text", "latex", "markdown", "json")),
              default="text", show_default=True,
              help="json carries the block, the LaTeX formulas and the profile q_0..q_K, d_k/d_K.")
@click.option("--compare", is_flag=True,
              help="One table of every preset (and --block), both directions.")
@click.option("--weights", is_flag=True,
              help="Also E[(dL/dW)^2] of each block's last weight matrix, k = 1..K.")
@click.option("--final-norm", is_flag=True,
              help="A final LayerNorm after the last block (scales the gradients).")
def variance(init: str, activation: str, norm: str | None, block_spec: str | None,
             settings: tuple[str, ...], branch: str, q0: str, depth: int,
             rho0: sympy.Expr | None, direction: str, fmt: str, compare: bool, weights: bool,
             final_norm: bool,
             **parameters: str | None) -> None:
    """How E[h_k^2] (forward) and E[(dL/dh_k)^2] (backward) evolve with depth.

    Prints the recurrence of one residual block, its closed form in the depth
    K (or why there is none), the growth law and the value at --depth, under
    the mean-field, infinite-width model at initialization.
    """
    from derive.inputs.numbers import check_depth
    from derive.inputs.parameters import checked, symbol_values
    from derive.recursions.analysis import one_point
    from derive.recursions.analysis import variance as analyse
    from derive.recursions.weight_gradients import MAX_LISTED

    if norm is not None and block_spec is not None:
        raise click.UsageError("--norm and --block both name the block: give one of them")
    options = {name: None if value is None else checked(name, value)
               for name, value in parameters.items()}
    values = symbol_values(settings)
    depth = check_depth(depth, minimum=0)
    q0_value = _q0(q0)
    if weights and depth > MAX_LISTED:
        raise DeriveError(f"--weights lists w_k for every block k = 1..K: --depth must be at "
                          f"most {MAX_LISTED} with it, got {depth}")
    if compare:
        click.echo(_compare_report(init, activation, branch, block_spec, options, depth,
                                   q0_value, direction, fmt))
        return
    from derive.blocks.block import block as make_block

    if block_spec is not None and make_block(block_spec).has_attention:
        from derive.commands.token_report import token_report

        tokens = analyse(init, activation, branch=branch, block=block_spec, values=values,
                         final_norm=final_norm, q0=q0_value, rho0=rho0,
                         **options)  # type: ignore[arg-type]
        click.echo(token_report(tokens, depth, direction, fmt, weights))  # type: ignore[arg-type]
        return
    if rho0 is not None:
        raise DeriveError("--rho0 sets the tokens' correlation of a block with Attn; "
                          f"{block_spec or norm or 'none'} has none")
    analysis = one_point(analyse(init, activation, norm or "none", branch, block=block_spec,
                                 values=values, final_norm=final_norm, **options))
    click.echo(_single_report(analysis, depth, q0_value, direction, fmt, weights))
