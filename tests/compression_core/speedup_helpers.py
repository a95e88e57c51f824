"""Checks shared by the speedup tests."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of ``b``."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def onnx_output(model: nn.Module, x: torch.Tensor, path: Path) -> torch.Tensor:
    """Export ``model`` with Condense's exporter and run ``x`` through it in onnxruntime."""
    import onnxruntime as ort

    from compression_core.io import save_model

    save_model(model, path, example_inputs=x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)
