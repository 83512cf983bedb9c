"""Faults of templates, each turned into one line that names the template file and line.

A user's ``--templates`` may hold a syntax error, an undefined name, an
expression that raises, an include of a file that is not there, or bytes
that are not UTF-8. :func:`render_safely` and :class:`Utf8Loader` turn each
into :class:`TemplateFault` (a :class:`~derive.errors.DeriveError`), raised
before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import jinja2

from derive.errors import DeriveError


class TemplateFault(DeriveError):
    """A template cannot be read or rendered; the message names its file and line.

    >>> isinstance(TemplateFault("x"), ValueError)
    True
    """


class Utf8Loader(jinja2.FileSystemLoader):
    """Loads templates as UTF-8; a file that is not UTF-8 is named with its line.

    >>> import tempfile, pathlib, jinja2
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "t.j2").write_bytes(b"ok\\ncaf\\xe9\\n")
    >>> jinja2.Environment(loader=Utf8Loader(str(folder))).get_template("t.j2")
    Traceback (most recent call last):
    ...
    derive.rendering.template_faults.TemplateFault: template .../t.j2, line 2: not UTF-8 ...
    """

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        try:
            return super().get_source(environment, template)
        except UnicodeDecodeError as err:
            path = Path(self.searchpath[0]) / template
            line = err.object[: err.start].count(b"\n") + 1
            raise TemplateFault(f"template {path}, line {line}: not UTF-8 text "
                                f"(byte 0x{err.object[err.start]:02x}); save it as UTF-8") from None


def _template_line(err: BaseException, env: jinja2.Environment) -> tuple[str, int] | None:
    """The innermost template file and line in ``err``'s traceback, if any."""
    found = None
    folders = [Path(folder) for folder in getattr(env.loader, "searchpath", ())]
    tb = err.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if any(Path(filename).parent == folder for folder in folders):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def render_safely(env: jinja2.Environment, name: str, context: Mapping[str, object]) -> str:
    """Render template ``name``; any fault of a template becomes one TemplateFault line.

    >>> env = jinja2.Environment(loader=jinja2.DictLoader({"t.j2": "{{ 1 // 0 }}"}))
    >>> render_safely(env, "t.j2", {})
    Traceback (most recent call last):
    ...
    derive.rendering.template_faults.TemplateFault: template t.j2: ZeroDivisionError: ...
    """
    try:
        return env.get_template(name).render(**context)
    except TemplateFault:
        raise
    except jinja2.TemplateSyntaxError as err:
        where = err.filename or name
        raise TemplateFault(f"template {where}, line {err.lineno}: {err.message}") from None
    except Exception as err:  # a user's template may raise anything
        place = _template_line(err, env)
        where = f"template {place[0]}, line {place[1]}" if place else f"template {name}"
        if isinstance(err, jinja2.TemplateNotFound):
            what = f"includes {err.name!r}, which is not in the templates folder"
        elif isinstance(err, jinja2.UndefinedError | DeriveError):
            what = str(err)
        else:
            what = f"{type(err).__name__}: {err}"
        raise TemplateFault(f"{where}: {what}".replace("\n", " ")) from None
