"""Resources checked before they are taken: the memory a simulation needs.

:func:`simulation_bytes` estimates what :func:`derive.simulation.networks.measure` holds
at once (weights, dropout draws, inputs and the caches of the backward pass),
:func:`available_memory` reads what the machine can give (``MemAvailable`` in
``/proc/meminfo``, else ``os.sysconf``, and never more than ``RLIMIT_AS``), and
:func:`check_simulation_memory` refuses with one line naming both.

>>> format_bytes(8 * 10**9), available_memory() is None or available_memory() > 0
('8.0 GB', True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from derive.errors import DeriveError

#: Bytes of one float64.
FLOAT = 8
#: Arrays of (networks, inputs, units) one node of a block keeps per configuration until
#: the backward pass: its output, its cache and its gradient.
_PER_NODE = 3


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from _walk(child)


def simulation_bytes(configs: Sequence[Any], plans: Sequence[tuple[int, int]], *, depth: int,
                     width: int, chunk: int = 4, rows: int = 512,
                     skeleton: Callable[[Any], Hashable] = id) -> int:
    """Bytes a simulation of ``configs`` holds at once, ``chunk`` networks at a time.

    ``plans[i]`` is (networks, inputs per network) of ``configs[i]``; each config's
    block tree (``config.block.expanded(config)``) names its weight matrices
    (nodes with ``fan_in`` and ``fan_out``, in units of the width). Counted: every
    weight matrix of every block (drawn per network, then stacked), inputs, and per
    node and block the arrays the backward pass keeps, for the largest group of
    trees of one ``skeleton`` that run together (up to ``rows`` input rows).

    >>> from derive.blocks.config import variance_config
    >>> format_bytes(simulation_bytes([variance_config(init="he")], [(32, 16)], depth=6, width=512))
    '83.1 MB'
    """
    matrices: dict[tuple, int] = {}
    groups: dict[Hashable, list[int]] = {}
    inputs_size = 0
    for config, (networks, inputs) in zip(configs, plans, strict=True):
        networks = min(chunk, networks)
        tree = config.block.expanded(config)
        nodes = list(_walk(tree))
        units = width
        for node in nodes:
            if hasattr(node, "fan_in") and hasattr(node, "fan_out"):
                shape = (int(node.fan_in * width), int(node.fan_out * width))
                units = max(units, *shape)
                matrices[(getattr(node, "key", None), *shape, networks)] = (
                    depth * networks * shape[0] * shape[1])
        per_config = depth * len(nodes) * _PER_NODE * networks * inputs * units
        groups.setdefault((networks, inputs, skeleton(tree)), []).append(per_config)
        inputs_size = max(inputs_size, 3 * networks * inputs * width)
    activations = max((sum(sorted(sizes)[-max(1, rows // key[1]):])
                       for key, sizes in groups.items()), default=0)
    weights = sum(matrices.values())
    stacking = max(matrices.values(), default=0) // max(depth, 1)  # one block's, twice
    return FLOAT * (weights + stacking + activations + inputs_size)


def available_memory() -> int | None:
    """Bytes the machine can give now, or None where that cannot be read.

    >>> available = available_memory()
    >>> available is None or available > 0
    True
    """
    found: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            found = None
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY and limit > 0:
            found = limit if found is None else min(found, limit)
    except (ImportError, OSError, ValueError):
        pass
    return found


def format_bytes(size: int) -> str:
    """A size in bytes as kB, MB, GB, TB, PB or EB (scientific past that).

    >>> format_bytes(512), format_bytes(3 * 10**9), format_bytes(8 * 10**40)
    ('512 bytes', '3.0 GB', '8.0e+40 bytes')
    """
    if size < 1000:
        return f"{size} bytes"
    for power, unit in enumerate(("kB", "MB", "GB", "TB", "PB", "EB"), start=1):
        if size < 1000 ** (power + 1):
            return f"{size / 1000**power:.1f} {unit}"
    return f"{float(size):.1e} bytes"


def check_simulation_memory(configs: Sequence[Any], plans: Sequence[tuple[int, int]], *,
                            depth: int, width: int, chunk: int = 4, rows: int = 512,
                            skeleton: Callable[[Any], Hashable] = id) -> int:
    """The bytes :func:`simulation_bytes` estimates, or DeriveError if the machine lacks them.

    >>> from derive.blocks.config import variance_config
    >>> check_simulation_memory([variance_config(init="he")], [(32, 16)], depth=6,
    ...                         width=10**12)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: simulating depth 6, width 1000000000000 (4 networks of 16 inputs at a time) needs about 2.2e+26 bytes of memory, more than the ... available: lower the width, the batch or the depth
    """  # noqa: E501
    needed = simulation_bytes(configs, plans, depth=depth, width=width, chunk=chunk, rows=rows,
                              skeleton=skeleton)
    available = available_memory()
    if available is not None and needed > available:
        networks, inputs = max(plans, key=lambda plan: min(chunk, plan[0]) * plan[1])
        networks = min(chunk, networks)
        raise DeriveError(
            f"simulating depth {depth}, width {width} ({networks} network"
            f"{'s' * (networks != 1)} of {inputs} inputs at a time) needs about "
            f"{format_bytes(needed)} of memory, more than the {format_bytes(available)} "
            "available: lower the width, the batch or the depth"
        )
    return needed
