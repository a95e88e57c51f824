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


def get_tensor(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """Parameter or buffer ``name`` of ``module``; dotted names (``"out_proj.weight"``) reach into children."""
    owner_name, _, attr = name.rpartition(".")
    try:
        owner = module.get_submodule(owner_name) if owner_name else module
    except AttributeError:
        return None
    value = owner._parameters.get(attr)
    if value is None:
        value = owner._buffers.get(attr)
    return value


def masked_data(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``tensor`` (detached) times ``mask``, or unchanged without a mask."""
    data = tensor.detach()
    if mask is None:
        return data
    return data * mask.to(device=data.device, dtype=data.dtype)


def to_device(value: Any, device: torch.device | str) -> Any:
    """The tensors of a tensor, tuple, list or dict (nested) moved to ``device``; anything else as it is.

    >>> to_device({"x": [torch.ones(1)], "n": 3}, "cpu")["x"][0].device
    device(type='cpu')
    """
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple takes its fields one by one
        return type(value)(*(to_device(v, device) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
