"""NNI's ``NaiveQuantizer``: weights to 8 bits, no data, simulated.

Each selected layer's weight is replaced by its value on the integer grid
(``scale * q``, ``q`` an 8-bit integer); the model keeps its structure and
float dtype, and the scales are returned (and kept in
:attr:`NaiveQuantizer.calibration_config`) for a backend that stores ``q``.

NNI 2.x used one scale per layer (``max|w| / 127``) and truncated toward
zero. Here the default is one scale per output channel and round-to-nearest
(a smaller error, the grid is the same); ``"quant_scheme":
"per_tensor_symmetric"`` gives NNI's per-layer scale. Being simulated, other
widths (``quant_bits`` 2..8) and affine schemes are accepted too.

Example::

    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    >>> model, calibration_config = NaiveQuantizer(model, [{"op_types": ["Conv2d", "Linear"],
    ...                                                     "quant_types": ["weight"], "quant_bits": 8}]).compress()
    >>> calibration_config["0"]["weight"]["quant_scheme"], len(calibration_config["0"]["weight"]["scale"])
    ('per_channel_symmetric', 8)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from .report import QuantizationReport
from ..config.quantization import parse_quant_config_list, resolve_layers
from .simulated import fake_quantize, grid_range

MAX_BITS = 8


def _weight_axis(module: nn.Module) -> int:
    """The output-channel axis of a weight: 1 for transposed convolutions, else 0."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


class NaiveQuantizer:
    """Round the weights of the selected layers to an 8-bit grid (in place); no data needed.

    ``compress()`` returns ``(model, calibration_config)`` where
    ``calibration_config[layer]["weight"]`` holds ``quant_bits``,
    ``quant_dtype``, ``quant_scheme``, ``scale``, ``zero_point`` and ``axis``.
    """

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]] | None = None):
        self.model = model
        self.config_list = parse_quant_config_list(config_list, default_quant_types=("weight",))
        self.layers = resolve_layers(model, self.config_list)
        if not self.layers:
            raise ValueError("config_list selects no layer of the model; check op_types / op_names")
        modules = dict(model.named_modules())
        for name, spec in self.layers.items():
            where = f"config_list[{spec.entry}]"
            extra = [t for t in spec.quant_types if t != "weight"]
            if extra:
                raise ValueError(f"{where}: NaiveQuantizer quantizes weights only (NNI's NaiveQuantizer); remove "
                                 f"{', '.join(map(repr, extra))} from quant_types, or use PostTrainingQuantizer "
                                 "for activations")
            if not spec.targets:
                raise ValueError(f"{where}: quant_types must include 'weight'")
            bits = spec.targets["weight"].bits
            if not 2 <= bits <= MAX_BITS:
                raise ValueError(f"{where}: NaiveQuantizer takes quant_bits from 2 to {MAX_BITS} for the weight, "
                                 f"got {bits}")
            weight = getattr(modules[name], "weight", None)
            if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
                raise ValueError(f"{where}: layer {name!r} ({type(modules[name]).__name__}) has no float weight to "
                                 "quantize; select layers such as Conv2d or Linear")
        self.report = QuantizationReport(mode="naive (simulated)", backend="none")

    @property
    def calibration_config(self) -> dict[str, Any]:
        return self.report.calibration_config

    @torch.no_grad()
    def compress(self) -> tuple[nn.Module, dict[str, Any]]:
        """Round the weights in place; return ``(model, calibration_config)``."""
        modules = dict(self.model.named_modules())
        config: dict[str, Any] = {}
        for name, spec in self.layers.items():
            module = modules[name]
            setting = spec.targets["weight"]
            axis = _weight_axis(module)
            rounded, scale, zero_point = fake_quantize(module.weight, setting, axis=axis)
            module.weight.copy_(rounded)
            quant_min, quant_max = grid_range(setting)
            per_channel = setting.per_channel
            record = {**setting.as_dict(), "quant_min": quant_min, "quant_max": quant_max,
                      "scale": scale.tolist() if per_channel else float(scale[0]),
                      "zero_point": zero_point.tolist() if per_channel else int(zero_point[0])}
            if per_channel:
                record["axis"] = axis
            config[name] = {"module_type": type(module).__name__, "weight": record}
            self.report.quantized[name] = type(module).__name__
        self.report.calibration_config = config
        return self.model, config
