"""Make onnx2torch 1.5.x work with ONNX files from current exporters.

onnx2torch looks converters up by exact ``(domain, op_type, since_version)``,
so any operator whose schema got a newer version after onnx2torch's release
(``Identity``-19, ``Cast``-19, ``Reshape``-19, ``Pad``-18, ``Resize``-19, ...)
fails with ``Converter is not implemented``. Most of those newer versions only
add data types (float8, int4, bfloat16) or optional attributes, so we fall
back to the newest registered converter whose version is <= the requested one,
after checking that the node uses no input or attribute the older version did
not have (with a non-default value). Operators whose semantics changed are
given proper converters here (``Reduce*``-18/20 take ``axes`` as an input,
``Split``-18 has ``num_outputs``), as are a few common operators onnx2torch
lacks (``Gelu``-20, ``Mish``-18, ``GlobalMaxPool``).

More fixes: ``MatMul`` by a constant 2-D weight becomes ``nn.Linear`` (as
``Gemm`` already does in onnx2torch), so the dense layers of transformers and
ConvNeXt, which ``torch.onnx`` writes as ``MatMul`` + ``Add`` on 3-D/4-D
tensors, have real parameters that pruning and speedup can work on;
onnx2torch's ``get_onnx_version`` (used when its modules are exported to ONNX
again) reads the exporter's opset where current PyTorch keeps it; and
:func:`shapes_already_inferred` lets the caller skip onnx2torch's shape
inference over the full weights when it has inferred the shapes without them.

Nothing in site-packages is edited: :func:`install` swaps the function that
``onnx2torch.converter`` calls and registers the extra converters; it is
idempotent and only ever widens what converts.

This module imports onnx2torch (seconds), so :mod:`.convert` imports it only when converting.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Callable, List, Optional, Tuple

import onnx2torch.converter as converter_module
import onnx2torch.node_converters as node_converters_module  # also loads every converter module
import torch
from onnx import ModelProto, defs, helper
from onnx2torch.node_converters import registry as converter_registry
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
from onnx2torch.node_converters.registry import OperationDescription
from onnx2torch.node_converters.split import OnnxSplit13
from onnx2torch.utils import common as onnx2torch_common
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value, onnx_mapping_from_node
from torch import nn
from torch.onnx import symbolic_helper

from .layers import (  # noqa: F401 - UnsupportedOperator is part of this module's API
    UnsupportedOperator, BatchNormConverter, ClipConverter, PadConverter, ResizeConverter, SoftmaxConverter,
    StaticReshapeConverter, StaticSplitConverter,
)
from .rnn import register_recurrent

try:  # where torch >= 2.9 keeps the TorchScript exporter's state
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS as _TORCHSCRIPT_EXPORTER_GLOBALS
except ImportError:
    _TORCHSCRIPT_EXPORTER_GLOBALS = None

__all__ = ["install", "find_converter", "UnsupportedOperator", "shapes_already_inferred"]

_LOCK = threading.Lock()
_INSTALLED = False
_LOCAL = threading.local()

# Attribute values that mean "same as before this attribute existed".
_NEUTRAL_ATTRIBUTE_VALUES = {
    "dilations": lambda v: all(int(x) == 1 for x in v),
    "antialias": lambda v: int(v) == 0,
    "keep_aspect_ratio_policy": lambda v: _as_str(v) == "stretch",
    "saturate": lambda v: int(v) == 1,
    "noop_with_empty_axes": lambda v: int(v) == 0,
    "allowzero": lambda v: int(v) == 0,
    "stash_type": lambda v: int(v) == 1,
}


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _registry() -> dict:
    return converter_registry._CONVERTER_REGISTRY  # pylint: disable=protected-access


def _schema(op_type: str, version: int, domain: str):
    try:
        return defs.get_schema(op_type, max_inclusive_version=version, domain=domain)
    except (RuntimeError, defs.SchemaError):
        return None


def find_converter(op_type: str, version: int, domain: str = "") -> Tuple[Optional[Callable], Optional[int]]:
    """Return ``(converter, registered_version)`` for an op at a model opset, or ``(None, None)``.

    Example::

        >>> conv, v = find_converter("Identity", 19)
        >>> v
        16
    """
    registry = _registry()
    schema = _schema(op_type, version, domain)
    since = schema.since_version if schema is not None else version
    exact = registry.get(OperationDescription(domain=domain, operation_type=op_type, version=since))
    if exact is not None:
        return exact, since
    candidates = [
        desc.version
        for desc in registry
        if desc.domain == domain and desc.operation_type == op_type and desc.version <= since
    ]
    if not candidates:
        return None, None
    base = max(candidates)
    return registry[OperationDescription(domain=domain, operation_type=op_type, version=base)], base


def _guarded(converter: Callable, op_type: str, base: int, version: int, domain: str) -> Callable:
    old = _schema(op_type, base, domain)
    new = _schema(op_type, version, domain)

    def convert(node, graph):
        if old is not None:
            n_inputs = sum(1 for name in node.input_values if name)
            if old.max_input < n_inputs:
                raise UnsupportedOperator(
                    f"{op_type} (opset {version}) with {n_inputs} inputs is not supported "
                    f"(the available converter handles opset {base}, at most {old.max_input} inputs)"
                )
            for name in node.proto.attribute:
                attr_name = name.name
                if attr_name in old.attributes:
                    continue
                value = node.attributes.get(attr_name)
                neutral = _NEUTRAL_ATTRIBUTE_VALUES.get(attr_name)
                if neutral is not None:
                    try:
                        if neutral(value):
                            continue
                    except (TypeError, ValueError):
                        pass
                if new is not None and attr_name in new.attributes:
                    default = new.attributes[attr_name].default_value
                    if default is not None and default.name:
                        if helper.get_attribute_value(default) == value:
                            continue
                raise UnsupportedOperator(
                    f"{op_type} (opset {version}) attribute {attr_name}={value!r} is not supported "
                    f"(the available converter handles opset {base})"
                )
        return converter(node, graph)

    return convert


def _get_converter(operation_type: str, version: int, domain: str = "") -> Callable:
    converter, base = find_converter(operation_type, version, domain)
    if converter is None:
        raise UnsupportedOperator(
            f"Converter is not implemented (domain={domain!r}, op_type={operation_type!r}, opset={version})"
        )
    schema = _schema(operation_type, version, domain)
    since = schema.since_version if schema is not None else version
    if base == since:
        return converter
    return _guarded(converter, operation_type, base, version, domain)


# --------------------------------------------------------------------------
# Extra converters for operators whose semantics changed after onnx2torch 1.5


_REDUCE_FUNCTIONS = {
    "ReduceL1": lambda x, dim, keepdim: torch.sum(torch.abs(x), dim=dim, keepdim=keepdim),
    "ReduceL2": lambda x, dim, keepdim: torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim)),
    "ReduceLogSum": lambda x, dim, keepdim: torch.log(torch.sum(x, dim=dim, keepdim=keepdim)),
    "ReduceLogSumExp": lambda x, dim, keepdim: torch.logsumexp(x, dim=dim, keepdim=keepdim),
    "ReduceMax": lambda x, dim, keepdim: torch.amax(x, dim=dim, keepdim=keepdim),
    "ReduceMean": lambda x, dim, keepdim: torch.mean(x, dim=dim, keepdim=keepdim),
    "ReduceMin": lambda x, dim, keepdim: torch.amin(x, dim=dim, keepdim=keepdim),
    "ReduceProd": None,  # torch.prod takes one dim at a time
    "ReduceSumSquare": lambda x, dim, keepdim: torch.sum(x * x, dim=dim, keepdim=keepdim),
}


# Reductions onnx2torch's opset-13 module computes exactly for any constant, non-empty axes.
_AS_STATIC_AXES = {"ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2"}


def _reduce_prod(x: torch.Tensor, dim: List[int], keepdim: bool) -> torch.Tensor:
    dims = sorted((d % x.dim() for d in dim), reverse=True)
    for d in dims:
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


class OnnxReduceAxesInput(nn.Module):
    """``Reduce*`` from opset 18 on (axes as a constant input)."""

    def __init__(self, operation_type: str, axes: Optional[List[int]], keepdims: bool, noop_with_empty_axes: bool):
        super().__init__()
        self.operation_type = operation_type
        self.axes = None if axes is None else [int(a) for a in axes]
        self.keepdims = bool(keepdims)
        self.noop_with_empty_axes = bool(noop_with_empty_axes)

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D401
        axes = self.axes
        if not axes:
            if self.noop_with_empty_axes:
                return input_tensor
            axes = list(range(input_tensor.dim()))
        if self.operation_type == "ReduceProd":
            return _reduce_prod(input_tensor, axes, self.keepdims)
        return _REDUCE_FUNCTIONS[self.operation_type](input_tensor, axes, self.keepdims)

    def extra_repr(self) -> str:
        return f"{self.operation_type}, axes={self.axes}, keepdims={self.keepdims}"


def _reduce_axes_input_converter(node, graph):
    keepdims = node.attributes.get("keepdims", 1)
    noop = node.attributes.get("noop_with_empty_axes", 0)
    axes = None
    inputs = [name for name in node.input_values]
    if len(inputs) > 1 and inputs[1]:
        try:
            axes = get_const_value(inputs[1], graph)
        except KeyError as exc:
            raise UnsupportedOperator(
                f"{node.operation_type} with axes computed at run time is not supported"
            ) from exc
        axes = [int(a) for a in torch.as_tensor(axes).reshape(-1).tolist()]
    if axes and node.operation_type in _AS_STATIC_AXES:
        # The same module as opset 13 gives, so opset-18 graphs look the same to speedup & co.
        return OperationConverterResult(
            torch_module=OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes, keepdims=keepdims),
            onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
        )
    return OperationConverterResult(
        torch_module=OnnxReduceAxesInput(node.operation_type, axes, keepdims, noop),
        onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
    )


class OnnxSplitNumOutputs(nn.Module):
    """``Split``-18 with ``num_outputs`` (chunks of ``ceil(n / num_outputs)``)."""

    def __init__(self, axis: int, num_outputs: int):
        super().__init__()
        self.axis = axis
        self.num_outputs = num_outputs

    def forward(self, input_tensor: torch.Tensor):
        length = input_tensor.shape[self.axis]
        chunk = -(-length // self.num_outputs)
        sizes = [chunk] * (self.num_outputs - 1)
        sizes.append(length - chunk * (self.num_outputs - 1))
        return torch.split(input_tensor, sizes, dim=self.axis)


def _split18_converter(node, graph):
    axis = node.attributes.get("axis", 0)
    inputs = list(node.input_values)
    if len(inputs) > 1 and inputs[1]:
        return OperationConverterResult(
            torch_module=OnnxSplit13(axis=axis, num_splits=len(node.output_values)),
            onnx_mapping=OnnxMapping(inputs=tuple(inputs[:2]), outputs=node.output_values),
        )
    num_outputs = int(node.attributes.get("num_outputs", len(node.output_values)))
    return OperationConverterResult(
        torch_module=OnnxSplitNumOutputs(axis=axis, num_outputs=num_outputs),
        onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
    )


class OnnxGlobalMaxPool(nn.Module):
    """``GlobalMaxPool``: max over every spatial dimension, keeping them as size 1."""

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        return torch.amax(input_tensor, dim=tuple(range(2, input_tensor.dim())), keepdim=True)


def _simple_converter(make_module: Callable):
    def convert(node, graph):  # pylint: disable=unused-argument
        return OperationConverterResult(torch_module=make_module(node), onnx_mapping=onnx_mapping_from_node(node))

    return convert


def _gelu_module(node) -> nn.Module:
    approximate = _as_str(node.attributes.get("approximate", "none"))
    if approximate not in ("none", "tanh"):
        raise UnsupportedOperator(f"Gelu approximate={approximate!r} is not supported")
    return nn.GELU(approximate=approximate)


class _ConstantMatMulConverter:
    """``MatMul(x, W)`` with ``W`` a constant 2-D float matrix -> ``nn.Linear(bias=False)``; else onnx2torch's."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        inputs = list(node.input_values)
        if len(inputs) == 2 and inputs[1] in graph.initializers and inputs[0] not in graph.initializers:
            weight = graph.initializers[inputs[1]].to_torch()
            if weight.dim() == 2 and weight.is_floating_point() and weight.numel() > 0:
                in_features, out_features = weight.shape
                linear = nn.Linear(in_features, out_features, bias=False, dtype=weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(weight.t())
                return OperationConverterResult(
                    torch_module=linear,
                    onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
                )
        return self.original(node, graph)


def _onnx_export_opset_version() -> int:
    """Opset of the ``torch.onnx.export`` in progress (onnx2torch's lookup fails on torch >= 2.9)."""
    for exporter_globals in (_TORCHSCRIPT_EXPORTER_GLOBALS, getattr(symbolic_helper, "GLOBALS", None)):
        if exporter_globals is not None and hasattr(exporter_globals, "export_onnx_opset_version"):
            return int(exporter_globals.export_onnx_opset_version)
    return int(symbolic_helper._export_onnx_opset_version)  # pylint: disable=protected-access


def _patch_get_onnx_version() -> None:
    original = onnx2torch_common.get_onnx_version
    for name, module in list(sys.modules.items()):
        in_package = name == "onnx2torch" or name.startswith("onnx2torch.")
        if in_package and getattr(module, "get_onnx_version", None) is original:
            module.get_onnx_version = _onnx_export_opset_version


def _wrap(op_type: str, wrapper: type) -> None:
    """Put every registered converter of ``op_type`` behind ``wrapper`` (which falls back to it)."""
    registry = _registry()
    for desc in list(registry):
        if desc.domain == defs.ONNX_DOMAIN and desc.operation_type == op_type:
            original = registry[desc]
            if not isinstance(original, wrapper):
                registry[desc] = wrapper(original)


@contextlib.contextmanager
def shapes_already_inferred():
    """Within this block ``onnx2torch.convert`` trusts the ``value_info`` of the model it is given.

    onnx2torch runs ONNX shape inference on the whole model, weights included,
    which for a model of hundreds of megabytes costs seconds of serialisation;
    :func:`compression_core.io.onnx.convert.onnx_to_torch` infers shapes on a
    copy without the weights and stores them in the model first.
    """
    previous = getattr(_LOCAL, "skip_shape_inference", False)
    _LOCAL.skip_shape_inference = True
    try:
        yield
    finally:
        _LOCAL.skip_shape_inference = previous


def _patch_shape_inference(converter_module) -> None:
    original = converter_module.safe_shape_inference

    def safe_shape_inference(onnx_model_or_path, **kwargs):
        if getattr(_LOCAL, "skip_shape_inference", False) and isinstance(onnx_model_or_path, ModelProto):
            return onnx_model_or_path
        return original(onnx_model_or_path, **kwargs)

    converter_module.safe_shape_inference = safe_shape_inference


def _register(op_type: str, version: int, converter: Callable) -> None:
    registry = _registry()
    desc = OperationDescription(domain=defs.ONNX_DOMAIN, operation_type=op_type, version=version)
    if desc not in registry:  # a newer onnx2torch may already have it
        registry[desc] = converter


def install() -> None:
    """Patch onnx2torch's converter lookup and register the extra converters (idempotent)."""
    global _INSTALLED  # pylint: disable=global-statement
    with _LOCK:
        if _INSTALLED:
            return
        for op_type in _REDUCE_FUNCTIONS:
            _register(op_type, 18, _reduce_axes_input_converter)
        _register("ReduceMax", 20, _reduce_axes_input_converter)
        _register("ReduceMin", 20, _reduce_axes_input_converter)
        _register("Split", 18, _split18_converter)
        _register("Gelu", 20, _simple_converter(_gelu_module))
        _register("Mish", 18, _simple_converter(lambda node: nn.Mish()))
        _register("GlobalMaxPool", 1, _simple_converter(lambda node: OnnxGlobalMaxPool()))
        _wrap("MatMul", _ConstantMatMulConverter)
        _wrap("Reshape", StaticReshapeConverter)
        _wrap("BatchNormalization", BatchNormConverter)
        _wrap("Pad", PadConverter)
        _wrap("Split", StaticSplitConverter)
        _wrap("Clip", ClipConverter)
        _wrap("Resize", ResizeConverter)
        _wrap("Softmax", SoftmaxConverter)
        _wrap("LogSoftmax", SoftmaxConverter)
        register_recurrent(_register)
        _patch_get_onnx_version()
        _patch_shape_inference(converter_module)

        converter_module.get_converter = _get_converter
        node_converters_module.get_converter = _get_converter
        _INSTALLED = True
