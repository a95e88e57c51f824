"""PyTorch -> ONNX export (TorchScript exporter), checked in onnxruntime: :func:`export_onnx`.

Also :func:`example_inputs_for`: random inputs of the shapes a model says it takes.

Example::

    >>> export_onnx(model, "model.onnx", torch.randn(1, 3, 224, 224))["max_abs_diff"] < 1e-4
    True
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ...tensors import flatten_tensors, module_device
from .runtime import onnx_session

__all__ = ["export_onnx", "example_inputs_for", "DEFAULT_OPSET"]

PathLike = Union[str, os.PathLike]
DEFAULT_OPSET = 17


def _as_tuple(example_inputs) -> Tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    if isinstance(example_inputs, tuple):
        return example_inputs
    raise TypeError(f"example_inputs must be a tensor or a tuple of tensors, not {type(example_inputs).__name__}")


def example_inputs_for(model: nn.Module, batch_size: int = 1) -> Optional[Tuple[torch.Tensor, ...]]:
    """Random example inputs from ``model.condense_input_shapes`` (set by load_model/build_architecture).

    Returns ``None`` when the model does not say what it takes or a non-batch
    dimension is unknown.

    Example::

        >>> example_inputs_for(build_architecture("digits_cnn"))[0].shape
        torch.Size([1, 1, 8, 8])
    """
    shapes = getattr(model, "condense_input_shapes", None)
    if not shapes:
        return None
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for shape in shapes:
        if not shape:
            return None
        dims = [batch_size if (d is None and i == 0) else d for i, d in enumerate(shape)]
        if any(d is None for d in dims):
            return None
        tensors.append(torch.randn(*dims, generator=generator).to(module_device(model)))
    return tuple(tensors)


def _batch_axes(model: nn.Module, count: int) -> List[int]:
    """Each input's batch axis: 0, but the one dynamic dim of an input whose imported ONNX declares a first dim
    fixed to more than 1 (a recurrent state ``[layers, N, hidden]``)."""
    shapes = getattr(model, "condense_input_shapes", None)
    if not shapes or len(shapes) != count:
        return [0] * count
    axes = []
    for shape in shapes:
        dynamic = [axis for axis, dim in enumerate(shape or []) if dim is None]
        state_like = bool(shape) and shape[0] is not None and shape[0] > 1 and len(dynamic) == 1
        axes.append(dynamic[0] if state_like else 0)
    return axes


def export_onnx(
    model: nn.Module,
    path: PathLike,
    example_inputs,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-3,
) -> dict:
    """Export ``model`` to ONNX (TorchScript exporter, constant folding, dynamic batch axis).

    The file is then loaded in onnxruntime and run on ``example_inputs``; a
    failure to load, or outputs further than ``atol`` from PyTorch's, raises
    ``RuntimeError``. Returns ``{"path", "bytes", "format": "onnx", "opset",
    "max_abs_diff"}``.

    Example::

        >>> export_onnx(model, "model.onnx", torch.randn(1, 3, 224, 224))["format"]
        'onnx'
    """
    path = Path(path)
    args = _as_tuple(example_inputs)
    device = module_device(model)
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            reference = [t.detach().cpu().numpy() for t in flatten_tensors(model(*args))]
        input_names = [f"input_{i}" if len(args) > 1 else "input" for i in range(len(args))]
        output_names = [f"output_{i}" if len(reference) > 1 else "output" for i in range(len(reference))]
        dynamic_axes = None
        if dynamic_batch:
            dynamic_axes = {name: {0: "batch"} for name in output_names}
            batch_axes = _batch_axes(model, len(args))
            dynamic_axes.update((name, {axis: "batch"}) for name, axis in zip(input_names, batch_axes))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)

    max_diff = None
    if check:
        max_diff = _check_in_onnxruntime(path, args, reference, atol)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "format": "onnx",
        "opset": opset,
        "max_abs_diff": max_diff,
    }


def _check_in_onnxruntime(path: Path, args: Sequence, reference: List[np.ndarray], atol: float) -> float:
    try:
        session = onnx_session(path)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"the exported ONNX model does not load in onnxruntime: {exc}") from exc
    feed = {
        meta.name: a.detach().cpu().numpy()
        for meta, a in zip(session.get_inputs(), [a for a in args if isinstance(a, torch.Tensor)])
    }
    outputs = session.run(None, feed)
    worst = 0.0
    scale = 1.0
    for mine, theirs in zip(reference, outputs):
        if mine.shape != theirs.shape:
            raise RuntimeError(f"onnxruntime output shape {theirs.shape} differs from PyTorch's {mine.shape}")
        if mine.size:
            worst = max(worst, float(np.max(np.abs(mine.astype(np.float64) - theirs.astype(np.float64)))))
            scale = max(scale, float(np.max(np.abs(mine.astype(np.float64)))))
    if worst > atol * scale:  # relative to the output magnitude once it exceeds 1
        raise RuntimeError(f"onnxruntime output differs from PyTorch by {worst:.3g} (> {atol:g})")
    return worst
