"""Activation-based channel pruners: APoZ rank and mean-activation rank.

- ``ActivationAPoZRankPruner`` (Hu et al., "Network Trimming", 2016):
  removes the output channels whose activations (after ``activation``,
  ReLU by default) are most often zero on the evaluator's data (highest
  Average Percentage of Zeros).
- ``ActivationMeanRankPruner`` (Molchanov et al., "Pruning Convolutional
  Neural Networks for Resource Efficient Inference", 2017): removes those
  with the smallest mean activation.

Both run ``training_steps`` batches of the evaluator's training loop with
hooks on the selected layers' outputs. Unlike NNI they do not update the
weights during this pass (the optimizer step is skipped): the ranking
reflects the model as given, and the pass changes nothing but the masks.

Example::

    >>> pruner = ActivationAPoZRankPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
    ...                                   evaluator, training_steps=20)      # doctest: +SKIP
    >>> _, masks = pruner.compress()                                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scored import DataDrivenPruner
from .selection import out_channel_dim

ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "gelu": F.gelu, "identity": lambda x: x}


class _ActivationStatsPruner(DataDrivenPruner):
    granularities = ("out_channel",)

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 training_steps: int = 100, activation: str = "relu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        super().__init__(model, config_list, evaluator, training_steps)
        self.activation = ACTIVATIONS[activation]

    def _statistic(self, activations: torch.Tensor) -> torch.Tensor:
        """Per-channel sums of the statistic over a batch whose channels are the last dim."""
        raise NotImplementedError

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {name: 0 for name in names}

        def hook_for(name: str, channel_dim: int):
            def hook(_module, _inputs, output):
                out = output[0] if isinstance(output, (tuple, list)) else output
                with torch.no_grad():
                    act = self.activation(out.detach().float()).movedim(channel_dim, -1)
                    flat = act.reshape(-1, act.shape[-1])
                    value = self._statistic(flat)
                    sums[name] = sums[name] + value if name in sums else value
                    counts[name] += flat.shape[0]
            return hook

        handles = []
        for name in names:
            module = self._modules[name]
            # Conv outputs are (N, C, ...); Linear outputs keep features last.
            channel_dim = -1 if isinstance(module, nn.Linear) else 1
            # An attention layer's out_proj is never called: its output is the attention layer's output[0].
            hooked, _ = self._hook_target(name, {})
            handles.append(hooked.register_forward_hook(hook_for(name, channel_dim)))
        try:
            self.evaluator.train(self.bound_model, max_steps=self.training_steps, update_weights=False)
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n in names if counts[n] == 0]
        if missing:
            raise ValueError(f"{type(self).__name__}: the evaluator's training loop never ran layer {missing[0]!r} "
                             "(no batch reached it)")
        scores = {}
        for name in names:
            per_channel = self._score(sums[name] / counts[name])
            module = self._modules[name]
            shape = [1] * module.weight.dim()
            shape[out_channel_dim(module)] = -1
            scores[name] = per_channel.reshape(shape)
        return scores

    def _score(self, mean_statistic: torch.Tensor) -> torch.Tensor:
        return mean_statistic


class ActivationAPoZRankPruner(_ActivationStatsPruner):
    """Remove the output channels whose activations are most often zero (highest APoZ)."""

    def _statistic(self, activations: torch.Tensor) -> torch.Tensor:
        return (activations == 0).sum(dim=0).double()

    def _score(self, mean_statistic: torch.Tensor) -> torch.Tensor:
        return 1.0 - mean_statistic  # the fraction of non-zeros: higher keeps


class ActivationMeanRankPruner(_ActivationStatsPruner):
    """Remove the output channels with the smallest mean activation."""

    def _statistic(self, activations: torch.Tensor) -> torch.Tensor:
        return activations.sum(dim=0).double()
