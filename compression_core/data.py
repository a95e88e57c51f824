"""Datasets people bring: ``.npz`` arrays and zipped image folders, and
:class:`DatasetSource`, which hands a job its inputs shaped for the model.

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
  in memory, never extracted to disk, within caps on the unpacked size and
  the image count.

Everything here is numpy, Pillow and torch; no Django.

Example::

    >>> from compression_core.data import DatasetSource, inspect_dataset
    >>> summary = inspect_dataset("pets.zip")
    >>> summary["format"], summary["samples"], summary["labelled"], summary["classes"]
    ('image_zip', 240, True, [{'name': 'cat', 'count': 120}, {'name': 'dog', 'count': 120}])
    >>> x, y = DatasetSource(path="pets.zip").load([3, 32, 32], split="test")
    >>> x.shape, y.shape
    (torch.Size([48, 3, 32, 32]), torch.Size([48]))
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import BUILTIN_DATASETS, load_builtin_dataset

__all__ = [
    "NPZ",
    "IMAGE_ZIP",
    "DATASET_FORMATS",
    "MAX_UNCOMPRESSED_BYTES",
    "MAX_IMAGES",
    "DatasetSource",
    "detect_dataset_format",
    "inspect_dataset",
    "check_input_fit",
    "fit_inputs",
    "split_indices",
]

NPZ = "npz"
IMAGE_ZIP = "image_zip"
DATASET_FORMATS = (NPZ, IMAGE_ZIP)
SPLITS = ("train", "test", "all")

INPUT_ARRAY_NAMES = ("x", "inputs", "data", "images", "X")
LABEL_ARRAY_NAMES = ("y", "labels", "targets", "Y")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Pillow formats allowed to parse uploads; others (EPS runs Ghostscript) never see them.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")

MAX_UNCOMPRESSED_BYTES = 1024**3
MAX_IMAGES = 50_000
MAX_IMAGE_PIXELS = 4096 * 4096
# Cap on the float32 tensor one load() returns: resizing small images up to a
# model's 224 x 224 multiplies their size.
MAX_LOADED_BYTES = 4 * 1024**3

# Image-like samples (C x H x W) have one of these channel counts; grey <-> RGB
# is converted, the alpha channel is dropped.
IMAGE_CHANNELS = (1, 3, 4)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow's convert("L")
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _prod(shape) -> int:
    return int(math.prod(int(d) for d in shape))


# -- format detection ------------------------------------------------------------------


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"the file is not a readable zip archive ({exc}); upload a .npz or a .zip of images") from exc


def _files(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [info for info in archive.infolist() if not info.is_dir()]


def detect_dataset_format(path: str | Path) -> str:
    """``"npz"`` or ``"image_zip"`` from the file's content (not its name).

    An ``.npz`` is a zip whose members are all ``.npy`` arrays; any other zip
    is read as images. Raises ``ValueError`` for anything else.

    Example::

        >>> np.savez("d.npz", x=np.zeros((4, 8)))
        >>> detect_dataset_format("d.npz")
        'npz'
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(
            "this is a single .npy array; save inputs and labels together with "
            "numpy.savez('data.npz', x=inputs, y=labels)"
        )
    if not head.startswith(b"PK"):
        raise ValueError("the file is neither a .npz archive nor a .zip of images")
    with _open_zip(path) as archive:
        members = _files(archive)
        if members and all(info.filename.endswith(".npy") for info in members):
            return NPZ
    return IMAGE_ZIP


# -- .npz --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ArrayInfo:
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _ArrayInfo:
    """Shape and dtype of one array of an .npz, from its header (the data is not read)."""
    key = info.filename[: -len(".npy")]
    try:
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            header_bytes = handle.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError) as exc:
        raise ValueError(f"the array {key!r} in the .npz is corrupt or truncated ({exc})") from exc
    if dtype.hasobject:
        raise ValueError(
            f"the array {key!r} holds Python objects, which would have to be unpickled; Condense does not "
            "unpickle uploads (it can run code): save plain numeric arrays"
        )
    if header_bytes + _prod(shape) * dtype.itemsize != info.file_size:
        raise ValueError(f"the array {key!r} in the .npz is truncated: its header promises more data than it holds")
    return _ArrayInfo(key=key, shape=tuple(int(d) for d in shape), dtype=dtype)


def _npz_arrays(archive: zipfile.ZipFile, max_bytes: int) -> dict[str, _ArrayInfo]:
    members = _files(archive)
    total = sum(info.file_size for info in members)
    if total > max_bytes:
        raise ValueError(f"the arrays unpack to {_megabytes(total)}, more than the {_megabytes(max_bytes)} limit")
    return {info.filename[: -len(".npy")]: _npy_header(archive, info) for info in members}


def _pick(arrays: dict[str, _ArrayInfo], names: tuple[str, ...]) -> _ArrayInfo | None:
    for name in names:
        if name in arrays:
            return arrays[name]
    return None


def _npz_layout(shape: tuple[int, ...]) -> tuple[list[int], str]:
    """The per-sample shape in PyTorch's order and the layout the array is in."""
    if len(shape) < 2:
        raise ValueError(
            f"the inputs have shape {list(shape)}; they need a sample dimension first: N x features, "
            "N x H x W, N x C x H x W or N x H x W x C"
        )
    if shape[0] == 0:
        raise ValueError("the inputs hold no samples (the first dimension is 0)")
    if len(shape) == 2:
        return [shape[1]], "NF"
    if len(shape) == 3:
        return [1, shape[1], shape[2]], "NHW"
    if len(shape) == 4 and shape[3] in IMAGE_CHANNELS and shape[1] not in IMAGE_CHANNELS:
        return [shape[3], shape[1], shape[2]], "NHWC"
    return list(shape[1:]), "NCHW" if len(shape) == 4 else "N..."


def _check_input_dtype(info: _ArrayInfo) -> None:
    if info.dtype.kind == "f" or info.dtype == np.uint8:
        return
    raise ValueError(
        f"the inputs {info.key!r} are {info.dtype}; save them as float32 (used as they are) "
        "or uint8 (0-255, scaled to [0, 1])"
    )


def _read_npz_array(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"the array {key!r} in the .npz cannot be read ({exc})") from exc


def _clean_labels(raw: np.ndarray, key: str, samples: int) -> np.ndarray:
    labels = raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    if labels.ndim != 1:
        raise ValueError(
            f"the labels {key!r} have shape {list(raw.shape)}; give one integer class per sample (shape [N])"
        )
    if len(labels) != samples:
        raise ValueError(f"there are {samples} inputs but {len(labels)} labels {key!r}; give one label per sample")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            bad = labels[~(np.isfinite(labels) & (labels == np.round(labels)))][0]
            raise ValueError(
                f"the labels {key!r} must be whole class numbers (0, 1, 2, ...), but one is {float(bad)}; "
                "one-hot or soft labels are not supported"
            )
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise ValueError(f"the labels {key!r} are {labels.dtype}; they must be integer class numbers (0, 1, 2, ...)")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise ValueError(f"the labels {key!r} must be class numbers from 0 up, but one is {int(labels.min())}")
    return labels


@dataclass(frozen=True)
class _NpzPlan:
    inputs: _ArrayInfo
    labels_key: str | None
    sample_shape: list[int]
    layout: str
    uncompressed_bytes: int


def _plan_npz(path: Path, max_bytes: int) -> _NpzPlan:
    with _open_zip(path) as archive:
        arrays = _npz_arrays(archive, max_bytes)
        uncompressed = sum(info.file_size for info in _files(archive))
    inputs = _pick(arrays, INPUT_ARRAY_NAMES)
    if inputs is None:
        raise ValueError(
            f"the .npz has no input array: it holds {', '.join(repr(k) for k in arrays) or 'nothing'}; "
            f"name the inputs one of {', '.join(INPUT_ARRAY_NAMES)} (e.g. numpy.savez('data.npz', x=inputs, y=labels))"
        )
    _check_input_dtype(inputs)
    sample_shape, layout = _npz_layout(inputs.shape)
    labels = _pick(arrays, LABEL_ARRAY_NAMES)
    return _NpzPlan(inputs, labels.key if labels else None, sample_shape, layout, uncompressed)


def _class_counts(labels: np.ndarray) -> list[dict[str, Any]]:
    counts = Counter(labels.tolist())
    return [{"name": str(label), "count": counts[label]} for label in sorted(counts)]


def _first_corrupt_member(archive: zipfile.ZipFile) -> str | None:
    try:
        return archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"the archive is corrupt ({exc})") from exc


def _inspect_npz(path: Path, max_bytes: int) -> dict[str, Any]:
    plan = _plan_npz(path, max_bytes)
    with _open_zip(path) as archive:
        broken = _first_corrupt_member(archive)
    if broken:
        raise ValueError(f"the array {broken[: -len('.npy')]!r} in the .npz is corrupt (its checksum does not match)")
    samples = plan.inputs.shape[0]
    summary: dict[str, Any] = {
        "format": NPZ,
        "samples": samples,
        "sample_shape": plan.sample_shape,
        "labelled": plan.labels_key is not None,
        "classes": [],
        "num_classes": 0,
        "input_array": plan.inputs.key,
        "label_array": plan.labels_key,
        "dtype": str(plan.inputs.dtype),
        "layout": plan.layout,
        "uncompressed_bytes": plan.uncompressed_bytes,
    }
    if plan.labels_key:
        labels = _clean_labels(_read_npz_array(path, plan.labels_key), plan.labels_key, samples)
        summary["classes"] = _class_counts(labels)
        summary["num_classes"] = int(labels.max()) + 1
    return summary


def _npz_inputs(path: Path, plan: _NpzPlan, index: np.ndarray) -> torch.Tensor:
    raw = _read_npz_array(path, plan.inputs.key)[index]
    if plan.layout == "NHWC":
        raw = raw.transpose(0, 3, 1, 2)
    elif plan.layout == "NHW":
        raw = raw[:, None]
    inputs = torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float32)
    if raw.dtype == np.uint8:
        inputs /= 255.0
    return inputs


# -- .zip of images ----------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageEntry:
    info: zipfile.ZipInfo
    class_name: str | None


@dataclass(frozen=True)
class _ImageListing:
    entries: list[_ImageEntry]
    classes: list[str]
    ignored: list[str]
    uncompressed_bytes: int


def _list_images(archive: zipfile.ZipFile, max_bytes: int, max_images: int) -> _ImageListing:
    found: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    ignored: list[str] = []
    for info in _files(archive):
        parts = tuple(p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("/", ""))
        # macOS adds __MACOSX/ and ._ files; dotfiles and ".." are never data.
        if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            ignored.append(info.filename)
            continue
        found.append((parts, info))
    if not found:
        if ignored:
            raise ValueError(
                f"the zip holds no images ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}): its "
                f"{len(ignored)} file(s) are of other kinds, e.g. {ignored[0]!r}"
            )
        raise ValueError("the zip holds no images: it is empty")
    if len(found) > max_images:
        raise ValueError(f"the zip holds {len(found)} images; the limit is {max_images}")
    total = sum(info.file_size for _, info in found)
    if total > max_bytes:
        raise ValueError(f"the images unpack to {_megabytes(total)}, more than the {_megabytes(max_bytes)} limit")

    # Look through folders that wrap everything (zipping "my-data/" gives
    # my-data/cat/1.png): classes are the first folders that differ.
    depth = 0
    while all(len(parts) > depth + 1 for parts, _ in found) and len({parts[depth] for parts, _ in found}) == 1:
        depth += 1
    in_folder = [len(parts) > depth + 1 for parts, _ in found]
    if all(in_folder):
        entries = [_ImageEntry(info, parts[depth]) for parts, info in found]
    elif not any(in_folder):
        entries = [_ImageEntry(info, None) for _, info in found]
    else:
        loose = next(info.filename for (_, info), inside in zip(found, in_folder) if not inside)
        raise ValueError(
            f"{sum(in_folder)} images are in class folders and {in_folder.count(False)} are not (e.g. {loose!r}): "
            "put every image in a folder named after its class for a labelled dataset, or none in folders "
            "for an unlabelled one"
        )
    entries.sort(key=lambda entry: (entry.class_name or "", entry.info.filename))
    classes = sorted({entry.class_name for entry in entries if entry.class_name is not None})
    return _ImageListing(entries, classes, ignored, total)


def _open_image(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    """Decode one image fully (so truncated files fail here); a ValueError names it."""
    from PIL import Image, UnidentifiedImageError

    name = info.filename
    try:
        image = Image.open(io.BytesIO(archive.read(info)), formats=PIL_FORMATS)
    except UnidentifiedImageError as exc:
        raise ValueError(f"the image {name!r} cannot be read: it is not a png, jpeg, bmp, gif or webp image") from exc
    except RuntimeError as exc:  # zipfile: an encrypted member
        raise ValueError(f"the image {name!r} cannot be read ({exc}); upload a zip without a password") from exc
    except Exception as exc:  # decoders of untrusted bytes fail in many ways (struct.error, IndexError, ...)
        raise ValueError(f"the image {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ValueError(
            f"the image {name!r} is {width} x {height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels per image"
        )
    try:
        image.load()
    except Exception as exc:  # as above, including Pillow's DecompressionBombError
        image.close()
        raise ValueError(f"the image {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc
    return image


def _image_channels(image) -> int:
    if image.mode in _GREY_MODES:
        return 1
    if image.mode == "P":  # a palette (GIFs) may hold only greys
        rgb = np.asarray(image.convert("RGB"))
        return 1 if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all() else 3
    return 3


def _inspect_image_zip(path: Path, max_bytes: int, max_images: int) -> dict[str, Any]:
    with _open_zip(path) as archive:
        listing = _list_images(archive, max_bytes, max_images)
        sizes: Counter = Counter()
        channels = 1
        for entry in listing.entries:
            with _open_image(archive, entry.info) as image:
                sizes[(image.height, image.width)] += 1
                channels = max(channels, _image_channels(image))
    (height, width), _ = sizes.most_common(1)[0]
    labelled = bool(listing.classes)
    counts = Counter(entry.class_name for entry in listing.entries)
    return {
        "format": IMAGE_ZIP,
        "samples": len(listing.entries),
        "sample_shape": [channels, height, width],
        "labelled": labelled,
        "classes": [{"name": name, "count": counts[name]} for name in listing.classes],
        "num_classes": len(listing.classes),
        "image_sizes": {
            "distinct": len(sizes),
            "min": list(min(sizes, key=lambda hw: hw[0] * hw[1])),
            "max": list(max(sizes, key=lambda hw: hw[0] * hw[1])),
        },
        "ignored_files": len(listing.ignored),
        "uncompressed_bytes": listing.uncompressed_bytes,
    }


def _image_to_array(image, channels: int, height: int, width: int) -> np.ndarray:
    """One decoded image as float32 C x H x W in [0, 1], resized and converted."""
    from PIL import Image

    if image.mode in _HIGH_DEPTH_MODES:
        # 16-bit and float greys: Pillow's convert("L") would clip them.
        scale = 1.0 if image.mode == "F" else 1.0 / 65535.0
        if image.mode != "F":
            image = image.convert("I")
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32)[None] * scale
        if image.mode != "F":
            array = np.clip(array, 0.0, 1.0)
        return np.repeat(array, channels, axis=0)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a transparent palette goes straight to RGB
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


# -- fitting samples to the model's input --------------------------------------------------


def _fit_kind(sample_shape: list[int], input_shape: list[int]) -> str:
    if sample_shape == input_shape:
        return "same"
    if len(sample_shape) == 3 and len(input_shape) == 3 and sample_shape[0] in IMAGE_CHANNELS \
            and input_shape[0] in (1, 3):
        return "image"
    if _prod(sample_shape) == _prod(input_shape):
        return "reshape"
    raise ValueError(
        f"the dataset's samples have shape {sample_shape}, but the model takes {input_shape}: images "
        "(C x H x W with 1, 3 or 4 channels) are resized and converted grey <-> RGB for a 1- or 3-channel "
        f"model, other samples must hold as many values as the model's input ({_prod(sample_shape)} vs "
        f"{_prod(input_shape)})"
    )


def check_input_fit(sample_shape, input_shape) -> None:
    """Raise ``ValueError`` (naming both shapes) unless samples of ``sample_shape`` can feed the model.

    Equal shapes fit; images (C x H x W, 1/3/4 channels) fit any 1- or 3-channel
    image model (resized, grey <-> RGB, alpha dropped); any other shape fits
    when it holds the same number of values (reshaped, e.g. 64 features to
    1 x 8 x 8).

    Example::

        >>> check_input_fit([3, 32, 32], [1, 8, 8])   # resized and made grey
        >>> check_input_fit([10], [1, 8, 8])
        Traceback (most recent call last):
        ValueError: the dataset's samples have shape [10], but the model takes [1, 8, 8]: ...
    """
    _fit_kind([int(d) for d in sample_shape], [int(d) for d in input_shape])


def fit_inputs(inputs: torch.Tensor, input_shape) -> torch.Tensor:
    """Make a float batch ``N x *sample_shape`` into ``N x *input_shape`` (see :func:`check_input_fit`).

    Example::

        >>> fit_inputs(torch.rand(5, 3, 32, 32), [1, 8, 8]).shape
        torch.Size([5, 1, 8, 8])
    """
    input_shape = [int(d) for d in input_shape]
    kind = _fit_kind(list(inputs.shape[1:]), input_shape)
    if kind == "same":
        return inputs
    if kind == "reshape":
        return inputs.reshape(len(inputs), *input_shape)
    channels, height, width = input_shape
    if inputs.shape[1] == 4:
        inputs = inputs[:, :3]  # alpha
    if inputs.shape[1] == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=inputs.dtype).view(1, 3, 1, 1)
        inputs = (inputs * weights).sum(dim=1, keepdim=True)
    elif inputs.shape[1] == 1 and channels == 3:
        inputs = inputs.expand(-1, 3, -1, -1)
    if tuple(inputs.shape[2:]) != (height, width):
        inputs = F.interpolate(inputs, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return inputs.contiguous()


# -- splits and the source object ------------------------------------------------------------


def split_indices(samples: int, split: str, val_fraction: float, seed: int) -> np.ndarray:
    """Indices of ``split`` in a seeded shuffle: ``test`` is ``val_fraction`` of
    the samples (at least one), ``train`` the rest, ``all`` everything; each in
    file order. The same arguments give the same indices on every machine.

    Example::

        >>> split_indices(10, "test", 0.2, seed=0)
        array([4, 6])
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return np.arange(samples)
    order = np.random.default_rng(seed).permutation(samples)
    test_count = min(max(int(round(samples * val_fraction)), 1), max(samples - 1, 1))
    chosen = order[:test_count] if split == "test" else order[test_count:]
    return np.sort(chosen)


def holdout(data, fraction: float = 0.2):
    """``data`` split into (fit, validation); the dataset's own split is already shuffled."""
    inputs, labels = data
    cut = max(1, min(len(inputs) - 1, round(len(inputs) * (1 - fraction))))
    fit = (inputs[:cut], None if labels is None else labels[:cut])
    validation = (inputs[cut:], None if labels is None else labels[cut:])
    return fit, validation


def _check_loaded_size(count: int, input_shape: list[int], split: str) -> None:
    size = count * _prod(input_shape) * 4
    if size > MAX_LOADED_BYTES:
        raise ValueError(
            f"the {split} split, {count} samples of {input_shape}, needs {_megabytes(size)} as float32; "
            f"the limit is {_megabytes(MAX_LOADED_BYTES)}: use fewer or smaller samples"
        )


@dataclass
class DatasetSource:
    """Where a job's data comes from: a built-in dataset name, or a file
    (``.npz`` / ``.zip`` of images) with its format (detected when ``None``).

    Uploaded files are split with a seeded shuffle: ``val_fraction`` of the
    samples is the ``test`` split (evaluation), the rest ``train``. Built-in
    datasets keep their own fixed split and need the model's exact input
    shape. Plain values only, so a recipe can carry it as JSON.

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
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ValueError(f"recipe dataset: unknown key {unknown[0]!r}")
            return cls(**value)
        raise ValueError(f"a recipe's dataset is a built-in name or an object, got {type(value).__name__}")

    @property
    def label(self) -> str:
        """What to call it in messages: the built-in name or the file name."""
        return self.builtin or Path(self.path).name

    def resolved_format(self) -> str:
        if self.builtin:
            return "builtin"
        if not Path(self.path).is_file():
            raise ValueError(f"the dataset file {self.path} does not exist")
        return self.format or detect_dataset_format(self.path)

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
            check_input_fit(_plan_npz(Path(self.path), self.max_uncompressed_bytes).sample_shape, input_shape)
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
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.check_fits(input_shape)
        if self.builtin:
            inputs, labels = load_builtin_dataset(self.builtin, split=split)
            return inputs, labels if BUILTIN_DATASETS[self.builtin].has_labels else None
        path = Path(self.path)
        if self.resolved_format() == NPZ:
            return self._load_npz(path, input_shape, split)
        return self._load_images(path, input_shape, split)

    def _load_npz(self, path: Path, input_shape: list[int], split: str):
        plan = _plan_npz(path, self.max_uncompressed_bytes)
        index = split_indices(plan.inputs.shape[0], split, self.val_fraction, self.seed)
        _check_loaded_size(len(index), input_shape, split)
        inputs = fit_inputs(_npz_inputs(path, plan, index), input_shape)
        labels = None
        if plan.labels_key:
            raw = _read_npz_array(path, plan.labels_key)
            labels = torch.from_numpy(_clean_labels(raw, plan.labels_key, plan.inputs.shape[0])[index])
        return inputs, labels

    def _load_images(self, path: Path, input_shape: list[int], split: str):
        channels, height, width = input_shape
        with _open_zip(path) as archive:
            listing = _list_images(archive, self.max_uncompressed_bytes, self.max_images)
            index = split_indices(len(listing.entries), split, self.val_fraction, self.seed)
            _check_loaded_size(len(index), input_shape, split)
            inputs = torch.empty(len(index), channels, height, width)
            for row, position in enumerate(index):
                with _open_image(archive, listing.entries[position].info) as image:
                    inputs[row] = torch.from_numpy(_image_to_array(image, channels, height, width))
        labels = None
        if listing.classes:
            class_index = {name: i for i, name in enumerate(listing.classes)}
            labels = torch.tensor([class_index[listing.entries[i].class_name] for i in index], dtype=torch.int64)
        return inputs, labels


def inspect_dataset(
    path: str | Path,
    *,
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES,
    max_images: int = MAX_IMAGES,
) -> dict[str, Any]:
    """Read an uploaded dataset file and describe it, or say why it cannot be used.

    Returns ``format`` (``npz`` / ``image_zip``), ``samples``, ``sample_shape``
    (C x H x W for images; the most common image size for a zip),
    ``labelled``, ``classes`` (``[{"name", "count"}]``), ``num_classes`` and
    ``uncompressed_bytes``, plus details of the format. Raises ``ValueError``
    with a message fit for the person who uploaded it: a corrupt archive, a zip
    without images, an unreadable image (named), an .npz without inputs,
    pickled arrays, inputs and labels of different lengths, labels that are
    not whole class numbers, anything over the size caps.

    Example::

        >>> np.savez("d.npz", x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
        >>> s = inspect_dataset("d.npz")
        >>> s["samples"], s["sample_shape"], s["classes"]
        (10, [1, 8, 8], [{'name': '0', 'count': 5}, {'name': '1', 'count': 5}])
    """
    path = Path(path)
    if detect_dataset_format(path) == NPZ:
        return _inspect_npz(path, max_uncompressed_bytes)
    return _inspect_image_zip(path, max_uncompressed_bytes, max_images)
