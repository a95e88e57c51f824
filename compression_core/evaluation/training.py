"""Small training and accuracy helpers for classifiers held as tensors: demos, tests, benchmarks.

Example::

    >>> from compression_core.architectures import build_architecture
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
from torch import nn

from ..architectures import build_architecture
from ..data import load_builtin_dataset
from ..tensors import module_device
from .tensor_data import output_logits

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
    device = module_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start : start + batch_size].to(device)
                target = labels[start : start + batch_size].to(device)
                predicted = output_logits(model(batch)).argmax(dim=1)
                correct += int((predicted == target).sum().item())
    finally:
        model.train(was_training)
    return correct / len(inputs)


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
    device = module_device(model)
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:  # batch norm needs more than one sample
                continue
            batch, target = inputs[index].to(device), labels[index].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(output_logits(model(batch)), target)
            loss.backward()
            optimizer.step()
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
