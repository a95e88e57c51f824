"""Splits: the names a dataset is split by, the seeded split of uploads, and the fit/validation holdout.

Built-in datasets carry their own fixed train/test split; uploaded files are
split by :func:`split_indices`. A job that must choose among candidates (the
searching pruners, quantization-aware training) sees :func:`holdout`'s
validation cut of the train split, never the test split.

Example::

    >>> split_indices(10, "test", 0.2, seed=0)
    array([4, 6])
    >>> fit, validation = holdout((torch.arange(10), None))
    >>> len(fit[0]), len(validation[0])
    (8, 2)
"""

from __future__ import annotations

import numpy as np
import torch

SPLITS = ("train", "test", "all")

TensorData = tuple[torch.Tensor, torch.Tensor | None]


def check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def split_indices(samples: int, split: str, val_fraction: float, seed: int) -> np.ndarray:
    """Indices of ``split`` in a seeded shuffle: ``test`` is ``val_fraction`` of
    the samples (at least one), ``train`` the rest, ``all`` everything; each in
    file order. The same arguments give the same indices on every machine.

    Example::

        >>> split_indices(10, "test", 0.2, seed=0)
        array([4, 6])
    """
    check_split(split)
    if split == "all":
        return np.arange(samples)
    order = np.random.default_rng(seed).permutation(samples)
    test_count = min(max(int(round(samples * val_fraction)), 1), max(samples - 1, 1))
    chosen = order[:test_count] if split == "test" else order[test_count:]
    return np.sort(chosen)


def holdout(data: TensorData, fraction: float = 0.2) -> tuple[TensorData, TensorData]:
    """``data`` split into (fit, validation): the last ``fraction`` of the rows (at least one each side)
    is the validation cut; the dataset's own split is already shuffled.

    Example::

        >>> fit, validation = holdout((torch.rand(10, 3), torch.arange(10)))
        >>> fit[1].tolist(), validation[1].tolist()
        ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    inputs, labels = data
    cut = max(1, min(len(inputs) - 1, round(len(inputs) * (1 - fraction))))
    fit = (inputs[:cut], None if labels is None else labels[:cut])
    validation = (inputs[cut:], None if labels is None else labels[cut:])
    return fit, validation
