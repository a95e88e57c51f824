"""PowerOfTwoQuantizer: weights rounded to signed powers of two (logarithmic quantization), simulated.

With ``quant_bits`` b, each output channel keeps a sign and ``2^(b-1) - 1``
exponents below its largest weight's, or zero: 4 bits give
``±{2^e, 2^(e-1), ..., 2^(e-6)}`` and 0. A multiplication by such a weight
is a shift, which is why hardware without multipliers likes them. The
rounding is nearest in the log domain (``round(log2 |w|)``), and a weight
below half the smallest level becomes zero.

Built on Condense's :class:`~compression_core.quantization.NaiveQuantizer`,
which selects and checks the layers (weights only, no data) and keeps the
report; this class only replaces the rounding. The calibration record
describes the linear integer grid that holds every level (scale: the
smallest level; ``2^(b-1)`` bits), which is how the job's packed file
stores the weights.

Example::

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 2))
    >>> model, config = PowerOfTwoQuantizer(model, [{"op_types": ["Linear"], "quant_bits": 3}]).compress()
    >>> w = model[0].weight[model[0].weight != 0].abs()
    >>> bool((torch.log2(w) == torch.log2(w).round()).all()), config["0"]["weight"]["quant_bits"]
    (True, 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from compression_core.quantization import NaiveQuantizer

MIN_BITS, MAX_BITS, DEFAULT_BITS = 2, 4, 4


def _output_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def power_of_two(weight: torch.Tensor, bits: int, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` rounded to signed powers of two per slice along ``axis``; and each slice's smallest exponent.

    Example::

        >>> power_of_two(torch.tensor([[1.0, -0.3, 0.1, 0.01]]), bits=2)[0].tolist()   # one level: ±1, or 0
        [[1.0, 0.0, 0.0, 0.0]]
    """
    levels = 2 ** (bits - 1) - 1
    moved = weight.detach().movedim(axis, 0)
    magnitude = moved.abs().double()
    largest = magnitude.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    top = torch.log2(largest).round()
    bottom = top - (levels - 1)
    shape = (-1,) + (1,) * (moved.dim() - 1)
    exponent = torch.log2(magnitude).round().clamp(bottom.view(shape), top.view(shape))
    rounded = torch.sign(moved.double()) * torch.exp2(exponent)
    rounded[magnitude < torch.exp2(bottom - 1).view(shape)] = 0.0
    return rounded.movedim(0, axis).to(weight.dtype), bottom


class PowerOfTwoQuantizer(NaiveQuantizer):
    """Round the weights of the selected layers to signed powers of two (in place); no data needed.

    Config entries without ``quant_bits`` get 4. ``compress()`` returns
    ``(model, calibration_config)`` as :class:`NaiveQuantizer` does.
    """

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]] | None = None):
        config_list = [{"quant_bits": DEFAULT_BITS, **entry} for entry in (config_list or [{}])]
        super().__init__(model, config_list)
        for name, spec in self.layers.items():
            bits = spec.targets["weight"].bits
            if not MIN_BITS <= bits <= MAX_BITS:
                raise ValueError(f"config_list[{spec.entry}]: PowerOfTwoQuantizer takes quant_bits from {MIN_BITS} "
                                 f"to {MAX_BITS} (a sign and 2^(bits-1)-1 exponents), got {bits} for {name!r}")
        self.report.mode = "power of two (simulated)"

    @torch.no_grad()
    def compress(self) -> tuple[nn.Module, dict[str, Any]]:
        """Round the weights in place; return ``(model, calibration_config)``."""
        modules = dict(self.model.named_modules())
        config: dict[str, Any] = {}
        for name, spec in self.layers.items():
            module, bits = modules[name], spec.targets["weight"].bits
            axis = _output_axis(module)
            rounded, bottom = power_of_two(module.weight, bits, axis)
            module.weight.copy_(rounded)
            # Every level is an integer multiple of the smallest: a signed grid of 2^(bits-1) bits holds them all.
            storage_bits = 2 ** (bits - 1)
            config[name] = {"module_type": type(module).__name__, "weight": {
                "quant_bits": storage_bits, "quant_dtype": f"int{storage_bits}",
                "quant_scheme": "per_channel_symmetric", "power_of_two_bits": bits,
                "quant_min": -(2 ** (storage_bits - 1)), "quant_max": 2 ** (storage_bits - 1) - 1,
                "scale": torch.exp2(bottom).tolist(), "zero_point": [0] * len(bottom), "axis": axis,
            }}
            self.report.quantized[name] = type(module).__name__
        self.report.calibration_config = config
        return self.model, config
