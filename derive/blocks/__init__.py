"""The block language: a residual block as a tree of primitives that carry their rules.

- :mod:`derive.blocks.nodes`: the node protocol, the input ``x``, sums and scalings;
- :mod:`derive.blocks.primitives`: ``W``, ``F``, activations, ``LN``, ``BN``, ``Dropout``;
- :mod:`derive.blocks.parser`: the safe parser of block text;
- :mod:`derive.blocks.presets`: the blocks of the literature, one line each;
- :mod:`derive.blocks.block`: :class:`Block`, :func:`block` and the folds of the rules.

>>> from derive.blocks.block import block
>>> block("sandwich").text
'x + LN(F(LN(x)))'
"""
