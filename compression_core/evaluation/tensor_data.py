"""A ready-made evaluator for data held as tensors: classification, distillation, fidelity.

The job pipeline and the benchmarks use it; notebook users with their own
loop use :class:`~.evaluator.TorchEvaluator` directly.

- Labelled data, no teacher: cross-entropy; metric = accuracy.
- Labelled data + teacher (knowledge distillation, Hinton et al. 2015):
  ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy``.
- Unlabelled data: a teacher is required (the original model); the loss is
  the same distillation term alone (fidelity to the original is the
  objective) and the metric is top-1 agreement with the teacher.

Example::

    >>> import torch, torch.nn as nn
    >>> x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    >>> evaluator = tensor_evaluator((x, y), (x, y), epochs=1, lr=0.05)
    >>> model = nn.Linear(8, 3)
    >>> evaluator.train(model, max_epochs=1) > 0
    True
    >>> 0.0 <= evaluator.evaluate(model) <= 1.0
    True
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import TensorData
from ..tensors import module_device
from .evaluator import TorchEvaluator
from .loops import accuracy, output_logits, predict_logits, train_loop

OPTIMIZERS = ("sgd", "adam", "adamw")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss, ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``."""
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def make_optimizer_factory(name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> Callable:
    """``params -> optimizer`` for one of :data:`OPTIMIZERS`."""
    if name == "sgd":
        return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return functools.partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


class TensorDataEvaluator(TorchEvaluator):
    """A :class:`TorchEvaluator` over in-memory tensors; see the module docstring for the objectives.

    ``teacher`` is copied and frozen; its outputs on the training inputs are
    computed batch by batch as training goes (never stored for the whole set).
    """

    def __init__(
        self,
        train_data: TensorData,
        test_data: TensorData | None = None,
        *,
        batch_size: int = 64,
        lr: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        epochs: int = 1,
        teacher: nn.Module | None = None,
        alpha: float = 0.5,
        temperature: float = 4.0,
        seed: int = 0,
    ):
        inputs, labels = train_data
        if len(inputs) == 0:
            raise ValueError("the training data is empty")
        if labels is not None and len(labels) != len(inputs):
            raise ValueError(f"training inputs ({len(inputs)}) and labels ({len(labels)}) differ in length")
        if labels is None and teacher is None:
            raise ValueError("unlabelled data needs a teacher (the original model) to train against")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (weight of the distillation loss) must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if batch_size < 1 or epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        self.train_data = (inputs, labels)
        self.test_data = test_data if test_data is not None else train_data
        self.batch_size = batch_size
        self.epochs = epochs
        self.alpha = alpha if labels is not None else 1.0
        self.temperature = temperature
        self.seed = seed
        self.teacher = None
        if teacher is not None:
            self.teacher = copy.deepcopy(teacher).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        super().__init__(
            training_func=self._training_func,
            optimizers=make_optimizer_factory(optimizer, lr, momentum, weight_decay),
            training_step=self._training_step,
            dummy_input=inputs[:1],
            evaluating_func=self._evaluating_func,
        )

    @property
    def has_labels(self) -> bool:
        return self.train_data[1] is not None

    def _training_func(self, model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        epochs = max_epochs if max_epochs is not None else (None if max_steps is not None else self.epochs)
        inputs, labels = self.train_data
        train_loop(model, inputs, labels, training_step, optimizers, batch_size=self.batch_size, seed=self.seed,
                   max_epochs=epochs, max_steps=max_steps)

    def _training_step(self, batch, model) -> torch.Tensor:
        x, y = batch
        logits = output_logits(model(x))
        loss = logits.new_zeros(())
        if y is not None and self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * F.cross_entropy(logits, y)
        if self.teacher is not None and self.alpha > 0.0:
            self.teacher.to(x.device)
            with torch.no_grad():
                target = output_logits(self.teacher(x))
            loss = loss + self.alpha * distillation_loss(logits, target, self.temperature)
        return loss

    def _evaluating_func(self, model) -> float:
        inputs, labels = self.test_data
        logits = predict_logits(model, inputs)
        if labels is None:
            self.teacher.to(module_device(model))
            labels = predict_logits(self.teacher, inputs).argmax(dim=1)
        return accuracy(logits, labels)


def tensor_evaluator(train_data: TensorData, test_data: TensorData | None = None, **options: Any) -> TensorDataEvaluator:
    """Shorthand for :class:`TensorDataEvaluator` (same arguments)."""
    return TensorDataEvaluator(train_data, test_data, **options)
