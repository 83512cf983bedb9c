"""Study notes: every derivation laid out as LaTeX, Markdown, Obsidian notes and Anki cards.

:func:`notes` gathers the derivations (concepts, gradient paths, variance),
the tables and figures made from them and a small simulation beside them
(on two cores, :mod:`derive.studynotes.worker`, or read back from the cache of a
previous run, :mod:`derive.studynotes.cache`), renders each format with the
templates of :mod:`derive.rendering.render`, and writes the whole set at once with
:func:`derive.files.writes.write_files` (atomic, never over a file the user edited
unless ``force``). Obsidian notes are merged with
the notes on disk (:func:`derive.vault.vault_merge.merge_vault`), so the user's text
and the cards' Anki IDs survive regeneration; a note the user renamed or moved is
found and updated in place (:mod:`derive.vault.renames`). The Anki deck carries its
notes' modification times over from the deck on disk
(:func:`derive.apkg.apkg_bytes`), so Anki updates exactly the changed notes.

Layout of the output folder::

    latex/notes.tex  latex/figures/*.pdf  (latex/notes.pdf with pdf=True)
    markdown/notes.md  markdown/figures/*.png
    obsidian/<concept>.md  obsidian/figures/*.png
    anki/derive.apkg

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "notes"
>>> [p.name for p in notes(out, formats=("markdown",), depth=2)][-1]
'notes.md'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derive.errors import DeriveError, choice_error
from derive.studynotes.options import NotesOptions
from derive.studynotes.worker import Images

FORMATS = ("latex", "markdown", "obsidian", "anki")
#: Where the Anki deck lands; the deck found there carries its notes' times over.
DECK = "anki/derive.apkg"


@dataclass(frozen=True)
class NotesResult:
    """What :func:`build` did: all files of the set, those written, orphaned card keys.

    ``notices``: one line for each thing done to a note beyond regenerating it
    (an Anki ID matched by content, a card moved out of a region, ...), each
    naming the note.

    >>> NotesResult((), (), ()).paths
    []
    """

    files: tuple[Path, ...]
    written: tuple[Path, ...]
    orphaned: tuple[str, ...] = field(default=())
    notices: tuple[str, ...] = field(default=())

    @property
    def paths(self) -> list[Path]:
        """Every file of the notes (written now or already up to date), sorted."""
        return sorted(self.files)


def check_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """The formats to write, in canonical order; "all" means every format.

    >>> check_formats("all")
    ('latex', 'markdown', 'obsidian', 'anki')
    >>> check_formats(["pdf"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: unknown format 'pdf': choose one of latex, ... all
    """
    chosen = [formats] if isinstance(formats, str) else list(formats)
    if not chosen:
        raise DeriveError("formats must name at least one of " + ", ".join((*FORMATS, "all")))
    for fmt in chosen:
        if fmt not in (*FORMATS, "all"):
            raise choice_error("format", fmt, (*FORMATS, "all"))
    if "all" in chosen:
        return FORMATS
    return tuple(f for f in FORMATS if f in chosen)


def _compile_pdf(tex: str, figures: dict[str, bytes]) -> bytes:
    """Compile ``tex`` (figures beside it) with latexmk, else pdflatex twice."""
    latexmk, pdflatex = shutil.which("latexmk"), shutil.which("pdflatex")
    if pdflatex is None:
        raise DeriveError("--pdf needs pdflatex (or latexmk) on PATH; none was found")
    env = dict(os.environ, SOURCE_DATE_EPOCH="0", FORCE_SOURCE_DATE="1")
    with tempfile.TemporaryDirectory(prefix="derive-pdf-") as tmp:
        folder = Path(tmp)
        (folder / "figures").mkdir()
        (folder / "notes.tex").write_text(tex, encoding="utf-8")
        for name, data in figures.items():
            (folder / "figures" / name).write_bytes(data)
        if latexmk:
            commands = [[latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error",
                         "-quiet", "notes.tex"]]
        else:
            once = [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "notes.tex"]
            commands = [once, once]
        for command in commands:
            done = subprocess.run(command, cwd=folder, env=env, capture_output=True,
                                  text=True, errors="replace", check=False)
            if done.returncode != 0:
                errors = [ln for ln in done.stdout.splitlines() if ln.startswith("!")]
                detail = errors[0] if errors else f"exit code {done.returncode}"
                raise DeriveError(f"LaTeX failed on notes.tex: {detail}")
        return (folder / "notes.pdf").read_bytes()


def build(
    out: str | os.PathLike[str] = "output",
    formats: str | Iterable[str] = FORMATS,
    depth: int = 4,
    templates: str | os.PathLike[str] | None = None,
    pdf: bool = False,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    options: NotesOptions | None = None,
    cache: bool = True,
) -> NotesResult:
    """Build and write the notes; return every file, those written and orphaned cards.

    Nothing is written when anything fails (bad input, a template, LaTeX, a
    file conflict). ``progress`` receives a short message before each slow part;
    ``options`` (:class:`derive.studynotes.options.NotesOptions`) say what the notes
    hold and how the cards are tagged, styled and filed. With ``cache`` the
    derived content and figures are kept on disk and read back by the next
    build with the same code and options (:mod:`derive.studynotes.cache`).

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "n"
    >>> r = build(out, formats="anki", depth=2)
    >>> [p.name for p in r.written], r.orphaned
    (['derive.apkg'], ())
    """
    from derive.files import writes as files_mod
    from derive.files.output_folder import check_output_folder
    from derive.inputs import numbers
    from derive.rendering.render import template_dir

    chosen = check_formats(formats)
    options = NotesOptions() if options is None else options
    depth = numbers.integer(depth, "depth", minimum=1, maximum=numbers.MAX_DEPTH, text=False)
    if depth > 10:
        raise DeriveError(f"depth must be an integer from 1 to 10 for the notes, got {depth}")
    if pdf and "latex" not in chosen:
        raise DeriveError("--pdf needs the latex format (use --format latex or all)")
    folder = template_dir(templates)
    if pdf and shutil.which("pdflatex") is None:
        raise DeriveError("--pdf needs pdflatex (or latexmk) on PATH; none was found")
    say = progress or (lambda message: None)
    root = check_output_folder(out)

    # SymPy is not imported yet: the second process starts first, and imports it meanwhile
    derived = _Derived(depth, options, bool({"latex", "markdown", "obsidian"} & set(chosen)),
                       cache, say)
    try:
        data = derived.content()
        say("rendering " + ", ".join(chosen))
        rendered = _render(data, chosen, root, folder, options, say)
        images = derived.figures()  # drawn meanwhile
    finally:
        derived.close()
    texts, vault, deck = rendered.texts, rendered.vault, rendered.deck
    planned: dict[str, str | bytes] = {}
    if "latex" in chosen:
        planned["latex/notes.tex"] = texts["latex/notes.tex"]
        pdfs = {f"{stem}.pdf": pair["pdf"] for stem, pair in images.items()}
        planned.update({f"latex/figures/{name}": blob for name, blob in pdfs.items()})
        if pdf:
            say("compiling latex/notes.tex")
            planned["latex/notes.pdf"] = _compile_pdf(texts["latex/notes.tex"], pdfs)
    if "markdown" in chosen:
        planned["markdown/notes.md"] = texts["markdown/notes.md"]
        planned.update({f"markdown/figures/{stem}.png": pair["png"]
                        for stem, pair in images.items()})
    if "obsidian" in chosen:
        planned.update(vault)
        planned.update({f"obsidian/figures/{stem}.png": pair["png"]
                        for stem, pair in images.items()})
    if "anki" in chosen:
        planned[DECK] = deck
    report = files_mod.write_files(root, planned, force=force,
                                   merged_from=rendered.merged_from)
    return NotesResult(
        files=tuple(root / rel for rel in sorted(planned)),
        written=tuple(root / rel for rel in report.written),
        orphaned=tuple(rendered.orphaned),
        notices=tuple(rendered.notices),
    )


@dataclass
class _Rendered:
    """The notes' text, rendered: LaTeX and Markdown, the Obsidian notes where they are
    (merged with the vault's), the deck, and what the merge did."""

    texts: dict[str, str] = field(default_factory=dict)
    vault: dict[str, str] = field(default_factory=dict)
    deck: bytes = b""
    merged_from: dict[str, str | None] = field(default_factory=dict)
    orphaned: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def _render(data: Any, chosen: tuple[str, ...], root: Path, folder: Path | None,
            options: NotesOptions, say: Callable[[str], None]) -> _Rendered:
    """Every text of the formats ``chosen``, merged with what is on disk under ``root``."""
    from derive.files import writes as files_mod
    from derive.rendering.render import render_template
    from derive.studynotes.content import obsidian_notes

    out = _Rendered()
    if "latex" in chosen:
        out.texts["latex/notes.tex"] = render_template("notes.tex.j2", data.context, folder)
    if "markdown" in chosen:
        out.texts["markdown/notes.md"] = render_template("notes.md.j2", data.context, folder)
    if "obsidian" in chosen:
        from derive.vault.vault_merge import merge_vault

        vault = merge_vault(root, {f"obsidian/{name}.md": text
                                   for name, text in obsidian_notes(data, folder).items()})
        out.vault, out.merged_from = vault.texts, vault.merged_from
        out.orphaned.extend(vault.orphaned)
        out.notices.extend(vault.notices)
    if "anki" in chosen:
        from derive.deck.apkg import apkg_bytes

        say("writing the Anki deck")
        previous = files_mod.read_existing_bytes(root, DECK) if root.is_dir() else None
        out.deck = apkg_bytes(data.cards, options.deck, previous=previous)
    return out


class _Derived:
    """The notes' content and figures for one build: read from the cache, or derived on
    two cores (:mod:`derive.studynotes.worker`; the figures are still being drawn when the
    content is ready) and then kept in the cache."""

    def __init__(self, depth: int, options: NotesOptions, figures: bool, cache: bool,
                 say: Callable[[str], None]) -> None:
        from derive.studynotes import cache as notes_cache
        from derive.studynotes.worker import start

        self.key, self.wanted = (depth, options), figures
        self.folder = notes_cache.cache_folder() if cache else None
        self.pending: Any = None
        self.data: Any = None
        self.images: Images | None = None
        if self.folder is not None:
            self.data = notes_cache.load(self.folder, "content", depth, options)
            self.images = (notes_cache.load(self.folder, "figures", depth, options)
                           if figures else {})
            if self.data is not None and self.images is not None:
                say(f"reading the derived notes from {self.folder}")
                return
        say("deriving concepts, gradient paths and variance; simulating"
            + ("; plotting" if figures else ""))
        self.data, self.images = None, None  # a content hit without its figures: derive both
        self.pending = start(depth, options, figures)

    def content(self) -> Any:
        """The :class:`derive.studynotes.content.Content`."""
        if self.data is None:
            self.data = self.pending.content()
        return self.data

    def figures(self) -> Images:
        """The figures (empty unless asked for); derived ones are then kept in the cache."""
        if self.images is None:
            from derive.studynotes import cache as notes_cache

            self.images = self.pending.figures()
            if self.folder is not None:
                notes_cache.store(self.folder, "content", *self.key, self.content())
                if self.wanted:
                    notes_cache.store(self.folder, "figures", *self.key, self.images)
        return self.images

    def close(self) -> None:
        """Stop the second process, if a failure here left it running."""
        if self.pending is not None:
            self.pending.close()


def notes(
    out: str | os.PathLike[str] = "output",
    formats: str | Iterable[str] = FORMATS,
    depth: int = 4,
    templates: str | os.PathLike[str] | None = None,
    pdf: bool = False,
    force: bool = False,
    cache: bool = True,
    **options: object,
) -> list[Path]:
    """Write the study notes under ``out``; return the paths of the notes' files, sorted.

    ``formats``: any of latex, markdown, obsidian, anki (or "all"); ``depth``:
    the number of blocks of the path-sum expansion (1 to 10); ``templates``: a
    folder holding a full set of templates; ``pdf``: compile the LaTeX;
    ``force``: overwrite files that derive did not write or that were edited;
    ``cache``: read and keep the derived content on disk (:mod:`derive.studynotes.cache`).
    Keyword ``options`` are those of :class:`derive.studynotes.options.NotesOptions`:
    ``tags``, ``deck``, ``style``, ``names``, ``concepts``, ``blocks``, ``depths``.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "n"
    >>> notes(out, formats="latex", depth=2)[-1].name
    'notes.tex'
    """
    return build(out, formats, depth, templates, pdf, force,
                 options=NotesOptions.of(**options), cache=cache).paths
