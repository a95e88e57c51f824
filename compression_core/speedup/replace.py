"""Building smaller copies of layers: the per-layer cut functions.

Every function returns a *new* module object (a shallow copy of the old one
with new parameters and sizes); the old module is not modified, so a caller
can compute all replacements first and swap them in only when everything
succeeded. Forward/backward hooks are not carried over (a pruner's masking
hook would no longer fit the new shapes).

Example::

    >>> import torch.nn as nn
    >>> conv = nn.Conv2d(4, 8, 3)
    >>> small = cut_module(conv, kept_out=[0, 2, 5], kept_in=[1, 3])
    >>> small.weight.shape, small.in_channels, small.out_channels
    (torch.Size([3, 2, 3, 3]), 2, 3)
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..dependency import SpeedupError
from ..dependency.graph import LAYER_TYPES
from ..models.attention import ATTENTION_TYPES, attention_dims, attention_sizes
from ..tensors import masked_data
from .attention import cut_attention

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)

# module class -> cutter(module, kept_out, kept_in, mask) -> new module
MODULE_CUTTERS: dict[type, Any] = {}


def register_module_cutter(module_type: type, cutter: Any) -> None:
    """Tell speedup how to resize modules of ``module_type`` (and subclasses).

    ``cutter(module, kept_out, kept_in, mask)`` gets the kept output and input
    channel indices (lists of ints, or ``None`` for "all") and the module's
    NNI mask dict (or ``None``) and returns a *new* module (the old one must
    not be modified; :func:`shallow_copy` and :func:`cut_tensor` help). Pair
    it with :func:`~compression_core.speedup.register_channel_rule`.
    """
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise ValueError(f"register_module_cutter needs an nn.Module subclass, got {module_type!r}")
    if not callable(cutter):
        raise ValueError(f"a module cutter must be callable, got {cutter!r}")
    MODULE_CUTTERS[module_type] = cutter


def cutter_for(module: nn.Module) -> Any:
    for cls in type(module).__mro__:
        if cls in MODULE_CUTTERS:
            return MODULE_CUTTERS[cls]
    return None


def is_cuttable(module: nn.Module) -> bool:
    # the built-in layers: those the tracer keeps whole, so that their weights stay where cut_module finds them
    return isinstance(module, LAYER_TYPES) or cutter_for(module) is not None


def shallow_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing tensors but with its own parameter/buffer dicts and no hooks."""
    new = copy.copy(module)
    new._parameters = type(module._parameters)(module._parameters)
    new._buffers = type(module._buffers)(module._buffers)
    new._modules = type(module._modules)(module._modules)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    for attr in _HOOK_DICTS:
        if attr in module.__dict__:
            setattr(new, attr, OrderedDict())
    if "_is_full_backward_hook" in module.__dict__:
        new._is_full_backward_hook = None
    return new


def _select(tensor: torch.Tensor, dim: int, kept: Sequence[int] | None) -> torch.Tensor:
    if kept is None or len(kept) == tensor.shape[dim]:
        return tensor
    index = torch.as_tensor(list(kept), dtype=torch.long, device=tensor.device)
    return tensor.index_select(dim, index)


def _set_param(new: nn.Module, name: str, old: torch.Tensor | None, value: torch.Tensor) -> None:
    if old is None:
        return
    value = value.contiguous()
    if value.data_ptr() == old.data_ptr():
        value = value.clone()  # never share storage with the module being replaced
    if name in new._parameters:
        new._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        new._buffers[name] = value


def apply_masks(module: nn.Module, mask: Mapping[str, torch.Tensor] | None) -> nn.Module:
    """A copy of ``module`` whose parameters are multiplied by ``mask`` (shapes unchanged).

    Dotted names (``"out_proj.weight"``) mask a child's parameter (the child is copied too).
    """
    new = shallow_copy(module)
    nested: dict[str, dict[str, torch.Tensor]] = {}
    for pname, pmask in (mask or {}).items():
        if "." in pname:
            child, _, rest = pname.partition(".")
            nested.setdefault(child, {})[rest] = pmask
            continue
        old = module._parameters.get(pname)
        if old is None:
            old = module._buffers.get(pname)
        if old is None or pmask is None:
            continue
        _set_param(new, pname, old, masked_data(old, pmask))
    for child, sub in nested.items():
        old_child = module._modules.get(child)
        if old_child is not None:
            new._modules[child] = apply_masks(old_child, sub)
    return new


def module_sizes(module: nn.Module) -> dict[str, int]:
    """The size attributes a plan records for ``module``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups}
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return {"num_features": module.num_features}
    if isinstance(module, nn.PReLU):
        return {"num_parameters": module.num_parameters}
    if isinstance(module, nn.LayerNorm):
        return {"normalized_shape": list(module.normalized_shape)}
    if isinstance(module, nn.GroupNorm):
        return {"num_channels": module.num_channels, "num_groups": module.num_groups}
    if isinstance(module, nn.Embedding):
        return {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim}
    if isinstance(module, ATTENTION_TYPES):
        return attention_sizes(module)
    return {}


def cut_module(
    module: nn.Module,
    kept_out: Sequence[int] | None = None,
    kept_in: Sequence[int] | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A copy of ``module`` keeping output channels ``kept_out`` and input channels ``kept_in``.

    ``mask`` (NNI format, ``{"weight": ..., "bias": ...}``) is multiplied into
    the weights before they are cut. For a depthwise convolution
    (groups == in == out channels) and for norm layers only ``kept_out`` is
    used, and it applies to both sides. ``None`` keeps everything.
    """
    mask = dict(mask or {})
    cutter = cutter_for(module)
    if cutter is not None:
        return cutter(module, kept_out, kept_in, mask or None)
    if isinstance(module, nn.modules.conv._ConvNd):
        return _cut_conv(module, kept_out, kept_in, mask)
    if isinstance(module, nn.Linear):
        new = shallow_copy(module)
        w = _select(_select(masked_data(module.weight, mask.get("weight")), 0, kept_out), 1, kept_in)
        _set_param(new, "weight", module.weight, w)
        if module.bias is not None:
            _set_param(new, "bias", module.bias, _select(masked_data(module.bias, mask.get("bias")), 0, kept_out))
        new.out_features = w.shape[0]
        new.in_features = w.shape[1]
        return new
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        new = shallow_copy(module)
        for pname in ("weight", "bias", "running_mean", "running_var"):
            old = getattr(module, pname, None)
            if isinstance(old, torch.Tensor) and old.dim() == 1:
                _set_param(new, pname, old, _select(masked_data(old, mask.get(pname)), 0, kept_out))
        if kept_out is not None:
            new.num_features = len(kept_out)
        return new
    if isinstance(module, nn.PReLU):
        new = shallow_copy(module)
        _set_param(new, "weight", module.weight, _select(masked_data(module.weight, mask.get("weight")), 0, kept_out))
        new.num_parameters = new.weight.shape[0]
        return new
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        new = shallow_copy(module)
        for pname in ("weight", "bias"):
            old = getattr(module, pname, None)
            if isinstance(old, torch.Tensor):
                _set_param(new, pname, old, _select(masked_data(old, mask.get(pname)), 0, kept_out))
        if kept_out is not None:
            if isinstance(module, nn.LayerNorm):
                if len(module.normalized_shape) != 1:
                    raise SpeedupError("speedup can only resize a LayerNorm over one dimension")
                new.normalized_shape = (len(kept_out),)
            else:
                if len(kept_out) % module.num_groups:
                    raise SpeedupError(
                        f"GroupNorm with {module.num_groups} groups cannot keep {len(kept_out)} channels"
                    )
                new.num_channels = len(kept_out)
        return new
    if isinstance(module, ATTENTION_TYPES):
        # all heads kept (speedup cuts heads with .attention.cut_attention); kept_in: the query channels
        if kept_out is None and kept_in is None:
            return apply_masks(module, mask)
        return cut_attention(module, range(attention_dims(module)[1]), mask, kept_out=kept_out, kept_in=kept_in)
    if isinstance(module, nn.Embedding):
        new = shallow_copy(module)
        w = _select(masked_data(module.weight, mask.get("weight")), 1, kept_out)
        _set_param(new, "weight", module.weight, w)
        new.embedding_dim = w.shape[1]
        return new
    raise SpeedupError(f"speedup cannot resize a {type(module).__name__}")


def _cut_conv(module: nn.modules.conv._ConvNd, kept_out, kept_in, mask) -> nn.Module:
    new = shallow_copy(module)
    transposed = bool(module.transposed)
    groups = module.groups
    w = masked_data(module.weight, mask.get("weight"))
    depthwise = groups > 1 and groups == module.in_channels == module.out_channels
    if depthwise:  # weight (channels, 1, *k), transposed or not
        w = _select(w, 0, kept_out)
        new.in_channels = new.out_channels = new.groups = w.shape[0]
    elif groups == 1:
        out_dim, in_dim = (1, 0) if transposed else (0, 1)
        w = _select(_select(w, out_dim, kept_out), in_dim, kept_in)
        new.out_channels = w.shape[out_dim]
        new.in_channels = w.shape[in_dim]
    elif kept_out is not None and len(kept_out) != module.out_channels or kept_in is not None and len(kept_in) != module.in_channels:
        if transposed:  # weight (in, out/groups, *k): the same blocks with the roles of the dims swapped
            w = _cut_grouped(w, groups, module.in_channels, module.out_channels, kept_in, kept_out)
            new.in_channels = w.shape[0]
            new.out_channels = w.shape[1] * groups
        else:
            w = _cut_grouped(w, groups, module.out_channels, module.in_channels, kept_out, kept_in)
            new.out_channels = w.shape[0]
            new.in_channels = w.shape[1] * groups
    _set_param(new, "weight", module.weight, w)
    if module.bias is not None:
        _set_param(new, "bias", module.bias, _select(masked_data(module.bias, mask.get("bias")), 0, kept_out))
    return new


def _per_group_local(kept: Sequence[int] | None, total: int, groups: int) -> torch.Tensor:
    """Kept indices as a (groups, kept_per_group) tensor of indices local to each group."""
    per = total // groups
    index = torch.arange(total) if kept is None else torch.as_tensor(sorted(kept), dtype=torch.long)
    group_of = index // per
    counts = torch.bincount(group_of, minlength=groups)
    if index.numel() == 0 or bool((counts != counts[0]).any()):
        raise SpeedupError(
            f"a grouped convolution (groups={groups}) must keep the same number of channels in every group, "
            f"got {counts.tolist()}"
        )
    return (index - group_of * per).view(groups, -1)


def _cut_grouped(w: torch.Tensor, groups: int, rows: int, cols: int, kept_rows, kept_cols) -> torch.Tensor:
    """Weight (rows, cols/groups, *k) of a grouped conv cut to per-group uniform kept channels.

    A convolution's rows are its output channels, a transposed one's its input channels.
    """
    row_idx = _per_group_local(kept_rows, rows, groups)
    col_idx = _per_group_local(kept_cols, cols, groups)
    w = w.reshape(groups, rows // groups, cols // groups, *w.shape[2:])
    g = torch.arange(groups)[:, None, None]
    w = w[g, row_idx[:, :, None], col_idx[:, None, :]]  # (groups, rows_kept, cols_kept, *k)
    return w.reshape(-1, *w.shape[2:])


def output_rows(module: nn.Module, tensor: torch.Tensor, out_dim: int) -> torch.Tensor:
    """``tensor`` (shaped like ``module``'s weight) as one row per output channel.

    ``out_dim`` is the weight dim that indexes output channels. A grouped
    ConvTranspose's weight is (in, out/groups, *k): its output channel
    ``g * out/groups + j`` is column ``j`` of group ``g``'s input rows.

    Example::

        >>> conv = nn.ConvTranspose2d(4, 6, 1, groups=2)
        >>> output_rows(conv, conv.weight, 1).shape
        torch.Size([6, 2])
    """
    if isinstance(module, nn.modules.conv._ConvTransposeNd) and module.groups > 1:
        groups = module.groups
        blocks = tensor.reshape(groups, tensor.shape[0] // groups, *tensor.shape[1:])  # (g, in/g, out/g, *k)
        return blocks.transpose(1, 2).reshape(groups * tensor.shape[1], -1)
    return tensor.transpose(0, out_dim).reshape(tensor.shape[out_dim], -1)


def cut_tensor(tensor: torch.Tensor, dim: int, kept: Sequence[int]) -> torch.Tensor:
    """``tensor`` restricted to indices ``kept`` along ``dim`` (Parameters stay Parameters)."""
    value = _select(tensor.detach(), dim, kept).contiguous()
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(value, requires_grad=tensor.requires_grad)
    return value


def module_references(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """For every module object (by id), each (parent, attribute) holding it."""
    refs: dict[int, list[tuple[nn.Module, str]]] = {}
    for _, parent in model.named_modules(remove_duplicate=False):
        for attr, child in parent._modules.items():
            if child is not None:
                entry = refs.setdefault(id(child), [])
                if not any(p is parent and a == attr for p, a in entry):
                    entry.append((parent, attr))
    return refs


def set_attr_tensor(owner: nn.Module, attr: str, value: Any) -> None:
    """Replace a parameter or buffer of ``owner`` keeping its kind."""
    if attr in owner._parameters:
        owner._parameters[attr] = value if isinstance(value, nn.Parameter) or value is None else nn.Parameter(value)
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        setattr(owner, attr, value)
