"""What the model page and the API show of an uploaded model: input shape, layer table, totals, prunability."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..analysis import model_summary
from ..pruning.base import PRUNABLE_TYPES
from ..speedup import SpeedupError, prunability_report
from .recipe import ModelSource


def inspect_model(
    source: ModelSource, input_shape: list[int] | None = None, model: nn.Module | None = None
) -> dict[str, Any]:
    """Describe a model (loaded from ``source`` unless given): input shape, layer table, totals.

    Raises ``ValueError`` (``ModelFormatError`` is one) with a message fit for
    the user when the model cannot be loaded or run.

    Example::

        >>> summary = inspect_model(ModelSource(architecture="digits_cnn"))
        >>> summary["input_shape"], summary["prunable_layers"]
        ([1, 8, 8], ['conv1', 'conv2', 'fc1', 'fc2'])
    """
    model = model if model is not None else source.load()
    shape = list(input_shape) if input_shape else source.default_input_shape()
    if not shape:
        raise ValueError("the model's input shape is dynamic; give the input shape (e.g. [3, 224, 224])")
    example = torch.randn(1, *shape)
    try:
        summary = model_summary(model, example)
    except Exception as exc:
        raise ValueError(f"the model does not run on an input of shape {[1, *shape]}: {exc}") from exc
    summary["input_shape"] = shape
    summary["prunable_layers"] = [name for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    try:
        summary["prunability"] = prunability_report(model, example)
    except SpeedupError as exc:
        # Still a usable model (fine-grained pruning needs no graph); say why
        # channel pruning cannot be planned.
        summary["prunability"] = {"error": str(exc), "groups": [], "unprunable": [], "warnings": []}
    return summary
