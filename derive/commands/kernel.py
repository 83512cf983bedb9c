"""``derive kernel``: two inputs through depth, the correlation of their activations and of
their gradients.

A thin layer over :func:`derive.recursions.kernel.kernel` (and, for a plain stack of one
activation, :func:`derive.recursions.phase.phase`): it parses and checks the options,
then prints the correlation recursions, their laws and the values at ``--depth``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import TYPE_CHECKING

import click

from derive.commands.options import (
    Exact,
    Integer,
    parameter_options,
    presets_epilog,
    symbol_settings,
)
from derive.errors import DeriveError
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS

if TYPE_CHECKING:  # pragma: no cover
    import sympy

    from derive.blocks.config import VarianceConfig
    from derive.recursions.kernel import KernelAnalysis
    from derive.recursions.phase import Phase

EPILOG = """\b
Examples:
  derive kernel --init he --block 'F(x)'       plain ReLU stack: 1 - rho_k ~ (9 pi^2/2) k^-2
  derive kernel --init he                      x + F(x): the gradients stay more correlated
  derive kernel --init he --norm pre --depth 50
  derive kernel --activation tanh --block 'F(x)' --fan-in-variance 2 --sigma-b2 0.1
  derive kernel --init he --rho0 0.9 --format json
  derive kernel --block transformer-pre --activation gelu --mlp-ratio 4 --depth 50
                                               two of 16 tokens through pre-LN layers
  derive kernel --block attention-only --attention uniform --tokens oo
"""

#: Terminal text of the LaTeX that the laws' reasons carry.
_TEX_WORDS = {
    r"\rho": "ρ", r"\epsilon": "ε", r"\chi": "χ", r"\pi": "π", r"\sigma": "σ", r"\phi": "φ",
    r"\xi": "ξ", r"\gamma": "γ", r"\alpha": "α", r"\beta": "β", r"\ln": "ln", r"\log": "log",
    r"\cdot": "·", r"\simeq": "≃", r"\sim": "~", r"\to": "→", r"\infty": "∞", r"\leq": "≤",
    r"\geq": "≥", r"\gg": "≫", r"\times": "×", r"\left": "", r"\right": "", r"\,": " ", r"\ ": " ",
    r"\quad": " ",
}


def _group(tex: str, start: int) -> tuple[str, int]:
    """The text of the brace group opening at ``tex[start]`` and the index after it."""
    depth = 0
    for index in range(start, len(tex)):
        if tex[index] == "{":
            depth += 1
        elif tex[index] == "}":
            depth -= 1
            if depth == 0:
                return tex[start + 1:index], index + 1
    return tex[start + 1:], len(tex)


def _wrapped(text: str) -> str:
    """``text`` in parentheses unless it is one atom (a number, a name, a group)."""
    if re.fullmatch(r"[\w.ρεχπσφξγαβ√·]+|\(.*\)", text) and not (
            text.startswith("(") and text.count("(") != 1):
        return text
    return f"({text})"


#: Commands with one brace group, and how the group's text is written.
_WITH_GROUP = {r"\sqrt": lambda inner: "√" + _wrapped(inner),
               r"\operatorname": lambda inner: inner, r"\text": lambda inner: inner}


def _script(char: str, tex: str, index: int) -> tuple[str, int]:
    """The super- or subscript that opens at ``tex[index]`` (``^`` or ``_``) as text."""
    from derive.derivation.printing import subscript, superscript

    if tex[index + 1:index + 2] == "{":
        inner, index = _group(tex, index + 1)
    else:
        inner, index = tex[index + 1:index + 2], index + 2
    shown = _math_text(inner)
    if char == "_":
        return subscript(shown), index
    if shown in ("grad", "*"):
        return ("ᵍʳᵃᵈ" if shown == "grad" else "*"), index
    raised = superscript(shown)
    return (raised if not raised.startswith("^") else "^" + _wrapped(shown)), index


def _command(tex: str, index: int) -> tuple[str, int]:
    """The LaTeX command that opens at ``tex[index]`` (a backslash) as text."""
    word = re.match(r"\\([A-Za-z]+|.)", tex[index:])
    name = word.group(0) if word else "\\"
    after = index + len(name)
    if name == r"\frac" and tex[after:after + 1] == "{":
        top, after = _group(tex, after)
        bottom, after = _group(tex, after) if tex[after:after + 1] == "{" else ("", after)
        return f"{_wrapped(_math_text(top))}/{_wrapped(_math_text(bottom))}", after
    if name in _WITH_GROUP and tex[after:after + 1] == "{":
        inner, after = _group(tex, after)
        return _WITH_GROUP[name](_math_text(inner)), after
    return _TEX_WORDS.get(name, name.lstrip("\\")), after


def _math_text(tex: str) -> str:
    """Inline LaTeX (the inside of ``$...$``) as terminal text: fractions as a/b, roots as
    √, powers and indices as Unicode super- and subscripts where they have them.

    >>> _math_text(r"\\frac{2 \\sqrt{2}}{3 \\pi}\\,\\epsilon^{\\frac{3}{2}}")
    '(2 √2)/(3 π) ε^(3/2)'
    """
    out, index = [], 0
    while index < len(tex):
        char = tex[index]
        if char in "^_":
            piece, index = _script(char, tex, index)
        elif char == "\\":
            piece, index = _command(tex, index)
        else:
            piece, index = ("" if char in "{}" else char), index + 1
        out.append(piece)
    text = re.sub(r"\s+", " ", "".join(out))
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", text)).strip()


def prose(tex: str | None) -> str:
    """Prose with inline LaTeX (``$...$``), made readable in a terminal.

    >>> prose(r"the map's slope at $\\rho^* = 1$ is $\\chi_c = 1/2 < 1$")
    "the map's slope at ρ* = 1 is χ_c = 1/2 < 1"
    """
    parts = (tex or "").split("$")
    return "".join(_math_text(part) if odd else part for odd, part in
                   ((i % 2 == 1, p) for i, p in enumerate(parts)))


def _number(value: object) -> str:
    """A float in six significant digits (exact numbers as SymPy prints them)."""
    import sympy

    expr = sympy.sympify(value)
    if expr.is_Integer or expr.is_Rational:
        return str(expr)
    number = float(expr)
    return f"{number:.6g}" if math.isfinite(number) else ("∞" if number > 0 else "-∞")


# --- the options ----------------------------------------------------------------------

def _checked_options(parameters: dict[str, sympy.Expr | None]) -> dict[str, sympy.Expr | None]:
    """Every parameter by its rule, refused by its flag; one weight variance, in the
    convention that gives numbers."""
    from derive.inputs.parameters import BY_NAME

    for name, value in parameters.items():
        if value is not None:
            BY_NAME[name].rule(BY_NAME[name].flag, value)
    if parameters.get("sigma_w2") is not None:
        if parameters.get("fan_in_variance") is not None:
            raise DeriveError("--sigma-w2 and --fan-in-variance both set the weight variance: "
                              "give one of them (for a kernel profile, --fan-in-variance)")
        raise DeriveError(f"--sigma-w2 {parameters['sigma_w2']} is a per-entry variance, which "
                          "leaves the width n symbolic, and a kernel profile needs numbers: "
                          "use --fan-in-variance S (Var W = S/fan_in; He is 2, LeCun 1)")
    return parameters


def _rho0(value: sympy.Expr) -> sympy.Expr:
    if not (-1 <= value <= 1):
        raise DeriveError(f"--rho0 must be a number in [-1, 1] (the inputs' correlation), "
                          f"got {value}")
    return value


def _q0(value: sympy.Expr) -> sympy.Expr:
    if not value > 0:
        raise DeriveError(f"--q0 must be a number > 0 (the inputs' second moment), got {value}")
    return value


# --- the phase of a plain stack -----------------------------------------------------------

def plain_stack(config: VarianceConfig) -> tuple[str, str] | None:
    """(activation, ``"W(phi(x))"`` or ``"phi(W(x))"``) where the block is one weight
    matrix and one activation (the plain networks of Poole et al. 2016), else None.

    >>> from derive.blocks.config import variance_config
    >>> plain_stack(variance_config(init="he", block="F(x)"))
    ('relu', 'W(phi(x))')
    >>> plain_stack(variance_config(init="he", block="x + F(x)")) is None
    True
    """
    from derive.blocks.nodes import Input
    from derive.blocks.primitives import Activation, Weight

    top = config.block.expanded(config)
    inner = top.children[0] if len(top.children) == 1 else None
    if inner is None or len(inner.children) != 1 or not isinstance(inner.children[0], Input):
        return None
    pair = (type(top), type(inner))
    weight = top if isinstance(top, Weight) else inner
    if not isinstance(weight, Weight) or weight.zero or weight.fan_in != 1 or weight.fan_out != 1:
        return None
    activation = inner if isinstance(inner, Activation) else top
    if not isinstance(activation, Activation):
        return None
    name = activation.name or config.activation
    if pair == (Weight, Activation):
        return name, "W(phi(x))"
    if pair == (Activation, Weight):
        return name, "phi(W(x))"
    return None


def fan_in_variance(config: VarianceConfig) -> sympy.Expr:
    """sigma_w^2 of Var W = sigma_w^2/fan_in that the configuration implies for a square
    matrix: He 2, LeCun 1, Xavier (equal fans) 1, or ``--fan-in-variance``.

    >>> from derive.blocks.config import variance_config
    >>> [fan_in_variance(variance_config(init=i)) for i in ("xavier", "he", "lecun")]
    [1, 2, 1]
    """
    import sympy

    from derive.derivation.symbols import n

    return sympy.cancel(n * config.weight_variance(n, n))


def _stack_phase(config: VarianceConfig) -> tuple[str, sympy.Expr, Phase | str] | None:
    """(the plain stack's form, its sigma_w^2, its Phase or why none is given), or None
    where the block is not a plain stack of one activation."""
    from derive.recursions.phase import phase

    plain = plain_stack(config)
    if plain is None:
        return None
    activation, form = plain
    sigma_w2 = fan_in_variance(config)
    try:
        found: Phase | str = phase(activation, sigma_w2, config.sigma_b2,
                                   negative_slope=config.negative_slope)
    except DeriveError as err:
        found = f"not computed: {err}"
    return form, sigma_w2, found


#: Why the ordered/chaotic picture of the correlation needs a fixed point q* > 0.
WITHOUT_Q_STAR = ("the length map has no fixed point q* > 0, so the phase does not decide "
                  "the correlation: the forward law above does")
_PHASE_FIELDS = ("q_star", "rho_star", "c_star", "chi_1", "chi_c", "chi_q", "xi_q", "xi_c")


def _json_number(value: float | None) -> float | str | None:
    """A float for JSON: infinities as the strings ``inf`` and ``-inf``."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf" if value < 0 else "nan"


def _phase_dict(found: tuple[str, sympy.Expr, Phase | str] | None) -> dict[str, object] | None:
    if found is None:
        return None
    form, sigma_w2, result = found
    head: dict[str, object] = {"network": form, "sigma_w2": str(sigma_w2)}
    if isinstance(result, str):
        return {**head, "phase": None, "reason": result}
    note = WITHOUT_Q_STAR if result.phase is not None and not result.q_star else None
    return {**head, "activation": result.activation, "sigma_b2": result.sigma_b2,
            "phase": result.phase, "reason": result.reason, "note": note,
            **{name: _json_number(getattr(result, name)) for name in _PHASE_FIELDS}}


# --- the outputs ----------------------------------------------------------------------

def _profile(analysis: KernelAnalysis) -> dict[str, dict[str, list[float]]]:
    """The profiles, or a DeriveError naming --depth where they leave a double's range."""
    try:
        profile = analysis.profile()
    except (DeriveError, OverflowError) as err:
        if isinstance(err, DeriveError) and not re.search(r"\b(inf|nan)\b", str(err)):
            raise
        raise DeriveError(f"--depth {analysis.depth} is too deep for this configuration: the "
                          f"values leave the range of a double on the way ({err}); choose a "
                          "smaller --depth") from None
    for direction in profile.values():
        for name, values in direction.items():
            if not all(math.isfinite(v) for v in values):
                k = next(i for i, v in enumerate(values) if not math.isfinite(v))
                raise DeriveError(f"--depth {analysis.depth} is too deep for this "
                                  f"configuration: {name} leaves the range of a double at "
                                  f"k = {k}; choose a smaller --depth")
    return profile


def _law_rows(law: object, direction: str) -> list[tuple[str, str]]:
    kind = law.kind  # type: ignore[attr-defined]
    if kind == "none":
        return [("law", "none: " + prose(law.reason))]  # type: ignore[attr-defined]
    rows = [("law", law.text), ("why", prose(law.reason))]  # type: ignore[attr-defined]
    limit = law.limit  # type: ignore[attr-defined]
    if direction == "forward" and kind in ("geometric", "power", "logarithmic", "superlinear"):
        rows.append(("fixed point", f"ρ* = {_number(limit)}"))
    elif direction == "backward" and limit is not None:
        rows.append(("limit", f"ρᵍʳᵃᵈ₀ → {_number(limit)} as K grows"))
    if kind == "geometric":
        scale = law.depth_scale  # type: ignore[attr-defined]
        rows.append(("depth scale", f"ξ = {_number(scale)} blocks (a factor e every ξ blocks)"))
    elif kind in ("power", "logarithmic", "stretched"):
        rows.append(("depth scale", "none: the approach is slower than geometric"))
    elif kind == "superlinear":
        rows.append(("depth scale", "none: the approach is faster than geometric"))
    return rows


def _phase_text(found: tuple[str, sympy.Expr, Phase | str]) -> list[str]:
    form, sigma_w2, result = found
    network = ("hₖ = W·φ(hₖ₋₁) + b" if form == "W(phi(x))"
               else "hₖ = φ(uₖ), uₖ = W·hₖ₋₁ + b = W·φ(uₖ₋₁) + b")
    lines = ["", f"phase: the plain network {network}, Var W = σ_w²/fan_in, "
             "Var b = σ_b² (Poole et al. 2016; Schoenholz et al. 2017)"]
    if form != "W(phi(x))":
        lines.append("  (q*, ρ*, c* are those of the pre-activations uₖ, not of hₖ)")
    if isinstance(result, str):
        return [*lines, f"  {'phase':<12} {result}"]

    def value(x: float | None) -> str:
        return "none" if x is None else _number(x)

    label = result.phase or "none"
    if result.phase is not None and not result.q_star:
        label += f" by χ₁ alone: {WITHOUT_Q_STAR}"
    rows = [("σ_w², σ_b²", f"{_number(sigma_w2)}, {_number(result.sigma_b2)}"),
            ("phase", label),
            ("χ₁", f"{value(result.chi_1)}: σ_w² E[φ'(u)²], u ~ N(0, q*) (any q for relu, "
                   "leaky_relu, linear): a layer's mean squared Jacobian singular value; at "
                   "a fixed point q* > 0, also the slope of the correlation map at ρ = 1"),
            ("q*", value(result.q_star)),
            ("ρ*, c*", f"{value(result.rho_star)}, {value(result.c_star)}"),
            ("χ_c, ξ_c", f"{value(result.chi_c)}, {value(result.xi_c)}"),
            ("χ_q, ξ_q", f"{value(result.chi_q)}, {value(result.xi_q)}")]
    if result.reason:
        rows.append(("note", result.reason))
    return lines + [f"  {name:<12} {text}" for name, text in rows]


def _header(analysis: KernelAnalysis) -> list[str]:
    import sympy

    from derive.derivation.printing import text

    config = analysis.config
    extra = ""
    if config.fan_in_variance is not None:
        extra += f", σ_w² = {text(config.fan_in_variance)} (Var W = σ_w²/fan_in)"
    if config.sigma_b2 != 0:
        extra += f", σ_b² = {text(config.sigma_b2)}"
    block = config.block
    source = f" ({block.source})" if block.source else ""
    inputs = "two inputs"
    if block.has_attention:
        many = ("infinitely many (n → ∞)" if config.tokens == sympy.oo
                else f"the {text(config.tokens)}")
        inputs = (f"two of {many} tokens of a sequence, {config.attention} attention "
                  "(ρ → 1: rank collapse)")
        if config.tokens == 1:
            inputs = (f"the tokens of two one-token sequences, {config.attention} attention "
                      "(a single token attends to itself)")
    return [f"{config.label}: {inputs}, mean field, infinite width, "
            f"q₀ = {text(analysis.q0)}, ρ₀ = {text(analysis.rho0)}{extra}",
            f"block: B(x) = {block.text}{source}"]


def _text_report(analysis: KernelAnalysis, found: tuple | None) -> str:
    """The terminal text: header, forward, backward and, for a plain stack, its phase."""
    from derive.derivation.printing import text

    profile, depth = _profile(analysis), analysis.depth
    reason = "none: " + prose(analysis.map_reason)
    forward, backward = analysis.forward_map, analysis.backward_map
    forward_rows = [("recursion", reason if forward is None else text(forward)),
                    *_law_rows(analysis.forward_law, "forward"),
                    (f"at K = {depth}", f"q_{depth} = {_number(profile['forward']['q_a'][-1])}, "
                                        f"ρ_{depth} = {_number(profile['forward']['rho'][-1])}")]
    backward_reason = "none: " + prose(analysis.backward_map_reason or "")
    backward_rows = [("recursion", backward_reason if backward is None else text(backward)),
                     *_law_rows(analysis.backward_law, "backward"),
                     (f"at K = {depth}", f"ρᵍʳᵃᵈ₀ = {_number(profile['backward']['rho'][0])}")]
    lines = [*_header(analysis), "",
             "forward: ρₖ = cₖ/√(q_a q_b), cₖ = E[hₖ(a) hₖ(b)] per unit",
             *(f"  {name:<12} {value}" for name, value in forward_rows), "",
             "backward: ρᵍʳᵃᵈₖ = gₖ/√(d_a d_b), gₖ = E[∂L/∂hₖ(a) ∂L/∂hₖ(b)], "
             "ρᵍʳᵃᵈ_K = 1 at the output",
             *(f"  {name:<12} {value}" for name, value in backward_rows)]
    if found is not None:
        lines += _phase_text(found)
    return "\n".join(lines)


def _json_report(analysis: KernelAnalysis, found: tuple | None) -> str:
    """The analysis as JSON (:meth:`KernelAnalysis.to_dict`) with the plain stack's phase."""
    _profile(analysis)
    data = analysis.to_dict()
    data["phase"] = _phase_dict(found)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)


def _why_not(analysis: KernelAnalysis, direction: str) -> str | None:
    """Why the map of ``direction`` is not written."""
    if direction == "forward":
        return analysis.map_reason
    return analysis.backward_map_reason


def _tex_number(value: float) -> str:
    mantissa, _, power = f"{value:.6g}".partition("e")
    return mantissa if not power else rf"{mantissa} \times 10^{{{int(power)}}}"


def _tex_report(analysis: KernelAnalysis, found: tuple | None, markdown: bool) -> str:
    """LaTeX (comments and display math) or Markdown (headings, $$, lists)."""
    from derive.derivation.printing import latex

    profile, depth = _profile(analysis), analysis.depth
    q_last, rho_last = profile["forward"]["q_a"][-1], profile["forward"]["rho"][-1]
    values = {"forward": rf"q_{{{depth}}} = {_tex_number(q_last)},\ "
                         rf"\rho_{{{depth}}} = {_tex_number(rho_last)}",
              "backward": rf"\rho^{{grad}}_0 = {_tex_number(profile['backward']['rho'][0])}"}
    title = (f"{analysis.config.label}: rho_0 = {analysis.rho0}, q_0 = {analysis.q0}, "
             f"K = {depth}")
    out = [f"**{title}**\n" if markdown else f"% {title}"]
    for direction, eq, law in (("forward", analysis.forward_map, analysis.forward_law),
                               ("backward", analysis.backward_map, analysis.backward_law)):
        heading = ("Forward: the inputs' correlation" if direction == "forward"
                   else "Backward: the gradients' correlation")
        body = None if eq is None else latex(eq)
        if markdown:
            out.append(f"### {heading}\n")
            out.append(f"$$\n{body}\n$$\n" if body else f"- {_why_not(analysis, direction)}")
            if law.kind != "none":  # type: ignore[attr-defined]
                out.append(f"- law: ${law.latex}$: {law.reason}")  # type: ignore[attr-defined]
            else:
                out.append(f"- law: none: {law.reason}")  # type: ignore[attr-defined]
            out.append(f"- at $K = {depth}$: ${values[direction]}$\n")
        else:
            out.append(f"% {heading}")
            out.append(f"\\[\n{body}\n\\]" if body else f"% {_why_not(analysis, direction)}")
            if law.kind != "none":  # type: ignore[attr-defined]
                out.append(f"\\[\n{law.latex}\n\\]")  # type: ignore[attr-defined]
            out.append(f"% law: {law.reason}")  # type: ignore[attr-defined]
            out.append(f"% at K = {depth}: {values[direction]}")
    phase = _phase_dict(found)
    if phase is not None:
        def written(value: object) -> str:
            return "none" if value is None else (
                _number(value) if isinstance(value, float) else str(value))

        shown = ", ".join(f"{name} = {written(phase[name])}" for name in
                          ("sigma_w2", "sigma_b2", "phase", *_PHASE_FIELDS) if name in phase)
        if phase.get("note"):
            shown += f" ({phase['note']})"
        out.append(f"- phase ({phase['network']}): {shown}" if markdown
                   else f"% phase ({phase['network']}): {shown}")
    return "\n".join(out).rstrip()


@click.command(epilog=presets_epilog(EPILOG))
@click.option("--init", type=click.Choice(INITS), default="xavier", show_default=True,
              help="Weight initialization (variance 2/(fan_in+fan_out), 2/fan_in, 1/fan_in).")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="relu", show_default=True,
              help="phi; relu, leaky_relu, linear and erf have closed-form kernels.")
@click.option("--norm", type=click.Choice(NORMS), default=None,
              help="LayerNorm placement, a preset: none x + F(x), pre x + F(LN(x)), "
                   "post LN(x + F(x)). [default: none]")
@click.option("--block", "block_spec", default=None, metavar="EXPR",
              help="The block: a preset (below) or an expression in x, such as 'F(x)' "
                   "(a plain stack) or '(x + F(x))/sqrt(2)'.")
@symbol_settings()
@click.option("--branch", type=click.Choice(BRANCHES), default="single", show_default=True,
              help="F: single W phi(h); mlp W2 phi(W1 h).")
@parameter_options(symbols=False)
@click.option("--q0", type=Exact(symbols=False), default="1", show_default=True, metavar="Q0",
              help="E[x^2] of each input: a number > 0.")
@click.option("--rho0", type=Exact(symbols=False), default="1/2", show_default=True,
              metavar="R", help="The inputs' correlation rho_0, in [-1, 1].")
@click.option("--depth", type=Integer(0), default=10, show_default=True, metavar="K",
              help="Depth K for the values (at most 10000).")
@click.option("--format", "fmt", type=click.Choice(("text", "latex", "markdown", "json")),
              default="text", show_default=True,
              help="json carries the profiles q_a, q_b, c, rho and d_a, d_b, g, rho over "
                   "k = 0..K, the maps and laws in LaTeX.")
def kernel(init: str, activation: str, norm: str | None, block_spec: str | None,
           settings: tuple[str, ...], branch: str, q0: sympy.Expr, rho0: sympy.Expr,
           depth: int, fmt: str, **parameters: sympy.Expr | None) -> None:
    """Two inputs through depth: the correlation of their activations and of their
    gradients (shattered gradients, the edge of chaos); for a block with Attn, two tokens
    of a sequence of --tokens (rank collapse: rho -> 1).

    Prints the correlation recursion rho_k = G(rho_{k-1}) (forward) and that of the
    gradients (backward, rho^grad_K = 1 at the output), their laws in depth with the
    fixed point and depth scale, and the values at --depth; for a plain stack of one
    activation ('F(x)' or 'phi(W(x))') also its mean-field phase. Mean field, infinite
    width, gradient independence, at initialization.
    """
    # standard attention's softmax expectations are small NumPy quadratures: one BLAS
    # thread is faster than threads that share the cores (an OPENBLAS_NUM_THREADS the user
    # set wins, and NumPy reads it when first imported)
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from derive.inputs.parameters import symbol_values
    from derive.recursions.kernel import kernel as analyse

    if norm is not None and block_spec is not None:
        raise click.UsageError("--norm and --block both name the block: give one of them")
    options = _checked_options(parameters)
    correlation, second = _rho0(rho0), _q0(q0)
    values = symbol_values(settings)
    analysis = analyse(init, activation, norm or "none", branch, block=block_spec,
                       values=values, q0=second, rho0=correlation, depth=depth, **options)
    found = _stack_phase(analysis.config)
    if fmt == "json":
        click.echo(_json_report(analysis, found))
    elif fmt == "text":
        click.echo(_text_report(analysis, found))
    else:
        click.echo(_tex_report(analysis, found, markdown=fmt == "markdown"))
