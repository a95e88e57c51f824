"""The algorithms page: every registered algorithm (built-in or plugin) with its guidance and parameters.

Everything shown comes from the registry (``compression_core.algorithms``):
a plugin's algorithm appears here as soon as it is registered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from compression_core.algorithms import AlgorithmKind, AlgorithmSpec, all_algorithms

KIND_TITLES = {
    AlgorithmKind.PRUNING: ("Pruning", "A smaller model: weights or whole channels removed."),
    AlgorithmKind.QUANTIZATION: ("Quantization", "Fewer bits per weight (and activation): real int8 or simulated."),
    AlgorithmKind.ANALYSIS: ("Analysis", "Measurements only, no compressed model."),
}
BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


@login_required
def algorithm_list(request):
    algorithms = all_algorithms()
    groups = []
    for kind, (title, lead) in KIND_TITLES.items():
        members = [_algorithm_view(spec) for spec in algorithms if spec.kind == kind]
        if members:
            groups.append({"kind": kind.value, "title": title, "lead": lead, "algorithms": members})
    return render(request, "dashboard/algorithm_list.html", {"groups": groups, "count": len(algorithms)})


def _algorithm_view(spec: AlgorithmSpec) -> dict[str, Any]:
    required = set(spec.params_schema.get("required", ()))
    properties = spec.params_schema.get("properties", {})
    return {
        "spec": spec,
        "data": _data_needs(spec),
        "origin": "built-in" if spec.is_builtin else f"plugin ({spec.factory.__module__.split('.')[0]})",
        "params": [_param_row(name, schema, name in required) for name, schema in properties.items()],
    }


def _data_needs(spec: AlgorithmSpec) -> str:
    if not spec.needs_data:
        return "No data: it works on the model's weights alone."
    text = "Needs a dataset (its train split)"
    if spec.trains:
        text += ": it trains for its own epochs"
    if spec.data_free_when:
        condition = ", ".join(f"{key} = {json.dumps(value)}" for key, value in spec.data_free_when.items())
        text += f"; none when {condition}"
    return text + "."


def _param_row(name: str, schema: Mapping[str, Any], required: bool) -> dict[str, Any]:
    return {
        "name": name,
        "type": _type_label(schema),
        "required": required,
        "default": json.dumps(schema["default"]) if "default" in schema else "",
        "allowed": _allowed(schema),
        "description": schema.get("description", ""),
    }


def _type_label(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "any")
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        item = schema["items"]
        return f"array of {'objects' if item.get('type') == 'object' else item.get('type', 'any')}"
    return kind


def _allowed(schema: Mapping[str, Any]) -> str:
    """The enum or range of a value (of each item for arrays)."""
    if schema.get("type") == "array" and isinstance(schema.get("items"), Mapping):
        inner = _allowed(schema["items"])
        return f"each {inner}" if inner else ""
    if "enum" in schema:
        return ", ".join(json.dumps(choice) for choice in schema["enum"])
    return ", ".join(f"{sign} {_number(schema[key])}" for key, sign in BOUNDS if key in schema)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
