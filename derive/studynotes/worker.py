"""The notes derived on both cores: a second process takes some sections and the figures.

:func:`start` starts a second Python process at once
(:func:`main`; it never imports the caller's own script, so no
``if __name__ == "__main__"`` guard is needed, and it starts from daemonic
processes too). It derives the
sections of :data:`SECOND` (which share few derivations with the others) and
draws their figures from its own derivations; meanwhile this process works out
the data of its own figures, hands them over to be drawn there too, and
derives its sections. The content is then put together in the options' order.
Where no second process can start, or it fails, this process does its part,
so the result is the same either way (sections and figures pickle whole).

The two processes speak pickles over the child's stdin and stdout: a task is
``(number, name, arguments)`` with a name from :data:`TASKS`, an answer
``(number, "ok", value)`` or ``(number, "error", text)``.

>>> data, images = derive_notes(2, NotesOptions.of(concepts=["layer-norm"]))
>>> [s.key for s in data.sections], images
(['layer-norm'], {})
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from derive.studynotes.options import NotesOptions

#: Sections derived in the second process, with their figures.
SECOND = ("residual-block", "gradient-paths", "block-variants")
#: Notes derived in this process that are kept for a later build in it.
KEEP_DONE = 4

#: Figures by stem: {"png": bytes, "pdf": bytes}.
Images = dict[str, dict[str, bytes]]


def second_part(depth: int, options: NotesOptions, keys: tuple[str, ...],
                figures: bool) -> tuple[dict[str, Any], Images]:
    """The sections ``keys`` and (if ``figures``) their figures: the second process's part.

    >>> sections, images = second_part(2, NotesOptions(), ("gradient-paths",), True)
    >>> list(sections), sorted(images)
    (['gradient-paths'], ['gradient-lengths', 'path-lengths'])
    """
    from derive.studynotes.content import figure_specs, section

    sections = {key: section(key, depth, options) for key in keys}
    if not figures:
        return sections, {}
    from derive.rendering.plots import draw

    return sections, draw(figure_specs(depth, options, concepts=keys))


def _warm() -> None:
    from derive.rendering.plots import warm

    warm()


def _draw(specs: dict[str, tuple]) -> Images:
    from derive.rendering.plots import draw

    return draw(specs)


#: What the second process may be asked to do, by name.
TASKS: dict[str, Callable[..., Any]] = {"warm": _warm, "second_part": second_part,
                                        "draw": _draw}


class _Failed(Exception):
    """The second process could not do a task (or is gone)."""


class _SecondProcess:
    """The child process and the answers it sent; anything it fails is done here."""

    def __init__(self, depth: int, options: NotesOptions, figures: bool) -> None:
        self.depth, self.options, self.figures_wanted = depth, options, figures
        self.keys = tuple(key for key in options.concepts if key in SECOND)
        self.child: subprocess.Popen[bytes] | None = None
        self.answers: queue.Queue[tuple[int, str, Any]] = queue.Queue()
        self.received: dict[int, tuple[str, Any]] = {}
        self.ended: str | None = None  # why no more answers will come
        self.sent = 0
        self.part: int | None = None
        self.drawing: int | None = None
        self.own_images: Images = {}
        self.failed = False
        if not (self.keys or figures):
            return
        try:
            self.child = subprocess.Popen(
                [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:  # no second process here: this one does everything
            self.keys = ()
            return
        threading.Thread(target=self._read, daemon=True).start()
        if figures:
            self._send("warm")
        self.part = self._send("second_part", depth, options, self.keys, figures)

    def _send(self, name: str, *args: object) -> int | None:
        """Send a task; its number, or None if the child cannot take it."""
        if self.child is None or self.child.stdin is None:
            return None
        self.sent += 1
        try:
            pickle.dump((self.sent, name, args), self.child.stdin,
                        protocol=pickle.HIGHEST_PROTOCOL)
            self.child.stdin.flush()
        except (OSError, pickle.PicklingError):
            return None
        return self.sent

    def _read(self) -> None:
        """In a thread: every answer of the child, as it comes; (0, ...) when it is gone."""
        stream = self.child.stdout if self.child is not None else None
        try:
            while stream is not None:
                self.answers.put(pickle.load(stream))
        except Exception:  # end of the stream, or a broken answer
            self.answers.put((0, "error", "the second process ended"))

    def _answer(self, number: int | None) -> Any:
        """The value of task ``number``, waiting for it; :class:`_Failed` if it failed."""
        if number is None:
            raise _Failed("not sent")
        while number not in self.received:
            if self.ended is not None:
                raise _Failed(self.ended)
            got, status, value = self.answers.get()
            if got == 0:  # nothing more will come
                self.ended = value
            else:
                self.received[got] = (status, value)
        status, value = self.received.pop(number)
        if status != "ok":
            raise _Failed(value)
        return value

    def draw(self, others: tuple[str, ...]) -> None:
        """Have the figures of the concepts ``others`` drawn there, from data derived here."""
        if not self.figures_wanted or self.child is None:
            return
        from derive.studynotes.content import figure_specs

        self.drawing = self._send("draw", figure_specs(self.depth, self.options,
                                                       concepts=others))
        if self.drawing is None:
            self.failed = True

    def sections(self) -> dict[str, Any]:
        """The second process's sections (derived here if it failed)."""
        from derive.studynotes.content import section

        done: dict[str, Any] = {}
        if self.keys:
            try:
                done, self.own_images = self._answer(self.part)
            except _Failed:
                self.failed = True
        for key in self.keys:
            if key not in done:
                done[key] = section(key, self.depth, self.options)
        return done

    def figures(self) -> Images:
        """Every figure, once drawn (here if the second process failed); it then stops."""
        from derive.studynotes.content import figures as figures_here

        if not self.figures_wanted:
            self.close()
            return {}
        images: Images = dict(self.own_images)
        try:
            images.update(self._answer(self.drawing))
        except _Failed:
            self.failed = True
        self.close()
        if self.child is None or self.failed:
            images = dict(figures_here(self.depth, self.options))
        return dict(sorted(images.items()))

    def close(self, wait: bool = True) -> None:
        """Stop the child: at the end of its tasks (``wait``), or at once."""
        child = self.child
        if child is None or child.returncode is not None:
            return
        try:
            if child.stdin is not None:
                child.stdin.close()
        except OSError:
            pass
        if not wait:
            child.kill()
        try:
            child.wait(timeout=None if wait else 5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            child.kill()
            child.wait()


#: The second process's program: this ``derive`` first on its path, then :func:`main`.
_CHILD = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
          "import derive.studynotes.worker as worker; worker.main()")


class Pending:
    """Notes being derived: :meth:`content` once the sections are done, :meth:`figures`
    once the drawings are (the text can be rendered in between); :meth:`close` stops
    the second process if the caller gives up first."""

    def __init__(self, depth: int, options: NotesOptions, figures: bool) -> None:
        self.key = (depth, options, figures)
        self._content: Any = None
        self._images: Images | None = None
        self.second: _SecondProcess | None = None
        for key in (self.key, (depth, options, True)):
            if key in _DONE:
                self._content, images = _DONE[key]
                self._images = dict(images) if figures else {}
                return
        self.second = _SecondProcess(depth, options, figures)  # first: it starts at once
        try:
            from derive.studynotes.content import section

            others = tuple(key for key in options.concepts if key not in self.second.keys)
            self.second.draw(others)
            self._own = {key: section(key, depth, options) for key in others}
        except BaseException:
            self.second.close(wait=False)
            raise

    def content(self) -> Any:
        """The :class:`derive.studynotes.content.Content`, in the options' order of sections."""
        if self._content is None and self.second is not None:
            from derive.studynotes.content import Content

            depth, options, _ = self.key
            theirs = self.second.sections()
            self._content = Content(depth, tuple(self._own.get(key) or theirs[key]
                                                 for key in options.concepts), options)
        return self._content

    def figures(self) -> Images:
        """The figures (stem -> {"png", "pdf"}); empty unless they were asked for."""
        if self._images is None and self.second is not None:
            self._images = self.second.figures()
            _remember(self.key, (self.content(), self._images))
        return dict(self._images or {})

    def close(self) -> None:
        """Stop the second process at once, if it still runs (after a failure here)."""
        if self.second is not None:
            self.second.close(wait=False)


#: Notes already derived in this process, by (depth, options, with figures): the latest.
_DONE: dict[tuple[int, NotesOptions, bool], tuple[Any, Images]] = {}


def _remember(key: tuple[int, NotesOptions, bool], value: tuple[Any, Images]) -> None:
    _DONE.pop(key, None)
    _DONE[key] = value
    while len(_DONE) > KEEP_DONE:
        del _DONE[next(iter(_DONE))]


def start(depth: int, options: NotesOptions | None = None, figures: bool = False) -> Pending:
    """Start deriving the notes (and drawing their figures, if ``figures``) on two cores.

    >>> pending = start(2, NotesOptions.of(concepts=["layer-norm"]))
    >>> pending.content().sections[0].title, pending.figures()
    ('Layer norm', {})
    """
    return Pending(depth, NotesOptions() if options is None else options, figures)


def derive_notes(depth: int, options: NotesOptions | None = None,
                 figures: bool = False) -> tuple[Any, Images]:
    """The notes' :class:`derive.studynotes.content.Content` and, if ``figures``, their
    figures (stem -> {"png", "pdf"}), derived on two cores.

    >>> data, images = derive_notes(2, NotesOptions.of(concepts=["residual-block"]))
    >>> data.sections[0].title, images
    ('Residual block', {})
    """
    pending = start(depth, options, figures)
    try:
        return pending.content(), pending.figures()
    finally:
        pending.close()


def serve(tasks: Any = None, answers: Any = None) -> None:
    """The second process's loop: do each task read from ``tasks`` (stdin) and answer on
    ``answers`` (stdout), until the input ends.

    >>> import io
    >>> tasks, answers = io.BytesIO(pickle.dumps((1, "draw", ({},)))), io.BytesIO()
    >>> serve(tasks, answers)
    >>> pickle.loads(answers.getvalue())
    (1, 'ok', {})
    """
    tasks = sys.stdin.buffer if tasks is None else tasks
    answers = sys.stdout.buffer if answers is None else answers
    while True:
        try:
            number, name, args = pickle.load(tasks)
        except Exception:  # the input ended (or broke): no more tasks
            break
        try:
            answer = pickle.dumps((number, "ok", TASKS[name](*args)),
                                  protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # the task failed, or its value does not pickle
            answer = pickle.dumps((number, "error", f"{type(error).__name__}: {error}"))
        answers.write(answer)
        answers.flush()


def main() -> None:
    """The second process: :func:`serve` on stdin and stdout (whatever a library prints
    goes to stderr), then exit without tearing down the interpreter's objects (about
    half a second with SymPy and matplotlib loaded)."""
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, answers)
    sys.stderr.flush()
    os._exit(0)
