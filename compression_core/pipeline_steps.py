"""Steps of the job pipeline around the pruner: which jobs get dependency groups, the
validation split the pruners see, fine-tuning, and the verdict of an automatic compression.

Kept apart from :mod:`compression_core.pipeline` so that module reads as the job's outline.
"""

from __future__ import annotations

import time
from typing import Any

import torch.nn as nn

from . import registry
from .evaluation import TrainingOptions


def channel_pruning(spec: registry.AlgorithmSpec, params: dict[str, Any]) -> bool:
    """Does this job remove whole output channels (so dependency groups apply)?"""
    if not getattr(spec.factory, "uses_dependency_groups", True):
        return False
    granularity = spec.granularity
    if "pruning_algorithm" in params:
        granularity = registry.get_algorithm(params["pruning_algorithm"]).granularity
    entries = {entry.get("granularity", "default") for entry in params["config_list"]}
    return granularity == "out_channel" and entries <= {"default", "out_channel"}


def holdout(data, fraction: float = 0.2):
    """``data`` split into (fit, validation); the dataset's own split is already shuffled."""
    inputs, labels = data
    cut = max(1, min(len(inputs) - 1, round(len(inputs) * (1 - fraction))))
    fit = (inputs[:cut], None if labels is None else labels[:cut])
    validation = (inputs[cut:], None if labels is None else labels[cut:])
    return fit, validation


def finetune_model(model: nn.Module, training: TrainingOptions, train_data, test_data, teacher, report,
              timings: dict[str, float]) -> dict[str, Any]:
    """Fine-tune the pruned model epoch by epoch (reporting each, so a job can be cancelled between them)."""
    started = time.perf_counter()
    evaluator = training.evaluator(train_data, test_data, teacher, for_finetuning=True)
    metric = "accuracy" if train_data[1] is not None else "agreement with the original"
    result: dict[str, Any] = {"epochs": training.finetune_epochs, "metric": metric,
                              "distillation": evaluator.teacher is not None,
                              "pruned": evaluator.evaluate(model), "per_epoch": []}
    for epoch in range(1, training.finetune_epochs + 1):
        report(0.55 + 0.05 * epoch / training.finetune_epochs,
               f"fine-tuning: epoch {epoch} of {training.finetune_epochs}")
        evaluator.train(model, max_epochs=1)
        result["per_epoch"].append(evaluator.evaluate(model))
    model.eval()
    result["finetuned"] = result["per_epoch"][-1]
    timings["finetune_s"] = time.perf_counter() - started
    return result


def check_target_and_floor(auto: dict[str, Any], after: dict[str, Any], fidelity: dict[str, Any],
                 finetune: dict[str, Any] | None, warnings: list[str]) -> dict[str, Any]:
    """Say whether an automatic compression met its target and accuracy floor."""
    met = auto["reached_ratio"] <= auto["target_ratio"] + 1e-9
    auto["target_met"] = met
    if not met:
        warnings.append(f"the {auto['target']} target was not met: {auto['reached_ratio']:.1%} of the original "
                        f"left, {auto['target_ratio']:.1%} asked")
    floor = auto.get("accuracy_floor")
    if floor is not None:
        # The evaluator's metric: accuracy on labelled data, agreement with the original otherwise.
        if finetune:
            final = finetune["finetuned"]
        else:
            final = after["accuracy"] if "accuracy" in after else fidelity.get("top1_agreement") or 0.0
        auto["final_metric"] = final
        auto["accuracy_floor_met"] = final >= floor
        if final < floor:
            warnings.append(f"the accuracy floor was not met: {final:.1%} after "
                            f"{'fine-tuning' if finetune else 'pruning'}, {floor:.1%} asked; fine-tune longer, "
                            "or relax the target")
    return auto
