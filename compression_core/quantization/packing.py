"""Weights on a low-bit grid, stored at their bit width: what makes a simulated quantizer's file smaller.

Naive, DoReFa and BNN leave float32 weights whose values lie on a grid
``scale * (q - zero_point)``, ``q`` an integer in ``[quant_min, quant_max]``
(their ``calibration_config`` says which). :func:`save_packed` stores each
such weight as its codes ``q - quant_min``, ``bits`` bits each, packed into
bytes, plus the grid; every other tensor (biases, BatchNorm, layers left
float) stays float32. :func:`load_packed` gives back the float state_dict,
equal to the model's within float rounding. Nothing runs faster: the
kernels are float32 ones. A 2-bit DoReFa model's weights take a sixteenth
of their float32 bytes.

The file is safetensors (no code in it): ``<name>.codes`` uint8 tensors and,
in the metadata under ``condense.packed``, JSON with each weight's shape,
bits and grid.

Example::

    >>> model, calibration_config = NaiveQuantizer(model).compress()  # doctest: +SKIP
    >>> save_packed(model, calibration_config, "model.packed.safetensors")["bytes"]  # doctest: +SKIP
    41263
    >>> model.load_state_dict(load_packed("model.packed.safetensors"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

METADATA_KEY = "condense.packed"
CODES_SUFFIX = ".codes"


def _grid(record: Mapping[str, Any], shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point broadcast to a weight of ``shape`` (per channel along ``axis`` where lists)."""
    scale = torch.as_tensor(record["scale"], dtype=torch.float64)
    zero_point = torch.as_tensor(record["zero_point"], dtype=torch.float64)
    if scale.dim() == 0:
        return scale, zero_point
    view = [1] * len(shape)
    view[record.get("axis", 0)] = -1
    return scale.reshape(view), zero_point.reshape(view)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes below ``2**bits`` as a flat bit stream, most significant bit first, in uint8 bytes."""
    planes = (codes.reshape(-1, 1).astype(np.uint16) >> np.arange(bits - 1, -1, -1, dtype=np.uint16)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1))


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(packed)[: count * bits].reshape(count, bits).astype(np.uint16)
    return (planes << np.arange(bits - 1, -1, -1, dtype=np.uint16)).sum(axis=1)


def save_packed(model: nn.Module, calibration_config: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Write ``model``'s state_dict with every weight the config describes packed at its bit width.

    Raises ``ValueError`` when a weight is not on the grid its record
    describes (it was changed after quantization). Returns ``{"path",
    "bytes", "packed": {tensor name: bits}}``.
    """
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    for layer, record in calibration_config.items():
        weight_record = record.get("weight") if isinstance(record, Mapping) else None
        name = f"{layer}.weight" if layer else "weight"
        if not weight_record or name not in state:
            continue
        weight = state.pop(name).to(torch.float64)
        bits = int(weight_record["quant_bits"])
        scale, zero_point = _grid(weight_record, tuple(weight.shape))
        exact = weight / scale + zero_point
        codes = torch.round(exact)
        if (exact - codes).abs().max() > 1e-3:
            raise ValueError(f"{name} is not on the {bits}-bit grid of its calibration record; was the model changed "
                             "after quantization?")
        codes = (codes - weight_record.get("quant_min", 0)).clamp(0, 2**bits - 1).to(torch.int64).numpy()
        tensors[name + CODES_SUFFIX] = torch.from_numpy(_pack(codes, bits))
        layout[name] = {key: weight_record[key] for key in ("scale", "zero_point", "quant_min", "axis")
                        if key in weight_record}
        layout[name].update({"bits": bits, "shape": list(weight.shape), "dtype": str(model.state_dict()[name].dtype)})
    tensors.update(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", METADATA_KEY: json.dumps(layout)})
    return {"path": str(path), "bytes": path.stat().st_size,
            "packed": {name: entry["bits"] for name, entry in layout.items()}}


def load_packed(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The float state_dict of a :func:`save_packed` file (load it with ``model.load_state_dict``)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if METADATA_KEY not in metadata:
            raise ValueError(f"{Path(path).name} holds no packed weights (no {METADATA_KEY!r} metadata)")
        layout = json.loads(metadata[METADATA_KEY])
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    for name, entry in layout.items():
        packed = state.pop(name + CODES_SUFFIX).numpy()
        count = int(np.prod(entry["shape"]))
        codes = torch.from_numpy(_unpack(packed, entry["bits"], count).astype(np.int64)).reshape(entry["shape"])
        scale, zero_point = _grid(entry, tuple(entry["shape"]))
        weight = (codes.to(torch.float64) + entry.get("quant_min", 0) - zero_point) * scale
        state[name] = weight.to(getattr(torch, entry["dtype"].removeprefix("torch.")))
    return state
