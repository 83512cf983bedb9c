"""The arguments and limits of a path sum: which depth and ``wrt`` are allowed, and how
many terms may be enumerated, listed or counted exactly.

>>> check_path_args(4, "x"), more_terms_than(23, MAX_TERMS)
((4, 'x'), True)
"""

from __future__ import annotations

import numbers

from derive.errors import DeriveError
from derive.inputs.numbers import integer, shown

__all__ = ["MAX_BLOCKS", "MAX_COUNT_BITS", "MAX_FORCED_BITS", "MAX_TERMS", "check_path_args",
           "more_terms_than"]

#: Enumerating more terms than this needs ``force=True`` (``--force``).
MAX_TERMS = 2**22
#: The command line never lists more than 2^MAX_FORCED_BITS terms, even with --force
#: (years of output).
MAX_FORCED_BITS = 48
#: count_paths returns an exact int up to 2^MAX_COUNT_BITS (12.5 MB); past it, it refuses.
MAX_COUNT_BITS = 10**8
#: The later blocks are listed (``.blocks``, the derivation) up to this many.
MAX_BLOCKS = 10**7


def check_path_args(depth: object, wrt: object = 1) -> tuple[int, int | str]:
    """Validate depth and wrt; return them as (int, int or ``"x"``).

    >>> check_path_args(4, "x")
    (4, 'x')
    >>> check_path_args(4, 5)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: wrt must be a block index 1..4 or 'x', got 5
    """
    depth = integer(depth, "depth", minimum=1, text=False)
    if wrt == "x":
        return depth, "x"
    if isinstance(wrt, bool) or not isinstance(wrt, numbers.Integral) or not 1 <= wrt <= depth:
        raise DeriveError(f"wrt must be a block index 1..{depth} or 'x', got {shown(wrt)}")
    return depth, int(wrt)


def more_terms_than(later: int, limit: int) -> bool:
    """Whether 2^later > limit, without building 2^later.

    >>> more_terms_than(22, 2**22), more_terms_than(23, 2**22), more_terms_than(10**18, 5)
    (False, True, True)
    """
    return later >= limit.bit_length() or 1 << later > limit
