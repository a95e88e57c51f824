"""Magnitude pruners, no data needed: LevelPruner, L1NormPruner, L2NormPruner, FPGMPruner.

- ``LevelPruner`` (Zhu & Gupta 2017, NNI's level pruner): zero the weights
  of smallest magnitude (fine-grained by default, or any block
  granularity). ``mode="balance"`` with ``balance_gran`` (e.g. ``[4]``)
  prunes every block of that shape over the weight's trailing dims to the
  same sparsity (N:M-style balanced sparsity).
- ``L1NormPruner`` / ``L2NormPruner`` (Li et al., "Pruning Filters for
  Efficient ConvNets", ICLR 2017): remove the output channels (or input
  channels, or blocks) whose weights have the smallest L1 / L2 norm.
- ``FPGMPruner`` (He et al., "Filter Pruning via Geometric Median", CVPR
  2019): remove the filters nearest the geometric median of the layer's
  filters (the smallest sum of Euclidean distances to all the others): they
  are the most replaceable, whatever their norm.

Layers sharing a ``dependency_group_id`` lose the same channels and layers
sharing a ``global_group_id`` are ranked together (see :mod:`.selection`).

``nn.MultiheadAttention`` layers (``op_types: ["MultiheadAttention"]``) are
pruned by whole heads: L1/L2NormPruner score each head by the norm of its q,
k and v rows and its ``out_proj`` columns and mask the weakest ones (see
:mod:`compression_core.models.attention` for the mask format);
LevelPruner masks the q/k/v projection weights and ``out_proj.weight``
element-wise. An attention layer's output channels are pruned through its
``out_proj`` (a Linear in the residual stream's dependency group, see
``auto_set_dependency_group_ids``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..models.attention import ATTENTION_TYPES, head_mask, projection_weights
from .base import Masks
from .heads import head_scores
from .scored import ScoredPruner
from .selection import block_grid, block_norms, keep_largest, kept_count

LEVEL_MODES = ("normal", "balance")


class LevelPruner(ScoredPruner):
    """Zero the weights (or blocks) of smallest magnitude.

    Example::

        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(8, 8))
        >>> _, masks = LevelPruner(model, [{"op_types": ["Linear"], "sparsity": 0.5}]).compress()
        >>> int(masks["0"]["weight"].sum())
        32
        >>> _, masks = LevelPruner(nn.Sequential(nn.Linear(8, 8)), [{"op_types": ["Linear"], "sparsity": 0.5}],
        ...                        mode="balance", balance_gran=[4]).compress()
        >>> masks["0"]["weight"].view(8, 2, 4).sum(-1).unique().tolist()    # 2 of every 4 kept
        [2.0]
    """

    default_granularity = "fine_grained"

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], mode: str = "normal",
                 balance_gran: Sequence[int] | None = None):
        if mode not in LEVEL_MODES:
            raise ValueError(f"LevelPruner: mode must be one of {', '.join(LEVEL_MODES)}, got {mode!r}")
        if mode == "balance" and not (isinstance(balance_gran, (list, tuple)) and balance_gran
                                      and all(isinstance(b, int) and b >= 1 for b in balance_gran)):
            raise ValueError("LevelPruner: mode 'balance' needs balance_gran, a list of positive block sizes "
                             "over the weight's last dims, e.g. [4]")
        super().__init__(model, config_list)
        self.mode = mode
        self.balance_gran = list(balance_gran or [])
        if mode == "balance":
            for name in self.targets:
                self._balanced_view(name)  # fails now if the block does not divide the weight

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: block_norms(self._weight(n), self.block_of(n), p=1) for n in names}

    def _compute_masks(self) -> Masks:
        attention = [n for n in self.targets if isinstance(self._modules[n], ATTENTION_TYPES)]
        masks: Masks = {}
        for name in attention:
            module, ratio = self._modules[name], self.targets[name]["sparse_ratio"]
            params = {**projection_weights(module), "out_proj.weight": module.out_proj.weight}
            masks[name] = {p: _magnitude_mask(w, ratio) for p, w in params.items()}
        others = [n for n in self.targets if n not in attention]
        if self.mode == "balance":
            masks.update({n: {"weight": self._balanced_mask(n)} for n in others})
        elif others:
            masks.update(self._masks_for(others))
        return masks

    def _balanced_view(self, name: str) -> torch.Tensor:
        weight = self._weight(name).detach()
        gran = self.balance_gran
        if len(gran) > weight.dim():
            raise ValueError(f"LevelPruner: balance_gran {gran} has more dims than layer {name!r}'s weight "
                             f"{list(weight.shape)}")
        block = [1] * (weight.dim() - len(gran)) + gran
        bad = [d for d, (b, size) in enumerate(zip(block, weight.shape)) if size % b]
        if bad:
            raise ValueError(f"LevelPruner: balance_gran {gran} does not divide layer {name!r}'s weight "
                             f"{list(weight.shape)}")
        return block_grid(weight.abs(), block).flatten(0, weight.dim() - 1).flatten(1)

    def _balanced_mask(self, name: str) -> torch.Tensor:
        weight = self._weight(name)
        blocks = self._balanced_view(name)  # (number of blocks, elements per block)
        keep = kept_count(blocks.shape[1], self.targets[name]["sparse_ratio"])
        order = blocks.argsort(dim=1, descending=True, stable=True)[:, :keep]
        kept = torch.zeros_like(blocks, dtype=torch.bool).scatter_(1, order, True)
        block = [1] * (weight.dim() - len(self.balance_gran)) + self.balance_gran
        grid = [size // b for size, b in zip(weight.shape, block)]
        # undo block_grid's (grid..., block...) layout
        shaped = kept.view(*grid, *block)
        n = weight.dim()
        order_back = [d for pair in zip(range(n), range(n, 2 * n)) for d in pair]
        return shaped.permute(order_back).reshape(weight.shape).to(weight.dtype)


def _magnitude_mask(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    keep = kept_count(weight.numel(), ratio)
    return keep_largest(weight.detach().abs(), keep).to(weight.dtype)


class L1NormPruner(ScoredPruner):
    """Remove the output channels (filters / rows) of smallest L1 norm.

    Example::

        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> _, masks = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]).compress()
        >>> int(masks["0"]["weight"].flatten(1).any(1).sum())   # filters left
        4
    """

    norm_order = 1
    granularities = ("out_channel", "in_channel", "block")

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: block_norms(self._weight(n), self.block_of(n), p=self.norm_order) for n in names}

    def _compute_masks(self) -> Masks:
        attention = [n for n in self.targets if isinstance(self._modules[n], ATTENTION_TYPES)]
        masks: Masks = self._head_masks(attention) if attention else {}
        others = [n for n in self.targets if n not in attention]
        if others:
            masks.update(self._masks_for(others))
        return masks

    def _head_masks(self, heads: list[str]) -> Masks:
        """Whole heads of attention layers (scored together when they share a dependency group)."""
        groups: dict[object, list[str]] = defaultdict(list)
        for name in heads:
            group = self.targets[name].get("dependency_group_id")
            groups[("group", group) if group is not None else ("layer", name)].append(name)
        masks: Masks = {}
        for key, members in groups.items():
            if key[0] == "group":
                others = [n for n, s in self.targets.items()
                          if s.get("dependency_group_id") == key[1] and n not in members]
                if others:
                    raise ValueError(
                        f"attention layers ({', '.join(members)}) and other layers ({', '.join(others)}) cannot "
                        "share a dependency_group_id: attention layers lose heads (their output channels are "
                        "pruned through their out_proj, which can share one)"
                    )
            counts = {self._modules[n].num_heads for n in members}
            if len(counts) != 1:
                raise ValueError(
                    f"attention layers {', '.join(members)} share a dependency_group_id but have different "
                    f"numbers of heads ({sorted(counts)})"
                )
            scores = sum(head_scores(self._modules[n], p=self.norm_order) for n in members)
            ratio = max(self.targets[n]["sparse_ratio"] for n in members)
            kept = keep_largest(scores, kept_count(scores.numel(), ratio))
            for name in members:
                masks[name] = head_mask(self._modules[name], kept)
        return masks


class L2NormPruner(L1NormPruner):
    """Remove the output channels (filters / rows) of smallest L2 norm."""

    norm_order = 2


class FPGMPruner(ScoredPruner):
    """Remove the filters nearest the geometric median of their layer (see the module docstring)."""

    granularities = ("out_channel", "in_channel")

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        scores = {}
        for name in names:
            weight = self._weight(name).detach().float()
            block = self.block_of(name)
            grid = block_grid(weight, block)
            vectors = grid.flatten(weight.dim()).reshape(-1, grid[(0,) * weight.dim()].numel())
            distance_sums = torch.cdist(vectors.unsqueeze(0), vectors.unsqueeze(0)).squeeze(0).sum(dim=1)
            scores[name] = distance_sums.reshape(grid.shape[: weight.dim()])
        return scores
