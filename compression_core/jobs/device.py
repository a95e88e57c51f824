"""Where a job's tensors live: one device per job, picked once from the recipe, and what is measured there.

:func:`job_device` turns the recipe's ``device`` ("cpu" or "gpu") into the
``torch.device`` that the runner moves the model and the measurement inputs to;
everything after follows the model (the training and inference loops move each
batch to the model's device, speedup traces on the example's device). The few
steps that only exist on the CPU (PyTorch's int8 kernels, ONNX export,
onnxruntime on the CPU) take a CPU copy through :func:`on_cpu`.
:class:`GpuMemory` records the peak GPU memory per stage, and
:func:`release_memory` hands a finished or failed job's GPU memory back, so that
the worker's next job starts clean.

Example::

    >>> job_device("cpu")
    device(type='cpu')
    >>> on_cpu(torch.nn.Linear(2, 2)).weight.device
    device(type='cpu')
"""

from __future__ import annotations

import copy
import gc

import torch
import torch.nn as nn

from ..tensors import module_device

#: The one sentence a GPU job gets on a worker without CUDA.
NO_CUDA = ("this job asks for a GPU, but this worker has no CUDA device: run it on a GPU worker (one that serves "
           "the gpu queue), or choose the CPU")


def job_device(device: str) -> torch.device:
    """The ``torch.device`` a job with the recipe's ``device`` runs on; a GPU job without CUDA is refused.

    Example::

        >>> job_device("cpu")
        device(type='cpu')
        >>> job_device("gpu")  # doctest: +SKIP
        device(type='cuda')
    """
    if device == "cpu":
        return torch.device("cpu")
    if device == "gpu":
        if not torch.cuda.is_available():
            raise ValueError(NO_CUDA)
        return torch.device("cuda")
    raise ValueError(f"unknown device {device!r}: choose cpu or gpu")


def on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself when it is on the CPU, else a CPU copy of it (the job's model stays on its device)."""
    if module_device(model).type == "cpu":
        return model
    return copy.deepcopy(model).cpu()


class GpuMemory:
    """The peak GPU memory of each stage of a job (nothing on a CPU job): call :meth:`stage` at every report.

    Example::

        memory = GpuMemory(torch.device("cuda"), stage="load")
        memory.stage("prune")        # the peak of "load" is kept, the counter starts again for "prune"
        memory.stage("speedup")
        memory.metrics()["peak_memory_bytes"]
    """

    def __init__(self, device: torch.device, stage: str | None = None):
        self.device = device if device.type == "cuda" else None
        self.by_stage: dict[str, int] = {}
        self._stage = stage  # the stage the job is in
        if self.device is not None:
            torch.cuda.reset_peak_memory_stats(self.device)

    def stage(self, name: str) -> None:
        """Close the stage the job was in (its peak) when ``name`` is a new one."""
        if self.device is None or name == self._stage:
            return
        self._close()
        self._stage = name

    def _close(self) -> None:
        if self._stage is not None:
            peak = int(torch.cuda.max_memory_allocated(self.device))
            self.by_stage[self._stage] = max(self.by_stage.get(self._stage, 0), peak)
        torch.cuda.reset_peak_memory_stats(self.device)

    def metrics(self) -> dict | None:
        """``{"name", "total_memory_bytes", "peak_memory_bytes", "peak_memory_bytes_by_stage"}``, or None on
        the CPU. The bytes are those PyTorch's allocator handed to tensors (``max_memory_allocated``)."""
        if self.device is None:
            return None
        self._close()
        self._stage = None
        properties = torch.cuda.get_device_properties(self.device)
        return {"name": properties.name, "total_memory_bytes": int(properties.total_memory),
                "peak_memory_bytes": max(self.by_stage.values(), default=0),
                "peak_memory_bytes_by_stage": dict(self.by_stage)}


def release_memory() -> None:
    """Collect the garbage a job left (its model, optimizer state, activations) and hand the GPU's cached
    blocks back, so that the worker's next job starts with the whole GPU."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
