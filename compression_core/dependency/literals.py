"""Literal sizes in the traced graph that pruning must change, and the attributes they come from.

torch.fx copies Python numbers into the graph: ``torch.split(x, self.sizes,
dim=1)`` becomes a node whose argument is the list ``[16, 32]``. Speedup
resizes layers in place and never rewrites ``forward``, so after pruning the
model still calls ``torch.split(x, self.sizes, dim=1)``: new sizes take
effect only through the attribute they are read from.

A rule that needs such a change records a :class:`LiteralUse` on the
propagator (``literal_uses``): where the literal sits in the node's
arguments and which channel ids its numbers count. After the walk,
:func:`bind_literal_uses` finds, for every use, the attribute of the calling
module whose value fx copied there: it gives each candidate (an attribute
equal to the literal) a probe value, traces the model again and accepts it
when exactly recorded uses changed. Accepted attributes join the
propagator's ``size_attrs`` (:class:`~.channels.SizeAttr`), which
``ModelSpeedup`` sets to the kept counts. A use without such an attribute
(the number is written in ``forward`` itself, computed from the attribute, or
the attribute also feeds other numbers) keeps its channels.

Example::

    >>> import torch, torch.nn as nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv, self.sizes = nn.Conv2d(3, 8, 1), [2, 6]
    ...     def forward(self, x):
    ...         a, b = torch.split(self.conv(x), self.sizes, dim=1)
    ...         return a.mean() + b.mean()
    >>> from compression_core.dependency import analyze_channels
    >>> sizes = analyze_channels(Block(), torch.rand(1, 3, 4, 4)).size_attrs["sizes"]
    >>> sizes.module, [len(piece) for piece in sizes.pieces]
    ('', [2, 6])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch.fx as fx
import torch.nn as nn

from .channels import SizeAttr
from .graph import _Tracer

Position = tuple  # ("args", 1) or ("kwargs", "split_size"), then list indices


@dataclass
class LiteralUse:
    """A literal in ``node``'s arguments whose numbers count channels.

    ``value`` is the literal (an int or a tuple of ints) at ``position`` in
    ``(node.args, node.kwargs)``; ``ids``, ``pieces`` and ``bounds`` say what
    it counts, as for :class:`~.channels.SizeAttr`. ``what`` names it in
    messages ("split sizes").
    """

    node: fx.Node
    position: Position
    value: Any
    ids: list[int]
    what: str
    pieces: list[list[int]] | None = None
    bounds: bool = False

    def counted(self) -> tuple:
        """How many channels each number counts (uses of one attribute must agree to share it)."""
        return self.bounds, len(self.ids), None if self.pieces is None else tuple(map(len, self.pieces))

    def leaves(self) -> set[tuple[str, Position]]:
        """The (node name, position) of every number of the literal."""
        if isinstance(self.value, tuple):
            return {(self.node.name, self.position + (k,)) for k in range(len(self.value))}
        return {(self.node.name, self.position)}


def literal_at(node: fx.Node, index: int, names: Iterable[str]) -> tuple[Position | None, Any]:
    """Argument ``index`` of ``node`` (or its keyword, one of ``names``) and where it is."""
    if len(node.args) > index:
        return ("args", index), node.args[index]
    for name in names:
        if name in node.kwargs:
            return ("kwargs", name), node.kwargs[name]
    return None, None


def as_literal(value: Any) -> Any:
    """``value`` as an int or a tuple of ints, or None when it is anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def owner_of(node: fx.Node) -> str:
    """Qualified name of the module whose ``forward`` made ``node`` (``""`` for the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    key, entry = next(reversed(stack.items()))
    return str(entry[0] if isinstance(entry, tuple) and entry and isinstance(entry[0], str) else key)


def _candidates(owner: nn.Module, value: Any) -> list[str]:
    """Plain instance attributes of ``owner`` equal to ``value``."""
    return [
        attr for attr, held in vars(owner).items()
        if not attr.startswith("_") and attr != "training" and as_literal(held) == value
    ]


def _probe_value(value: Any) -> Any:
    """A value of the same type as ``value`` that differs in every number."""
    if isinstance(value, int):
        return value + 1
    return type(value)(v + 1 for v in value)


def _changed_leaves(old: fx.Graph, new: fx.Graph) -> set[tuple[str, Position]] | None:
    """Positions of the numbers that differ between two traces; None if the graphs differ otherwise."""
    old_nodes, new_nodes = list(old.nodes), list(new.nodes)
    if len(old_nodes) != len(new_nodes):
        return None
    changed: set[tuple[str, Position]] = set()

    def same(a: Any, b: Any, name: str, position: Position) -> bool:
        if isinstance(a, fx.Node) or isinstance(b, fx.Node):
            return isinstance(a, fx.Node) and isinstance(b, fx.Node) and a.name == b.name
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            if type(a) is not type(b) or len(a) != len(b):
                return False
            return all(same(x, y, name, position + (k,)) for k, (x, y) in enumerate(zip(a, b)))
        if isinstance(a, slice) and isinstance(b, slice):
            return same((a.start, a.stop, a.step), (b.start, b.stop, b.step), name, position)
        if isinstance(a, dict) or isinstance(b, dict):
            if not isinstance(a, dict) or not isinstance(b, dict) or a.keys() != b.keys():
                return False
            return all(same(a[k], b[k], name, position + (k,)) for k in a)
        if as_literal(a) is not None and as_literal(b) is not None:
            if a != b:
                changed.add((name, position))
            return True
        return type(a) is type(b) and a == b

    for a, b in zip(old_nodes, new_nodes):
        if (a.op, a.name, a.target) != (b.op, b.name, b.target):
            return None
        if not same(tuple(a.args), tuple(b.args), a.name, ("args",)) or \
                not same(dict(a.kwargs), dict(b.kwargs), a.name, ("kwargs",)):
            return None
    return changed


def _trace_with(model: nn.Module, leaves: Iterable[str], owner: nn.Module, attr: str, value: Any) -> fx.Graph | None:
    old = vars(owner)[attr]
    object.__setattr__(owner, attr, value)
    try:
        return _Tracer(leaves).trace(model)
    except Exception:  # the probe value broke the model's own logic: not a usable source
        return None
    finally:
        object.__setattr__(owner, attr, old)


def bind_literal_uses(prop: Any) -> None:
    """Turn the propagator's ``literal_uses`` into ``size_attrs``; keep the channels of the others.

    ``prop`` is the :class:`~.rules.Propagator` after its walk. Uses of one
    attribute (a module called twice) have their pieces' channels united.
    """
    uses: list[LiteralUse] = prop.literal_uses
    if not uses:
        return
    root, graph, leaves = prop.root, prop.gm.graph, list(prop._leaves)
    by_leaf = {leaf: use for use in uses for leaf in use.leaves()}
    bound: set[int] = set()
    probed: set[tuple[str, str]] = set()
    for use in uses if not isinstance(root, fx.GraphModule) else ():  # a GraphModule's code holds the numbers
        path = owner_of(use.node)
        try:
            owner = root.get_submodule(path)
        except AttributeError:
            continue
        for attr in _candidates(owner, use.value):
            target = f"{path}.{attr}" if path else attr
            if (path, attr) in probed or target in prop.size_attrs:
                continue
            probed.add((path, attr))
            probe = _trace_with(root, leaves, owner, attr, _probe_value(vars(owner)[attr]))
            changed = _changed_leaves(graph, probe) if probe is not None else None
            if not changed or not changed <= by_leaf.keys():
                continue  # unused in forward, or it also feeds numbers speedup does not adjust
            members = list({id(by_leaf[leaf]): by_leaf[leaf] for leaf in changed}.values())
            if any(not m.leaves() <= changed or id(m) in bound for m in members) \
                    or len({m.counted() for m in members}) != 1:
                continue
            first = members[0]
            prop.size_attrs[target] = SizeAttr(path, attr, list(first.ids), first.pieces, first.bounds)
            for other in members[1:]:
                prop.uf.union_lists(first.ids, other.ids)
            bound.update(id(m) for m in members)
    for use in uses:
        if id(use) not in bound:
            shown = list(use.value) if isinstance(use.value, tuple) else use.value
            prop.unknown(use.node, f"its {use.what} {shown} cannot follow the pruned channels (keep them in a "
                                   "plain attribute of the calling module, such as self.sizes or self.hidden_dim, "
                                   "that forward passes as it is)")


def plain_sizes(value: Any) -> int | list[int] | None:
    """An int attribute's value, a list or tuple of ints as a list (its JSON form), else None."""
    literal = as_literal(value)
    return list(literal) if isinstance(literal, tuple) else literal


def sizes_like(old: Any, value: Any) -> Any:
    """``value`` (an int or a list of ints) with the type of the attribute's ``old`` value."""
    return int(value) if isinstance(old, int) else type(old)(int(v) for v in value)
