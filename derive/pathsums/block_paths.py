"""Path sums for any block: each block's Jacobian from its expression, and their product.

Every node of a block carries its Jacobian rule (``jacobian`` in
:mod:`derive.blocks.nodes` and :mod:`derive.blocks.primitives`): ``x`` gives I,
``F`` the branch Jacobian J_k, ``LN`` L_k, ``BN`` B_k, ``W`` W_k, an activation
D_k, ``Dropout`` M_k, a scalar itself, a sum the sum. Folded over the tree, block
k's Jacobian is a sum of terms, one per way from the block's output down to its
input: ``LN(x + F(x))`` gives L_k + L_k J_k. The stack's dy/dx is the product of
the block Jacobians, a later block on the left; its terms pick one term from
each block, in the book's order (UDL eq. 11.6): counting over the later blocks
with block j+1 the lowest digit. For ``x + F(x)`` this is exactly
:class:`derive.pathsums.expansion.PathSum`.

>>> s = BlockPathSum(2, "x", block("LN(x + F(x))"))
>>> s.text()
'∂y/∂x = L₂L₁ + L₂L₁J₁ + L₂J₂L₁ + L₂J₂L₁J₁'
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import sympy

from derive.blocks.block import Block, block
from derive.blocks.nodes import STD_X, FactorNames, Input, Node, Stage
from derive.blocks.primitives import Branch
from derive.derivation.printing import latex, text
from derive.derivation.value import Derivation, Step
from derive.errors import DeriveError
from derive.pathsums.limits import MAX_TERMS, Wrt, WrtLike, check_path_args
from derive.pathsums.notation import gradient_latex, gradient_text, subscript

if TYPE_CHECKING:  # pragma: no cover
    from derive.blocks.branch import BranchConfig

#: The text streamer builds the terms of the lowest blocks once, about this many.
LOW_TERMS = 1024
#: Rows of the LaTeX sum hold about this many factors.
ROW_FACTORS = 12


class BlockStd(sympy.Symbol):
    """std(h_{k-1}): ``std(x)`` of block k, the expected std of its input (a constant).

    >>> text(BlockStd(3))
    'std(h₃)'
    """

    def __new__(cls, index: int) -> BlockStd:
        obj = super().__new__(cls, f"std(h_{index})", positive=True)
        obj.index = index
        return obj

    def _latex(self, printer: object) -> str:
        return f"\\operatorname{{std}}(h_{{{self.index}}})"

    def _sympystr(self, printer: object) -> str:
        return f"std(h{subscript(self.index)})"


class _Collector:
    """The first pass: which nodes of each letter a block holds, innermost first."""

    def __init__(self) -> None:
        self.seen: dict[str, list[Node]] = {}

    def factor(self, node: Node, letter: str) -> sympy.Expr:
        found = self.seen.setdefault(letter, [])
        if node not in found:
            found.append(node)
        return sympy.Symbol(letter, commutative=False)

    def scalar(self, value: sympy.Expr) -> sympy.Expr:
        return value


class BlockNames:
    """The factors of block k: ``L_k``, or ``L_{k,1}``, ``L_{k,2}`` when a block holds
    two LayerNorms (numbered in the order they are applied); ``k`` may be the letter
    ``"k"`` (any block).

    >>> names = BlockNames(block("sandwich").tree, 4)
    >>> sorted(str(s) for s in names.forms)
    ['J_4', 'L_{4,1}', 'L_{4,2}']
    """

    def __init__(self, tree: Node, k: int | str) -> None:
        collector = _Collector()
        _fold(tree, collector)
        self.k = k
        self.symbols: dict[tuple[str, Node], sympy.Symbol] = {}
        #: symbol -> (text, LaTeX)
        self.forms: dict[sympy.Symbol, tuple[str, str]] = {}
        for letter, nodes in collector.seen.items():
            for i, node in enumerate(nodes, start=1):
                sub = f"{k}" if len(nodes) == 1 else f"{k},{i}"
                symbol = sympy.Symbol(f"{letter}_{{{sub}}}" if "," in sub else f"{letter}_{k}",
                                      commutative=False)
                self.symbols[letter, node] = symbol
                self.forms[symbol] = (letter + ",".join(map(subscript, sub.split(","))),
                                      f"{letter}_{{{sub}}}")
        self.branches = frozenset(s for (_, node), s in self.symbols.items()
                                  if node.branch_like)

    def factor(self, node: Node, letter: str) -> sympy.Expr:
        return self.symbols[letter, node]

    def scalar(self, value: sympy.Expr) -> sympy.Expr:
        if isinstance(self.k, str):  # any block: std(x) stays as it is written
            return value
        return value.xreplace({STD_X: BlockStd(self.k - 1)})


def _fold(node: Node, names: FactorNames) -> sympy.Expr:
    return node.jacobian([_fold(c, names) for c in node.children], names)


@dataclass(frozen=True)
class BlockTerm:
    """One term of a block's Jacobian: a scalar, non-commuting factors left to right,
    how many branch Jacobians J it holds, and its way through the tree (child indices
    from the block's output down to ``x``)."""

    coefficient: sympy.Expr
    factors: tuple[sympy.Symbol, ...]
    branches: int
    path: tuple[int, ...]

    @property
    def expr(self) -> sympy.Expr:
        """The term as a SymPy product (the identity is 1)."""
        return sympy.Mul(self.coefficient, *self.factors)


def _ways(node: Node) -> list[tuple[int, ...]]:
    """Every way from ``node`` down to ``x``, as child indices."""
    if isinstance(node, Input):
        return [()]
    return [(i, *rest) for i, child in enumerate(node.children) for rest in _ways(child)]


def _term(tree: Node, path: tuple[int, ...], names: BlockNames, stop: Node | None = None
          ) -> BlockTerm | None:
    """The product of the rules along ``path`` (up to the node ``stop``, which gives I)."""
    chain, node = [], tree
    for i in path:
        if node is stop:
            break
        chain.append((node, i))
        node = node.children[i]
    value: sympy.Expr = sympy.Integer(1)
    for parent, i in reversed(chain):
        inputs = [sympy.Integer(0)] * len(parent.children)
        inputs[i] = value
        value = parent.jacobian(inputs, names)
    if value == 0:
        return None
    scalars: list[sympy.Expr] = []
    factors: list[sympy.Expr] = []
    for arg in sympy.Mul.make_args(value):
        (factors if not arg.is_commutative else scalars).append(arg)
    return BlockTerm(sympy.radsimp(sympy.Mul(*scalars)), tuple(factors),
                     sum(1 for f in factors if f in names.branches), path)


@lru_cache(maxsize=4096)
def block_terms(spec: Block, k: int) -> tuple[BlockTerm, ...]:
    """The terms of block k's Jacobian, those with fewer branch Jacobians first.

    >>> [t.expr for t in block_terms(block("x + F(LN(x))"), 3)]
    [1, J_3*L_3]
    >>> [t.expr for t in block_terms(block("(x + F(x))/sqrt(2)"), 1)]
    [sqrt(2)/2, sqrt(2)*J_1/2]
    """
    names = block_names(spec, k)
    terms = [_term(spec.tree, path, names) for path in _ways(spec.tree)]
    found = [t for t in terms if t is not None]
    if not found:
        raise DeriveError(f"the block {spec.text} has no path from its output to x: "
                          "its Jacobian is zero")
    return tuple(sorted(found, key=lambda t: t.branches))


def branch_counts(spec: Block) -> list[int]:
    """How many terms of a block's Jacobian pass 0, 1, 2, ... branch Jacobians J: the
    coefficients of the block's factor in the generating polynomial of path lengths.

    >>> branch_counts(block("x + F(x)")), branch_counts(block("x + F(x + F(x))"))
    ([1, 1], [1, 1, 1])
    """
    terms = block_terms(spec, 1)
    counts = [0] * (max(t.branches for t in terms) + 1)
    for t in terms:
        counts[t.branches] += 1
    return counts


@lru_cache(maxsize=4096)
def block_names(spec: Block, k: int) -> BlockNames:
    """The factor symbols of block k (see :class:`BlockNames`).

    >>> block_names(block("pre"), 2).forms[sympy.Symbol("L_2", commutative=False)]
    ('L₂', 'L_{2}')
    """
    return BlockNames(spec.tree, k)


def block_jacobian(spec: Block, k: int) -> sympy.Expr:
    """Block k's Jacobian dh_k/dh_{k-1}, folded from its nodes' rules (unexpanded).

    >>> block_jacobian(block("LN(x + F(x))"), 2)
    L_2*(1 + J_2)
    """
    return _fold(spec.tree, block_names(spec, k))


def branch_target(spec: Block) -> Node:
    """The branch whose output is f_j: the one branch (F, Attn or MLP) of the block's last
    sublayer, or else the block's one ``F``.

    >>> branch_target(block("x + Attn(x)")).text(), branch_target(block("transformer-pre")).text()
    ('Attn(x)', 'MLP(LN(x))')
    """
    last = [node for node in _sublayer_nodes(spec.tree) if node.branch_like]
    if len({id(node) for node in last}) == 1:
        return last[0]
    branches = [node for node in spec.tree.walk() if isinstance(node, Branch)]
    if len({id(b) for b in branches}) != 1:
        raise DeriveError(f"dy/df_j needs a block with one branch F; {spec.text} has "
                          f"{len(branches)}: use wrt 'x'")
    return branches[0]


def _sublayer_nodes(node: Node) -> list[Node]:
    """The nodes of the sublayer ``node`` heads, not those of the sublayers below it."""
    if isinstance(node, Stage):
        return []
    return [found for child in node.children for found in _sublayer_nodes(child)] + [node]


def _target_path(spec: Block, target: Node) -> tuple[int, ...]:
    """The first way from the block's output down to x that passes ``target`` and whose
    term up to it is not zero."""
    for path in _ways(spec.tree):
        node, ok = spec.tree, False
        for i in path:
            if node is target:
                ok = True
                break
            node = node.children[i]
        if ok and _term(spec.tree, path, block_names(spec, 1), stop=target) is not None:
            return path
    raise DeriveError(f"the output of {target.text()} in {spec.text} does not reach the "
                      "block's output")


def branch_tail(spec: Block, j: int) -> BlockTerm:
    """dh_j/df_j: how the output of block j's branch (:func:`branch_target`) reaches the
    block's output.

    >>> branch_tail(block("LN(x + F(x))"), 1).expr, branch_tail(block("none"), 1).expr
    (L_1, 1)
    """
    target = branch_target(spec)
    term = _term(spec.tree, _target_path(spec, target), block_names(spec, j), stop=target)
    assert term is not None
    return term


def tail_route(spec: Block, config: BranchConfig) -> list[tuple[Node, int]]:
    """The nodes of the expanded tree from the block's output down to the branch whose
    output is f_j, as :func:`term_route` gives them.

    >>> from derive.blocks.branch import BranchConfig
    >>> [(n.text(), i) for n, i in tail_route(block("post"), BranchConfig())]
    [('LN(x + W(relu(x)))', 0), ('x + W(relu(x))', 1)]
    """
    target = branch_target(spec)
    return term_route(spec, config, _target_path(spec, target), stop=target)


def term_route(spec: Block, config: BranchConfig, path: tuple[int, ...],
               stop: Node | None = None) -> list[tuple[Node, int]]:
    """The nodes of the expanded tree that the way ``path`` (child indices through the
    block's own tree, as :class:`BlockTerm` holds them) passes from the block's output
    down to x, or up to the node ``stop``, each with the index of the child it goes on to:
    a branch ``F`` passes the whole chain of its primitives.

    >>> from derive.blocks.branch import BranchConfig
    >>> [(n.text(), i) for n, i in term_route(block("pre"), BranchConfig(), (1, 0, 0))]
    [('x + W(relu(LN(x)))', 1), ('W(relu(LN(x)))', 0), ('relu(LN(x))', 0), ('LN(x)', 0)]
    """
    node, exp = spec.tree, spec.expanded(config)
    out: list[tuple[Node, int]] = []
    for i in path:
        if node is stop:
            return out
        if isinstance(node, Branch):  # F expands into a chain down to its input
            target: Node = node.child.expand(config)
            while exp != target:
                out.append((exp, 0))
                exp = exp.children[0]
            node = node.child
            continue
        out.append((exp, i))
        node, exp = node.children[i], exp.children[i]
    assert stop is None and isinstance(node, Input)
    return out


def power_coefficients(poly: list[int], power: int) -> list[int]:
    """The coefficients of poly(t)^power, exactly (J. C. P. Miller's recurrence, no
    repeated products): how many terms of the stack hold L branch Jacobians.

    >>> power_coefficients([1, 1], 4), power_coefficients([0, 2, 1], 2)
    ([1, 4, 6, 4, 1], [0, 0, 4, 4, 1])
    """
    shift = next(i for i, c in enumerate(poly) if c)
    p = poly[shift:]
    top = (len(p) - 1) * power
    out = [p[0] ** power] + [0] * top
    for n in range(1, top + 1):
        acc = 0
        for i in range(1, min(n, len(p) - 1) + 1):
            acc += p[i] * ((power + 1) * i - n) * out[n - i]
        out[n] = acc // (n * p[0])
    return [0] * (shift * power) + out


@dataclass(frozen=True, init=False, repr=False)
class BlockPathSum:
    """dy/df_wrt (or dy/dx) for ``depth`` blocks of ``spec``: the product of the block
    Jacobians, expanded. Terms are tuples of choices, one per later block left to
    right (block N first), each an index into :func:`block_terms`.

    >>> s = BlockPathSum(3, 1, block("x + alpha*F(x)"))
    >>> s.count, s.terms[3], s.text()
    (4, (1, 1), '∂y/∂f₁ = α·I + α²·J₂ + α²·J₃ + α³·J₃J₂')
    """

    depth: int
    wrt: Wrt
    spec: Block
    force: bool

    def __init__(self, depth: int, wrt: WrtLike, spec: object, force: bool = False) -> None:
        checked, parsed = check_path_args(depth, wrt)
        object.__setattr__(self, "depth", checked)
        object.__setattr__(self, "wrt", parsed)
        object.__setattr__(self, "spec", block(spec))
        object.__setattr__(self, "force", force)
        if not parsed.is_input:
            branch_tail(self.spec, parsed.start)
        block_terms(self.spec, 1)

    def __repr__(self) -> str:
        return (f"BlockPathSum(depth={self.depth}, wrt={self.wrt.value!r}, spec={self.spec!r}, "
                f"force={self.force!r})")

    @property
    def blocks(self) -> tuple[int, ...]:
        """The later blocks, left to right (N down to j+1)."""
        return tuple(range(self.depth, self.wrt.start, -1))

    @property
    def radix(self) -> int:
        """The number of terms of one block's Jacobian."""
        return len(block_terms(self.spec, 1))

    @property
    def count(self) -> int:
        """The number of terms, radix^(N - j).

        >>> BlockPathSum(20, 1, block("pre")).count
        524288
        """
        return self.radix ** len(self.blocks)

    @cached_property
    def lengths(self) -> dict[int, int]:
        """{L: number of terms with L branch Jacobians}, exact at any depth.

        >>> BlockPathSum(3, "x", block("x + F(x + F(x))")).lengths
        {0: 1, 1: 3, 2: 6, 3: 7, 4: 6, 5: 3, 6: 1}
        """
        return dict(enumerate(power_coefficients(branch_counts(self.spec),
                                                 len(self.blocks))))

    def tail(self) -> BlockTerm:
        """dh_j/df_j on the right of every term (the identity for dy/dx)."""
        if self.wrt.is_input:
            return BlockTerm(sympy.Integer(1), (), 0, ())
        return branch_tail(self.spec, self.wrt.start)

    def check_size(self) -> None:
        """Raise DeriveError if enumerating needs ``force=True``."""
        if self.count > MAX_TERMS and not self.force:
            raise DeriveError(
                f"{self.wrt.gradient} of {self.spec.text} at "
                f"depth {self.depth} has {self.radix}^{len(self.blocks)} terms, more than "
                f"2^22 = {MAX_TERMS}: use --count/--lengths, or force")

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        self.check_size()
        return itertools.product(range(self.radix), repeat=len(self.blocks))

    def __len__(self) -> int:
        return self.count

    @cached_property
    def terms(self) -> tuple[tuple[int, ...], ...]:
        """Every term's choices, materialized."""
        return tuple(self)

    def term(self, choices: tuple[int, ...]) -> BlockTerm:
        """The term with these choices: its scalar, its factors and its branch count.

        >>> BlockPathSum(2, "x", block("pre")).term((1, 0)).expr
        J_2*L_2
        """
        picked = [block_terms(self.spec, b)[c] for b, c in zip(self.blocks, choices, strict=True)]
        picked.append(self.tail())
        return BlockTerm(sympy.Mul(*(t.coefficient for t in picked)),
                         tuple(f for t in picked for f in t.factors),
                         sum(t.branches for t in picked), ())

    @cached_property
    def expr(self) -> sympy.Expr:
        """The expanded sum, non-commutative (the identity is 1)."""
        return sympy.Add(*(self.term(c).expr for c in self))

    @property
    def factored(self) -> sympy.Expr:
        """The product of the block Jacobians (and dh_j/df_j), unevaluated.

        >>> s = BlockPathSum(2, "x", block("post"))
        >>> sympy.expand(s.factored) == s.expr
        True
        """
        parts = [block_jacobian(self.spec, b) for b in self.blocks]
        return sympy.Mul(*parts, self.tail().expr, evaluate=False)

    def _forms(self) -> dict[sympy.Symbol, tuple[str, str]]:
        forms: dict[sympy.Symbol, tuple[str, str]] = {}
        for b in (*self.blocks, *(() if self.wrt.is_input else (self.wrt.start,))):
            forms.update(block_names(self.spec, b).forms)
        return forms

    def iter_chunks(self, fmt: str = "text") -> Iterator[str]:
        """Stream the terms' text (``fmt`` "text") or LaTeX ("latex") joined by `` + ``,
        in chunks; the lowest blocks' pieces are built once.

        >>> "".join(BlockPathSum(1, "x", block("rescaled")).iter_chunks("latex"))
        '\\\\frac{\\\\sqrt{2}}{2} I + \\\\frac{\\\\sqrt{2}}{2} J_{1}'
        """
        self.check_size()
        writer = _TermWriter(self, 0 if fmt == "text" else 1)
        split = len(self.blocks) - self._low_count()
        lows = _LowEnds(writer.choices(self.blocks[split:], (self.tail(),)), writer)
        for index, (coefficient, shown) in enumerate(writer.choices(self.blocks[:split], ())):
            yield (" + " if index else "") + lows.after(coefficient, shown)

    def _low_count(self) -> int:
        """How many of the lowest blocks have their choices written once (up to about
        LOW_TERMS of them)."""
        low, m = 0, len(self.blocks)
        while low < m and self.radix ** (low + 1) <= LOW_TERMS:
            low += 1
        return low

    def text(self) -> str:
        """``dy/dx = ...`` as one line of Unicode text."""
        return gradient_text(self.wrt) + " = " + "".join(self.iter_chunks("text"))

    def latex(self) -> str:
        """The sum (right-hand side) as one line of LaTeX."""
        return "".join(self.iter_chunks("latex"))

    def lhs_latex(self) -> str:
        """The left-hand side dy/df_j (or dy/dx) in LaTeX."""
        return gradient_latex(self.wrt)

    @property
    def symbols(self) -> dict[str, sympy.Symbol]:
        """The block's own symbols by name (``alpha``), as its scalars carry them.

        >>> BlockPathSum(2, "x", block("skipinit")).symbols
        {'alpha': alpha}
        """
        return {str(s): s for s in self.spec.symbols}

    @cached_property
    def derivation(self) -> Derivation:
        """Block k's Jacobian, the product over the blocks, its terms and their count, as a
        Derivation (what ``derive.render`` renders). The sum is shown up to
        SHOWN_TERMS terms.

        >>> d = BlockPathSum(2, "x", block("post")).derivation
        >>> d.result.text()
        '#terms = 4'
        """
        from derive.pathsums.notation import shown

        one = BlockPathSum(1, "x", self.spec)
        k_jacobian = one.text().split(" = ", 1)[1]
        steps = [Step(shown("∂h₁/∂h₀", "\\frac{\\partial h_{1}}{\\partial h_{0}}"),
                      shown(k_jacobian, one.latex()),
                      f"block $B(x) = {_latex_block(self.spec)}$: each node contributes its "
                      "Jacobian (I for the skip, $J_k$ for the branch, $L_k$ for LN, ...)")]
        lhs = shown(gradient_text(self.wrt), gradient_latex(self.wrt))
        if self.count <= SHOWN_TERMS:
            steps.append(Step(lhs, shown(self.text().split(" = ", 1)[1], self.latex()),
                              "chain rule over the blocks, a later block on the left, "
                              "expanded in the book's order"))
        count = shown("#terms", "\\#\\,\\text{terms}")
        steps.append(Step(count, sympy.Integer(self.count),
                          f"one term per choice of one of the {self.radix} terms of each of "
                          f"the {len(self.blocks)} later blocks' Jacobians"))
        return Derivation(title=f"Paths through {self.depth} blocks of {self.spec.text}",
                          key=f"paths/{self.spec.name}/depth-{self.depth}/wrt-{self.wrt}",
                          steps=tuple(steps), result=steps[-1])

    def _repr_latex_(self) -> str:
        """Jupyter display: the sum in rows that fit a notebook column (up to SHOWN_TERMS
        terms), else the product and the count.

        >>> print(BlockPathSum(1, "x", block("post"))._repr_latex_())
        $\\begin{aligned}
        \\frac{\\partial y}{\\partial x} &= L_{1} + L_{1} J_{1}
        \\end{aligned}$
        """
        lhs = gradient_latex(self.wrt)
        if self.count > SHOWN_TERMS:
            return (f"$\\begin{{aligned}}\n{lhs} &= {latex(self.factored)} \\\\\n"
                    f"\\#\\,\\text{{terms}} &= {self.count}\n\\end{{aligned}}$")
        rows = column_rows(self.latex())
        body = f"{lhs} &= " + " \\\\\n&\\quad + ".join(rows)
        return f"$\\begin{{aligned}}\n{body}\n\\end{{aligned}}$"


#: Jupyter and ``derive.render`` show the expanded sum up to this many terms.
SHOWN_TERMS = 64
#: A row of LaTeX in a notebook column holds about this many characters of source.
COLUMN = 70


def _latex_block(spec: Block) -> str:
    return spec.text.replace("*", " ").replace("_", "\\_")


def column_rows(sum_latex: str, width: int = COLUMN) -> list[str]:
    """A LaTeX sum split at its top-level `` + `` into rows of about ``width`` characters.

    >>> column_rows("a + {b + c} d + e", width=8)
    ['a', '{b + c} d', 'e']
    """
    terms, depth, start = [], 0, 0
    i = 0
    while i < len(sum_latex):
        if sum_latex.startswith("\\left", i) or sum_latex[i] == "{":
            depth += 1
        elif sum_latex.startswith("\\right", i) or sum_latex[i] == "}":
            depth -= 1
        elif depth == 0 and sum_latex.startswith(" + ", i):
            terms.append(sum_latex[start:i])
            start = i + 3
            i += 3
            continue
        i += 1
    terms.append(sum_latex[start:])
    rows: list[str] = []
    for term in terms:
        if rows and len(rows[-1]) + 3 + len(term) <= width:
            rows[-1] += " + " + term
        else:
            rows.append(term)
    return rows


class _TermWriter:
    """How the terms of a :class:`BlockPathSum` are written, in text (``side`` 0) or LaTeX
    (1): each block term's piece, and the pieces of every choice over some blocks."""

    def __init__(self, paths: BlockPathSum, side: int) -> None:
        self.forms, self.side, self.radix = paths._forms(), side, paths.radix
        self.sep = " " if side else ""
        self.table = {b: block_terms(paths.spec, b) for b in paths.blocks}
        #: scalars that differ from block to block (std(h_{k-1})) stay beside their factors
        self.inline = any(t.coefficient.atoms(BlockStd) for t in block_terms(paths.spec, 1))

    def piece(self, term: BlockTerm) -> str:
        """One block term: its factors (and its scalar, when it stays inline)."""
        shown = self.sep.join(self.forms[f][self.side] for f in term.factors)
        if self.inline and term.coefficient != 1:
            scalar = _scalar(term.coefficient, self.side)
            return f"({scalar.rstrip('·')}){shown}" if not self.side else scalar + shown
        return shown

    def choices(self, blocks: tuple[int, ...], extra: tuple[BlockTerm, ...]
                ) -> list[tuple[sympy.Expr, str]]:
        """(scalar, factors) of every choice of one term per block, in the sum's order, with
        ``extra`` on the right; the scalar is 1 when the scalars stay inline."""
        out = []
        for choice in itertools.product(range(self.radix), repeat=len(blocks)):
            picked = [self.table[b][c] for b, c in zip(blocks, choice, strict=True)]
            picked += extra
            shown = self.sep.join(s for s in map(self.piece, picked) if s)
            coefficient = (sympy.Integer(1) if self.inline
                           else sympy.Mul(*(t.coefficient for t in picked)))
            out.append((coefficient, shown))
        return out


class _LowEnds:
    """The choices over the lowest blocks, written once: alone (``I`` for no factor), or
    after a higher choice's factors; their distinct scalars, each printed once per higher
    choice."""

    def __init__(self, lows: list[tuple[sympy.Expr, str]], writer: _TermWriter) -> None:
        self.side = writer.side
        self.alone = [body or "I" for _, body in lows]
        self.ends = [writer.sep + body if body else "" for _, body in lows]
        ids: dict[sympy.Expr, int] = {}
        self.scalar_index = [ids.setdefault(coefficient, len(ids)) for coefficient, _ in lows]
        self.scalars = list(ids)
        self.plain = all(coefficient == 1 for coefficient in self.scalars)

    def after(self, coefficient: sympy.Expr, shown: str) -> str:
        """Every term whose higher blocks chose ``coefficient`` and factors ``shown``,
        joined by `` + ``."""
        bodies = [shown + end for end in self.ends] if shown else self.alone
        if self.plain and coefficient == 1:
            return " + ".join(bodies)
        scalars = [_scalar(coefficient * low, self.side) for low in self.scalars]
        return " + ".join([scalars[i] + body
                           for i, body in zip(self.scalar_index, bodies, strict=True)])


@lru_cache(maxsize=65536)
def _scalar(value: sympy.Expr, side: int) -> str:
    """A term's scalar written before its factors: empty for 1."""
    if value == 1:
        return ""
    value = sympy.radsimp(value)
    if side:
        shown = latex(value)
        return (f"\\left({shown}\\right) " if value.is_Add else shown + " ")
    shown = text(value)
    return (f"({shown})" if value.is_Add or shown.startswith("-") else shown) + "·"


def is_plain(spec: Block) -> bool:
    """Whether the block is ``x + F(x)``, whose path sum :mod:`derive.pathsums.expansion` streams.

    >>> is_plain(block("none")), is_plain(block("pre"))
    (True, False)
    """
    return spec.text == "x + F(x)"
