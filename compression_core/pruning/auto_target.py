"""AutoTargetPruner: automatic compression to a target (FLOPs, parameters or latency) with an accuracy floor.

The user says how small or fast the model must get, not how much each
layer loses. The pruner

1. checks the target can be reached at all: every selected group pruned to
   the largest sparsity of the grid, sped up, measured; if that is not
   enough it fails at once, saying what the best reachable value is;
2. runs a sensitivity analysis: each group of coupled layers (dependency
   groups) pruned alone at every sparsity of the grid, metric recorded;
3. searches one tolerance ``t`` on the metric drop: each group gets the
   largest sparsity whose drop stays within ``t``; the smallest ``t`` whose
   sped-up model meets the target wins (bisection over the measured drops;
   each candidate is really pruned and sped up on a copy, so FLOPs and
   parameters are exact and latency is measured);
4. returns the masks of that choice.

``report`` says what was asked, what was reached, the per-group ratios, and
the sensitivity curves (the job page draws them and offers them as CSV).
Whether the accuracy floor holds is known only after fine-tuning; the job
pipeline checks it and says so.

Example::

    >>> pruner = AutoTargetPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], evaluator,
    ...                           target="flops", target_ratio=0.4)           # doctest: +SKIP
    >>> _, masks = pruner.compress(); pruner.report["reached_ratio"] <= 0.4   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..analysis import count_flops_params, time_paired
from ..speedup import ModelSpeedup
from ..tensors import to_device
from .base import Masks
from .iterative import base_pruner, pruner_class
from .scored import DataDrivenPruner
from .sensitivity import SensitivityAnalysis

TARGETS = ("flops", "params", "latency")
DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _first_row(value: Any) -> Any:
    """The batch-1 slice of an example input (a tensor, or a tuple or list of them)."""
    if isinstance(value, torch.Tensor):
        return value[:1]
    if isinstance(value, (tuple, list)):
        return type(value)(_first_row(v) for v in value)
    return value


class AutoTargetPruner(DataDrivenPruner):
    """Choose per-group sparsities that meet a resource target, guided by sensitivity (see the module docstring).

    ``target_ratio`` is the fraction of the original's FLOPs / parameters /
    batch-1 CPU latency the result may keep (0.5: half). The config list
    selects the layers (its ``sparse_ratio`` is ignored: the pruner chooses);
    layers sharing a ``dependency_group_id`` are one group.
    """

    granularities = ("out_channel",)

    def __init__(self, model: nn.Module, config_list: Iterable[Mapping[str, Any]], evaluator: Any = None,
                 target: str = "flops", target_ratio: float = 0.5, accuracy_floor: float | None = None,
                 sparsities: Sequence[float] = DEFAULT_GRID, pruning_algorithm: str | type = "L1NormPruner",
                 latency_runs: int = 10):
        if target not in TARGETS:
            raise ValueError(f"AutoTargetPruner: target must be one of {', '.join(TARGETS)}, got {target!r}")
        if isinstance(target_ratio, bool) or not isinstance(target_ratio, (int, float)) or not 0 < target_ratio < 1:
            raise ValueError(f"AutoTargetPruner: target_ratio (the fraction of the original's {target} to keep) "
                             f"must be in (0, 1), got {target_ratio!r}")
        grid = sorted(float(s) for s in sparsities)
        if not grid or not all(0 < s < 1 for s in grid):
            raise ValueError(f"AutoTargetPruner: sparsities must be numbers in (0, 1), got {list(sparsities)}")
        self.base_class = pruner_class(pruning_algorithm)
        if issubclass(self.base_class, DataDrivenPruner):
            raise ValueError("AutoTargetPruner needs a data-free base pruner (L1NormPruner, L2NormPruner, FPGMPruner)")
        super().__init__(model, config_list, evaluator, training_steps=1)
        if getattr(evaluator, "dummy_input", None) is None:
            raise ValueError("AutoTargetPruner: the evaluator needs a dummy_input (to speed up and measure candidates)")
        self.target = target
        self.target_ratio = float(target_ratio)
        self.accuracy_floor = accuracy_floor
        self.grid = grid
        self.latency_runs = latency_runs
        groups: dict[Any, list[str]] = defaultdict(list)
        for name, settings in self.targets.items():
            group = settings.get("dependency_group_id")
            groups[("group", group) if group is not None else ("layer", name)].append(name)
        self.units = [sorted(members) for members in groups.values()]
        self.report: dict[str, Any] = {}
        self._measured: dict[tuple, float] = {}
        self._original_copy: nn.Module | None = None  # the unpruned model, timed beside each latency candidate
        self._original_ms: float | None = None

    # -- measuring candidates ---------------------------------------------------
    def _ratios_for(self, unit_ratios: Sequence[float]) -> dict[str, float]:
        return {name: ratio for unit, ratio in zip(self.units, unit_ratios) for name in unit}

    def resource(self, unit_ratios: Sequence[float]) -> float:
        """The target quantity of the model pruned at ``unit_ratios`` and sped up (on a copy)."""
        key = tuple(round(r, 6) for r in unit_ratios)
        if key in self._measured:
            return self._measured[key]
        dummy = self.evaluator.dummy_input
        model = copy.deepcopy(self.bound_model).eval()
        active = {n: r for n, r in self._ratios_for(unit_ratios).items() if r > 0}
        if active:
            targets = {n: self.targets[n] for n in active}
            pruner = base_pruner(self.base_class, model, targets, active, {})
            with torch.no_grad():
                masks = pruner._compute_masks()
            ModelSpeedup(model, dummy, masks).speedup_model()
        if self.target == "latency":
            value = self._latency_fraction(model, dummy) if active else 1.0
        else:
            flops, params, _ = count_flops_params(model, dummy)
            value = float(flops if self.target == "flops" else params)
        self._measured[key] = value
        return value

    def _latency_fraction(self, model: nn.Module, dummy: Any) -> float:
        """Batch-1 CPU latency of ``model`` as a fraction of the original's, timed interleaved with it.

        Timed apart, minutes apart, two medians drift with the machine's load by more than pruning
        changes them; paired rounds in one process cancel that drift (analysis/timing.py).
        """
        if self._original_copy is None:
            self._original_copy = copy.deepcopy(self.bound_model).cpu().eval()
        args = to_device(_first_row(dummy), torch.device("cpu"))
        args = args if isinstance(args, (tuple, list)) else (args,)
        original, model = self._original_copy, model.cpu()
        with torch.inference_mode():
            timing = time_paired(lambda: original(*args), lambda: model(*args), min_rounds=self.latency_runs,
                                 budget_s=2.0)
        self._original_ms = timing.before.median_ms
        return 1.0 / timing.ratio

    # -- the search ---------------------------------------------------------------
    def _compute_masks(self) -> Masks:
        original = self.resource([0.0] * len(self.units))
        budget = self.target_ratio * original
        deepest = self.resource([self.grid[-1]] * len(self.units))
        if deepest > budget:
            raise ValueError(
                f"AutoTargetPruner: the target ({self.target_ratio:.0%} of the original {self.target}) cannot be "
                f"reached by pruning the selected layers: at {self.grid[-1]:.0%} sparsity everywhere the model "
                f"keeps {deepest / original:.1%}; select more layers or relax the target"
            )
        analysis = SensitivityAnalysis(self.bound_model, self.evaluator, sparsities=self.grid, pruner=self._unit_pruner)
        curves = analysis.analysis(specified_layers=self.units)
        baseline = analysis.baseline
        drops = {label: {s: baseline - v for s, v in curve.items()} for label, curve in curves.items()}
        labels = ["+".join(unit) for unit in self.units]

        def choice(tolerance: float) -> list[float]:
            ratios = []
            for label in labels:
                allowed = [s for s, d in drops[label].items() if d <= tolerance + 1e-12]
                ratios.append(max(allowed) if allowed else 0.0)
            return ratios

        candidates = sorted({d for curve in drops.values() for d in curve.values()} | {0.0})
        low, high = 0, len(candidates) - 1
        if self.resource(choice(candidates[high])) > budget:
            # The largest drop still leaves some groups below the deepest sparsity: allow everything.
            candidates.append(float("inf"))
            high += 1
        while low < high:
            mid = (low + high) // 2
            if self.resource(choice(candidates[mid])) <= budget:
                high = mid
            else:
                low = mid + 1
        tolerance = candidates[low]
        ratios = choice(tolerance)
        reached = self.resource(ratios)
        active = {n: r for n, r in self._ratios_for(ratios).items() if r > 0}
        masks: Masks = {}
        if active:
            pruner = base_pruner(self.base_class, self.bound_model, {n: self.targets[n] for n in active}, active, {})
            masks = pruner._compute_masks()
        self.report = {
            "target": self.target,
            "target_ratio": self.target_ratio,
            # latency: fractions of the original's paired-timed latency; original_ms is its median
            "original": original,
            "reached": reached,
            **({"original_ms": self._original_ms} if self.target == "latency" else {}),
            "reached_ratio": reached / original,
            "accuracy_floor": self.accuracy_floor,
            "baseline_metric": baseline,
            "tolerated_drop": None if tolerance == float("inf") else tolerance,
            "ratios": dict(zip(labels, ratios)),
            "sparsities": self.grid,
            "sensitivity": {label: [curves[label].get(s) for s in self.grid] for label in labels},
            "candidates_measured": len(self._measured),
        }
        return masks

    def _unit_pruner(self, model: nn.Module, config_list: list[dict[str, Any]]):
        # Sensitivity trials of one group: the base pruner on the group's layers, coupled as the config says.
        entry = config_list[0]
        names = entry["op_names"]
        targets = {n: self.targets[n] for n in names}
        return base_pruner(self.base_class, model, targets, {n: entry["sparse_ratio"] for n in names}, {})
