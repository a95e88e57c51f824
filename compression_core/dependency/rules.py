"""The propagator: how graph operations move, couple or pin channel ids.

``Propagator.run`` walks a traced graph once and gives every tensor value a
:class:`~.channels.Layout`. Producers (Conv, Linear, ConvTranspose,
Embedding) create fresh ids for their outputs and consume their inputs;
normalisation and depthwise/grouped convolutions pass ids through;
elementwise ops union them; ``cat``/``split``/``chunk``/reshapes/permutes
move them; attention layers consume their query/key/value channels and
produce their output channels (:mod:`.attention`; speedup cuts their heads
inside); a reshape to a literal channel count read from a module's
int attribute (``x.reshape(n, self.hidden_dim, -1)``) ties that attribute to
the channels; anything unknown pins them (soft pin, see ``strict``).

Which rule handles an operation is looked up in one table,
:data:`~.rule_table.RULES`, filled by :mod:`.builtin_rules` and by
:func:`~.rule_table.register_channel_rule`. The rules for reshapes, ``cat``,
indexing, permutes and reductions live in :mod:`.shape_rules` and those for
layers in :mod:`.layer_rules`, as mixins of :class:`Propagator`; this module
holds the propagator's state and helpers, the elementwise rules, the named
rules (``"passthrough"``, ...) and the dispatch from graph nodes to rules.

Example::

    >>> import torch, torch.nn as nn
    >>> from compression_core.dependency.graph import propagate_shapes, trace_model
    >>> gm = trace_model(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    >>> prop = Propagator(gm, propagate_shapes(gm, torch.zeros(1, 3, 2, 2)))
    >>> prop.run()
    >>> [len(prop.lay[n].ids) for n in gm.graph.nodes if n.op == "call_module"]
    [4, 4]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from . import builtin_rules, onnx_rules  # noqa: F401 - fill RULES with the built-in rules
from .builtin_rules import iter_nodes
from .channels import (
    AttrTie,
    ChannelUnionFind,
    Layout,
    ModuleChannels,
    SizeAttr,
    UniformConstraint,
    UnknownOp,
)
from .graph import TensorInfo
from .layer_rules import LayerRules
from .literals import LiteralUse
from .rule_table import RULES
from .shape_rules import ShapeRules

__all__ = ["Propagator"]

_PRODUCER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


# --------------------------------------------------------------------------
# the propagator


class Propagator(ShapeRules, LayerRules):
    """Walks a traced graph once and gives every value a channel layout.

    Rules (built-in or registered with :func:`~.rule_table.register_channel_rule`) receive this object;
    its public helpers (``layout``, ``tinfo``, ``passthrough``, ``nary``,
    ``unknown``, ``module_state``, ``consume``, ``uf``) are the API for them.
    The shape and layer rules come from its mixins :class:`~.shape_rules.ShapeRules`
    and :class:`~.layer_rules.LayerRules`.
    """

    def __init__(self, gm: fx.GraphModule, info: dict[fx.Node, Any], leaves: Iterable[str] = (),
                 root: nn.Module | None = None):
        self.gm = gm
        self.root = root if root is not None else gm  # the traced model, whose modules hold int attributes
        self.info = info
        self.uf = ChannelUnionFind()
        self.lay: dict[fx.Node, Any] = {}
        self.modules: dict[str, ModuleChannels] = {}
        self.attr_ties: dict[str, AttrTie] = {}
        self.size_attrs: dict[str, SizeAttr] = {}
        self.literal_uses: list[LiteralUse] = []  # literals to bind to size_attrs after the walk (see .literals)
        self.warnings: list[str] = []
        self.unknown_ops: list[UnknownOp] = []
        self.uniform: list[UniformConstraint] = []
        self._warned: set[str] = set()
        self._named = dict(gm.named_modules())
        self._leaves = set(leaves)
        self.output_info: Any = None

    # -- helpers ----------------------------------------------------------
    def warn(self, node: fx.Node, why: str) -> None:
        msg = f"node '{node.name}' ({self.describe(node)}): {why}; the channels through it are kept"
        if msg not in self._warned:
            self._warned.add(msg)
            self.warnings.append(msg)

    def describe(self, node: fx.Node) -> str:
        """The operation of ``node`` as reports name it (``module 'conv1' (Conv2d)``, ``Tensor.view``, ...)."""
        if node.op == "call_module":
            try:
                module = self.gm.get_submodule(node.target)
                return f"module {node.target!r} ({type(module).__name__})"
            except AttributeError:
                return f"module {node.target!r}"
        if node.op == "call_method":
            return f"Tensor.{node.target}"
        target = node.target
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
        module = getattr(target, "__module__", None)
        return f"{module}.{name}" if module and module != "builtins" else name

    def tinfo(self, value: Any) -> TensorInfo | None:
        if isinstance(value, fx.Node):
            value = self.info.get(value)
        return value if isinstance(value, TensorInfo) else None

    def layout(self, value: Any) -> Layout | None:
        if isinstance(value, fx.Node):
            lay = self.lay.get(value)
            return lay if isinstance(lay, Layout) else None
        return None

    def fresh(self, info: Any, pinned: bool = True, reason: str | None = None, like: Layout | None = None,
              like_ndim: int | None = None) -> Any:
        """Fresh (pinned) layouts for every tensor in a summarised value.

        The channels are on dim 1, or on ``like.dim`` for tensors with
        ``like_ndim`` dims (an unknown op usually keeps the channel dim).
        """
        if isinstance(info, TensorInfo):
            if info.ndim >= 2:
                dim = like.dim if like is not None and info.ndim == like_ndim else 1
                return Layout(dim, self.uf.new(info.shape[dim], pinned=pinned, reason=reason))
            return None
        if isinstance(info, (tuple, list)):
            return type(info)(self.fresh(v, pinned, reason, like, like_ndim) for v in info)
        return None

    def pin_value(self, lay: Any, reason: str | None = None, soft: bool = False) -> list[int]:
        ids: list[int] = []
        if isinstance(lay, Layout):
            self.uf.pin(lay.ids, reason, soft)
            ids.extend(lay.ids)
        elif isinstance(lay, (tuple, list)):
            for v in lay:
                ids.extend(self.pin_value(v, reason, soft))
        return ids

    def pin_args(self, node: fx.Node, reason: str | None = None, soft: bool = False) -> list[int]:
        ids: list[int] = []
        for arg in iter_nodes((node.args, node.kwargs)):
            lay = self.lay.get(arg)
            if lay is not None:
                ids.extend(self.pin_value(lay, reason, soft))
        return ids

    def unknown(self, node: fx.Node, why: str = "not understood by speedup") -> Any:
        """Pin every channel that reaches ``node`` (soft pin, recorded for reports and ``strict``)."""
        inputs = [self.lay[a] for a in iter_nodes((node.args, node.kwargs)) if self.lay.get(a) is not None]
        op = self.describe(node)
        reason = f"{op} at node '{node.name}': {why}"
        ids = self.pin_args(node, reason, soft=True)
        if ids:
            self.warn(node, why)
            self.unknown_ops.append(UnknownOp(node.name, op, why, ids))
        out = self.info.get(node)
        if len(inputs) == 1 and isinstance(inputs[0], Layout) and isinstance(out, TensorInfo):
            # same-shaped result (e.g. an unknown activation): keep the (now pinned) ids and their dim
            (x,) = [a for a in iter_nodes((node.args, node.kwargs)) if self.lay.get(a) is not None]
            xi = self.tinfo(x)
            if xi is not None and xi.shape == out.shape:
                return inputs[0]
        like = next((lay for lay in inputs if isinstance(lay, Layout)), None)
        like_arg = next((a for a in iter_nodes((node.args, node.kwargs)) if isinstance(self.lay.get(a), Layout)), None)
        like_info = self.tinfo(like_arg) if like_arg is not None else None
        fresh = self.fresh(out, like=like, like_ndim=like_info.ndim if like_info is not None else None)
        if fresh is not None and ids:
            self.pin_value(fresh, reason, soft=True)
        return fresh

    def const_target(self, node: Any) -> str | None:
        """Qualified attribute name of a constant tensor node, if it is one."""
        if not isinstance(node, fx.Node):
            return None
        if node.op == "get_attr":
            owner_name, _, _ = node.target.rpartition(".")
            owner = self._named.get(owner_name)
            if owner is not None and isinstance(owner, (_PRODUCER_TYPES, _NORM_TYPES, nn.PReLU)):
                return None  # weights of layers that speedup itself resizes
            return node.target
        if node.op == "call_module":
            module = self._named.get(node.target)
            if type(module).__name__ == "OnnxConstant" and isinstance(getattr(module, "value", None), torch.Tensor):
                return f"{node.target}.value"
        return None

    def tie(self, node: fx.Node, dim: int, ids: list[int]) -> bool:
        target = self.const_target(node)
        if target is None:
            return False
        tie = self.attr_ties.get(target)
        if tie is None:
            self.attr_ties[target] = AttrTie(target, dim, list(ids))
        elif tie.dim == dim and len(tie.ids) == len(ids) and tie.valid:
            self.uf.union_lists(tie.ids, ids)
        else:
            tie.valid = False
            self.uf.pin(tie.ids)
            self.uf.pin(ids)
        return True

    def tie_constant(self, value: Any, dim: int, ids: list[int]) -> bool:
        """:meth:`tie` a constant operand, looking through ``expand`` (a class token expanded over the batch)."""
        while isinstance(value, fx.Node) and value.op == "call_method" and value.target in ("expand", "expand_as"):
            source, si, vi = value.args[0], self.tinfo(value.args[0]), self.tinfo(value)
            if si is None or vi is None or si.ndim != vi.ndim:
                return False
            value = source
        info = self.tinfo(value)
        if info is None or not 0 <= dim < info.ndim or info.shape[dim] != len(ids):
            return False
        return self.tie(value, dim, ids)

    def passes_shape(self, node: fx.Node, x: Any, lay: Layout) -> Layout | None:
        """``lay`` for the output if the op keeps the channel dim and its size."""
        xi, oi = self.tinfo(x), self.tinfo(node)
        if xi is None or oi is None or oi.ndim != xi.ndim or oi.shape[lay.dim] != xi.shape[lay.dim]:
            return None
        return lay

    # -- elementwise rules ------------------------------------------------
    def passthrough(self, node: fx.Node, x: Any) -> Any:
        src = self.lay.get(x) if isinstance(x, fx.Node) else None
        if src is None:
            return self.unknown(node) if self._has_layout_args(node) else None
        if not isinstance(src, Layout):
            return self.unknown(node)
        out = self.passes_shape(node, x, src)
        if out is None:
            return self.unknown(node, "it changes the channel dimension")
        return out

    def _has_layout_args(self, node: fx.Node) -> bool:
        return any(self.lay.get(a) is not None for a in iter_nodes((node.args, node.kwargs)))

    def nary(self, node: fx.Node, operands: list[Any]) -> Any:
        out = self.tinfo(node)
        if out is None:
            return self.unknown(node)
        nd = out.ndim
        full: list[Layout] = []
        partial: list[Layout] = []
        consts: list[fx.Node] = []
        cdims = set()
        for a in operands:
            if not isinstance(a, fx.Node):
                continue
            ai = self.tinfo(a)
            if ai is None:
                continue
            lay = self.layout(a)
            if lay is None:
                consts.append(a)
                continue
            cdim = lay.dim + (nd - ai.ndim)
            cdims.add(cdim)
            if ai.shape[lay.dim] == out.shape[cdim]:
                full.append(lay)
            else:
                partial.append(lay)
        if not full and not partial:
            return None
        if len(cdims) != 1 or not full:
            return self.unknown(node, "its operands have their channels on different dimensions")
        cdim = cdims.pop()
        for lay in partial:  # a single broadcast channel (N,1,H,W) cannot shrink
            self.uf.pin(lay.ids)
        ids = full[0].ids
        for lay in full[1:]:
            self.uf.union_lists(ids, lay.ids)
        for c in consts:
            ci = self.tinfo(c)
            k = cdim - (nd - ci.ndim)
            if 0 <= k < ci.ndim and ci.shape[k] != 1:
                if not self.tie(c, k, ids):
                    self.uf.pin(ids)
                    self.warn(node, "a computed constant varies along the channels")
        return Layout(cdim, ids)

    # -- rules ------------------------------------------------------------
    def apply_rule(self, node: fx.Node, rule: Any, name: str | None, m: nn.Module | None, x: Any) -> Any:
        """Apply ``rule`` (from :data:`~.rule_table.RULES`; ``None``: an unknown op) to ``node``.

        ``name`` and ``m`` are the called module's (``None`` for functions
        and methods), ``x`` its first input.
        """
        if rule is None:
            return self.unknown(node)
        if callable(rule) and not isinstance(rule, str):
            return rule(self, node, m)
        lay, oi = self.layout(x), self.tinfo(node)
        if rule == "passthrough" or (rule == "channelwise" and m is None):
            return self.passthrough(node, x)
        if rule == "pin":
            why = "registered as keeping its channels"
            reason = f"{self.describe(node)} at node '{node.name}': {why}"
            self.pin_args(node, reason)
            return self.fresh(self.info.get(node), pinned=True, reason=reason)
        if rule == "channelwise":
            if lay is None:
                return self.passthrough(node, x)
            state = self.module_state(name, "custom", m)
            ids = self.consume(node, state, lay, len(lay.ids), self.passes_shape(node, x, lay) is not None)
            state.out_ids = state.in_ids
            return Layout(lay.dim, ids)
        if rule == "producer" and m is not None and oi is not None:
            dim = lay.dim if lay is not None else min(1, oi.ndim - 1)
            state = self.module_state(name, "custom", m)
            if lay is not None:
                self.consume(node, state, lay, len(lay.ids), True)
            if state.out_ids is None:
                state.out_ids = self.uf.new(oi.shape[dim])
            return Layout(dim, state.out_ids)
        return self.unknown(node, f"its registered rule {rule!r} does not apply here")

    # -- dispatch ---------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.lay[node] = self.visit(node)

    def visit(self, node: fx.Node) -> Any:
        op = node.op
        if op == "placeholder":
            return self.fresh(self.info.get(node), pinned=True, reason=f"model input '{node.name}'")
        if op == "get_attr":
            return None
        if op == "output":
            self.pin_args(node, "model output")
            self.output_info = self.info.get(node)
            return None
        if op == "call_module":
            name = node.target
            m = self._named.get(name)
            if m is None:
                return self.unknown(node)
            if name in self._leaves:
                return self.unknown(node, "torch.fx could not trace into it, so it is one opaque operation")
            x = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
            return self.apply_rule(node, RULES.for_module(m), name, m, x)
        if op == "call_function":
            x = node.args[0] if node.args else node.kwargs.get("input")
            return self.apply_rule(node, RULES.for_function(node.target), None, None, x)
        if op == "call_method":
            x = node.args[0] if node.args else None
            return self.apply_rule(node, RULES.for_method(node.target), None, None, x)
        return self.unknown(node)
