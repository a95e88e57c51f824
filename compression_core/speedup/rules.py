"""Op rules: how each graph operation moves, couples or pins channel ids.

``propagate_layouts`` walks a traced graph once and gives every tensor value
a :class:`~.channels.Layout`. Producers (Conv, Linear, ConvTranspose,
Embedding) create fresh ids for their outputs and consume their inputs;
normalisation and depthwise/grouped convolutions pass ids through;
elementwise ops union them; ``cat``/``split``/``chunk``/reshapes/permutes
move them; attention layers consume their query/key/value channels and
produce their output channels (their heads are pruned inside, see
:mod:`.attention`); a reshape to a literal channel count read from a module's
int attribute (``x.reshape(n, self.hidden_dim, -1)``) ties that attribute to
the channels; anything unknown pins them (soft pin, see ``strict``). Users add
rules for their own modules or functions with :func:`register_channel_rule`.

The rules for reshapes, ``cat``, indexing, permutes and reductions live in
:mod:`.shape_rules` and those for layers in :mod:`.layer_rules`, as mixins of
:class:`Propagator`; this module holds the propagator's state and helpers,
the elementwise rules, the dispatch from graph nodes to rules and the rule
registry.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Iterable
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .channels import (
    AttrTie,
    ChannelUnionFind,
    Layout,
    ModuleChannels,
    SizeAttr,
    UniformConstraint,
    UnknownOp,
)
from .attention import ATTENTION_TYPES, attention_channels
from .graph import TensorInfo
from .layer_rules import LayerRules
from .literals import LiteralUse
from .shape_rules import ShapeRules, map_reshape
from .splits import split_channels

__all__ = [
    "CHANNEL_RULES",
    "RULE_NAMES",
    "Propagator",
    "map_reshape",
    "register_channel_rule",
    "registered_module_types",
    "rule_for_function",
    "rule_for_module",
]

# --------------------------------------------------------------------------
# op tables

_BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply,
    torch.div, torch.divide, torch.true_divide, torch.maximum, torch.minimum, torch.rsub,
}
_BINARY_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "true_divide", "true_divide_",
    "__add__", "__radd__", "__mul__", "__rmul__", "__sub__", "__rsub__", "__truediv__", "maximum", "minimum",
}

_UNARY_FUNCTIONS: set[Callable] = {
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.clamp, torch.clip, torch.abs, torch.neg,
    torch.exp, torch.sqrt, torch.square, torch.erf, torch.sign, operator.neg, operator.pos,
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.gelu, F.silu, F.sigmoid, F.tanh, F.hardswish,
    F.hardsigmoid, F.elu, F.elu_, F.selu, F.celu, F.mish, F.hardtanh, F.hardtanh_, F.softplus, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.lp_pool1d, F.lp_pool2d, F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear, F.pad,
}
_UNARY_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone", "float", "half", "double",
    "bfloat16", "to", "type_as", "detach", "clamp", "clamp_", "clip", "clip_", "abs", "abs_", "neg", "exp",
    "sqrt", "square", "requires_grad_", "cpu", "cuda", "__neg__", "hardswish", "sign",
}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.ravel}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_", "view_as",
                    "reshape_as", "ravel"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin", "std", "var"}
_PERMUTE_FUNCTIONS = {torch.permute, torch.transpose, torch.swapaxes, torch.swapdims}
_PERMUTE_METHODS = {"permute", "transpose", "swapaxes", "swapdims"}
_SPLIT_FUNCTIONS = {torch.split: "split", torch.chunk: "chunk", torch.tensor_split: "tensor_split"}
_SPLIT_METHODS = {"split", "chunk", "tensor_split"}
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "get_device", "is_contiguous"}
_SHAPE_ATTRS = {"shape", "device", "dtype", "ndim", "is_cuda", "requires_grad"}

_PASS_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Hardtanh, nn.Softplus, nn.LogSigmoid, nn.Tanhshrink, nn.Softsign,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd, nn.ZeroPad2d,
)
_ONNX_PASS = {
    "OnnxClip", "OnnxErf", "OnnxHardSigmoid", "OnnxFunction", "OnnxCopyIdentity", "OnnxDropoutDynamic",
    "OnnxGlobalAveragePool", "OnnxGlobalAveragePoolWithKnownInputShape", "OnnxCast", "OnnxNeg", "OnnxSqrt",
    "OnnxReciprocal", "OnnxRound", "OnnxResize", "OnnxResizeV10", "OnnxPadStatic",
}
_ONNX_RESHAPE = {"OnnxFlatten", "OnnxReshape", "OnnxSqueezeStaticAxes", "OnnxUnsqueezeStaticAxes"}
_ONNX_NARY = {"OnnxBinaryMathOperation", "OnnxSum", "OnnxMean", "OnnxPow"}
_ONNX_CONSTANT = {"OnnxConstant"}
_ONNX_SHAPE = {"OnnxShape"}

_PRODUCER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def _is_stochastic_depth(target: Any) -> bool:
    return getattr(target, "__name__", "") == "stochastic_depth" and "torchvision" in getattr(target, "__module__", "")


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _iter_nodes(value: Any) -> Iterable[fx.Node]:
    if isinstance(value, fx.Node):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _iter_nodes(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _iter_nodes(v)
    elif isinstance(value, slice):
        yield from _iter_nodes((value.start, value.stop, value.step))


# --------------------------------------------------------------------------
# the propagator


class Propagator(ShapeRules, LayerRules):
    """Walks a traced graph once and gives every value a channel layout.

    Rules registered with :func:`register_channel_rule` receive this object;
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
        for arg in _iter_nodes((node.args, node.kwargs)):
            lay = self.lay.get(arg)
            if lay is not None:
                ids.extend(self.pin_value(lay, reason, soft))
        return ids

    def unknown(self, node: fx.Node, why: str = "not understood by speedup") -> Any:
        """Pin every channel that reaches ``node`` (soft pin, recorded for reports and ``strict``)."""
        inputs = [self.lay[a] for a in _iter_nodes((node.args, node.kwargs)) if self.lay.get(a) is not None]
        op = self.describe(node)
        reason = f"{op} at node '{node.name}': {why}"
        ids = self.pin_args(node, reason, soft=True)
        if ids:
            self.warn(node, why)
            self.unknown_ops.append(UnknownOp(node.name, op, why, ids))
        out = self.info.get(node)
        if len(inputs) == 1 and isinstance(inputs[0], Layout) and isinstance(out, TensorInfo):
            # same-shaped result (e.g. an unknown activation): keep the (now pinned) ids and their dim
            (x,) = [a for a in _iter_nodes((node.args, node.kwargs)) if self.lay.get(a) is not None]
            xi = self.tinfo(x)
            if xi is not None and xi.shape == out.shape:
                return inputs[0]
        like = next((lay for lay in inputs if isinstance(lay, Layout)), None)
        like_arg = next((a for a in _iter_nodes((node.args, node.kwargs)) if isinstance(self.lay.get(a), Layout)), None)
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
            if type(module).__name__ in _ONNX_CONSTANT and isinstance(getattr(module, "value", None), torch.Tensor):
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
        return any(self.lay.get(a) is not None for a in _iter_nodes((node.args, node.kwargs)))

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

    # -- registered rules -------------------------------------------------
    def apply_rule(self, node: fx.Node, rule: Any, name: str | None, m: nn.Module | None, x: Any) -> Any:
        """Apply a rule registered with :func:`register_channel_rule`."""
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
            return self.visit_module(node)
        if op == "call_function":
            return self.visit_function(node)
        if op == "call_method":
            return self.visit_method(node)
        return self.unknown(node)

    def visit_module(self, node: fx.Node) -> Any:
        name = node.target
        m = self._named.get(name)
        if m is None:
            return self.unknown(node)
        x = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        cls = type(m).__name__
        rule = rule_for_module(m)
        if rule is not None:
            return self.apply_rule(node, rule, name, m, x)
        if name in self._leaves:
            return self.unknown(node, "torch.fx could not trace into it, so it is one opaque operation")
        if isinstance(m, ATTENTION_TYPES):
            return attention_channels(self, node, name, m)
        if isinstance(m, nn.modules.conv._ConvNd):
            if len(node.args) + len(node.kwargs) != 1:
                return self.unknown(node, "it is called with an output size")
            return self.conv(node, name, m, x)
        if isinstance(m, nn.Linear):
            return self.linear(node, name, m, x)
        if isinstance(m, _NORM_TYPES):
            if isinstance(m, nn.modules.batchnorm._LazyNormBase) and m.has_uninitialized_params():
                return self.unknown(node)
            return self.norm(node, name, m, x, m.num_features, "norm")
        if isinstance(m, nn.LayerNorm):
            if type(m).forward is nn.LayerNorm.forward:
                return self.layer_norm(node, name, m, x, None)
            if cls == "LayerNorm2d":  # torchvision's channels-first LayerNorm
                return self.layer_norm(node, name, m, x, 1)
            return self.unknown(node, "a LayerNorm subclass with its own forward")
        if isinstance(m, nn.GroupNorm):
            return self.group_norm(node, name, m, x)
        if isinstance(m, nn.Embedding):
            return self.embedding(node, name, m, x)
        if isinstance(m, nn.PReLU):
            if m.num_parameters == 1:
                return self.passthrough(node, x)
            return self.norm(node, name, m, x, m.num_parameters, "prelu")
        if isinstance(m, _PASS_MODULES):
            return self.passthrough(node, x)
        if isinstance(m, nn.Flatten):
            return self.reshape(node, x)
        if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            lay = self.layout(x)
            if lay is not None and m.dim is not None and self.tinfo(x) is not None \
                    and m.dim % self.tinfo(x).ndim != lay.dim:
                return self.passthrough(node, x)
            return self.unknown(node, "it normalises over the channels")
        if cls in _ONNX_PASS:
            return self.passthrough(node, x)
        if cls in _ONNX_RESHAPE:
            static = None
            if cls == "OnnxReshape" and len(node.args) > 1:
                shape_node = node.args[1]
                if self.const_target(shape_node) is not None or (
                    isinstance(shape_node, fx.Node) and not any(True for _ in _iter_nodes(shape_node.args))
                ):
                    si = self.tinfo(shape_node)
                    static = si.value.tolist() if si is not None and si.value is not None else None
                    if static is None:
                        return self.unknown(node, "it reshapes to a fixed channel count")
            return self.reshape(node, x, static_shape=static)
        if cls in _ONNX_NARY:
            if cls == "OnnxBinaryMathOperation" and getattr(m, "broadcast", None) == 1 \
                    and getattr(m, "axis", None) is not None:
                return self.unknown(node, "old-style broadcast")
            return self.nary(node, list(node.args))
        if cls in _ONNX_CONSTANT or cls in _ONNX_SHAPE:
            return None
        if cls == "OnnxConcat":
            return self.cat(node, list(node.args), m.axis)
        if cls == "OnnxTranspose" and getattr(m, "perm", None) is not None:
            return self.permute(node, x, perm=list(m.perm))
        if cls == "OnnxReduceStaticAxes" and getattr(m, "axes", None):
            if m.operation_type in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"):
                return self.reduce(node, x, list(m.axes), bool(m.keepdims))
        return self.unknown(node)

    def visit_function(self, node: fx.Node) -> Any:
        f = node.target
        args = node.args
        x = _arg(node, 0, "input")
        rule = rule_for_function(f)
        if rule is not None:
            return self.apply_rule(node, rule, None, None, x)
        if f is F.layer_norm or f is F.group_norm:
            lay, xi = self.layout(x), self.tinfo(x)
            shape = _arg(node, 1, "normalized_shape", ())
            if f is F.layer_norm and lay is not None and xi is not None and isinstance(shape, (list, tuple)) \
                    and lay.dim < xi.ndim - len(shape):
                return self.passthrough(node, x)
            return self.unknown(node, "it normalises over the channels")
        if f in _BINARY_FUNCTIONS:
            return self.nary(node, [_arg(node, 0, "input"), _arg(node, 1, "other")])
        if f in _UNARY_FUNCTIONS or _is_stochastic_depth(f):
            return self.passthrough(node, x)
        if f is operator.getitem:
            return self.getitem(node, args[0], args[1])
        if f in _CAT_FUNCTIONS:
            return self.cat(node, _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0))
        if f in _RESHAPE_FUNCTIONS:
            literal = None
            if f is torch.reshape:
                shape = _arg(node, 1, "shape")
                literal = list(shape) if isinstance(shape, (list, tuple)) else None
            return self.reshape(node, x, literal_sizes=literal)
        if f in _REDUCE_FUNCTIONS:
            return self.reduce(node, x, _arg(node, 1, "dim"), bool(_arg(node, 2, "keepdim", False)))
        if f is torch.permute:
            return self.permute(node, x, perm=list(_arg(node, 1, "dims", [])))
        if f in _PERMUTE_FUNCTIONS:
            return self.permute(node, x, swap=(_arg(node, 1, "dim0"), _arg(node, 2, "dim1")))
        if f in _SPLIT_FUNCTIONS:
            return split_channels(self, node, x, _arg(node, 2, "dim", 0), _SPLIT_FUNCTIONS[f])
        if f is F.batch_norm:
            attrs = [_arg(node, 1, "running_mean"), _arg(node, 2, "running_var"),
                     _arg(node, 3, "weight"), _arg(node, 4, "bias")]
            return self.functional_norm(node, x, attrs)
        if f is F.instance_norm:
            attrs = [_arg(node, 1, "running_mean"), _arg(node, 2, "running_var"),
                     _arg(node, 3, "weight"), _arg(node, 4, "bias")]
            return self.functional_norm(node, x, attrs)
        if f is F.softmax or f is F.log_softmax:
            lay, xi = self.layout(x), self.tinfo(x)
            dim = _arg(node, 1, "dim")
            if lay is not None and xi is not None and isinstance(dim, int) and dim % xi.ndim != lay.dim:
                return self.passthrough(node, x)
            return self.unknown(node, "it normalises over the channels")
        if f is builtins.getattr:
            return None if (len(args) > 1 and args[1] in _SHAPE_ATTRS) else self.unknown(node)
        if f in (torch.numel, builtins.len, torch._assert):
            return None
        return self.unknown(node)

    def visit_method(self, node: fx.Node) -> Any:
        name = node.target
        args = node.args
        x = args[0] if args else None
        if name in _SHAPE_METHODS:
            return None
        if name in _UNARY_METHODS:
            return self.passthrough(node, x)
        if name in _BINARY_METHODS:
            return self.nary(node, [x, _arg(node, 1, "other")])
        if name in _RESHAPE_METHODS:
            literal = None
            if name in ("view", "reshape"):
                sizes = list(args[1:])
                if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
                    sizes = list(sizes[0])
                if len(sizes) == 1 and isinstance(sizes[0], torch.dtype):
                    return self.unknown(node)
                literal = sizes
            return self.reshape(node, x, literal_sizes=literal)
        if name in _REDUCE_METHODS:
            return self.reduce(node, x, _arg(node, 1, "dim"), bool(_arg(node, 2, "keepdim", False)))
        if name == "permute":
            perm = list(args[1:])
            if len(perm) == 1 and isinstance(perm[0], (list, tuple)):
                perm = list(perm[0])
            return self.permute(node, x, perm=perm)
        if name in _PERMUTE_METHODS:
            return self.permute(node, x, swap=(_arg(node, 1, "dim0"), _arg(node, 2, "dim1")))
        if name in _SPLIT_METHODS:
            return split_channels(self, node, x, _arg(node, 2, "dim", 0), name)
        if name == "expand_as":
            return self.nary(node, [x])
        if name == "expand":
            sizes = list(args[1:])
            if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
                sizes = list(sizes[0])
            lay, oi = self.layout(x), self.tinfo(node)
            if lay is not None and oi is not None:
                cdim = lay.dim + (oi.ndim - self.tinfo(x).ndim)
                if cdim < len(sizes) and isinstance(sizes[cdim], int) and sizes[cdim] != -1:
                    return self.unknown(node, "it expands to a fixed channel count")
            return self.nary(node, [x])
        return self.unknown(node)


# --------------------------------------------------------------------------
# extension point

CHANNEL_RULES: dict[Any, Any] = {}
RULE_NAMES = ("passthrough", "channelwise", "producer", "pin")


def register_channel_rule(target: Any, rule: Any) -> None:
    """Tell speedup how ``target`` (a module class or a function) treats channels.

    ``rule`` is one of:

    - ``"passthrough"``: the output has the input's channels, nothing to cut
      (an activation, a custom pooling, ...);
    - ``"channelwise"``: like BatchNorm: output channel i is input channel i
      and the module holds per-channel parameters; register a cutter with
      :func:`~compression_core.speedup.register_module_cutter` to resize it;
    - ``"producer"``: like a convolution: the module reads the input's
      channels and creates new output channels on the same dimension; its
      mask decides which are removed; needs a cutter too;
    - ``"pin"``: the channels around it are kept (no warning);
    - a callable ``rule(propagator, node, module)`` returning the output's
      :class:`~.channels.Layout` (or ``None``), for anything else; see
      :class:`Propagator` for the helpers it can use.

    Registered module classes are kept whole by the tracer (fx does not trace
    into them). Subclasses inherit their base's rule.
    """
    if not (isinstance(rule, str) and rule in RULE_NAMES) and not callable(rule):
        raise ValueError(f"a channel rule must be one of {', '.join(RULE_NAMES)} or a callable, got {rule!r}")
    CHANNEL_RULES[target] = rule


def rule_for_module(m: nn.Module) -> Any:
    if not CHANNEL_RULES:
        return None
    for cls in type(m).__mro__:
        if cls in CHANNEL_RULES:
            return CHANNEL_RULES[cls]
    return None


def rule_for_function(f: Any) -> Any:
    if not CHANNEL_RULES:
        return None
    try:
        return CHANNEL_RULES.get(f)
    except TypeError:
        return None


def registered_module_types() -> tuple[type, ...]:
    return tuple(t for t in CHANNEL_RULES if isinstance(t, type))
