"""What a job measures on every model it hands back, and how.

One :class:`Measurement` per job: the example input, the test split, the
inputs on which fidelity to the original is measured and the original's
outputs on them, the latency batch sizes, the fewest timing rounds and the
time budget per timed row, and the job's device, where the example and the
fidelity inputs live (the model is there already). Latency itself is timed by
:mod:`.latency`, the original against each compressed form, interleaved.

Example::

    >>> measurement = Measurement.for_model(model, [1, 8, 8], test_data=None, batch_sizes=(1,), runs=3)
    >>> metrics, layers = measurement.measure(model, workdir, "original")
    >>> sorted(metrics)
    ['flops', 'onnx_bytes', 'params', 'weights_bytes']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..analysis import count_flops_params, output_fidelity
from ..data import TensorData
from ..evaluation import accuracy, evaluate_accuracy, predict_logits
from ..io import save_model
from .device import on_cpu


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
    runs: int  # the fewest interleaved rounds per timed row
    device: torch.device  # the job's: the example and the fidelity inputs are there
    budget_s: float = 1.0  # seconds per timed row, once ``runs`` rounds are done

    @classmethod
    def for_model(cls, model: nn.Module, input_shape: list[int], test_data: TensorData | None, *,
                  batch_sizes: tuple[int, ...], runs: int, device: torch.device = torch.device("cpu"),
                  budget_s: float = 1.0) -> "Measurement":
        """The measurement of a job on ``model`` (the original, on ``device``): its outputs are the fidelity
        reference."""
        # Drawn on the CPU (the same numbers on every device), then moved.
        example = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
        eval_data = None
        if test_data is None:
            fidelity_inputs = torch.randn(FIDELITY_SAMPLES, *input_shape,
                                          generator=torch.Generator().manual_seed(FIDELITY_SEED))
        else:
            inputs, labels = test_data
            eval_data = (inputs, labels) if labels is not None else None
            fidelity_inputs = inputs[:FIDELITY_DATA_SAMPLES]
        fidelity_inputs = fidelity_inputs.to(device)
        # The same logits (float32, on the CPU) that :meth:`fidelity` and :meth:`quality` compare with.
        reference_outputs = predict_logits(model, fidelity_inputs)
        return cls(example, eval_data, fidelity_inputs, reference_outputs, batch_sizes, runs, device, budget_s)

    @property
    def cpu_example(self) -> torch.Tensor:
        """The example on the CPU, for the steps that run only there (ONNX export, int8 TorchScript)."""
        return self.example.cpu()

    def measure(self, model: nn.Module, workdir: Path, tag: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``(metrics, per-layer rows)`` of a float model: params, FLOPs, ONNX and safetensors sizes,
        accuracy on the test split. Latencies are timed later, the original interleaved with each compressed
        form (:mod:`.latency`), and fill the ``latency_*`` keys then."""
        # Counted and exported from a CPU copy: the ONNX exporter checks its file against onnxruntime on the
        # CPU, which a GPU's float32 (TF32 convolutions) would not match as closely; batch 1 costs little there.
        cpu_model, cpu_example = on_cpu(model), self.cpu_example
        flops, params, layers = count_flops_params(cpu_model, cpu_example)
        metrics: dict[str, Any] = {"params": int(params), "flops": int(flops)}
        metrics["onnx_bytes"] = save_model(cpu_model, workdir / f"{tag}.onnx", example_inputs=(cpu_example,))["bytes"]
        metrics["weights_bytes"] = save_model(cpu_model, workdir / f"{tag}.safetensors")["bytes"]
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


def onnx_forward(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """An onnxruntime session as a forward function on torch tensors."""
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])
