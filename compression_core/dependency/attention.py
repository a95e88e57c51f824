"""Attention layers in the channel analysis: the query, key and value channels they read, the ones they write.

An ``nn.MultiheadAttention`` reads query channels (``in_proj_weight``
columns; with ``kdim``/``vdim`` different from ``embed_dim``, the columns of
``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``) and writes output
channels (``out_proj`` rows). They belong to the channel groups of the
values around the layer (a transformer's residual stream). The output
channels are produced by ``out_proj``, so they are removed only when its
rows are masked: :func:`~.groups.auto_set_dependency_group_ids` puts
``<layer>.out_proj`` into the residual stream's dependency group. Its heads
are internal (no other layer shares them): speedup cuts them
(:mod:`compression_core.speedup.attention`).

Example::

    >>> import torch, torch.nn as nn
    >>> from compression_core.dependency import analyze_channels
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.inp, self.attn = nn.Linear(4, 8), nn.MultiheadAttention(8, 2, batch_first=True)
    ...     def forward(self, x):
    ...         x = self.inp(x)
    ...         return self.attn(x, x, x)[0]
    >>> state = analyze_channels(Block(), torch.zeros(1, 3, 4)).modules["attn"]
    >>> state.kind, len(state.in_ids), len(state.out_ids)
    ('attention', 8, 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.fx as fx
import torch.nn as nn

from ..models.attention import input_dims, unsupported_reason
from .channels import Layout, ModuleChannels
from .graph import TensorInfo


@dataclass
class AttentionChannels(ModuleChannels):
    """What the analysis learnt about an attention layer.

    ``in_ids`` are the query channels (and the key and value channels when
    the projections are packed, which read all three through the same
    columns), ``key_ids`` / ``value_ids`` those of separate key and value
    projections, ``out_ids`` the output channels (``out_proj`` rows).
    """

    key_ids: list[int] | None = None
    value_ids: list[int] | None = None


def _read_channels(prop: Any, node: fx.Node, state: AttentionChannels, field: str, x: Any, width: int) -> None:
    """Tie input ``x`` (channels on its last dim) to the layer's ``field`` ids (``in_ids``, ``key_ids``, ...)."""
    lay, xi = prop.layout(x), prop.tinfo(x)
    ok = lay is not None and xi is not None and lay.dim == xi.ndim - 1
    # Propagator.consume reads and extends a record's in_ids: give it one holding this input's ids
    reader = ModuleChannels(state.name, state.kind, state.module, in_ids=getattr(state, field))
    setattr(state, field, prop.consume(node, reader, lay, width, ok))


def attention_channels(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    """Channel rule for an attention layer (a built-in rule of :class:`~.rules.Propagator`).

    Query, key and value are consumed like a Linear's input (packed
    projections tie all three to the same channel ids); the output gets
    the layer's own output channel ids. Masks and other arguments keep
    their channels. The layer is recorded as an :class:`AttentionChannels`
    of kind ``"attention"``.
    """
    name = node.target
    why = unsupported_reason(m)
    if why is not None:
        return prop.unknown(node, why)
    out = prop.info.get(node)
    if not (isinstance(out, (tuple, list)) and out and isinstance(out[0], TensorInfo)
            and out[0].shape[-1] == m.embed_dim):
        return prop.unknown(node, "its output is not (attention output, weights)")
    state = prop.modules.get(name)
    if state is None:
        state = prop.modules[name] = AttentionChannels(name, "attention", m)
    state.calls += 1
    names = ("query", "key", "value")
    query, key, value = (node.args[i] if len(node.args) > i else node.kwargs.get(n) for i, n in enumerate(names))
    reason = f"arguments of attention layer {name!r} other than query, key and value"
    for arg in list(node.args[3:]) + [v for k, v in node.kwargs.items() if k not in names]:
        if isinstance(arg, fx.Node):
            prop.pin_value(prop.lay.get(arg), reason)
    qdim, kdim, vdim = input_dims(m)
    if m._qkv_same_embed_dim:
        for x in (query, key, value):
            _read_channels(prop, node, state, "in_ids", x, qdim)
    else:
        _read_channels(prop, node, state, "in_ids", query, qdim)
        _read_channels(prop, node, state, "key_ids", key, kdim)
        _read_channels(prop, node, state, "value_ids", value, vdim)
    if state.out_ids is None:
        state.out_ids = prop.uf.new(m.embed_dim)
    return type(out)([Layout(out[0].ndim - 1, state.out_ids)] + [None] * (len(out) - 1))


__all__ = ["AttentionChannels", "attention_channels"]
