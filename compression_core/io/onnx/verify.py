"""Checking a converted model against onnxruntime: :func:`verify_onnx_conversion`.

Example::

    >>> module = load_model("resnet18.onnx")
    >>> verify_onnx_conversion("resnet18.onnx", module, atol=1e-4)
    3.1e-06
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ...tensors import flatten_tensors, module_device
from ..errors import ModelFormatError
from .read import display_name, random_onnx_inputs, short_error
from .runtime import onnx_session

__all__ = ["verify_onnx_conversion"]

PathLike = Union[str, os.PathLike]


def verify_onnx_conversion(
    onnx_path: PathLike,
    module: nn.Module,
    atol: float = 1e-4,
    *,
    rtol: float = 0.0,
    inputs: Optional[Sequence[Union[np.ndarray, torch.Tensor]]] = None,
    batch_size: int = 1,
    seed: int = 0,
) -> float:
    """Run ``module`` and onnxruntime on the same random input; return the max abs difference.

    ``inputs`` are the module's inputs; onnxruntime is also fed the values of the
    inputs fixed at import (``module.condense_fixed_inputs``).

    Raises :class:`ModelFormatError` when any output differs by more than
    ``atol + rtol * |onnxruntime output|`` or the output counts/shapes differ.

    Example::

        >>> module = load_model("resnet18.onnx")
        >>> verify_onnx_conversion("resnet18.onnx", module, atol=1e-4)
        3.1e-06
    """
    name = display_name(onnx_path)
    try:
        session = onnx_session(onnx_path)
    except Exception as exc:  # noqa: BLE001 - ORT's own error types
        raise ModelFormatError(f"{name} does not run in onnxruntime: {short_error(exc)}") from exc
    # Inputs fixed at import (load_model's fixed_inputs) are fed to onnxruntime only.
    fixed = getattr(module, "condense_fixed_inputs", None) or {}
    taken = [meta.name for meta in session.get_inputs() if meta.name not in fixed]
    if inputs is None:
        every = random_onnx_inputs(onnx_path, batch_size=batch_size, seed=seed)
        arrays = [a for meta, a in zip(session.get_inputs(), every) if meta.name not in fixed]
    else:
        arrays = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
    feed = {**dict(zip(taken, arrays)), **fixed}
    expected = session.run(None, feed)

    device = module_device(module)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            got = flatten_tensors(module(*[torch.from_numpy(np.array(a)).to(device) for a in arrays]))
    finally:
        module.train(was_training)

    if len(got) != len(expected):
        raise ModelFormatError(
            f"{name}: the converted model returns {len(got)} outputs, onnxruntime {len(expected)}"
        )
    worst = 0.0
    for index, (mine, ref) in enumerate(zip(got, expected)):
        mine = mine.detach().cpu().numpy()
        ref = np.asarray(ref)
        if mine.shape != ref.shape:
            raise ModelFormatError(
                f"{name}: output {index} has shape {list(mine.shape)} after conversion, "
                f"{list(ref.shape)} in onnxruntime"
            )
        if mine.size == 0:
            continue
        mine64, ref64 = mine.astype(np.float64), ref.astype(np.float64)
        same_nan = np.array_equal(np.isnan(mine64), np.isnan(ref64))
        diff = np.where(np.isnan(ref64) & np.isnan(mine64), 0.0, np.abs(mine64 - ref64))
        largest = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf")
        worst = max(worst, largest)
        if not same_nan or np.any(diff > atol + rtol * np.abs(np.nan_to_num(ref64))):
            raise ModelFormatError(
                f"{name}: the converted PyTorch model does not reproduce onnxruntime's output {index} "
                f"(max abs difference {largest:.3g} > {atol:g})"
            )
    return worst
