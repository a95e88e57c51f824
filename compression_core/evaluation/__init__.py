"""Evaluators: the training loop, optimizer, data and metric that data-dependent pruners use.

- :class:`TorchEvaluator` (NNI 3.0's idea): wrap your own training function,
  optimizer (or factory), training step and evaluating function.
- :class:`TensorDataEvaluator` / :func:`tensor_evaluator`: a ready-made one for
  tensors in memory, with knowledge distillation from a teacher and a
  fidelity objective for unlabelled data.
"""

from .evaluator import TorchEvaluator
from .options import TRAINING_SCHEMA, TrainingOptions
from .tensor_data import (
    OPTIMIZERS,
    TensorDataEvaluator,
    distillation_loss,
    output_logits,
    tensor_evaluator,
)

__all__ = [
    "OPTIMIZERS",
    "TRAINING_SCHEMA",
    "TrainingOptions",
    "TensorDataEvaluator",
    "TorchEvaluator",
    "distillation_loss",
    "output_logits",
    "tensor_evaluator",
]
