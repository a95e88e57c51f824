"""Model inputs batch by batch, from a tensor or an iterable of batches (a DataLoader).

Quantizers calibrate on them and trace the model with the first one.

Example::

    >>> import torch
    >>> batches = list(iter_batches(torch.rand(10, 3), batch_size=4))
    >>> [b[0].shape[0] for b in batches]
    [4, 4, 2]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

NO_DATA_MESSAGE = (
    "static int8 quantization measures activation ranges on data, and none was given: pass "
    "calibration_data=<a batch tensor, or an iterable of batches (a DataLoader)> or evaluator=<a TorchEvaluator>, "
    "or use mode='dynamic' (Linear/LSTM layers, no data needed)"
)


def _as_args(batch: Any) -> tuple:
    """The model's positional inputs in one batch: a tensor, or the first item of ``(inputs, labels)``."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, Mapping):
        raise ValueError("calibration batches must be tensors or (inputs, labels) tuples, not dicts")
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if isinstance(first, torch.Tensor):
            return (first,)
        if isinstance(first, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in first):
            return tuple(first)  # ((x1, x2), labels): a model with several inputs
    raise ValueError(f"cannot read model inputs from a calibration batch of type {type(batch).__name__}")


def iter_batches(data: Any, *, batch_size: int = 32, max_batches: int | None = None) -> Iterator[tuple]:
    """Yield the model's positional inputs batch by batch.

    ``data``: a tensor (split along dim 0 into ``batch_size`` rows), or an
    iterable of batches, each a tensor or ``(inputs, labels)`` as a DataLoader
    yields them. Stops after ``max_batches``.

    Example::

        >>> [args[0].shape[0] for args in iter_batches(torch.rand(10, 3), batch_size=4)]
        [4, 4, 2]
    """
    if data is None:
        raise ValueError(NO_DATA_MESSAGE)
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise ValueError("calibration_data is an empty tensor; give at least one sample (dim 0 is the batch)")
        source: Iterable = (data[i:i + batch_size] for i in range(0, data.shape[0], batch_size))
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        source = data
    else:
        raise ValueError(f"calibration_data must be a tensor or an iterable of batches, not {type(data).__name__}")
    count = 0
    for batch in source:
        if max_batches is not None and count >= max_batches:
            return
        yield _as_args(batch)
        count += 1
    if count == 0:
        raise ValueError("calibration_data yielded no batches; " + NO_DATA_MESSAGE.split(": ", 1)[1])


def first_batch(data: Any = None, evaluator: Any = None, *, batch_size: int = 32) -> tuple:
    """One batch of inputs, for tracing: from ``data``, else the evaluator's ``dummy_input``.

    ``evaluator``: anything with a ``dummy_input`` attribute (a
    :class:`~compression_core.TorchEvaluator`), or ``None``.

    Example::

        >>> [t.shape for t in first_batch(torch.rand(10, 3), batch_size=4)]
        [torch.Size([4, 3])]
    """
    if data is not None:
        return next(iter_batches(data, batch_size=batch_size, max_batches=1))
    if evaluator is not None and evaluator.dummy_input is not None:
        return _as_args(evaluator.dummy_input)
    if evaluator is not None:
        raise ValueError("the evaluator has no dummy_input: give TorchEvaluator(..., dummy_input=<one batch>) or "
                         "calibration_data, so the model can be traced")
    raise ValueError(NO_DATA_MESSAGE)
