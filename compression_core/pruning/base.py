"""Mask machinery shared by every pruner.

A pruner attaches a forward pre-hook to each selected layer that multiplies
the layer's weight (and bias) by its mask before the layer runs, so a pruned
weight stays zero through training. ``unwrap_model`` removes the hooks and
leaves the masked values in the weights, which is what ``ModelSpeedup``
expects to find.

Masks are NNI's format: ``{module_name: {"weight": Tensor, "bias": Tensor}}``
with float tensors of 0.0 (pruned) and 1.0 (kept) shaped like the parameter.
An ``nn.MultiheadAttention`` layer's mask names its own parameters, dotted
for its child: ``{"in_proj_weight": ..., "in_proj_bias": ..., "out_proj.weight":
...}`` (see :mod:`compression_core.models.attention`). An attention
layer's ``out_proj`` may be pruned too (its rows: the layer's output
channels, e.g. a ViT's residual stream); its mask is applied by a hook on
the attention layer, which uses ``out_proj``'s weights without calling it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..config import select_modules
from ..models.attention import ATTENTION_TYPES, is_attention, unsupported_reason
from ..tensors import get_tensor

Masks = dict[str, dict[str, torch.Tensor]]

PRUNABLE_TYPES: tuple[type, ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    *ATTENTION_TYPES,  # nn.MultiheadAttention (and PrunedMultiheadAttention): whole heads
)


def out_channel_dim(module: nn.Module) -> int:
    """The weight dimension that indexes output channels."""
    return 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0


class Pruner:
    """Base class: select layers from ``config_list``, compute masks, apply them.

    Subclasses implement :meth:`_compute_masks`. ``compress()`` returns
    ``(model, masks)`` as NNI 3.0 does.
    """

    supported_types: tuple[type, ...] = PRUNABLE_TYPES
    # Whether the job pipeline should compute dependency groups for its channel masks
    # (a pruner that finds the coupled layers itself says no).
    uses_dependency_groups = True

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]]):
        self.bound_model = model
        self.config_list = list(config_list)
        self.targets = select_modules(model, self.config_list, supported_types=self.supported_types)
        for name, settings in self.targets.items():
            if "sparse_ratio" not in settings:
                raise ValueError(f"layer {name!r}: its config entry has no 'sparse_ratio' (alias 'sparsity')")
        for name in self.targets:
            module = model.get_submodule(name)
            if isinstance(module, ATTENTION_TYPES):
                why = unsupported_reason(module)
                if why is not None:
                    raise ValueError(f"layer {name!r} ({type(module).__name__}) cannot be pruned: {why}")
        if not self.targets:
            raise ValueError(
                "config_list selects no layer this pruner can prune "
                f"(it prunes {', '.join(t.__name__ for t in self.supported_types)})"
            )
        self.masks: Masks = {}
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._modules = dict(model.named_modules())

    # -- public API -----------------------------------------------------
    def compress(self) -> tuple[nn.Module, Masks]:
        """Compute masks for every selected layer and attach them to the model."""
        with torch.no_grad():
            self.masks = self._compute_masks()
        self._attach()
        return self.bound_model, self.masks

    def unwrap_model(self) -> None:
        """Remove the masking hooks; masked weights stay zero in the model."""
        with torch.no_grad():
            for name in self._hooks:
                apply_masks_to_module(self._modules[name], self.masks.get(name, {}))
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    def get_masks(self) -> Masks:
        return self.masks

    def sparsity_report(self) -> dict[str, float]:
        """Fraction of zeroed weights per pruned layer."""
        report = {}
        for name, mask in self.masks.items():
            main = mask.get("weight", mask.get("in_proj_weight"))
            if main is None:
                main = next(iter(mask.values()))
            report[name] = 1.0 - float(main.mean())
        return report

    # -- for subclasses -------------------------------------------------
    def _compute_masks(self) -> Masks:
        raise NotImplementedError

    def _attach(self) -> None:
        for name, mask in self.masks.items():
            module, mask = self._hook_target(name, mask)
            if name in self._hooks:
                self._hooks[name].remove()
            self._hooks[name] = module.register_forward_pre_hook(_MaskHook(mask))

    def _hook_target(self, name: str, mask: Mapping[str, torch.Tensor]):
        """The module whose forward applies ``mask`` of layer ``name``, and the mask as that module names it.

        nn.MultiheadAttention computes with its ``out_proj``'s weights without
        calling it, so an ``out_proj``'s mask goes on a hook of the attention layer.
        """
        owner, _, child = name.rpartition(".")
        parent = self._modules.get(owner)
        if child == "out_proj" and is_attention(parent):
            return parent, {f"out_proj.{pname}": pmask for pname, pmask in mask.items()}
        return self._modules[name], mask


class _MaskHook:
    def __init__(self, mask: Mapping[str, torch.Tensor]):
        self.mask = mask

    def __call__(self, module: nn.Module, _inputs):
        with torch.no_grad():
            apply_masks_to_module(module, self.mask)


def apply_masks_to_module(module: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Multiply the parameters named in ``mask`` by it, in place (dotted names reach into children)."""
    for param_name, param_mask in mask.items():
        param = get_tensor(module, param_name)
        if param is not None:
            param.mul_(param_mask.to(device=param.device, dtype=param.dtype))


def channel_mask(module: nn.Module, kept: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weight and bias masks that keep the output channels where ``kept`` is true."""
    dim = out_channel_dim(module)
    shape = [1] * module.weight.dim()
    shape[dim] = -1
    kept = kept.to(module.weight.dtype)
    mask = {"weight": kept.reshape(shape).expand_as(module.weight).clone()}
    if getattr(module, "bias", None) is not None:
        # a grouped ConvTranspose's weight has out/groups columns, column j feeding output j of every group
        mask["bias"] = kept.repeat(module.bias.numel() // kept.numel()).clone()
    return mask
