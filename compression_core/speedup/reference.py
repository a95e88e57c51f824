"""The masked reference model: what speedup's result must compute exactly.

:func:`masked_reference` returns a copy of the model in which the masks are
applied to the weights and every channel that speedup removes is zero on
*every* value that carries it (convolution outputs, normalisation outputs,
the inputs of the consumers, residual sums, ...). Speedup's result computes
the same function, up to float32 rounding: the test suite checks it on every
model of the coverage list. Where a normalisation mixes channels (LayerNorm
over channels, GroupNorm) the sped-up model normalises over the kept
channels only, so it differs from this reference by design.

Example::

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)).eval()
    >>> keep = torch.tensor([1.0, 0, 1, 0])
    >>> masks = {"0": {"weight": keep.view(4, 1, 1, 1).expand(4, 3, 1, 1)}}
    >>> ref = masked_reference(model, torch.rand(1, 3, 8, 8), masks)
    >>> x = torch.rand(1, 3, 8, 8)
    >>> expected = ref(x)
    >>> _ = ModelSpeedup(model, torch.rand(1, 3, 8, 8), masks).speedup_model()
    >>> bool(torch.allclose(model(x), expected, atol=1e-6))
    True
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..dependency.channels import Layout
from ..tensors import get_tensor
from .speedup import ModelSpeedup


class _ZeroingInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, keep: dict[fx.Node, Any]):
        super().__init__(gm, garbage_collect_values=True)
        self.keep = keep

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        keep = self.keep.get(n)
        return result if keep is None else _apply(result, keep)


def _apply(value: Any, keep: Any) -> Any:
    if isinstance(keep, tuple) and len(keep) == 2 and isinstance(keep[0], int):
        dim, vec = keep
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > dim \
                and value.shape[dim] == vec.numel():
            shape = [1] * value.dim()
            shape[dim] = -1
            return value * vec.to(device=value.device, dtype=value.dtype).view(shape)
        return value
    if isinstance(keep, list) and isinstance(value, (tuple, list)) and len(keep) == len(value):
        out = [_apply(v, k) if k is not None else v for v, k in zip(value, keep)]
        return type(value)(out)
    return value


class MaskedReference(nn.Module):
    """A module running the traced graph with removed channels zeroed (see :func:`masked_reference`)."""

    def __init__(self, graph_module: fx.GraphModule, keep: dict[fx.Node, Any], removed_channels: int):
        super().__init__()
        self.graph_module = graph_module
        self._keep = keep
        self.removed_channels = removed_channels

    def forward(self, *args: Any) -> Any:
        return _ZeroingInterpreter(self.graph_module, self._keep).run(*args)


def masked_reference(model: nn.Module, dummy_input: Any, masks: Any, **speedup_options: Any) -> MaskedReference:
    """The masked model that ``ModelSpeedup(model, dummy_input, masks)`` must reproduce.

    ``model`` is not modified (the reference works on a deep copy). The
    reference applies ``masks`` to the weights and multiplies every graph
    value that carries a channel speedup removes by zero at that channel.
    ``removed_channels`` on the result counts the removed channel classes.
    Call it with positional inputs, like the traced model.
    """
    ref = copy.deepcopy(model)
    speedup = ModelSpeedup(ref, dummy_input, masks, **speedup_options)
    analysis = speedup.analyze()
    uf, removed = analysis.uf, speedup.removed
    with torch.no_grad():
        for name, mask in speedup.masks.items():
            module = ref.get_submodule(name)
            for pname, pmask in mask.items():
                tensor = get_tensor(module, pname)
                tensor.mul_(pmask.to(device=tensor.device, dtype=tensor.dtype))

    cache: dict[int, torch.Tensor | None] = {}

    def keep_of(lay: Any) -> Any:
        if isinstance(lay, Layout):
            key = id(lay.ids)
            if key not in cache:
                flags = [uf.find(x) not in removed for x in lay.ids]
                cache[key] = None if all(flags) else torch.tensor(flags, dtype=torch.float32)
            vec = cache[key]
            return None if vec is None else (lay.dim, vec)
        if isinstance(lay, (tuple, list)):
            inner = [keep_of(v) for v in lay]
            return inner if any(k is not None for k in inner) else None
        return None

    keep: dict[fx.Node, Any] = {}
    if removed:
        for node, lay in analysis.layouts.items():
            k = keep_of(lay)
            if k is not None:
                keep[node] = k
    return MaskedReference(analysis.graph_module, keep, len(removed))
