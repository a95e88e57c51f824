"""Magnitude pruners: LevelPruner (fine-grained) and L1NormPruner (filters).

Both need no data. L1NormPruner follows Li et al., "Pruning Filters for
Efficient ConvNets" (ICLR 2017): in each layer, the output channels whose
weights have the smallest L1 norm are removed. Layers that share a
``dependency_group_id`` (e.g. convolutions feeding one residual add) are
scored together, summing their channel norms, so they lose the same channels
and speedup can really remove them. When such a group contains a grouped
convolution (ResNeXt, RegNet), every convolution group keeps the same number
of channels, which grouped convolutions require.

``nn.MultiheadAttention`` layers (``op_types: ["MultiheadAttention"]``) are
pruned by whole heads: L1NormPruner scores each head by the norm of its q, k
and v rows of ``in_proj_weight`` and its ``out_proj`` columns and masks the
weakest ones (see :mod:`compression_core.speedup.attention` for the mask
format); LevelPruner masks ``in_proj_weight`` and ``out_proj.weight``
element-wise.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn as nn

from ..speedup.attention import ATTENTION_TYPES, head_mask, head_scores
from .base import Masks, Pruner, channel_mask, out_channel_dim


def _channel_groups(modules) -> int:
    """Least common multiple of the group counts of the grouped (not depthwise) convolutions among ``modules``."""
    groups = 1
    for m in modules:
        g = getattr(m, "groups", 1)
        if isinstance(m, nn.modules.conv._ConvNd) and g > 1 and not (g == m.in_channels == m.out_channels):
            groups = math.lcm(groups, g)
    return groups


def _keep_largest(scores: torch.Tensor, sparse_ratio: float, groups: int = 1) -> torch.Tensor:
    """Boolean mask keeping the highest scores, the same count in each of ``groups`` equal slices."""
    per_group = scores.view(groups, -1)
    kept_count = _kept_count(per_group.shape[1], sparse_ratio)
    order = per_group.argsort(dim=1, descending=True, stable=True)[:, :kept_count]
    kept = torch.zeros_like(per_group, dtype=torch.bool)
    kept.scatter_(1, order, True)
    return kept.view(-1)


def _kept_count(total: int, sparse_ratio: float) -> int:
    # NNI rounds the pruned count down, but never removes a whole layer.
    pruned = int(total * sparse_ratio)
    return max(total - pruned, 1)


class LevelPruner(Pruner):
    """Fine-grained magnitude pruning: zero the smallest-magnitude weights.

    ``balance_gran`` (NNI's balanced mode) is not supported yet.

    Example::

        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(8, 8))
        >>> _, masks = LevelPruner(model, [{"op_types": ["Linear"], "sparsity": 0.5}]).compress()
        >>> int(masks["0"]["weight"].sum())
        32
    """

    def _compute_masks(self) -> Masks:
        masks: Masks = {}
        for name, settings in self.targets.items():
            module = self._modules[name]
            if isinstance(module, ATTENTION_TYPES):
                params = {"in_proj_weight": module.in_proj_weight, "out_proj.weight": module.out_proj.weight}
            else:
                params = {"weight": module.weight}
            masks[name] = {p: self._level_mask(w, settings["sparse_ratio"]) for p, w in params.items()}
        return masks

    @staticmethod
    def _level_mask(weight: torch.Tensor, ratio: float) -> torch.Tensor:
        kept = _kept_count(weight.numel(), ratio)
        order = weight.detach().abs().flatten().argsort(descending=True, stable=True)
        flat = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
        flat[order[:kept]] = 1.0
        return flat.reshape(weight.shape)


class L1NormPruner(Pruner):
    """Remove the output channels (filters / rows) of smallest L1 norm.

    Example::

        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> _, masks = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]).compress()
        >>> int(masks["0"]["weight"].flatten(1).any(1).sum())   # filters left
        4
    """

    norm_order = 1

    def _channel_scores(self, module: nn.Module) -> torch.Tensor:
        weight = module.weight.detach()
        dim = out_channel_dim(module)
        per_channel = weight.transpose(0, dim).flatten(1)
        return per_channel.norm(p=self.norm_order, dim=1)

    def _compute_masks(self) -> Masks:
        groups: dict[object, list[str]] = defaultdict(list)
        for name, settings in self.targets.items():
            group = settings.get("dependency_group_id")
            groups[("group", group) if group is not None else ("layer", name)].append(name)

        masks: Masks = {}
        for members in groups.values():
            heads = [n for n in members if isinstance(self._modules[n], ATTENTION_TYPES)]
            if heads:
                self._head_masks(members, heads, masks)
                continue
            widths = {self._modules[n].weight.shape[out_channel_dim(self._modules[n])] for n in members}
            if len(widths) != 1:
                raise ValueError(
                    f"layers {', '.join(members)} share a dependency_group_id but have different "
                    f"numbers of output channels ({sorted(widths)})"
                )
            scores = sum(self._channel_scores(self._modules[n]).float() for n in members)
            # The group follows the strictest ratio any member asks for.
            ratio = max(self.targets[n]["sparse_ratio"] for n in members)
            groups = _channel_groups(self._modules[n] for n in members)
            # A grouped convolution in the group keeps the same number of channels in each of its groups.
            kept = _keep_largest(scores, ratio, groups if groups > 1 and scores.numel() % groups == 0 else 1)
            for name in members:
                masks[name] = channel_mask(self._modules[name], kept)
        return masks

    def _head_masks(self, members: list[str], heads: list[str], masks: Masks) -> None:
        """Whole heads of attention layers (scored together when they share a dependency group)."""
        if len(heads) != len(members):
            others = [n for n in members if n not in heads]
            raise ValueError(
                f"attention layers ({', '.join(heads)}) and other layers ({', '.join(others)}) cannot share "
                "a dependency_group_id: attention layers lose heads, not output channels"
            )
        counts = {self._modules[n].num_heads for n in heads}
        if len(counts) != 1:
            raise ValueError(
                f"attention layers {', '.join(heads)} share a dependency_group_id but have different numbers "
                f"of heads ({sorted(counts)})"
            )
        scores = sum(head_scores(self._modules[n], p=self.norm_order) for n in heads)
        ratio = max(self.targets[n]["sparse_ratio"] for n in heads)
        kept = _keep_largest(scores, ratio)
        for name in heads:
            masks[name] = head_mask(self._modules[name], kept)
