"""SlimPruner: network slimming (Liu et al., "Learning Efficient Convolutional Networks
through Network Slimming", ICCV 2017).

Select the batch-norm layers (``op_types: ["BatchNorm2d"]``). The pruner
trains the model for ``training_steps`` steps with an L1 penalty
``regular_scale * sum |gamma|`` on their scale factors, which drives the
scales of unneeded channels toward zero, then removes the channels with the
smallest ``|gamma|``. As in NNI 2.x the ranking is global over all selected
layers by default (``global_group_id`` is set for every entry that has
none); give each entry its own ``global_group_id``, or pass
``mode="normal"``, to prune each layer by its own ratio.

The masks cover each batch-norm layer's ``weight`` and ``bias`` *and* the
output channels of the layer(s) producing its input (found by tracing the
model with the evaluator's ``dummy_input``), so ``ModelSpeedup`` removes
the channels from both.

Example::

    >>> pruner = SlimPruner(model, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5}],
    ...                     evaluator, training_steps=200)                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..dependency import analyze_channels
from .base import Masks
from .scored import DataDrivenPruner
from .selection import block_shape, layer_mask, out_channel_dim, select_blocks

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
MODES = ("global", "normal")


class SlimPruner(DataDrivenPruner):
    """Sparsity-regularised batch-norm scales, then remove the channels of smallest ``|gamma|``."""

    supported_types = BATCH_NORMS
    granularities = ("out_channel",)
    uses_dependency_groups = False  # it masks the producers of its batch-norm channels itself

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 training_steps: int = 100, regular_scale: float = 1e-4, mode: str = "global"):
        if mode not in MODES:
            raise ValueError(f"SlimPruner: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(regular_scale, bool) or not isinstance(regular_scale, (int, float)) or regular_scale < 0:
            raise ValueError(f"SlimPruner: regular_scale must be a number >= 0, got {regular_scale!r}")
        super().__init__(model, config_list, evaluator, training_steps)
        for name in self.targets:
            if not self._modules[name].affine:
                raise ValueError(f"SlimPruner: batch-norm layer {name!r} has no scale (affine=False)")
        if mode == "global":
            for settings in self.targets.values():
                settings.setdefault("global_group_id", "slim")
        self.regular_scale = float(regular_scale)

    def _penalty(self, model: nn.Module) -> torch.Tensor:
        return self.regular_scale * sum(self._modules[n].weight.abs().sum() for n in self.targets)

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: self._modules[n].weight.detach().abs().float() for n in names}

    def _compute_masks(self) -> Masks:
        self.evaluator.train(self.bound_model, max_steps=self.training_steps, loss_terms=[self._penalty])
        names = list(self.targets)
        kept = select_blocks(self.block_scores(names), self.targets, self._modules)
        masks: Masks = {n: layer_mask(self._modules[n], kept[n], (1,)) for n in names}
        masks.update(self._producer_masks(kept))
        return masks

    def _producer_masks(self, kept: Mapping[str, torch.Tensor]) -> Masks:
        """Output-channel masks for the layers whose channels feed each batch norm."""
        dummy = getattr(self.evaluator, "dummy_input", None)
        if dummy is None:
            return {}
        analysis = analyze_channels(self.bound_model, dummy)
        uf = analysis.uf
        producers: dict[int, list[tuple[str, int]]] = {}
        for state in analysis.modules.values():
            if state.produces and state.out_ids is not None:
                for index, x in enumerate(state.out_ids):
                    producers.setdefault(uf.find(x), []).append((state.name, index))
        out: dict[str, torch.Tensor] = {}
        for name, grid in kept.items():
            state = analysis.modules.get(name)
            if state is None or state.in_ids is None:
                continue
            for channel, x in enumerate(state.in_ids):
                for producer, index in producers.get(uf.find(x), []):
                    weight = self._modules[producer].weight
                    rows = out.setdefault(producer, torch.ones(weight.shape[out_channel_dim(self._modules[producer])],
                                                               dtype=torch.bool, device=weight.device))
                    rows[index] &= bool(grid[channel])
        masks: Masks = {}
        for producer, rows in out.items():
            module = self._modules[producer]
            grid_shape = [1] * module.weight.dim()
            grid_shape[out_channel_dim(module)] = -1
            masks[producer] = layer_mask(module, rows.view(grid_shape), block_shape(module, "out_channel"))
        return masks
