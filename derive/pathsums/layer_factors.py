"""A layer's Jacobian as the product of its sublayers' factors, the later sublayer on the
left (the chain rule): for pre-LN ``x + Attn(LN(x)); x + MLP(LN(x))`` layer k contributes
(I + M_k L_{k,2})(I + A_k L_{k,1}), the factors named as the path sum names them.

>>> from derive.blocks.block import block
>>> layer_factor(block("transformer-deepnorm"))[0]
'Lₖ,₂(α·I + β·Mₖ)Lₖ,₁(α·I + β·Aₖ)'
"""

from __future__ import annotations

from derive.blocks.block import Block
from derive.blocks.nodes import Input, Node, Stage, sublayers
from derive.pathsums.block_paths import BlockNames, BlockTerm, _scalar, _term


def layer_factor(spec: Block, k: int | str = "k") -> tuple[str, str]:
    """(text, LaTeX) of block k's Jacobian as the product of its sublayers' factors, the
    later sublayer on the left (the chain rule), each factor as the path sum names it.

    >>> from derive.blocks.block import block
    >>> layer_factor(block("transformer-pre"))[0]
    '(I + MₖLₖ,₂)(I + AₖLₖ,₁)'
    >>> layer_factor(block("transformer-post"), 3)[0]
    'L₃,₂(I + M₃)L₃,₁(I + A₃)'
    """
    names = BlockNames(spec.tree, k)
    pieces: list[tuple[str, str]] = []
    for sub in reversed(sublayers(spec.tree)):
        terms = [t for t in (_term(sub, path, names) for path in _sublayer_ways(sub))
                 if t is not None]
        pieces.append(_factored(terms, names))
    return "".join(p[0] for p in pieces), " ".join(p[1] for p in pieces)


def _sublayer_ways(node: Node) -> list[tuple[int, ...]]:
    """Every way from ``node`` down to its sublayer's input (x or the previous sublayer)."""
    if isinstance(node, Input | Stage):
        return [()]
    return [(i, *rest) for i, child in enumerate(node.children)
            for rest in _sublayer_ways(child)]


def _common_front(terms: list[BlockTerm]) -> int:
    """How many leading factors every term shares."""
    front = 0
    while all(len(t.factors) > front for t in terms) and len(
            {t.factors[front] for t in terms}) == 1:
        front += 1
    return front


def _factored(terms: list[BlockTerm], names: BlockNames) -> tuple[str, str]:
    """A sublayer's terms as (text, LaTeX), the factors every term starts with in front:
    ``L(I + A)``; one term is written without parentheses."""
    front = _common_front(terms)
    out = []
    for side, sep in ((0, ""), (1, " ")):
        head = sep.join(names.forms[f][side] for f in terms[0].factors[:front])
        inner = [_scalar(t.coefficient, side)
                 + (sep.join(names.forms[f][side] for f in t.factors[front:]) or "I")
                 for t in terms]
        if len(inner) > 1:
            body = " + ".join(inner)
            out.append(head + (f"\\left({body}\\right)" if side else f"({body})"))
        elif inner[0] == "I":
            out.append(head or "I")
        else:
            out.append(head + sep + inner[0] if head else inner[0])
    return out[0], out[1]
