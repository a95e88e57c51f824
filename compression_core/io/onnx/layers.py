"""Torch modules (and their onnx2torch converters) for ONNX nodes onnx2torch converts in a way pruning cannot use.

- :class:`OnnxStaticReshape`: ``Reshape`` by a constant shape, kept as a plain list
  (``shape``) that speedup sets to the kept channel count; ``0`` copies the input's dim,
  so a batch freed by :mod:`.literal_shapes` stays free in the re-exported model.
- :class:`BatchNormAnyRank`: ``BatchNormalization`` whose input rank ONNX shape inference
  could not tell (onnx2torch: "spatial rank == -2 is not implemented"); a real
  ``_BatchNorm``, so pruning cuts it like ``BatchNorm1d/2d``.
- :class:`OnnxPadAnyRank`: ``Pad`` by constant pads on an input of any rank (onnx2torch's
  reflect / edge padding assumes ``(N, C, ...)``).
- :class:`OnnxStaticSplit`: ``Split`` by constant sizes, kept as the plain list ``sizes``
  that speedup sets to the kept channels of each piece.
- :class:`OnnxClipDynamic`: ``Clip`` with bounds computed at run time.
- :class:`ResizeConverter`: a ``Resize`` to literal ``sizes`` whose batch and channel entries
  are the input's resizes only the spatial dims, so it follows any batch and the pruned channels.
- :class:`OnnxSoftmaxFlattened`: opset < 13 ``Softmax`` / ``LogSoftmax`` (onnx2torch's module
  reshapes back to the traced shape, which the re-export writes as a literal batch).
- LSTM / GRU (:mod:`.rnn`) are registered from there.

Example::

    >>> OnnxStaticReshape([0, -1, 4])(torch.zeros(2, 8, 2, 2)).shape
    torch.Size([2, 2, 4])
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from onnx2torch.utils.common import (
    OnnxMapping, OperationConverterResult, get_shape_from_value_info, onnx_mapping_from_node,
)
from torch import nn

__all__ = [
    "UnsupportedOperator", "OnnxStaticReshape", "BatchNormAnyRank", "OnnxPadAnyRank", "OnnxStaticSplit", "OnnxClipDynamic",
    "StaticReshapeConverter", "BatchNormConverter", "PadConverter", "StaticSplitConverter", "ClipConverter",
    "OnnxSoftmaxFlattened", "SoftmaxConverter", "ResizeConverter",
]


class UnsupportedOperator(NotImplementedError):
    """No converter can handle this node (raised at lookup or conversion time)."""


class OnnxStaticReshape(nn.Module):
    """``Reshape`` by a constant ``shape`` (ONNX rules: ``0`` copies the input's dim, ``-1`` is inferred)."""

    def __init__(self, shape: List[int]):
        super().__init__()
        self.shape = [int(v) for v in shape]

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        shape = [input_tensor.shape[i] if v == 0 else v for i, v in enumerate(self.shape)]
        return torch.reshape(input_tensor, shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class StaticReshapeConverter:
    """``Reshape(x, constant)`` -> :class:`OnnxStaticReshape`; any other ``Reshape`` -> onnx2torch's."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        inputs = list(node.input_values)
        allowzero = int(node.attributes.get("allowzero", 0))
        if len(inputs) == 2 and inputs[1] in graph.initializers and inputs[0] not in graph.initializers:
            shape = graph.initializers[inputs[1]].to_torch().reshape(-1).tolist()
            if allowzero == 0 or 0 not in shape:
                return OperationConverterResult(
                    torch_module=OnnxStaticReshape(shape),
                    onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
                )
        return self.original(node, graph)


class BatchNormAnyRank(nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
    """Inference batch norm over dim 1 of an input of any rank >= 2 (its rank was unknown at conversion)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ValueError(f"expected an input with at least 2 dims (N, C, ...), got {input.dim()}")


class BatchNormConverter:
    """onnx2torch's ``BatchNormalization`` converter, with :class:`BatchNormAnyRank` where it needs the rank."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        inputs = list(node.input_values)
        constant = len(inputs) == 5 and all(name in graph.initializers for name in inputs[1:])
        info = graph.value_info.get(inputs[0]) if constant else None
        rank = len(get_shape_from_value_info(info)) if info is not None else 0
        if not constant or len(node.output_values) != 1 or rank in (2, 3, 4, 5):
            return self.original(node, graph)
        scale, bias, mean, var = (graph.initializers[name].to_torch() for name in inputs[1:])
        module = BatchNormAnyRank(
            scale.shape[0], eps=float(node.attributes.get("epsilon", 1e-5)),
            momentum=1 - float(node.attributes.get("momentum", 0.9)),
        )
        with torch.no_grad():
            module.weight.copy_(scale)
            module.bias.copy_(bias)
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
        return OperationConverterResult(
            torch_module=module, onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values)
        )


class OnnxPadAnyRank(nn.Module):
    """``Pad`` by constant ``pads`` (ONNX order: every dim's begin, then every dim's end), any input rank.

    onnx2torch's reflect / edge padding assumes the two leading dims are batch and
    channels; silero-vad pads the samples of a 2-D ``[chunks, samples]`` input.
    """

    def __init__(self, pads: List[int], mode: str, value: float = 0.0):
        super().__init__()
        self.pads = [int(p) for p in pads]
        self.mode = mode
        self.value = float(value)

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        rank = input_tensor.dim()
        begins, ends = self.pads[:rank], self.pads[rank:]
        padded = [d for d in range(rank) if begins[d] or ends[d]]
        if not padded:
            return input_tensor
        first = padded[0]
        torch_pads: List[int] = []
        for d in reversed(range(first, rank)):
            torch_pads.extend([begins[d], ends[d]])
        if self.mode == "constant":
            return nn.functional.pad(input_tensor, torch_pads, mode="constant", value=self.value)
        lead, trailing = input_tensor.shape[:first], input_tensor.shape[first:]
        x = input_tensor.reshape(1, -1, *trailing)  # (1, everything before, padded dims): what torch pads
        x = nn.functional.pad(x, torch_pads, mode=self.mode)
        return x.reshape(*lead, *x.shape[2:])

    def extra_repr(self) -> str:
        return f"pads={self.pads}, mode={self.mode!r}"


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class PadConverter:
    """``Pad`` (opset 11+) by constant pads without ``axes`` -> :class:`OnnxPadAnyRank`; else onnx2torch's."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        inputs = [name for name in node.input_values]
        mode = node.attributes.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        constant = len(inputs) >= 2 and all(not name or name in graph.initializers for name in inputs[1:3])
        if not constant or len(inputs) > 3 or mode not in _PAD_MODES or inputs[0] in graph.initializers:
            return self.original(node, graph)
        pads = graph.initializers[inputs[1]].to_torch().reshape(-1).tolist()
        value = 0.0
        if len(inputs) == 3 and inputs[2]:
            value = float(graph.initializers[inputs[2]].to_torch().reshape(-1)[0])
        return OperationConverterResult(
            torch_module=OnnxPadAnyRank(pads, _PAD_MODES[mode], value),
            onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
        )


class OnnxStaticSplit(nn.Module):
    """``Split`` by constant sizes along ``axis``, kept as the plain list ``sizes`` that speedup sets."""

    def __init__(self, axis: int, sizes: List[int]):
        super().__init__()
        self.axis = int(axis)
        self.sizes = [int(s) for s in sizes]

    def forward(self, input_tensor: torch.Tensor):
        pieces = torch.split(input_tensor, self.sizes, dim=self.axis)
        return pieces[0] if len(pieces) == 1 else pieces

    def extra_repr(self) -> str:
        return f"axis={self.axis}, sizes={self.sizes}"


class StaticSplitConverter:
    """``Split`` with a constant size list (input, or the ``split`` attribute before opset 13) -> :class:`OnnxStaticSplit`."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        inputs = list(node.input_values)
        sizes = node.attributes.get("split")
        if len(inputs) > 1 and inputs[1]:
            sizes = graph.initializers[inputs[1]].to_torch().reshape(-1).tolist() if inputs[1] in graph.initializers \
                else None
        if sizes is None or len(sizes) != len(node.output_values) or inputs[0] in graph.initializers:
            return self.original(node, graph)
        return OperationConverterResult(
            torch_module=OnnxStaticSplit(node.attributes.get("axis", 0), list(sizes)),
            onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
        )


class OnnxClipDynamic(nn.Module):
    """``Clip`` whose bounds are computed at run time (openWakeWord's mel front-end: ``max(x) - 80``)."""

    def forward(self, input_tensor: torch.Tensor, min: Optional[torch.Tensor] = None,  # noqa: A002 - ONNX's names
                max: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: A002
        return torch.clamp(input_tensor, min=min, max=max)


class ClipConverter:
    """onnx2torch's ``Clip`` converter, with :class:`OnnxClipDynamic` where a bound is not a constant."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        inputs = list(node.input_values)
        if all(not name or name in graph.initializers for name in inputs[1:]):
            return self.original(node, graph)
        return OperationConverterResult(torch_module=OnnxClipDynamic(), onnx_mapping=onnx_mapping_from_node(node))



class OnnxSoftmaxFlattened(nn.Module):
    """Opset < 13 ``Softmax`` / ``LogSoftmax``: over the input flattened from ``axis``, back to the input's shape.

    Unlike onnx2torch's module it reads no size at run time (a traced size can be
    re-exported as a literal batch): over the last axis it is a plain softmax, otherwise
    the result takes the input's shape with ``reshape_as``.
    """

    def __init__(self, axis: int, is_log: bool):
        super().__init__()
        self.axis = axis
        self.is_log = is_log

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        softmax = torch.log_softmax if self.is_log else torch.softmax
        if self.axis % input_tensor.dim() == input_tensor.dim() - 1:
            return softmax(input_tensor, -1)
        return softmax(torch.flatten(input_tensor, start_dim=self.axis), -1).reshape_as(input_tensor)


class SoftmaxConverter:
    """onnx2torch's ``Softmax`` / ``LogSoftmax`` converter, with :class:`OnnxSoftmaxFlattened` for opset < 13."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        result = self.original(node, graph)
        module = result.torch_module
        if type(module).__name__ == "OnnxSoftmaxV1V11":
            flattened = OnnxSoftmaxFlattened(int(module.axis), bool(module.is_log))
            result = OperationConverterResult(torch_module=flattened, onnx_mapping=result.onnx_mapping)
        return result


class ResizeConverter:
    """onnx2torch's ``Resize`` converter; to literal ``sizes`` ``[N, C, H, W]`` equal to the input's ``N, C``
    (exporters write them at the traced batch), the module resizes ``H, W`` only."""

    def __init__(self, original: Callable):
        self.original = original

    def __call__(self, node, graph):
        result = self.original(node, graph)
        inputs = list(node.input_values)
        literal_sizes = len(inputs) >= 4 and inputs[3] in graph.initializers
        if not literal_sizes or not hasattr(result.torch_module, "ignore_bs_ch_size"):
            return result
        sizes = graph.initializers[inputs[3]].to_torch().reshape(-1).tolist()
        info = graph.value_info.get(inputs[0])
        shape = get_shape_from_value_info(info) if info is not None else []
        # both known and equal: with a dynamic batch, onnxruntime would resize the batch to sizes[0]
        if len(shape) == len(sizes) > 2 and shape[:2] == sizes[:2] and 0 not in shape[:2]:
            result.torch_module.ignore_bs_ch_size = True
        return result
