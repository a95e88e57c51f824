"""The built-in channel rules: which rule each torch module, function and Tensor method gets.

Importing this module fills :data:`~.rule_table.RULES` (the same table
:func:`~.rule_table.register_channel_rule` fills). Each rule is a name from
:data:`~.rule_table.RULE_NAMES` (activations, pooling, dropout: ``"passthrough"``)
or a function ``rule(propagator, node, module)`` that reads the node's
arguments and calls the :class:`~.rules.Propagator` helper that knows the
operation (``conv``, ``nary``, ``reshape``, ``cat``, ...). Anything not in
the table is an unknown operation: its channels are kept.

Example::

    >>> import torch, torch.nn as nn
    >>> from compression_core.dependency.rule_table import RULES
    >>> RULES.for_module(nn.ReLU()), RULES.for_method("view") is RULES.for_method("reshape")
    ('passthrough', True)
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..models.attention import ATTENTION_TYPES
from .attention import attention_channels
from .rule_table import RULES
from .splits import split_channels

# --------------------------------------------------------------------------
# operations by what they do to channels

BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply,
    torch.div, torch.divide, torch.true_divide, torch.maximum, torch.minimum, torch.rsub,
}
BINARY_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "true_divide", "true_divide_",
    "__add__", "__radd__", "__mul__", "__rmul__", "__sub__", "__rsub__", "__truediv__", "maximum", "minimum",
}
UNARY_FUNCTIONS = {
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.clamp, torch.clip, torch.abs, torch.neg,
    torch.exp, torch.sqrt, torch.square, torch.erf, torch.sign, operator.neg, operator.pos,
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.gelu, F.silu, F.sigmoid, F.tanh, F.hardswish,
    F.hardsigmoid, F.elu, F.elu_, F.selu, F.celu, F.mish, F.hardtanh, F.hardtanh_, F.softplus, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.lp_pool1d, F.lp_pool2d, F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear, F.pad,
    "torchvision.ops.stochastic_depth.stochastic_depth",  # by name: torchvision is not imported here
}
UNARY_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone", "float", "half", "double",
    "bfloat16", "to", "type_as", "detach", "clamp", "clamp_", "clip", "clip_", "abs", "abs_", "neg", "exp",
    "sqrt", "square", "requires_grad_", "cpu", "cuda", "__neg__", "hardswish", "sign",
}
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.ravel}
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_", "view_as",
                   "reshape_as", "ravel"}
CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var}
REDUCE_METHODS = {"mean", "sum", "amax", "amin", "std", "var"}
SWAP_FUNCTIONS = {torch.transpose, torch.swapaxes, torch.swapdims}
SWAP_METHODS = {"transpose", "swapaxes", "swapdims"}
SPLIT_FUNCTIONS = {torch.split: "split", torch.chunk: "chunk", torch.tensor_split: "tensor_split"}
SPLIT_METHODS = {"split", "chunk", "tensor_split"}
SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "get_device", "is_contiguous"}
SHAPE_ATTRS = {"shape", "device", "dtype", "ndim", "is_cuda", "requires_grad"}

PASS_MODULES: tuple[type, ...] = (
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
ONNX_PASS = {
    "OnnxClip", "OnnxErf", "OnnxHardSigmoid", "OnnxFunction", "OnnxCopyIdentity", "OnnxDropoutDynamic",
    "OnnxGlobalAveragePool", "OnnxGlobalAveragePoolWithKnownInputShape", "OnnxCast", "OnnxNeg", "OnnxSqrt",
    "OnnxReciprocal", "OnnxRound", "OnnxResize", "OnnxResizeV10", "OnnxPadStatic",
}
ONNX_RESHAPE = {"OnnxFlatten", "OnnxReshape", "OnnxSqueezeStaticAxes", "OnnxUnsqueezeStaticAxes"}
ONNX_NARY = {"OnnxBinaryMathOperation", "OnnxSum", "OnnxMean", "OnnxPow"}
ONNX_NO_CHANNELS = {"OnnxConstant", "OnnxShape"}


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of a call, or its keyword ``name``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def iter_nodes(value: Any) -> Iterable[fx.Node]:
    """Every graph node in a (nested) argument."""
    if isinstance(value, fx.Node):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from iter_nodes(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_nodes(v)
    elif isinstance(value, slice):
        yield from iter_nodes((value.start, value.stop, value.step))


def _module_input(node: fx.Node) -> Any:
    return node.args[0] if node.args else next(iter(node.kwargs.values()), None)


def _sizes(args: Any) -> list:
    """Sizes given as ``*sizes`` or as one list (``x.view(n, c)``, ``x.view((n, c))``)."""
    sizes = list(args)
    return list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else sizes


def _no_channels(prop: Any, node: fx.Node, m: Any) -> None:
    return None


# --------------------------------------------------------------------------
# modules

def _conv(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    if len(node.args) + len(node.kwargs) != 1:
        return prop.unknown(node, "it is called with an output size")
    return prop.conv(node, node.target, m, _module_input(node))


def _linear(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    return prop.linear(node, node.target, m, _module_input(node))


def _batch_norm(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    if isinstance(m, nn.modules.batchnorm._LazyNormBase) and m.has_uninitialized_params():
        return prop.unknown(node)
    return prop.norm(node, node.target, m, _module_input(node), m.num_features, "norm")


def _layer_norm(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    if type(m).forward is nn.LayerNorm.forward:
        return prop.layer_norm(node, node.target, m, _module_input(node), None)
    if type(m).__name__ == "LayerNorm2d":  # torchvision's channels-first LayerNorm
        return prop.layer_norm(node, node.target, m, _module_input(node), 1)
    return prop.unknown(node, "a LayerNorm subclass with its own forward")


def _group_norm(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    return prop.group_norm(node, node.target, m, _module_input(node))


def _embedding(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    return prop.embedding(node, node.target, m, _module_input(node))


def _prelu(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    if m.num_parameters == 1:
        return prop.passthrough(node, _module_input(node))
    return prop.norm(node, node.target, m, _module_input(node), m.num_parameters, "prelu")


def _flatten_module(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    return prop.reshape(node, _module_input(node))


def _softmax_module(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    x = _module_input(node)
    lay, xi = prop.layout(x), prop.tinfo(x)
    if lay is not None and m.dim is not None and xi is not None and m.dim % xi.ndim != lay.dim:
        return prop.passthrough(node, x)
    return prop.unknown(node, "it normalises over the channels")


def _onnx_reshape(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    static = None
    if type(m).__name__ == "OnnxReshape" and len(node.args) > 1:
        shape_node = node.args[1]
        if prop.const_target(shape_node) is not None or (
            isinstance(shape_node, fx.Node) and not any(True for _ in iter_nodes(shape_node.args))
        ):
            si = prop.tinfo(shape_node)
            static = si.value.tolist() if si is not None and si.value is not None else None
            if static is None:
                return prop.unknown(node, "it reshapes to a fixed channel count")
    return prop.reshape(node, _module_input(node), static_shape=static)


def _onnx_nary(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    if type(m).__name__ == "OnnxBinaryMathOperation" and getattr(m, "broadcast", None) == 1 \
            and getattr(m, "axis", None) is not None:
        return prop.unknown(node, "old-style broadcast")
    return prop.nary(node, list(node.args))


def _onnx_concat(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    return prop.cat(node, list(node.args), m.axis)


def _onnx_transpose(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    if getattr(m, "perm", None) is None:
        return prop.unknown(node)
    return prop.permute(node, _module_input(node), perm=list(m.perm))


def _onnx_reduce(prop: Any, node: fx.Node, m: nn.Module) -> Any:
    if getattr(m, "axes", None) and m.operation_type in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"):
        return prop.reduce(node, _module_input(node), list(m.axes), bool(m.keepdims))
    return prop.unknown(node)


# --------------------------------------------------------------------------
# functions

def _functional_layer_norm(prop: Any, node: fx.Node, m: None) -> Any:
    x = arg(node, 0, "input")
    lay, xi = prop.layout(x), prop.tinfo(x)
    shape = arg(node, 1, "normalized_shape", ())
    if lay is not None and xi is not None and isinstance(shape, (list, tuple)) and lay.dim < xi.ndim - len(shape):
        return prop.passthrough(node, x)
    return prop.unknown(node, "it normalises over the channels")


def _functional_group_norm(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.unknown(node, "it normalises over the channels")


def _functional_norm(prop: Any, node: fx.Node, m: None) -> Any:
    """``F.batch_norm`` / ``F.instance_norm``: their statistics and affine tensors follow the channels."""
    attrs = [arg(node, 1, "running_mean"), arg(node, 2, "running_var"), arg(node, 3, "weight"), arg(node, 4, "bias")]
    return prop.functional_norm(node, arg(node, 0, "input"), attrs)


def _functional_softmax(prop: Any, node: fx.Node, m: None) -> Any:
    x = arg(node, 0, "input")
    lay, xi = prop.layout(x), prop.tinfo(x)
    dim = arg(node, 1, "dim")
    if lay is not None and xi is not None and isinstance(dim, int) and dim % xi.ndim != lay.dim:
        return prop.passthrough(node, x)
    return prop.unknown(node, "it normalises over the channels")


def _binary_function(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.nary(node, [arg(node, 0, "input"), arg(node, 1, "other")])


def _getitem(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.getitem(node, node.args[0], node.args[1])


def _cat(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.cat(node, arg(node, 0, "tensors"), arg(node, 1, "dim", 0))


def _reshape_function(prop: Any, node: fx.Node, m: None) -> Any:
    literal = None
    if node.target is torch.reshape:
        shape = arg(node, 1, "shape")
        literal = list(shape) if isinstance(shape, (list, tuple)) else None
    return prop.reshape(node, arg(node, 0, "input"), literal_sizes=literal)


def _reduce(prop: Any, node: fx.Node, m: None) -> Any:
    x = arg(node, 0, "input") if node.op == "call_function" else node.args[0]
    return prop.reduce(node, x, arg(node, 1, "dim"), bool(arg(node, 2, "keepdim", False)))


def _permute_function(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.permute(node, arg(node, 0, "input"), perm=list(arg(node, 1, "dims", [])))


def _swap(prop: Any, node: fx.Node, m: None) -> Any:
    x = arg(node, 0, "input") if node.op == "call_function" else node.args[0]
    return prop.permute(node, x, swap=(arg(node, 1, "dim0"), arg(node, 2, "dim1")))


def _split_function(prop: Any, node: fx.Node, m: None) -> Any:
    return split_channels(prop, node, arg(node, 0, "input"), arg(node, 2, "dim", 0), SPLIT_FUNCTIONS[node.target])


def _getattr(prop: Any, node: fx.Node, m: None) -> Any:
    return None if (len(node.args) > 1 and node.args[1] in SHAPE_ATTRS) else prop.unknown(node)


# --------------------------------------------------------------------------
# Tensor methods

def _binary_method(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.nary(node, [node.args[0], arg(node, 1, "other")])


def _reshape_method(prop: Any, node: fx.Node, m: None) -> Any:
    literal = None
    if node.target in ("view", "reshape"):
        literal = _sizes(node.args[1:])
        if len(literal) == 1 and isinstance(literal[0], torch.dtype):
            return prop.unknown(node)
    return prop.reshape(node, node.args[0], literal_sizes=literal)


def _permute_method(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.permute(node, node.args[0], perm=_sizes(node.args[1:]))


def _split_method(prop: Any, node: fx.Node, m: None) -> Any:
    return split_channels(prop, node, node.args[0], arg(node, 2, "dim", 0), node.target)


def _expand_as(prop: Any, node: fx.Node, m: None) -> Any:
    return prop.nary(node, [node.args[0]])


def _expand(prop: Any, node: fx.Node, m: None) -> Any:
    x = node.args[0]
    sizes = _sizes(node.args[1:])
    lay, oi = prop.layout(x), prop.tinfo(node)
    if lay is not None and oi is not None:
        cdim = lay.dim + (oi.ndim - prop.tinfo(x).ndim)
        if cdim < len(sizes) and isinstance(sizes[cdim], int) and sizes[cdim] != -1:
            return prop.unknown(node, "it expands to a fixed channel count")
    return prop.nary(node, [x])


# --------------------------------------------------------------------------
# the table

RULES.add("module", ATTENTION_TYPES, attention_channels)
RULES.add("module", nn.modules.conv._ConvNd, _conv)
RULES.add("module", nn.Linear, _linear)
RULES.add("module", (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm), _batch_norm)
RULES.add("module", nn.LayerNorm, _layer_norm)
RULES.add("module", nn.GroupNorm, _group_norm)
RULES.add("module", nn.Embedding, _embedding)
RULES.add("module", nn.PReLU, _prelu)
RULES.add("module", PASS_MODULES, "passthrough")
RULES.add("module", nn.Flatten, _flatten_module)
RULES.add("module", (nn.Softmax, nn.LogSoftmax, nn.Softmin), _softmax_module)
RULES.add("module", ONNX_PASS, "passthrough")
RULES.add("module", ONNX_RESHAPE, _onnx_reshape)
RULES.add("module", ONNX_NARY, _onnx_nary)
RULES.add("module", ONNX_NO_CHANNELS, _no_channels)
RULES.add("module", "OnnxConcat", _onnx_concat)
RULES.add("module", "OnnxTranspose", _onnx_transpose)
RULES.add("module", "OnnxReduceStaticAxes", _onnx_reduce)

RULES.add("function", F.layer_norm, _functional_layer_norm)
RULES.add("function", F.group_norm, _functional_group_norm)
RULES.add("function", BINARY_FUNCTIONS, _binary_function)
RULES.add("function", UNARY_FUNCTIONS, "passthrough")
RULES.add("function", operator.getitem, _getitem)
RULES.add("function", CAT_FUNCTIONS, _cat)
RULES.add("function", RESHAPE_FUNCTIONS, _reshape_function)
RULES.add("function", REDUCE_FUNCTIONS, _reduce)
RULES.add("function", torch.permute, _permute_function)
RULES.add("function", SWAP_FUNCTIONS, _swap)
RULES.add("function", set(SPLIT_FUNCTIONS), _split_function)
RULES.add("function", (F.batch_norm, F.instance_norm), _functional_norm)
RULES.add("function", (F.softmax, F.log_softmax), _functional_softmax)
RULES.add("function", builtins.getattr, _getattr)
RULES.add("function", (torch.numel, builtins.len, torch._assert), _no_channels)

RULES.add("method", SHAPE_METHODS, _no_channels)
RULES.add("method", UNARY_METHODS, "passthrough")
RULES.add("method", BINARY_METHODS, _binary_method)
RULES.add("method", RESHAPE_METHODS, _reshape_method)
RULES.add("method", REDUCE_METHODS, _reduce)
RULES.add("method", "permute", _permute_method)
RULES.add("method", SWAP_METHODS, _swap)
RULES.add("method", SPLIT_METHODS, _split_method)
RULES.add("method", "expand_as", _expand_as)
RULES.add("method", "expand", _expand)
