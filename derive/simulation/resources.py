"""Resources checked before they are taken: the memory and the work a simulation needs.

:func:`simulation_bytes` estimates what :func:`derive.simulation.networks.measure` holds
at once (weights, dropout draws, inputs and the caches of the backward pass),
:func:`available_memory` reads what the machine can give (``MemAvailable`` in
``/proc/meminfo``, else ``os.sysconf``, and never more than ``RLIMIT_AS`` or the memory
control group's limit), and :func:`check_simulation_memory` refuses with one line naming
both. :func:`simulation_work` estimates the operations a simulation takes, from the
width, the batch, the depth and the number of networks together, and
:func:`check_simulation` refuses, in one line, a simulation that needs more memory than
the machine has or more work than :data:`MAX_WORK`.

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
#: Bytes a run takes besides its arrays: the linear-algebra library's work buffers (one a
#: thread) and the temporaries of products, measured with tests/test_budgets.py.
RUN_OVERHEAD = 64 * 10**6


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _matrices(nodes: Sequence[Any], width: int) -> Iterator[tuple[Any, tuple[int, int]]]:
    """(key, (rows, cols)) of every weight matrix of a tree's nodes: a node with ``fan_in``
    and ``fan_out`` (in units of the width) is one; a node that lists its ``matrices()``
    (attention's W_Q, W_K, W_V and W_O) holds each as width x width."""
    for node in nodes:
        if hasattr(node, "fan_in") and hasattr(node, "fan_out"):
            yield getattr(node, "key", None), (int(node.fan_in * width),
                                               int(node.fan_out * width))
        elif hasattr(node, "matrices"):
            for key in node.matrices():
                yield key, (width, width)


def simulation_bytes(configs: Sequence[Any], plans: Sequence[tuple[int, int]], *, depth: int,
                     width: int, chunk: int = 4, rows: int = 512,
                     skeleton: Callable[[Any], Hashable] = id, lengths: bool = False) -> int:
    """Bytes a simulation of ``configs`` holds at once, ``chunk`` networks at a time.

    ``plans[i]`` is (networks, inputs per network) of ``configs[i]``; each config's
    block tree (``config.block.expanded(config)``) names its weight matrices
    (nodes with ``fan_in`` and ``fan_out``, in units of the width). Counted: every
    weight matrix of every block (drawn per network, then stacked), inputs, and per
    node and block the arrays the backward pass keeps, for the largest group of
    trees of one ``skeleton`` that run together (up to ``rows`` input rows); with
    ``lengths`` (``derive check --lengths``), the gradients split by path length that
    one configuration's backward pass keeps, one per length and block.

    >>> from derive.blocks.config import variance_config
    >>> format_bytes(simulation_bytes([variance_config(init="he")], [(32, 16)], depth=6, width=512))
    '147.1 MB'
    """
    matrices: dict[tuple, int] = {}
    groups: dict[tuple[int, int, Hashable], list[int]] = {}  # (networks, inputs, skeleton)
    inputs_size = by_length = 0
    for config, (networks, inputs) in zip(configs, plans, strict=True):
        networks = min(chunk, networks)
        tree = config.block.expanded(config)
        nodes = list(_walk(tree))
        units = width
        for key, shape in _matrices(nodes, width):
            units = max(units, *shape)
            matrices[(key, *shape, networks)] = depth * networks * shape[0] * shape[1]
        per_config = depth * len(nodes) * _PER_NODE * networks * inputs * units
        groups.setdefault((networks, inputs, skeleton(tree)), []).append(per_config)
        inputs_size = max(inputs_size, 3 * networks * inputs * width)
        if lengths:  # a gradient per path length, kept at every block and passed through
            paths = depth * _branch_outputs(nodes) + 1  # every node on the way down
            by_length = max(by_length, paths * networks * inputs * units
                            * (depth + 1 + 2 * len(nodes)))
    activations = max((sum(sorted(sizes)[-max(1, rows // key[1]):])
                       for key, sizes in groups.items()), default=0)
    weights = sum(matrices.values())
    stacking = max(matrices.values(), default=0) // max(depth, 1)  # one block's, twice
    arrays = FLOAT * (weights + stacking + max(activations, by_length) + inputs_size)
    return arrays + RUN_OVERHEAD


#: How the work of a simulation is counted, in operations of the size of one multiply-add
#: of a matrix product: each value an elementwise step touches (forward and backward)
#: counts ELEMENT, each random number drawn (and stacked) DRAW, and each step of the
#: interpreter (one node of a block run for a chunk of networks, a random stream set up)
#: STEP; measured with ``bench/bench_check.py``, a machine does about 10^10 a second.
ELEMENT, DRAW, STEP = 100, 500, 500_000
#: The most work a simulation may take, in those operations: a few minutes. The default
#: ``derive check`` takes about 7e+11, ``--all`` twice that, and the largest example of
#: its ``--help`` (the mlp branch at ratio 4) about 3.3e+12.
MAX_WORK = 5 * 10**12


def _branch_outputs(nodes: Sequence[Any]) -> int:
    """How many branches F a tree holds: the weight matrices named ("F", k, "out")."""
    return sum(1 for node in nodes
               if isinstance(getattr(node, "key", None), tuple) and node.key[:1] == ("F",)
               and node.key[-1] == "out")


def simulation_work(configs: Sequence[Any], plans: Sequence[tuple[int, int]], *, depth: int,
                    width: int, seeds: int, chunk: int = 4, weights: bool = False,
                    lengths: bool = False) -> int:
    """Operations a simulation of ``configs`` takes (counted as :data:`STEP` says), with
    ``plans[i]`` = (networks, inputs per network) of ``configs[i]``, ``seeds`` networks
    drawn ``chunk`` at a time; ``weights`` and ``lengths`` add the runs of ``derive check
    --weights`` and ``--lengths``.

    >>> from derive.blocks.config import variance_config
    >>> work = simulation_work([variance_config(init="he")], [(32, 16)], depth=6, width=512,
    ...                        seeds=32)
    >>> f"{work:.1e}"
    '2.8e+10'
    """
    total = -(-seeds // chunk) * STEP  # the loop over the chunks of networks
    shared: dict[tuple, int] = {}  # configurations of one run share their draws
    for config, (networks, inputs) in zip(configs, plans, strict=True):
        nodes = list(_walk(config.block.expanded(config)))
        products, units, draws = 0, width, 0
        for key, (rows, cols) in _matrices(nodes, width):
            products, units = products + rows * cols, max(units, rows, cols)
            draws += networks * depth * (rows * cols * DRAW + STEP)
            shared[(key, rows, cols, inputs)] = networks * depth * (rows * cols * DRAW + STEP)
        arrays = networks * inputs * (2 * products + ELEMENT * len(nodes) * units)
        run = depth * (arrays + -(-networks // chunk) * 2 * len(nodes) * STEP)
        paths = depth * _branch_outputs(nodes) + 1  # --lengths: a gradient per path length
        total += run + weights * (run + draws) + lengths * (run * (1 + paths) // 2 + draws)
    return total + sum(shared.values())


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
    group = _control_group_memory()
    if group is not None:
        found = group if found is None else min(found, group)
    return found


#: Limits at or above this many bytes mean "no limit" to the kernel's control groups.
_NO_LIMIT = 2**60


def _control_group_memory(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes the process's memory control group (a container's limit) still allows, or
    None where it sets no limit or cannot be read: ``memory.max`` less
    ``memory.current`` (cgroup v2), or ``memory.limit_in_bytes`` less
    ``memory.usage_in_bytes`` (v1). /proc/meminfo does not show such a limit.

    >>> _control_group_memory("/nonexistent") is None
    True
    """
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as groups:
            lines = groups.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        path = path.lstrip("/")
        if controllers == "":  # v2: one unified hierarchy
            candidates += [(os.path.join(root, path), "memory.max", "memory.current"),
                           (root, "memory.max", "memory.current")]
        elif "memory" in controllers.split(","):
            base = os.path.join(root, "memory")
            candidates += [(os.path.join(base, path), "memory.limit_in_bytes",
                            "memory.usage_in_bytes"),
                           (base, "memory.limit_in_bytes", "memory.usage_in_bytes")]
    for folder, limit_name, usage_name in candidates:
        try:
            with open(os.path.join(folder, limit_name), encoding="ascii") as handle:
                limit_text = handle.read().strip()
            with open(os.path.join(folder, usage_name), encoding="ascii") as handle:
                usage = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _NO_LIMIT:
            return None
        return max(int(limit_text) - usage, 0)
    return None


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


def check_simulation(configs: Sequence[Any], plans: Sequence[tuple[int, int]], *, depth: int,
                     width: int, seeds: int, batch: int, chunk: int = 4, rows: int = 512,
                     skeleton: Callable[[Any], Hashable] = id, weights: bool = False,
                     lengths: bool = False) -> tuple[int, int]:
    """(bytes, operations) of a simulation, from :func:`simulation_bytes` and
    :func:`simulation_work`; or one DeriveError naming each that is too large: more memory
    than :func:`available_memory`, more work than MAX_WORK.

    >>> from derive.blocks.config import variance_config
    >>> check_simulation([variance_config(init="he")], [(10**18, 16)], depth=6, width=512,
    ...                  seeds=10**18, batch=16)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: simulating 1 configuration at depth 6, width 512, 1000000000000000000 networks of 16 inputs needs about 8.7e+26 operations (multiply-adds and their equivalents), more than the 5e+12 allowed: lower the seeds, the width, the batch or the depth, or check fewer configurations
    """  # noqa: E501
    needed = simulation_bytes(configs, plans, depth=depth, width=width, chunk=chunk, rows=rows,
                              skeleton=skeleton, lengths=lengths)
    work = simulation_work(configs, plans, depth=depth, width=width, seeds=seeds, chunk=chunk,
                           weights=weights, lengths=lengths)
    available = available_memory()
    problems = []
    if available is not None and needed > available:
        problems.append(f"about {format_bytes(needed)} of memory, more than the "
                        f"{format_bytes(available)} available")
    if work > MAX_WORK:
        problems.append(f"about {float(work):.1e} operations (multiply-adds and their "
                        f"equivalents), more than the {float(MAX_WORK):.0e} allowed")
    if problems:
        count = len(configs)
        also = " and ".join(name for name, wanted in (("--weights", weights),
                                                       ("--lengths", lengths)) if wanted)
        raise DeriveError(
            f"simulating {count} configuration{'s' * (count != 1)} at depth {depth}, width "
            f"{width}, {seeds} networks of {batch} inputs{' with ' + also if also else ''} "
            f"needs {', and '.join(problems)}: lower the seeds, the width, the batch or the "
            "depth, or check fewer configurations")
    return needed, work


def check_simulation_memory(configs: Sequence[Any], plans: Sequence[tuple[int, int]], *,
                            depth: int, width: int, chunk: int = 4, rows: int = 512,
                            skeleton: Callable[[Any], Hashable] = id,
                            lengths: bool = False) -> int:
    """The bytes :func:`simulation_bytes` estimates, or DeriveError if the machine lacks them.

    >>> from derive.blocks.config import variance_config
    >>> check_simulation_memory([variance_config(init="he")], [(32, 16)], depth=6,
    ...                         width=10**12)
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: simulating depth 6, width 1000000000000 (4 networks of 16 inputs at a time) needs about 2.2e+26 bytes of memory, more than the ... available: lower the width, the batch or the depth
    """  # noqa: E501
    needed = simulation_bytes(configs, plans, depth=depth, width=width, chunk=chunk, rows=rows,
                              skeleton=skeleton, lengths=lengths)
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
