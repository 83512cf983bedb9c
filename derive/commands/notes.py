"""``derive notes``: write the study notes (LaTeX, Markdown, Obsidian + Anki, .apkg).

Options left out fall back to the ``[notes]`` table of ``derive.toml`` (in the
output folder, else the current folder; see :mod:`derive.studynotes.options`).
"""

from __future__ import annotations

import time

import click

FORMAT_CHOICES = ("latex", "markdown", "obsidian", "anki", "all")


def _names(pairs: tuple[str, ...]) -> dict[str, str] | None:
    from derive.errors import DeriveError

    if not pairs:
        return None
    out = {}
    for pair in pairs:
        concept, sep, name = pair.partition("=")
        if not sep:
            raise DeriveError(f"--name {pair!r} must read CONCEPT=NOTE NAME, "
                              "e.g. residual-block='nn residual block'")
        out[concept.strip()] = name.strip()
    return out


@click.command("notes")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default=None,
              help="Which notes to write.  [default: all]")
@click.option("--out", "out", default="output", show_default=True, metavar="DIR",
              help="Output folder (created if its parent exists).")
@click.option("--depth", type=click.IntRange(1, 10), default=None,
              help="Blocks in the path-sum expansion of dy/df1.  [default: 4]")
@click.option("--tags", default=None, metavar="'T1 T2'",
              help="Anki tags of every card, in place of derive's own (derive and the "
                   "concept), e.g. 'ml WS2526'.")
@click.option("--deck", default=None, metavar="NAME",
              help="Anki deck name of the .apkg (A::B for a sub-deck).  [default: derive]")
@click.option("--style", default=None, metavar="STYLE",
              help="Card style: Basic, 'Basic reversed' or Cloze.  [default: Basic]")
@click.option("--name", "names", multiple=True, metavar="CONCEPT=NOTE",
              help="Name a concept's note (and its wikilinks), e.g. "
                   "residual-block='nn residual block'; a note of that name in DIR gets "
                   "derive's text added below its own; repeatable.")
@click.option("--concepts", default=None, metavar="LIST",
              help="Concepts to write: residual-block, layer-norm, pre-vs-post-norm, "
                   "gradient-paths, variance.  [default: all]")
@click.option("--blocks", default=None, metavar="LIST",
              help="Blocks in the variance notes: none, pre, post.  [default: all]")
@click.option("--depths", default=None, metavar="LIST",
              help="Depths K at which tables give values; figures reach the largest.  "
                   "[default: 10,50]")
@click.option("--config", default=None, metavar="FILE",
              help="Project file to read instead of DIR/derive.toml or ./derive.toml.")
@click.option("--pdf", is_flag=True, help="Compile the LaTeX with latexmk or pdflatex.")
@click.option("--templates", default=None, metavar="DIR",
              help="A folder holding a full set of templates to use instead.")
@click.option("--force", is_flag=True,
              help="Overwrite files that derive did not write or that were edited.")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="Derive everything anew, neither reading nor keeping the derived notes "
                   "in the cache folder ($DERIVE_CACHE_DIR, else ~/.cache/derive).")
def notes(fmt: str | None, out: str, depth: int | None, tags: str | None, deck: str | None,
          style: str | None, names: tuple[str, ...], concepts: str | None, blocks: str | None,
          depths: str | None, config: str | None, pdf: bool, templates: str | None,
          force: bool, no_cache: bool) -> None:
    """Write study notes built from the derivations under DIR (default output/).

    Options left out are read from the [notes] table of DIR/derive.toml, else
    ./derive.toml (same keys as the options), else their defaults. What is
    derived is kept in a cache folder, so a second run with the same options
    only renders (about a second); a new version of derive derives anew.
    """
    from derive.files.output_folder import check_output_folder
    from derive.studynotes.options import formats_and_depth, options_of, resolve
    from derive.studynotes.writer import build

    start = time.perf_counter()
    check_output_folder(out)
    given = {"format": fmt, "depth": depth, "tags": tags, "deck": deck, "style": style,
             "names": _names(names), "concepts": concepts, "blocks": blocks, "depths": depths}
    values, found = resolve(given, out, config)
    if found is not None:
        click.echo(f"derive: reading {found}", err=True)
    formats, path_depth = formats_and_depth(values)
    result = build(out, formats, path_depth, templates, pdf, force,
                   progress=lambda message: click.echo(f"derive: {message} ...", err=True),
                   options=options_of(values), cache=not no_cache)
    unchanged = len(result.files) - len(result.written)
    plural = "" if len(result.written) == 1 else "s"
    click.echo(f"wrote {len(result.written)} file{plural} under {out} ({unchanged} unchanged) "
               f"in {time.perf_counter() - start:.1f} s")
    for path in result.written:
        click.echo(f"  {path}")
    for notice in result.notices:
        click.echo(notice)
    for warning in result.warnings:
        click.echo(f"derive: {warning}", err=True)
    if result.orphaned:
        many = len(result.orphaned) != 1
        click.echo(f"{len(result.orphaned)} card{'s' if many else ''} "
                   f"{'are' if many else 'is'} no longer generated but "
                   f"keep{'' if many else 's'} {'their' if many else 'its'} Anki "
                   "ID (region orphaned-cards): " + ", ".join(result.orphaned))
