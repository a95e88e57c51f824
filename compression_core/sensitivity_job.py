"""The sensitivity-analysis job: curves of the metric with one group of layers pruned, no compressed model.

Registered as ``SensitivityAnalysis`` (kind ``analysis``); the pipeline
calls :func:`run_sensitivity_job` instead of pruning. With
``dependency_aware`` (the default) coupled layers are analysed together,
as they must be pruned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .analysis import SensitivityAnalysis
from .config import select_modules
from .pruning.base import PRUNABLE_TYPES
from .pruning.iterative import pruner_class
from .speedup import auto_set_dependency_group_ids


def analysis_units(model: nn.Module, config_list: list[dict[str, Any]], example: torch.Tensor,
                   dependency_aware: bool) -> list[list[str]]:
    """The selected layers as analysis units: one per dependency group, or one per layer."""
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


def run_sensitivity_job(model: nn.Module, params: dict[str, Any], evaluator: Any, example: torch.Tensor,
                        out_dir: Path, progress: Callable[[float, str], None]) -> tuple[dict[str, Any], dict]:
    """Run the analysis; return ``(sensitivity metrics, CSV artifact)``."""
    units = analysis_units(model, params["config_list"], example, params.get("dependency_aware", True))
    analysis = SensitivityAnalysis(
        model, evaluator, sparsities=params["sparsities"], pruner=pruner_class(params["pruning_algorithm"]),
        early_stop_mode=params.get("early_stop_mode"), early_stop_value=params.get("early_stop_value"),
    )

    def step(done: int, total: int, layer: str, sparsity: float) -> None:
        progress(0.1 + 0.8 * done / total, f"sensitivity: {layer} at {sparsity:.0%} ({done} of {total})")

    curves = analysis.analysis(specified_layers=units, progress=step)
    csv_path = out_dir / "sensitivity.csv"
    csv_path.write_text(analysis.to_csv())
    metrics = {
        "baseline_metric": analysis.baseline,
        "metric": "accuracy" if evaluator.has_labels else "agreement with the original",
        "sparsities": analysis.sparsities,
        "sensitivity": {label: [curve.get(s) for s in analysis.sparsities] for label, curve in curves.items()},
    }
    return metrics, {"name": csv_path.name, "kind": "csv", "bytes": csv_path.stat().st_size}


def register_sensitivity_analysis() -> None:
    from .pruning.catalog import DATA_FREE_BASES
    from .registry import AlgorithmSpec, pruning_schema, register

    register(AlgorithmSpec(
        name="SensitivityAnalysis", kind="analysis",
        description="Prunes one group of coupled layers at a time over a range of sparsities and records the "
        "metric: curves on the job page and a CSV, no compressed model (what to prune gently, what freely).",
        paper="Li et al., Pruning Filters for Efficient ConvNets (ICLR 2017), sensitivity analysis",
        paper_url="https://arxiv.org/abs/1608.08710", factory=SensitivityAnalysis, needs_data=True,
        granularity="out_channel",
        params_schema=pruning_schema({
            "sparsities": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                           "default": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                           "description": "Sparsities tried on each group"},
            "pruning_algorithm": {"type": "string", "enum": DATA_FREE_BASES, "default": "L1NormPruner",
                                  "description": "The pruner of each trial"},
            "early_stop_mode": {"type": "string", "enum": ["minimize", "maximize", "dropped", "raised"],
                                "description": "Stop a group's curve once the metric passes early_stop_value"},
            "early_stop_value": {"type": "number", "description": "Threshold of early_stop_mode"},
        }, quantize_after=False),
    ))
