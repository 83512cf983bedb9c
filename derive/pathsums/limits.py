"""The arguments and limits of a path sum: which depth and ``wrt`` are allowed, and how
many terms may be enumerated, listed or counted exactly.

``wrt`` enters the API as a block index j (``1``) or ``"x"`` and is parsed once, by
:meth:`Wrt.parse`, into a :class:`Wrt`: the block the gradient starts from, 0 for x.

>>> check_path_args(4, "x"), more_terms_than(23, MAX_TERMS)
((4, Wrt(start=0)), True)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from derive.errors import DeriveError
from derive.inputs.numbers import integer, shown

__all__ = ["MAX_BLOCKS", "MAX_COUNT_BITS", "MAX_FORCED_BITS", "MAX_TERMS", "Wrt", "WrtLike",
           "check_path_args", "more_terms_than"]

#: Enumerating more terms than this needs ``force=True`` (``--force``).
MAX_TERMS = 2**22
#: The command line never lists more than 2^MAX_FORCED_BITS terms, even with --force
#: (years of output).
MAX_FORCED_BITS = 48
#: count_paths returns an exact int up to 2^MAX_COUNT_BITS (12.5 MB); past it, it refuses.
MAX_COUNT_BITS = 10**8
#: The later blocks are listed (``.blocks``, the derivation) up to this many.
MAX_BLOCKS = 10**7


@dataclass(frozen=True)
class Wrt:
    """What a path sum differentiates with respect to: the output of block j's branch f_j,
    or the input x.

    ``start`` is the block the gradient starts from: j for dy/df_j = (I + J_N) ... (I + J_{j+1}),
    and 0 for x, since h_0 = x and dy/dx = (I + J_N) ... (I + J_1). The later blocks, one
    factor each, are start+1 .. N.

    >>> Wrt.parse("x", 4), Wrt.parse(2, 4).later(4), str(Wrt(0)), Wrt(3).gradient
    (Wrt(start=0), 2, 'x', 'dy/df_3')
    """

    start: int

    @classmethod
    def parse(cls, value: object, depth: int) -> Wrt:
        """``value`` (a block index 1..depth, ``"x"`` or a Wrt) as a Wrt, or DeriveError.

        >>> Wrt.parse(5, 4)
        Traceback (most recent call last):
        ...
        derive.errors.DeriveError: wrt must be a block index 1..4 or 'x', got 5
        """
        if isinstance(value, Wrt) and 0 <= value.start <= depth:
            return value
        if value == "x":
            return cls(0)
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                or not 1 <= int(value) <= depth):
            raise DeriveError(f"wrt must be a block index 1..{depth} or 'x', got {shown(value)}")
        return cls(int(value))

    @property
    def is_input(self) -> bool:
        """Whether this is the input x (dy/dx) rather than a branch's output."""
        return self.start == 0

    @property
    def value(self) -> int | str:
        """As the API takes it and JSON writes it: the block index j, or ``"x"``."""
        return "x" if self.start == 0 else self.start

    def __str__(self) -> str:
        return str(self.value)

    @property
    def gradient(self) -> str:
        """The gradient's name in plain text, for messages: ``dy/dx`` or ``dy/df_j``."""
        return "dy/dx" if self.start == 0 else f"dy/df_{self.start}"

    def later(self, depth: int) -> int:
        """The number of later blocks, N - j: one factor (I + J_k) each."""
        return depth - self.start


#: What the API accepts for ``wrt``: a block index, ``"x"``, or a parsed Wrt.
WrtLike = int | str | Wrt


def check_path_args(depth: object, wrt: object = 1) -> tuple[int, Wrt]:
    """Validate depth and wrt; return them as (int, :class:`Wrt`).

    >>> check_path_args(4, 2)
    (4, Wrt(start=2))
    >>> check_path_args(4, 5)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: wrt must be a block index 1..4 or 'x', got 5
    """
    depth = integer(depth, "depth", minimum=1, text=False)
    return depth, Wrt.parse(wrt, depth)


def more_terms_than(later: int, limit: int) -> bool:
    """Whether 2^later > limit, without building 2^later.

    >>> more_terms_than(22, 2**22), more_terms_than(23, 2**22), more_terms_than(10**18, 5)
    (False, True, True)
    """
    return later >= limit.bit_length() or 1 << later > limit
