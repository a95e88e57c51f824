"""Layer rules: how layers with per-channel weights consume, create or pass channel ids.

:class:`LayerRules` is mixed into :class:`~.rules.Propagator` and uses its
state and helpers. Producers (Conv, Linear, ConvTranspose, Embedding) create
fresh ids for their outputs and consume their inputs (their in-channels are
cut to match); depthwise convolutions, the normalisation layers (BatchNorm,
InstanceNorm, LayerNorm, GroupNorm) and PReLU pass the ids through. Every
such layer gets a :class:`~.channels.ModuleChannels` record so speedup can
resize it; grouped layers add uniform constraints (every group keeps as many
channels).
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
import torch.nn as nn

from .channels import Layout, ModuleChannels, UniformConstraint, UnknownOp


class LayerRules:
    """Rules for the layers speedup resizes (a mixin of :class:`~.rules.Propagator`)."""

    def module_state(self, name: str, kind: str, module: nn.Module) -> ModuleChannels:
        """The record of layer ``name`` (created on its first call)."""
        state = self.modules.get(name)
        if state is None:
            state = self.modules[name] = ModuleChannels(name, kind, module)
        state.calls += 1
        return state

    def consume(self, node: fx.Node, state: ModuleChannels, lay: Layout | None, count: int, dim_ok: bool) -> list[int]:
        """Input channel ids of a layer that reads ``count`` channels of ``lay``."""
        if lay is None or not dim_ok or len(lay.ids) != count:
            if lay is not None:
                why = "its input channels are not where the layer reads them"
                op = self.describe(node)
                self.uf.pin(lay.ids, f"{op} at node '{node.name}': {why}", soft=True)
                self.unknown_ops.append(UnknownOp(node.name, op, why, list(lay.ids)))
                self.warn(node, why)
            ids = self.uf.new(count, pinned=True, reason=f"inputs of layer {state.name!r}")
        else:
            ids = lay.ids
        if state.in_ids is None:
            state.in_ids = list(ids)
        else:
            self.uf.union_lists(state.in_ids, ids)
        return state.in_ids

    def uniform_groups(self, what: str, ids: list[int], groups: int) -> None:
        """Require every one of ``groups`` equal slices of ``ids`` to keep the same number of channels."""
        if groups <= 1 or len(ids) <= groups:
            if groups > 1:
                self.uf.pin(ids, f"{what}: one channel per group")
            return
        per = len(ids) // groups
        self.uniform.append(UniformConstraint(what, [ids[k * per:(k + 1) * per] for k in range(groups)]))

    def conv(self, node: fx.Node, name: str, m: nn.modules.conv._ConvNd, x: Any) -> Any:
        lay = self.layout(x)
        xi = self.tinfo(x)
        transposed = bool(getattr(m, "transposed", False))
        in_ch = m.in_channels
        out_ch = m.out_channels
        if "weight" not in m._parameters or m.weight is None:
            return self.unknown(node, "its weight is not a plain parameter")
        dim_ok = lay is not None and lay.dim == 1 and xi is not None and xi.ndim >= 3
        if m.groups == 1:
            state = self.module_state(name, "conv_transpose" if transposed else "conv", m)
            self.consume(node, state, lay, in_ch, dim_ok)
            if state.out_ids is None:
                state.out_ids = self.uf.new(out_ch)
            return Layout(1, state.out_ids)
        # grouped (transposed or not): group g reads the g-th slice of the inputs and writes the g-th slice
        # of the outputs (a ConvTranspose's weight is (in, out/groups, *k), the same per-group blocks)
        if m.groups == in_ch == out_ch:
            state = self.module_state(name, "depthwise", m)
            ids = self.consume(node, state, lay, in_ch, dim_ok)
            state.out_ids = state.in_ids
            return Layout(1, ids)
        what = f"grouped {'transposed ' if transposed else ''}convolution {name!r} (groups={m.groups})"
        if in_ch == out_ch:
            # output channel i is tied to input channel i (same group, same place), and every group keeps
            # the same number of channels
            state = self.module_state(name, "grouped", m)
            ids = self.consume(node, state, lay, in_ch, dim_ok)
            state.out_ids = state.in_ids
            if state.calls == 1:
                self.uniform_groups(what, ids, m.groups)
            return Layout(1, ids)
        # different in/out widths: a producer with per-group uniform cuts on both sides
        state = self.module_state(name, "conv_transpose" if transposed else "conv", m)
        self.consume(node, state, lay, in_ch, dim_ok)
        if state.out_ids is None:
            state.out_ids = self.uf.new(out_ch)
            self.uniform_groups(what, state.in_ids, m.groups)
            self.uniform_groups(what, state.out_ids, m.groups)
        return Layout(1, state.out_ids)

    def linear(self, node: fx.Node, name: str, m: nn.Linear, x: Any) -> Any:
        if "weight" not in m._parameters or m.weight is None:
            return self.unknown(node, "its weight is not a plain parameter")
        lay = self.layout(x)
        xi, oi = self.tinfo(x), self.tinfo(node)
        if oi is None or oi.ndim < 1:
            return self.unknown(node)
        state = self.module_state(name, "linear", m)
        ok = lay is not None and xi is not None and lay.dim == xi.ndim - 1
        self.consume(node, state, lay, m.in_features, ok)
        if state.out_ids is None:
            state.out_ids = self.uf.new(m.out_features)
        if oi.ndim == 1:
            self.uf.pin(state.out_ids, f"1-D output of layer {name!r}")
            return None
        return Layout(oi.ndim - 1, state.out_ids)

    def embedding(self, node: fx.Node, name: str, m: nn.Embedding, x: Any) -> Any:
        oi = self.tinfo(node)
        if oi is None or oi.ndim < 2 or "weight" not in m._parameters:
            return self.unknown(node)
        if self.layout(x) is not None:
            self.pin_args(node, f"indices of embedding {name!r}")
        state = self.module_state(name, "embedding", m)
        if state.out_ids is None:
            state.out_ids = self.uf.new(m.embedding_dim)
        return Layout(oi.ndim - 1, state.out_ids)

    def norm(self, node: fx.Node, name: str, m: nn.Module, x: Any, count: int, kind: str, dim: int = 1) -> Any:
        lay = self.layout(x)
        xi = self.tinfo(x)
        state = self.module_state(name, kind, m)
        if xi is not None:
            dim = dim % xi.ndim
        ok = lay is not None and lay.dim == dim and xi is not None and self.passes_shape(node, x, lay) is not None
        ids = self.consume(node, state, lay, count, ok)
        state.out_ids = state.in_ids
        return Layout(dim, ids)

    def layer_norm(self, node: fx.Node, name: str, m: nn.LayerNorm, x: Any, channel_dim: int | None) -> Any:
        """nn.LayerNorm (``channel_dim`` None: last dims) or a channels-first LayerNorm2d (dim 1)."""
        lay, xi = self.layout(x), self.tinfo(x)
        shape = tuple(m.normalized_shape)
        if lay is None or xi is None:
            return self.passthrough(node, x)
        if channel_dim is None:
            normed = list(range(xi.ndim - len(shape), xi.ndim))
            if lay.dim not in normed:
                return self.passthrough(node, x)
            if len(shape) != 1:
                return self.unknown(node, "it normalises over the channels and other dims together")
            channel_dim = xi.ndim - 1
        elif len(shape) != 1 or lay.dim != channel_dim % xi.ndim:
            return self.unknown(node, "it normalises over the channels")
        if not m.elementwise_affine or getattr(m, "weight", None) is None:
            return self.passthrough(node, x)
        return self.norm(node, name, m, x, shape[0], "norm", dim=channel_dim)

    def group_norm(self, node: fx.Node, name: str, m: nn.GroupNorm, x: Any) -> Any:
        out = self.norm(node, name, m, x, m.num_channels, "norm")
        state = self.modules[name]
        if state.calls == 1:
            self.uniform_groups(f"GroupNorm {name!r} (num_groups={m.num_groups})", state.in_ids, m.num_groups)
        return out

    def functional_norm(self, node: fx.Node, x: Any, attrs: list[Any]) -> Any:
        lay = self.layout(x)
        out = self.passthrough(node, x)
        if lay is None or out is None or lay.dim != 1:
            return self.unknown(node) if lay is not None else out
        for a in attrs:
            ai = self.tinfo(a)
            if ai is not None and ai.ndim == 1 and ai.shape[0] == len(lay.ids):
                if not self.tie(a, 0, lay.ids):
                    self.uf.pin(lay.ids)
                    self.warn(node, "its statistics are computed tensors")
        return out
