"""The quantization job: quantize a float model, measure each form of it side by side, export them.

A job quantizes when its algorithm is a quantizer, or after pruning (the
prune-then-quantize chain, :mod:`.chain`). Every form is measured on the
job's test split (accuracy) and against the original's outputs (fidelity):

- ``float``: the model that goes into quantization (the original, or the pruned one);
- ``simulated``: fake quantization in float32, what the quantizer's scales compute
  (PyTorch's reference model for post-training and QAT, the model itself for the
  weight quantizers Naive, DoReFa and BNN);
- ``int8_pytorch``: the real int8 model on PyTorch's x86 kernels, saved as TorchScript;
- ``int8_onnx``: the int8 QDQ ONNX model in onnxruntime;
- ``float16_gpu`` and ``bfloat16_gpu``: half precision on the GPU, on a GPU job (bfloat16 where the GPU
  computes in it; otherwise ``metrics["latency"]["skipped"]`` says why it is missing).

Sizes are those of the files users download. Latencies are timed by the
runner once the job is done, each form interleaved with the original on the
same runtime (int8 PyTorch against float32 eager, int8 ONNX against the
float32 ONNX in onnxruntime, float16 and bfloat16 against float32 on the GPU; a simulated
quantizer's model is timed but given no speedup): see :mod:`.latency`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..algorithms import AlgorithmSpec, QuantizedForm, get_algorithm
from ..analysis import output_fidelity
from ..data import holdout
from ..evaluation import LossRecorder, TrainingOptions, steps_per_epoch
from ..io import export_dynamic_int8_onnx, export_int8_onnx, onnx_session, save_model
from ..quantization import export_calibration, save_packed
from .context import JobContext
from .device import on_cpu
from .latency import HALF_GAIN, INT8_GAIN, DeployedForm
from .measure import onnx_forward
from .result import Artifact, JobResult, artifact
from .stages import TrainingReports

#: Training rows that calibrate post-training int8 (PyTorch's observers, then onnxruntime's).
CALIBRATION_SAMPLES = 512
#: The GPU's half-precision forms of a quantization job: (form, dtype, name).
GPU_HALF_FORMS = (("float16_gpu", torch.float16, "float16"), ("bfloat16_gpu", torch.bfloat16, "bfloat16"))


@dataclass
class Quantized:
    """The outcome of quantizing: the job's ``quantization`` metrics, the deliverable's ``after`` metrics
    (the real int8 model where there is one, else the simulated model) and its fidelity, and the files."""

    metrics: dict[str, Any]
    after: dict[str, Any]
    fidelity: dict[str, Any] | None
    artifacts: list[Artifact]


def run_quantization(ctx: JobContext, model: nn.Module, before: dict[str, Any],
                     layers_before: list[dict[str, Any]]) -> JobResult:
    """The handler of quantization jobs: the original model quantized."""
    teacher = copy.deepcopy(model) if ctx.train_data is not None else None
    reference = ctx.measurement.reference_outputs
    quantized = quantize(ctx, model, ctx.spec.name, ctx.params, float_metrics=before,
                         float_fidelity=output_fidelity(reference, reference), teacher=teacher)
    metrics = {"before": before, "after": quantized.after, "fidelity": quantized.fidelity,
               "quantization": quantized.metrics}
    return JobResult(metrics=metrics, artifacts=quantized.artifacts)


def quantize(ctx: JobContext, model: nn.Module, algorithm: str, params: dict[str, Any], *,
             float_metrics: dict[str, Any], float_fidelity: dict[str, Any],
             teacher: nn.Module | None) -> Quantized:
    """Quantize ``model`` (float, eval mode) with ``algorithm``; measure and export every form of it."""
    spec = get_algorithm(algorithm)
    if spec.needs_data_for(params) and ctx.train_data is None:
        raise ValueError(f"{algorithm} needs data: choose a dataset")
    ctx.report("quantize", f"quantizing with {algorithm}")
    float_model = model
    if spec.quantized_form == QuantizedForm.INT8:
        # PyTorch's int8 kernels (x86, fbgemm, qnnpack) exist only on the CPU and converting packs the weights
        # for them, so an int8 quantizer observes, trains (QAT) and converts a CPU copy of a GPU job's model.
        model = on_cpu(model)
    history: list[dict[str, Any]] = []  # a trained quantizer's loss per epoch (the page's training curve)
    with ctx.timed("quantize_s"):
        quantizer = _build_quantizer(ctx, spec, params, model, teacher, history)
        if spec.trains:
            quantized, calibration_config = quantizer.compress(max_epochs=params["epochs"])
        else:
            quantized, calibration_config = quantizer.compress()

    ctx.report("measure_quantized", "measuring the quantized model")
    with ctx.timed("measure_quantized_s"):
        forms = {"float": _float_form(float_metrics, float_fidelity)}
        after: dict[str, Any] = {"params": float_metrics["params"], "flops": float_metrics["flops"]}
        if spec.quantized_form == QuantizedForm.INT8:
            artifacts = _int8_forms(ctx, spec, model, quantizer, quantized, forms, after)
            deliverable = forms["int8_pytorch"]
        else:
            artifacts = _simulated_forms(ctx, algorithm, quantized, calibration_config, forms, after)
            deliverable = forms["simulated"]
        if ctx.device.type == "cuda":
            _gpu_half_forms(ctx, float_model, float_metrics["flops"], forms)
        ctx.latency.copy_when_measured(forms["float"], float_metrics)
        calibration_path = ctx.out_dir / "calibration.json"
        export_calibration(calibration_config, calibration_path)
        artifacts.append(artifact(calibration_path, "calibration"))

    after.update({k: v for k, v in deliverable.items() if k == "accuracy"})
    report = quantizer.report
    metrics = {
        "algorithm": algorithm,
        "real_int8": spec.quantized_form == QuantizedForm.INT8,
        "mode": report.mode,
        "backend": report.backend,
        "forms": forms,
        "layers": layer_bits(calibration_config, report),
        "kept_float": dict(report.kept_float),
        "calibration_batches": report.calibration_batches,
        **({"training": {"epochs": params["epochs"], "history": history}} if spec.trains else {}),
    }
    return Quantized(metrics, after, deliverable.get("fidelity"), artifacts)


def _float_form(float_metrics: dict[str, Any], float_fidelity: dict[str, Any]) -> dict[str, Any]:
    return {
        "label": "float32 (before quantization)",
        **{k: float_metrics[k] for k in ("accuracy",) if k in float_metrics},
        "fidelity": float_fidelity,
        "bytes": float_metrics["weights_bytes"],
        **{k: v for k, v in float_metrics.items() if k.startswith("latency_")},
    }


def _int8_forms(ctx: JobContext, spec: AlgorithmSpec, model: nn.Module, quantizer: Any, quantized: nn.Module,
                forms: dict[str, dict[str, Any]], after: dict[str, Any]) -> list[Artifact]:
    """Measure and export a real int8 model: its simulated twin, TorchScript int8 and int8 ONNX."""
    measurement, out_dir, report = ctx.measurement, ctx.out_dir, quantizer.report
    if quantizer.simulated_model is not None:
        forms["simulated"] = {"label": "simulated (fake quantization, float32)",
                              **measurement.quality(quantizer.simulated_model.eval())}
    torch.backends.quantized.engine = report.backend
    info = save_model(quantized, out_dir / "model.int8.pt", example_inputs=(measurement.cpu_example,))
    artifacts = [artifact(out_dir / "model.int8.pt", "torchscript-int8", info["bytes"])]
    label = f"int8, PyTorch ({report.backend} kernels)"
    forms["int8_pytorch"] = {"label": label, **measurement.quality(quantized), "bytes": info["bytes"]}
    ctx.latency.add(DeployedForm("int8_pytorch", label, "pytorch-cpu", model=quantized,
                                 fills=[forms["int8_pytorch"], after], headline=True, flops=after["flops"],
                                 gain=INT8_GAIN))
    ctx.report("export_int8_onnx", "exporting int8 ONNX")
    try:
        if report.mode == "dynamic":
            onnx_info = export_dynamic_int8_onnx(model, measurement.cpu_example, out_dir / "model.int8.onnx")
        else:
            # QAT: the trained float weights; onnxruntime derives the ranges again from the same data.
            source = quantizer.trained_float_model() if spec.trains else model
            onnx_info = export_int8_onnx(source, ctx.train_data[0][:CALIBRATION_SAMPLES], out_dir / "model.int8.onnx")
    except Exception as exc:  # noqa: BLE001 - the PyTorch int8 model stands on its own
        ctx.warnings.append(f"int8 ONNX export failed, the PyTorch int8 model is still there: {exc}")
    else:
        session = onnx_session(onnx_info["path"], threads=torch.get_num_threads())
        artifacts.append(artifact(out_dir / "model.int8.onnx", "onnx-int8", onnx_info["bytes"]))
        kind = "dynamic" if report.mode == "dynamic" else "QDQ"
        label = f"int8, ONNX {kind} (onnxruntime)"
        forms["int8_onnx"] = {"label": label, **measurement.quality(onnx_forward(session)), "bytes": onnx_info["bytes"]}
        ctx.latency.add(DeployedForm("int8_onnx", label, "onnxruntime-cpu", onnx_path=onnx_info["path"],
                                     fills=[forms["int8_onnx"]], flops=after["flops"], gain=INT8_GAIN))
        after["onnx_bytes"] = onnx_info["bytes"]
    after["weights_bytes"] = info["bytes"]
    return artifacts


def _simulated_forms(ctx: JobContext, algorithm: str, quantized: nn.Module, calibration_config: dict[str, Any],
                     forms: dict[str, dict[str, Any]], after: dict[str, Any]) -> list[Artifact]:
    """Measure and export a simulated quantizer's model: ONNX, float weights and the packed weights."""
    measurement, out_dir = ctx.measurement, ctx.out_dir
    forms["simulated"] = {"label": "simulated (float32 kernels; file: weights packed at their bits)",
                          **measurement.quality(quantized.eval())}
    # Named apart from model.onnx / model.safetensors, which hold the pruned float model in a mixed recipe.
    # Exported from a CPU copy, checked against onnxruntime on the CPU (as :meth:`.Measurement.measure` does).
    info = save_model(on_cpu(quantized), out_dir / "model.simulated.onnx", example_inputs=(measurement.cpu_example,))
    weights = save_model(quantized, out_dir / "model.simulated.safetensors")
    packed = save_packed(quantized, calibration_config, out_dir / "model.packed.safetensors")
    artifacts = [artifact(out_dir / "model.simulated.onnx", "onnx", info["bytes"]),
                 artifact(out_dir / "model.simulated.safetensors", "safetensors", weights["bytes"]),
                 artifact(out_dir / "model.packed.safetensors", "packed-weights", packed["bytes"])]
    forms["simulated"]["bytes"] = packed["bytes"]
    ctx.latency.add(DeployedForm("simulated", f"{algorithm} simulated (float32 kernels), PyTorch eager", "pytorch-cpu",
                                 model=quantized, fills=[forms["simulated"], after], headline=True, simulated=True))
    ctx.latency.add(DeployedForm("simulated", f"{algorithm} simulated (float32 kernels), ONNX", "onnxruntime-cpu",
                                 onnx_path=out_dir / "model.simulated.onnx", simulated=True))
    after.update({"weights_bytes": packed["bytes"], "onnx_bytes": info["bytes"]})
    ctx.warnings.append(f"{algorithm} simulates quantization: the weights lie on the quantization grid and are "
                        "stored packed at their bit width (model.packed.safetensors, read back with "
                        "compression_core.quantization.load_packed), but they compute in float32, so the model "
                        "is not faster; PostTrainingQuantizer or QATQuantizer give a real int8 model")
    return artifacts


def _build_quantizer(ctx: JobContext, spec: AlgorithmSpec, params: dict[str, Any], model: nn.Module,
                     teacher: nn.Module | None, history: list[dict[str, Any]]) -> Any:
    kwargs = spec.constructor_kwargs(params)
    if spec.trains:
        # The quantizer's own training options (in a chain, not the pruner's).
        training = TrainingOptions.from_params(params.get("training"))
        fit, validation = holdout(ctx.train_data)
        evaluator = training.evaluator(fit, validation, teacher, for_finetuning=True)
        per_epoch = steps_per_epoch(len(fit[0]), training.batch_size)
        evaluator.step_hooks.append(TrainingReports(ctx.report, "quantize", "quantization-aware training",
                                                    per_epoch=per_epoch, epochs=params["epochs"], log_epochs=True,
                                                    loss_of=lambda: evaluator.last_loss))
        evaluator.step_hooks.append(_loss_history_hook(per_epoch, LossRecorder(evaluator), history))
        kwargs["evaluator"] = evaluator
    elif spec.needs_data_for(params):
        kwargs["calibration_data"] = ctx.train_data[0][:CALIBRATION_SAMPLES]
    return spec.factory(model, params.get("config_list"), **kwargs)


def _loss_history_hook(per_epoch: int, losses: LossRecorder,
                       history: list[dict[str, Any]]) -> Callable[[nn.Module], None]:
    """A step hook adding each finished epoch's mean training loss to ``history`` (``{"epoch": 1, "loss": 0.41}``)."""
    steps = {"done": 0}

    def hook(model: nn.Module) -> None:
        steps["done"] += 1
        if steps["done"] % per_epoch == 0:
            history.append({"epoch": steps["done"] // per_epoch, "loss": losses.epoch_mean()})

    return hook


def layer_bits(calibration_config: Mapping[str, Any], report: Any) -> list[dict[str, Any]]:
    """One row per quantized layer: its int8 (or simulated) type and the bits of its weight and activations."""
    rows = []
    for name, record in calibration_config.items():
        row: dict[str, Any] = {"name": name, "type": record.get("module_type", report.quantized.get(name, ""))}
        for key, label in (("weight", "weight"), ("_input_0", "input"), ("_output_0", "output")):
            target = record.get(key) or record.get(label)
            if isinstance(target, Mapping) and "quant_bits" in target:
                text = f"{target.get('quant_dtype', '')} {target.get('quant_scheme', '')}".strip()
                if "quant_min" in target and "quant_max" in target:
                    text += f" [{target['quant_min']}, {target['quant_max']}]"
                row[label] = {"bits": target["quant_bits"], "text": text}
        rows.append(row)
    for name, reason in report.kept_float.items():
        rows.append({"name": name, "type": "float32", "kept_float": reason})
    return rows


def _gpu_half_forms(ctx: JobContext, model: nn.Module, flops: float, forms: dict[str, dict[str, Any]]) -> None:
    """float16 and bfloat16 on the job's GPU: tensor-core kernels, half the weight bytes (each timed against
    float32 on the GPU). bfloat16 only where the GPU computes in it (Ampere and newer), not emulated."""
    for key, dtype, name in GPU_HALF_FORMS:
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
            ctx.latency.skipped.append({"runtime": "pytorch-cuda", "form": key, "reason": (
                f"bfloat16 is not offered: this GPU ({torch.cuda.get_device_name(ctx.device)}) has no "
                "bfloat16 arithmetic (it needs compute capability 8.0 or newer)")})
            continue
        forms[key] = _gpu_half_form(ctx, model, flops, key, dtype, name)


def _gpu_half_form(ctx: JobContext, model: nn.Module, flops: float, key: str, dtype: torch.dtype,
                   name: str) -> dict[str, Any]:
    device = ctx.device
    half = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    form = {"label": f"{name}, GPU", **ctx.measurement.quality(lambda x: half(x.to(device=device, dtype=dtype))),
            "bytes": sum(p.numel() * p.element_size() for p in half.parameters())}
    ctx.latency.add(DeployedForm(key, f"{name}, PyTorch on the GPU", "pytorch-cuda", model=half, dtype=dtype,
                                 fills=[form], flops=flops, gain=HALF_GAIN))
    return form
