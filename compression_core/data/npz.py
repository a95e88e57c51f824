"""``.npz`` uploads: arrays read from their headers first (shape, dtype, size), pickles refused.

An input array named ``x`` (or ``inputs``, ``data``, ``images``, ``X``) and
optionally integer labels ``y`` (or ``labels``, ``targets``, ``Y``). Inputs are
float (used as they are) or uint8 (scaled to [0, 1]), shaped N x C x H x W,
N x H x W x C, N x H x W or N x features.

Example::

    >>> np.savez("d.npz", x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
    >>> plan = plan_npz(Path("d.npz"), max_bytes=2**30)
    >>> plan.inputs.key, plan.labels_key, plan.sample_shape, plan.layout
    ('x', 'y', [1, 8, 8], 'NHW')
"""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fit import IMAGE_CHANNELS
from .formats import NPZ, element_count, megabytes, open_zip, zip_files
from .limits import IntakeLimits

INPUT_ARRAY_NAMES = ("x", "inputs", "data", "images", "X")
LABEL_ARRAY_NAMES = ("y", "labels", "targets", "Y")


@dataclass(frozen=True)
class _ArrayInfo:
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: IntakeLimits) -> _ArrayInfo:
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
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError,
            TypeError, SyntaxError, MemoryError, OverflowError) as exc:  # numpy's header parser on hostile bytes
        raise ValueError(f"the array {key!r} in the .npz is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    if dtype.hasobject:
        raise ValueError(
            f"the array {key!r} holds Python objects, which would have to be unpickled; Condense does not "
            "unpickle uploads (it can run code): save plain numeric arrays"
        )
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"the array {key!r} in the .npz is corrupt: its header declares the shape {list(shape)}")
    elements = element_count(shape)
    if elements > limits.max_tensor_elements:
        raise ValueError(limits.over(f"the array {key!r} in the .npz declares", elements, "elements",
                                     "max_tensor_elements"))
    if header_bytes + elements * dtype.itemsize != info.file_size:
        raise ValueError(f"the array {key!r} in the .npz is truncated: its header promises more data than it holds")
    return _ArrayInfo(key=key, shape=tuple(int(d) for d in shape), dtype=dtype)


def _npz_arrays(archive: zipfile.ZipFile, limits: IntakeLimits) -> dict[str, _ArrayInfo]:
    members = zip_files(archive)
    total = sum(info.file_size for info in members)
    max_bytes = limits.dataset_max_uncompressed_bytes
    if total > max_bytes:
        raise ValueError(f"the arrays unpack to {megabytes(total)}, more than the {megabytes(max_bytes)} limit "
                         f"({limits.setting('dataset_max_uncompressed_bytes')})")
    return {info.filename[: -len(".npy")]: _npy_header(archive, info, limits) for info in members}


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


def read_npz_array(path: Path, key: str) -> np.ndarray:
    """The array ``key`` of the .npz at ``path`` (never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"the array {key!r} in the .npz cannot be read ({exc})") from exc


def clean_labels(raw: np.ndarray, key: str, samples: int) -> np.ndarray:
    """``raw`` as int64 class numbers, one per sample; a ``ValueError`` says what is wrong with them."""
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
class NpzPlan:
    """What an .npz holds, from its headers: the inputs, the labels' name, the layout."""

    inputs: _ArrayInfo
    labels_key: str | None
    sample_shape: list[int]
    layout: str
    uncompressed_bytes: int


def plan_npz(path: Path, max_bytes: int, limits: IntakeLimits = IntakeLimits()) -> NpzPlan:
    """Read the .npz's array headers (not the data) and find the inputs and labels.

    The zip is refused from its central directory first (see
    :func:`~.formats.open_zip`; ``max_bytes`` is the unpacked-size cap), then
    any array whose header declares a Python-object dtype, more than
    ``limits.max_tensor_elements`` elements, or more data than the member holds.
    """
    limits = replace(limits, dataset_max_uncompressed_bytes=int(max_bytes))
    with open_zip(path, limits) as archive:
        arrays = _npz_arrays(archive, limits)
        uncompressed = sum(info.file_size for info in zip_files(archive))
    inputs = _pick(arrays, INPUT_ARRAY_NAMES)
    if inputs is None:
        raise ValueError(
            f"the .npz has no input array: it holds {', '.join(repr(k) for k in arrays) or 'nothing'}; "
            f"name the inputs one of {', '.join(INPUT_ARRAY_NAMES)} (e.g. numpy.savez('data.npz', x=inputs, y=labels))"
        )
    _check_input_dtype(inputs)
    sample_shape, layout = _npz_layout(inputs.shape)
    labels = _pick(arrays, LABEL_ARRAY_NAMES)
    return NpzPlan(inputs, labels.key if labels else None, sample_shape, layout, uncompressed)


def _class_counts(labels: np.ndarray) -> list[dict[str, Any]]:
    counts = Counter(labels.tolist())
    return [{"name": str(label), "count": counts[label]} for label in sorted(counts)]


def _first_corrupt_member(archive: zipfile.ZipFile) -> str | None:
    try:
        return archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"the archive is corrupt ({exc})") from exc


def inspect_npz(path: Path, max_bytes: int, limits: IntakeLimits = IntakeLimits()) -> dict[str, Any]:
    """The summary of :func:`~.source.inspect_dataset` for an .npz (checksums and labels checked)."""
    plan = plan_npz(path, max_bytes, limits)
    with open_zip(path, replace(limits, dataset_max_uncompressed_bytes=int(max_bytes))) as archive:
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
        labels = clean_labels(read_npz_array(path, plan.labels_key), plan.labels_key, samples)
        summary["classes"] = _class_counts(labels)
        summary["num_classes"] = int(labels.max()) + 1
    return summary


def npz_inputs(path: Path, plan: NpzPlan, index: np.ndarray) -> torch.Tensor:
    """The rows ``index`` of the inputs as float32 N x C x ... (uint8 scaled to [0, 1])."""
    raw = read_npz_array(path, plan.inputs.key)[index]
    if plan.layout == "NHWC":
        raw = raw.transpose(0, 3, 1, 2)
    elif plan.layout == "NHW":
        raw = raw[:, None]
    inputs = torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float32)
    if raw.dtype == np.uint8:
        inputs /= 255.0
    return inputs
