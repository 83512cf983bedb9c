"""`derive paths --block EXPR` and the variance options: the path sum of any block, and
the table of path counts and gradient shares by length.

The plain block's expansion stays in :mod:`derive.commands.paths` (no SymPy);
what is here imports the block language.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from derive.errors import DeriveError
from derive.pathsums.limits import Wrt

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.block import Block
    from derive.pathsums.by_length import LengthShares, Share


def parse_span(value: str | None) -> tuple[int, int] | None:
    """``LO..HI`` (``--span``) as two integers.

    >>> parse_span("5..17"), parse_span(None)
    ((5, 17), None)
    """
    if value is None:
        return None
    low, sep, high = value.partition("..")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        raise DeriveError(f"--span takes LO..HI, two path lengths such as 5..17, "
                          f"got {value!r}") from None


def expansion(depth: int, wrt: Wrt, spec: Block, fmt: str, force: bool) -> Iterator[str]:
    """The expanded sum of a block's path sum in ``fmt``, streamed."""
    from derive.pathsums.block_paths import BlockPathSum
    from derive.pathsums.notation import gradient_latex, gradient_text

    s = BlockPathSum(depth, wrt, spec, force)
    s.check_size()
    summary = (f"{s.count} terms ({s.radix}^{len(s.blocks)}), block B(x) = {spec.text}: one "
               "term per choice of a term of each later block's Jacobian")
    if len(spec.sublayers) > 1:
        from derive.pathsums.layer_factors import layer_factor

        summary += (f"; each layer k contributes {layer_factor(spec)[0]}, the later "
                    "sublayer's factor on the left (the chain rule)")
    if fmt == "text":
        yield gradient_text(wrt) + " = "
        yield from s.iter_chunks("text")
        yield "\n" + summary + "\n"
    elif fmt == "json":
        yield (f'{{"depth": {depth}, "wrt": {json.dumps(wrt.value)}, "block": '
               f'{json.dumps(spec.text)}, "count": {s.count}, "blocks": {list(s.blocks)}, '
               '"choices": [')
        batch: list[str] = []
        for index, choice in enumerate(s):  # one term of each later block's Jacobian
            batch.append(str(list(choice)))
            if len(batch) == 4096:
                yield (", " if index >= 4096 else "") + ", ".join(batch)
                batch = []
        if batch:
            yield (", " if s.count > len(batch) else "") + ", ".join(batch)
        yield f'], "latex": {json.dumps(gradient_latex(wrt) + " = ")[:-1]}'
        for chunk in s.iter_chunks("latex"):
            yield json.dumps(chunk)[1:-1]
        yield '", "text": ' + json.dumps(gradient_text(wrt) + " = ", ensure_ascii=False)[:-1]
        for chunk in s.iter_chunks("text"):
            yield json.dumps(chunk, ensure_ascii=False)[1:-1]
        yield '"}\n'
    else:
        open_, close = (("\\begin{align*}\n", "\n\\end{align*}\n") if fmt == "latex"
                        else ("$$\n\\begin{aligned}\n", "\n\\end{aligned}\n$$\n"))
        yield (f"% {summary}\n" if fmt == "latex" else "") + open_
        yield gradient_latex(wrt) + " &= "
        for chunk in s.iter_chunks("latex"):
            yield chunk.replace(" + ", " \\\\\n&\\quad + ")
        yield close + ("" if fmt == "latex" else f"\n{summary}.\n")


def count_line(depth: int, wrt: Wrt, spec: Block, fmt: str) -> str:
    """The number of terms of a block's path sum."""
    from derive.pathsums.block_paths import BlockPathSum

    s = BlockPathSum(depth, wrt, spec)
    if fmt == "json":
        return json.dumps({"depth": depth, "wrt": wrt.value, "block": spec.text, "count": s.count,
                           "radix": s.radix}) + "\n"
    return f"{s.count}\n" if fmt == "text" else f"${s.radix}^{{{len(s.blocks)}}} = {s.count}$\n"


def _percent(value: Share) -> str:
    if isinstance(value, float) or value.is_number:
        number = float(value)
        return "0%" if number == 0 else f"{100 * number:.4g}%"
    return str(value)


def _json_value(value: Share) -> float | str:
    if isinstance(value, float):
        return value
    return float(value) if value.is_number else str(value)


def _count_text(count: int) -> str:
    if count < 10**15:
        return str(count)
    from derive.pathsums.notation import format_log10

    return format_log10(math.log10(count), 4)


#: The span asked for and its (share of paths, share of gradient).
_Window = tuple[tuple[int, int], tuple[float, "Share"]]
_HEAD = ("length", "count", "share of paths", "share of gradient")


def length_table(gradients: LengthShares, fmt: str, span: tuple[int, int] | None,
                 table: bool = True) -> Iterator[str]:
    """The lengths' counts, shares of paths and shares of gradient, and what the block
    does to the effective path length."""
    window = None if span is None else (span, gradients.window(*span))
    if fmt == "json":
        yield json.dumps(_length_data(gradients, window, table), ensure_ascii=False) + "\n"
        return
    rows = _length_rows(gradients) if table else []
    lines = [*_table_lines(_title(gradients), rows, fmt),
             *_summary_lines(gradients, window, "% " if fmt == "latex" else "")]
    yield "\n".join(lines) + "\n"


def _length_data(g: LengthShares, window: _Window | None, table: bool) -> dict[str, object]:
    """Everything the table says, as JSON data."""
    from derive.derivation.printing import text

    closed, block = g.closed_form, g.config.block
    data: dict[str, object] = {
        "depth": g.depth, "wrt": g.wrt.value, "config": g.config.label, "q0": str(g.q0),
        "block": {"name": block.name, "expression": block.text, "source": block.source},
        "exact": g.exact, "path_mean": g.path_mean, "path_spread": g.path_spread,
        "mean": _json_value(g.mean), "spread": _json_value(g.spread),
        "closed_form": None if closed is None else {"mean": text(closed[0]),
                                                    "variance": text(closed[1])},
        "effect": g.effect(),
    }
    if table:
        data["lengths"] = [{"length": r.length, "count": r.count, "path_share": r.path_share,
                            "gradient_share": _json_value(r.gradient_share)} for r in g.rows]
    if window is not None:
        (low, high), (paths, gradient) = window
        data["span"] = {"low": low, "high": high, "path_share": paths,
                        "gradient_share": _json_value(gradient)}
    data.update(g.report_fields())
    return data


def _title(g: LengthShares) -> str:
    return (f"{g.wrt.gradient}, {g.depth} blocks of B(x) = {g.config.block.text} "
            f"({g.config.label}), q0 = {g.q0}{g.setting}: mean field, infinite width, "
            "gradient independence")


def _length_rows(g: LengthShares) -> list[tuple[str, str, str, str]]:
    """Each length's row: the length, the count, the shares of paths and of gradient."""
    return [(str(r.length), _count_text(r.count), _percent(r.path_share),
             _percent(r.gradient_share)) for r in g.rows]


def _table_lines(title: str, rows: list[tuple[str, str, str, str]], fmt: str) -> list[str]:
    """The title and the table in ``fmt``: aligned columns of text, Markdown or a LaTeX
    tabular (only text keeps the title without a table)."""
    if fmt == "text":
        if not rows:
            return [title]
        widths = [max(len(x) for x in col) for col in zip(_HEAD, *rows, strict=True)]
        return [title, *("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                         for r in (_HEAD, *rows))]
    if not rows:
        return []
    if fmt == "markdown":
        return [f"**{title}**", "", "| " + " | ".join(_HEAD) + " |", "| ---: " * 4 + "|",
                *("| " + " | ".join(r) + " |" for r in rows)]
    return [f"% {title}", "\\begin{tabular}{rrrr}", " & ".join(_HEAD) + " \\\\", "\\hline",
            *(" & ".join(c.replace("%", "\\%") for c in r) + " \\\\" for r in rows),
            "\\end{tabular}"]


def _summary_lines(g: LengthShares, window: _Window | None, prefix: str) -> list[str]:
    """The mean lengths, their closed form, the span's shares and the block's effect, each
    line after ``prefix`` (a LaTeX comment sign or nothing)."""
    import sympy

    from derive.derivation.printing import text

    mean = f"{g.mean:.4g} ± {g.spread:.3g}" if g.numeric else text(g.mean)
    lines = [f"{prefix}mean length: {g.path_mean:.4g} ± {g.path_spread:.3g} over the paths, "
             f"{mean} weighted by gradient"]
    closed = g.closed_form
    if closed is not None:
        harmonic = any(e.has(sympy.harmonic) for e in closed)
        lines.append(f"{prefix}closed form in the depth K: mean {text(closed[0])}, "
                     f"variance {text(closed[1])}"
                     + (", where H(n) = 1 + 1/2 + ⋯ + 1/n and H⁽²⁾(n) = 1 + 1/2² + ⋯ + 1/n²"
                        if harmonic else ""))
    lines.extend(prefix + note for note in g.notes())
    if window is not None:
        (low, high), (paths, gradient) = window
        shown = _percent(gradient) if isinstance(gradient, float) else text(gradient)
        lines.append(f"{prefix}lengths {low}..{high}: {_percent(paths)} of the paths, "
                     f"{shown} of the gradient")
    lines.append(prefix + g.effect())
    return lines


def run(depth: int, wrt: Wrt, fmt: str, count: bool, lengths: bool, force: bool,
        block_spec: str | None, settings: tuple[str, ...], span_text: str | None,
        options: Mapping[str, object]) -> Iterable[str] | None:
    """What ``derive paths`` prints for a block or for gradient shares, streamed; None when
    the plain block's own output (:mod:`derive.commands.paths`) answers it."""
    from derive.blocks.block import block
    from derive.inputs.parameters import symbol_values
    from derive.pathsums.block_paths import is_plain

    spec = block(block_spec or "none")
    values = symbol_values(settings)
    if values:
        spec = spec.substituted(values)
    span = parse_span(span_text)
    if lengths or span is not None:
        names = {"init", "activation", "branch", "q0", "rho0"}
        numbers = {name: value for name, value in options.items()
                   if name not in names and value is not None}
        q0 = 1 if options["q0"] is None else options["q0"]
        gradients: LengthShares
        if spec.has_attention:
            from derive.pathsums.token_paths import token_path_gradients

            gradients = token_path_gradients(
                depth, wrt, block=spec, init=str(options["init"]),
                activation=str(options["activation"]), branch=str(options["branch"]), q0=q0,
                rho0="1/2" if options["rho0"] is None else options["rho0"],
                **numbers)  # type: ignore[arg-type]
        else:
            from derive.pathsums.by_length import path_gradients

            gradients = path_gradients(depth, wrt, block=spec, init=str(options["init"]),
                                       activation=str(options["activation"]),
                                       branch=str(options["branch"]), q0=q0,
                                       exact=None, values=None,  # the --set values are in spec
                                       **numbers)
        return length_table(gradients, fmt, span, table=lengths)
    if is_plain(spec):
        return None
    return [count_line(depth, wrt, spec, fmt)] if count else expansion(depth, wrt, spec, fmt,
                                                                        force)
