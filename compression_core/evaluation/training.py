"""Small training and accuracy helpers for classifiers held as tensors: demos, tests, benchmarks.

Both run the engine's one loops (:mod:`.loops`).

Example::

    >>> from compression_core.models import build_architecture
    >>> from compression_core.data import load_builtin_dataset
    >>> from compression_core.evaluation import evaluate_accuracy, train_classifier
    >>> x_train, y_train = load_builtin_dataset("digits", split="train")
    >>> x_test, y_test = load_builtin_dataset("digits", split="test")
    >>> model = train_classifier(build_architecture("digits_cnn"), x_train, y_train)
    >>> evaluate_accuracy(model, x_test, y_test) > 0.9
    True
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..models import build_architecture
from ..data import load_builtin_dataset
from .loops import accuracy, output_logits, predict_logits, train_loop

__all__ = ["evaluate_accuracy", "train_classifier", "train_digits_cnn"]


def evaluate_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``inputs`` whose argmax prediction equals ``labels`` (eval mode, no grad).

    The model's training flag is restored afterwards.

    Example::

        >>> evaluate_accuracy(model, *load_builtin_dataset("digits"))
        0.975
    """
    if len(inputs) != len(labels):
        raise ValueError(f"inputs ({len(inputs)}) and labels ({len(labels)}) differ in length")
    if len(inputs) == 0:
        raise ValueError("cannot evaluate accuracy on an empty dataset")
    return accuracy(predict_logits(model, inputs, batch_size=batch_size), labels)


def _cross_entropy_step(batch: tuple[torch.Tensor, torch.Tensor], model: nn.Module) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(output_logits(model(inputs)), labels)


def train_classifier(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: Optional[int] = 0,
) -> nn.Module:
    """Train ``model`` in place with Adam and cross-entropy; return it in eval mode.

    Shuffling uses its own generator seeded with ``seed`` (the global RNG is
    left alone), so runs are repeatable on one machine.

    Example::

        >>> x, y = load_builtin_dataset("digits", "train")
        >>> model = train_classifier(build_architecture("digits_cnn"), x, y, epochs=15)
    """
    if len(inputs) != len(labels):
        raise ValueError(f"inputs ({len(inputs)}) and labels ({len(labels)}) differ in length")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_loop(model, inputs, labels, _cross_entropy_step, optimizer, batch_size=batch_size, seed=seed,
               max_epochs=epochs)
    model.eval()
    return model


def train_digits_cnn(epochs: int = 10, seed: int = 0) -> nn.Module:
    """A ``digits_cnn`` trained on the digits train split (a few seconds on a CPU), in eval mode.

    Handy for demos and tests; the weights are initialised from ``seed``
    without touching the global RNG.

    Example::

        >>> model = train_digits_cnn()
        >>> evaluate_accuracy(model, *load_builtin_dataset("digits", "test")) > 0.9
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_architecture("digits_cnn")
    x_train, y_train = load_builtin_dataset("digits", "train")
    return train_classifier(model, x_train, y_train, epochs=epochs, seed=seed)
