"""Building blocks of the built-in algorithms' parameter schemas.

A pruner's params: ``config_list`` (pruning entries), ``dependency_aware``,
``training`` (the evaluator and fine-tuning) and, optionally,
``quantization`` (a quantizer run on the pruned model). A quantizer's
params: ``config_list`` (quantization entries) and its own options.

Example::

    >>> schema = pruning_schema({"training_steps": {"type": "integer", "default": 100}})
    >>> schema["required"], sorted(schema["properties"])
    (['config_list'], ['config_list', 'dependency_aware', 'quantization', 'training', 'training_steps'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...config import CONFIG_ENTRY_SCHEMA, QUANT_CONFIG_ENTRY_SCHEMA
from ...evaluation import TRAINING_SCHEMA
from ...quantization.qconfig import BACKENDS

QUANTIZE_AFTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["algorithm"],
    "description": "Then quantize the pruned, fine-tuned, sped-up model with this quantizer and its params",
    "properties": {
        "algorithm": {"type": "string", "description": "A quantization algorithm, e.g. PostTrainingQuantizer"},
        "params": {"type": "object", "description": "That algorithm's params (its own schema)"},
    },
}

#: Options of every quantizer that converts to real int8 (PTQ and QAT).
INT8_OPTIONS: dict[str, Any] = {
    "backend": {"type": "string", "enum": list(BACKENDS), "default": "x86"},
    "allow_float": {"type": "boolean", "default": False,
                    "description": "Keep layers without an int8 kernel in float32 instead of failing"},
}

#: Options of every quantizer that trains (QAT, DoReFa, BNN): how long, and the job's training settings.
TRAINING_OPTIONS: dict[str, Any] = {
    "epochs": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 3,
               "description": "Epochs of quantization-aware training on the job's dataset"},
    "training": TRAINING_SCHEMA,
}


def pruning_schema(extra: Mapping[str, Any] | None = None, *, quantize_after: bool = True) -> dict[str, Any]:
    """A pruner's params schema: the shared keys plus ``extra`` (the pruner's own options)."""
    properties = {
        "config_list": {
            "type": "array",
            "items": CONFIG_ENTRY_SCHEMA,
            "description": "NNI config list selecting layers and their sparsity",
        },
        "dependency_aware": {
            "type": "boolean",
            "default": True,
            "description": "Prune coupled layers (residual adds, concat) with the same channels "
            "(for pruners that remove whole channels)",
        },
        "training": TRAINING_SCHEMA,
    }
    if quantize_after:
        properties["quantization"] = QUANTIZE_AFTER_SCHEMA
    properties.update(extra or {})
    return {"type": "object", "required": ["config_list"], "additionalProperties": False, "properties": properties}


def quantization_schema(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A quantizer's params schema: a quantization ``config_list`` plus ``extra`` (its own options)."""
    properties = {
        "config_list": {"type": "array", "items": QUANT_CONFIG_ENTRY_SCHEMA,
                        "description": "NNI config list selecting layers and their quantization settings"},
    }
    properties.update(extra or {})
    return {"type": "object", "additionalProperties": False, "properties": properties}
