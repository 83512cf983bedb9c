"""`derive paths`: the path expansion of dy/df_j, its count and its lengths.

Output streams in large chunks, so a sum of millions of terms never sits in
memory; counts and lengths never enumerate. Imports no SymPy.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import click

from derive.commands.options import Exact, Integer, parameter_options, symbol_settings
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS
from derive.pathsums.limits import Wrt
from derive.pathsums.notation import NOTATIONS

FORMATS = ("text", "latex", "markdown", "json")
#: Bytes gathered before one write to stdout.
_BUFFER = 1 << 20
#: --lengths lists at most this many lengths (the cost grows with the square: 4 s here).
MAX_LENGTHS = 200_001


def _parse_wrt(value: str, depth: int) -> Wrt:
    """``--wrt J|x`` as a :class:`Wrt` (J in 1..depth, or x in any case)."""
    from derive.errors import DeriveError
    from derive.inputs.numbers import integer, shown

    text = value.strip().lower()
    if text == "x":
        return Wrt(0)
    try:
        return Wrt(integer(text, "--wrt", minimum=1, maximum=depth))
    except DeriveError:
        raise DeriveError(
            f"--wrt must be a block index 1..{depth} or 'x', got {shown(value)}") from None


def _write(stream: BinaryIO, pieces: Iterable[str]) -> None:
    """Write ``pieces`` as UTF-8 in chunks of about _BUFFER bytes."""
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= _BUFFER:
            stream.write("".join(buffer).encode())
            buffer, size = [], 0
    stream.write("".join(buffer).encode())
    stream.flush()


def _count_forms(m: int) -> tuple[str, str]:
    """(text, LaTeX) of 2^m: in full when short, else 2^m with its size."""
    from derive.pathsums.notation import format_power_of_two, power_of_two_scientific

    exact = format_power_of_two(m)
    if exact.startswith("2^"):
        approx = power_of_two_scientific(m)
        mantissa, _, exponent = approx.partition("e")
        return f"{exact} ≈ {approx}", f"2^{{{m}}} \\approx {mantissa} \\times 10^{{{exponent}}}"
    return exact, f"2^{{{m}}} = {exact}"


def _json_number(value: str) -> str:
    return value if value.isdigit() else json.dumps(value)


def _stats(depth: int, wrt: Wrt, fmt: str, count: bool, lengths: bool) -> Iterator[str]:
    """The count and/or the length histogram, without enumerating."""
    from derive.pathsums.notation import binomial_row, format_power_of_two

    m = wrt.later(depth)
    text, tex = _count_forms(m)
    if fmt == "json":
        yield f'{{"depth": {depth}, "wrt": {json.dumps(wrt.value)}'
        if count:
            exact = format_power_of_two(m)
            yield f', "count": {_json_number(exact)}, "log2_count": {m}'
        if lengths:
            yield ', "lengths": {'
            for length, value in enumerate(binomial_row(m)):
                yield f'{", " if length else ""}"{length}": {_json_number(value)}'
            yield "}"
        yield "}\n"
        return
    if count:
        yield {"text": text, "latex": tex, "markdown": f"${tex}$"}[fmt] + "\n"
    if not lengths:
        return
    if count:
        yield "\n"
    head, row, foot = {
        "text": ("length  terms\n", "{}  {}\n", ""),
        "latex": ("\\begin{tabular}{rr}\nlength & terms \\\\\n\\hline\n", "{} & {} \\\\\n",
                  "\\end{tabular}\n"),
        "markdown": ("| length | terms |\n| ---: | ---: |\n", "| {} | {} |\n", ""),
    }[fmt]
    yield head
    width = max(len(str(m)), 6) if fmt == "text" else 0
    for length, value in enumerate(binomial_row(m)):
        yield row.format(str(length).rjust(width), value)
    yield foot


def _summary(depth: int, wrt: Wrt) -> str:
    from derive.pathsums.notation import format_int

    j, m = wrt.start, wrt.later(depth)
    n = format_int(1 << m)
    if m == 0:
        return f"1 term (2^0): block {depth} is the last, only the identity path"
    if m == 1:
        return f"2 terms (2^1): the skip path and the branch of block {depth}"
    return f"{n} terms (2^{m}), one path per subset of blocks {j + 1}..{depth}"


def _sum(depth: int, wrt: Wrt, fmt: str, notation: str) -> Iterator[str]:
    """The expanded sum in ``fmt``, streamed."""
    from derive.pathsums import notation as nt
    from derive.pathsums.expansion import iter_terms

    if fmt == "text":
        yield from nt.iter_text_chunks(depth, wrt, notation)
        yield "\n" + _summary(depth, wrt) + "\n"
        return
    if fmt == "json":
        yield (f'{{"depth": {depth}, "wrt": {json.dumps(wrt.value)}, "notation": "{notation}", '
               f'"count": {1 << wrt.later(depth)}, "terms": [')
        yield from _chunked(str(list(t)) for t in iter_terms(depth, wrt))  # JSON arrays
        yield f'], "latex": "{json.dumps(nt.gradient_latex(wrt))[1:-1]} = '
        yield from _chunked(_latex_terms(depth, wrt, notation, escape=True), " + ")
        yield '"}\n'
        return
    rows = nt.iter_latex_lines(iter_terms(depth, wrt), wrt, notation)
    if fmt == "latex":
        long = wrt.later(depth) > 4  # more than 16 terms: may span pages
        yield f"% {_summary(depth, wrt)}\n" + ("{\\allowdisplaybreaks\n" if long else "")
        yield "\\begin{align*}\n"
        yield from _joined(rows)
        yield "\n\\end{align*}\n" + ("}\n" if long else "")
    else:
        yield "$$\n\\begin{aligned}\n"
        yield from _joined(rows)
        yield f"\n\\end{{aligned}}\n$$\n\n{_summary(depth, wrt)}.\n"


def _latex_terms(depth: int, wrt: Wrt, notation: str, escape: bool) -> Iterator[str]:
    """Each term's LaTeX (JSON-escaped if ``escape``), from cached factor pieces."""
    from derive.pathsums.expansion import iter_terms
    from derive.pathsums.notation import factor_latex

    pieces: dict[tuple[int, int], str] = {}
    for term in iter_terms(depth, wrt):
        if not term:
            yield "I"
            continue
        out = []
        for pair in (*itertools.pairwise(term), (term[-1], wrt.start)):
            piece = pieces.get(pair)
            if piece is None:
                piece = factor_latex(*pair, notation)
                piece = pieces[pair] = json.dumps(piece)[1:-1] if escape else piece
            out.append(piece)
        yield " ".join(out)


def _chunked(items: Iterable[str], separator: str = ", ", size: int = 4096) -> Iterator[str]:
    """Join ``items`` with ``separator``, yielding a string per ``size`` items."""
    batch: list[str] = []
    first = True
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield ("" if first else separator) + separator.join(batch)
            batch, first = [], False
    if batch:
        yield ("" if first else separator) + separator.join(batch)


def _joined(rows: Iterable[str]) -> Iterator[str]:
    """Rows of an align environment, separated by ``\\\\`` and a newline."""
    for index, row in enumerate(rows):
        yield row if index == 0 else " \\\\\n" + row


@click.command(
    "paths",
    epilog="""\b
Examples:
  derive paths --depth 4                 the eight terms of dy/df1 (UDL eq. 11.6)
  derive paths --depth 4 --wrt x         the sixteen input-to-output paths
  derive paths --depth 4 --notation jacobian --format latex
  derive paths --depth 6 --format json   terms as lists of block indices
  derive paths --depth 10000 --count --lengths
  derive paths --depth 3 --block 'LN(x + F(x))'    each term carries L_k
  derive paths --depth 54 --wrt x --lengths --block pre --init he
                                         counts and the gradient carried by each length
  derive paths --depth 54 --wrt x --lengths --init he --span 5..17""",
)
@click.option("--depth", type=Integer(1), default=4, show_default=True, metavar="N",
              help="Number of residual blocks N (an integer >= 1).")
@click.option("--wrt", "wrt_text", default="1", show_default=True, metavar="J|x",
              help="Differentiate with respect to f_J's output (1..N) or the input x.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text (Unicode), latex (align*), markdown ($$ aligned $$) or json.")
@click.option("--notation", type=click.Choice(NOTATIONS), default="udl", show_default=True,
              help="udl: the book's df4/df3 fractions; jacobian: J4 J3 J2.")
@click.option("--count", is_flag=True, help="Print only the number of terms, 2^(N-J).")
@click.option("--lengths", is_flag=True,
              help="Print only how many terms have L Jacobian factors (binomial).")
@click.option("--force", is_flag=True, help="Enumerate even more than 2^22 terms.")
@click.option("--block", "block_spec", default=None, metavar="EXPR",
              help="The block: a preset or an expression in x, e.g. 'x + F(LN(x))'; each term "
                   "then carries the block's factors. [default: x + F(x)]")
@symbol_settings()
@click.option("--init", type=click.Choice(INITS), default="xavier", show_default=True,
              help="For the gradient shares (--lengths): weight initialization.")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="relu",
              show_default=True, help="For the gradient shares: phi.")
@click.option("--branch", type=click.Choice(BRANCHES), default="single", show_default=True,
              help="For the gradient shares: F is single W phi(h) or mlp W2 phi(W1 h).")
@parameter_options(defaults=False)
@click.option("--q0", type=Exact(), default=None, metavar="Q0",
              help="E[x^2] (for the gradient shares). [default: 1]")
@click.option("--rho0", type=Exact(symbols=False), default=None, metavar="R",
              help="For the gradient shares of blocks with Attn(.): the correlation rho_0 of two "
                   "tokens of the input sequence, in [-1, 1] (as in derive kernel); the token "
                   "kernel starts at q0 and rho0. [default: 1/2]")
@click.option("--span", default=None, metavar="LO..HI",
              help="The share of paths and of gradient of the lengths LO..HI.")
def paths(depth: int, wrt_text: str, fmt: str, notation: str, count: bool, lengths: bool,
          force: bool, block_spec: str | None, settings: tuple[str, ...], span: str | None,
          **variance_options: object) -> None:
    """Expand dy/df_J = (I + J_N)...(I + J_{J+1}) into its 2^(N-J) paths.

    Terms come in the book's order (Prince, Understanding Deep Learning,
    eq. 11.6): binary counting over the later blocks, block J+1 the lowest bit.
    Output streams; --count and --lengths never enumerate.
    """
    from derive.errors import DeriveError
    from derive.pathsums.limits import check_path_args

    depth, wrt = check_path_args(depth, _parse_wrt(wrt_text, depth))
    rho0 = variance_options.get("rho0")
    if rho0 is not None and not -1 <= rho0 <= 1:  # type: ignore[operator]
        raise DeriveError(f"--rho0 must be a number in [-1, 1] (the correlation of two tokens), "
                          f"got {rho0}")
    stream = sys.stdout.buffer
    m = wrt.later(depth)
    if lengths and m + 1 > MAX_LENGTHS:
        raise DeriveError(
            f"--lengths at depth {depth} lists {m + 1} path lengths, more than {MAX_LENGTHS}: "
            "use --count, or a smaller --depth"
        )
    source = click.get_current_context().get_parameter_source
    weighted = any(source(name) != click.core.ParameterSource.DEFAULT
                   for name in (*variance_options, "settings"))
    if block_spec is not None or weighted or span is not None:
        from derive.commands.path_tables import run

        pieces = run(depth, wrt, fmt, count, lengths, force, block_spec, settings, span,
                     variance_options)
        if pieces is not None:
            _write(stream, pieces)
            return
    if count or lengths:
        _write(stream, _stats(depth, wrt, fmt, count, lengths))
        return
    _check_listable(depth, wrt, force)
    _write(stream, _sum(depth, wrt, fmt, notation))


def _check_listable(depth: int, wrt: Wrt, force: bool) -> None:
    """Refuse a sum of more than 2^22 terms without --force, and of more than
    2^MAX_FORCED_BITS even with it."""
    from derive.errors import DeriveError
    from derive.pathsums.limits import MAX_FORCED_BITS, MAX_TERMS, more_terms_than

    m = wrt.later(depth)
    if m > MAX_FORCED_BITS:
        raise DeriveError(
            f"{wrt.gradient} at depth {depth} has 2^{m} terms, more "
            f"than the 2^{MAX_FORCED_BITS} that can be listed even with --force: use "
            + ("--count or --lengths" if m < MAX_LENGTHS else "--count")
        )
    if more_terms_than(m, MAX_TERMS) and not force:
        raise DeriveError(
            f"{wrt.gradient} at depth {depth} has 2^{m} terms, more than 2^22 = {MAX_TERMS} to "
            "enumerate: use --count or --lengths for the numbers, or --force to list them"
        )
