"""Built-in datasets and small training / evaluation helpers.

Example::

    >>> from compression_core.models import build_architecture
    >>> from compression_core.datasets import load_builtin_dataset, train_classifier, evaluate_accuracy
    >>> x_train, y_train = load_builtin_dataset("digits", split="train")
    >>> x_test, y_test = load_builtin_dataset("digits", split="test")
    >>> model = train_classifier(build_architecture("digits_cnn"), x_train, y_train)
    >>> evaluate_accuracy(model, x_test, y_test) > 0.9
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .evaluation.tensor_data import output_logits
from .tensors import module_device

__all__ = [
    "DatasetSpec",
    "BUILTIN_DATASETS",
    "load_builtin_dataset",
    "dataset_choices",
    "evaluate_accuracy",
    "train_classifier",
    "train_digits_cnn",
]

SPLITS = ("train", "test", "all")
_DIGITS_SEED = 0
_DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DatasetSpec:
    """Metadata of a built-in dataset; ``loader(split)`` returns ``(inputs, labels)``."""

    name: str
    description: str
    input_shape: Tuple[int, ...]
    num_classes: int
    has_labels: bool
    loader: Callable[[str], Tuple[torch.Tensor, torch.Tensor]] = field(repr=False, compare=False)
    sizes: Dict[str, int] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        """JSON-friendly metadata (no loader)."""
        return {
            "name": self.name,
            "description": self.description,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "has_labels": self.has_labels,
            "sizes": dict(self.sizes),
        }


@lru_cache(maxsize=1)
def _digits_arrays() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # bundled with scikit-learn, no download
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=_DIGITS_TEST_FRACTION, random_state=_DIGITS_SEED, stratify=labels
    )
    for array in (x_train, x_test, y_train, y_test):
        array.setflags(write=False)
    return x_train, x_test, y_train, y_test


def _load_digits(split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    x_train, x_test, y_train, y_test = _digits_arrays()
    if split == "train":
        x, y = x_train, y_train
    elif split == "test":
        x, y = x_test, y_test
    else:
        x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


BUILTIN_DATASETS: Dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits",
        description="scikit-learn handwritten digits: 1797 grey 8x8 images, 10 classes "
        "(stratified 80/20 train/test split, seed 0)",
        input_shape=(1, 8, 8),
        num_classes=10,
        has_labels=True,
        loader=_load_digits,
        sizes={"train": 1437, "test": 360, "all": 1797},
    ),
}


def load_builtin_dataset(name: str, split: str = "test") -> Tuple[torch.Tensor, torch.Tensor]:
    """Load a built-in dataset split as ``(inputs float32 N,C,H,W in [0, 1], labels int64 N)``.

    ``split`` is ``"train"``, ``"test"`` or ``"all"``; the split is the same on
    every call and machine. New tensors are returned each time.

    Example::

        >>> x, y = load_builtin_dataset("digits", split="test")
        >>> x.shape, y.shape, x.dtype, y.dtype
        (torch.Size([360, 1, 8, 8]), torch.Size([360]), torch.float32, torch.int64)
    """
    spec = BUILTIN_DATASETS.get(name)
    if spec is None:
        raise ValueError(f"Unknown built-in dataset {name!r}; choose one of: {', '.join(sorted(BUILTIN_DATASETS))}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return spec.loader(split)


def dataset_choices() -> List[dict]:
    """Built-in datasets as dicts (name, description, input_shape, num_classes, has_labels, sizes), for forms.

    Example::

        >>> [d["name"] for d in dataset_choices()]
        ['digits']
    """
    return [BUILTIN_DATASETS[name].as_dict() for name in sorted(BUILTIN_DATASETS)]


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
    from .models import build_architecture

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_architecture("digits_cnn")
    x_train, y_train = load_builtin_dataset("digits", "train")
    return train_classifier(model, x_train, y_train, epochs=epochs, seed=seed)
