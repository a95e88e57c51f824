"""Pruners that prune in steps around training: AGP and Lottery Ticket.

- ``AGPPruner`` (Zhu & Gupta, "To prune, or not to prune", 2017): the
  sparsity of every layer follows the cubic schedule
  ``s_t = s_f * (1 - (1 - t / n)^3)`` for ``t = 1..n`` (``n =
  total_iteration``); before each step the model trains
  ``training_steps`` steps with the current masks, and the step's masks come
  from a base pruner (``pruning_algorithm``, L1NormPruner by default).
- ``LotteryTicketPruner`` (Frankle & Carbin, "The Lottery Ticket
  Hypothesis", ICLR 2019): train, prune to ``1 - (1 - s)^(i / n)`` of the
  weights (so each round removes the same fraction of the survivors), and
  rewind the survivors to their values before the first round
  (``reset_weights``); after the last round the model holds the winning
  ticket: the initial weights under the final masks, ready to be retrained.

``history`` records, per step, the target ratio and the masks' real
sparsity per layer.

Example::

    >>> pruner = AGPPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.8}], evaluator,
    ...                    total_iteration=4, training_steps=50)              # doctest: +SKIP
    >>> _, masks = pruner.compress()                                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from .base import Masks, Pruner
from .scored import DataDrivenPruner


def pruner_class(algorithm: str | type) -> type:
    """A pruner class from its name (``"L1NormPruner"``) or the class itself."""
    if isinstance(algorithm, type) and issubclass(algorithm, Pruner):
        return algorithm
    cls = getattr(importlib.import_module("compression_core.pruning"), str(algorithm), None)
    if not (isinstance(cls, type) and issubclass(cls, Pruner)):
        raise ValueError(f"unknown pruning algorithm {algorithm!r}")
    return cls


def agp_ratio(final_ratio: float, step: int, total: int, initial_ratio: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule at ``step`` of ``total`` (step 0: ``initial_ratio``; step ``total``: final).

    >>> [round(agp_ratio(0.8, t, 4), 4) for t in range(5)]
    [0.0, 0.4625, 0.7, 0.7875, 0.8]
    """
    progress = min(max(step / total, 0.0), 1.0)
    return final_ratio + (initial_ratio - final_ratio) * (1.0 - progress) ** 3


def lottery_ratio(final_ratio: float, step: int, total: int) -> float:
    """Round ``step`` of ``total`` keeps ``(1 - s)^(step / total)``: the same fraction of survivors goes each round.

    >>> [round(lottery_ratio(0.75, t, 2), 4) for t in (1, 2)]
    [0.5, 0.75]
    """
    return 1.0 - (1.0 - final_ratio) ** (step / total)


def base_pruner(base_class: type, model: nn.Module, targets: Mapping[str, Mapping[str, Any]],
                ratios: Mapping[str, float], params: Mapping[str, Any]) -> Pruner:
    """``base_class`` over the same layers and settings as ``targets``, each at its ratio in ``ratios``."""
    config = []
    for name, settings in targets.items():
        entry = {k: v for k, v in settings.items() if k != "op_types"}
        entry.update(op_names=[name], sparse_ratio=float(ratios[name]))
        config.append(entry)
    try:
        return base_class(model, config, **params)
    except TypeError as exc:
        raise ValueError(f"pruning_params do not fit {base_class.__name__}: {exc}") from None


class _SteppedPruner(DataDrivenPruner):
    """Runs a base pruner at a sequence of ratios, training in between (subclasses say when and how)."""

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 total_iteration: int = 10, training_steps: int = 100, pruning_algorithm: str | type = "L1NormPruner",
                 pruning_params: Mapping[str, Any] | None = None):
        if isinstance(total_iteration, bool) or not isinstance(total_iteration, int) or total_iteration < 1:
            raise ValueError(f"{type(self).__name__}: total_iteration must be a positive integer, got {total_iteration!r}")
        self.base_class = pruner_class(pruning_algorithm)
        if issubclass(self.base_class, _SteppedPruner):
            raise ValueError(f"{type(self).__name__} cannot schedule {self.base_class.__name__}")
        self.supported_types = self.base_class.supported_types
        self.granularities = getattr(self.base_class, "granularities", self.granularities)
        self.default_granularity = getattr(self.base_class, "default_granularity", self.default_granularity)
        super().__init__(model, config_list, evaluator, training_steps)
        self.total_iteration = total_iteration
        self.pruning_params = dict(pruning_params or {})
        self.history: list[dict[str, Any]] = []
        self._check_base()

    def _check_base(self) -> None:
        # Build the base pruner once now so a bad base or parameter fails before any training.
        self._base_pruner({n: 0.5 * s["sparse_ratio"] for n, s in self.targets.items()})

    def _base_pruner(self, ratios: Mapping[str, float]) -> Pruner:
        params = dict(self.pruning_params)
        if issubclass(self.base_class, DataDrivenPruner):
            params.setdefault("evaluator", self.evaluator)
            params.setdefault("training_steps", self.training_steps)
        return base_pruner(self.base_class, self.bound_model, self.targets, ratios, params)

    def _base_masks(self, ratios: Mapping[str, float]) -> Masks:
        with torch.no_grad():
            return self._base_pruner(ratios)._compute_masks()

    def _record(self, step: int, ratios: Mapping[str, float]) -> None:
        self.history.append({"step": step, "target": dict(ratios), "sparsity": self.sparsity_report()})

    def _train(self) -> None:
        self.evaluator.train(self.bound_model, max_steps=self.training_steps)


class AGPPruner(_SteppedPruner):
    """Automated gradual pruning: the cubic schedule over a base pruner (see the module docstring)."""

    def _compute_masks(self) -> Masks:
        for step in range(1, self.total_iteration + 1):
            self._train()
            ratios = {n: agp_ratio(s["sparse_ratio"], step, self.total_iteration) for n, s in self.targets.items()}
            self.masks = self._base_masks(ratios)
            self._attach()
            self._record(step, ratios)
        return self.masks


class LotteryTicketPruner(_SteppedPruner):
    """Iterative magnitude pruning with rewinding to the initial weights (see the module docstring)."""

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 total_iteration: int = 5, training_steps: int = 100, reset_weights: bool = True,
                 pruning_algorithm: str | type = "LevelPruner", pruning_params: Mapping[str, Any] | None = None):
        super().__init__(model, config_list, evaluator, total_iteration, training_steps, pruning_algorithm,
                         pruning_params)
        self.reset_weights = bool(reset_weights)
        self.initial_state: dict[str, torch.Tensor] = {}

    def _compute_masks(self) -> Masks:
        self.initial_state = copy.deepcopy(self.bound_model.state_dict())
        for step in range(1, self.total_iteration + 1):
            self._train()
            ratios = {n: lottery_ratio(s["sparse_ratio"], step, self.total_iteration) for n, s in self.targets.items()}
            self.masks = self._base_masks(ratios)
            if self.reset_weights:
                self.bound_model.load_state_dict(self.initial_state)
            self._attach()
            self._record(step, ratios)
        return self.masks
