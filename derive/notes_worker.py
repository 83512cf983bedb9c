"""The notes derived on both cores: a second process takes some sections and the figures.

:func:`derive_notes` starts a second process at once. It derives the sections
of :data:`SECOND` (which share few derivations with the others) and draws their
figures from its own derivations; meanwhile this process works out the data
of its own figures, hands them over to be drawn there too, and derives its
sections. The content is then put together in the options' order. Where no
second process can start, or it fails, this process does everything itself,
so the result is the same either way (sections and figures pickle whole).

>>> data, images = derive_notes(2, NotesOptions.of(concepts=["layer-norm"]))
>>> [s.key for s in data.sections], images
(['layer-norm'], {})
"""

from __future__ import annotations

from typing import Any

from derive.notes_config import NotesOptions

#: Sections derived in the second process, with their figures.
SECOND = ("residual-block", "gradient-paths", "block-variants")

#: Figures by stem: {"png": bytes, "pdf": bytes}.
Images = dict[str, dict[str, bytes]]


def _exit_at_once() -> None:
    """In the second process: once its work is done, exit without tearing down the
    interpreter's objects (about half a second with SymPy and matplotlib loaded), as
    :func:`derive.cli.run` does; its results have been sent by then."""
    import atexit
    import os

    atexit.register(os._exit, 0)


def second_part(depth: int, options: NotesOptions, keys: tuple[str, ...],
                figures: bool) -> tuple[dict[str, Any], Images]:
    """The sections ``keys`` and (if ``figures``) their figures: the second process's part.

    >>> sections, images = second_part(2, NotesOptions(), ("gradient-paths",), True)
    >>> list(sections), sorted(images)
    (['gradient-paths'], ['gradient-lengths', 'path-lengths'])
    """
    from derive.notes_content import figure_specs, section

    sections = {key: section(key, depth, options) for key in keys}
    if not figures:
        return sections, {}
    from derive.plots import draw

    return sections, draw(figure_specs(depth, options, concepts=keys))


class _SecondProcess:
    """One worker process and what was asked of it; anything it fails is done here."""

    def __init__(self, depth: int, options: NotesOptions, figures: bool) -> None:
        self.depth, self.options, self.figures_wanted = depth, options, figures
        self.keys = tuple(key for key in options.concepts if key in SECOND)
        self.pool: Any = None
        self.part: Any = None
        self.drawing: Any = None
        self.own_images: Images = {}
        self.failed = False
        if not (self.keys or figures):
            return
        try:
            import concurrent.futures
            import multiprocessing

            self.pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_at_once)
            if figures:
                from derive.plots import warm

                self.pool.submit(warm)
            self.part = self.pool.submit(second_part, depth, options, self.keys, figures)
        except (OSError, ImportError, NotImplementedError):  # no second process here
            self.pool, self.keys = None, ()

    def draw(self, others: tuple[str, ...]) -> None:
        """Have the figures of the concepts ``others`` drawn there, from data derived here."""
        if not self.figures_wanted or self.pool is None:
            return
        from derive.notes_content import figure_specs
        from derive.plots import draw

        try:
            self.drawing = self.pool.submit(
                draw, figure_specs(self.depth, self.options, concepts=others))
        except RuntimeError:  # pragma: no cover (the pool broke)
            self.drawing = None

    def sections(self) -> dict[str, Any]:
        """The second process's sections (derived here if it failed)."""
        from derive.notes_content import section

        done: dict[str, Any] = {}
        try:
            if self.part is not None:
                done, self.own_images = self.part.result()
        except Exception:  # the second process failed or died: do its part here
            self.failed = True
        for key in self.keys:
            if key not in done:
                done[key] = section(key, self.depth, self.options)
        return done

    def figures(self) -> Images:
        """Every figure, once drawn (here if the second process failed); it then stops."""
        from derive.notes_content import figures as figures_here

        images: Images = dict(self.own_images)
        try:
            if self.drawing is not None:
                images.update(self.drawing.result())
        except Exception:  # pragma: no cover (the worker died: draw here)
            self.failed = True
        finally:
            if self.pool is not None:
                self.pool.shutdown()
        if self.figures_wanted and (self.pool is None or self.failed):
            images = dict(figures_here(self.depth, self.options))
        return dict(sorted(images.items())) if self.figures_wanted else {}


class Pending:
    """Notes being derived: :meth:`content` once the sections are done, :meth:`figures`
    once the drawings are (the text can be rendered in between)."""

    def __init__(self, depth: int, options: NotesOptions, figures: bool) -> None:
        self.key = (depth, options, figures)
        self._content: Any = None
        self._images: Images | None = None
        self.second: _SecondProcess | None = None
        for key in (self.key, (depth, options, True)):
            if key in _DONE:
                self._content, images = _DONE[key]
                self._images = images if figures else {}
                return
        from derive.notes_content import section

        self.second = _SecondProcess(depth, options, figures)
        others = tuple(key for key in options.concepts if key not in self.second.keys)
        self.second.draw(others)
        self._own = {key: section(key, depth, options) for key in others}

    def content(self) -> Any:
        """The :class:`derive.notes_content.Content`, in the options' order of sections."""
        if self._content is None and self.second is not None:
            from derive.notes_content import Content

            depth, options, _ = self.key
            theirs = self.second.sections()
            self._content = Content(depth, tuple(self._own.get(key) or theirs[key]
                                                 for key in options.concepts), options)
        return self._content

    def figures(self) -> Images:
        """The figures (stem -> {"png", "pdf"}); empty unless they were asked for."""
        if self._images is None and self.second is not None:
            self._images = self.second.figures()
            _DONE[self.key] = (self.content(), self._images)
        return self._images or {}


#: Notes already derived in this process, by (depth, options, with figures).
_DONE: dict[tuple[int, NotesOptions, bool], tuple[Any, Images]] = {}


def start(depth: int, options: NotesOptions | None = None, figures: bool = False) -> Pending:
    """Start deriving the notes (and drawing their figures, if ``figures``) on two cores.

    >>> pending = start(2, NotesOptions.of(concepts=["layer-norm"]))
    >>> pending.content().sections[0].title, pending.figures()
    ('Layer norm', {})
    """
    return Pending(depth, NotesOptions() if options is None else options, figures)


def derive_notes(depth: int, options: NotesOptions | None = None,
                 figures: bool = False) -> tuple[Any, Images]:
    """The notes' :class:`derive.notes_content.Content` and, if ``figures``, their
    figures (stem -> {"png", "pdf"}), derived on two cores.

    >>> data, images = derive_notes(2, NotesOptions.of(concepts=["residual-block"]))
    >>> data.sections[0].title, images
    ('Residual block', {})
    """
    pending = start(depth, options, figures)
    return pending.content(), pending.figures()
