"""Pruners that search per-layer sparsities: simulated annealing, NetAdapt, AutoCompress.

All three take one overall ratio (``sparse_ratio`` of the selected layers'
weights: NNI 2.x's ``total_sparsity``) and decide how much each layer
loses, guided by the evaluator's metric (higher is better). The masks of a
candidate come from a base pruner (``pruning_algorithm``) at the candidate's
per-layer ratios.

- ``SimulatedAnnealingPruner`` (Kirkpatrick et al. 1983, as used by Liu et
  al. 2020): starting from random ratios that meet the overall ratio (larger
  layers pruned more), perturb them, rescale to the overall ratio, and
  accept a worse candidate with probability ``exp(delta / T)``; ``T`` cools
  from ``start_temperature`` by ``cool_down_rate`` down to
  ``stop_temperature``. No training: candidates are compared as pruned.
- ``NetAdaptPruner`` (Yang et al., ECCV 2018): repeat until the budget is
  met: for every layer, prune it alone just enough to remove another
  ``sparsity_per_iteration`` of the weights, fine-tune briefly
  (``training_steps``), evaluate; keep the best candidate. Stops as soon as
  the overall ratio is reached.
- ``AutoCompressPruner`` (Liu et al., AAAI 2020): ``total_iteration``
  rounds; round ``i`` targets ``1 - (1 - s)^(i / n)``: simulated annealing
  picks the per-layer ratios, ADMM prunes to them.

``history`` records every step (candidates, metrics, ratios).

Example::

    >>> pruner = NetAdaptPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], evaluator,
    ...                         sparsity_per_iteration=0.1, training_steps=20)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from .admm import ADMMPruner
from .base import Masks, _MaskHook, apply_masks_to_module
from .iterative import base_pruner, lottery_ratio, pruner_class
from .scored import DataDrivenPruner

MAX_LAYER_RATIO = 0.95


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


def _ratio_in(owner: str, name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ValueError(f"{owner}: {name} must be a number in ({low}, {high}), got {value!r}")
    return float(value)


class _SearchPruner(DataDrivenPruner):
    """Shared by the searchers: layer sizes, overall ratio, candidate masks and their metric."""

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any,
                 training_steps: int, pruning_algorithm: str | type, pruning_params: Mapping[str, Any] | None):
        self.base_class = pruner_class(pruning_algorithm)
        if issubclass(self.base_class, DataDrivenPruner):
            raise ValueError(f"{type(self).__name__} needs a data-free base pruner (LevelPruner, L1NormPruner, "
                             f"L2NormPruner, FPGMPruner), not {self.base_class.__name__}")
        self.supported_types = self.base_class.supported_types
        super().__init__(model, config_list, evaluator, training_steps)
        if getattr(evaluator, "evaluating_func", True) is None:
            raise ValueError(f"{type(self).__name__} compares candidates by a metric: the evaluator needs an "
                             "evaluating_func")
        self.total_ratio = self.check_config(self.targets.values())
        self.pruning_params = dict(pruning_params or {})
        self.sizes = {n: self._modules[n].weight.numel() for n in self.targets}
        self.history: list[dict[str, Any]] = []
        probe = base_pruner(self.base_class, model, self.targets, {n: 0.5 for n in self.targets}, self.pruning_params)
        # Ratios are kept on the base pruner's grid (whole filters, or single weights), so the
        # overall ratio computed from them is what the masks really remove.
        self.block_counts = {n: self.sizes[n] // math.prod(probe.block_of(n)) if hasattr(probe, "block_of")
                             else self.sizes[n] for n in self.targets}

    def on_grid(self, ratios: Mapping[str, float], round_up: bool = False) -> dict[str, float]:
        """``ratios`` moved onto whole blocks (nearest, or up), as ratios the base pruner floors back exactly."""
        out = {}
        for name, ratio in ratios.items():
            count = self.block_counts[name]
            exact = ratio * count
            pruned = math.ceil(exact - 1e-9) if round_up else round(exact)
            out[name] = (min(max(pruned, 0), count - 1) + 0.5) / count if pruned > 0 else 0.0
        return out

    def layer_ratio(self, name: str, ratio: float) -> float:
        """The fraction of ``name``'s weights that ratio (on the grid) really removes."""
        count = self.block_counts[name]
        return int(ratio * count) / count

    @classmethod
    def check_config(cls, entries: Iterable[Mapping[str, Any]]) -> float:
        """The one overall ratio the config entries give; a clear error if they give several or it is unreachable.

        The job pipeline calls it before any work starts.
        """
        ratios = {entry["sparse_ratio"] for entry in entries if "sparse_ratio" in entry}
        if len(ratios) != 1:
            raise ValueError(f"{cls.__name__} takes one overall sparse_ratio for all selected layers "
                             f"(got {sorted(ratios)}); it chooses the per-layer ratios itself")
        ratio = ratios.pop()
        if ratio > MAX_LAYER_RATIO:
            raise ValueError(f"{cls.__name__}: sparse_ratio {ratio} cannot be reached: no layer is "
                             f"pruned beyond {MAX_LAYER_RATIO:.0%}")
        return ratio

    def overall_ratio(self, ratios: Mapping[str, float]) -> float:
        """Fraction of the selected layers' weights removed at per-layer ``ratios`` (on the grid)."""
        return sum(self.layer_ratio(n, ratios[n]) * self.sizes[n] for n in ratios) / sum(self.sizes.values())

    def candidate_masks(self, ratios: Mapping[str, float], model: nn.Module | None = None) -> Masks:
        with torch.no_grad():
            pruner = base_pruner(self.base_class, model or self.bound_model, self.targets, ratios,
                                 self.pruning_params)
            return pruner._compute_masks()

    def masked_metric(self, masks: Masks, model: nn.Module | None = None) -> float:
        """The metric with ``masks`` applied (on a copy of the weights that is restored)."""
        model = model or self.bound_model
        named = dict(model.named_modules())
        saved = {n: {k: v.detach().clone() for k, v in named[n].state_dict().items()} for n in masks}
        try:
            with torch.no_grad():
                for name, mask in masks.items():
                    apply_masks_to_module(named[name], mask)
            return self.evaluator.evaluate(model)
        finally:
            with torch.no_grad():
                for name, state in saved.items():
                    named[name].load_state_dict(state)


class SimulatedAnnealingPruner(_SearchPruner):
    """Search per-layer ratios by simulated annealing (see the module docstring)."""

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 start_temperature: float = 100.0, stop_temperature: float = 20.0, cool_down_rate: float = 0.9,
                 perturbation_magnitude: float = 0.35, pruning_algorithm: str | type = "LevelPruner",
                 pruning_params: Mapping[str, Any] | None = None, seed: int = 0):
        owner = "SimulatedAnnealingPruner"
        if not (isinstance(start_temperature, (int, float)) and isinstance(stop_temperature, (int, float))
                and 0 < stop_temperature < start_temperature):
            raise ValueError(f"{owner}: need 0 < stop_temperature < start_temperature")
        self.cool_down_rate = _ratio_in(owner, "cool_down_rate", cool_down_rate)
        self.perturbation_magnitude = _ratio_in(owner, "perturbation_magnitude", perturbation_magnitude)
        self.start_temperature = float(start_temperature)
        self.stop_temperature = float(stop_temperature)
        self.rng = random.Random(seed)
        super().__init__(model, config_list, evaluator, 1, pruning_algorithm, pruning_params)

    def rescale(self, ratios: Mapping[str, float], target: float) -> dict[str, float]:
        """Scale ``ratios`` so the overall ratio is ``target`` (each clipped to [0, 0.95]), on the grid."""
        total = sum(self.sizes.values())
        scaled = dict(ratios)
        for _ in range(20):
            current = sum(scaled[n] * self.sizes[n] for n in scaled) / total
            if current <= 0 or abs(current - target) < 1e-6:
                break
            scaled = {n: min(max(r * target / current, 0.0), MAX_LAYER_RATIO) for n, r in scaled.items()}
        return self.on_grid(scaled)

    def initial_ratios(self, target: float) -> dict[str, float]:
        # Random ratios, the larger ones to the larger layers (they usually have more redundancy).
        draws = sorted(self.rng.random() for _ in self.targets)
        by_size = sorted(self.targets, key=lambda n: self.sizes[n])
        return self.rescale(dict(zip(by_size, draws)), target)

    def search(self, target: float) -> tuple[dict[str, float], float]:
        """Best per-layer ratios for the overall ``target`` and their metric."""
        current = self.initial_ratios(target)
        current_metric = self.masked_metric(self.candidate_masks(current))
        best, best_metric = dict(current), current_metric
        temperature = self.start_temperature
        while temperature > self.stop_temperature:
            magnitude = self.perturbation_magnitude * temperature / self.start_temperature
            proposal = {n: min(max(r + self.rng.uniform(-magnitude, magnitude), 0.0), MAX_LAYER_RATIO)
                        for n, r in current.items()}
            proposal = self.rescale(proposal, target)
            metric = self.masked_metric(self.candidate_masks(proposal))
            delta = metric - current_metric
            # The metric is a fraction or a loss-like number; scale the temperature into its range.
            accepted = delta > 0 or self.rng.random() < math.exp(delta * 100.0 / temperature)
            self.history.append({"temperature": temperature, "ratios": proposal, "metric": metric,
                                 "accepted": accepted})
            if accepted:
                current, current_metric = proposal, metric
            if metric > best_metric:
                best, best_metric = dict(proposal), metric
            temperature *= self.cool_down_rate
        return best, best_metric

    def _compute_masks(self) -> Masks:
        self.best_ratios, self.best_metric = self.search(self.total_ratio)
        return self.candidate_masks(self.best_ratios)


class NetAdaptPruner(_SearchPruner):
    """Greedy layer-by-layer pruning with short fine-tuning until the budget is met (see the module docstring)."""

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 sparsity_per_iteration: float = 0.05, training_steps: int = 100,
                 pruning_algorithm: str | type = "L1NormPruner", pruning_params: Mapping[str, Any] | None = None):
        self.sparsity_per_iteration = _ratio_in("NetAdaptPruner", "sparsity_per_iteration", sparsity_per_iteration)
        super().__init__(model, config_list, evaluator, training_steps, pruning_algorithm, pruning_params)

    def _compute_masks(self) -> Masks:
        ratios = {n: 0.0 for n in self.targets}
        masks: Masks = {}
        while self.overall_ratio(ratios) < self.total_ratio - 1e-9:
            step = min(self.sparsity_per_iteration, self.total_ratio - self.overall_ratio(ratios))
            removed = step * sum(self.sizes.values())
            candidates = []
            for name in self.targets:
                ratio = self.layer_ratio(name, ratios[name]) + removed / self.sizes[name]
                if ratio > MAX_LAYER_RATIO:
                    continue
                trial = dict(ratios, **self.on_grid({name: ratio}, round_up=True))
                model = copy.deepcopy(self.bound_model)
                trial_masks = self.candidate_masks(trial, model)
                metric = self._fine_tuned_metric(model, trial_masks)
                candidates.append((metric, name, trial, model, trial_masks))
            if not candidates:
                raise ValueError(f"NetAdaptPruner: cannot reach sparse_ratio {self.total_ratio} without pruning "
                                 f"a layer beyond {MAX_LAYER_RATIO:.0%}; lower the target or select more layers")
            metric, name, ratios, best_model, masks = max(candidates, key=lambda c: c[0])
            self.bound_model.load_state_dict(best_model.state_dict())
            self.history.append({"layer": name, "metric": metric, "ratios": dict(ratios),
                                 "overall": self.overall_ratio(ratios),
                                 "candidates": {c[1]: c[0] for c in candidates}})
        return masks

    def _fine_tuned_metric(self, model: nn.Module, masks: Masks) -> float:
        named = dict(model.named_modules())
        hooks = [named[n].register_forward_pre_hook(_MaskHook(mask)) for n, mask in masks.items()]
        try:
            with torch.no_grad():
                for name, mask in masks.items():
                    apply_masks_to_module(named[name], mask)
            self.evaluator.train(model, max_steps=self.training_steps)
            with torch.no_grad():
                for name, mask in masks.items():
                    apply_masks_to_module(named[name], mask)
            return self.evaluator.evaluate(model)
        finally:
            for hook in hooks:
                hook.remove()


class AutoCompressPruner(SimulatedAnnealingPruner):
    """Rounds of simulated annealing (per-layer ratios) then ADMM (pruning to them); see the module docstring."""

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 total_iteration: int = 3, admm_iterations: int = 5, training_steps: int = 100, rho: float = 1e-4,
                 start_temperature: float = 100.0, stop_temperature: float = 20.0, cool_down_rate: float = 0.9,
                 perturbation_magnitude: float = 0.35, pruning_algorithm: str | type = "LevelPruner",
                 pruning_params: Mapping[str, Any] | None = None, seed: int = 0):
        self.total_iteration = _positive_int("AutoCompressPruner", "total_iteration", total_iteration)
        self.admm_iterations = _positive_int("AutoCompressPruner", "admm_iterations", admm_iterations)
        self.rho = rho
        super().__init__(model, config_list, evaluator, start_temperature, stop_temperature, cool_down_rate,
                         perturbation_magnitude, pruning_algorithm, pruning_params, seed)
        self.training_steps = _positive_int("AutoCompressPruner", "training_steps", training_steps)
        self.rounds: list[dict[str, Any]] = []

    def _compute_masks(self) -> Masks:
        masks: Masks = {}
        for round_ in range(1, self.total_iteration + 1):
            target = lottery_ratio(self.total_ratio, round_, self.total_iteration)
            ratios, metric = self.search(target)
            config = []
            for name, settings in self.targets.items():
                entry = {k: v for k, v in settings.items() if k != "op_types"}
                entry.update(op_names=[name], sparse_ratio=ratios[name])
                config.append(entry)
            admm = ADMMPruner(self.bound_model, config, self.evaluator, iterations=self.admm_iterations,
                              training_steps=self.training_steps, rho=self.rho)
            with torch.no_grad():
                masks = admm._compute_masks()
            self.masks = masks
            self._attach()
            self.rounds.append({"round": round_, "target": target, "ratios": ratios, "search_metric": metric,
                                "admm_residuals": admm.history[-1]})
        return masks
