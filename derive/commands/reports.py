"""What the commands' reports share: a plain-text table with aligned columns, and
numbers for JSON (finite, at ten significant digits, or null).

>>> print(aligned(("name", "value"), [("a", "1.5"), ("bb", "10")], right={1}))
name  value
----  -----
a       1.5
bb       10
>>> finite(float("nan")), finite(1 / 3)
(None, 0.3333333333)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def aligned(header: Sequence[str], rows: Iterable[Sequence[str]], right: set[int]) -> str:
    """The header, a rule, then the rows, columns padded to their widest cell; the columns
    in ``right`` aligned right, the others left."""
    body = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(header))]
    lines = []
    for line in body:
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def finite(value: float) -> float | None:
    """``value`` at ten significant digits for JSON, or None where it is nan or infinite."""
    return float(f"{value:.10g}") if value == value and abs(value) != float("inf") else None
