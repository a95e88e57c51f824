"""Channel dependency analysis: which channels of which layers are coupled.

Every tensor value in the traced graph gets a *channel layout*: the dimension
that holds its channels and, for every index along it, a channel id. Channel
ids live in a union-find; two ids in the same class must be kept or removed
together (the outputs of convolutions feeding one residual add, a conv's
output and the batch norm after it, ...).

- Conv / Linear / ConvTranspose outputs get fresh ids (they *produce*
  channels); their inputs are *consumed* (their in-channels are cut to match).
- Depthwise convolutions and normalisation layers pass channels through.
- Elementwise ops between tensors union the ids index by index; ``cat`` along
  the channel dim concatenates layouts; ``flatten`` repeats each id once per
  spatial position, so the following Linear loses whole blocks of inputs.
- Anything the analysis does not understand pins the channels it touches
  (they are never removed) and is reported in ``warnings``. The model's
  inputs and outputs are pinned too: speedup never changes their shapes.

Example::

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> analysis = analyze_channels(model, torch.zeros(1, 3, 8, 8))
    >>> analysis.modules["0"].kind, analysis.modules["1"].kind
    ('conv', 'norm')
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import TensorInfo, propagate_shapes, trace_model

# --------------------------------------------------------------------------
# union-find of channel ids


class ChannelUnionFind:
    """Union-find over integer channel ids with a 'pinned' flag per class."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.pinned: list[bool] = []

    def new(self, count: int, pinned: bool = False) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.pinned.extend([pinned] * count)
        return list(range(start, start + count))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.pinned[ra] = self.pinned[ra] or self.pinned[rb]

    def union_lists(self, a: list[int], b: list[int]) -> None:
        for x, y in zip(a, b):
            if x != y:
                self.union(x, y)

    def pin(self, ids: Iterable[int]) -> None:
        for x in ids:
            self.pinned[self.find(x)] = True

    def is_pinned(self, x: int) -> bool:
        return self.pinned[self.find(x)]


@dataclass
class Layout:
    """Channel ids of a tensor value along its channel dimension ``dim``."""

    dim: int
    ids: list[int]


@dataclass
class ModuleChannels:
    """What the analysis learnt about one layer.

    ``kind`` is one of ``conv``, ``conv_transpose``, ``linear`` (producers of
    fresh channels), ``depthwise`` (a conv with groups == in == out channels),
    ``norm`` (BatchNorm/InstanceNorm), ``prelu`` (per-channel PReLU) or
    ``fixed`` (a layer whose channels are all pinned, e.g. a grouped conv).
    ``out_ids`` / ``in_ids`` index the layer's output / input channels.
    """

    name: str
    kind: str
    module: nn.Module
    out_ids: list[int] | None = None
    in_ids: list[int] | None = None
    calls: int = 0


@dataclass
class AttrTie:
    """A constant tensor (get_attr or onnx2torch constant) indexed by channels."""

    target: str
    dim: int
    ids: list[int]
    valid: bool = True


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

    def root(self, x: int) -> int:
        return self.uf.find(x)


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
_SPLIT_FUNCTIONS = {torch.split, torch.chunk, torch.tensor_split}
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


def _describe(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        try:
            module = gm.get_submodule(node.target)
            return f"module {node.target!r} ({type(module).__name__})"
        except AttributeError:
            return f"module {node.target!r}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


# --------------------------------------------------------------------------
# the propagator


class _Propagator:
    def __init__(self, gm: fx.GraphModule, info: dict[fx.Node, Any]):
        self.gm = gm
        self.info = info
        self.uf = ChannelUnionFind()
        self.lay: dict[fx.Node, Any] = {}
        self.modules: dict[str, ModuleChannels] = {}
        self.attr_ties: dict[str, AttrTie] = {}
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self._named = dict(gm.named_modules())
        self.output_info: Any = None

    # -- helpers ----------------------------------------------------------
    def warn(self, node: fx.Node, why: str) -> None:
        msg = f"node '{node.name}' ({_describe(node, self.gm)}): {why}; the channels through it are kept"
        if msg not in self._warned:
            self._warned.add(msg)
            self.warnings.append(msg)

    def tinfo(self, value: Any) -> TensorInfo | None:
        if isinstance(value, fx.Node):
            value = self.info.get(value)
        return value if isinstance(value, TensorInfo) else None

    def layout(self, value: Any) -> Layout | None:
        if isinstance(value, fx.Node):
            lay = self.lay.get(value)
            return lay if isinstance(lay, Layout) else None
        return None

    def fresh(self, info: Any, pinned: bool = True) -> Any:
        """Fresh (pinned) layouts for every tensor in a summarised value."""
        if isinstance(info, TensorInfo):
            if info.ndim >= 2:
                return Layout(1, self.uf.new(info.shape[1], pinned=pinned))
            return None
        if isinstance(info, (tuple, list)):
            return type(info)(self.fresh(v, pinned) for v in info)
        return None

    def pin_value(self, lay: Any) -> None:
        if isinstance(lay, Layout):
            self.uf.pin(lay.ids)
        elif isinstance(lay, (tuple, list)):
            for v in lay:
                self.pin_value(v)

    def pin_args(self, node: fx.Node) -> bool:
        touched = False
        for arg in _iter_nodes((node.args, node.kwargs)):
            lay = self.lay.get(arg)
            if lay is not None:
                self.pin_value(lay)
                touched = True
        return touched

    def unknown(self, node: fx.Node, why: str = "not understood by speedup") -> Any:
        inputs = [self.lay[a] for a in _iter_nodes((node.args, node.kwargs)) if self.lay.get(a) is not None]
        if self.pin_args(node):
            self.warn(node, why)
        out = self.info.get(node)
        if len(inputs) == 1 and isinstance(inputs[0], Layout) and isinstance(out, TensorInfo):
            # same-shaped result (e.g. LayerNorm): keep the (now pinned) ids and their dim
            (x,) = [a for a in _iter_nodes((node.args, node.kwargs)) if self.lay.get(a) is not None]
            xi = self.tinfo(x)
            if xi is not None and xi.shape == out.shape:
                return inputs[0]
        return self.fresh(out)

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

    def passes_shape(self, node: fx.Node, x: Any, lay: Layout) -> Layout | None:
        """``lay`` for the output if the op keeps the channel dim and its size."""
        xi, oi = self.tinfo(x), self.tinfo(node)
        if xi is None or oi is None or oi.ndim != xi.ndim or oi.shape[lay.dim] != xi.shape[lay.dim]:
            return None
        return lay

    # -- rules ------------------------------------------------------------
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

    def reshape(self, node: fx.Node, x: Any, literal_sizes: list | None = None, static_shape: Any = None) -> Any:
        lay = self.layout(x)
        xi, oi = self.tinfo(x), self.tinfo(node)
        if lay is None:
            return self.passthrough(node, x)
        if xi is None or oi is None:
            return self.unknown(node)
        mapped = _map_reshape(xi.shape, oi.shape, lay)
        if mapped is None:
            return self.unknown(node, "it splits or mixes the channel dimension")
        new_dim, ids = mapped
        if literal_sizes is not None and new_dim < len(literal_sizes):
            size = literal_sizes[new_dim]
            if isinstance(size, int) and size != -1:
                return self.unknown(node, "it reshapes to a fixed channel count")
        if static_shape is not None:
            if new_dim < len(static_shape):
                size = int(static_shape[new_dim])
                if size != -1 and not (size == 0 and new_dim == lay.dim):
                    return self.unknown(node, "it reshapes to a fixed channel count")
        return Layout(new_dim, ids)

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
            return self.unknown(node, "a constant is concatenated to it")
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

    def split(self, node: fx.Node, x: Any, dim: Any) -> Any:
        lay = self.layout(x)
        xi, oi = self.tinfo(x), self.info.get(node)
        if lay is None or xi is None:
            return self.passthrough(node, x) if lay is None and self.lay.get(x) is None else self.unknown(node)
        if not isinstance(dim, int) or not isinstance(oi, (tuple, list)):
            return self.unknown(node)
        if dim % xi.ndim == lay.dim:
            return self.unknown(node, "it splits the channels")
        return tuple(Layout(lay.dim, lay.ids) if isinstance(v, TensorInfo) else None for v in oi)

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

    # -- layers -----------------------------------------------------------
    def _module_state(self, name: str, kind: str, module: nn.Module) -> ModuleChannels:
        state = self.modules.get(name)
        if state is None:
            state = self.modules[name] = ModuleChannels(name, kind, module)
        state.calls += 1
        return state

    def _consume(self, state: ModuleChannels, lay: Layout | None, count: int, dim_ok: bool) -> list[int]:
        if lay is None or not dim_ok or len(lay.ids) != count:
            if lay is not None:
                self.uf.pin(lay.ids)
            ids = self.uf.new(count, pinned=True)
        else:
            ids = lay.ids
        if state.in_ids is None:
            state.in_ids = list(ids)
        else:
            self.uf.union_lists(state.in_ids, ids)
        return state.in_ids

    def conv(self, node: fx.Node, name: str, m: nn.modules.conv._ConvNd, x: Any) -> Any:
        lay = self.layout(x)
        xi = self.tinfo(x)
        transposed = bool(getattr(m, "transposed", False))
        in_ch = m.in_channels
        out_ch = m.out_channels
        if "weight" not in m._parameters or m.weight is None:
            return self.unknown(node, "its weight is not a plain parameter")
        if m.groups == 1:
            state = self._module_state(name, "conv_transpose" if transposed else "conv", m)
            self._consume(state, lay, in_ch, lay is not None and lay.dim == 1 and xi is not None and xi.ndim >= 3)
            if state.out_ids is None:
                state.out_ids = self.uf.new(out_ch)
            return Layout(1, state.out_ids)
        if not transposed and m.groups == in_ch == out_ch:
            state = self._module_state(name, "depthwise", m)
            ids = self._consume(state, lay, in_ch, lay is not None and lay.dim == 1 and xi is not None and xi.ndim >= 3)
            state.out_ids = state.in_ids
            return Layout(1, ids)
        state = self._module_state(name, "fixed", m)
        self._consume(state, lay, in_ch, False)
        self.uf.pin(state.in_ids)
        if state.out_ids is None:
            state.out_ids = self.uf.new(out_ch, pinned=True)
        if lay is not None:
            self.warn(node, f"grouped convolution (groups={m.groups}) is not pruned")
        return Layout(1, state.out_ids)

    def linear(self, node: fx.Node, name: str, m: nn.Linear, x: Any) -> Any:
        if "weight" not in m._parameters or m.weight is None:
            return self.unknown(node, "its weight is not a plain parameter")
        lay = self.layout(x)
        xi, oi = self.tinfo(x), self.tinfo(node)
        if oi is None or oi.ndim < 1:
            return self.unknown(node)
        state = self._module_state(name, "linear", m)
        ok = lay is not None and xi is not None and lay.dim == xi.ndim - 1
        self._consume(state, lay, m.in_features, ok)
        if state.out_ids is None:
            state.out_ids = self.uf.new(m.out_features)
        if oi.ndim == 1:
            self.uf.pin(state.out_ids)
            return None
        return Layout(oi.ndim - 1, state.out_ids)

    def norm(self, node: fx.Node, name: str, m: nn.Module, x: Any, count: int, kind: str) -> Any:
        lay = self.layout(x)
        xi = self.tinfo(x)
        state = self._module_state(name, kind, m)
        ok = lay is not None and lay.dim == 1 and xi is not None and self.passes_shape(node, x, lay) is not None
        ids = self._consume(state, lay, count, ok)
        state.out_ids = state.in_ids
        return Layout(1, ids)

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

    # -- dispatch ---------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.lay[node] = self.visit(node)

    def visit(self, node: fx.Node) -> Any:
        op = node.op
        if op == "placeholder":
            return self.fresh(self.info.get(node), pinned=True)
        if op == "get_attr":
            return None
        if op == "output":
            self.pin_args(node)
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
            return self.split(node, x, _arg(node, 2, "dim", 0))
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
            return self.split(node, x, _arg(node, 2, "dim", 0))
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


def _map_reshape(in_shape: tuple[int, ...], out_shape: tuple[int, ...], lay: Layout) -> tuple[int, list[int]] | None:
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


def analyze_channels(model: nn.Module, dummy_input: Any, graph_module: fx.GraphModule | None = None) -> ChannelAnalysis:
    """Trace ``model``, run it on ``dummy_input`` and build its channel classes.

    ``graph_module`` may be a GraphModule already traced from ``model`` (its
    ``call_module`` targets must be the model's module names).
    """
    gm = graph_module if graph_module is not None else trace_model(model)
    info = propagate_shapes(gm, dummy_input)
    prop = _Propagator(gm, info)
    prop.run()
    return ChannelAnalysis(
        graph_module=gm,
        uf=prop.uf,
        modules=prop.modules,
        attr_ties=prop.attr_ties,
        warnings=prop.warnings,
        info=info,
        output_info=prop.output_info,
    )


# --------------------------------------------------------------------------
# dependency groups for pruners

DEPENDENCY_LAYER_TYPES: tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
)


def channel_groups(analysis: ChannelAnalysis, names: Iterable[str]) -> dict[str, int]:
    """Group ids for ``names``: layers whose output channels are coupled share one."""
    keys: dict[Any, int] = {}
    groups: dict[str, int] = {}
    for name in names:
        state = analysis.modules.get(name)
        if state is None or state.out_ids is None:
            key: Any = ("alone", name)
        else:
            key = tuple(analysis.uf.find(x) for x in state.out_ids)
        if key not in keys:
            keys[key] = len(keys)
        groups[name] = keys[key]
    return groups


def auto_set_dependency_group_ids(
    model: nn.Module, config_list: Iterable[Mapping[str, Any]], dummy_input: Any
) -> list[dict[str, Any]]:
    """Expand ``config_list`` to one entry per layer with a ``dependency_group_id``.

    NNI 3.0 semantics: every layer selected by ``config_list`` gets its own
    entry ``{"op_names": [name], ...other keys of its entry...,
    "dependency_group_id": gid}``; layers whose output channels are coupled
    (the convolutions feeding one residual add, a conv and the depthwise conv
    after it) share ``gid``, so a pruner masks the same channels in all of
    them and speedup can remove those channels.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18()
        >>> cfg = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
        ...                                     torch.rand(1, 3, 64, 64))
        >>> by_name = {e["op_names"][0]: e["dependency_group_id"] for e in cfg}
        >>> by_name["conv1"] == by_name["layer1.0.conv2"] == by_name["layer1.1.conv2"]
        True
    """
    from ..config import select_modules

    selected = select_modules(model, list(config_list), supported_types=DEPENDENCY_LAYER_TYPES)
    analysis = analyze_channels(model, dummy_input)
    names = [name for name, _ in model.named_modules() if name in selected]
    groups = channel_groups(analysis, names)
    result = []
    for name in names:
        entry = {"op_names": [name]}
        entry.update({k: v for k, v in selected[name].items() if k != "dependency_group_id"})
        entry["dependency_group_id"] = groups[name]
        result.append(entry)
    return result


__all__ = [
    "ChannelAnalysis",
    "ChannelUnionFind",
    "Layout",
    "ModuleChannels",
    "analyze_channels",
    "auto_set_dependency_group_ids",
    "channel_groups",
]
