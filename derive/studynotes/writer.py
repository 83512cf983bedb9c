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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from derive.errors import DeriveError, choice_error
from derive.studynotes.options import NotesOptions
from derive.studynotes.worker import Images

if TYPE_CHECKING:  # pragma: no cover
    from derive.deck.cards import Card
    from derive.studynotes.assembly import Content
    from derive.studynotes.cache import CacheFolder, Files, Kind, TextKind

FORMATS = ("latex", "markdown", "obsidian", "anki")
#: Where the Anki deck lands; the deck found there carries its notes' times over.
DECK = "anki/derive.apkg"


@dataclass(frozen=True)
class NotesResult:
    """What :func:`build` did: all files of the set, those written, orphaned card keys.

    ``notices``: one line for each thing done to a note beyond regenerating it
    (an Anki ID matched by content, a card moved out of a region, ...), each
    naming the note. ``warnings``: one line for each thing the run went on
    without (a cache folder it did not trust).

    >>> NotesResult((), (), ()).paths
    []
    """

    files: tuple[Path, ...]
    written: tuple[Path, ...]
    orphaned: tuple[str, ...] = field(default=())
    notices: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

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
    allowed = ", ".join((*FORMATS, "all"))
    if isinstance(formats, str):
        chosen = [formats]
    elif isinstance(formats, Iterable) and not isinstance(formats, bytes | Mapping):
        chosen = list(formats)
    else:
        raise DeriveError(f"formats must be a format name or a list of them ({allowed}), "
                          f"got {formats!r}")
    if not chosen:
        raise DeriveError("formats must name at least one of " + ", ".join((*FORMATS, "all")))
    for fmt in chosen:
        if not isinstance(fmt, str) or fmt not in (*FORMATS, "all"):
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
    rendered text, cards and figures are kept on disk as data and read back by
    the next build with the same code, options and templates
    (:mod:`derive.studynotes.cache`); a cache folder that is not safe to use is
    left alone and named in ``warnings``.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "n"
    >>> r = build(out, formats="anki", depth=2)
    >>> [p.name for p in r.written], r.orphaned
    (['derive.apkg'], ())
    """
    from derive.files import writes as files_mod
    from derive.files.output_folder import check_output_folder

    chosen = check_formats(formats)
    options = NotesOptions() if options is None else options
    depth, folder = _check_request(chosen, depth, templates, pdf)
    say = progress or (lambda message: None)
    root = check_output_folder(out)
    store, warnings = _open_cache(cache)
    try:
        generated = _generate(depth, options, chosen, folder, store, say)
    finally:
        if store is not None:
            store.close()
    rendered = _merge(generated, chosen, root, options, say)
    planned = _planned(chosen, generated, rendered, pdf, say)
    report = files_mod.write_files(root, planned, force=force,
                                   merged_from=rendered.merged_from)
    return NotesResult(
        files=tuple(root / rel for rel in sorted(planned)),
        written=tuple(root / rel for rel in report.written),
        orphaned=tuple(rendered.orphaned),
        notices=tuple(rendered.notices),
        warnings=tuple(warnings),
    )


def _check_request(chosen: tuple[str, ...], depth: int,
                   templates: str | os.PathLike[str] | None, pdf: bool) -> tuple[int, Path]:
    """The depth (1 to 10) and the templates folder, checked before anything is derived;
    --pdf needs the LaTeX format and pdflatex."""
    from derive.inputs import numbers
    from derive.rendering.render import template_dir

    depth = numbers.integer(depth, "depth", minimum=1, maximum=numbers.MAX_DEPTH, text=False)
    if depth > 10:
        raise DeriveError(f"depth must be an integer from 1 to 10 for the notes, got {depth}")
    if pdf and "latex" not in chosen:
        raise DeriveError("--pdf needs the latex format (use --format latex or all)")
    folder = template_dir(None if templates is None else Path(templates))
    if pdf and shutil.which("pdflatex") is None:
        raise DeriveError("--pdf needs pdflatex (or latexmk) on PATH; none was found")
    return depth, folder


def _open_cache(cache: bool) -> tuple[CacheFolder | None, list[str]]:
    """The cache folder when ``cache`` and it is safe to use, and the warning if it is not."""
    if not cache:
        return None, []
    from derive.studynotes import cache as notes_cache

    store, warning = notes_cache.open_folder(notes_cache.cache_folder())
    return store, [warning] if warning else []


def _planned(chosen: tuple[str, ...], generated: _Generated, rendered: _Rendered, pdf: bool,
             say: Callable[[str], None]) -> dict[str, str | bytes]:
    """Every file of the formats ``chosen`` (relative path -> text or bytes), laid out as the
    module says: each format's text or deck and its figures (PDF for LaTeX, else PNG)."""
    images, texts = generated.images, generated.texts
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
        planned.update(rendered.vault)
        planned.update({f"obsidian/figures/{stem}.png": pair["png"]
                        for stem, pair in images.items()})
    if "anki" in chosen:
        planned[DECK] = rendered.deck
    return planned


#: The formats whose text is rendered from templates (and needs the figures).
TEXT_FORMATS: tuple[TextKind, ...] = ("latex", "markdown", "obsidian")


@dataclass
class _Generated:
    """What the derivations give a build, derived or read from the cache: each text
    format's files as rendered (relative path -> text; Obsidian notes before the merge
    with the vault), the cards, the figures (stem -> {"png", "pdf"})."""

    texts: dict[str, str] = field(default_factory=dict)
    cards: tuple[Card, ...] = ()
    images: Images = field(default_factory=dict)

    def part(self, kind: TextKind) -> Files:
        """A text format's files: what the cache keeps as ``kind``."""
        return {rel: text for rel, text in self.texts.items() if rel.startswith(f"{kind}/")}


def _kinds(chosen: tuple[str, ...]) -> tuple[Kind, ...]:
    """The parts a build of the formats ``chosen`` needs: their texts, cards, figures."""
    texts = tuple(fmt for fmt in TEXT_FORMATS if fmt in chosen)
    return (*texts, *(("cards",) if "anki" in chosen else ()),
            *(("figures",) if texts else ()))


#: What an entry of the cache is keyed by, besides derive's source and versions.
_Inputs = dict[str, object]


def _cache_inputs(depth: int, options: NotesOptions, folder: Path,
                  kinds: tuple[Kind, ...]) -> dict[Kind, _Inputs]:
    """Each part's inputs: the depth, the options, and the templates for a text."""
    from dataclasses import asdict

    from derive.studynotes.cache import folder_digest

    templates = folder_digest(folder)
    return {kind: {"depth": depth, "options": asdict(options),
                   "templates": templates if kind in TEXT_FORMATS else None}
            for kind in kinds}


def _read_cache(store: CacheFolder, inputs: dict[Kind, _Inputs]) -> _Generated | None:
    """The parts in ``inputs`` read from the cache folder, or None unless it holds them all
    (every entry asked for is read, so each counts as recently used)."""
    files = [store.load(kind, inputs[kind]) for kind in TEXT_FORMATS if kind in inputs]
    cards = store.load("cards", inputs["cards"]) if "cards" in inputs else ()
    images = store.load("figures", inputs["figures"]) if "figures" in inputs else {}
    texts: dict[str, str] = {}
    for part in files:
        if part is None:
            return None
        texts.update(part)
    if cards is None or images is None:
        return None
    return _Generated(texts, cards, images)


def _keep(store: CacheFolder, inputs: dict[Kind, _Inputs], generated: _Generated) -> None:
    """Keep the parts in ``inputs`` in the cache folder."""
    for kind in TEXT_FORMATS:
        if kind in inputs:
            store.store(kind, inputs[kind], generated.part(kind))
    if "cards" in inputs:
        store.store("cards", inputs["cards"], generated.cards)
    if "figures" in inputs:
        store.store("figures", inputs["figures"], generated.images)


def _generate(depth: int, options: NotesOptions, chosen: tuple[str, ...], folder: Path,
              store: CacheFolder | None, say: Callable[[str], None]) -> _Generated:
    """The texts, cards and figures of the formats ``chosen``: read from the cache folder
    ``store`` (:mod:`derive.studynotes.cache`) if it holds them all, else derived on two
    cores (:mod:`derive.studynotes.worker`; the figures are still being drawn while the
    text is rendered) and then kept there."""
    kinds = _kinds(chosen)
    inputs: dict[Kind, _Inputs] = {}
    if store is not None:
        inputs = _cache_inputs(depth, options, folder, kinds)
        cached = _read_cache(store, inputs)
        if cached is not None:
            say(f"reading the derived notes from {store.path}")
            say("rendering " + ", ".join(chosen))
            return cached
    from derive.studynotes.worker import start

    figures = "figures" in kinds
    say("deriving concepts, gradient paths and variance; simulating"
        + ("; plotting" if figures else ""))
    pending = start(depth, options, figures)  # SymPy is not imported yet: the child starts first
    try:
        data = pending.content()
        say("rendering " + ", ".join(chosen))
        generated = _Generated(_render(data, chosen, folder),
                               tuple(data.cards) if "anki" in chosen else ())
        generated.images = pending.figures()  # drawn meanwhile
    finally:
        pending.close()
    if store is not None:
        _keep(store, inputs, generated)
    return generated


def _render(data: Content, chosen: tuple[str, ...], folder: Path | None) -> dict[str, str]:
    """The files of the text formats ``chosen`` as the templates render ``data``
    (relative path -> text); the Obsidian notes are not merged with the vault yet."""
    from derive.rendering.render import render_template
    from derive.studynotes.assembly import obsidian_notes

    texts = {}
    if "latex" in chosen:
        texts["latex/notes.tex"] = render_template("notes.tex.j2", data.context, folder)
    if "markdown" in chosen:
        texts["markdown/notes.md"] = render_template("notes.md.j2", data.context, folder)
    if "obsidian" in chosen:
        texts.update({f"obsidian/{name}.md": text
                      for name, text in obsidian_notes(data, folder).items()})
    return texts


@dataclass
class _Rendered:
    """The Obsidian notes where they are (merged with the vault's), the deck, and what
    the merge did."""

    vault: dict[str, str] = field(default_factory=dict)
    deck: bytes = b""
    merged_from: dict[str, str | None] = field(default_factory=dict)
    orphaned: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def _merge(generated: _Generated, chosen: tuple[str, ...], root: Path,
           options: NotesOptions, say: Callable[[str], None]) -> _Rendered:
    """The Obsidian notes merged with what is on disk under ``root``, and the deck."""
    from derive.files import writes as files_mod

    out = _Rendered()
    if "obsidian" in chosen:
        from derive.vault.vault_merge import merge_vault

        vault = merge_vault(root, generated.part("obsidian"))
        out.vault, out.merged_from = vault.texts, vault.merged_from
        out.orphaned.extend(vault.orphaned)
        out.notices.extend(vault.notices)
    if "anki" in chosen:
        from derive.deck.apkg import apkg_bytes

        say("writing the Anki deck")
        previous = files_mod.read_existing_bytes(root, DECK) if root.is_dir() else None
        out.deck = apkg_bytes(list(generated.cards), options.deck, previous=previous)
    return out


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
    ``cache``: read and keep what was derived on disk (:mod:`derive.studynotes.cache`).
    Keyword ``options`` are those of :class:`derive.studynotes.options.NotesOptions`:
    ``tags``, ``deck``, ``style``, ``names``, ``concepts``, ``blocks``, ``depths``.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "n"
    >>> notes(out, formats="latex", depth=2)[-1].name
    'notes.tex'
    """
    return build(out, formats, depth, templates, pdf, force,
                 options=NotesOptions.of(**options), cache=cache).paths
