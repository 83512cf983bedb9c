"""The notes derived on both cores: a second process takes some sections and the figures.

:func:`start` starts a second Python process at once
(:func:`main`; it never imports the caller's own script, so no
``if __name__ == "__main__"`` guard is needed, and it starts from daemonic
processes too). It derives the sections that the registry
(:data:`derive.studynotes.sections.SECTIONS`) gives the second process (they
share few derivations with the others) and draws their figures from its own
derivations; meanwhile this process works out the data of its own figures,
hands them over to be drawn there too, and derives its sections. The content
is then put together in the options' order. Where no second process can
start, or it fails, or it stops answering for :data:`SILENCE` seconds, this
process does its part, so the result is the same either way (sections and
figures pickle whole); a child given up is killed and reaped.

The two processes speak pickles over the child's stdin and stdout (a pipe
between the two, never a file): a task is ``(number, name, arguments)`` with
a name from :data:`TASKS`, an answer ``(number, "ok", value)`` or
``(number, "error", text)``; while it works the child also sends a heartbeat
``(-1, "alive", None)`` every tenth of :data:`SILENCE`.

>>> data, images = derive_notes(2, NotesOptions.of(concepts=["layer-norm"]))
>>> [s.key for s in data.sections], images
(['layer-norm'], {})
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Generic, TypeVar, cast

from derive.studynotes.options import NotesOptions
from derive.studynotes.sections import keys_of

if TYPE_CHECKING:  # pragma: no cover
    from derive.studynotes.assembly import Content
    from derive.studynotes.parts import Section
    from derive.studynotes.sections import FigureSpec

#: Notes derived in this process that are kept for a later build in it.
KEEP_DONE = 4
#: Seconds without a word from the second process (an answer or a heartbeat) before it
#: is given up. A healthy child beats every tenth of it, however long a task takes,
#: so only a child that is stopped or hung stays silent this long.
SILENCE = 30.0

#: Figures by stem: {"png": bytes, "pdf": bytes}.
Images = dict[str, dict[str, bytes]]
#: What a task of the second process gives back.
Answer = TypeVar("Answer")


def second_part(depth: int, options: NotesOptions, keys: tuple[str, ...],
                figures: bool) -> tuple[dict[str, Section], Images]:
    """The sections ``keys`` and (if ``figures``) their figures: the second process's part.

    >>> sections, images = second_part(2, NotesOptions(), ("gradient-paths",), True)
    >>> list(sections), sorted(images)
    (['gradient-paths'], ['gradient-lengths', 'path-lengths'])
    """
    from derive.studynotes.assembly import figure_specs, section

    sections = {key: section(key, depth, options) for key in keys}
    if not figures:
        return sections, {}
    from derive.rendering.plots import draw

    return sections, draw(figure_specs(depth, options, concepts=keys))


def _warm() -> None:
    from derive.rendering.plots import warm

    warm()


def _draw(specs: dict[str, FigureSpec]) -> Images:
    from derive.rendering.plots import draw

    return draw(specs)


#: What the second process may be asked to do, by name.
TASKS: dict[str, Callable[..., object]] = {"warm": _warm, "second_part": second_part,
                                           "draw": _draw}
#: The name each task goes by in a message.
_NAMES = {task: name for name, task in TASKS.items()}


@dataclass(frozen=True)
class _Task(Generic[Answer]):
    """A task sent to the second process, by its number; the child answers it with what
    the task's function returns, an ``Answer``."""

    number: int


class _Failed(Exception):
    """The second process could not do a task (or is gone, or stopped answering)."""


class _Child:
    """The second process and the pipes to it: tasks go out through a thread (so a child
    that stops reading never blocks this process), answers and heartbeats come in through
    another. :meth:`answer` gives the child up after :data:`SILENCE` seconds without a
    word from it, and kills and reaps it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, repr(max(SILENCE / 10, 0.05))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.answers: queue.Queue[tuple[int, str, object]] = queue.Queue()
        self.outbox: queue.Queue[bytes | None] = queue.Queue()
        self.received: dict[int, tuple[str, object]] = {}
        self.ended: str | None = None  # why no more answers will come
        self.heard = time.monotonic()  # when the child last said anything
        self.sent = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def send(self, task: Callable[..., Answer], *args: object) -> _Task[Answer] | None:
        """Send ``task`` (one of :data:`TASKS`) with ``args``; None if the child cannot
        take it."""
        if self.ended is not None:
            return None
        try:
            data = pickle.dumps((self.sent + 1, _NAMES[task], args),
                                protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            return None
        self.sent += 1
        self.outbox.put(data)
        return _Task(self.sent)

    def _write(self) -> None:
        """In a thread: each task to the child's stdin; None closes it."""
        stream = self.process.stdin
        try:
            while stream is not None and (data := self.outbox.get()) is not None:
                stream.write(data)
                stream.flush()
        except (OSError, ValueError):  # the child is gone
            pass
        with contextlib.suppress(OSError, ValueError):
            if stream is not None:
                stream.close()

    def _read(self) -> None:
        """In a thread: every answer of the child, as it comes; (0, ...) when it is gone."""
        stream = self.process.stdout
        try:
            while stream is not None:
                message = pickle.load(stream)
                self.heard = time.monotonic()
                if message[0] != _BEAT[0]:
                    self.answers.put(message)
        except Exception:  # end of the stream, or a broken answer
            self.answers.put((0, "error", "the second process ended"))

    def answer(self, task: _Task[Answer] | None) -> Answer:
        """The value of ``task``, waiting for it; :class:`_Failed` if it failed."""
        if task is None:
            raise _Failed("not sent")
        number = task.number
        while number not in self.received:
            if self.ended is not None:
                raise _Failed(self.ended)
            quiet = time.monotonic() - self.heard
            if quiet > SILENCE:
                self.ended = f"the second process said nothing for {quiet:.0f} s"
                self.stop(wait=False)
                continue
            try:
                got, status, value = self.answers.get(timeout=SILENCE - quiet + 0.01)
            except queue.Empty:
                continue
            if got == 0:  # nothing more will come
                self.ended = str(value)
            else:
                self.received[got] = (status, value)
        status, value = self.received.pop(number)
        if status != "ok":
            raise _Failed(value)
        # An answer comes unpickled from the child: the value of the task's function.
        return cast(Answer, value)

    def stop(self, wait: bool = True) -> None:
        """Stop the child and reap it: at the end of its tasks (``wait``, for at most
        :data:`SILENCE` seconds), or at once."""
        self.outbox.put(None)
        if self.process.returncode is not None:
            return
        if wait:
            try:
                self.process.wait(timeout=SILENCE)
                return
            except subprocess.TimeoutExpired:
                pass
        self.process.kill()
        self.process.wait()


#: The second process's program: this ``derive`` first on its path, then :func:`main`.
_CHILD = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
          "import derive.studynotes.worker as worker; worker.main()")
#: What the second process sends while it works, so that silence means it stopped.
_BEAT = (-1, "alive", None)


class Pending:
    """Notes being derived on two cores: :meth:`content` once the sections are done,
    :meth:`figures` once the drawings are (the text can be rendered in between);
    :meth:`close` stops the second process if the caller gives up first.

    The second process derives the sections that :data:`derive.studynotes.sections.SECTIONS`
    gives it, with their figures, and draws the figures of this process's sections.
    Whatever it fails (it cannot start, it ends, it stops answering) is done here,
    so the result is the same either way. Notes already derived in this process
    are taken from the latest :data:`KEEP_DONE`.
    """

    def __init__(self, depth: int, options: NotesOptions, figures: bool) -> None:
        self.key = (depth, options, figures)
        self.child: _Child | None = None
        self._part: _Task[tuple[dict[str, Section], Images]] | None = None
        self._drawing: _Task[Images] | None = None
        self.failed = False  # the second process did not do its part
        self.theirs: tuple[str, ...] = ()
        self.their_images: Images = {}
        self._own: dict[str, Section] = {}
        self._content: Content | None = None
        self._images: Images | None = None
        for key in (self.key, (depth, options, True)):
            if key in _DONE:
                self._content, images = _DONE[key]
                self._images = dict(images) if figures else {}
                return
        self.theirs = keys_of(options.concepts, "second")
        if self.theirs or figures:
            try:
                self.child = _Child()  # first: it starts at once
            except OSError:  # no second process here: this one does everything
                self.theirs = ()
        if self.child is not None:
            if figures:
                self.child.send(_warm)
            self._part = self.child.send(second_part, depth, options, self.theirs, figures)
        try:
            from derive.studynotes.assembly import figure_specs, section

            ours = tuple(key for key in options.concepts if key not in self.theirs)
            if figures and self.child is not None:
                self._drawing = self.child.send(_draw, figure_specs(depth, options, ours))
            self._own = {key: section(key, depth, options) for key in ours}
        except BaseException:
            self.close()
            raise

    def content(self) -> Content:
        """The :class:`derive.studynotes.assembly.Content`, in the options' order of sections."""
        if self._content is None:
            from derive.studynotes.assembly import Content, section

            depth, options, _ = self.key
            theirs: dict[str, Section] = {}
            if self.theirs and self.child is not None:
                try:
                    theirs, self.their_images = self.child.answer(self._part)
                except _Failed:
                    self.failed = True
            for key in self.theirs:
                if key not in theirs:
                    theirs[key] = section(key, depth, options)
            self._content = Content(depth, tuple(self._own.get(key) or theirs[key]
                                                 for key in options.concepts), options)
        return self._content

    def figures(self) -> Images:
        """The figures (stem -> {"png", "pdf"}); empty unless they were asked for. The
        second process then stops."""
        if self._images is None:
            depth, options, wanted = self.key
            data = self.content()
            images: Images = {}
            if wanted:
                images = dict(self.their_images)
                try:
                    if self.child is not None:
                        drawn: Images = self.child.answer(self._drawing)
                        images.update(drawn)
                except _Failed:
                    self.failed = True
            if self.child is not None:
                self.child.stop()
            if wanted and (self.child is None or self.failed):
                from derive.studynotes.assembly import figures as figures_here

                images = figures_here(depth, options)
            self._images = dict(sorted(images.items()))
            _remember(self.key, (data, self._images))
        return dict(self._images)

    def close(self) -> None:
        """Stop the second process at once, if it still runs (after a failure here)."""
        if self.child is not None:
            self.child.stop(wait=False)


#: Notes already derived in this process, by (depth, options, with figures): the latest
#: :data:`KEEP_DONE`, the only notes kept in memory.
_DONE: dict[tuple[int, NotesOptions, bool], tuple[Content, Images]] = {}


def _remember(key: tuple[int, NotesOptions, bool], value: tuple[Content, Images]) -> None:
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
                 figures: bool = False) -> tuple[Content, Images]:
    """The notes' :class:`derive.studynotes.assembly.Content` and, if ``figures``, their
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


def serve(tasks: BinaryIO | None = None, answers: BinaryIO | None = None,
          beat: float | None = None) -> None:
    """The second process's loop: do each task read from ``tasks`` (stdin) and answer on
    ``answers`` (stdout), until the input ends; with ``beat``, a heartbeat every ``beat``
    seconds meanwhile.

    >>> import io
    >>> tasks, answers = io.BytesIO(pickle.dumps((1, "draw", ({},)))), io.BytesIO()
    >>> serve(tasks, answers)
    >>> pickle.loads(answers.getvalue())
    (1, 'ok', {})
    """
    tasks = sys.stdin.buffer if tasks is None else tasks
    out = sys.stdout.buffer if answers is None else answers
    lock = threading.Lock()

    def say(data: bytes) -> None:
        with lock:
            out.write(data)
            out.flush()

    if beat is not None:
        heartbeat = pickle.dumps(_BEAT)

        def beating() -> None:
            with contextlib.suppress(OSError, ValueError):  # ends with the pipe
                while True:
                    time.sleep(beat)
                    say(heartbeat)

        threading.Thread(target=beating, daemon=True).start()
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
        say(answer)


def main() -> None:
    """The second process: :func:`serve` on stdin and stdout (whatever a library prints
    goes to stderr), beating every ``sys.argv[1]`` seconds, then exit without tearing
    down the interpreter's objects (about half a second with SymPy and matplotlib
    loaded)."""
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr
    try:
        beat: float | None = max(float(sys.argv[1]), 0.05)
    except (IndexError, ValueError):
        beat = None
    serve(sys.stdin.buffer, answers, beat)
    sys.stderr.flush()
    os._exit(0)
