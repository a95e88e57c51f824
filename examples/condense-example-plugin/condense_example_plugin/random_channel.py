"""RandomChannelPruner: the random-channel baseline of pruning papers.

Built on Condense's :class:`~compression_core.pruning.scored.ScoredPruner`:
it only gives every channel a score (random here); the base class turns the
scores into masks at each layer's sparsity, keeps coupled layers (a
``dependency_group_id``) on the same channels and supports global ranking,
and the job's speedup then removes the masked channels.

Example::

    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> _, masks = RandomChannelPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], seed=1).compress()
    >>> int(masks["0"]["weight"].flatten(1).any(1).sum())   # filters left
    4
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from compression_core.pruning.scored import ScoredPruner


class RandomChannelPruner(ScoredPruner):
    """Remove randomly chosen output (or input) channels; the same ``seed`` removes the same channels."""

    granularities = ("out_channel", "in_channel")

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], seed: int = 0):
        super().__init__(model, config_list)
        self.seed = seed

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        scores = {}
        for name in names:  # the order of the config's layers: the same seed, the same draw
            grid = [size // block for size, block in zip(self._weight(name).shape, self.block_of(name))]
            scores[name] = torch.rand(grid, generator=generator)
        return scores
