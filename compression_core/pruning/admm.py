"""ADMMPruner: pruning as constrained optimisation solved by ADMM (Zhang et al., ECCV 2018).

Minimise the loss subject to ``W`` being sparse by splitting ``W = Z``
(``Z`` in the sparse set ``S``) and alternating, for ``iterations`` rounds:

1. ``training_steps`` steps on ``loss + rho / 2 * sum ||W - Z + U||^2``;
2. ``Z = proj_S(W + U)``: keep the largest blocks of ``W + U`` at the
   layer's ratio (the same selection as every other pruner: granularity,
   dependency groups and global groups apply);
3. ``U = U + W - Z``.

As the rounds go, ``W`` is pulled onto the sparse ``Z``; ``history`` holds
``||W - Z|| / ||W||`` per layer after each round (it shrinks toward 0). The
final masks are ``Z``'s support.

Example::

    >>> pruner = ADMMPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], evaluator,
    ...                     iterations=5, training_steps=50)                 # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from .base import Masks
from .scored import DataDrivenPruner
from .selection import block_norms, expand_blocks, layer_mask, select_blocks


class ADMMPruner(DataDrivenPruner):
    """ADMM-regularised training toward the sparse set, then masks from its support."""

    default_granularity = "fine_grained"

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 iterations: int = 10, training_steps: int = 100, rho: float = 1e-4):
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"ADMMPruner: iterations must be a positive integer, got {iterations!r}")
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or rho <= 0:
            raise ValueError(f"ADMMPruner: rho must be a number > 0, got {rho!r}")
        super().__init__(model, config_list, evaluator, training_steps)
        self.iterations = iterations
        self.rho = float(rho)
        self.history: list[dict[str, float]] = []

    def _project(self, values: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``proj_S``: the kept-block grids and the projected tensors."""
        names = list(values)
        blocks = {n: self.block_of(n) for n in names}
        scores = {n: block_norms(values[n], blocks[n], p=2) for n in names}
        kept = select_blocks(scores, self.targets, self._modules, {n: math.prod(blocks[n]) for n in names})
        projected = {n: values[n] * expand_blocks(kept[n], blocks[n]).reshape(values[n].shape).to(values[n].dtype)
                     for n in names}
        return kept, projected

    def _compute_masks(self) -> Masks:
        names = list(self.targets)
        weights = {n: self._weight(n) for n in names}
        with torch.no_grad():
            _, z = self._project({n: w.detach().clone() for n, w in weights.items()})
        u = {n: torch.zeros_like(w) for n, w in weights.items()}

        def admm_penalty(_model: nn.Module) -> torch.Tensor:
            return self.rho / 2 * sum((weights[n] - z[n] + u[n]).pow(2).sum() for n in names)

        for _ in range(self.iterations):
            self.evaluator.train(self.bound_model, max_steps=self.training_steps, loss_terms=[admm_penalty])
            with torch.no_grad():
                kept, z = self._project({n: weights[n].detach() + u[n] for n in names})
                for n in names:
                    u[n] += weights[n].detach() - z[n]
                self.history.append({
                    n: float((weights[n] - z[n]).norm() / weights[n].norm().clamp_min(1e-12)) for n in names
                })
        return {n: layer_mask(self._modules[n], kept[n], self.block_of(n)) for n in names}

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: block_norms(self._weight(n), self.block_of(n), p=2) for n in names}
