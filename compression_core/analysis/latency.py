"""Latency measurement.

Example::

    >>> import torch, torch.nn as nn
    >>> result = measure_latency(nn.Linear(8, 4), torch.rand(1, 8), runs=5, batch_size=16)
    >>> result["batch_size"], result["runs"], result["median_ms"] > 0
    (16, 5, True)
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn as nn

from ..tensors import first_tensor, to_device


def _rebatch(value: Any, batch_size: int) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] == 0:
            return value
        index = torch.arange(batch_size, device=value.device) % value.shape[0]
        return value.index_select(0, index)
    if isinstance(value, (tuple, list)):
        return type(value)(_rebatch(v, batch_size) for v in value)
    if isinstance(value, dict):
        return {k: _rebatch(v, batch_size) for k, v in value.items()}
    return value


def _batch_of(value: Any) -> int | None:
    tensor = first_tensor(value)
    return int(tensor.shape[0]) if tensor is not None and tensor.dim() > 0 else None


def measure_latency(
    model: nn.Module,
    example_input: Any,
    *,
    warmup: int = 3,
    runs: int = 10,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Time ``model(example_input)`` in eval mode under ``torch.inference_mode``.

    ``batch_size`` repeats the example along dim 0 to that many rows. The
    model is moved to ``device`` for the measurement and moved back (and its
    train/eval mode restored) afterwards. Returns ``{"median_ms", "p10_ms",
    "p90_ms", "runs", "batch_size", "device"}``.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    if warmup < 0:
        raise ValueError("warmup must be >= 0")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    try:
        original = next(model.parameters()).device
    except StopIteration:
        original = None
    inputs = example_input
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        inputs = _rebatch(inputs, batch_size)
    inputs = to_device(inputs, dev)
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    flags = {m: m.training for m in model.modules()}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times: list[float] = []
    try:
        model.to(dev).eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(*args)
            sync()
            for _ in range(runs):
                start = time.perf_counter()
                model(*args)
                sync()
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        for m, flag in flags.items():
            m.training = flag
        if original is not None:
            model.to(original)
    if len(times) > 1:
        deciles = statistics.quantiles(times, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = times[0]
    return {
        "median_ms": float(statistics.median(times)),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "runs": runs,
        "batch_size": batch_size if batch_size is not None else _batch_of(inputs),
        "device": str(dev),
    }
