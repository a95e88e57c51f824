"""TaylorFOWeightPruner: first-order Taylor importance of weights (Molchanov et al., CVPR 2019).

The importance of a block is the sum over its weights of ``(w * dL/dw)^2``,
accumulated over ``training_steps`` batches of the evaluator's training
loop: an estimate of how much the loss would change without them. Like
NNI's, it trains the model during those steps (the gradients come from a
real training pass); works at every granularity.

Example::

    >>> pruner = TaylorFOWeightPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
    ...                               evaluator, training_steps=20)           # doctest: +SKIP
"""

from __future__ import annotations

import torch

from .scored import DataDrivenPruner
from .selection import block_grid


class TaylorFOWeightPruner(DataDrivenPruner):
    """Remove the blocks of smallest accumulated ``(weight * gradient)^2``."""

    def block_scores(self, names: list[str]) -> dict[str, torch.Tensor]:
        blocks = {n: self.block_of(n) for n in names}
        totals: dict[str, torch.Tensor] = {}
        seen = {"steps": 0}

        def accumulate(_model) -> None:
            seen["steps"] += 1
            for name in names:
                weight = self._weight(name)
                if weight.grad is None:
                    continue
                contribution = (weight.detach() * weight.grad.detach()).float().pow(2)
                per_block = block_grid(contribution, blocks[name]).flatten(weight.dim()).sum(-1)
                totals[name] = totals[name] + per_block if name in totals else per_block

        self.evaluator.train(self.bound_model, max_steps=self.training_steps, before_step=[accumulate])
        missing = [n for n in names if n not in totals]
        if missing:
            raise ValueError(f"TaylorFOWeightPruner: no gradient reached layer {missing[0]!r} during training "
                             "(is it used by the loss?)")
        return totals
