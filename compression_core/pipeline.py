"""Run one compression recipe end to end, reporting progress via a callback.

The pipeline knows nothing of Django or Celery: the worker builds a
:class:`Recipe` from a job row and passes a ``progress(fraction, message)``
callable; the same recipe runs from a shell with
``python -m compression_core run recipe.json``.

Example::

    recipe = Recipe(
        model=ModelSource(architecture="digits_cnn"),
        input_shape=[1, 8, 8],
        algorithm="L1NormPruner",
        params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]},
        dataset="digits",
        output_dir="out/",
    )
    result = run_pipeline(recipe, progress=lambda f, msg: print(f"{f:.0%} {msg}"))
    result["metrics"]["after"]["params"]
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import registry
from .analysis import count_flops_params, measure_latency, model_summary, output_fidelity, sensitivity_csv
from .models import ARCHITECTURES, build_architecture
from .config import select_modules
from .data import DatasetSource
from .datasets import evaluate_accuracy
from .evaluation import TrainingOptions
from .io import load_model, onnx_input_shapes, save_model
from .pipeline_steps import channel_pruning, check_target_and_floor, finetune_model, holdout
from .pruning.base import PRUNABLE_TYPES
from .quantization_job import Measurement, check_quantizer, requires_data, run_quantization
from .sensitivity_job import run_sensitivity_job
from .speedup import ModelSpeedup, SpeedupError, auto_set_dependency_group_ids, prunability_report

Progress = Callable[[float, str], None]

FIDELITY_SAMPLES = 32
FIDELITY_SEED = 1234


class JobCancelled(Exception):
    """Raised by a progress callback to stop the pipeline between steps."""


@dataclass
class ModelSource:
    """Where the model comes from: an uploaded file, a built-in architecture, or both
    (architecture plus a weights file)."""

    path: str | None = None
    architecture: str | None = None
    num_classes: int | None = None
    trusted: bool = False

    def load(self) -> nn.Module:
        if self.path:
            model = load_model(
                self.path, architecture=self.architecture, num_classes=self.num_classes, trusted=self.trusted
            )
        elif self.architecture:
            torch.manual_seed(0)
            model = build_architecture(self.architecture, num_classes=self.num_classes)
        else:
            raise ValueError("a model source needs a file path or an architecture name")
        return model.eval()

    def default_input_shape(self) -> list[int] | None:
        if self.architecture:
            return list(ARCHITECTURES[self.architecture].input_shape)
        if self.path:
            shapes = onnx_input_shapes(self.path)
            if len(shapes) != 1:
                raise ValueError(f"the model has {len(shapes)} inputs; Condense handles single-input models so far")
            shape = shapes[0][1:]
            if any(dim is None or dim <= 0 for dim in shape):
                return None
            return list(shape)
        return None


@dataclass
class Recipe:
    model: ModelSource
    input_shape: list[int]
    algorithm: str
    params: dict[str, Any]
    speedup: bool = True
    # A built-in dataset name, or a DatasetSource (or its fields as a dict) for a file.
    dataset: str | dict | DatasetSource | None = None
    device: str = "cpu"
    output_dir: str = "."
    latency_batch_sizes: tuple[int, ...] = (1, 16)
    latency_runs: int = 10
    export_formats: tuple[str, ...] = field(default=("onnx", "safetensors"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        data = dict(data)
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"recipe: unknown key {unknown[0]!r}")
        data["model"] = ModelSource(**data.get("model", {}))
        for key in ("latency_batch_sizes", "export_formats"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_dataset(dataset: str | dict | DatasetSource | None, input_shape: list[int]) -> None:
    source = DatasetSource.from_recipe(dataset)
    if source is not None:
        source.check_fits(input_shape)


def inspect_model(
    source: ModelSource, input_shape: list[int] | None = None, model: nn.Module | None = None
) -> dict[str, Any]:
    """Describe a model (loaded from ``source`` unless given): input shape, layer table, totals.

    Raises ``ValueError`` (``ModelFormatError`` is one) with a message fit for
    the user when the model cannot be loaded or run.
    """
    model = model if model is not None else source.load()
    shape = list(input_shape) if input_shape else source.default_input_shape()
    if not shape:
        raise ValueError("the model's input shape is dynamic; give the input shape (e.g. [3, 224, 224])")
    example = torch.randn(1, *shape)
    try:
        summary = model_summary(model, example)
    except Exception as exc:
        raise ValueError(f"the model does not run on an input of shape {[1, *shape]}: {exc}") from exc
    summary["input_shape"] = shape
    summary["prunable_layers"] = [name for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    try:
        summary["prunability"] = prunability_report(model, example)
    except SpeedupError as exc:
        # Still a usable model (fine-grained pruning needs no graph); say why
        # channel pruning cannot be planned.
        summary["prunability"] = {"error": str(exc), "groups": [], "unprunable": [], "warnings": []}
    return summary


def validate_recipe(recipe: Recipe, model: nn.Module | None = None) -> dict[str, Any]:
    """Check the recipe against its model before any long work starts.

    Returns the validated params (defaults filled, config list canonical).
    """
    spec = registry.get_algorithm(recipe.algorithm)
    params = registry.validate_params(recipe.algorithm, recipe.params)
    _check_dataset(recipe.dataset, recipe.input_shape)
    for name, needs in _data_needs(spec, params).items():
        if needs and not recipe.dataset:
            raise ValueError(f"{name} needs data: choose a dataset")
    if spec.kind == "quantization":
        if TrainingOptions.from_params(params.get("training")).finetune_epochs:
            raise ValueError("training.finetune_epochs is fine-tuning after pruning; a quantization-aware trainer "
                             "trains for its own 'epochs'")
        check_quantizer(spec, params, model if model is not None else recipe.model.load())
        return params
    check_config = getattr(spec.factory, "check_config", None)
    if check_config is not None:
        check_config(params["config_list"])
    training = TrainingOptions.from_params(params.get("training"))
    if training.finetune_epochs and not recipe.dataset:
        raise ValueError("fine-tuning needs data: choose a dataset, or set finetune_epochs to 0")
    model = model if model is not None else recipe.model.load()
    supported = getattr(spec.factory, "supported_types", PRUNABLE_TYPES)
    selected = select_modules(model, params["config_list"], supported_types=supported)
    if not selected:
        names = ", ".join(t.__name__ for t in supported)
        raise ValueError(f"the config list selects no layer {recipe.algorithm} can prune in this model ({names})")
    if params.get("quantization"):
        then = params["quantization"]
        check_quantizer(registry.get_algorithm(then["algorithm"]), then["params"], model)
    return params


def _data_needs(spec: registry.AlgorithmSpec, params: dict[str, Any]) -> dict[str, bool]:
    """Which steps of the job need the dataset's train split: ``{step name: needs it}``."""
    if spec.kind == "quantization":
        return {spec.name: requires_data(spec, params)}
    needs = {spec.name: spec.needs_data}
    if params.get("quantization"):
        then = params["quantization"]
        needs[then["algorithm"]] = requires_data(registry.get_algorithm(then["algorithm"]), then["params"])
    return needs


class _Reporter:
    def __init__(self, progress: Progress | None):
        self.progress = progress or (lambda fraction, message: None)
        self.log: list[str] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.log.append(message)
        self.progress(fraction, message)


def _measure(
    model: nn.Module,
    example: torch.Tensor,
    recipe: Recipe,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None,
    workdir: Path,
    tag: str,
) -> dict[str, Any]:
    flops, params, layers = count_flops_params(model, example)
    metrics: dict[str, Any] = {"params": int(params), "flops": int(flops)}
    onnx_path = workdir / f"{tag}.onnx"
    metrics["onnx_bytes"] = save_model(model, onnx_path, example_inputs=(example,))["bytes"]
    weights_path = workdir / f"{tag}.safetensors"
    metrics["weights_bytes"] = save_model(model, weights_path)["bytes"]
    for batch in recipe.latency_batch_sizes:
        lat = measure_latency(model, example, batch_size=batch, runs=recipe.latency_runs, device="cpu")
        metrics[f"latency_cpu_b{batch}_ms"] = lat["median_ms"]
    if recipe.device == "gpu" and torch.cuda.is_available():
        gpu_model = copy.deepcopy(model).cuda()
        for batch in recipe.latency_batch_sizes:
            lat = measure_latency(gpu_model, example.cuda(), batch_size=batch, runs=recipe.latency_runs, device="cuda")
            metrics[f"latency_gpu_b{batch}_ms"] = lat["median_ms"]
        del gpu_model
    if eval_data is not None:
        metrics["accuracy"] = evaluate_accuracy(model, *eval_data)
    metrics["_layers"] = layers
    return metrics


def _layer_table(before: list[dict], after: list[dict], masks: dict, plan: dict) -> list[dict[str, Any]]:
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
        }
        if name in plan:
            entry = plan[name]
            row["channels_before"] = entry.get("before", {})
            indices = ("before", "kept_in", "kept_out", "kept_key", "kept_value", "kept_heads", "kept", "type")
            row["channels_after"] = {k: v for k, v in entry.items() if k not in indices}
        rows.append(row)
    return rows


def run_pipeline(recipe: Recipe, progress: Progress | None = None) -> dict[str, Any]:
    """Load, measure, compress, speed up, measure again and export.

    Returns ``{"metrics": {"before", "after", "fidelity"}, "layers", "artifacts",
    "warnings", "timings", "log"}``. Artifacts are written to ``recipe.output_dir``.
    """
    report = _Reporter(progress)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if recipe.device == "gpu" and not torch.cuda.is_available():
        warnings.append("a GPU was asked for, but this worker has no CUDA device: everything ran on the CPU")
    report(0.02, "loading model")
    model = recipe.model.load()
    params = validate_recipe(recipe, model)
    example = torch.randn(1, *recipe.input_shape, generator=torch.Generator().manual_seed(0))
    eval_data = None
    fidelity_inputs = torch.randn(
        FIDELITY_SAMPLES, *recipe.input_shape, generator=torch.Generator().manual_seed(FIDELITY_SEED)
    )
    spec = registry.get_algorithm(recipe.algorithm)
    training = TrainingOptions.from_params(params.get("training"))
    dataset = DatasetSource.from_recipe(recipe.dataset)
    train_data = test_data = None
    if dataset is not None:
        inputs, labels = dataset.load(recipe.input_shape, split="test")
        test_data = (inputs, labels)
        if labels is not None:
            eval_data = (inputs, labels)
        fidelity_inputs = inputs[:256]
        if any(_data_needs(spec, params).values()) or training.finetune_epochs:
            train_data = dataset.load(recipe.input_shape, split="train")
    with torch.inference_mode():
        reference_outputs = model(fidelity_inputs)
    measurement = Measurement(example, eval_data, fidelity_inputs, reference_outputs, recipe.latency_batch_sizes,
                              recipe.latency_runs, recipe.device)
    timings["load_s"] = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="condense-") as tmp:
        workdir = Path(tmp)
        report(0.08, "measuring the original model")
        t0 = time.perf_counter()
        before = _measure(model, example, recipe, eval_data, workdir, "original")
        timings["measure_before_s"] = time.perf_counter() - t0
        if spec.kind == "analysis":
            t0 = time.perf_counter()
            evaluator = training.evaluator(test_data, test_data, copy.deepcopy(model))
            sensitivity, csv_artifact = run_sensitivity_job(model, params, evaluator, example, out_dir, report)
            timings["sensitivity_s"] = time.perf_counter() - t0
            before.pop("_layers")
            return _result({"before": before, "sensitivity": sensitivity}, [], [csv_artifact], warnings, timings,
                           started, report)
        if spec.kind == "quantization":
            before.pop("_layers")
            teacher = copy.deepcopy(model) if train_data is not None else None
            quantization, after, artifacts = run_quantization(
                model, recipe.algorithm, params, float_metrics=before,
                float_fidelity=output_fidelity(reference_outputs, reference_outputs), measurement=measurement,
                train_data=train_data, teacher=teacher, out_dir=out_dir, progress=report, timings=timings,
                warnings=warnings)
            fidelity = after.pop("fidelity")
            return _result({"before": before, "after": after, "fidelity": fidelity, "quantization": quantization},
                           [], artifacts, warnings, timings, started, report)

        config_list = params["config_list"]
        if params.get("dependency_aware") and channel_pruning(spec, params):
            report(0.35, "finding coupled layers (dependency groups)")
            asked = set(select_modules(model, config_list, supported_types=PRUNABLE_TYPES))
            config_list = auto_set_dependency_group_ids(model, config_list, example)
            planned = {entry["op_names"][0] for entry in config_list}
            if asked - planned:
                warnings.append(
                    "not pruned, since no channel of theirs can be removed (they produce the model's output "
                    f"or a shape holds them): {', '.join(sorted(asked - planned))}"
                )
            if not planned:
                raise ValueError(
                    "none of the selected layers has channels that speedup could remove; the model page's "
                    "prunability report says which layers can be pruned"
                )
            if planned - asked:
                warnings.append(
                    "also pruned, since they write into the same channels as selected layers: "
                    f"{', '.join(sorted(planned - asked))}"
                )

        report(0.4, f"pruning with {recipe.algorithm}")
        t0 = time.perf_counter()
        # The original model, before pruning changes it in place: the teacher for distillation.
        teacher = copy.deepcopy(model) if train_data is not None else None
        kwargs = spec.constructor_kwargs(params)
        if spec.needs_data:
            # Pruners that compare candidates by the metric must not see the test split the job reports on.
            fit, validation = holdout(train_data)
            kwargs["evaluator"] = training.evaluator(fit, validation, teacher)
        try:
            pruner = spec.factory(model, config_list, **kwargs)
        except TypeError as exc:
            raise ValueError(f"{recipe.algorithm}: {exc}") from None
        _, masks = pruner.compress()
        timings["compress_s"] = time.perf_counter() - t0
        auto = dict(getattr(pruner, "report", None) or {})
        finetune = None
        if training.finetune_epochs and not recipe.speedup:
            # The masking hooks stay on while fine-tuning, so pruned weights stay zero.
            finetune = finetune_model(model, training, train_data, test_data, teacher, report, timings)
        pruner.unwrap_model()
        masks = {name: {k: v.detach().cpu() for k, v in mask.items()} for name, mask in masks.items()}

        plan: dict[str, Any] = {}
        if recipe.speedup:
            report(0.5, "speeding up: removing pruned channels")
            t0 = time.perf_counter()
            speedup = ModelSpeedup(model, example, masks)
            model = speedup.speedup_model()
            plan = speedup.plan
            warnings.extend(speedup.warnings)
            timings["speedup_s"] = time.perf_counter() - t0
            if not plan:
                warnings.append(
                    "speedup removed no channel: the masks zero single weights or no whole channel "
                    "could be removed, so the model keeps its shape (sparse weights only)"
                )
            if training.finetune_epochs:
                finetune = finetune_model(model, training, train_data, test_data, teacher, report, timings)

        report(0.6, "measuring the compressed model")
        t0 = time.perf_counter()
        after = _measure(model, example, recipe, eval_data, workdir, "compressed")
        with torch.inference_mode():
            fidelity = output_fidelity(reference_outputs, model(fidelity_inputs))
        timings["measure_after_s"] = time.perf_counter() - t0

        quantization = None
        if params.get("quantization"):
            then = params["quantization"]
            quantization, quantized_after, quantized_artifacts = run_quantization(
                model, then["algorithm"], then["params"], float_metrics=after, float_fidelity=fidelity,
                measurement=measurement, train_data=train_data, teacher=teacher, out_dir=out_dir, progress=report,
                timings=timings, warnings=warnings)

    report(0.85, "exporting the compressed model")
    artifacts = []
    if "onnx" in recipe.export_formats:
        info = save_model(model, out_dir / "model.onnx", example_inputs=(example,))
        artifacts.append({"name": "model.onnx", "kind": "onnx", "bytes": info["bytes"]})
    if "safetensors" in recipe.export_formats:
        info = save_model(model, out_dir / "model.safetensors", plan=plan)
        artifacts.append({"name": "model.safetensors", "kind": "safetensors", "bytes": info["bytes"]})
        plan_path = out_dir / "model.plan.json"
        if plan_path.exists():
            artifacts.append({"name": plan_path.name, "kind": "plan", "bytes": plan_path.stat().st_size})
    if auto.get("sensitivity"):
        csv_path = out_dir / "sensitivity.csv"
        csv_path.write_text(sensitivity_csv({label: dict(zip(auto["sparsities"], values))
                                             for label, values in auto["sensitivity"].items()}, auto["sparsities"]))
        artifacts.append({"name": csv_path.name, "kind": "csv", "bytes": csv_path.stat().st_size})

    layers = _layer_table(before.pop("_layers"), after.pop("_layers"), masks, plan)
    metrics = {"before": before, "after": after, "fidelity": fidelity}
    if finetune is not None:
        metrics["finetune"] = finetune
    if auto:
        metrics["auto"] = check_target_and_floor(auto, after, fidelity, finetune, warnings)
    if quantization is not None:
        # "after" is the deliverable: the quantized model; "pruned" the float model it was made from.
        metrics.update({"pruned": after, "after": quantized_after, "fidelity": quantized_after.pop("fidelity"),
                        "quantization": quantization})
        artifacts += quantized_artifacts
    return _result(metrics, layers, artifacts, warnings, timings, started, report)


def _result(metrics: dict[str, Any], layers: list[dict], artifacts: list[dict], warnings: list[str],
            timings: dict[str, float], started: float, report: _Reporter) -> dict[str, Any]:
    timings["total_s"] = time.perf_counter() - started
    report(1.0, "done")
    return {
        "metrics": metrics,
        "layers": layers,
        "artifacts": artifacts,
        "warnings": warnings,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "log": report.log,
    }
