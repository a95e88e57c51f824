"""Parsing and validation of NNI-style ``config_list`` entries.

A config list is a list of dicts. Each dict selects layers (``op_types``,
``op_names``, ``op_names_re``, minus ``exclude_op_names`` /
``exclude_op_types``) and says what to do with them (``sparse_ratio``,
``granularity``, ...). Later entries override earlier ones for the layers they
select; an entry with ``exclude: True`` removes its layers from compression,
as in NNI 2.x.

Example::

    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3))
    >>> selected = select_modules(model, [{"op_types": ["Conv2d"], "sparsity": 0.5}])
    >>> sorted(selected), selected["0"]["sparse_ratio"]
    (['0', '2'], 0.5)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch.nn as nn

SELECTOR_KEYS = (
    "op_types",
    "op_names",
    "op_names_re",
    "exclude_op_names",
    "exclude_op_types",
    "op_partial_names",
)
PRUNING_KEYS = (
    "sparse_ratio",
    "sparsity",
    "sparsity_per_layer",
    "total_sparsity",
    "max_sparse_ratio",
    "max_sparsity_per_layer",
    "min_sparse_ratio",
    "granularity",
    "dependency_group_id",
    "global_group_id",
    "target_names",
    "exclude",
)
QUANTIZATION_KEYS = (
    "quant_dtype",
    "quant_scheme",
    "quant_bits",
    "quant_types",
    "fuse_names",
    "granularity",
)
KNOWN_KEYS = frozenset(SELECTOR_KEYS + PRUNING_KEYS + QUANTIZATION_KEYS)

# NNI 2.x spellings mapped to the NNI 3.0 key this module works with.
SPARSITY_ALIASES = ("sparsity", "sparsity_per_layer", "sparse_ratio")
MAX_SPARSITY_ALIASES = ("max_sparsity_per_layer", "max_sparse_ratio")
GRANULARITIES = ("default", "out_channel", "in_channel", "fine_grained")

# Names that NNI configs use for layer types, mapped to torch classes' names.
_OP_TYPE_ALIASES = {"default": ("Conv1d", "Conv2d", "Conv3d", "Linear")}


def _as_name_list(entry: Mapping[str, Any], key: str, index: int) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"config_list[{index}]: '{key}' must be a list of strings, got {value!r}")
    return list(value)


def _ratio(entry: Mapping[str, Any], key: str, index: int) -> float:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"config_list[{index}]: '{key}' must be a number in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"config_list[{index}]: '{key}' must be in [0, 1), got {value}")
    return float(value)


def canonicalize_config_list(config_list: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate ``config_list`` and return a copy with NNI 3.0 key names.

    Raises ``ValueError`` naming the entry and key for unknown keys, wrong
    types, ratios outside [0, 1) and entries that select nothing.
    """
    if isinstance(config_list, Mapping) or not isinstance(config_list, Iterable):
        raise ValueError("config_list must be a list of dicts")
    result = []
    for index, entry in enumerate(config_list):
        if not isinstance(entry, Mapping):
            raise ValueError(f"config_list[{index}] must be a dict, got {type(entry).__name__}")
        unknown = sorted(set(entry) - KNOWN_KEYS)
        if unknown:
            raise ValueError(
                f"config_list[{index}]: unknown key {unknown[0]!r}; "
                f"known keys are {', '.join(sorted(KNOWN_KEYS))}"
            )
        canonical: dict[str, Any] = {}
        for key in SELECTOR_KEYS:
            names = _as_name_list(entry, key, index)
            if names:
                canonical[key] = names
        for pattern in canonical.get("op_names_re", []):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"config_list[{index}]: bad regular expression in 'op_names_re': {pattern!r} ({exc})") from None
        if not any(key in canonical for key in ("op_types", "op_names", "op_names_re", "op_partial_names")):
            raise ValueError(f"config_list[{index}]: select layers with 'op_types', 'op_names' or 'op_names_re'")

        sparsity_keys = [k for k in SPARSITY_ALIASES if k in entry]
        if len(sparsity_keys) > 1:
            raise ValueError(f"config_list[{index}]: give only one of {', '.join(sparsity_keys)} (they are aliases)")
        if sparsity_keys:
            canonical["sparse_ratio"] = _ratio(entry, sparsity_keys[0], index)
        if "total_sparsity" in entry:
            canonical["total_sparsity"] = _ratio(entry, "total_sparsity", index)
        max_keys = [k for k in MAX_SPARSITY_ALIASES if k in entry]
        if max_keys:
            canonical["max_sparse_ratio"] = _ratio(entry, max_keys[0], index)
        if "min_sparse_ratio" in entry:
            canonical["min_sparse_ratio"] = _ratio(entry, "min_sparse_ratio", index)

        if "granularity" in entry:
            granularity = entry["granularity"]
            if granularity not in GRANULARITIES and not isinstance(granularity, list):
                raise ValueError(
                    f"config_list[{index}]: 'granularity' must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"
                )
            canonical["granularity"] = granularity
        for key in ("dependency_group_id", "global_group_id"):
            if key in entry:
                if isinstance(entry[key], bool) or not isinstance(entry[key], (int, str)):
                    raise ValueError(f"config_list[{index}]: '{key}' must be an int or a string")
                canonical[key] = entry[key]
        if "exclude" in entry:
            if not isinstance(entry["exclude"], bool):
                raise ValueError(f"config_list[{index}]: 'exclude' must be true or false")
            canonical["exclude"] = entry["exclude"]
        for key in QUANTIZATION_KEYS + ("target_names",):
            if key in entry and key not in canonical:
                canonical[key] = entry[key]

        if not canonical.get("exclude") and not any(
            k in canonical for k in ("sparse_ratio", "total_sparsity", "quant_dtype", "quant_bits", "quant_types")
        ):
            raise ValueError(
                f"config_list[{index}]: say how much to prune with 'sparse_ratio' (alias 'sparsity'), "
                "or mark the entry 'exclude': true"
            )
        result.append(canonical)
    return result


def _type_matches(module: nn.Module, op_types: list[str]) -> bool:
    names = set()
    for op_type in op_types:
        names.update(_OP_TYPE_ALIASES.get(op_type, (op_type,)))
    return type(module).__name__ in names


def _entry_selects(name: str, module: nn.Module, entry: Mapping[str, Any]) -> bool:
    if "op_types" in entry and not _type_matches(module, entry["op_types"]):
        return False
    by_name = "op_names" in entry or "op_names_re" in entry or "op_partial_names" in entry
    if by_name:
        hit = name in entry.get("op_names", ())
        hit = hit or any(re.fullmatch(p, name) for p in entry.get("op_names_re", ()))
        hit = hit or any(p in name for p in entry.get("op_partial_names", ()))
        if not hit:
            return False
    if name in entry.get("exclude_op_names", ()):
        return False
    if "exclude_op_types" in entry and _type_matches(module, entry["exclude_op_types"]):
        return False
    return True


def select_modules(
    model: nn.Module,
    config_list: Iterable[Mapping[str, Any]],
    *,
    supported_types: tuple[type, ...] | None = None,
    strict_names: bool = True,
) -> dict[str, dict[str, Any]]:
    """Resolve ``config_list`` against ``model``.

    Returns ``{module_name: settings}`` where settings is the merged,
    canonical config of the last entry selecting the module (NNI's rule).
    ``supported_types`` limits selection to the layer types a compressor can
    handle. With ``strict_names`` an ``op_names`` entry that names no layer of
    the model, or names a layer of an unsupported type, is a ``ValueError``.
    """
    entries = canonicalize_config_list(config_list)
    modules = dict(model.named_modules())
    modules.pop("", None)
    if strict_names:
        for index, entry in enumerate(entries):
            for name in entry.get("op_names", ()):
                if name not in modules:
                    close = [n for n in modules if name.split(".")[-1] in n][:5]
                    hint = f"; similar layer names: {', '.join(close)}" if close else ""
                    raise ValueError(f"config_list[{index}]: 'op_names' entry {name!r} matches no layer of the model{hint}")
                if supported_types and not isinstance(modules[name], supported_types):
                    raise ValueError(
                        f"config_list[{index}]: layer {name!r} is a {type(modules[name]).__name__}, "
                        f"which this algorithm cannot compress (supported: "
                        f"{', '.join(t.__name__ for t in supported_types)})"
                    )
    selected: dict[str, dict[str, Any]] = {}
    for name, module in modules.items():
        if supported_types and not isinstance(module, supported_types):
            continue
        for entry in entries:
            if _entry_selects(name, module, entry):
                if entry.get("exclude"):
                    selected.pop(name, None)
                else:
                    merged = {k: v for k, v in entry.items() if k not in SELECTOR_KEYS}
                    selected[name] = merged
    return selected
