"""Simulated ("fake") quantization of a tensor onto an integer grid of any width.

The simulated quantizers (Naive, and later QAT/DoReFa/BNN) keep float
tensors whose values lie on the grid ``scale * (q - zero_point)``, ``q``
an integer in ``[quant_min, quant_max]``; any bit width is allowed.

Example::

    >>> import torch
    >>> w = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]])
    >>> q, scale, zero_point = fake_quantize(w, TargetSpec(8, "int", "per_channel_symmetric"))
    >>> [round(s, 5) for s in scale.tolist()], zero_point.tolist()
    ([0.00787, 0.01575], [0, 0])
"""

from __future__ import annotations

import torch

from ..config.quantization import TargetSpec


def grid_range(setting: TargetSpec) -> tuple[int, int]:
    """``(quant_min, quant_max)``; symmetric signed grids drop the most negative value (NNI's ``/127``)."""
    bits = setting.bits
    if setting.dtype == "uint":
        return 0, 2**bits - 1
    if setting.symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def qparams(tensor: torch.Tensor, setting: TargetSpec, *, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point covering ``tensor`` (per channel along ``axis`` for per-channel schemes)."""
    data = tensor.detach().to(torch.float32)
    if setting.per_channel and data.dim() > 0:
        flat = data.transpose(0, axis).reshape(data.shape[axis], -1)
        low, high = flat.min(dim=1).values, flat.max(dim=1).values
    else:
        low, high = data.min().reshape(1), data.max().reshape(1)
    low, high = torch.clamp(low, max=0.0), torch.clamp(high, min=0.0)
    quant_min, quant_max = grid_range(setting)
    eps = torch.finfo(torch.float32).eps
    if setting.symmetric:
        bound = torch.maximum(-low, high)
        if setting.dtype == "uint":
            scale = torch.clamp(2 * bound / (quant_max - quant_min), min=eps)
            zero_point = torch.full_like(scale, (quant_min + quant_max + 1) // 2, dtype=torch.int64)
        else:
            scale = torch.clamp(bound / quant_max, min=eps)
            zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        scale = torch.clamp((high - low) / (quant_max - quant_min), min=eps)
        zero_point = torch.clamp(quant_min - torch.round(low / scale), quant_min, quant_max).to(torch.int64)
    return scale, zero_point


def fake_quantize(tensor: torch.Tensor, setting: TargetSpec, *, axis: int = 0,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tensor rounded to the grid, scale, zero_point)``; the first has ``tensor``'s dtype and shape."""
    scale, zero_point = qparams(tensor, setting, axis=axis)
    quant_min, quant_max = grid_range(setting)
    shape = [1] * tensor.dim()
    if setting.per_channel and tensor.dim() > 0:
        shape[axis] = -1
    s = scale.reshape(shape) if shape else scale.reshape(())
    z = zero_point.reshape(shape).to(torch.float32) if shape else zero_point.reshape(()).to(torch.float32)
    data = tensor.detach().to(torch.float32)
    q = torch.clamp(torch.round(data / s) + z, quant_min, quant_max)
    return ((q - z) * s).to(tensor.dtype), scale, zero_point
