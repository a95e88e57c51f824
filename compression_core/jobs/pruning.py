"""The pruning job: plan dependency groups, prune, fine-tune, remove the pruned channels, measure, export.

:func:`prune_and_measure` leaves a smaller float model and its metrics;
:func:`finish_pruning` writes its files and the job's metrics. The pruning
handler runs both; the prune-then-quantize chain quantizes in between.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..algorithms import AlgorithmSpec, get_algorithm
from ..config import select_modules
from ..data import holdout
from ..evaluation import LossRecorder, steps_per_epoch
from ..io import save_model
from ..pruning import sensitivity_csv
from ..pruning.base import PRUNABLE_TYPES
from ..speedup import ModelSpeedup, auto_set_dependency_group_ids
from .context import JobContext
from .device import on_cpu
from .latency import DeployedForm
from .progress import pruner_training_steps
from .result import Artifact, JobResult, artifact
from .stages import TrainingReports

#: Plan keys that hold kept indices, not sizes: left out of the layer table's "channels after".
_PLAN_INDEX_KEYS = ("before", "kept_in", "kept_out", "kept_key", "kept_value", "kept_heads", "kept", "type")


@dataclass
class PrunedModel:
    """A pruned (and, with speedup, physically smaller) float model with what the job learnt making it."""

    model: nn.Module
    masks: dict[str, dict[str, torch.Tensor]]
    plan: dict[str, Any]
    teacher: nn.Module | None  # the original, for distillation; None without training data
    search: dict[str, Any]  # a target-searching pruner's report, else empty
    finetune: dict[str, Any] | None
    after: dict[str, Any]
    layers_after: list[dict[str, Any]]
    fidelity: dict[str, Any]


def run_pruning(ctx: JobContext, model: nn.Module, before: dict[str, Any],
                layers_before: list[dict[str, Any]]) -> JobResult:
    """The handler of pruning jobs."""
    return finish_pruning(ctx, before, layers_before, prune_and_measure(ctx, model))


def prune_and_measure(ctx: JobContext, model: nn.Module) -> PrunedModel:
    """Prune ``model`` in place (then fine-tune and speed it up as the recipe says) and measure it."""
    config_list = ctx.params["config_list"]
    if ctx.params.get("dependency_aware") and removes_channels(ctx.spec, ctx.params):
        ctx.report("dependency_groups", "finding coupled layers (dependency groups)")
        config_list = plan_dependency_groups(ctx, model, config_list)

    ctx.report("prune", f"pruning with {ctx.spec.name}")
    with ctx.timed("compress_s"):
        # The original model, before pruning changes it in place: the teacher for distillation.
        teacher = copy.deepcopy(model) if ctx.train_data is not None else None
        pruner = _build_pruner(ctx, model, config_list, teacher)
        _, masks = pruner.compress()
    search = dict(pruner.report) if ctx.spec.searches_target else {}
    if search:
        # What the search's sensitivity curves measure (the page titles its chart's axis with it).
        labelled = ctx.train_data is not None and ctx.train_data[1] is not None
        search["metric"] = "accuracy" if labelled else "agreement with the original"
    finetune = None
    if ctx.training.finetune_epochs and not ctx.recipe.speedup:
        # The masking hooks stay on while fine-tuning, so pruned weights stay zero.
        finetune = finetune_model(ctx, model, teacher)
    pruner.unwrap_model()
    masks = {name: {k: v.detach().cpu() for k, v in mask.items()} for name, mask in masks.items()}

    plan: dict[str, Any] = {}
    if ctx.recipe.speedup:
        model, plan = speed_up(ctx, model, masks)
        if ctx.training.finetune_epochs:
            finetune = finetune_model(ctx, model, teacher)

    ctx.report("measure_compressed", "measuring the compressed model")
    with ctx.timed("measure_after_s"):
        after, layers_after = ctx.measurement.measure(model, ctx.workdir, "compressed")
        fidelity = ctx.measurement.fidelity(model)
    register_pruned_forms(ctx, model, after)
    return PrunedModel(model, masks, plan, teacher, search, finetune, after, layers_after, fidelity)


def register_pruned_forms(ctx: JobContext, model: nn.Module, after: dict[str, Any]) -> None:
    """The pruned float model, eager PyTorch and its ONNX in onnxruntime, to be timed against the original's."""
    label = "pruned float32" if ctx.recipe.speedup else "pruned float32 (masked, same shapes)"
    ctx.latency.add(DeployedForm("compressed", f"{label}, PyTorch eager", "pytorch-cpu", model=model, fills=[after],
                                 headline=True, flops=after["flops"]))
    ctx.latency.add(DeployedForm("compressed", f"{label}, ONNX", "onnxruntime-cpu",
                                 onnx_path=ctx.workdir / "compressed.onnx", flops=after["flops"]))


def finish_pruning(ctx: JobContext, before: dict[str, Any], layers_before: list[dict[str, Any]],
                   pruned: PrunedModel) -> JobResult:
    """Export the pruned model and gather the job's metrics and layer table."""
    ctx.report("export", "exporting the compressed model")
    artifacts = export_pruned(ctx, pruned)
    metrics: dict[str, Any] = {"before": before, "after": pruned.after, "fidelity": pruned.fidelity}
    if pruned.finetune is not None:
        metrics["finetune"] = pruned.finetune
    if pruned.search:
        metrics["auto"] = check_target_and_floor(pruned.search, pruned.after, pruned.fidelity, pruned.finetune,
                                                 ctx.warnings)
    layers = layer_table(layers_before, pruned.layers_after, pruned.masks, pruned.plan)
    return JobResult(metrics=metrics, layers=layers, artifacts=artifacts)


def removes_channels(spec: AlgorithmSpec, params: dict[str, Any]) -> bool:
    """Does this job remove whole output channels (so dependency groups apply)?"""
    if not spec.uses_dependency_groups:
        return False
    granularity = spec.granularity
    if "pruning_algorithm" in params:
        granularity = get_algorithm(params["pruning_algorithm"]).granularity
    entries = {entry.get("granularity", "default") for entry in params["config_list"]}
    return granularity == "out_channel" and entries <= {"default", "out_channel"}


def plan_dependency_groups(ctx: JobContext, model: nn.Module, config_list: list[dict]) -> list[dict]:
    """The config list with coupled layers in one dependency group; warns about layers added or left out."""
    asked = set(select_modules(model, config_list, supported_types=PRUNABLE_TYPES))
    config_list = auto_set_dependency_group_ids(model, config_list, ctx.measurement.example)
    planned = {entry["op_names"][0] for entry in config_list}
    if asked - planned:
        ctx.warnings.append(
            "not pruned, since no channel of theirs can be removed (they produce the model's output "
            f"or a shape holds them): {', '.join(sorted(asked - planned))}"
        )
    if not planned:
        raise ValueError(
            "none of the selected layers has channels that speedup could remove; the model page's "
            "prunability report says which layers can be pruned"
        )
    if planned - asked:
        ctx.warnings.append(
            "also pruned, since they write into the same channels as selected layers: "
            f"{', '.join(sorted(planned - asked))}"
        )
    return config_list


def _build_pruner(ctx: JobContext, model: nn.Module, config_list: list[dict], teacher: nn.Module | None):
    kwargs = ctx.spec.constructor_kwargs(ctx.params)
    if ctx.spec.needs_data:
        # Pruners that compare candidates by the metric must not see the test split the job reports on.
        fit, validation = holdout(ctx.train_data)
        evaluator = ctx.training.evaluator(fit, validation, teacher)
        evaluator.step_hooks.append(TrainingReports(ctx.report, "prune", f"pruning with {ctx.spec.name}",
                                                    steps=pruner_training_steps(ctx.spec, ctx.params),
                                                    loss_of=lambda: evaluator.last_loss))
        kwargs["evaluator"] = evaluator
    try:
        return ctx.spec.factory(model, config_list, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{ctx.spec.name}: {exc}") from None


def speed_up(ctx: JobContext, model: nn.Module, masks: dict) -> tuple[nn.Module, dict[str, Any]]:
    """Remove the pruned channels; return the smaller model and its pruning plan."""
    ctx.report("speedup", "speeding up: removing pruned channels")
    with ctx.timed("speedup_s"):
        speedup = ModelSpeedup(model, ctx.measurement.example, masks)
        model = speedup.speedup_model()
    ctx.warnings.extend(speedup.warnings)
    if not speedup.plan:
        ctx.warnings.append(
            "speedup removed no channel: the masks zero single weights or no whole channel "
            "could be removed, so the model keeps its shape (sparse weights only)"
        )
    return model, speedup.plan


def finetune_model(ctx: JobContext, model: nn.Module, teacher: nn.Module | None) -> dict[str, Any]:
    """Fine-tune the pruned model epoch by epoch (reporting each, so a job can be cancelled between them).

    Besides the metric after each epoch (``per_epoch``), ``history`` keeps the training curve the job page
    draws: ``[{"epoch": 1, "loss": 0.41, "metric": 0.93}, ...]``, the loss being the mean of the epoch's
    training steps (the training step's loss: cross-entropy or distillation).
    """
    epochs = ctx.training.finetune_epochs
    with ctx.timed("finetune_s"):
        evaluator = ctx.training.evaluator(ctx.train_data, ctx.test_data, teacher, for_finetuning=True)
        metric = "accuracy" if ctx.train_data[1] is not None else "agreement with the original"
        result: dict[str, Any] = {"epochs": epochs, "metric": metric, "distillation": evaluator.teacher is not None,
                                  "pruned": evaluator.evaluate(model), "per_epoch": [], "history": []}
        per_epoch = steps_per_epoch(len(ctx.train_data[0]), evaluator.batch_size)
        evaluator.step_hooks.append(TrainingReports(ctx.report, "finetune", "fine-tuning", per_epoch=per_epoch,
                                                    epochs=epochs, loss_of=lambda: evaluator.last_loss))
        losses = LossRecorder(evaluator)
        for epoch in range(1, epochs + 1):
            ctx.report("finetune", f"fine-tuning: epoch {epoch} of {epochs}", done=epoch - 1, total=epochs,
                       unit="epoch")
            evaluator.train(model, max_epochs=1)
            value = evaluator.evaluate(model)
            result["per_epoch"].append(value)
            result["history"].append({"epoch": epoch, "loss": losses.epoch_mean(), "metric": value})
        model.eval()
        result["finetuned"] = result["per_epoch"][-1]
    return result


def export_pruned(ctx: JobContext, pruned: PrunedModel) -> list[Artifact]:
    """Write the recipe's export formats (and a target search's sensitivity curves) to the output folder."""
    out_dir, formats = ctx.out_dir, ctx.recipe.export_formats
    artifacts = []
    if "onnx" in formats:
        # Exported from a CPU copy, checked against onnxruntime on the CPU (as :meth:`.Measurement.measure` does).
        info = save_model(on_cpu(pruned.model), out_dir / "model.onnx", example_inputs=(ctx.measurement.cpu_example,))
        artifacts.append(artifact(out_dir / "model.onnx", "onnx", info["bytes"]))
    if "safetensors" in formats:
        info = save_model(pruned.model, out_dir / "model.safetensors", plan=pruned.plan)
        artifacts.append(artifact(out_dir / "model.safetensors", "safetensors", info["bytes"]))
        plan_path = out_dir / "model.plan.json"
        if plan_path.exists():
            artifacts.append(artifact(plan_path, "plan"))
    if pruned.search.get("sensitivity"):
        search = pruned.search
        csv_path = out_dir / "sensitivity.csv"
        csv_path.write_text(sensitivity_csv({label: dict(zip(search["sparsities"], values))
                                             for label, values in search["sensitivity"].items()}, search["sparsities"]))
        artifacts.append(artifact(csv_path, "csv"))
    return artifacts


def layer_table(before: list[dict], after: list[dict], masks: dict, plan: dict) -> list[dict[str, Any]]:
    """One row per layer of the original: params, FLOPs, sparsity, weight shapes and channels, before and after."""
    after_by_name = {layer["name"]: layer for layer in after}
    rows = []
    for layer in before:
        name = layer["name"]
        new = after_by_name.get(name, {})
        mask = masks.get(name, {}).get("weight")
        row = {
            "name": name,
            "type": layer["type"],
            "params_before": layer["params"],
            "params_after": new.get("params", layer["params"]),
            "flops_before": layer["flops"],
            "flops_after": new.get("flops", layer["flops"]),
            "sparsity": round(1.0 - float(mask.float().mean()), 4) if mask is not None else 0.0,
            "weight_shape_before": layer.get("weight_shape"),
            "weight_shape_after": new.get("weight_shape", layer.get("weight_shape")),
            **({"onnx": layer["onnx"]} if layer.get("onnx") else {}),
        }
        if name in plan:
            entry = plan[name]
            row["channels_before"] = entry.get("before", {})
            row["channels_after"] = {k: v for k, v in entry.items() if k not in _PLAN_INDEX_KEYS}
        rows.append(row)
    return rows


def check_target_and_floor(search: dict[str, Any], after: dict[str, Any], fidelity: dict[str, Any],
                           finetune: dict[str, Any] | None, warnings: list[str]) -> dict[str, Any]:
    """Say whether an automatic compression met its target and accuracy floor."""
    met = search["reached_ratio"] <= search["target_ratio"] + 1e-9
    search["target_met"] = met
    if not met:
        warnings.append(f"the {search['target']} target was not met: {search['reached_ratio']:.1%} of the original "
                        f"left, {search['target_ratio']:.1%} asked")
    floor = search.get("accuracy_floor")
    if floor is not None:
        # The evaluator's metric: accuracy on labelled data, agreement with the original otherwise.
        if finetune:
            final = finetune["finetuned"]
        else:
            final = after["accuracy"] if "accuracy" in after else fidelity.get("top1_agreement") or 0.0
        search["final_metric"] = final
        search["accuracy_floor_met"] = final >= floor
        if final < floor:
            warnings.append(f"the accuracy floor was not met: {final:.1%} after "
                            f"{'fine-tuning' if finetune else 'pruning'}, {floor:.1%} asked; fine-tune longer, "
                            "or relax the target")
    return search
