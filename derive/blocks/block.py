"""A residual block: its parsed tree, its name, and the folds of its primitives' rules.

>>> b = block("pre")
>>> b.text, b.name
('x + F(LN(x))', 'pre')
>>> from derive.blocks.branch import BranchConfig
>>> v = sympy.Symbol("v", positive=True)
>>> b.forward(BranchConfig(init="he"), Moments(v)).q
v + 1
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import sympy

from derive.blocks.attention import Attention
from derive.blocks.nodes import (
    STD_X,
    Input,
    Kernel,
    KernelGains,
    Moments,
    Node,
    Scale,
    number_like,
    sublayers,
)
from derive.blocks.parser import MAX_SYMBOLS, parse, scalar_problem
from derive.blocks.presets import ALL_PRESETS
from derive.blocks.primitives import Activation, BatchNorm, Dropout, LayerNorm, Weight
from derive.errors import DeriveError

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.branch import BranchConfig

#: The block's input h_{k-1}, as it is printed.
h_prev = sympy.Symbol("x")


@dataclass(frozen=True, eq=False)
class Block:
    """A residual block B(x) as a tree of primitives.

    ``name`` is the preset's name, or the expression itself; ``source`` names the
    literature for a preset.

    >>> block("x + alpha*F(x)").symbols
    (alpha,)
    """

    tree: Node
    name: str
    source: str | None = None

    @cached_property
    def text(self) -> str:
        """The block in the block language, e.g. ``x + F(LN(x))``; a layer of several
        sublayers joins them with ``; ``."""
        return "; ".join(part.text() for part in sublayers(self.tree))

    @cached_property
    def sublayers(self) -> tuple[str, ...]:
        """The texts of the layer's sublayers, first to last (one for a plain block).

        >>> block("transformer-pre").sublayers
        ('x + Attn(LN(x))', 'x + MLP(LN(x))')
        """
        return tuple(part.text() for part in sublayers(self.tree))

    @cached_property
    def has_attention(self) -> bool:
        """Whether the block mixes the tokens of a sequence (it holds ``Attn``)."""
        return any(isinstance(node, Attention) for node in self.tree.walk())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and (self.name, self.text) == (other.name, other.text)

    def __hash__(self) -> int:
        return hash((self.name, self.text))

    def __repr__(self) -> str:
        return f"Block({self.text!r})"

    @cached_property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        """The block's own symbols (``alpha``, ``p``), sorted by name."""
        found: set[sympy.Symbol] = set()
        for node in self.tree.walk():
            for value in (getattr(node, "factor", None), getattr(node, "p", None)):
                if isinstance(value, sympy.Expr):
                    found |= {s for s in value.free_symbols if s != STD_X}
        return tuple(sorted(found, key=lambda s: s.name))

    @cached_property
    def has_batchnorm(self) -> bool:
        """Whether a BatchNorm needs the covariance of two inputs of a batch."""
        return any(isinstance(node, BatchNorm) for node in self.tree.walk())

    def display(self, arg: sympy.Expr = h_prev) -> sympy.Expr:
        """The block as a printable SymPy expression in ``arg``; for a layer of several
        sublayers, the tuple of the sublayers, each in its own ``arg``."""
        parts = sublayers(self.tree)
        if len(parts) == 1:
            return self.tree.display(arg)
        return sympy.Tuple(*(part.display(arg) for part in parts))

    def _repr_latex_(self) -> str:
        from derive.derivation.printing import latex

        return f"$B(x) = {latex(self.display())}$"

    def expanded(self, config: BranchConfig) -> Node:
        """The tree with every ``F`` replaced by the configured branch's primitives."""
        return _expanded(self.tree, config, self.text)

    def substituted(self, values: dict[str, sympy.Expr]) -> Block:
        """The block with some of its symbols given values; its name says which.

        >>> block("skipinit").substituted({"alpha": sympy.Rational(1, 2)}).name
        'skipinit (alpha=1/2)'
        """
        known = {s.name: s for s in self.symbols}
        unknown = sorted(set(values) - set(known))
        if unknown:
            have = ", ".join(known) or "none"
            raise DeriveError(f"the block {self.text} has no symbol {unknown[0]!r} "
                              f"(its symbols: {have})")
        if not values:
            return self
        for name, value in values.items():
            if not (isinstance(value, sympy.Expr) and value.is_number and value > 0):
                raise DeriveError(f"{name} must be a number > 0 (a block's symbols are "
                                  f"positive), got {value}")
        replace = {known[name]: value for name, value in values.items()}
        shown = ", ".join(f"{name}={values[name]}" for name in sorted(values))
        tree = _substitute(self.tree, replace)
        _check_values(self.tree, tree, shown)
        return Block(tree, f"{self.name} ({shown})", self.source)

    # --- the folds ----------------------------------------------------------------
    def moments(self, config: BranchConfig, x: Moments) -> dict[Node, Moments]:
        """Every node's output moments when the input has ``x``, children first."""
        tree = self.expanded(config)
        out: dict[Node, Moments] = {}
        for node in tree.walk():
            if node not in out:
                out[node] = node.moments([out[c] for c in node.children], config, x)
        return out

    def forward(self, config: BranchConfig, x: Moments) -> Moments:
        """The block output's moments: the forward map q_{k-1} -> q_k (and c); a block whose
        output is zero at initialization (``F0(x)``) is refused, as every later block would
        see a zero input."""
        out = self.moments(config, x)[self.expanded(config)]
        if out.q.is_zero:
            raise DeriveError(f"the block {self.text} outputs zero at initialization (W0, "
                              "and the last matrix of F0, start at zero), so every later "
                              "block sees zero: keep a term that is not zero, such as x")
        return out

    def gain(self, config: BranchConfig, x: Moments) -> sympy.Expr:
        """d_{k-1}/d_k: the sum over the block's paths from output to input of the
        product of each primitive's gain (gradient independence)."""
        tree = self.expanded(config)
        moments = self.moments(config, x)
        total: dict[Node, sympy.Expr] = {}

        def through(node: Node) -> sympy.Expr:
            if isinstance(node, Input):
                return sympy.Integer(1)
            if node not in total:
                gains = node.gains([moments[c] for c in node.children], config, x)
                total[node] = sympy.Add(*(g * through(c)
                                          for g, c in zip(gains, node.children, strict=True)))
            return total[node]

        return through(tree)

    def kernels(self, config: BranchConfig, x: Kernel) -> dict[Node, Kernel]:
        """Every node's two-point state when the input's is ``x``, children first."""
        return {node: state for node, state in self._kernel_states(config, x).values()}

    def _kernel_states(self, config: BranchConfig, x: Kernel) -> dict[int, tuple[Node, Kernel]]:
        """Every node's two-point state, keyed by the node's identity in the expanded tree
        (a node met twice, as in x + F(x) + F(x), is evaluated once either way)."""
        out: dict[int, tuple[Node, Kernel]] = {}
        for node in _walk(self.expanded(config)):
            if id(node) not in out:
                state = node.kernel([out[id(c)][1] for c in node.children], config, x)
                out[id(node)] = (node, state)
        return out

    def kernel_forward(self, config: BranchConfig, x: Kernel) -> Kernel:
        """The block output's two-point state: the map (q_a, q_b, c) at k-1 to k.

        >>> from derive.blocks.branch import BranchConfig
        >>> out = block("none").kernel_forward(BranchConfig(init="he"), Kernel(1.0, 1.0, 0.0))
        >>> out.q_a, round(out.c, 12)  # c = 1/pi: the arc-cosine kernel at rho = 0
        (2.0, 0.318309886184)
        """
        return self._kernel_states(config, x)[id(self.expanded(config))][1]

    def kernel_gain(self, config: BranchConfig, x: Kernel) -> KernelGains:
        """The factors of (d_a, d_b, g) from the block's output to its input: the sum over
        the block's paths of the product of each primitive's factors."""
        tree = self.expanded(config)
        states = self._kernel_states(config, x)
        total: dict[int, KernelGains] = {}
        one = KernelGains.uniform(number_like(sympy.Integer(1), x.q_a))

        def through(node: Node) -> KernelGains:
            if isinstance(node, Input):
                return one
            if id(node) not in total:
                inputs = [states[id(c)][1] for c in node.children]
                gains = node.kernel_gains(inputs, config, x)
                routes = [g.times(through(c)) for g, c in zip(gains, node.children, strict=True)]
                result = routes[0]
                for route in routes[1:]:
                    result = result.plus(route)
                total[id(node)] = result
            return total[id(node)]

        return through(tree)

    def last_weight(self, config: BranchConfig) -> Weight | None:
        """The weight matrix nearest the block's output (the branch's last layer)."""
        level = [self.expanded(config)]
        while level:
            found = [node for node in level if isinstance(node, Weight)]
            if found:
                return found[0]
            level = [child for node in level for child in node.children]
        return None

    def gain_to(self, config: BranchConfig, x: Moments, target: Node) -> sympy.Expr:
        """E[g^2] at ``target``'s output over E[g^2] at the block's output: the sum over
        the paths from the output down to ``target`` of the product of the gains."""
        tree = self.expanded(config)
        moments = self.moments(config, x)

        def down(node: Node) -> sympy.Expr | None:
            if node == target:
                return sympy.Integer(1)
            gains = node.gains([moments[c] for c in node.children], config, x)
            parts = [(g, down(c)) for g, c in zip(gains, node.children, strict=True)]
            found = [g * below for g, below in parts if below is not None]
            return sympy.Add(*found) if found else None

        result = down(tree)
        if result is None:
            raise DeriveError(f"{target.text()} is not part of the block {self.text}")
        return result


_EXPANDED: dict[tuple[str, object], Node] = {}
#: What one activation adds to the cost of a path of activations nested in one another:
#: their Gaussian moments nest too, tanh's evaluated by quadrature at a precision that
#: rises with each level, gelu's in closed forms that grow with each level, erf's as
#: nested arcsines whose evaluation slows quickly with each level.
NESTING_COST = {"tanh": 2, "gelu": 5, "erf": 3}
#: The most cost one path from a block's output to its input may carry: 12 nested
#: activations, 6 tanh, 2 gelu or 4 erf.
MAX_NESTING = 12


def _expanded(tree: Node, config: BranchConfig, text: str | None = None) -> Node:
    key = (tree.text() if text is None else text,
           (config.branch, config.mlp_ratio, config.dropout, config.activation))
    if key not in _EXPANDED:
        expanded = tree.expand(config)
        _check_nesting(tree, expanded, config)
        _check_symbols(tree, expanded, config)
        _check_centred(expanded)
        _EXPANDED[key] = expanded
    return _EXPANDED[key]


_WALKS: dict[int, tuple[Node, list[Node]]] = {}


def _walk(tree: Node) -> list[Node]:
    """``tree.walk()``, kept for each expanded tree (they are cached and never change)."""
    kept = _WALKS.get(id(tree))
    if kept is None or kept[0] is not tree:
        kept = (tree, tree.walk())
        _WALKS[id(tree)] = kept
    return kept[1]


def _check_centred(expanded: Node) -> None:
    """Refuse a LayerNorm whose input units do not have mean zero (``LN(relu(W(x)))``): its
    rules take the input's second moment for its variance over the units, which holds
    only for centred units."""
    for node in expanded.walk():
        if isinstance(node, LayerNorm) and not node.child.centred():
            raise DeriveError(
                f"{node.text()}: LayerNorm's input {node.child.text()} has units of nonzero "
                "mean at initialization, and derive's LayerNorm rules hold for units of mean "
                "zero; normalize a weight matrix's output or a sum of them (such as LN(x), "
                "LN(F(x)), LN(W(relu(x))))")


def _nesting(node: Node, memo: dict[int, tuple[int, tuple[str, ...]]]
             ) -> tuple[int, tuple[str, ...]]:
    """The costliest path below ``node``: its cost and its activations, outermost first."""
    if id(node) not in memo:
        below = max((_nesting(c, memo) for c in node.children), default=(0, ()))
        if isinstance(node, Activation):
            name = node.name or "phi"
            below = (below[0] + NESTING_COST.get(name, 1), (name, *below[1]))
        memo[id(node)] = below
    return memo[id(node)]


def _check_nesting(tree: Node, expanded: Node, config: BranchConfig) -> None:
    """Refuse a block whose activations nest past MAX_NESTING (see NESTING_COST)."""
    cost, names = _nesting(expanded, {})
    if cost > MAX_NESTING:
        counts = ", ".join(f"{names.count(n)} {n}" for n in sorted(set(names)))
        raise DeriveError(
            f"the block {tree.text()} nests {len(names)} activations in one another "
            f"({counts}, with --activation {config.activation} in F): at most "
            f"{MAX_NESTING} may nest, {MAX_NESTING // NESTING_COST['tanh']} if they are tanh, "
            f"{MAX_NESTING // NESTING_COST['gelu']} if gelu (each tanh counts "
            f"{NESTING_COST['tanh']}, each gelu {NESTING_COST['gelu']})"
            + (f"; {MAX_NESTING // NESTING_COST['erf']} if erf (each erf counts "
               f"{NESTING_COST['erf']})" if "erf" in names else ""))


def _check_symbols(tree: Node, expanded: Node, config: BranchConfig) -> None:
    """Refuse a derivation with more than MAX_SYMBOLS symbols, the block's and the options'."""
    found: set[sympy.Symbol] = set()
    for node in expanded.walk():
        for name in ("factor", "p", "fan_in", "fan_out"):
            value = getattr(node, name, None)
            if isinstance(value, sympy.Expr):
                found |= value.free_symbols
        if isinstance(node, (LayerNorm, BatchNorm)):
            found |= config.gamma.free_symbols
        if isinstance(node, Weight) and config.sigma_w2 is not None:
            found |= config.sigma_w2.free_symbols
        if isinstance(node, Activation) and node.name == "leaky_relu":
            found |= config.negative_slope.free_symbols
    found.discard(STD_X)
    if len(found) > MAX_SYMBOLS:
        names = ", ".join(sorted(s.name for s in found))
        raise DeriveError(
            f"the block {tree.text()} with these options holds {len(found)} symbols "
            f"({names}): at most {MAX_SYMBOLS}; give some of them numbers")


def _check_values(before: Node, after: Node, shown: str) -> None:
    """Refuse a tree whose scalars, once its symbols have values (``after``), are not real
    and short, or whose dropout rates fall outside [0, 1)."""
    for old, node in zip(before.walk(), after.walk(), strict=True):
        if isinstance(node, Scale):
            problem = scalar_problem(node.factor)
            if problem is not None:
                raise DeriveError(f"{old.text()} with {shown}: {problem}")
        if isinstance(node, Dropout) and node.p.is_number and not (
                node.p.is_Rational and 0 <= node.p < 1):
            raise DeriveError(f"Dropout's rate must be in [0, 1), got {node.p} in "
                              f"{old.text()} with {shown}")


def _substitute(node: Node, values: dict) -> Node:
    children = tuple(_substitute(c, values) for c in node.children)
    if isinstance(node, Scale):
        return Scale(node.factor.xreplace(values), children[0])
    if isinstance(node, Dropout):
        return Dropout(children[0], node.p.xreplace(values), node.key)
    return node.rebuild(children)


def block(spec: object) -> Block:
    """A block from a preset name, an expression in the block language, or a Block.

    >>> block("rescaled").text
    '(x + F(x))/sqrt(2)'
    >>> block("x + F(LN(x))").name
    'pre'
    >>> block("")
    Traceback (most recent call last):
    ...
    derive.errors.DeriveError: the block is empty: write it in x, such as 'x + F(x)'
    """
    if isinstance(spec, Block):
        return spec
    if isinstance(spec, str) and spec.strip() in ALL_PRESETS:
        preset = ALL_PRESETS[spec.strip()]
        return Block(parse(preset.expression), preset.name, preset.source)
    if isinstance(spec, str) and spec.strip().replace("-", "_").isidentifier() \
            and spec.strip() != "x":
        raise DeriveError(f"unknown block {spec.strip()!r}: choose a preset "
                          f"({', '.join(ALL_PRESETS)}) or write an expression in x such as "
                          "'x + F(LN(x))'")
    tree = parse(spec)
    text = "; ".join(part.text() for part in sublayers(tree))
    for preset in ALL_PRESETS.values():
        if preset.expression == text:
            return Block(tree, preset.name, preset.source)
    if not isinstance(spec, str):  # pragma: no cover (parse refuses)
        raise DeriveError(f"a block is a string, got {spec!r}")
    return Block(tree, text)
