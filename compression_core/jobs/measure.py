"""What a job measures on every model it hands back, and how.

One :class:`Measurement` per job: the example input, the test split, the
inputs on which fidelity to the original is measured and the original's
outputs on them, the latency batch sizes and rounds, and the device.

Example::

    >>> measurement = Measurement.for_model(model, [1, 8, 8], test_data=None, batch_sizes=(1,), runs=3)
    >>> metrics, layers = measurement.measure(model, workdir, "original")
    >>> sorted(metrics)
    ['flops', 'latency_cpu_b1_ms', 'onnx_bytes', 'params', 'weights_bytes']
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..analysis import count_flops_params, measure_latency, output_fidelity
from ..data import TensorData
from ..evaluation import accuracy, evaluate_accuracy, predict_logits
from ..io import save_model


#: Random inputs on which fidelity is measured when the job has no dataset (seeded: the same every run).
FIDELITY_SAMPLES = 32
FIDELITY_SEED = 1234
#: Test samples on which fidelity is measured when the job has a dataset.
FIDELITY_DATA_SAMPLES = 256


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

    @classmethod
    def for_model(cls, model: nn.Module, input_shape: list[int], test_data: TensorData | None, *,
                  batch_sizes: tuple[int, ...], runs: int, device: str = "cpu") -> "Measurement":
        """The measurement of a job on ``model`` (the original): its outputs are the fidelity reference."""
        example = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
        eval_data = None
        if test_data is None:
            fidelity_inputs = torch.randn(FIDELITY_SAMPLES, *input_shape,
                                          generator=torch.Generator().manual_seed(FIDELITY_SEED))
        else:
            inputs, labels = test_data
            eval_data = (inputs, labels) if labels is not None else None
            fidelity_inputs = inputs[:FIDELITY_DATA_SAMPLES]
        with torch.inference_mode():
            reference_outputs = model(fidelity_inputs)
        return cls(example, eval_data, fidelity_inputs, reference_outputs, batch_sizes, runs, device)

    def measure(self, model: nn.Module, workdir: Path, tag: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``(metrics, per-layer rows)`` of a float model: params, FLOPs, ONNX and safetensors sizes,
        latencies, accuracy on the test split."""
        flops, params, layers = count_flops_params(model, self.example)
        metrics: dict[str, Any] = {"params": int(params), "flops": int(flops)}
        metrics["onnx_bytes"] = save_model(model, workdir / f"{tag}.onnx", example_inputs=(self.example,))["bytes"]
        metrics["weights_bytes"] = save_model(model, workdir / f"{tag}.safetensors")["bytes"]
        metrics.update(self.torch_latency(model))
        if self.device == "gpu" and torch.cuda.is_available():
            gpu_model = copy.deepcopy(model).cuda()
            metrics.update(self.torch_latency(gpu_model, device="cuda", example=self.example.cuda()))
            del gpu_model
        if self.eval_data is not None:
            metrics["accuracy"] = evaluate_accuracy(model, *self.eval_data)
        return metrics, layers

    def fidelity(self, model: nn.Module) -> dict[str, Any]:
        """Agreement of ``model``'s outputs with the original's on the fidelity inputs."""
        return output_fidelity(self.reference_outputs, predict_logits(model, self.fidelity_inputs))

    def quality(self, run: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        """Accuracy (labelled data) and fidelity to the original of a forward function."""
        result: dict[str, Any] = {}
        if self.eval_data is not None:
            inputs, labels = self.eval_data
            result["accuracy"] = accuracy(predict_logits(run, inputs), labels)
        result["fidelity"] = output_fidelity(self.reference_outputs, predict_logits(run, self.fidelity_inputs))
        return result

    def torch_latency(self, model: nn.Module, device: str = "cpu",
                      example: torch.Tensor | None = None) -> dict[str, float]:
        """Median latency per batch size, ``latency_{cpu|gpu}_b{batch}_ms`` (``example``: the job's example
        input, moved to the model's device and dtype where that is not the CPU in float32)."""
        example = self.example if example is None else example
        name = "cpu" if device == "cpu" else "gpu"
        return {f"latency_{name}_b{batch}_ms": measure_latency(model, example, batch_size=batch, runs=self.runs,
                                                               device=device)["median_ms"]
                for batch in self.batch_sizes}

    def onnx_latency(self, session: Any) -> dict[str, float]:
        """Median latency of an onnxruntime session per batch size, ``latency_cpu_b{batch}_ms``."""
        name = session.get_inputs()[0].name
        result = {}
        for batch in self.batch_sizes:
            feed = {name: self.example.repeat(batch, *[1] * (self.example.dim() - 1)).numpy()}
            for _ in range(3):
                session.run(None, feed)
            times = []
            for _ in range(self.runs):
                start = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - start) * 1000.0)
            result[f"latency_cpu_b{batch}_ms"] = float(statistics.median(times))
        return result


def onnx_forward(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """An onnxruntime session as a forward function on torch tensors."""
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])
