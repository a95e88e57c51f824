"""The state one job's steps share: its recipe and validated params, its data, its measurement, its
output folders, its progress reporter, warnings and timings, and the deployable forms whose latency the
runner times against the original."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..algorithms import AlgorithmSpec
from ..evaluation import TrainingOptions
from .latency import LatencyPlan
from .measure import Measurement, TensorData
from .recipe import Recipe
from .stages import Reporter


@dataclass
class JobContext:
    """Built once by the runner, then passed to the job's handler."""

    recipe: Recipe
    spec: AlgorithmSpec
    params: dict[str, Any]
    training: TrainingOptions
    train_data: TensorData | None
    test_data: TensorData | None
    measurement: Measurement
    out_dir: Path
    workdir: Path  # scratch files (the measured ONNX and safetensors), deleted with the job's temporary folder
    report: Reporter
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    latency: LatencyPlan = field(default_factory=LatencyPlan)  # the forms the runner times against the original

    @property
    def device(self) -> torch.device:
        """The job's device (:func:`.device.job_device`): the model and the measurement's inputs are there."""
        return self.measurement.device

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Record the seconds the ``with`` block takes as ``timings[key]``."""
        started = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - started
