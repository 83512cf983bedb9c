"""Named blocks from the literature, one line each, with their sources.

``none``, ``pre`` and ``post`` are the three placements of ``--norm``. The rest
are the remedies a student of residual networks meets. ``check`` holds the values
the simulation gives a preset's symbols (the derivation keeps them symbolic).

This module imports nothing heavy, so ``--help`` can list the presets.

>>> PRESETS["rescaled"].expression
'(x + F(x))/sqrt(2)'
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """A named block: its expression, its source, and what it does in one line."""

    name: str
    expression: str
    source: str
    summary: str
    check: dict[str, str] = field(default_factory=dict)


PRESETS = {p.name: p for p in (
    Preset("none", "x + F(x)", "He et al. 2016; UDL 11.2",
           "the plain residual block, no normalization"),
    Preset("pre", "x + F(LN(x))", "Xiong et al. 2020; UDL 11.4",
           "pre-LN: LayerNorm first in the branch"),
    Preset("post", "LN(x + F(x))", "Vaswani et al. 2017; UDL 11.4",
           "post-LN: LayerNorm after the sum"),
    Preset("rescaled", "(x + F(x))/sqrt(2)", "UDL 11.3",
           "the sum rescaled by 1/sqrt(2)"),
    Preset("bn-first", "x + F(BN(x))", "UDL 11.4.1, fig. 11.6c",
           "BatchNorm as the first step of the branch"),
    Preset("skipinit", "x + alpha*F(x)", "De & Smith 2020 (SkipInit); Bachlechner et al. "
           "2021 (ReZero)", "a scalar alpha on the branch, initialized small or zero",
           {"alpha": "1/2"}),
    Preset("nf-resnet", "x + alpha*F(x/std(x))", "Brock et al. 2021 (NF-ResNets)",
           "the branch input divided by its expected std, the branch scaled by alpha",
           {"alpha": "1/5"}),
    Preset("deepnorm", "LN(alpha*x + beta*F(x))", "Wang et al. 2022 (DeepNet)",
           "post-LN with the skip up-weighted by alpha and the branch scaled by beta",
           {"alpha": "2", "beta": "1/2"}),
    Preset("sandwich", "x + LN(F(LN(x)))", "Ding et al. 2021 (CogView)",
           "sandwich LN: LayerNorm before and after the branch"),
    Preset("fixup", "x + F0(x)", "Zhang et al. 2019 (Fixup)",
           "the branch's last layer initialized to zero"),
    Preset("dropout", "x + Dropout(F(x), p)", "UDL 11.2's block; dropout: Srivastava et al. 2014",
           "dropout on the branch", {"p": "1/10"}),
)}

#: Transformer layers: two sublayers each (attention, then the MLP), or pure attention.
#: They act on sequences of tokens (``--tokens``), so the one-point comparisons of
#: :data:`PRESETS` leave them out.
TRANSFORMER_PRESETS = {p.name: p for p in (
    Preset("transformer-post", "LN(x + Attn(x)); LN(x + MLP(x))", "Vaswani et al. 2017",
           "a transformer layer, LayerNorm after each sum (post-LN)"),
    Preset("transformer-pre", "x + Attn(LN(x)); x + MLP(LN(x))",
           "GPT-2 (Radford et al. 2019); Xiong et al. 2020",
           "a transformer layer, LayerNorm first in each branch (pre-LN)"),
    Preset("transformer-scaled", "x + alpha*Attn(LN(x)); x + alpha*MLP(LN(x))",
           "Noci et al. 2022", "pre-LN with both branches scaled by alpha, 1/sqrt(L) for L "
           "layers", {"alpha": "1/4"}),
    Preset("transformer-deepnorm", "LN(alpha*x + beta*Attn(x)); LN(alpha*x + beta*MLP(x))",
           "Wang et al. 2022 (DeepNet)", "post-LN with the skip up-weighted by alpha and the "
           "branches scaled by beta", {"alpha": "2", "beta": "1/2"}),
    Preset("attention-only", "Attn(x)", "Dong et al. 2021",
           "pure self-attention: no skip, no MLP, no normalization"),
)}
#: Every named block, residual blocks first.
ALL_PRESETS = {**PRESETS, **TRANSFORMER_PRESETS}

#: The three placements of ``--norm``, in order.
NORM_PRESETS = ("none", "pre", "post")


def describe() -> str:
    """One line per preset for ``--help``: name, expression, source.

    >>> describe().splitlines()[0]
    'none: x + F(x) (He et al. 2016; UDL 11.2)'
    """
    return "\n".join(f"{p.name}: {p.expression} ({p.source})" for p in ALL_PRESETS.values())
