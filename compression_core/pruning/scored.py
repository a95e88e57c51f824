"""Pruners that score blocks of weights and let :mod:`.selection` choose what goes.

A subclass implements :meth:`ScoredPruner.block_scores` (one score per
block of a layer's weight, higher = more important); granularity, dependency
groups and global ranking are handled here once for all of them.
Data-dependent pruners take an evaluator (:class:`DataDrivenPruner`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..models.attention import ATTENTION_TYPES
from .base import Masks, Pruner
from .selection import block_shape, layer_mask, select_blocks

CHANNEL_GRANULARITIES = ("out_channel", "in_channel")


class ScoredPruner(Pruner):
    """Base of the block-scoring pruners; see the module docstring.

    ``granularities`` lists what a subclass supports (``"block"`` means block
    shapes given as lists); ``default_granularity`` is used for config
    entries that say ``"default"`` or nothing.
    """

    default_granularity: Any = "out_channel"
    granularities: tuple[str, ...] = ("out_channel", "in_channel", "fine_grained", "block")

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]]):
        super().__init__(model, config_list)
        attention = [n for n in self.targets if isinstance(self._modules[n], ATTENTION_TYPES)]
        if attention and type(self)._compute_masks is ScoredPruner._compute_masks:
            raise ValueError(f"{type(self).__name__} cannot prune attention layer {attention[0]!r} "
                             "(L1NormPruner, L2NormPruner and LevelPruner can)")
        for name, settings in self.targets.items():
            if name in attention:
                continue
            granularity = self.granularity_of(name)
            kind = "block" if isinstance(granularity, (list, tuple)) else granularity
            if kind not in self.granularities:
                raise ValueError(
                    f"{type(self).__name__} does not support granularity {granularity!r} (layer {name!r}); "
                    f"it supports {', '.join(self.granularities)}"
                )
            if settings.get("dependency_group_id") is not None and kind not in CHANNEL_GRANULARITIES:
                raise ValueError(
                    f"layer {name!r}: dependency_group_id needs a channel granularity (out_channel), "
                    f"not {granularity!r}"
                )
            block_shape(self._modules[name], granularity, self._weight(name).shape)  # fails early if it cannot divide

    # -- for subclasses ----------------------------------------------------
    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Score of every block of each named layer (the grid from :func:`.selection.block_grid`)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------
    def granularity_of(self, name: str) -> Any:
        granularity = self.targets[name].get("granularity")
        return self.default_granularity if granularity in (None, "default") else granularity

    def block_of(self, name: str) -> tuple[int, ...]:
        return block_shape(self._modules[name], self.granularity_of(name), self._weight(name).shape)

    def _weight(self, name: str) -> torch.Tensor:
        return self._modules[name].weight

    def _compute_masks(self) -> Masks:
        return self._masks_for(list(self.targets))

    def _masks_for(self, names: list[str]) -> Masks:
        scores = self.block_scores(names)
        blocks = {n: self.block_of(n) for n in names}
        sizes = {n: math.prod(blocks[n]) for n in names}
        kept = select_blocks(scores, self.targets, self._modules, sizes)
        return {n: layer_mask(self._modules[n], kept[n], blocks[n]) for n in names}


class DataDrivenPruner(ScoredPruner):
    """A scored pruner that needs data: it trains or runs the model through an evaluator.

    ``evaluator``: a :class:`~compression_core.evaluation.TorchEvaluator`
    (or anything with its ``train`` method); ``training_steps``: how many
    optimizer steps the pruner's own training or statistics pass takes.
    """

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 training_steps: int = 100):
        name = type(self).__name__
        if evaluator is None:
            raise ValueError(f"{name} needs data: give it an evaluator (compression_core.TorchEvaluator) "
                             "or, in a job, choose a dataset")
        if not callable(getattr(evaluator, "train", None)):
            raise ValueError(f"{name}: the evaluator must be a TorchEvaluator (it has no train method)")
        if isinstance(training_steps, bool) or not isinstance(training_steps, int) or training_steps < 1:
            raise ValueError(f"{name}: training_steps must be a positive integer, got {training_steps!r}")
        super().__init__(model, config_list)
        self.evaluator = evaluator
        self.training_steps = training_steps
        if hasattr(evaluator, "bind_model"):
            evaluator.bind_model(model)
