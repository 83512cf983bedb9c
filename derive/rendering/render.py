"""Renderers: one Derivation value, laid out by jinja2 templates as LaTeX, Markdown or text.

A template that cannot be read or rendered (a syntax error, an undefined
name, an exception, a missing include, bytes that are not UTF-8) raises
:class:`~derive.rendering.template_faults.TemplateFault`, one line naming the template
file and line.

Templates live in the top-level ``templates/`` folder (shipped inside the wheel as
``derive/templates``). They hold layout only: every formula comes from a
:class:`~derive.derivation.value.Derivation`, printed by :mod:`derive.derivation.printing`.
LaTeX templates use delimiters that do not clash with TeX braces:
``((* block *))``, ``((( variable )))`` and ``((= comment =))``.

>>> import sympy
>>> from derive.derivation.value import Derivation, Step
>>> x = sympy.Symbol("x")
>>> d = Derivation("Square", "demo/square", (), (Step(x**2, x * x, "definition"),))
>>> print(render(d, "text"), end="")
Square
  x² = x²    (definition)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import jinja2

from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError, choice_error
from derive.rendering.template_faults import Utf8Loader, render_safely

FORMATS = ("latex", "markdown", "text")
#: Every template a complete set must hold (``--templates DIR`` is checked against it).
TEMPLATES = (
    "derivation.md.j2",
    "derivation.tex.j2",
    "derivation.txt.j2",
    "notes.md.j2",
    "notes.tex.j2",
    "obsidian.md.j2",
    "table.md.j2",
)
_SUFFIX = {"latex": "tex", "markdown": "md", "text": "txt"}
#: Visible characters of an equation line before it is broken at a top-level + or -.
LINE_WIDTH = 64


@dataclass(frozen=True)
class Table:
    """A table for the notes: cells are prose (inline math between dollars).

    >>> Table("Growth", ("norm", "$q_K$"), (("none", "$2^{K} q_0$"),)).header[1]
    '$q_K$'
    """

    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    """A figure file stem (``.png`` for Markdown, ``.pdf`` for LaTeX) and its caption.

    >>> Figure("moments", "Second moment against depth").png
    'moments.png'
    """

    stem: str
    caption: str

    @property
    def png(self) -> str:
        """File name of the PNG version."""
        return f"{self.stem}.png"

    @property
    def pdf(self) -> str:
        """File name of the PDF version."""
        return f"{self.stem}.pdf"


def template_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The folder templates load from: ``override``, else the packaged or source folder.

    An override must hold every template in :data:`TEMPLATES`.

    >>> (template_dir() / "derivation.tex.j2").is_file()
    True
    """
    if override is not None:
        folder = Path(override)
        if not folder.is_dir():
            raise DeriveError(f"templates folder {str(folder)!r} does not exist")
        missing = [name for name in TEMPLATES if not (folder / name).is_file()]
        if missing:
            raise DeriveError(
                f"templates folder {str(folder)!r} is missing {', '.join(missing)}"
            )
        return folder
    here = Path(__file__).resolve().parent.parent  # the derive package
    for folder in (here / "templates", here.parent / "templates"):
        if (folder / TEMPLATES[0]).is_file():
            return folder
    raise DeriveError("no templates folder found: reinstall derive or pass --templates DIR")


class _Delimiters(TypedDict, total=False):
    """The delimiters of jinja2's syntax that a kind of template sets."""

    block_start_string: str
    block_end_string: str
    variable_start_string: str
    variable_end_string: str
    comment_start_string: str
    comment_end_string: str


def environment(kind: str, templates: str | os.PathLike[str] | None = None
                ) -> jinja2.Environment:
    """A jinja2 environment: ``kind`` "latex" uses ``((* *))`` delimiters, others the defaults.

    >>> environment("latex").block_start_string
    '((*'
    """
    options: _Delimiters = {}
    if kind == "latex":
        options = {
            "block_start_string": "((*",
            "block_end_string": "*))",
            "variable_start_string": "(((",
            "variable_end_string": ")))",
            "comment_start_string": "((=",
            "comment_end_string": "=))",
        }
    env = jinja2.Environment(
        loader=Utf8Loader(str(template_dir(templates))),
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        **options,
    )
    env.filters.update(
        tex=tex_prose, md=md_prose, txt=text_prose, tex_lines=tex_lines, md_math=md_math,
        tex_columns=lambda table: tex_columns(table.header, table.rows),
        anchor=anchor, wikilink=lambda title: f"[[{title}]]",
        wikilinks_tex=unlink, wikilinks_md=md_links, cell=lambda cell: cell.replace("|", r"\|"),
    )
    return env


# ---------------------------------------------------------------- prose


def _split_math(prose: str) -> list[tuple[bool, str]]:
    parts = prose.split("$")
    return [(i % 2 == 1, part) for i, part in enumerate(parts) if part or i % 2 == 1]


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "/": r"\slash{}",
}


def _split_code(text: str) -> list[tuple[bool, str]]:
    """Text split at Markdown backticks: (is code, part)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick is text
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    return [(i % 2 == 1, part) for i, part in enumerate(parts) if part]


def tex_prose(prose: str) -> str:
    """Prose for LaTeX: text escaped, inline math kept, Markdown code spans as
    ``\\texttt`` (so ``--block`` stays two hyphens and no backtick is left).

    >>> tex_prose("50% of $q_k$ & more")
    '50\\\\% of $q_k$ \\\\& more'
    >>> tex_prose("`derive variance --block x/2`")
    '\\\\texttt{derive variance -{}-block x/2}'
    """
    out = []
    for is_code, chunk in _split_code(prose):
        if is_code:
            code = "".join(_TEX_ESCAPES.get(ch, ch) if ch != "/" else ch for ch in chunk)
            out.append("\\texttt{" + code.replace("--", "-{}-") + "}")
            continue
        for is_math, part in _split_math(chunk):
            if is_math:
                out.append(f"${part.strip()}$")
            else:
                out.append("".join(_TEX_ESCAPES.get(ch, ch) for ch in part))
    return "".join(out)


def tex_columns(header: tuple[str, ...], rows: tuple[tuple[str, ...], ...],
                wide: int = 14) -> str:
    """A ``tabularx`` column spec: ``X`` (wrapping, ragged right) for a column whose longest
    cell (header included) has more than ``wide`` characters, ``l`` for the others; at
    least one ``X`` so that the table takes the line's width.

    >>> tex_columns(("a", "a long header here"), (("1", "2"),))
    'l>{\\\\raggedright\\\\arraybackslash}X'
    """
    x_col = ">{\\raggedright\\arraybackslash}X"
    longest = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    spec = [x_col if n > wide else "l" for n in longest]
    if x_col not in spec:
        spec[longest.index(max(longest))] = x_col
    return "".join(spec)


def md_code_safe(prose: str) -> str:
    """Markdown prose whose ``*`` is escaped outside code spans and math only.

    >>> md_code_safe("a*b `x + alpha*F(x)`")
    'a\\\\*b `x + alpha*F(x)`'
    """
    out = []
    for is_code, chunk in _split_code(prose):
        out.append(f"`{chunk}`" if is_code else chunk.replace("*", r"\*"))
    return "".join(out)


def md_prose(prose: str) -> str:
    """Prose for Markdown: inline math with no space just inside the dollars.

    >>> md_prose("the moment $ q_k $ grows")
    'the moment $q_k$ grows'
    """
    out = []
    for is_math, part in _split_math(prose):
        out.append(f"${part.strip()}$" if is_math else md_code_safe(part))
    return "".join(out)


_TEXT_MACROS = {
    r"\mathbb{E}": "E", r"\operatorname{Var}": "Var", r"\cdot": "·", r"\sim": "~",
    r"\to": "→", r"\approx": "≈", r"\le": "≤", r"\ge": "≥", r"\infty": "∞",
    r"\quad": " ", r"\,": " ", r"\ll": "≪", r"\gg": "≫", r"\propto": "∝", r"\times": "×",
    r"\sum": "Σ", r"\prod": "Π", r"\partial": "∂", r"\neq": "≠", r"\in": "∈",
    r"\mathcal{N}": "N", r"\left": "", r"\right": "", r"\ldots": "…", r"\dots": "…",
    r"\cdots": "⋯", r"\langle": "⟨", r"\rangle": "⟩", r"\mapsto": "↦", r"\hat": "",
    r"\;": " ", r"\!": "", r"\lvert": "|", r"\rvert": "|",
}
_GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "mu", "sigma", "phi", "Phi", "pi",
          "rho", "tau", "lambda")
_GREEK_CHARS = "αβγδεμσφΦπρτλ"


def text_prose(prose: str) -> str:
    """Prose for terminals: inline LaTeX turned into Unicode where it can be.

    >>> text_prose(r"$z \\sim \\mathcal{N}(0, s^2)$ and $\\sigma_w^{2} = 2/n$")
    'z ~ N(0, s²) and σ_w² = 2/n'
    """
    from derive.derivation.printing import subscript, superscript

    def math(src: str) -> str:
        src = re.sub(r"\\(?:text|mathrm|operatorname|mathbf)\{([^{}]*)\}", r"\1", src)
        src = re.sub(r"\\bar\s*\{?(\w)\}?", "\\1\u0304", src)
        for macro in sorted(_TEXT_MACROS, key=len, reverse=True):
            src = re.sub(re.escape(macro) + r"(?![A-Za-z])", _TEXT_MACROS[macro], src)
        for name, uni in zip(_GREEK, _GREEK_CHARS, strict=True):
            src = re.sub(rf"\\{name}(?![A-Za-z])", uni, src)
        previous = None
        while previous != src:
            previous = src
            src = re.sub(r"\^\{([^{}]*)\}|\^(\w)", lambda m: superscript(m[1] or m[2]), src)
            src = re.sub(r"_\{([^{}]*)\}|_(\w)", lambda m: subscript(m[1] or m[2]), src)
            src = re.sub(r"\\sqrt\{([^{}]*)\}", r"√(\1)", src)
            src = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", src)
        src = re.sub(r"\(([^()\s+\-]+)\)/\(([^()\s+\-]+)\)", r"\1/\2", src)
        return src.replace("{", "").replace("}", "").replace("\\", "")

    return "".join(math(part) if is_math else part for is_math, part in _split_math(prose))


# ---------------------------------------------------------------- equations


def _visible(latex: str) -> int:
    """Rough printed width of a LaTeX string (commands count as one character)."""
    stripped = re.sub(r"\\(left|right|begin|end)\b|\\[,;!]", "", latex)
    stripped = re.sub(r"\\[A-Za-z]+", "x", stripped)
    return len(re.sub(r"[{}^_ ]", "", stripped))


def _top_level_terms(latex: str) -> list[str]:
    """Split at + and - outside braces and brackets; each term keeps its sign."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(latex):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch in "+-" and depth == 0 and i > 0 and latex[i - 1] == " ":
            terms.append(latex[start:i].strip())
            start = i
    terms.append(latex[start:].strip())
    return [t for t in terms if t]


def tex_lines(step: Step, width: int = LINE_WIDTH) -> list[str]:
    """An equation as rows for ``align``: ``lhs &= ...``, long sums broken at + or -.

    >>> import sympy
    >>> x = sympy.Symbol("x")
    >>> rows = tex_lines(Step(x, sum(x**i for i in range(1, 30))), width=40)
    >>> len(rows), rows[1].startswith(r"&\\quad + x^{")
    (3, True)
    """
    from derive.derivation.printing import latex

    lhs, rhs = latex(step.lhs), latex(step.rhs)
    lines: list[str] = []
    current = f"{lhs} &{step.relation} "
    budget = width - _visible(lhs)
    used = 0
    for term in _top_level_terms(rhs):
        size = _visible(term)
        if used and used + size > budget:
            lines.append(current.rstrip())
            current, used = r"&\quad ", 0
        current += term + " "
        used += size
    lines.append(current.rstrip())
    return lines


def md_math(step: Step, width: int = LINE_WIDTH) -> str:
    """An equation for a Markdown ``$$`` block: one line, or ``aligned`` rows when long.

    >>> import sympy
    >>> x = sympy.Symbol("x")
    >>> md_math(Step(x**2, x * x))
    'x^{2} = x^{2}'
    """
    lines = tex_lines(step, width)
    if len(lines) == 1:
        return lines[0].replace(" &", " ", 1).replace("  ", " ")
    body = " \\\\\n".join(lines)
    return f"\\begin{{aligned}}\n{body}\n\\end{{aligned}}"


def unlink(prose: str) -> str:
    """Prose with Obsidian ``[[wikilinks]]`` turned into their plain titles.

    >>> unlink("see [[Layer norm]]")
    'see Layer norm'
    """
    return re.sub(r"\[\[([^\]|]*)(?:\|([^\]]*))?\]\]", lambda m: m[2] or m[1], prose)


def md_links(prose: str) -> str:
    """Prose with Obsidian ``[[Title|text]]`` links turned into Markdown links to anchors.

    >>> md_links("see [[Layer norm|layer norms]]")
    'see [layer norms](#layer-norm)'
    """
    return re.sub(r"\[\[([^\]|]*)(?:\|([^\]]*))?\]\]",
                  lambda m: f"[{m[2] or m[1]}](#{anchor(m[1])})", prose)


def anchor(key: str) -> str:
    """A label or anchor made from a derivation key (letters, digits and hyphens).

    >>> anchor("variance/he/relu")
    'variance-he-relu'
    """
    return re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-").lower()


# ---------------------------------------------------------------- render


def derivations_of(obj: object) -> list[Derivation]:
    """The derivations an object carries: itself, ``.derivation``, or forward and backward.

    >>> derivations_of(42)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: cannot render int: pass a Derivation, PathSum, ...
    """
    if isinstance(obj, Derivation):
        return [obj]
    if hasattr(obj, "forward") and hasattr(obj, "backward"):
        return derivations_of(obj.forward) + derivations_of(obj.backward)
    derivation = getattr(obj, "derivation", None)
    if isinstance(derivation, Derivation):
        return [derivation]
    if callable(derivation) and isinstance(result := derivation(), Derivation):
        return [result]
    if isinstance(obj, Sequence) and not isinstance(obj, str) and obj:
        return [d for item in obj for d in derivations_of(item)]
    raise DeriveError(
        f"cannot render {type(obj).__name__}: pass a Derivation, PathSum, "
        "VarianceAnalysis or Recursion"
    )


def render(obj: object, fmt: str = "text", *,
           templates: str | os.PathLike[str] | None = None) -> str:
    """Render a Derivation, PathSum, VarianceAnalysis or Recursion as latex, markdown or text.

    LaTeX is a fragment (``align*`` environments) for a document or a notebook.

    >>> import sympy
    >>> from derive.derivation.value import Derivation, Step
    >>> x = sympy.Symbol("x")
    >>> d = Derivation("Twice", "demo/twice", (), (Step(2 * x, x + x, "sum"),))
    >>> "2 x &= 2 x" in render(d, "latex")
    True
    """
    if fmt not in FORMATS:
        raise choice_error("format", fmt, FORMATS)
    kind = "latex" if fmt == "latex" else "plain"
    env = environment(kind, templates)
    name = f"derivation.{_SUFFIX[fmt]}.j2"
    return "".join(render_safely(env, name, {"derivation": d}) for d in derivations_of(obj))


def render_template(
    name: str, context: dict[str, object], templates: str | os.PathLike[str] | None = None
) -> str:
    """Render one named template of the set with ``context`` (for the notes).

    >>> from derive.derivation.value import Derivation
    >>> render_template("derivation.txt.j2", {"derivation": Derivation("T", "t")})
    'T\\n'
    """
    kind = "latex" if name.endswith(".tex.j2") else "plain"
    return render_safely(environment(kind, templates), name, context)


def keys(derivations: Iterable[Derivation]) -> list[str]:
    """The keys of some derivations, in order (anchors and labels use them).

    >>> from derive.derivation.value import Derivation
    >>> keys([Derivation("A", "a/b")])
    ['a/b']
    """
    return [d.key for d in derivations]
