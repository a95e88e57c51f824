"""The registry entries of the built-in quantizers: names, papers, parameter schemas.

:func:`register_builtin_quantizers` is called from
``compression_core.registry._register_builtins``; the job pipeline runs them
through :mod:`compression_core.quantization_job`.
"""

from __future__ import annotations

from typing import Any

from ..evaluation.options import TRAINING_SCHEMA
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

# Options of every quantizer that trains (QAT, DoReFa, BNN): how long, and the job's training settings.
TRAINING_OPTIONS: dict[str, Any] = {
    "epochs": {"type": "integer", "minimum": 1, "default": 3,
               "description": "Epochs of quantization-aware training on the job's dataset"},
    "training": TRAINING_SCHEMA,
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
    from . import BNNQuantizer, DoReFaQuantizer, NaiveQuantizer, PostTrainingQuantizer, QATQuantizer

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
            **TRAINING_OPTIONS,
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
    register(AlgorithmSpec(
        name="DoReFaQuantizer", kind="quantization",
        description="Weights at 1 to 8 bits (DoReFa's tanh transform, one scale per layer), learnt by training "
                    "with straight-through gradients; simulated: the weights lie on the grid, stored in float32.",
        paper="Zhou et al., DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth "
              "Gradients (2016)",
        paper_url="https://arxiv.org/abs/1606.06160", factory=DoReFaQuantizer,
        params_schema=quantization_schema(TRAINING_OPTIONS), needs_data=True, granularity="per_layer",
    ))
    register(AlgorithmSpec(
        name="BNNQuantizer", kind="quantization",
        description="Binary (+1/-1) weights, and binary outputs of the layers a config entry gives "
                    "\"quant_types\": [\"output\"], learnt by training with straight-through gradients; simulated.",
        paper="Hubara, Courbariaux et al., Binarized Neural Networks (NeurIPS 2016)",
        paper_url="https://arxiv.org/abs/1602.02830", factory=BNNQuantizer,
        params_schema=quantization_schema(TRAINING_OPTIONS), needs_data=True, granularity="per_layer",
    ))
