"""One registry of every compression algorithm and its parameter schema.

The web form, the API's validation and the README's algorithm table are all
generated from here. Third-party packages add algorithms through the
``condense.algorithms`` entry point group: each entry point names a callable
that receives the registry and calls :func:`register` on it.

Example::

    >>> spec = get_algorithm("L1NormPruner")
    >>> spec.kind, spec.needs_data
    ('pruning', False)
    >>> validate_params("L1NormPruner", {"config_list": [{"op_types": ["Conv2d"], "sparsity": 0.5}]})["config_list"]
    [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from .config import GRANULARITIES, canonicalize_config_list
from .evaluation.options import TRAINING_SCHEMA

ENTRY_POINT_GROUP = "condense.algorithms"


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    kind: str  # "pruning" | "quantization" | "analysis"
    description: str
    paper: str
    paper_url: str
    factory: Callable[..., Any]
    params_schema: dict[str, Any] = field(default_factory=dict)
    needs_data: bool = False
    granularity: str = "fine_grained"

    def constructor_kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The validated ``params`` the algorithm's class takes (all but the pipeline's own)."""
        return {k: v for k, v in params.items() if k not in PIPELINE_PARAMS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "paper": self.paper,
            "paper_url": self.paper_url,
            "params_schema": self.params_schema,
            "needs_data": self.needs_data,
            "granularity": self.granularity,
        }


_REGISTRY: dict[str, AlgorithmSpec] = {}
_entry_points_loaded = False


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"algorithm {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()(register)


def all_algorithms() -> list[AlgorithmSpec]:
    _load_entry_points()
    return sorted(_REGISTRY.values(), key=lambda spec: (spec.kind, spec.name))


def get_algorithm(name: str) -> AlgorithmSpec:
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def markdown_table() -> str:
    """The README's algorithm table, generated from the registry."""
    rows = ["| Name | Kind | What it does | Paper |", "|---|---|---|---|"]
    for spec in all_algorithms():
        rows.append(f"| {spec.name} | {spec.kind} | {spec.description} | [{spec.paper}]({spec.paper_url}) |")
    return "\n".join(rows)


# -- parameter validation -----------------------------------------------------
# A deliberately small JSON Schema subset (type, enum, minimum, maximum,
# exclusiveMaximum, items, properties, required, additionalProperties) is
# enough for algorithm parameters and keeps the engine free of extra deps.

_JSON_TYPES = {
    "object": Mapping,
    "array": (list, tuple),
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def _check(value: Any, schema: Mapping[str, Any], where: str) -> None:
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
            _check(item, schema["items"], f"{where}[{index}]")
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
                _check(value[key], sub, f"{where}.{key}" if where else key)


def _with_defaults(value: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``value`` with the schema's defaults filled in, nested objects included."""
    result = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in result and "default" in sub:
            result[key] = sub["default"]
        # An optional object with required keys (a stage such as "quantization") stays absent unless given.
        if sub.get("type") == "object" and "properties" in sub and (key in result or not sub.get("required")):
            result[key] = _with_defaults(result.get(key) or {}, sub)
    return result


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the algorithm's schema; return them with defaults
    filled in and ``config_list`` canonicalised. Raises ``ValueError``."""
    spec = get_algorithm(name)
    if not isinstance(params, Mapping):
        raise ValueError("params must be an object")
    _check(params, spec.params_schema, "params")
    result = _with_defaults(params, spec.params_schema)
    if spec.kind == "quantization":
        from .quantization.settings import parse_quant_config_list

        # Checked here (names the key), defaulted by each quantizer (its own default quant types).
        parse_quant_config_list(result.get("config_list"))
    elif "config_list" in result:
        result["config_list"] = canonicalize_config_list(result["config_list"])
    if result.get("quantization"):
        from .quantization_job import validate_quantize_after

        result["quantization"] = validate_quantize_after(result["quantization"])
    return result


# -- schema building blocks ---------------------------------------------------

NAME_LIST = {"type": "array", "items": {"type": "string"}}
RATIO = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}

# The keys that select layers, shared by the pruning and quantization config entries.
SELECTOR_PROPERTIES: dict[str, Any] = {
    "op_types": {**NAME_LIST, "description": "Layer types, e.g. Conv2d, Linear"},
    "op_names": {**NAME_LIST, "description": "Exact layer names"},
    "op_names_re": {**NAME_LIST, "description": "Regular expressions over layer names"},
    "exclude_op_names": NAME_LIST,
    "exclude_op_types": NAME_LIST,
    "exclude": {"type": "boolean"},
}

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

# Parameters the job pipeline uses itself; every other parameter goes to the algorithm's constructor.
PIPELINE_PARAMS = ("config_list", "dependency_aware", "training", "epochs", "quantization")


def pruning_schema(extra: Mapping[str, Any] | None = None, *, quantize_after: bool = True) -> dict[str, Any]:
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


def _register_builtins() -> None:
    from .pruning.catalog import register_builtin_pruners
    from .quantization.catalog import register_builtin_quantizers
    from .sensitivity_job import register_sensitivity_analysis

    register_builtin_pruners()
    register_sensitivity_analysis()
    register_builtin_quantizers()


_register_builtins()
