"""The sensitivity-analysis job: curves of the metric with one group of layers pruned, no compressed model.

With ``dependency_aware`` (the default) coupled layers are analysed
together, as they must be pruned.
"""

from __future__ import annotations

import copy
from typing import Any

import torch.nn as nn

from ..pruning import SensitivityAnalysis, analysis_units
from ..pruning.iterative import pruner_class
from .context import JobContext
from .result import JobResult, artifact


def run_sensitivity(ctx: JobContext, model: nn.Module, before: dict[str, Any],
                    layers_before: list[dict[str, Any]]) -> JobResult:
    """The handler of analysis jobs."""
    params = ctx.params
    with ctx.timed("sensitivity_s"):
        evaluator = ctx.training.evaluator(ctx.test_data, ctx.test_data, copy.deepcopy(model))
        units = analysis_units(model, params["config_list"], ctx.measurement.example,
                               params.get("dependency_aware", True))
        analysis = SensitivityAnalysis(
            model, evaluator, sparsities=params["sparsities"], pruner=pruner_class(params["pruning_algorithm"]),
            early_stop_mode=params.get("early_stop_mode"), early_stop_value=params.get("early_stop_value"),
        )

        def step(done: int, total: int, layer: str, sparsity: float) -> None:
            ctx.report("analyse", f"sensitivity: {layer} at {sparsity:.0%} ({done} of {total})", done=done,
                       total=total, unit="trial")

        curves = analysis.analysis(specified_layers=units, progress=step)
        csv_path = ctx.out_dir / "sensitivity.csv"
        csv_path.write_text(analysis.to_csv())
    sensitivity = {
        "baseline_metric": analysis.baseline,
        "metric": "accuracy" if evaluator.has_labels else "agreement with the original",
        "sparsities": analysis.sparsities,
        "sensitivity": {label: [curve.get(s) for s in analysis.sparsities] for label, curve in curves.items()},
    }
    return JobResult(metrics={"before": before, "sensitivity": sensitivity}, artifacts=[artifact(csv_path, "csv")])
