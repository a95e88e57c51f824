"""Quantization parameters per layer (NNI's "calibration config") and their JSON export.

The layout follows NNI 3.0's ``calibration_config``::

    {"conv1": {"module_type": "ConvReLU2d",
               "weight":    {"quant_bits": 8, "quant_dtype": "int8", "quant_scheme": "per_channel_symmetric",
                             "scale": [...], "zero_point": [...], "axis": 0},
               "_input_0":  {"quant_bits": 8, "quant_dtype": "uint8", "quant_scheme": "per_tensor_affine",
                             "scale": 0.0157, "zero_point": 0, "quant_min": 0, "quant_max": 127,
                             "tracked_min": 0.0, "tracked_max": 1.99},
               "_output_0": {...}}}

Activation entries come from the observers of the calibration run (they hold
the tracked min/max); weight entries and output scales also come from the
converted model's int8 modules, so a bare converted model can be exported.

Example::

    >>> model, calibration = PostTrainingQuantizer(model, calibration_data=images).compress()  # doctest: +SKIP
    >>> export_calibration(calibration, "calibration.json")["layers"]  # doctest: +SKIP
    21
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

_DTYPE_NAMES = {torch.qint8: "int8", torch.quint8: "uint8", torch.qint32: "int32",
                torch.int8: "int8", torch.uint8: "uint8"}


def _floats(value: Any) -> float | list[float]:
    tensor = torch.as_tensor(value).detach().flatten().to(torch.float64)
    return float(tensor[0]) if tensor.numel() == 1 else [float(v) for v in tensor]


def _ints(value: Any) -> int | list[int]:
    tensor = torch.as_tensor(value).detach().flatten().to(torch.int64)
    return int(tensor[0]) if tensor.numel() == 1 else [int(v) for v in tensor]


def _bits(quant_min: int, quant_max: int) -> int:
    return int(quant_max - quant_min).bit_length()


def _scheme_name(qscheme: torch.qscheme, zero_points: Any, signed: bool) -> str:
    per_channel = qscheme in (torch.per_channel_affine, torch.per_channel_symmetric,
                              torch.per_channel_affine_float_qparams)
    symmetric = qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric) or (
        signed and bool((torch.as_tensor(zero_points) == 0).all()))
    return f"{'per_channel' if per_channel else 'per_tensor'}_{'symmetric' if symmetric else 'affine'}"


def observer_record(observer: nn.Module) -> dict[str, Any] | None:
    """Scale, zero point, range and tracked min/max of a calibrated observer or fake-quantize module
    (``None`` if it saw no data)."""
    inner = getattr(observer, "activation_post_process", observer)  # a FakeQuantize holds its observer
    min_val = getattr(inner, "min_val", None)
    max_val = getattr(inner, "max_val", None)
    if not isinstance(min_val, torch.Tensor) or min_val.numel() == 0 or not torch.isfinite(min_val).all():
        return None
    scale, zero_point = observer.calculate_qparams()
    signed = observer.dtype in (torch.qint8, torch.int8)
    record = {
        "quant_bits": 8,
        "quant_dtype": _DTYPE_NAMES.get(observer.dtype, str(observer.dtype)),
        "quant_scheme": _scheme_name(observer.qscheme, zero_point, signed),
        "scale": _floats(scale),
        "zero_point": _ints(zero_point),
        "quant_min": int(observer.quant_min),
        "quant_max": int(observer.quant_max),
        "tracked_min": _floats(min_val),
        "tracked_max": _floats(max_val),
    }
    if getattr(observer, "ch_axis", None) is not None and "per_channel" in record["quant_scheme"]:
        record["axis"] = int(observer.ch_axis)
    return record


def qtensor_record(tensor: torch.Tensor) -> dict[str, Any]:
    """Scale(s), zero point(s) and scheme of a quantized tensor."""
    info = torch.iinfo(torch.int8 if tensor.dtype == torch.qint8 else torch.uint8) \
        if tensor.dtype in (torch.qint8, torch.quint8) else None
    qscheme = tensor.qscheme()
    if qscheme in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        scale, zero_point = tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points()
        extra = {"axis": int(tensor.q_per_channel_axis())}
    else:
        scale, zero_point = tensor.q_scale(), tensor.q_zero_point()
        extra = {}
    record = {
        "quant_bits": _bits(info.min, info.max) if info else 8,
        "quant_dtype": _DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype)),
        "quant_scheme": _scheme_name(qscheme, zero_point, tensor.dtype == torch.qint8),
        "scale": _floats(scale),
        "zero_point": _ints(zero_point),
        **extra,
    }
    return record


def is_int8_module(module: nn.Module) -> bool:
    """True for PyTorch's real quantized modules (static, dynamic, fused)."""
    name = type(module).__module__
    return name.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")) and \
        not name.startswith("torch.ao.nn.quantized.reference")


def _weight_records(module: nn.Module) -> dict[str, Any]:
    weight = getattr(module, "weight", None)
    if callable(weight) and not isinstance(weight, nn.Parameter):
        try:
            value = weight()
        except Exception:  # noqa: BLE001 - modules without packed weights
            value = None
        if isinstance(value, torch.Tensor) and value.is_quantized:
            return {"weight": qtensor_record(value)}
    get_weight = getattr(module, "get_weight", None)  # dynamic LSTM/GRU
    if callable(get_weight):
        try:
            weights = get_weight()
        except Exception:  # noqa: BLE001
            weights = {}
        return {name: qtensor_record(w) for name, w in weights.items()
                if isinstance(w, torch.Tensor) and w.is_quantized}
    return {}


def converted_records(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per int8 layer of a converted model: its weight qparams and output scale / zero point."""
    result: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if not name or not is_int8_module(module) or type(module).__name__ == "LinearPackedParams":
            continue
        entry: dict[str, Any] = {"module_type": type(module).__name__}
        entry.update(_weight_records(module))
        if isinstance(getattr(module, "scale", None), (float, torch.Tensor)) and hasattr(module, "zero_point"):
            entry["_output_0"] = {"quant_bits": 8, "quant_dtype": "uint8", "quant_scheme": "per_tensor_affine",
                                  "scale": _floats(module.scale), "zero_point": _ints(module.zero_point)}
        if len(entry) > 1:
            result[name] = entry
    return result


def observed_records(prepared: fx.GraphModule, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Per layer of a calibrated ``prepare_fx`` model: the input and output observers' records."""
    modules = dict(prepared.named_modules(remove_duplicate=False))  # a ReLU called twice sits in a fused module too

    def observer_of(node: Any) -> nn.Module | None:
        if isinstance(node, fx.Node) and node.op == "call_module" and "activation_post_process" in str(node.target):
            return modules.get(str(node.target))
        return None

    result: dict[str, dict[str, Any]] = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or observer_of(node) is not None:
            continue
        target = str(node.target)
        entry: dict[str, Any] = {}
        inputs = [arg for arg in node.args if isinstance(arg, fx.Node)]
        for index, arg in enumerate(inputs):
            observer = observer_of(arg)
            record = observer_record(observer) if observer is not None else None
            if record:
                entry[f"_input_{index}"] = record
        outputs = [user for user in node.users if observer_of(user) is not None]
        if outputs:
            record = observer_record(observer_of(outputs[0]))
            if record:
                entry["_output_0"] = record
        if entry:
            entry["module_type"] = type(modules[target]).__name__
            result[f"{prefix}.{target}" if prefix else target] = entry
    return result


def merge_records(observed: Mapping[str, dict], converted: Mapping[str, dict]) -> dict[str, dict[str, Any]]:
    """Converted-model records (weights, int8 module type) completed with the observers' activation records."""
    result: dict[str, dict[str, Any]] = {}
    for name in list(converted) + [n for n in observed if n not in converted]:
        entry = dict(observed.get(name, {}))
        entry.update({k: v for k, v in converted.get(name, {}).items() if k != "_output_0" or k not in entry})
        result[name] = dict(sorted(entry.items(), key=lambda kv: (kv[0] != "module_type", kv[0])))
    return result


def export_calibration(source: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Write the quantization parameters of every int8 layer as JSON; return ``{"path", "layers", "bytes"}``.

    ``source``: a calibration config (``compress()``'s second result), a
    :class:`~compression_core.quantization.QuantizationReport`, a quantizer
    (anything with ``.calibration_config``), or a converted int8 model
    (weights and output scales only: inputs are known from the observers).

    Example::

        >>> export_calibration(quantizer, "out/calibration.json")["layers"]  # doctest: +SKIP
        21
    """
    if isinstance(source, nn.Module):
        config = converted_records(source)
    elif hasattr(source, "calibration_config"):
        config = source.calibration_config
    elif isinstance(source, Mapping):
        config = dict(source)
    else:
        raise ValueError("export_calibration takes a calibration config (dict), a quantization report, a quantizer "
                         f"or a converted int8 model, not {type(source).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2, sort_keys=False)
    path.write_text(text)
    return {"path": str(path), "layers": len(config), "bytes": len(text.encode())}
