"""Weights-only files: safetensors and ``torch.save(state_dict)``, in and out."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..data.archives import open_checked_zip
from ..data.limits import IntakeLimits
from .errors import ModelFormatError

__all__ = [
    "NotWeightsOnly",
    "MAX_SAFETENSORS_HEADER_BYTES",
    "MAX_SAFETENSORS_TENSORS",
    "read_safetensors",
    "safetensors_header_check",
    "read_torch_state_dict",
    "extract_state_dict",
    "compare_state_dicts",
    "load_state_dict_checked",
    "infer_num_classes",
    "safetensors_state_dict",
    "save_safetensors",
    "state_dict_bytes",
    "plan_path_for",
]

PathLike = Union[str, os.PathLike]
_SHOW = 5  # keys listed per category in error messages
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")


#: The safetensors format's own cap on the JSON header.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000
#: Tensors one weights file may name (a built-in architecture has a few hundred to a few thousand).
MAX_SAFETENSORS_TENSORS = 100_000
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8,
}


class NotWeightsOnly(Exception):
    """The pickle needs more than tensors/containers to load (a pickled object)."""


def _name(path: PathLike) -> str:
    return Path(path).name or str(path)


# ---------------------------------------------------------------------------
# Reading


def safetensors_header_check(path: PathLike, limits: IntakeLimits = IntakeLimits()) -> Dict[str, dict]:
    """Read and check a safetensors header without touching the tensor data; return its tensor entries.

    The header is 8 bytes of length then that much JSON: refused when the
    length is over the format's 100 MB or the file, the JSON is not one flat
    object (nesting is refused; ``__metadata__`` maps strings to strings),
    a tensor's shape declares more than ``limits.max_tensor_elements``, or its
    ``data_offsets`` do not match its shape and dtype or leave the file.

    Example::

        >>> safetensors_header_check("resnet18.safetensors")["fc.weight"]["shape"]
        [1000, 512]
    """
    name = _name(path)
    bad = f"{name} is not a valid safetensors file"
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise ModelFormatError(f"{bad}: it is shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER_BYTES or 8 + length > size:
                raise ModelFormatError(
                    f"{bad}: its header claims {length:,} bytes, more than the format's "
                    f"{MAX_SAFETENSORS_HEADER_BYTES:,} or the {size:,}-byte file"
                )
            raw = handle.read(length)
    except OSError as exc:
        raise ModelFormatError(f"{name} cannot be read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ModelFormatError(f"{bad}: its header is not JSON ({reason})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{bad}: its header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFormatError(f"{bad}: its __metadata__ must map names to strings (nested JSON is refused)")
    if len(header) > MAX_SAFETENSORS_TENSORS:
        raise ModelFormatError(f"{bad}: it names {len(header):,} tensors, more than {MAX_SAFETENSORS_TENSORS:,}")
    data_bytes = size - 8 - length
    for key, entry in header.items():
        _check_safetensors_entry(bad, key, entry, data_bytes, limits)
    return header


def _check_safetensors_entry(bad: str, key: str, entry, data_bytes: int, limits: IntakeLimits) -> None:
    label = f"tensor {key[:100]!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ModelFormatError(f"{bad}: {label} must be an object of dtype, shape and data_offsets (nothing nested)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise ModelFormatError(f"{bad}: {label} has a dtype that is not a name")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ModelFormatError(f"{bad}: {label} has a shape that is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
        raise ModelFormatError(f"{bad}: {label}'s data_offsets {str(offsets)[:60]} leave the file's "
                               f"{data_bytes:,} bytes of data")
    elements = math.prod(shape)
    if elements > limits.max_tensor_elements:
        raise ModelFormatError(limits.over(f"{bad.split(' is not')[0]}: {label} declares", elements, "elements",
                                           "max_tensor_elements"))
    itemsize = _SAFETENSORS_DTYPE_BYTES.get(dtype)  # sub-byte and newer dtypes: safetensors checks them
    if itemsize is not None and elements * itemsize != offsets[1] - offsets[0]:
        raise ModelFormatError(f"{bad}: {label} of shape {shape[:8]} and dtype {dtype} spans "
                               f"{offsets[1] - offsets[0]:,} bytes, not {elements * itemsize:,}")


def read_safetensors(path: PathLike, limits: IntakeLimits = IntakeLimits()) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Read a safetensors file into ``(state_dict on CPU, metadata)``, its header checked first
    (:func:`safetensors_header_check`).

    Example::

        >>> state_dict, metadata = read_safetensors("resnet18.safetensors")
    """
    safetensors_header_check(path, limits)
    try:
        tensors: Dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError
        raise ModelFormatError(f"{_name(path)} is not a valid safetensors file: {exc}") from exc
    return tensors, metadata


def read_torch_state_dict(path: PathLike, map_location="cpu", limits: IntakeLimits = IntakeLimits()):
    """``torch.load(path, weights_only=True)``: safe, returns plain containers of tensors.

    Raises :class:`NotWeightsOnly` for a pickled object (a whole model, custom
    classes), :class:`ModelFormatError` for a damaged file, and for a zip
    archive over ``limits`` (judged from its central directory first: members,
    declared bytes, compression ratio).

    Example::

        >>> obj = read_torch_state_dict("resnet18_state_dict.pt")
    """
    if zipfile.is_zipfile(path):
        # One record per storage: a big state_dict holds thousands; the zip caps still apply.
        open_checked_zip(
            Path(path), max_entries=max(limits.max_zip_entries, MAX_SAFETENSORS_TENSORS),
            max_bytes=limits.max_unpacked_bytes, limits=limits, entries_field="max_zip_entries",
            bytes_field="max_unpacked_bytes", error=ModelFormatError,
            not_a_zip=f"{_name(path)} is not a valid PyTorch file",
        ).close()
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported" in text or "allowed global" in text or "not an allowed" in text:
            raise NotWeightsOnly(text) from exc
        raise ModelFormatError(f"{_name(path)} is not a valid PyTorch file: {_first_line(text)}") from exc
    except RuntimeError as exc:
        text = str(exc)
        if "TorchScript" in text:
            raise NotWeightsOnly(text) from exc
        raise ModelFormatError(f"{_name(path)} is not a valid PyTorch file: {_first_line(text)}") from exc
    except (EOFError, OSError, ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        raise ModelFormatError(f"{_name(path)} is not a valid PyTorch file: {_first_line(str(exc))}") from exc
    except SafetensorError as exc:  # torch.load reads a file named *.safetensors as safetensors
        raise ModelFormatError(f"{_name(path)} is neither a valid safetensors file nor a PyTorch file: "
                               f"{_first_line(str(exc))}") from exc


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Weights only load failed"):
            return line[:300]
    return text.strip()[:300] or "unreadable"


def _is_tensor_mapping(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def extract_state_dict(obj) -> Optional[Dict[str, torch.Tensor]]:
    """The state_dict in a loaded object: itself, or a checkpoint's ``state_dict``/``model``/... entry.

    Returns ``None`` when ``obj`` holds no state_dict. A ``module.`` prefix
    (DataParallel) is removed when every key has it.

    Example::

        >>> extract_state_dict({"epoch": 3, "state_dict": model.state_dict()}).keys() == model.state_dict().keys()
        True
    """
    candidate = None
    if _is_tensor_mapping(obj):
        candidate = obj
    elif isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if _is_tensor_mapping(obj.get(key)):
                candidate = obj[key]
                break
    if candidate is None:
        return None
    state = dict(candidate)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# ---------------------------------------------------------------------------
# Checking and loading into a model


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[Tuple[str, list, list]]]:
    """``(missing keys, unexpected keys, [(key, file shape, model shape)])`` of ``found`` against ``expected``.

    Example::

        >>> compare_state_dicts(model.state_dict(), {})[0][:2]
        ['conv1.weight', 'conv1.bias']
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        (k, list(found[k].shape), list(expected[k].shape))
        for k in expected
        if k in found and tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, mismatched


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "the weights",
                            architecture: Optional[str] = None) -> nn.Module:
    """``model.load_state_dict(state_dict, strict=True)`` with a readable :class:`ModelFormatError`.

    The error lists the first missing and unexpected keys and the shape
    mismatches (file shape vs model shape).

    Example::

        >>> load_state_dict_checked(build_architecture("resnet18"), torch.load("sd.pt", weights_only=True))
    """
    missing, unexpected, mismatched = compare_state_dicts(model.state_dict(), state_dict)
    if missing or unexpected or mismatched:
        target = f"architecture '{architecture}'" if architecture else "the model"
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            shown = [f"{k} (file {f} vs model {m})" for k, f, m in mismatched]
            parts.append(f"shape mismatches ({len(mismatched)}): {_listing(shown)}")
        raise ModelFormatError(f"The weights in {source} do not match {target}: " + "; ".join(parts) + ".")
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:  # e.g. dtype the parameter cannot take
        raise ModelFormatError(f"The weights in {source} cannot be loaded: {exc}") from exc
    return model


def infer_num_classes(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Optional[int]:
    """Class count implied by the weights of ``model``'s last ``nn.Linear``, if it differs.

    Example::

        >>> infer_num_classes(build_architecture("resnet18"), resnet18_10_class_state_dict)
        10
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        return None
    name, module = last
    weight = state_dict.get(f"{name}.weight" if name else "weight")
    if weight is None or weight.dim() != 2 or weight.shape[1] != module.in_features:
        return None
    if weight.shape[0] == module.out_features:
        return None
    return int(weight.shape[0])


# ---------------------------------------------------------------------------
# Writing


def safetensors_state_dict(model_or_state_dict) -> Dict[str, torch.Tensor]:
    """CPU, contiguous, non-aliasing copy of a state_dict as safetensors needs it.

    Tensors sharing storage (tied weights) are cloned; non-tensor entries
    (``_extra_state``) and quantized tensors raise ``ValueError``.

    Example::

        >>> safetensors.torch.save_file(safetensors_state_dict(model), "model.safetensors")
    """
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    result: Dict[str, torch.Tensor] = {}
    seen = set()
    bad = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            bad.append(key)
            continue
        if value.is_quantized:
            raise ValueError(
                f"{key} is a quantized tensor, which safetensors cannot store; export the model to .onnx instead"
            )
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        tensor = tensor.contiguous()
        if tensor.numel():
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen or storage.nbytes() != tensor.numel() * tensor.element_size():
                tensor = tensor.clone()  # tied weights or a view into a bigger buffer
            else:
                seen.add(storage.data_ptr())
        result[key] = tensor
    if bad:
        raise ValueError(f"state_dict entries that are not tensors cannot go into safetensors: {_listing(bad)}")
    return result


def save_safetensors(model_or_state_dict, path: PathLike, metadata: Optional[Dict[str, str]] = None) -> int:
    """Write a model's weights as safetensors; return the file size in bytes.

    Example::

        >>> save_safetensors(model, "model.safetensors", {"condense.architecture": "resnet18"})
        46827520
    """
    tensors = safetensors_state_dict(model_or_state_dict)
    save_file(tensors, str(path), metadata={str(k): str(v) for k, v in (metadata or {}).items()} or None)
    return Path(path).stat().st_size


def state_dict_bytes(model: nn.Module) -> int:
    """Size in bytes of ``model``'s weights serialized as safetensors (nothing is written).

    Exact for a file written with metadata ``{"format": "pt"}``; other
    metadata changes the size by the length of its JSON.

    Example::

        >>> state_dict_bytes(build_architecture("digits_cnn"))
        40000   # roughly
    """
    tensors = safetensors_state_dict(model)
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    dtype_names = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
        torch.bool: "BOOL",
    }
    # safetensors orders tensors by alignment (largest element first), then name
    for key, tensor in sorted(tensors.items(), key=lambda item: (-item[1].element_size(), item[0])):
        size = tensor.numel() * tensor.element_size()
        header[key] = {
            "dtype": dtype_names.get(tensor.dtype, "F32"),
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_len = len(header_bytes) + (-len(header_bytes)) % 8  # safetensors pads the header to 8 bytes
    return 8 + header_len + offset


def plan_path_for(path: PathLike) -> Path:
    """``<dir>/<stem>.plan.json`` for a weights file ``<dir>/<stem>.safetensors``.

    Example::

        >>> plan_path_for("out/model.safetensors")
        PosixPath('out/model.plan.json')
    """
    path = Path(path)
    return path.with_name(path.stem + ".plan.json")
