"""A job's data: :class:`DatasetSource` (a built-in name or an uploaded file) and :func:`inspect_dataset`.

Example::

    >>> summary = inspect_dataset("pets.zip")
    >>> summary["format"], summary["samples"], summary["labelled"], summary["classes"]
    ('image_zip', 240, True, [{'name': 'cat', 'count': 120}, {'name': 'dog', 'count': 120}])
    >>> x, y = DatasetSource(path="pets.zip").load([3, 32, 32], split="test")
    >>> x.shape, y.shape
    (torch.Size([48, 3, 32, 32]), torch.Size([48]))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .builtin import BUILTIN_DATASETS, load_builtin_dataset
from .fit import check_input_fit, fit_inputs
from .formats import (
    DATASET_FORMATS,
    MAX_IMAGES,
    MAX_UNCOMPRESSED_BYTES,
    NPZ,
    detect_dataset_format,
    element_count,
    megabytes,
    open_zip,
)
from .archives import ByteBudget
from .images import check_image_headers, image_to_array, inspect_image_zip, list_images, open_image
from .limits import IntakeLimits
from .npz import clean_labels, inspect_npz, npz_inputs, plan_npz, read_npz_array
from .splits import check_split, split_indices

# Cap on the float32 tensor one load() returns: resizing small images up to a
# model's 224 x 224 multiplies their size.
MAX_LOADED_BYTES = 4 * 1024**3


def _check_loaded_size(count: int, input_shape: list[int], split: str) -> None:
    size = count * element_count(input_shape) * 4
    if size > MAX_LOADED_BYTES:
        raise ValueError(
            f"the {split} split, {count} samples of {input_shape}, needs {megabytes(size)} as float32; "
            f"the limit is {megabytes(MAX_LOADED_BYTES)}: use fewer or smaller samples"
        )


@dataclass
class DatasetSource:
    """Where a job's data comes from: a built-in dataset name, or a file
    (``.npz`` / ``.zip`` of images) with its format (detected when ``None``).

    Uploaded files are split with a seeded shuffle: ``val_fraction`` of the
    samples is the ``test`` split (evaluation), the rest ``train``. Built-in
    datasets keep their own fixed split and need the model's exact input
    shape. Plain values only, so a recipe can carry it as JSON. ``limits``
    (the operator's caps, never from a recipe) bounds what reading the file
    may cost; ``max_uncompressed_bytes`` / ``max_images`` override its two
    dataset caps.

    Example::

        >>> source = DatasetSource(path="digits.npz", val_fraction=0.25)
        >>> source.check_fits([1, 8, 8])
        >>> x, y = source.load([1, 8, 8], split="test")
        >>> x.dtype, x.shape[1:], y is None or y.dtype
        (torch.float32, torch.Size([1, 8, 8]), torch.int64)
    """

    builtin: str | None = None
    path: str | None = None
    format: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
    max_images: int = MAX_IMAGES
    limits: IntakeLimits | None = None

    def __post_init__(self) -> None:
        if bool(self.builtin) == bool(self.path):
            raise ValueError("a dataset source needs either a built-in dataset name or a file path")
        if self.builtin and self.builtin not in BUILTIN_DATASETS:
            raise ValueError(
                f"unknown dataset {self.builtin!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}"
            )
        if self.format is not None and self.format not in DATASET_FORMATS:
            raise ValueError(f"dataset format must be one of {', '.join(DATASET_FORMATS)}, got {self.format!r}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction!r}")

    @classmethod
    def from_recipe(cls, value: "str | dict | DatasetSource | None") -> "DatasetSource | None":
        """A recipe's ``dataset``: a built-in name, a dict of these fields, a source, or nothing.

        Example::

            >>> DatasetSource.from_recipe("digits").builtin
            'digits'
            >>> DatasetSource.from_recipe({"path": "data.npz"}).val_fraction
            0.2
            >>> DatasetSource.from_recipe("") is None
            True
        """
        if value is None or value == "":
            return None
        if isinstance(value, DatasetSource):
            return value
        if isinstance(value, str):
            return cls(builtin=value)
        if isinstance(value, dict):
            unknown = sorted(set(value) - (set(cls.__dataclass_fields__) - {"limits"}))
            if unknown:
                raise ValueError(f"recipe dataset: unknown key {unknown[0]!r}")
            return cls(**value)
        raise ValueError(f"a recipe's dataset is a built-in name or an object, got {type(value).__name__}")

    @property
    def intake_limits(self) -> IntakeLimits:
        """``limits`` with this source's own unpacked-size and image caps."""
        return replace(self.limits or IntakeLimits(), dataset_max_uncompressed_bytes=int(self.max_uncompressed_bytes),
                       dataset_max_images=int(self.max_images))

    @property
    def label(self) -> str:
        """What to call it in messages: the built-in name or the file name."""
        return self.builtin or Path(self.path).name

    def resolved_format(self) -> str:
        if self.builtin:
            return "builtin"
        if not Path(self.path).is_file():
            raise ValueError(f"the dataset file {self.path} does not exist")
        return self.format or detect_dataset_format(self.path, self.intake_limits)

    def check_fits(self, input_shape) -> None:
        """Raise ``ValueError`` naming both shapes unless this data can feed a model
        taking ``input_shape``; reads only array headers, never decodes images."""
        input_shape = [int(d) for d in input_shape]
        if self.builtin:
            expected = list(BUILTIN_DATASETS[self.builtin].input_shape)
            if input_shape != expected:
                raise ValueError(
                    f"dataset {self.builtin!r} gives inputs of shape {expected}, but the model takes {input_shape}"
                )
            return
        if self.resolved_format() == NPZ:
            plan = plan_npz(Path(self.path), self.max_uncompressed_bytes, self.intake_limits)
            check_input_fit(plan.sample_shape, input_shape)
        elif len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise ValueError(
                f"the dataset holds images, but the model takes {input_shape}; images fit a model whose "
                "input is C x H x W with 1 (grey) or 3 (RGB) channels"
            )

    def load(self, input_shape, split: str = "test") -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(inputs float32 N x *input_shape, labels int64 N or None)`` for ``split``.

        Images are resized to the model's H x W and converted to its channel
        count; uint8 arrays are scaled to [0, 1].
        """
        input_shape = [int(d) for d in input_shape]
        check_split(split)
        self.check_fits(input_shape)
        if self.builtin:
            inputs, labels = load_builtin_dataset(self.builtin, split=split)
            return inputs, labels if BUILTIN_DATASETS[self.builtin].has_labels else None
        path = Path(self.path)
        if self.resolved_format() == NPZ:
            return self._load_npz(path, input_shape, split)
        return self._load_images(path, input_shape, split)

    def _load_npz(self, path: Path, input_shape: list[int], split: str):
        plan = plan_npz(path, self.max_uncompressed_bytes, self.intake_limits)
        index = split_indices(plan.inputs.shape[0], split, self.val_fraction, self.seed)
        _check_loaded_size(len(index), input_shape, split)
        inputs = fit_inputs(npz_inputs(path, plan, index), input_shape)
        labels = None
        if plan.labels_key:
            raw = read_npz_array(path, plan.labels_key)
            labels = torch.from_numpy(clean_labels(raw, plan.labels_key, plan.inputs.shape[0])[index])
        return inputs, labels

    def _load_images(self, path: Path, input_shape: list[int], split: str):
        channels, height, width = input_shape
        limits = self.intake_limits
        with open_zip(path, limits) as archive:
            listing = list_images(archive, self.max_uncompressed_bytes, self.max_images, limits)
            index = split_indices(len(listing.entries), split, self.val_fraction, self.seed)
            _check_loaded_size(len(index), input_shape, split)
            check_image_headers(archive, [listing.entries[position] for position in index], limits)
            budget = ByteBudget(self.max_uncompressed_bytes, limits, "dataset_max_uncompressed_bytes",
                                what="the images unpack to")
            inputs = torch.empty(len(index), channels, height, width)
            for row, position in enumerate(index):
                with open_image(archive, listing.entries[position].info, limits, budget) as image:
                    inputs[row] = torch.from_numpy(image_to_array(image, channels, height, width))
        labels = None
        if listing.classes:
            class_index = {name: i for i, name in enumerate(listing.classes)}
            labels = torch.tensor([class_index[listing.entries[i].class_name] for i in index], dtype=torch.int64)
        return inputs, labels


def inspect_dataset(
    path: str | Path,
    *,
    max_uncompressed_bytes: int | None = None,
    max_images: int | None = None,
    limits: IntakeLimits = IntakeLimits(),
) -> dict[str, Any]:
    """Read an uploaded dataset file and describe it, or say why it cannot be used.

    Returns ``format`` (``npz`` / ``image_zip``), ``samples``, ``sample_shape``
    (C x H x W for images; the most common image size for a zip),
    ``labelled``, ``classes`` (``[{"name", "count"}]``), ``num_classes`` and
    ``uncompressed_bytes``, plus details of the format. Raises ``ValueError``
    with a message fit for the person who uploaded it: a corrupt archive, a zip
    without images, an unreadable image (named), an .npz without inputs,
    pickled arrays, inputs and labels of different lengths, labels that are
    not whole class numbers, anything over the caps of ``limits`` (checked from
    the zip's central directory, the arrays' headers and the images' headers
    before anything large is read; the message names the ``CONDENSE_*``
    setting). ``max_uncompressed_bytes`` / ``max_images``, when given, replace
    ``limits``' dataset caps.

    Example::

        >>> np.savez("d.npz", x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
        >>> s = inspect_dataset("d.npz")
        >>> s["samples"], s["sample_shape"], s["classes"]
        (10, [1, 8, 8], [{'name': '0', 'count': 5}, {'name': '1', 'count': 5}])
    """
    path = Path(path)
    if max_uncompressed_bytes is not None:
        limits = replace(limits, dataset_max_uncompressed_bytes=int(max_uncompressed_bytes))
    if max_images is not None:
        limits = replace(limits, dataset_max_images=int(max_images))
    if detect_dataset_format(path, limits) == NPZ:
        return inspect_npz(path, limits.dataset_max_uncompressed_bytes, limits)
    return inspect_image_zip(path, limits.dataset_max_uncompressed_bytes, limits.dataset_max_images, limits)
