"""A job's recipe: the model, its input shape, the algorithm and its params, the data, the outputs.

The worker builds a :class:`Recipe` from a job row; the same recipe runs from
a shell as JSON (``python -m compression_core run recipe.json``).

Example::

    >>> recipe = Recipe.from_dict({"model": {"architecture": "digits_cnn"}, "input_shape": [1, 8, 8],
    ...                            "algorithm": "L1NormPruner", "dataset": "digits",
    ...                            "params": {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}})
    >>> recipe.model.architecture, recipe.latency_batch_sizes
    ('digits_cnn', (1, 16))
    >>> Recipe.from_dict({**recipe.to_dict(), "device": "gpu", "latency_batch_sizes": None}).latency_batch_sizes
    (1, 64)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..data import DatasetSource
from ..io import IntakeLimits, load_model, onnx_input_shapes
from ..models import ARCHITECTURES, build_architecture

#: Latency batch sizes when the recipe names none: one sample, and a batch that fills the device (a GPU
#: reaches its throughput at larger batches than a CPU).
DEFAULT_LATENCY_BATCH_SIZES = {"cpu": (1, 16), "gpu": (1, 64)}


@dataclass
class ModelSource:
    """Where the model comes from: an uploaded file, a built-in architecture, or both
    (architecture plus a weights file)."""

    path: str | None = None
    architecture: str | None = None
    num_classes: int | None = None
    trusted: bool = False
    #: The operator's caps on what a file may declare (fields of ``IntakeLimits``; None: the defaults).
    limits: dict[str, Any] | None = None

    def intake_limits(self) -> IntakeLimits:
        return IntakeLimits(**self.limits) if self.limits else IntakeLimits()

    def load(self) -> nn.Module:
        if self.path:
            model = load_model(
                self.path, architecture=self.architecture, num_classes=self.num_classes, trusted=self.trusted,
                limits=self.intake_limits(),
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
    """Everything a job needs; plain values only, so it travels as JSON."""

    model: ModelSource
    input_shape: list[int]
    algorithm: str
    params: dict[str, Any]
    speedup: bool = True
    # A built-in dataset name, or a DatasetSource (or its fields as a dict) for a file.
    dataset: str | dict | DatasetSource | None = None
    device: str = "cpu"
    output_dir: str = "."
    latency_batch_sizes: tuple[int, ...] | None = None  # None: the device's DEFAULT_LATENCY_BATCH_SIZES
    # The fewest interleaved before/after rounds per timed row (at least 6, which a 95% interval needs);
    # rounds go on until the ratio's interval is tight or latency_budget_s is spent.
    latency_runs: int = 10
    latency_budget_s: float = 1.0
    export_formats: tuple[str, ...] = field(default=("onnx", "safetensors"))

    def __post_init__(self) -> None:
        if self.latency_batch_sizes is None:
            self.latency_batch_sizes = DEFAULT_LATENCY_BATCH_SIZES.get(self.device, DEFAULT_LATENCY_BATCH_SIZES["cpu"])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        data = dict(data)
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"recipe: unknown key {unknown[0]!r}")
        data["model"] = ModelSource(**data.get("model", {}))
        for key in ("latency_batch_sizes", "export_formats"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dataset_source(self) -> DatasetSource | None:
        return DatasetSource.from_recipe(self.dataset)
