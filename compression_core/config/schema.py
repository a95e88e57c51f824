"""A small JSON Schema subset for algorithm parameters, and the schemas of config_list entries.

The registry checks every job's params with :func:`check_schema` and fills
defaults with :func:`with_defaults`; the web form and the API documentation
read the same schemas. The subset (type, enum, minimum, maximum,
exclusiveMinimum, exclusiveMaximum, items, properties, required,
additionalProperties, default) covers algorithm parameters and keeps the
engine free of a JSON Schema dependency.

Example::

    >>> schema = {"type": "object", "properties": {"epochs": {"type": "integer", "minimum": 1, "default": 3}}}
    >>> check_schema({"epochs": 5}, schema, "params")
    >>> with_defaults({}, schema)
    {'epochs': 3}
    >>> check_schema({"epochs": 0}, schema, "params")
    Traceback (most recent call last):
    ValueError: params.epochs must be >= 1, got 0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .quantization import QUANT_DTYPES, QUANT_GRANULARITIES, QUANT_SCHEMES, QUANT_TYPES
from .selection import GRANULARITIES

_JSON_TYPES = {
    "object": Mapping,
    "array": (list, tuple),
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def check_schema(value: Any, schema: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` naming the key path (``where``) unless ``value`` fits ``schema``."""
    expected = schema.get("type")
    if expected:
        python_type = _JSON_TYPES[expected]
        wrong_bool = isinstance(value, bool) and expected in ("integer", "number")
        if wrong_bool or not isinstance(value, python_type):
            raise ValueError(f"{where} must be of type {expected}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{where} must be one of {', '.join(map(str, schema['enum']))}, got {value!r}")
    if "minimum" in schema and value < schema["minimum"]:
        raise ValueError(f"{where} must be >= {schema['minimum']}, got {value}")
    if "maximum" in schema and value > schema["maximum"]:
        raise ValueError(f"{where} must be <= {schema['maximum']}, got {value}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        raise ValueError(f"{where} must be > {schema['exclusiveMinimum']}, got {value}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        raise ValueError(f"{where} must be < {schema['exclusiveMaximum']}, got {value}")
    if expected == "array" and "items" in schema:
        for index, item in enumerate(value):
            check_schema(item, schema["items"], f"{where}[{index}]")
    if expected == "object":
        properties = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                raise ValueError(f"{where}: missing required key {key!r}")
        if schema.get("additionalProperties") is False:
            unknown = sorted(set(value) - set(properties))
            if unknown:
                raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(properties))}")
        for key, sub in properties.items():
            if key in value:
                check_schema(value[key], sub, f"{where}.{key}" if where else key)


def with_defaults(value: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``value`` with the schema's defaults filled in, nested objects included."""
    result = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in result and "default" in sub:
            result[key] = sub["default"]
        # An optional object with required keys (a stage such as "quantization") stays absent unless given.
        if sub.get("type") == "object" and "properties" in sub and (key in result or not sub.get("required")):
            result[key] = with_defaults(result.get(key) or {}, sub)
    return result


NAME_LIST = {"type": "array", "items": {"type": "string"}}
RATIO = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}

#: The keys that select layers, shared by the pruning and quantization config entries.
SELECTOR_PROPERTIES: dict[str, Any] = {
    "op_types": {**NAME_LIST, "description": "Layer types, e.g. Conv2d, Linear"},
    "op_names": {**NAME_LIST, "description": "Exact layer names"},
    "op_names_re": {**NAME_LIST, "description": "Regular expressions over layer names"},
    "exclude_op_names": NAME_LIST,
    "exclude_op_types": NAME_LIST,
    "exclude": {"type": "boolean"},
}

#: One entry of a pruning config_list.
CONFIG_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **SELECTOR_PROPERTIES,
        "sparse_ratio": {**RATIO, "description": "Fraction of weights/channels to remove"},
        "sparsity": {**RATIO, "description": "Alias of sparse_ratio (NNI 2.x)"},
        "max_sparse_ratio": RATIO,
        "min_sparse_ratio": RATIO,
        "granularity": {"type": "string", "enum": list(GRANULARITIES)},
        "dependency_group_id": {},
        "global_group_id": {},
    },
}

#: One entry of a quantization config_list.
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
