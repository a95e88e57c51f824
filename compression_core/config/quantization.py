"""The quantization keys of an NNI ``config_list``: parsing, validation, per-layer settings.

NNI 2.x's keys, each a value for every quantized target or a dict per target:

- ``quant_types``: which tensors of a layer are quantized, among ``input``,
  ``weight`` and ``output``.
- ``quant_bits``: an int, or ``{"weight": 8, "input": 8}``.
- ``quant_dtype``: ``int`` (signed) or ``uint`` (unsigned); ``int8`` / ``uint8``
  (NNI 3.0's spelling) also set the bits.
- ``quant_scheme``: ``per_tensor_affine``, ``per_tensor_symmetric``,
  ``per_channel_affine`` or ``per_channel_symmetric`` (per-channel: weights only).
- ``granularity``: ``default`` (the scheme decides) or ``out_channel``
  (one scale per output channel of the weight).
- ``fuse_names``: groups of layers fused before quantization, e.g.
  ``[["conv1", "bn1", "relu1"]]``.

Defaults: 8 bits; weights signed, symmetric, one scale per output channel;
activations unsigned, affine, one scale per tensor.

Example::

    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> layers = resolve_layers(model, [{"op_types": ["Conv2d"], "quant_types": ["input", "weight", "output"],
    ...                                  "quant_bits": 8}])
    >>> sorted(layers), layers["0"].targets["weight"].scheme
    (['0', '2'], 'per_channel_symmetric')
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from .selection import PRUNING_KEYS, QUANTIZATION_KEYS, SELECTOR_KEYS, select_modules

QUANT_TYPES = ("input", "weight", "output")
QUANT_DTYPES = ("int", "uint")
QUANT_SCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")
QUANT_GRANULARITIES = ("default", "out_channel")

#: Layers a quantization config selects when it names no ``op_types``: the ones with int8 kernels.
DEFAULT_OP_TYPES = (
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear",
)
_ALLOWED_KEYS = frozenset(SELECTOR_KEYS + QUANTIZATION_KEYS + ("exclude",))


@dataclass(frozen=True)
class TargetSpec:
    """How one tensor of a layer (its input, weight or output) is quantized."""

    bits: int = 8
    dtype: str = "int"  # "int" | "uint"
    scheme: str = "per_tensor_affine"

    @property
    def per_channel(self) -> bool:
        return self.scheme.startswith("per_channel")

    @property
    def symmetric(self) -> bool:
        return self.scheme.endswith("symmetric")

    def as_dict(self) -> dict[str, Any]:
        return {"quant_bits": self.bits, "quant_dtype": f"{self.dtype}{self.bits}", "quant_scheme": self.scheme}


DEFAULT_WEIGHT = TargetSpec(8, "int", "per_channel_symmetric")
DEFAULT_ACTIVATION = TargetSpec(8, "uint", "per_tensor_affine")


@dataclass(frozen=True)
class LayerQuantSpec:
    """The quantization settings of one layer: ``targets`` maps each quant_type to its :class:`TargetSpec`."""

    targets: Mapping[str, TargetSpec] = field(default_factory=dict)
    entry: int = 0  # index of the config_list entry that chose these settings

    @property
    def quant_types(self) -> tuple[str, ...]:
        return tuple(t for t in QUANT_TYPES if t in self.targets)

    def key(self) -> tuple:
        return tuple(sorted((t, s.bits, s.dtype, s.scheme) for t, s in self.targets.items()))


def _where(index: int, key: str) -> str:
    return f"config_list[{index}]: '{key}'"


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _per_type(entry: Mapping[str, Any], key: str, index: int, quant_types: tuple[str, ...]) -> dict[str, Any]:
    """``entry[key]`` as ``{quant_type: value}`` (a single value applies to every quant_type)."""
    if key not in entry:
        return {}
    value = entry[key]
    if isinstance(value, Mapping):
        for target in value:
            if target not in QUANT_TYPES:
                raise ValueError(f"{_where(index, key)} has an unknown quant type {target!r}; "
                                 f"choose from {', '.join(QUANT_TYPES)}{_suggest(target, QUANT_TYPES)}")
            if target not in quant_types:
                raise ValueError(f"{_where(index, key)} sets {target!r}, which is not in quant_types "
                                 f"{list(quant_types)}; add it there or remove it here")
        return dict(value)
    return {target: value for target in quant_types}


def _bits(value: Any, index: int, target: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise ValueError(f"{_where(index, 'quant_bits')} for {target!r} must be an integer from 1 to 32, got {value!r}")
    return value


def _dtype(value: Any, index: int, target: str) -> tuple[str, int | None]:
    if isinstance(value, str):
        for base in ("uint", "int"):
            if value == base:
                return base, None
            if value.startswith(base) and value[len(base):].isdigit():
                return base, int(value[len(base):])
    raise ValueError(f"{_where(index, 'quant_dtype')} for {target!r} must be one of int, uint (or int8, uint8, ...), "
                     f"got {value!r}{_suggest(value, QUANT_DTYPES)}")


def _scheme(value: Any, index: int, target: str) -> str:
    if value not in QUANT_SCHEMES:
        raise ValueError(f"{_where(index, 'quant_scheme')} for {target!r} must be one of {', '.join(QUANT_SCHEMES)}, "
                         f"got {value!r}{_suggest(value, QUANT_SCHEMES)}")
    if value.startswith("per_channel") and target != "weight":
        raise ValueError(f"{_where(index, 'quant_scheme')}: {value} applies to weights only, not to the layer's "
                         f"{target}; use per_tensor_affine or per_tensor_symmetric for {target!r}")
    return value


def parse_entry(entry: Mapping[str, Any], index: int = 0, *,
                default_quant_types: Iterable[str] = QUANT_TYPES) -> LayerQuantSpec | None:
    """The :class:`LayerQuantSpec` of one config_list entry (``None`` for ``exclude: True``).

    Raises ``ValueError`` naming the entry and key for unknown keys, pruning
    keys, unknown quant types, schemes or dtypes, and bad bit widths.
    """
    if not isinstance(entry, Mapping):
        raise ValueError(f"config_list[{index}] must be a dict, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _ALLOWED_KEYS)
    if unknown:
        pruning = [k for k in unknown if k in PRUNING_KEYS]
        if pruning:
            raise ValueError(f"config_list[{index}]: {pruning[0]!r} is a pruning key; a quantization config takes "
                             f"{', '.join(QUANTIZATION_KEYS)}")
        raise ValueError(f"config_list[{index}]: unknown key {unknown[0]!r}; known keys are "
                         f"{', '.join(sorted(_ALLOWED_KEYS))}{_suggest(unknown[0], _ALLOWED_KEYS)}")
    if entry.get("exclude"):
        return None
    quant_types = entry.get("quant_types", list(default_quant_types))
    if isinstance(quant_types, str):
        quant_types = [quant_types]
    if not isinstance(quant_types, (list, tuple)) or not quant_types:
        raise ValueError(f"{_where(index, 'quant_types')} must be a non-empty list among {', '.join(QUANT_TYPES)}")
    for target in quant_types:
        if target not in QUANT_TYPES:
            raise ValueError(f"{_where(index, 'quant_types')} has an unknown entry {target!r}; choose from "
                             f"{', '.join(QUANT_TYPES)}{_suggest(target, QUANT_TYPES)}")
    quant_types = tuple(t for t in QUANT_TYPES if t in quant_types)

    bits = {t: _bits(v, index, t) for t, v in _per_type(entry, "quant_bits", index, quant_types).items()}
    dtypes = {}
    for target, value in _per_type(entry, "quant_dtype", index, quant_types).items():
        dtypes[target], dtype_bits = _dtype(value, index, target)
        if dtype_bits is not None:
            if target in bits and bits[target] != dtype_bits:
                raise ValueError(f"config_list[{index}]: quant_dtype {value!r} and quant_bits {bits[target]} "
                                 f"disagree for {target!r}")
            bits[target] = _bits(dtype_bits, index, target)
    schemes = {t: _scheme(v, index, t) for t, v in _per_type(entry, "quant_scheme", index, quant_types).items()}

    granularity = entry.get("granularity", "default")
    if granularity not in QUANT_GRANULARITIES:
        raise ValueError(f"{_where(index, 'granularity')} must be one of {', '.join(QUANT_GRANULARITIES)} for "
                         f"quantization (out_channel: one scale per output channel of the weight), got {granularity!r}")
    if granularity == "out_channel":
        if "weight" not in quant_types:
            raise ValueError(f"{_where(index, 'granularity')} out_channel needs 'weight' in quant_types")
        if "weight" in schemes and not schemes["weight"].startswith("per_channel"):
            raise ValueError(f"config_list[{index}]: granularity out_channel contradicts quant_scheme "
                             f"{schemes['weight']!r} for the weight; use per_channel_symmetric or per_channel_affine")

    targets = {}
    for target in quant_types:
        default = DEFAULT_WEIGHT if target == "weight" else DEFAULT_ACTIVATION
        scheme = schemes.get(target, default.scheme)
        if target == "weight" and granularity == "out_channel" and "weight" not in schemes:
            scheme = "per_channel_symmetric"
        targets[target] = TargetSpec(bits.get(target, default.bits), dtypes.get(target, default.dtype), scheme)
    return LayerQuantSpec(targets=targets, entry=index)


def parse_quant_config_list(config_list: Iterable[Mapping[str, Any]] | None, *,
                            default_quant_types: Iterable[str] = QUANT_TYPES) -> list[dict[str, Any]]:
    """Validate a quantization ``config_list``; return copies with ``op_types`` and ``quant_types`` defaulted.

    ``None`` means ``[{"op_types": DEFAULT_OP_TYPES}]`` (every Conv, ConvTranspose
    and Linear, 8 bits on ``default_quant_types``: input, weight and output).
    """
    if config_list is None:
        config_list = [{"op_types": list(DEFAULT_OP_TYPES)}]
    if isinstance(config_list, Mapping) or not isinstance(config_list, Iterable):
        raise ValueError("config_list must be a list of dicts")
    result = []
    for index, entry in enumerate(config_list):
        parse_entry(entry, index, default_quant_types=default_quant_types)
        entry = dict(entry)
        if not any(k in entry for k in ("op_types", "op_names", "op_names_re", "op_partial_names")):
            entry["op_types"] = list(DEFAULT_OP_TYPES)
        entry.setdefault("quant_types", [t for t in QUANT_TYPES if t in tuple(default_quant_types)])
        result.append(entry)
    return result


def fuse_groups(config_list: Iterable[Mapping[str, Any]], model: nn.Module) -> list[list[str]]:
    """Every ``fuse_names`` group of ``config_list``, checked against ``model``'s layer names."""
    names = {name for name, _ in model.named_modules() if name}
    groups: list[list[str]] = []
    for index, entry in enumerate(config_list):
        value = entry.get("fuse_names")
        if value is None:
            continue
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(group, (list, tuple)) and len(group) >= 2 and all(isinstance(n, str) for n in group)
            for group in value
        ):
            raise ValueError(f"{_where(index, 'fuse_names')} must be a list of layer-name lists, "
                             "e.g. [['conv1', 'bn1', 'relu1']]")
        for group in value:
            for name in group:
                if name not in names:
                    close = difflib.get_close_matches(name, sorted(names), n=3)
                    hint = f"; similar layer names: {', '.join(close)}" if close else ""
                    raise ValueError(f"{_where(index, 'fuse_names')}: {name!r} is not a layer of the model{hint}")
            groups.append(list(group))
    return groups


def resolve_layers(
    model: nn.Module,
    config_list: Iterable[Mapping[str, Any]] | None,
    *,
    supported_types: tuple[type, ...] | None = None,
) -> dict[str, LayerQuantSpec]:
    """``{layer_name: LayerQuantSpec}`` for every layer the config selects (NNI's rule: the last entry wins)."""
    entries = parse_quant_config_list(config_list)
    specs = [parse_entry(entry, index) for index, entry in enumerate(entries)]
    # select_modules understands the selector keys; give it the entry index to map back.
    tagged = [{**{k: v for k, v in e.items() if k in SELECTOR_KEYS or k == "exclude"}, "quant_types": ["weight"],
               "quant_bits": i} for i, e in enumerate(entries)]
    selected = select_modules(model, tagged, supported_types=supported_types)
    return {name: specs[settings["quant_bits"]] for name, settings in selected.items()}
