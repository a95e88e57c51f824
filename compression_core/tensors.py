"""Small helpers for the nested tensor structures models take and return."""

from __future__ import annotations

from typing import Any

import torch


def flatten_tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a tensor, tuple, list or dict (nested), in order.

    >>> [t.shape[0] for t in flatten_tensors((torch.ones(2), {"a": [torch.ones(3)]}, "x"))]
    [2, 3]
    """
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flatten_tensors(v)]
    return []


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor of a nested structure, or None."""
    tensors = flatten_tensors(value)
    return tensors[0] if tensors else None
