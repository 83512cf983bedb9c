"""The README's examples run and print what they show."""

import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_examples_in_the_readme() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no Python example"
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for number, block in enumerate(blocks):
        test = parser.get_doctest(block, {}, f"README block {number}", str(README), 0)
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} README example(s) failed"


def test_quick_start_is_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart.*?```bash\n(.*?)```", text, re.S)
    assert block is not None
    commands = block.group(1).strip().splitlines()
    assert len(commands) == 2
    assert "derive notes" in commands[0]
    assert "pytest" in commands[1]


# --- the console examples ----------------------------------------------------------------

ROOT = README.parent


def _console_blocks() -> list[list[tuple[str, list[str]]]]:
    """Each ```console block as (command, expected output lines) pairs."""
    blocks = re.findall(r"```console\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    out = []
    for block in blocks:
        pairs: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            else:
                assert pairs, f"README console block starts without a command: {line!r}"
                pairs[-1][1].append(line)
        out.append(pairs)
    return out


def _pattern(expected: list[str]) -> re.Pattern[str]:
    """The expected lines as a pattern: a line ``...`` stands for any lines (none
    included), ``...`` inside a line for any text on it; everything else is literal."""
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(re.escape(line).replace(r"\.\.\.", r"[^\n]*?") + r"\n")
    return re.compile("".join(parts))


def _run(command: str, cwd: Path) -> str:
    """Run a README command line (``derive ...``, optionally ``| head -N``/``| tail -N``)
    and return what it prints on stdout."""
    import os
    import shlex
    import subprocess
    import sys

    command = re.sub(r"\s+#.*$", "", command)
    pipe = None
    if " | " in command:
        command, pipe = command.split(" | ", 1)
    argv = shlex.split(command)
    assert argv[0] == "derive", f"README console commands start with derive: {command!r}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DERIVE_CACHE_DIR": ""}
    done = subprocess.run([sys.executable, "-m", "derive", *argv[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (command, done.stderr)
    lines = done.stdout.splitlines()
    if pipe is not None:
        found = re.fullmatch(r"(head|tail) -(\d+)", pipe.strip())
        assert found, f"README console pipes are head -N or tail -N: {pipe!r}"
        count = int(found[2])
        lines = lines[:count] if found[1] == "head" else lines[-count:]
    return "".join(line + "\n" for line in lines)


def _has_latex() -> bool:
    import shutil

    return all(shutil.which(tool) for tool in ("pdflatex", "latexmk"))


@pytest.mark.slow
def test_console_examples_in_the_readme_print_what_they_show(tmp_path) -> None:
    import os

    blocks = _console_blocks()
    assert len(blocks) >= 6, "the README's console examples went missing"
    failures = []
    for pairs in blocks:
        for command, expected in pairs:
            if "--pdf" in command and not _has_latex():
                if os.environ.get("CI"):
                    raise AssertionError("CI must have pdflatex and latexmk")
                continue
            got = _run(command, tmp_path)
            if not _pattern(expected).fullmatch(got):
                failures.append(f"$ {command}\n--- README shows:\n" + "\n".join(expected)
                                + "\n--- it prints:\n" + got)
    assert not failures, "\n\n".join(failures)


def test_the_pattern_of_an_example_is_literal_but_for_its_ellipses() -> None:
    pattern = _pattern(["a (b) ...", "...", "z"])
    assert pattern.fullmatch("a (b) c d\nx\ny\nz\n")
    assert pattern.fullmatch("a (b) \nz\n")
    assert not pattern.fullmatch("a [b] c\nz\n")
    assert not pattern.fullmatch("a (b) c\nz\nextra\n")


def test_the_readmes_harmonic_asymptote_holds() -> None:
    import math

    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "ln K + γ_E - 1 ≈ ln K - 0.42" in text
    assert "3.59 at K = 54, where ln 54 - 0.42 = 3.57" in text
    mean = lambda depth: math.fsum(1 / n for n in range(1, depth + 2)) - 1  # noqa: E731
    assert round(mean(10**6) - math.log(10**6), 2) == -0.42
    assert round(mean(54), 2) == 3.59 and round(math.log(54) - 0.42, 2) == 3.57
