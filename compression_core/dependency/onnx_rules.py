"""Channel rules for modules that Condense's ONNX importer builds (named by class, as onnx2torch's are).

- ``OnnxStaticReshape`` (a ``Reshape`` by a literal shape, kept as the list ``shape``):
  the channels follow it like any reshape; a literal channel count (``[0, 512]`` after
  512 channels, ``[0, 25088]`` after 512 channels of 7 x 7) becomes a
  :class:`~.channels.SizeAttr` on that entry, which speedup sets to the kept count.
- ``OnnxPadAnyRank`` (a ``Pad`` by constant pads): channels pass unless it pads them.
- ``OnnxStaticSplit`` (a ``Split`` by constant sizes): each piece keeps the ids of its
  slice and ``sizes`` becomes the kept count per piece.
- ``OnnxMinMax`` (``Min`` / ``Max``, elementwise with broadcasting, e.g. a ReLU6 as ``Max``/``Min``
  by constants): like ``Add``.
- ``OnnxRecurrent`` (ONNX ``LSTM`` / ``GRU``): a recurrent layer keeps its input and
  hidden sizes; the layers before it are still pruned, except the one feeding it.

Example::

    >>> from compression_core.dependency.rule_table import RULES
    >>> class OnnxStaticReshape(torch.nn.Module): ...
    >>> RULES.for_module(OnnxStaticReshape()) is not None
    True
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import torch.fx as fx
import torch.nn as nn

from .channels import Layout, SizeAttr
from .graph import TensorInfo
from .rule_table import RULES
from .shape_rules import map_reshape


def _static_reshape(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    x = node.args[0] if node.args else None
    lay = prop.layout(x)
    xi, oi = prop.tinfo(x), prop.tinfo(node)
    if lay is None:
        return prop.passthrough(node, x)
    if xi is None or oi is None:
        return prop.unknown(node)
    mapped = map_reshape(xi.shape, oi.shape, lay)
    if mapped is None:
        return prop.unknown(node, "it splits or mixes the channel dimension")
    new_dim, ids = mapped
    shape = list(getattr(m, "shape", []))
    size = shape[new_dim] if new_dim < len(shape) else -1
    if size == -1 or (size == 0 and new_dim == lay.dim):
        return Layout(new_dim, ids)
    target = f"{node.target}.shape"
    if size != len(ids) or target in prop.size_attrs:
        return prop.unknown(node, "it reshapes to a fixed channel count")
    prop.size_attrs[target] = SizeAttr(str(node.target), "shape", list(ids), index=new_dim)
    return Layout(new_dim, ids)


def _pad(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    x = node.args[0] if node.args else None
    lay, xi = prop.layout(x), prop.tinfo(x)
    if lay is None:
        return prop.passthrough(node, x)
    pads = list(getattr(m, "pads", []))
    if xi is None or len(pads) != 2 * xi.ndim:
        return prop.unknown(node)
    if pads[lay.dim] or pads[xi.ndim + lay.dim]:
        return prop.unknown(node, "it pads the channels")
    return prop.passthrough(node, x)


def _static_split(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    x = node.args[0] if node.args else None
    lay, xi, oi = prop.layout(x), prop.tinfo(x), prop.info.get(node)
    if lay is None:
        return prop.passthrough(node, x) if prop.lay.get(x) is None else prop.unknown(node)
    sizes = list(getattr(m, "sizes", []))
    if xi is None or len(sizes) < 2 or not isinstance(oi, (tuple, list)):
        return prop.unknown(node)
    if m.axis % xi.ndim != lay.dim:
        return tuple(Layout(lay.dim, lay.ids) for _ in oi)
    target = f"{node.target}.sizes"
    if sum(sizes) != len(lay.ids) or target in prop.size_attrs:
        return prop.unknown(node, "it splits the channels into pieces speedup cannot follow")
    starts = [0, *accumulate(sizes)]
    pieces = [lay.ids[a:b] for a, b in zip(starts, starts[1:])]
    got = [v.shape[lay.dim] if isinstance(v, TensorInfo) and v.ndim > lay.dim else None for v in oi]
    if got != sizes:
        return prop.unknown(node)
    prop.size_attrs[target] = SizeAttr(str(node.target), "sizes", list(lay.ids), pieces=pieces)
    return tuple(Layout(lay.dim, p) for p in pieces)


def _recurrent(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    return prop.unknown(node, "a recurrent layer (LSTM/GRU) keeps its input and hidden sizes")


RULES.add("module", "OnnxStaticReshape", _static_reshape)
RULES.add("module", ("OnnxMinMax", "OnnxClipDynamic"), lambda prop, node, m: prop.nary(node, list(node.args)))
RULES.add("module", "OnnxPadAnyRank", _pad)
RULES.add("module", "OnnxStaticSplit", _static_split)
RULES.add("module", ("OnnxRecurrent", nn.LSTM, nn.GRU, nn.RNN), _recurrent)
