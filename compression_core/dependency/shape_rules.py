"""Shape rules: how reshapes, ``cat``, indexing, permutes and reductions move channel ids.

:class:`ShapeRules` is mixed into :class:`~.rules.Propagator` and uses its
state and helpers (``layout``, ``tinfo``, ``unknown``, ``uf``, ...). A
reshape keeps the channels when their dim stays whole (:func:`map_reshape`)
or when it is a channel shuffle's ``view(N, g, C/g, ...)``; a reshape to a
literal channel count follows the attribute it was read from (see
:mod:`.literals`). ``split``/``chunk``/``tensor_split`` are in :mod:`.splits`.
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from .channels import Layout, UnknownOp
from .literals import LiteralUse, literal_at


class ShapeRules:
    """Rules for ops that move channels between dims (a mixin of :class:`~.rules.Propagator`)."""

    def literal_channel_count(self, node: fx.Node, new_dim: int, size: int, ids: list[int]) -> bool:
        """Record the literal channel count of a reshape to bind it to the attribute it was read from.

        Tracing turns ``x.reshape(n, self.hidden_dim, -1)`` into a literal,
        but the module reads the attribute again on every call; after the
        walk :func:`~.literals.bind_literal_uses` finds that attribute (or
        pins the channels). Only a count of the channels themselves (not
        merged with other dims) can follow them.
        """
        if size != len(ids):
            return False
        position, sizes = literal_at(node, 1, ("shape", "size"))
        if isinstance(sizes, (list, tuple)):
            position = position + (new_dim,)
        elif node.op == "call_method" and len(node.args) > 1 + new_dim:  # x.view(n, c, -1): one argument each
            position = ("args", 1 + new_dim)
        else:
            return False
        self.literal_uses.append(LiteralUse(node, position, size, list(ids), "channel count"))
        return True

    def reshape(self, node: fx.Node, x: Any, literal_sizes: list | None = None, static_shape: Any = None) -> Any:
        lay = self.layout(x)
        xi, oi = self.tinfo(x), self.tinfo(node)
        if lay is None:
            return self.passthrough(node, x)
        if xi is None or oi is None:
            return self.unknown(node)
        mapped = map_reshape(xi.shape, oi.shape, lay)
        if mapped is None:
            split = self._split_channels(node, xi.shape, oi.shape, lay, literal_sizes)
            if split is not None:
                return split
            return self.unknown(node, "it splits or mixes the channel dimension")
        new_dim, ids = mapped
        if literal_sizes is not None and new_dim < len(literal_sizes):
            size = literal_sizes[new_dim]
            if isinstance(size, int) and size != -1 and not self.literal_channel_count(node, new_dim, size, ids):
                return self.unknown(node, "it reshapes to a fixed channel count")
        if static_shape is not None:
            if new_dim < len(static_shape):
                size = int(static_shape[new_dim])
                if size != -1 and not (size == 0 and new_dim == lay.dim):
                    return self.unknown(node, "it reshapes to a fixed channel count")
        return Layout(new_dim, ids)

    def _split_channels(self, node: fx.Node, in_shape, out_shape, lay: Layout, literal: list | None) -> Layout | None:
        """``view(N, g, C/g, ...)`` with a literal ``g`` and a computed ``C/g`` (channel shuffle).

        After pruning ``C/g`` shrinks and ``g`` stays, so channel j of every
        group must be kept or removed together: their ids are united and the
        layout moves to the ``C/g`` dim (the ``g`` dim holds no prunable ids).
        """
        c = lay.dim
        if literal is None or len(out_shape) != len(in_shape) + 1:
            return None
        if tuple(out_shape[:c]) != tuple(in_shape[:c]) or tuple(out_shape[c + 2:]) != tuple(in_shape[c + 1:]):
            return None
        if len(literal) != len(out_shape):
            return None
        a, b = out_shape[c], out_shape[c + 1]
        la, lb = literal[c], literal[c + 1]
        fixed_a = isinstance(la, int) and la != -1
        fixed_b = isinstance(lb, int) and lb != -1
        if fixed_a == fixed_b or a * b != len(lay.ids):
            return None
        ids = lay.ids
        if fixed_a:  # (g, C/g): index k * b + j
            rows = [ids[k * b:(k + 1) * b] for k in range(a)]
            for row in rows[1:]:
                self.uf.union_lists(rows[0], row)
            return Layout(c + 1, list(rows[0]))
        cols = [ids[k::b] for k in range(b)]  # (C/g, g): index j * b + k
        for col in cols[1:]:
            self.uf.union_lists(cols[0], col)
        return Layout(c, list(cols[0]))

    def cat(self, node: fx.Node, tensors: Any, dim: int) -> Any:
        out = self.tinfo(node)
        if out is None or not isinstance(tensors, (list, tuple)):
            return self.unknown(node)
        dim = dim % out.ndim
        lays = [self.layout(t) for t in tensors]
        present = [lay for lay in lays if lay is not None]
        if not present:
            return self.unknown(node) if self._has_layout_args(node) else None
        if any(lay.dim != present[0].dim for lay in present):
            return self.unknown(node, "its inputs have their channels on different dimensions")
        cdim = next(lay.dim for lay in lays if lay is not None)
        if cdim == dim:
            ids: list[int] = []
            for t, lay in zip(tensors, lays):
                if lay is None:
                    ti = self.tinfo(t)
                    if ti is None:
                        return self.unknown(node)
                    ids.extend(self.uf.new(ti.shape[dim], pinned=True))
                else:
                    ids.extend(lay.ids)
            return Layout(cdim, ids)
        if any(lay is None for lay in lays):
            if all(lay is not None or self.tie_constant(t, cdim, present[0].ids) for t, lay in zip(tensors, lays)):
                # the constant pieces (a class token prepended along the tokens) are cut with the channels
                for lay in present[1:]:
                    self.uf.union_lists(present[0].ids, lay.ids)
                return self.check(node, Layout(cdim, present[0].ids))
            why = "a constant is concatenated to it"
            op = self.describe(node)
            ids = self.pin_args(node, f"{op} at node '{node.name}': {why}", soft=True)
            self.unknown_ops.append(UnknownOp(node.name, op, why, ids))
            self.warn(node, why)
            return self.check(node, Layout(cdim, present[0].ids))
        for lay in lays[1:]:
            self.uf.union_lists(lays[0].ids, lay.ids)
        return Layout(cdim, lays[0].ids)

    def reduce(self, node: fx.Node, x: Any, dims: Any, keepdim: bool) -> Any:
        lay = self.layout(x)
        xi = self.tinfo(x)
        if lay is None or xi is None:
            return self.passthrough(node, x)
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            return self.unknown(node, "it reduces over the channels")
        if isinstance(dims, int):
            dims = [dims]
        if not all(isinstance(d, int) for d in dims):
            return self.unknown(node)
        dims = [d % xi.ndim for d in dims]
        if lay.dim in dims:
            return self.unknown(node, "it reduces over the channels")
        new_dim = lay.dim if keepdim else lay.dim - sum(1 for d in dims if d < lay.dim)
        return self.check(node, Layout(new_dim, lay.ids))

    def check(self, node: fx.Node, lay: Layout) -> Any:
        oi = self.tinfo(node)
        if oi is None or lay.dim >= oi.ndim or oi.shape[lay.dim] != len(lay.ids):
            return self.unknown(node)
        return lay

    def permute(self, node: fx.Node, x: Any, perm: list[int] | None = None, swap: tuple | None = None) -> Any:
        lay = self.layout(x)
        xi = self.tinfo(x)
        if lay is None or xi is None:
            return self.passthrough(node, x)
        if perm is not None:
            if not all(isinstance(p, int) for p in perm) or len(perm) != xi.ndim:
                return self.unknown(node)
            perm = [p % xi.ndim for p in perm]
            new_dim = perm.index(lay.dim)
        else:
            a, b = swap
            if not isinstance(a, int) or not isinstance(b, int):
                return self.unknown(node)
            a, b = a % xi.ndim, b % xi.ndim
            new_dim = b if lay.dim == a else a if lay.dim == b else lay.dim
        return self.check(node, Layout(new_dim, lay.ids))

    def getitem(self, node: fx.Node, x: Any, index: Any) -> Any:
        src = self.lay.get(x) if isinstance(x, fx.Node) else None
        if src is None:
            return None
        if isinstance(src, (tuple, list)):
            if isinstance(index, int) and -len(src) <= index < len(src):
                return src[index]
            return self.unknown(node)
        lay = src
        xi = self.tinfo(x)
        if xi is None:
            return self.unknown(node)
        idx = index if isinstance(index, tuple) else (index,)
        new_dim, dim = lay.dim, 0
        for entry in idx:
            if dim > lay.dim:
                break
            if isinstance(entry, slice):
                if dim == lay.dim and not (entry.start in (None, 0) and entry.stop is None and entry.step in (None, 1)):
                    return self.unknown(node, "it slices the channels")
                dim += 1
            elif isinstance(entry, int) and not isinstance(entry, bool):
                if dim == lay.dim:
                    return self.unknown(node, "it indexes the channels")
                new_dim -= 1
                dim += 1
            else:
                return self.unknown(node)
        return self.check(node, Layout(new_dim, lay.ids))


def map_reshape(in_shape: tuple[int, ...], out_shape: tuple[int, ...], lay: Layout) -> tuple[int, list[int]] | None:
    """Where the channels of ``lay`` land after a row-major reshape.

    Returns ``(new_dim, ids)`` when the channel dim stays whole (possibly
    merged with neighbours, ids repeated in row-major order) or ``None``
    when the reshape splits the channel dim.
    """
    c = lay.dim
    if in_shape[c] <= 1:
        return None
    if 0 in in_shape:
        return None
    ins = [(i, s) for i, s in enumerate(in_shape) if s != 1]
    outs = [(j, s) for j, s in enumerate(out_shape) if s != 1]
    a = b = 0
    while a < len(ins) and b < len(outs):
        gi, gj = [ins[a]], [outs[b]]
        pi, pj = ins[a][1], outs[b][1]
        a += 1
        b += 1
        while pi != pj:
            if pi < pj:
                if a >= len(ins):
                    return None
                gi.append(ins[a])
                pi *= ins[a][1]
                a += 1
            else:
                if b >= len(outs):
                    return None
                gj.append(outs[b])
                pj *= outs[b][1]
                b += 1
        dims = [i for i, _ in gi]
        if c in dims:
            if len(gj) != 1:
                return None
            pos = dims.index(c)
            outer = 1
            for _, s in gi[:pos]:
                outer *= s
            inner = 1
            for _, s in gi[pos + 1:]:
                inner *= s
            ids = lay.ids
            if inner > 1:
                ids = [x for x in ids for _ in range(inner)]
            if outer > 1:
                ids = ids * outer
            return gj[0][0], ids
    return None
