"""``derive variance``: how E[h_k^2] and the gradients evolve with depth."""

from __future__ import annotations

import re

import click

from derive.choices import ACTIVATIONS, BRANCHES, INITS, NORMS

EPILOG = """\b
Examples:
  derive variance --init he                      q_K = 2^K q_0: doubles per block (UDL 11.3)
  derive variance --init he --norm pre           q_K = q_0 + K: linear growth
  derive variance --activation tanh --depth 50   no closed form: iterated numerically
  derive variance --branch mlp --mlp-ratio 4 --dropout 0.1 --format json
  derive variance --init he --compare            every norm placement, both directions
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

    from derive.printing import text

    if isinstance(expr, sympy.Piecewise):
        first, rest = expr.args[0], expr.args[-1]
        return f"{text(first.expr)} if {text(first.cond.lhs)} = {text(first.cond.rhs)}, " \
               f"else {text(rest.expr)}"
    return text(expr)


def _eq_text(eq: object) -> str:
    return f"{_text(eq.lhs)} = {_text(eq.rhs)}"  # type: ignore[attr-defined]


def _value_name(direction: str, depth: int) -> str:
    return f"q_{depth}" if direction == "forward" else f"d_0/d_{depth}"


def _single_text(analysis: object, recursions: list, depth: int, q0: object) -> str:
    config = analysis.config  # type: ignore[attr-defined]
    lines = [f"{config.label}: mean field, infinite width, q₀ = {_text(q0)}"]
    heads = {"forward": "forward: qₖ = E[hₖ²] per unit",
             "backward": "backward: dₖ = E[(∂L/∂hₖ)²] per unit, d_K = 1"}
    for r in recursions:
        closed = _eq_text(r.closed_form) if r.closed_form is not None else (
            "none: " + _plain(r.reason))
        rows = [("recurrence", _eq_text(r.recurrence)), ("closed form", closed),
                ("growth", r.growth),
                (f"at K = {depth}",
                 f"{_value_name(r.direction, depth)} = {_text(r.at(depth, q0))}")]
        lines += ["", heads[r.direction]]
        lines += [f"  {name:<12} {value}" for name, value in rows]
    return "\n".join(lines)


def _single_latex(recursions: list, depth: int, q0: object, markdown: bool) -> str:
    from derive.printing import latex

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
    from derive.printing import latex

    def closed(row: dict, tex: bool) -> str:
        if row["closed_form"] is None:
            return "no closed form (iterated)"
        eq = row["closed_form"]
        return f"${latex(eq.lhs)} = {latex(eq.rhs)}$" if tex else _eq_text(eq)

    head = ("norm", "direction", "closed form", "growth", f"value at K = {depth}")
    if fmt == "latex":
        body = [" & ".join((r["norm"], r["direction"], closed(r, True), r["growth"],
                            f"${latex(r['value'])}$")) + " \\\\" for r in rows]
        return "\n".join(["% " + title, "\\begin{tabular}{lllll}", " & ".join(head) + " \\\\",
                          "\\hline", *body, "\\end{tabular}"])
    table = [(r["norm"], r["direction"], closed(r, fmt == "markdown"), r["growth"],
              _text(r["value"])) for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join([f"**{title}**", "", *lines,
                          *("| " + " | ".join(t) + " |" for t in table)])
    table = [(a, b, c if len(c) <= WIDE else f"(long: derive variance --norm {a})",
              d.split(" (")[0], e) for a, b, c, d, e in table]
    widths = [max(len(x) for x in col) for col in zip(head, *table, strict=True)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [title, fmt_row.format(*head).rstrip(), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [fmt_row.format(*t).rstrip() for t in table])


@click.command(epilog=EPILOG)
@click.option("--init", type=click.Choice(INITS), default="xavier", show_default=True,
              help="Weight initialization (variance 2/(fan_in+fan_out), 2/fan_in, 1/fan_in).")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="relu", show_default=True,
              help="phi; gelu is exact: z Phi(z).")
@click.option("--norm", type=click.Choice(NORMS), default="none", show_default=True,
              help="LayerNorm placement: none, pre (before the branch), post (after the sum).")
@click.option("--branch", type=click.Choice(BRANCHES), default="single", show_default=True,
              help="single: W phi(h); mlp: W2 phi(W1 h).")
@click.option("--mlp-ratio", default="1", show_default=True, metavar="R",
              help="Hidden width / n (mlp).")
@click.option("--dropout", default="0", show_default=True, metavar="P",
              help="Dropout rate p in [0, 1).")
@click.option("--gamma", default="1", show_default=True, metavar="G",
              help="LayerNorm gain: a number or a symbol name.")
@click.option("--sigma-w2", default=None, metavar="S",
              help="Weight variance for every matrix (overrides --init).")
@click.option("--negative-slope", default="1/100", show_default=True, metavar="A",
              help="leaky_relu slope.")
@click.option("--q0", default="1", show_default=True, metavar="Q0",
              help="E[x^2]: a number or a symbol name.")
@click.option("--depth", type=int, default=10, show_default=True, metavar="K",
              help="Depth K for the values.")
@click.option("--direction", type=click.Choice(("forward", "backward", "both")), default="both",
              show_default=True, help="forward q_k, backward d_k (gradients), or both.")
@click.option("--format", "fmt", type=click.Choice(("text", "latex", "markdown", "json")),
              default="text", show_default=True,
              help="json carries the LaTeX formulas and the profile q_0..q_K, d_k/d_K.")
@click.option("--compare", is_flag=True, help="One table of every norm placement, both directions.")
def variance(init: str, activation: str, norm: str, branch: str, mlp_ratio: str, dropout: str,
             gamma: str, sigma_w2: str | None, negative_slope: str, q0: str, depth: int,
             direction: str, fmt: str, compare: bool) -> None:
    """How E[h_k^2] (forward) and E[(dL/dh_k)^2] (backward) evolve with depth.

    Prints the recurrence of one residual block, its closed form in the depth
    K (or why there is none), the growth law and the value at --depth, under
    the mean-field, infinite-width model at initialization.
    """
    import json

    from derive.model import check_depth, exact
    from derive.variance_analysis import compare as compare_rows
    from derive.variance_analysis import variance as analyse

    options = {"mlp_ratio": exact(mlp_ratio, "mlp_ratio"), "dropout": exact(dropout, "dropout"),
               "gamma": exact(gamma, "gamma"), "negative_slope": exact(negative_slope,
                                                                       "negative_slope"),
               "sigma_w2": None if sigma_w2 is None else exact(sigma_w2, "sigma_w2")}
    depth = check_depth(depth, minimum=0)
    q0_value = exact(q0, "q0")
    if compare:
        rows = compare_rows(init, activation, branch, depth=depth, q0=q0_value, **options)
        if direction != "both":
            rows = [r for r in rows if r["direction"] == direction]
        if fmt == "json":
            from derive.printing import latex

            data = [{"norm": r["norm"], "direction": r["direction"],
                     "recurrence": latex(r["recurrence"]),
                     "closed_form": None if r["closed_form"] is None else latex(r["closed_form"]),
                     "reason": r["reason"], "growth": r["growth"], "value": str(r["value"])}
                    for r in rows]
            click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
            return
        title = f"{init}/{activation}/{branch}: every norm placement, q₀ = {q0_value}"
        click.echo(_compare_output(rows, fmt, depth, title))
        return
    analysis = analyse(init, activation, norm, branch, **options)
    wanted = ("forward", "backward") if direction == "both" else (direction,)
    recursions = [getattr(analysis, name) for name in wanted]
    if fmt == "json":
        data = analysis.to_dict(depth, q0_value)
        for name in ("forward", "backward"):
            if name not in wanted:
                del data[name]
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    elif fmt == "text":
        click.echo(_single_text(analysis, recursions, depth, q0_value))
    else:
        click.echo(_single_latex(recursions, depth, q0_value, markdown=fmt == "markdown"))
