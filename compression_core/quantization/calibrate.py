"""Calibration: run a model that holds observers over data, so they record activation ranges.

The data is a tensor, an iterable of batches (:func:`compression_core.data.iter_batches`
reads both), or a :class:`~compression_core.TorchEvaluator`.

Example::

    >>> observed = prepare_fx(model, qconfig_mapping, (torch.rand(1, 3),))  # observers inserted
    >>> calibrate(observed, torch.rand(10, 3), batch_size=4)   # batches of 4, 4 and 2
    3
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..data import NO_DATA_MESSAGE, iter_batches
from ..evaluation import TorchEvaluator


def calibrate(model: nn.Module, data: Any = None, evaluator: TorchEvaluator | None = None, *,
              batch_size: int = 32, max_batches: int | None = None, max_steps: int | None = None) -> int:
    """Run ``model`` (holding observers) over the calibration inputs; return the number of batches/steps.

    With an evaluator: its ``evaluating_func`` when it has one (eval mode, no
    gradients), else ``max_steps`` steps of its training loop with the
    optimizer step skipped.
    """
    if data is not None:
        # Not evaluation's inference loop: observers need every input of multi-input batches, and no outputs.
        count = 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for args in iter_batches(data, batch_size=batch_size, max_batches=max_batches):
                    model(*args)
                    count += 1
        finally:
            model.train(was_training)
        return count
    if evaluator is not None:
        if evaluator.evaluating_func is not None:
            evaluator.evaluate(model)
            return 1
        return evaluator.train(model, max_steps=max_steps or 10, update_weights=False)
    raise ValueError(NO_DATA_MESSAGE)
