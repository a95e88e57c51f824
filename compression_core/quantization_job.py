"""The quantization step of a job: quantize the float model, measure each form of it, export them.

A job quantizes when its algorithm is a quantizer, or after pruning when a
pruning job's params carry ``"quantization": {"algorithm": ..., "params": ...}``
(prune, fine-tune, speed up, then quantize the smaller float model).

Every form is measured on the job's test split (accuracy) and against the
original model's outputs (fidelity):

- ``float``: the model that goes into quantization (the original, or the pruned one);
- ``simulated``: fake quantization in float32, what the quantizer's scales compute
  (PyTorch's reference model for post-training and QAT, the model itself for the
  weight quantizers Naive, DoReFa and BNN);
- ``int8_pytorch``: the real int8 model on PyTorch's x86 kernels, saved as TorchScript;
- ``int8_onnx``: the int8 QDQ ONNX model in onnxruntime;
- ``float16_gpu``: half precision on the worker's GPU, when it has one.

Sizes are those of the files users download; latencies are medians at
batch 1 and a larger batch on the worker's CPU (the same threads for PyTorch
and onnxruntime).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import registry
from .analysis import measure_latency, output_fidelity
from .evaluation import TorchEvaluator, TrainingOptions
from .io import export_dynamic_int8_onnx, export_int8_onnx, onnx_session, save_model
from .pipeline_steps import holdout
from .quantization import export_calibration, save_packed

Progress = Callable[[float, str], None]

#: Training rows that calibrate post-training int8 (PyTorch's observers, then onnxruntime's).
CALIBRATION_SAMPLES = 512


def validate_quantize_after(value: Mapping[str, Any]) -> dict[str, Any]:
    """A pruning job's ``quantization`` param checked against the quantizer's own schema."""
    spec = registry.get_algorithm(value["algorithm"])
    if spec.kind != "quantization":
        quantizers = ", ".join(s.name for s in registry.all_algorithms() if s.kind == "quantization")
        raise ValueError(f"params.quantization.algorithm: {spec.name} is a {spec.kind} algorithm; "
                         f"choose a quantizer: {quantizers}")
    try:
        params = registry.validate_params(spec.name, value.get("params") or {})
    except ValueError as exc:
        raise ValueError(f"params.quantization: {exc}") from None
    return {"algorithm": spec.name, "params": params}


def requires_data(spec: registry.AlgorithmSpec, params: Mapping[str, Any]) -> bool:
    """Does this quantization need the job's dataset? (Dynamic post-training int8 and Naive do not.)"""
    if params.get("mode") == "dynamic":
        return False
    return spec.needs_data


def check_quantizer(spec: registry.AlgorithmSpec, params: Mapping[str, Any], model: nn.Module) -> None:
    """Build the quantizer on ``model`` (no data, nothing run): its config and layer checks raise here,
    before the job is queued."""
    kwargs = spec.constructor_kwargs(params)
    if getattr(spec.factory, "quantization_aware", False):
        kwargs["evaluator"] = _placeholder_evaluator()
    elif requires_data(spec, params):
        kwargs["calibration_data"] = torch.zeros(1)
    spec.factory(model, params.get("config_list"), **kwargs)


def _placeholder_evaluator() -> TorchEvaluator:
    return TorchEvaluator(lambda *args, **kwargs: None, lambda p: torch.optim.SGD(p, lr=0.1),
                          lambda batch, model: torch.zeros(()))


@dataclass
class Measurement:
    """What every form of the model is measured on."""

    example: torch.Tensor
    eval_data: tuple[torch.Tensor, torch.Tensor] | None
    fidelity_inputs: torch.Tensor
    reference_outputs: torch.Tensor
    batch_sizes: tuple[int, ...]
    runs: int
    device: str

    def quality(self, run: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        """Accuracy (labelled data) and fidelity to the original of a forward function."""
        result: dict[str, Any] = {}
        if self.eval_data is not None:
            inputs, labels = self.eval_data
            result["accuracy"] = float((_outputs(run, inputs).argmax(dim=1) == labels).float().mean())
        result["fidelity"] = output_fidelity(self.reference_outputs, _outputs(run, self.fidelity_inputs))
        return result

    def torch_latency(self, model: nn.Module) -> dict[str, float]:
        return {f"latency_cpu_b{batch}_ms": measure_latency(model, self.example, batch_size=batch, runs=self.runs,
                                                         device="cpu")["median_ms"]
                for batch in self.batch_sizes}


def _outputs(run: Callable[[torch.Tensor], Any], inputs: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``run`` over ``inputs`` in batches: the logits, float32 on the CPU."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch):
            output = run(inputs[start:start + batch])
            output = output[0] if isinstance(output, (tuple, list)) else output
            outputs.append(output.detach().float().cpu())
    return torch.cat(outputs)


def _onnx_latency(session: Any, example: torch.Tensor, batch_sizes: tuple[int, ...], runs: int) -> dict[str, float]:
    import statistics

    name = session.get_inputs()[0].name
    result = {}
    for batch in batch_sizes:
        feed = {name: example.repeat(batch, *[1] * (example.dim() - 1)).numpy()}
        for _ in range(3):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1000.0)
        result[f"latency_cpu_b{batch}_ms"] = float(statistics.median(times))
    return result


def _onnx_forward(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


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


def _quantizer(spec: registry.AlgorithmSpec, params: dict[str, Any], model: nn.Module, train_data, teacher,
               progress: Progress):
    kwargs = spec.constructor_kwargs(params)
    if getattr(spec.factory, "quantization_aware", False):
        training = TrainingOptions.from_params(params.get("training"))
        fit, validation = holdout(train_data)
        evaluator = training.evaluator(fit, validation, teacher, for_finetuning=True)
        evaluator.step_hooks.append(_epoch_reporter(progress, params["epochs"], len(fit[0]), training.batch_size))
        kwargs["evaluator"] = evaluator
    elif requires_data(spec, params):
        kwargs["calibration_data"] = train_data[0][:CALIBRATION_SAMPLES]
    return spec.factory(model, params.get("config_list"), **kwargs)


def _epoch_reporter(progress: Progress, epochs: int, samples: int, batch_size: int) -> Callable[[nn.Module], None]:
    """A step hook reporting each finished epoch of quantization-aware training (where a job can be cancelled)."""
    # TensorDataEvaluator skips a last batch of one sample (BatchNorm needs two).
    per_epoch = max(1, samples // batch_size + (1 if samples % batch_size >= 2 else 0))
    steps = {"done": 0}

    def hook(model: nn.Module) -> None:
        steps["done"] += 1
        if steps["done"] % per_epoch == 0:
            epoch = steps["done"] // per_epoch
            progress(0.62 + 0.08 * epoch / epochs, f"quantization-aware training: epoch {epoch} of {epochs}")

    return hook


def run_quantization(
    model: nn.Module,
    algorithm: str,
    params: dict[str, Any],
    *,
    float_metrics: dict[str, Any],
    float_fidelity: dict[str, Any],
    measurement: Measurement,
    train_data: tuple[torch.Tensor, torch.Tensor | None] | None,
    teacher: nn.Module | None,
    out_dir: Path,
    progress: Progress,
    timings: dict[str, float],
    warnings: list[str],
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Quantize ``model`` (float, eval mode); return ``(quantization metrics, "after" metrics, artifacts)``.

    The "after" metrics are those of the deliverable: the real int8 model
    where the quantizer gives one, else the simulated model.
    """
    spec = registry.get_algorithm(algorithm)
    if requires_data(spec, params) and train_data is None:
        raise ValueError(f"{algorithm} needs data: choose a dataset")
    progress(0.62, f"quantizing with {algorithm}")
    started = time.perf_counter()
    quantizer = _quantizer(spec, params, model, train_data, teacher, progress)
    if getattr(spec.factory, "quantization_aware", False):
        quantized, calibration_config = quantizer.compress(max_epochs=params["epochs"])
    else:
        quantized, calibration_config = quantizer.compress()
    timings["quantize_s"] = time.perf_counter() - started
    report = quantizer.report
    real_int8 = bool(getattr(spec.factory, "real_int8", False))
    simulated = getattr(quantizer, "simulated_model", None) if real_int8 else quantized

    progress(0.7, "measuring the quantized model")
    forms: dict[str, dict[str, Any]] = {"float": {
        "label": "float32 (before quantization)",
        **{k: float_metrics[k] for k in ("accuracy",) if k in float_metrics},
        "fidelity": float_fidelity,
        "bytes": float_metrics["weights_bytes"],
        **{k: v for k, v in float_metrics.items() if k.startswith("latency_")},
    }}
    if simulated is not None:
        forms["simulated"] = {"label": "simulated (fake quantization, float32)",
                              **measurement.quality(simulated.eval())}
    artifacts: list[dict[str, Any]] = []
    after: dict[str, Any] = {"params": float_metrics["params"], "flops": float_metrics["flops"]}
    example = (measurement.example,)

    if real_int8:
        torch.backends.quantized.engine = report.backend
        info = save_model(quantized, out_dir / "model.int8.pt", example_inputs=example)
        artifacts.append({"name": "model.int8.pt", "kind": "torchscript-int8", "bytes": info["bytes"]})
        forms["int8_pytorch"] = {"label": f"int8, PyTorch ({report.backend} kernels)",
                                 **measurement.quality(quantized), "bytes": info["bytes"],
                                 **measurement.torch_latency(quantized)}
        progress(0.78, "exporting int8 ONNX")
        try:
            if report.mode == "dynamic":
                onnx_info = export_dynamic_int8_onnx(model, example, out_dir / "model.int8.onnx")
            else:
                # QAT: the trained float weights; onnxruntime derives the ranges again from the same data.
                trained = getattr(quantizer, "trained_float_model", None)
                onnx_info = export_int8_onnx(trained() if trained else model, train_data[0][:CALIBRATION_SAMPLES],
                                             out_dir / "model.int8.onnx")
        except Exception as exc:  # noqa: BLE001 - the PyTorch int8 model stands on its own
            warnings.append(f"int8 ONNX export failed, the PyTorch int8 model is still there: {exc}")
        else:
            session = onnx_session(onnx_info["path"], threads=torch.get_num_threads())
            artifacts.append({"name": "model.int8.onnx", "kind": "onnx-int8", "bytes": onnx_info["bytes"]})
            kind = "dynamic" if report.mode == "dynamic" else "QDQ"
            forms["int8_onnx"] = {"label": f"int8, ONNX {kind} (onnxruntime)",
                                  **measurement.quality(_onnx_forward(session)), "bytes": onnx_info["bytes"],
                                  **_onnx_latency(session, measurement.example, measurement.batch_sizes,
                                                  measurement.runs)}
            after["onnx_bytes"] = onnx_info["bytes"]
        deliverable = forms["int8_pytorch"]
        after["weights_bytes"] = info["bytes"]
    else:
        # Named apart from model.onnx / model.safetensors, which hold the pruned float model in a mixed recipe.
        info = save_model(quantized, out_dir / "model.simulated.onnx", example_inputs=example)
        artifacts.append({"name": "model.simulated.onnx", "kind": "onnx", "bytes": info["bytes"]})
        weights = save_model(quantized, out_dir / "model.simulated.safetensors")
        artifacts.append({"name": "model.simulated.safetensors", "kind": "safetensors", "bytes": weights["bytes"]})
        packed = save_packed(quantized, calibration_config, out_dir / "model.packed.safetensors")
        artifacts.append({"name": "model.packed.safetensors", "kind": "packed-weights", "bytes": packed["bytes"]})
        forms["simulated"].update({"label": "simulated (float32 kernels; file: weights packed at their bits)",
                                   "bytes": packed["bytes"], **measurement.torch_latency(quantized)})
        deliverable = forms["simulated"]
        after.update({"weights_bytes": packed["bytes"], "onnx_bytes": info["bytes"]})
        warnings.append(f"{algorithm} simulates quantization: the weights lie on the quantization grid and are "
                        "stored packed at their bit width (model.packed.safetensors, read back with "
                        "compression_core.quantization.load_packed), but they compute in float32, so the model "
                        "is not faster; PostTrainingQuantizer or QATQuantizer give a real int8 model")

    if measurement.device == "gpu" and torch.cuda.is_available():
        forms["float16_gpu"] = _half_precision_form(model, measurement)

    calibration_path = out_dir / "calibration.json"
    export_calibration(calibration_config, calibration_path)
    artifacts.append({"name": calibration_path.name, "kind": "calibration", "bytes": calibration_path.stat().st_size})

    after.update({k: v for k, v in deliverable.items() if k.startswith("latency_") or k == "accuracy"})
    after["fidelity"] = deliverable.get("fidelity")
    timings["measure_quantized_s"] = time.perf_counter() - started - timings["quantize_s"]
    metrics = {
        "algorithm": algorithm,
        "real_int8": real_int8,
        "mode": report.mode,
        "backend": report.backend,
        "forms": forms,
        "layers": layer_bits(calibration_config, report),
        "kept_float": dict(report.kept_float),
        "calibration_batches": report.calibration_batches,
    }
    return metrics, after, artifacts


def _half_precision_form(model: nn.Module, measurement: Measurement) -> dict[str, Any]:
    """float16 on the GPU: tensor-core kernels, half the weight bytes."""
    half = copy.deepcopy(model).half().cuda().eval()
    form = {"label": "float16, GPU", **measurement.quality(lambda x: half(x.half().cuda()).float()),
            "bytes": sum(p.numel() * p.element_size() for p in half.parameters())}
    example = measurement.example.half().cuda()
    for batch in measurement.batch_sizes:
        form[f"latency_gpu_b{batch}_ms"] = measure_latency(half, example, batch_size=batch, runs=measurement.runs,
                                                           device="cuda")["median_ms"]
    del half
    torch.cuda.empty_cache()
    return form
