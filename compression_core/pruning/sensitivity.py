"""Sensitivity analysis: prune one layer at a time over a range of sparsities and record the metric.

As NNI 2.x's ``SensitivityAnalysis``: the curves say which layers tolerate
pruning (flat) and which do not (steep), and automatic compression uses them
to pick per-layer sparsities.

Example::

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> x = torch.randn(32, 8)
    >>> reference = model(x).detach()
    >>> metric = lambda m: float(-(m(x) - reference).abs().mean())     # higher is better
    >>> result = SensitivityAnalysis(model, metric, sparsities=[0.25, 0.5]).analysis()
    >>> sorted(result), sorted(result["0"])
    (['0', '2'], [0.25, 0.5])
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import select_modules
from ..dependency import auto_set_dependency_group_ids
from .base import PRUNABLE_TYPES
from .norm import L1NormPruner

EARLY_STOP_MODES = ("minimize", "maximize", "dropped", "raised")
DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_OP_TYPES = ("Conv1d", "Conv2d", "Conv3d", "Linear")

Progress = Callable[[int, int, str, float], None]


def _metric_function(evaluator: Any) -> Callable[[nn.Module], float]:
    if hasattr(evaluator, "evaluate"):
        return evaluator.evaluate
    if callable(evaluator):
        def metric(model: nn.Module) -> float:
            with torch.no_grad():
                return float(evaluator(model))

        return metric
    raise ValueError("SensitivityAnalysis needs an evaluator (with .evaluate) or a function model -> metric")


class SensitivityAnalysis:
    """Metric of the model with one layer pruned, for every selected layer and sparsity.

    - ``evaluator``: a :class:`~compression_core.evaluation.TorchEvaluator`
      (its ``evaluate``) or a function ``model -> float`` (higher is better
      unless ``early_stop_mode`` says otherwise).
    - ``pruner``: the pruner class used for each trial (default
      ``L1NormPruner``), called as ``pruner(model, config_list)``.
    - ``early_stop_mode`` / ``early_stop_value``: stop raising one layer's
      sparsity once the metric is below (``"minimize"``) or above
      (``"maximize"``) the value, or has dropped (``"dropped"``) or risen
      (``"raised"``) by more than the value from the unpruned metric.

    The model is restored after every trial (its selected layers' tensors are
    saved and copied back), so it is never left pruned.
    """

    def __init__(
        self,
        model: nn.Module,
        evaluator: Any,
        sparsities: Sequence[float] = DEFAULT_SPARSITIES,
        pruner: Callable[..., Any] | None = None,
        early_stop_mode: str | None = None,
        early_stop_value: float | None = None,
    ):
        sparsities = sorted(float(s) for s in sparsities)
        if not sparsities or not all(0.0 < s < 1.0 for s in sparsities):
            raise ValueError(f"sparsities must be numbers in (0, 1), got {list(sparsities)}")
        if early_stop_mode is not None and early_stop_mode not in EARLY_STOP_MODES:
            raise ValueError(f"early_stop_mode must be one of {', '.join(EARLY_STOP_MODES)}, got {early_stop_mode!r}")
        if (early_stop_mode is None) != (early_stop_value is None):
            raise ValueError("early_stop_mode and early_stop_value go together")
        self.model = model
        self.metric = _metric_function(evaluator)
        self.sparsities = sparsities
        self.pruner = pruner or L1NormPruner
        self.early_stop_mode = early_stop_mode
        self.early_stop_value = early_stop_value
        self.baseline: float | None = None
        self.sensitivities: dict[str, dict[float, float]] = {}

    def target_layers(self, op_types: Iterable[str] = DEFAULT_OP_TYPES) -> list[str]:
        """Names of the layers of ``op_types`` (the default layers analysed)."""
        wanted = set(op_types)
        return [name for name, m in self.model.named_modules() if name and type(m).__name__ in wanted]

    def analysis(self, specified_layers: Sequence[str | Sequence[str]] | None = None,
                 progress: Progress | None = None) -> dict[str, dict[float, float]]:
        """``{layer: {sparsity: metric}}`` (``progress(done, total, layer, sparsity)`` after each trial).

        An item of ``specified_layers`` may be a list of coupled layers (a
        dependency group): they are pruned together, with the same channels,
        and their curve is keyed by their names joined with ``+``.
        """
        named = dict(self.model.named_modules())
        items = list(specified_layers) if specified_layers is not None else self.target_layers()
        units = [[item] if isinstance(item, str) else list(item) for item in items]
        missing = [n for unit in units for n in unit if n not in named]
        if missing:
            raise ValueError(f"no layer named {missing[0]!r} in the model")
        if not units:
            raise ValueError("no layer to analyse: the model has no Conv or Linear layer")
        self.baseline = self.metric(self.model)
        total = len(units) * len(self.sparsities)
        done = 0
        for unit in units:
            layer = "+".join(unit)
            curve: dict[float, float] = {}
            saved = {n: {k: v.detach().clone() for k, v in named[n].state_dict().items()} for n in unit}
            for sparsity in self.sparsities:
                try:
                    value = self._trial(unit, sparsity)
                finally:
                    with torch.no_grad():
                        for n in unit:
                            named[n].load_state_dict(saved[n])
                curve[sparsity] = value
                done += 1
                if progress is not None:
                    progress(done, total, layer, sparsity)
                if self._should_stop(value):
                    done += len(self.sparsities) - len(curve)
                    break
            self.sensitivities[layer] = curve
        return self.sensitivities

    def _trial(self, unit: list[str], sparsity: float) -> float:
        config: dict[str, Any] = {"op_names": unit, "sparse_ratio": sparsity}
        if len(unit) > 1:
            config["dependency_group_id"] = "unit"
        pruner = self.pruner(self.model, [config])
        pruner.compress()
        try:
            return self.metric(self.model)
        finally:
            pruner.unwrap_model()

    def _should_stop(self, value: float) -> bool:
        mode, limit = self.early_stop_mode, self.early_stop_value
        if mode is None or math.isnan(value):
            return False
        if mode == "minimize":
            return value < limit
        if mode == "maximize":
            return value > limit
        if mode == "dropped":
            return self.baseline - value > limit
        return value - self.baseline > limit

    def to_csv(self) -> str:
        """One row per layer: ``layername`` then the metric at each sparsity (empty after an early stop)."""
        return sensitivity_csv(self.sensitivities, self.sparsities)

    def export(self, path: str | Path) -> None:
        """Write :meth:`to_csv` to ``path``."""
        Path(path).write_text(self.to_csv())


def analysis_units(model: nn.Module, config_list: list[dict[str, Any]], example: torch.Tensor,
                   dependency_aware: bool) -> list[list[str]]:
    """The selected layers as analysis units: one per dependency group (they must be pruned together), or one
    per layer."""
    if not dependency_aware:
        return [[name] for name in select_modules(model, config_list, supported_types=PRUNABLE_TYPES)]
    groups: dict[Any, list[str]] = defaultdict(list)
    for entry in auto_set_dependency_group_ids(model, config_list, example):
        name = entry["op_names"][0]
        group = entry.get("dependency_group_id")
        groups[group if group is not None else name].append(name)
    if not groups:
        raise ValueError("none of the selected layers has channels that can be removed; the model page's "
                         "prunability report says which can")
    return [sorted(members) for members in groups.values()]


def sensitivity_csv(sensitivities: Mapping[str, Mapping[float, float]], sparsities: Sequence[float]) -> str:
    """CSV of ``{layer: {sparsity: metric}}``: header ``layername,<sparsity>,...``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["layername", *[f"{s:g}" for s in sparsities]])
    for layer, curve in sensitivities.items():
        by_key = {float(k): v for k, v in curve.items()}
        writer.writerow([layer, *[("" if s not in by_key else f"{by_key[s]:.6g}") for s in sparsities]])
    return out.getvalue()
