"""What a quantizer did to each layer, and the size of a model as saved.

Example::

    >>> quantizer = PostTrainingQuantizer(model, [{"op_types": ["Conv2d", "GroupNorm", "Linear"]}],
    ...                                   calibration_data=images, allow_float=True)  # doctest: +SKIP
    >>> model, _ = quantizer.compress()  # doctest: +SKIP
    >>> print(quantizer.report.summary())  # doctest: +SKIP
    static (x86): 2 layers quantized, 1 kept float, 0 fused; 1 calibration batches
      size: 8341 -> 7597 bytes (1.10x smaller)
      kept float: norm: the x86 backend has no static int8 kernel for GroupNorm
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class QuantizationReport:
    """Per-layer outcome of a quantizer.

    - ``quantized``: layer -> the int8 (or simulated) module type it became.
    - ``fused``: layers folded into a neighbour (BatchNorm, ReLU) that became int8.
    - ``kept_float``: selected layers left in float32, with the reason.
    - ``untraceable``: modules torch.fx cannot trace, with the error; their own
      code runs in float32 (their traceable children are quantized).
    """

    mode: str
    backend: str
    quantized: dict[str, str] = field(default_factory=dict)
    fused: list[str] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)
    untraceable: dict[str, str] = field(default_factory=dict)
    calibration_batches: int = 0
    float_bytes: int | None = None
    quantized_bytes: int | None = None
    calibration_config: dict[str, Any] = field(default_factory=dict)

    @property
    def compression_ratio(self) -> float | None:
        if not self.float_bytes or not self.quantized_bytes:
            return None
        return self.float_bytes / self.quantized_bytes

    def summary(self) -> str:
        lines = [f"{self.mode} ({self.backend}): {len(self.quantized)} layers quantized, "
                 f"{len(self.kept_float)} kept float, {len(self.fused)} fused; "
                 f"{self.calibration_batches} calibration batches"]
        if self.compression_ratio:
            lines.append(f"  size: {self.float_bytes} -> {self.quantized_bytes} bytes "
                         f"({self.compression_ratio:.2f}x smaller)")
        lines += [f"  kept float: {name}: {reason}" for name, reason in self.kept_float.items()]
        lines += [f"  not traceable: {name or '(the model)'}: {reason}" for name, reason in self.untraceable.items()]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what an int8 model's weights take on disk.

    int8 state_dicts (quantized tensors, packed weights) cannot go to
    safetensors; ``torch.load(path, weights_only=True)`` reads them back.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
