"""The registry entries of the built-in quantizers: names, papers, parameter schemas.

Not registered yet: :func:`register_builtin_quantizers` is called from
``compression_core.registry._register_builtins`` once the job pipeline runs
quantization jobs (the job form offers every registered algorithm).
"""

from __future__ import annotations

from typing import Any

from ..registry import NAME_LIST, SELECTOR_PROPERTIES, AlgorithmSpec, register
from .qconfig import BACKENDS, OBSERVERS
from .settings import QUANT_DTYPES, QUANT_GRANULARITIES, QUANT_SCHEMES, QUANT_TYPES

_PER_TYPE_INT = {"type": "integer", "minimum": 1, "maximum": 32}

QUANT_CONFIG_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **SELECTOR_PROPERTIES,
        "quant_types": {"type": "array", "items": {"type": "string", "enum": list(QUANT_TYPES)},
                        "description": "Tensors to quantize: input, weight, output"},
        "quant_bits": {"description": "Bits (8 for real int8), or {quant_type: bits}"},
        "quant_dtype": {"description": f"{', '.join(QUANT_DTYPES)} (or int8/uint8), or {{quant_type: dtype}}"},
        "quant_scheme": {"description": f"{', '.join(QUANT_SCHEMES)}, or {{quant_type: scheme}}"},
        "granularity": {"type": "string", "enum": list(QUANT_GRANULARITIES)},
        "fuse_names": {"type": "array", "items": NAME_LIST,
                       "description": "Layer groups to fuse first, e.g. [[\"conv1\", \"bn1\", \"relu1\"]]"},
    },
}


# Options of every quantizer that converts to real int8 (PTQ and QAT).
INT8_OPTIONS: dict[str, Any] = {
    "backend": {"type": "string", "enum": list(BACKENDS), "default": "x86"},
    "allow_float": {"type": "boolean", "default": False,
                    "description": "Keep layers without an int8 kernel in float32 instead of failing"},
}

def quantization_schema(extra: dict[str, Any] | None = None, *, config_required: bool = False) -> dict[str, Any]:
    properties = {
        "config_list": {"type": "array", "items": QUANT_CONFIG_ENTRY_SCHEMA,
                        "description": "NNI config list selecting layers and their quantization settings"},
    }
    properties.update(extra or {})
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if config_required:
        schema["required"] = ["config_list"]
    return schema


JACOB = ("Jacob et al., Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only "
         "Inference (CVPR 2018)", "https://arxiv.org/abs/1712.05877")


def register_builtin_quantizers() -> None:
    from . import NaiveQuantizer, PostTrainingQuantizer, QATQuantizer

    register(AlgorithmSpec(
        name="PostTrainingQuantizer", kind="quantization",
        description="Post-training int8: static (activation ranges calibrated on data, per-channel weight scales, "
                    "Conv/Linear+BN+ReLU fused) or dynamic (Linear/LSTM weights, no data), converted to a real "
                    "int8 model on PyTorch's x86 kernels.",
        paper=JACOB[0], paper_url=JACOB[1], factory=PostTrainingQuantizer,
        params_schema=quantization_schema({
            "mode": {"type": "string", "enum": ["static", "dynamic"], "default": "static",
                     "description": "static: weights and activations int8 (needs data); dynamic: weights only"},
            **INT8_OPTIONS,
            "observer": {"type": "string", "enum": list(OBSERVERS), "default": "histogram",
                         "description": "How activation ranges are measured"},
            "max_calibration_batches": {"type": "integer", "minimum": 1,
                                        "description": "Calibration batches to use (default: all)"},
        }),
        needs_data=True, granularity="per_channel",
    ))
    register(AlgorithmSpec(
        name="QATQuantizer", kind="quantization",
        description="Quantization-aware training: fine-tunes with fake-quantized weights and activations "
                    "(BatchNorm folded into the convolutions), then converts to a real int8 model.",
        paper=JACOB[0], paper_url=JACOB[1], factory=QATQuantizer,
        params_schema=quantization_schema({
            "quant_start_step": {"type": "integer", "minimum": 0, "default": 0,
                                 "description": "Optimizer steps in float (ranges tracked) before fake "
                                                "quantization starts"},
            "freeze_bn_step": {"type": "integer", "minimum": 1,
                               "description": "Step after which BatchNorm statistics stop updating"},
            **INT8_OPTIONS,
        }),
        needs_data=True, granularity="per_channel",
    ))
    register(AlgorithmSpec(
        name="NaiveQuantizer", kind="quantization",
        description="Rounds the weights of the selected layers to an 8-bit grid (one scale per output channel), "
                    "no data; the model keeps its float structure and the scales are exported.",
        paper="NNI NaiveQuantizer (Microsoft NNI 2.x)",
        paper_url="https://nni.readthedocs.io/en/v2.10/compression/quantizer.html", factory=NaiveQuantizer,
        params_schema=quantization_schema(), needs_data=False, granularity="per_channel",
    ))
