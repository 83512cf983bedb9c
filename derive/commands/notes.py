"""``derive notes``: write the study notes (LaTeX, Markdown, Obsidian + Anki, .apkg)."""

from __future__ import annotations

import time

import click

FORMAT_CHOICES = ("latex", "markdown", "obsidian", "anki", "all")


@click.command("notes")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="all",
              show_default=True, help="Which notes to write.")
@click.option("--out", "out", default="output", show_default=True, metavar="DIR",
              help="Output folder (created if its parent exists).")
@click.option("--depth", type=click.IntRange(1, 10), default=4, show_default=True,
              help="Blocks in the path-sum expansion of dy/df1.")
@click.option("--pdf", is_flag=True, help="Compile the LaTeX with latexmk or pdflatex.")
@click.option("--templates", default=None, metavar="DIR",
              help="A folder holding a full set of templates to use instead.")
@click.option("--force", is_flag=True,
              help="Overwrite files that derive did not write or that were edited.")
def notes(fmt: str, out: str, depth: int, pdf: bool, templates: str | None,
          force: bool) -> None:
    """Write study notes built from the derivations under DIR (default output/)."""
    from derive.notes_writer import build

    start = time.perf_counter()
    result = build(out, fmt, depth, templates, pdf, force,
                   progress=lambda message: click.echo(f"derive: {message} ...", err=True))
    unchanged = len(result.files) - len(result.written)
    plural = "" if len(result.written) == 1 else "s"
    click.echo(f"wrote {len(result.written)} file{plural} under {out} ({unchanged} unchanged) "
               f"in {time.perf_counter() - start:.1f} s")
    for path in result.written:
        click.echo(f"  {path}")
    for notice in result.notices:
        click.echo(notice)
    if result.orphaned:
        many = len(result.orphaned) != 1
        click.echo(f"{len(result.orphaned)} card{'s' if many else ''} "
                   f"{'are' if many else 'is'} no longer generated but "
                   f"keep{'' if many else 's'} {'their' if many else 'its'} Anki "
                   "ID (region orphaned-cards): " + ", ".join(result.orphaned))
