"""Data types of the channel analysis: union-find of channel ids and layouts.

Every tensor value in a traced graph gets a :class:`Layout`: the dimension
that holds its channels and, for every index along it, an integer *channel
id*. Ids live in a :class:`ChannelUnionFind`; ids of one class are kept or
removed together. A class can be *pinned* (never removed): hard pins come
from the model's inputs and outputs and from shape constraints, *soft* pins
from operations speedup does not understand (``ModelSpeedup(strict=True)``
turns those into errors when they block a removal).

Example::

    >>> uf = ChannelUnionFind()
    >>> a, b = uf.new(2), uf.new(2)
    >>> uf.union_lists(a, b)
    >>> uf.find(b[1]) == uf.find(a[1]), uf.is_pinned(a[0])
    (True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import torch.fx as fx
import torch.nn as nn


class ChannelUnionFind:
    """Union-find over integer channel ids with pin flags and a reason per class."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.pinned: list[bool] = []  # hard pins (inputs/outputs, shape constraints)
        self.soft: list[bool] = []  # pins from operations speedup does not understand
        self.reason: dict[int, str] = {}  # root -> why it is pinned (first reason seen)

    def new(self, count: int, pinned: bool = False, reason: str | None = None, soft: bool = False) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.pinned.extend([pinned and not soft] * count)
        self.soft.extend([pinned and soft] * count)
        if pinned and reason:
            for x in range(start, start + count):
                self.reason[x] = reason
        return list(range(start, start + count))

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.pinned[ra] = self.pinned[ra] or self.pinned[rb]
        self.soft[ra] = self.soft[ra] or self.soft[rb]
        if ra not in self.reason and rb in self.reason:
            self.reason[ra] = self.reason[rb]

    def union_lists(self, a: list[int], b: list[int]) -> None:
        for x, y in zip(a, b):
            if x != y:
                self.union(x, y)

    def pin(self, ids: Iterable[int], reason: str | None = None, soft: bool = False) -> None:
        flags = self.soft if soft else self.pinned
        for x in ids:
            r = self.find(x)
            flags[r] = True
            if reason and r not in self.reason:
                self.reason[r] = reason

    def is_pinned(self, x: int) -> bool:
        r = self.find(x)
        return self.pinned[r] or self.soft[r]

    def why(self, x: int) -> str | None:
        return self.reason.get(self.find(x))


@dataclass
class Layout:
    """Channel ids of a tensor value along its channel dimension ``dim``."""

    dim: int
    ids: list[int]


@dataclass
class ModuleChannels:
    """What the analysis learnt about one layer.

    ``kind`` is one of ``conv``, ``conv_transpose``, ``linear``,
    ``embedding`` (producers of fresh channels), ``depthwise`` (a conv with
    groups == in == out channels), ``grouped`` (a grouped conv whose output
    channel i is tied to input channel i), ``norm`` (BatchNorm /
    InstanceNorm / LayerNorm / GroupNorm), ``prelu`` or ``custom`` (a module
    handled by a registered rule); transposed convolutions count as
    convolutions. ``out_ids`` / ``in_ids`` index the layer's output / input
    channels; for pass-through kinds they are the same list.
    """

    name: str
    kind: str
    module: nn.Module
    out_ids: list[int] | None = None
    in_ids: list[int] | None = None
    calls: int = 0

    @property
    def produces(self) -> bool:
        """Does this layer create fresh channels (its masks decide their removal)?"""
        return self.kind in ("conv", "conv_transpose", "linear", "embedding") or (
            self.kind == "custom" and self.out_ids is not None and self.out_ids is not self.in_ids
        )


@dataclass
class AttrTie:
    """A constant tensor (get_attr or onnx2torch constant) indexed by channels."""

    target: str
    dim: int
    ids: list[int]
    valid: bool = True


@dataclass
class SizeAttr:
    """A module attribute that forward reads as channel counts (fx traced its value as a literal).

    An int attribute, ``x.reshape(n, self.hidden_dim, -1)`` or
    ``x.split(self.piece, 1)``: speedup sets it to the number of kept
    channels of ``ids``. A list or tuple attribute with ``pieces``:
    ``torch.split(x, self.sizes, 1)`` gets the kept count of each piece,
    ``torch.tensor_split(x, self.indices, 1)`` (``bounds``) the kept counts'
    running sums. With ``index``, only that entry of a list attribute is the count
    (an imported ONNX ``Reshape``'s literal ``shape``). The module reads the attribute again on every call, so the
    new value takes effect without rewriting forward.

    Example::

        >>> sizes = SizeAttr("block", "sizes", [7, 8, 9], pieces=[[7], [8, 9]])
        >>> sizes.new_value(lambda ids: sum(x != 8 for x in ids))  # channel id 8 removed
        [1, 1]
    """

    module: str  # qualified name of the module holding it ("" for the model itself)
    attr: str
    ids: list[int]
    pieces: list[list[int]] | None = None
    bounds: bool = False  # the numbers are where pieces start (tensor_split indices), not their sizes
    index: int | None = None  # the count is this entry of a list attribute (a reshape's literal shape)

    def new_value(self, count: Callable[[list[int]], int], old: Any = None) -> int | list[int]:
        """The attribute's value once ``count(ids)`` channels of each id list are kept (``old``: its value now)."""
        if self.index is not None:
            return [count(self.ids) if k == self.index else int(v) for k, v in enumerate(old)]
        if self.pieces is None:
            return count(self.ids)
        counts = [count(piece) for piece in self.pieces]
        return list(accumulate(counts))[:-1] if self.bounds else counts


@dataclass
class UnknownOp:
    """An operation that pinned channels because speedup does not understand it."""

    node: str
    op: str
    reason: str
    ids: list[int]


@dataclass
class UniformConstraint:
    """Segments of channel ids that must keep the same number of channels each.

    Grouped convolutions and GroupNorm need equal channel counts per group;
    ``chunk`` on the channel dim needs equal pieces. Speedup keeps extra
    channels (restoring whole classes) until every segment keeps the same
    count.
    """

    what: str
    segments: list[list[int]]


@dataclass
class ChannelAnalysis:
    """Result of :func:`analyze_channels`."""

    graph_module: fx.GraphModule
    uf: ChannelUnionFind
    modules: dict[str, ModuleChannels]
    attr_ties: dict[str, AttrTie]
    warnings: list[str]
    info: dict[fx.Node, Any] = field(repr=False)
    output_info: Any = None
    layouts: dict[fx.Node, Any] = field(default_factory=dict, repr=False)
    unknown_ops: list[UnknownOp] = field(default_factory=list)
    uniform: list[UniformConstraint] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    size_attrs: dict[str, SizeAttr] = field(default_factory=dict)

    def root(self, x: int) -> int:
        return self.uf.find(x)
