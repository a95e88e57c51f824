"""Built-in datasets: named, fixed train/test splits that need no upload (scikit-learn's digits).

Training and accuracy on them live in :mod:`compression_core.evaluation`.

Example::

    >>> from compression_core.data import load_builtin_dataset
    >>> x_train, y_train = load_builtin_dataset("digits", split="train")
    >>> x_train.shape, y_train.shape
    (torch.Size([1437, 1, 8, 8]), torch.Size([1437]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from .splits import check_split

__all__ = [
    "DatasetSpec",
    "BUILTIN_DATASETS",
    "load_builtin_dataset",
    "dataset_choices",
]

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
    # scikit-learn takes a second to import; only the digits need it.
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
    check_split(split)
    return spec.loader(split)


def dataset_choices() -> List[dict]:
    """Built-in datasets as dicts (name, description, input_shape, num_classes, has_labels, sizes), for forms.

    Example::

        >>> [d["name"] for d in dataset_choices()]
        ['digits']
    """
    return [BUILTIN_DATASETS[name].as_dict() for name in sorted(BUILTIN_DATASETS)]
