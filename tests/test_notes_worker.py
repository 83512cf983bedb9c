"""The notes on two cores: the same content and figures with the second process or without."""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from derive.errors import DeriveError
from derive.studynotes import worker as notes_worker
from derive.studynotes.assembly import obsidian_notes
from derive.studynotes.options import NotesOptions

#: End-to-end: run with `pytest -m slow` (and by .ci/run).
pytestmark = pytest.mark.slow

OPTIONS = NotesOptions.of(concepts=["residual-block", "gradient-paths", "variance"],
                          depths=[10])


def _derived(kill: bool = False) -> tuple[tuple[dict[str, str], dict], notes_worker.Pending]:
    notes_worker._DONE.clear()
    pending = notes_worker.start(2, OPTIONS, figures=True)
    if kill and pending.child is not None:
        pending.child.process.kill()
    data, images = pending.content(), pending.figures()
    assert [s.key for s in data.sections] == list(OPTIONS.concepts)
    return (obsidian_notes(data), images), pending


@pytest.fixture(scope="module")
def both_cores():
    result, pending = _derived()
    assert pending.child is not None and pending.child.process.returncode == 0
    assert not pending.failed and sorted(pending.their_images) == ["gradient-lengths",
                                                                   "path-lengths"]
    return result


def test_the_second_process_takes_its_sections_and_every_figure(both_cores):
    notes, images = both_cores
    assert set(notes) == {"Residual block", "Gradient paths", "Variance under initialization"}
    assert sorted(images) == ["gradient-lengths", "path-lengths", "signal-depth",
                              "simulation-check"]
    assert all(pair["png"].startswith(b"\x89PNG") and pair["pdf"].startswith(b"%PDF-")
               for pair in images.values())


def test_without_a_second_process_the_notes_are_the_same(both_cores, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError("no process may start here")

    monkeypatch.setattr(notes_worker.subprocess, "Popen", refused)
    result, pending = _derived()
    assert pending.child is None and result == both_cores


@pytest.mark.parametrize("program", [
    "import sys; sys.exit(3)",                      # gone before any answer
    "import sys; sys.stdout.write('not a pickle')",  # a broken answer
])
def test_a_failing_second_process_leaves_its_part_to_this_one(both_cores, monkeypatch,
                                                              program):
    monkeypatch.setattr(notes_worker, "_CHILD", program)
    result, pending = _derived()
    assert pending.failed and result == both_cores


def test_a_second_process_killed_midway_leaves_its_part_to_this_one(both_cores):
    result, pending = _derived(kill=True)
    assert pending.failed and result == both_cores


def test_notes_derived_once_are_not_derived_again(both_cores, monkeypatch):
    def underived(*args, **kwargs):
        raise AssertionError("derived again")

    _derived()
    monkeypatch.setattr(notes_worker, "_Child", underived)
    data, images = notes_worker.derive_notes(2, OPTIONS, figures=False)
    assert images == {} and obsidian_notes(data) == both_cores[0]


def test_a_failed_build_stops_the_second_process(tmp_path, monkeypatch):
    import derive.studynotes.writer as notes_mod

    started = []
    real_start = notes_worker.start

    def recorded(*args, **kwargs):
        started.append(real_start(*args, **kwargs))
        return started[-1]

    def broken(*args, **kwargs):
        raise DeriveError("a template failed")

    monkeypatch.setattr(notes_worker, "start", recorded)
    monkeypatch.setattr(notes_mod, "_render", broken)
    notes_worker._DONE.clear()
    with pytest.raises(DeriveError, match="a template failed"):
        notes_mod.build(tmp_path / "n", formats="markdown", depth=3, options=OPTIONS)
    (pending,) = started
    assert pending.child is not None and pending.child.process.returncode is not None


def _reaped(pid: int) -> bool:
    """Whether process ``pid``, a child of this one, is gone and reaped (no zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="no SIGSTOP here")
def test_a_stopped_second_process_is_given_up_killed_and_reaped(both_cores, monkeypatch):
    monkeypatch.setattr(notes_worker, "SILENCE", 2.0)
    notes_worker._DONE.clear()
    pending = notes_worker.start(2, OPTIONS, figures=True)
    child = pending.child
    assert child is not None
    os.kill(child.process.pid, signal.SIGSTOP)
    began = time.monotonic()
    result = (obsidian_notes(pending.content()), pending.figures())
    assert pending.failed and "said nothing" in (child.ended or "")
    assert result == both_cores  # this process did the child's part, byte for byte
    assert child.process.returncode == -signal.SIGKILL and _reaped(child.process.pid)
    assert time.monotonic() - began < 120  # not forever


#: A second process whose part takes 3 s before it starts: derive's own, slowed down.
_SLOW = notes_worker._CHILD.replace(
    "worker.main()", "import time; real = worker.TASKS['second_part']; "
    "worker.TASKS['second_part'] = lambda *a: (time.sleep(3), real(*a))[1]; {run}")


@pytest.mark.parametrize("beats", [True, False])
def test_a_slow_second_process_is_waited_for_while_it_beats(both_cores, monkeypatch, beats):
    # with a bound of 1 s, a child that beats (every 0.1 s) is waited for however long its
    # task takes; the same child without its heartbeat is given up, and the notes are the same
    run = "worker.main()" if beats else "sys.argv[1:] = []; worker.main()"
    monkeypatch.setattr(notes_worker, "_CHILD", _SLOW.format(run=run))
    monkeypatch.setattr(notes_worker, "SILENCE", 1.0)
    result, pending = _derived()
    assert result == both_cores
    assert pending.failed is not beats
    assert _reaped(pending.child.process.pid)


def _script(tmp_path, name: str, body: str) -> list[str]:
    script = tmp_path / f"{name}.py"
    script.write_text("import multiprocessing\nimport derive\n\n\n" + textwrap.dedent("""\
        def notes(out):
            return [p.name for p in derive.notes(out, formats="anki", depth=2,
                                                 concepts=["residual-block"])]

        """) + textwrap.dedent(body).replace("OUT", repr(str(tmp_path / name))))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    assert "Traceback" not in done.stderr
    return done.stdout.splitlines()


def test_a_script_without_a_main_guard_works(tmp_path):
    assert _script(tmp_path, "unguarded", "print(notes(OUT))") == ["['derive.apkg']"]


def test_a_daemonic_process_can_build_notes(tmp_path):
    body = """\
        if __name__ == "__main__":
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print(pool.apply(notes, (OUT,)))
        """
    assert _script(tmp_path, "daemon", body) == ["['derive.apkg']"]


def test_the_loop_answers_each_task_and_names_a_failure():
    tasks = io.BytesIO(pickle.dumps((1, "draw", ({},))) + pickle.dumps((2, "nothing", ())))
    answers = io.BytesIO()
    notes_worker.serve(tasks, answers)
    stream = io.BytesIO(answers.getvalue())
    assert pickle.load(stream) == (1, "ok", {})
    assert pickle.load(stream) == (2, "error", "KeyError: 'nothing'")
