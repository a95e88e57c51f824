"""Data: built-in datasets, datasets people bring (``.npz`` arrays, zipped image folders), splits,
fitting samples to the model's input, and model inputs batch by batch.

Two upload formats:

- ``.npz`` (``numpy.savez``): an input array named ``x`` (or ``inputs``,
  ``data``, ``images``, ``X``) and optionally integer labels ``y`` (or
  ``labels``, ``targets``, ``Y``). Inputs are float (used as they are) or uint8
  (scaled to [0, 1]), shaped N x C x H x W, N x H x W x C, N x H x W or
  N x features. Pickled arrays are refused: unpickling can run code.
- ``.zip`` of images (png, jpg, jpeg, bmp, gif, webp): top-level folders are
  class names (``cat/1.png``, ``dog/7.jpg``), images without folders make an
  unlabelled dataset. One folder that wraps everything is looked through;
  ``__MACOSX`` and dotfiles are ignored. Images are decoded from the archive
  in memory, never extracted to disk, within the caps of :class:`IntakeLimits`
  (checked from the zip's central directory and the image headers first).

Modules: :mod:`.limits` (:class:`IntakeLimits`, the caps on every upload, models too),
:mod:`.archives` (zips refused from their central directory, inflated against a byte budget),
:mod:`.builtin` (the built-in datasets), :mod:`.formats` (format
detection, size caps), :mod:`.npz`, :mod:`.images`, :mod:`.fit` (samples to
the model's input), :mod:`.splits`, :mod:`.source` (:class:`DatasetSource`,
:func:`inspect_dataset`), :mod:`.batches` (calibration and tracing inputs).
Everything here is numpy, Pillow and torch; no Django, no training (that is
:mod:`compression_core.evaluation`).

Example::

    >>> from compression_core.data import DatasetSource, inspect_dataset
    >>> summary = inspect_dataset("pets.zip")
    >>> summary["format"], summary["samples"], summary["labelled"], summary["classes"]
    ('image_zip', 240, True, [{'name': 'cat', 'count': 120}, {'name': 'dog', 'count': 120}])
    >>> x, y = DatasetSource(path="pets.zip").load([3, 32, 32], split="test")
    >>> x.shape, y.shape
    (torch.Size([48, 3, 32, 32]), torch.Size([48]))
"""

from .batches import NO_DATA_MESSAGE, first_batch, iter_batches
from .builtin import BUILTIN_DATASETS, DatasetSpec, dataset_choices, load_builtin_dataset
from .fit import check_input_fit, fit_inputs
from .limits import SETTING_NAMES, IntakeLimits
from .formats import DATASET_FORMATS, IMAGE_ZIP, MAX_IMAGES, MAX_UNCOMPRESSED_BYTES, NPZ, detect_dataset_format
from .source import DatasetSource, inspect_dataset
from .splits import SPLITS, TensorData, holdout, split_indices

__all__ = [
    "BUILTIN_DATASETS",
    "DATASET_FORMATS",
    "IMAGE_ZIP",
    "MAX_IMAGES",
    "MAX_UNCOMPRESSED_BYTES",
    "NO_DATA_MESSAGE",
    "NPZ",
    "SPLITS",
    "DatasetSource",
    "DatasetSpec",
    "IntakeLimits",
    "SETTING_NAMES",
    "TensorData",
    "check_input_fit",
    "dataset_choices",
    "detect_dataset_format",
    "fit_inputs",
    "first_batch",
    "holdout",
    "inspect_dataset",
    "iter_batches",
    "load_builtin_dataset",
    "split_indices",
]
