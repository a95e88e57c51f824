"""Channel rule for ops that cut a tensor into pieces: ``chunk``, ``split``, ``tensor_split``.

Each piece gets the channel ids of its slice, so its consumers lose the kept
channels of that slice. On the channel dim the piece sizes must follow the
kept channels:

- ``chunk(n)``, ``tensor_split(x, n)``: the number of pieces stays, so every
  piece must keep the same number of channels (a uniform constraint: speedup
  keeps extra masked channels where the masks are uneven);
- ``split(x, s)`` (pieces of ``s``): the same, and ``s`` becomes the kept
  count per piece;
- ``split(x, [s0, s1, ...])``, ``tensor_split(x, [i0, i1, ...])``: the sizes
  become the kept counts of the pieces, the indices their running sums.

Sizes that change are numbers fx copied into the graph; they take effect
only through the module attribute they were read from (see
:mod:`.literals`). Sizes with no such attribute, computed sizes and uneven
``tensor_split`` sections keep their channels.

Example::

    >>> import torch, torch.nn as nn
    >>> from compression_core.dependency import analyze_channels
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv, self.sizes = nn.Conv2d(3, 6, 1), [2, 4]
    ...         self.a, self.b = nn.Conv2d(2, 1, 1), nn.Conv2d(4, 1, 1)
    ...     def forward(self, x):
    ...         p, q = self.conv(x).split(self.sizes, dim=1)
    ...         return self.a(p) + self.b(q)
    >>> analysis = analyze_channels(Net(), torch.rand(1, 3, 4, 4))
    >>> out = analysis.modules["conv"].out_ids
    >>> analysis.modules["a"].in_ids == out[:2], analysis.modules["b"].in_ids == out[2:]
    (True, True)
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import torch.fx as fx

from .channels import Layout, UniformConstraint
from .graph import TensorInfo
from .literals import LiteralUse, as_literal, literal_at

SIZE_ARGUMENTS = {
    "chunk": ("chunks",),
    "split": ("split_size_or_sections", "split_size"),
    "tensor_split": ("indices_or_sections", "sections", "indices", "tensor_indices_or_sections"),
}


def split_channels(prop: Any, node: fx.Node, x: Any, dim: Any, how: str) -> Any:
    """Layouts of the pieces of ``x`` cut by ``how`` (a key of :data:`SIZE_ARGUMENTS`) along ``dim``.

    ``prop`` is the :class:`~.rules.Propagator`; uniform constraints and
    literal uses (see :mod:`.literals`) go to its ``uniform`` and
    ``literal_uses``.
    """
    lay = prop.layout(x)
    xi, oi = prop.tinfo(x), prop.info.get(node)
    if lay is None or xi is None:
        return prop.passthrough(node, x) if lay is None and prop.lay.get(x) is None else prop.unknown(node)
    if not isinstance(dim, int) or not isinstance(oi, (tuple, list)):
        return prop.unknown(node)
    if dim % xi.ndim != lay.dim:
        return tuple(Layout(lay.dim, lay.ids) if isinstance(v, TensorInfo) else None for v in oi)
    position, size = literal_at(node, 1, SIZE_ARGUMENTS[how])
    literal = as_literal(size)
    if literal is None:
        return prop.unknown(node, "it splits the channels into pieces of computed sizes")
    ids = lay.ids
    n = len(ids)
    if how == "chunk" or (how == "tensor_split" and isinstance(literal, int)):
        # the count of pieces is all the call says: equal pieces stay equal
        if literal < 1 or n % literal != 0:
            return prop.unknown(node, "it splits the channels into pieces of different sizes")
        pieces = _pieces(ids, [n // literal] * literal)
        uniform, use = True, None
    elif isinstance(literal, int):  # split(x, s): pieces of s, the last one smaller
        if literal < 1:
            return prop.unknown(node)
        if literal >= n:  # one piece, whatever the channel count becomes
            return _checked(prop, node, lay, [ids])
        if n % literal != 0:
            return prop.unknown(node, "its last piece is smaller than the others")
        pieces = _pieces(ids, [literal] * (n // literal))
        uniform, use = True, LiteralUse(node, position, literal, pieces[0], "split size")
    elif how == "split":
        if sum(literal) != n or min(literal, default=0) < 0:
            return prop.unknown(node)
        pieces = _pieces(ids, list(literal))
        uniform, use = False, LiteralUse(node, position, literal, list(ids), "split sizes", pieces)
    else:  # tensor_split(x, [i0, i1, ...]): cut before each index
        if any(not 0 <= i <= n for i in literal) or list(literal) != sorted(literal):
            return prop.unknown(node, "it splits the channels at indices outside 0..channels or out of order")
        bounds = [0, *literal, n]
        pieces = _pieces(ids, [b - a for a, b in zip(bounds, bounds[1:])])
        uniform, use = False, LiteralUse(node, position, literal, list(ids), "split indices", pieces, bounds=True)
    out = _checked(prop, node, lay, pieces)
    if isinstance(out, tuple) and all(isinstance(v, Layout) for v in out):
        if uniform:
            prop.uniform.append(UniformConstraint(f"{how} at node '{node.name}'", pieces))
        if use is not None:
            prop.literal_uses.append(use)
    return out


def _pieces(ids: list[int], sizes: list[int]) -> list[list[int]]:
    starts = [0, *accumulate(sizes)]
    return [ids[a:b] for a, b in zip(starts, starts[1:])]


def _checked(prop: Any, node: fx.Node, lay: Layout, pieces: list[list[int]]) -> Any:
    """One layout per piece, if the traced pieces have these sizes."""
    oi = prop.info.get(node)
    sizes = [v.shape[lay.dim] if isinstance(v, TensorInfo) and v.ndim > lay.dim else None for v in oi]
    if sizes != [len(p) for p in pieces]:
        return prop.unknown(node)
    return tuple(Layout(lay.dim, p) for p in pieces)
