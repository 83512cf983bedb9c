"""``derive variance`` for a block with ``Attn``: the token kernel's recursions as text,
LaTeX, Markdown or JSON (:mod:`derive.recursions.token_moments` derives them)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from derive.recursions.token_moments import TokenVarianceAnalysis

#: What each direction is, in a line.
HEADS = {
    "forward": "forward: qₖ = E[hₖ²] per unit of a token, cₖ = E[hₖ(a) hₖ(b)] for two tokens "
               "a ≠ b",
    "backward": "backward: dₖ = E[(∂L/∂hₖ)²] per unit of a token, gₖ the covariance of two "
                "tokens' gradients, d_K = g_K = 1 (one readout for every token)",
}


def _number(value: object) -> str:
    import sympy

    expr = sympy.sympify(value)
    if expr.is_Rational:
        return str(expr)
    return f"{float(expr):.6g}"


def _eq(eq: object) -> str:
    from derive.derivation.printing import text

    return f"{text(eq.lhs)} = {text(eq.rhs)}"  # type: ignore[attr-defined]


def _where(analysis: TokenVarianceAnalysis) -> list[str]:
    from derive.recursions.token_moments import MEANINGS

    named = analysis.named
    if not named:
        return []
    parts = [f"{name}(q, c) = {MEANINGS[name]}" for name in named if name in MEANINGS]
    parts += [f"{name}(q, c) = E[φ{'′' if name.startswith(chr(954) + chr(39)) else ''}(u) "
              f"φ{'′' if name.startswith(chr(954) + chr(39)) else ''}(v)] for φ = "
              f"{name.split('_', 1)[1]}" for name in named if name not in MEANINGS]
    return [f"where: {'; '.join(parts)}, at the input kernel (q, c) of the node, evaluated "
            "numerically"]


def _value_lines(analysis: TokenVarianceAnalysis, direction: str, depth: int) -> str:
    if direction == "forward":
        q_at, c_at = analysis.forward.at(depth)
        return f"q_{depth} = {_number(q_at)}, c_{depth} = {_number(c_at)}"
    return f"d₀/d_{depth} = {_number(analysis.backward.at(depth))}"


def _closed_text(analysis: TokenVarianceAnalysis, direction: str) -> str:
    if direction == "forward":
        found = [_eq(eq) for eq in analysis.forward.closed_form if eq is not None]
        reason = analysis.forward.reason
    else:
        closed = analysis.backward.closed_form
        found = [] if closed is None else [_eq(closed)]
        reason = analysis.backward.reason
    shown = "; ".join(found)
    if reason is None:
        return shown
    return f"{shown}; {reason}" if shown else f"none: {reason}"


def text_report(analysis: TokenVarianceAnalysis, depth: int, directions: tuple[str, ...],
                weights: bool) -> str:
    """The terminal report: recurrences, closed forms, growth, values (and weights)."""
    config = analysis.config
    block = config.block
    source = f" ({block.source})" if block.source else ""
    lines = [f"{config.label}: mean field, infinite width, q₀ = {_number(analysis.q0)}, "
             f"ρ₀ = {_number(analysis.rho0)}, n = {config.tokens} tokens, {config.attention} "
             "attention",
             f"block: B(x) = {block.text}{source}",
             "tokens: Attn mixes the tokens, so qₖ depends on cₖ₋₁, the covariance of two "
             "tokens: the token kernel (q, c) is followed through depth (as derive kernel)",
             *_where(analysis)]
    if len(block.sublayers) > 1:
        lines.append("sublayers: q′ₖ, c′ₖ (d′ₖ, g′ₖ) after the first of layer k's "
                     f"{len(block.sublayers)} sublayers" + (", q″ₖ after the second"
                                                           if len(block.sublayers) > 2 else ""))
    for direction in directions:
        recursion = getattr(analysis, direction)
        recurrence = [_eq(eq) for eq in recursion.recurrence]
        rows = [("recurrence", recurrence[0]), *(("", r) for r in recurrence[1:]),
                ("closed form", _closed_text(analysis, direction)),
                ("growth", recursion.growth),
                (f"at K = {depth}", _value_lines(analysis, direction, depth))]
        lines += ["", HEADS[direction], *(f"  {name:<12} {value}" for name, value in rows)]
    if weights:
        lines += ["", *weights_lines(analysis, depth)]
    return "\n".join(lines)


def weights_lines(analysis: TokenVarianceAnalysis, depth: int) -> list[str]:
    """The weight-gradient section: each sublayer's last matrix at layers k = 1..K."""
    grads = analysis.weights
    loss = ("L = Σᵢ ⟨gᵢ, LN(h_K)ᵢ⟩ (final LayerNorm)" if analysis.final_norm
            else "L = Σᵢ ⟨gᵢ, h_K,ᵢ⟩")
    out = ["weight gradients: wₖ = E[(∂L/∂W)²] per entry of each sublayer's last matrix at "
           f"layer k, {loss} over the n tokens: wₖ = n d_W A_q + n(n - 1) g_W A_c "
           "(gradient independence; d_W, g_W at W's output, A_q, A_c the kernel of its input)"]
    for target, row in zip(grads.targets, grads.rows(depth), strict=True):
        out += [f"  {target.name} of {target.sublayer}",
                f"    k = 1..{depth:<5} {', '.join(f'{v:.6g}' for v in row)}",
                f"    last/first  w_{depth}/w_1 = {row[-1] / row[0]:.6g}"]
    return out


def latex_report(analysis: TokenVarianceAnalysis, depth: int, directions: tuple[str, ...],
                 markdown: bool) -> str:
    """The recurrences and closed forms in LaTeX (or Markdown with LaTeX blocks)."""
    from derive.derivation.printing import latex

    out = []
    for direction in directions:
        recursion = getattr(analysis, direction)
        eqs = [latex(eq.lhs) + " &= " + latex(eq.rhs) for eq in recursion.recurrence]
        closed = (recursion.closed_form if direction == "backward"
                  else [eq for eq in recursion.closed_form if eq is not None])
        closed = [closed] if direction == "backward" and closed is not None else (
            [] if closed is None else closed)
        eqs += [latex(eq.lhs) + " &= " + latex(eq.rhs) for eq in closed]
        body = "\\begin{aligned}\n" + " \\\\\n".join(eqs) + "\n\\end{aligned}"
        value = _value_lines(analysis, direction, depth)
        if markdown:
            out.append(f"### {direction.capitalize()}\n\n$$\n{body}\n$$\n")
            if recursion.reason is not None:
                out.append(f"- {recursion.reason}")
            out.append(f"- growth: {recursion.growth}\n- at $K = {depth}$: {value}\n")
        else:
            out.append(f"% {analysis.config.label} {direction} (token kernel)\n\\[\n{body}\n\\]")
            if recursion.reason is not None:
                out.append(f"% {recursion.reason}")
            out.append(f"% growth: {recursion.growth}; at K = {depth}: {value}")
    return "\n".join(out).rstrip()


def token_report(analysis: TokenVarianceAnalysis, depth: int, direction: str, fmt: str,
                 weights: bool) -> str:
    """The report of a block with ``Attn`` in one format."""
    directions = ("forward", "backward") if direction == "both" else (direction,)
    if fmt == "json":
        data = analysis.to_dict(depth, weights)
        for name in ("forward", "backward"):
            if name not in directions:
                del data[name]
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    if fmt == "text":
        return text_report(analysis, depth, directions, weights)
    out = latex_report(analysis, depth, directions, fmt == "markdown")
    return out + ("\n\n" + "\n".join(weights_lines(analysis, depth)) if weights else "")
