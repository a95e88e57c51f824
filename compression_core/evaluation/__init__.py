"""Evaluation: training and measuring models, and the evaluators data-dependent pruners train through.

- :mod:`.loops`: the engine's one minibatch training loop (:func:`train_loop`)
  and one batched inference loop (:func:`predict_logits`, :func:`accuracy`).
- :class:`TorchEvaluator` (NNI 3.0's idea): wrap your own training function,
  optimizer (or factory), training step and evaluating function;
  :class:`LossRecorder` keeps its training loss per epoch (a job's training curve).
- :class:`TensorDataEvaluator` / :func:`tensor_evaluator`: a ready-made one for
  tensors in memory, with knowledge distillation from a teacher and a
  fidelity objective for unlabelled data.
- :func:`train_classifier`, :func:`evaluate_accuracy`, :func:`train_digits_cnn`:
  small helpers for demos, tests and benchmarks.
- :class:`TrainingOptions` / :data:`TRAINING_SCHEMA`: a job's training options.

Example::

    >>> from compression_core.data import load_builtin_dataset
    >>> from compression_core.evaluation import evaluate_accuracy, train_digits_cnn
    >>> evaluate_accuracy(train_digits_cnn(), *load_builtin_dataset("digits", "test")) > 0.9
    True
"""

from .evaluator import LossRecorder, TorchEvaluator
from .loops import accuracy, output_logits, predict_logits, steps_per_epoch, train_loop
from .options import TRAINING_SCHEMA, TrainingOptions
from .tensor_data import (
    OPTIMIZERS,
    TensorDataEvaluator,
    distillation_loss,
    tensor_evaluator,
)
from .training import evaluate_accuracy, train_classifier, train_digits_cnn

__all__ = [
    "LossRecorder",
    "OPTIMIZERS",
    "TRAINING_SCHEMA",
    "TrainingOptions",
    "TensorDataEvaluator",
    "TorchEvaluator",
    "accuracy",
    "distillation_loss",
    "evaluate_accuracy",
    "output_logits",
    "predict_logits",
    "steps_per_epoch",
    "tensor_evaluator",
    "train_classifier",
    "train_digits_cnn",
    "train_loop",
]
