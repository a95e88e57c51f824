"""Training options of a job: the evaluator data-dependent pruners use, fine-tuning, distillation.

A job's ``params["training"]`` holds them (validated by the registry with
:data:`TRAINING_SCHEMA`); :meth:`TrainingOptions.evaluator` builds the
:class:`~.tensor_data.TensorDataEvaluator` over the job's dataset.

Example::

    >>> options = TrainingOptions.from_params({"finetune_epochs": 3, "distillation": True})
    >>> options.finetune_epochs, options.lr, options.alpha
    (3, 0.001, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn as nn

from ..data import TensorData
from .tensor_data import OPTIMIZERS, TensorDataEvaluator

TRAINING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Training used by data-dependent pruners and for fine-tuning after pruning",
    "properties": {
        "finetune_epochs": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0,
                            "description": "Epochs of fine-tuning after pruning (0: none)"},
        "distillation": {"type": "boolean", "default": False,
                         "description": "Fine-tune with the original model as teacher (always on for "
                                        "unlabelled data)"},
        "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                  "description": "Weight of the distillation loss against cross-entropy"},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 4.0,
                        "description": "Softmax temperature of distillation"},
        "optimizer": {"type": "string", "enum": list(OPTIMIZERS), "default": "adam"},
        "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "default": 1e-3, "description": "Learning rate"},
        "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9,
                     "description": "SGD momentum"},
        "weight_decay": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
        "batch_size": {"type": "integer", "minimum": 2, "maximum": 4096, "default": 64},
    },
}


@dataclass(frozen=True)
class TrainingOptions:
    """See :data:`TRAINING_SCHEMA` for each field."""

    finetune_epochs: int = 0
    distillation: bool = False
    alpha: float = 0.5
    temperature: float = 4.0
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64

    @classmethod
    def from_params(cls, values: Mapping[str, Any] | None) -> "TrainingOptions":
        """From a job's ``params["training"]`` (validate it with the registry first for clear messages)."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"training: unknown option {unknown[0]!r}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def evaluator(self, train_data: TensorData, test_data: TensorData | None, teacher: nn.Module | None,
                  *, for_finetuning: bool = False) -> TensorDataEvaluator:
        """An evaluator over the data; the teacher is used for unlabelled data, or when fine-tuning with
        distillation."""
        labelled = train_data[1] is not None
        use_teacher = (not labelled) or (for_finetuning and self.distillation)
        return TensorDataEvaluator(
            train_data, test_data, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            momentum=self.momentum, weight_decay=self.weight_decay, epochs=max(self.finetune_epochs, 1),
            teacher=teacher if use_teacher else None, alpha=self.alpha if labelled else 1.0,
            temperature=self.temperature,
        )

