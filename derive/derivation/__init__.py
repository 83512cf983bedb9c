"""The value every output is made of: :class:`Derivation` and its steps, the symbols of
the notation, and the printers (LaTeX and Unicode) in the book's notation.
"""
