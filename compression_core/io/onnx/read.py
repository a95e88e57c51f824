"""Reading ONNX files: parse, validate (checker and shape inference without the weights), input shapes.

- :func:`read_onnx`: parse and check a file; external data only from a folder it is given.
- :func:`consolidate_onnx`: one self-contained ``.onnx`` from a file, a folder or a zip.
- :func:`check_onnx`: ``onnx.checker`` and strict shape inference on a weightless copy,
  plus the size checks of the weights that copy leaves out.
- :func:`weightless_copy`: the model with its large initializers turned into graph inputs.
- :func:`onnx_input_shapes` / :func:`random_onnx_inputs`: what the graph takes.

Example::

    >>> proto = read_onnx("resnet18.onnx")
    >>> onnx_input_shapes(proto)
    [[None, 3, 224, 224]]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Set, Union

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper

from ...data.limits import IntakeLimits
from ..errors import ModelFormatError
from .external import (
    external_locations,
    external_tensors,
    inline_external_data,
    lone_external_data_message,
    unpack_onnx_zip,
)
from .structure import check_onnx_file_size, check_onnx_structure

__all__ = [
    "read_onnx",
    "consolidate_onnx",
    "check_onnx",
    "weightless_copy",
    "onnx_input_shapes",
    "random_onnx_inputs",
]

PathLike = Union[str, os.PathLike]

# Initializers at least this large are never shape data (Reshape targets, Slice bounds, ...).
_WEIGHTLESS_MIN_ELEMENTS = 1024
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _type_set(*names: str) -> Set[int]:
    return {getattr(TensorProto, n) for n in names if hasattr(TensorProto, n)}


# Types stored several to a typed value (sub-byte types), or as pairs of values (complex numbers).
_PACKED_TYPES = _type_set("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
_COMPLEX_TYPES = _type_set("COMPLEX64", "COMPLEX128")


def display_name(path: PathLike) -> str:
    """The file name used in messages for the uploader."""
    return Path(path).name or str(path)


def short_error(exc: BaseException, limit: int = 400) -> str:
    """One line of at most ``limit`` characters describing ``exc``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def numel(dims) -> int:
    """Number of elements of a tensor of shape ``dims``."""
    total = 1
    for d in dims:
        total *= int(d)
    return total


# ---------------------------------------------------------------------------
# Reading and checking


def read_onnx(
    path: PathLike,
    *,
    external_data: bool = False,
    external_data_dir: Optional[PathLike] = None,
    check: bool = True,
    limits: IntakeLimits = IntakeLimits(),
) -> ModelProto:
    """Read and validate an ONNX file; return its ``onnx.ModelProto`` with every tensor inline.

    Raises :class:`ModelFormatError` ("<file> is not a valid ONNX model: ...")
    for a truncated, corrupt or invalid file. Tensors kept in external-data
    files are read from ``external_data_dir`` (or, with ``external_data=True``,
    from the file's own folder), and only from inside that folder: see
    :mod:`.external`. Without either, such a file is refused with a message
    that says how to upload it.

    Example::

        >>> proto = read_onnx("resnet18.onnx")
        >>> proto.opset_import[0].version
        17
        >>> proto = read_onnx("upload/m.onnx", external_data_dir="upload/")   # m.onnx.data beside it
    """
    name = display_name(path)
    base = external_data_dir if external_data_dir is not None else (Path(path).parent if external_data else None)
    model = _parse_onnx(path, limits, base)
    if external_tensors(model):
        if base is None:
            raise ModelFormatError(lone_external_data_message(name, external_locations(model)))
        inline_external_data(model, base, name)
    if check:
        check_onnx(model, name)
    return model


def consolidate_onnx(
    source: PathLike,
    target: PathLike,
    *,
    external_data_dir: Optional[PathLike] = None,
    max_entries: Optional[int] = None,
    max_bytes: Optional[int] = None,
    limits: IntakeLimits = IntakeLimits(),
) -> Path:
    """Write one self-contained, checked ``.onnx`` at ``target`` from an ONNX upload; return ``target``.

    ``source`` is a ``.onnx`` file (its external data read from
    ``external_data_dir`` when given, refused otherwise), a folder holding one
    ``.onnx`` and its data files, or a ``.zip`` of them (refused from its
    central directory, then unpacked by :func:`~.external.unpack_onnx_zip`
    within ``limits``; ``max_entries`` / ``max_bytes``, when given, replace
    ``limits.max_zip_entries`` / ``limits.max_unpacked_bytes``). The model's
    structure is checked against ``limits`` before its external data is read
    (:func:`~.structure.check_onnx_structure`). A model without external data
    is copied byte for byte; one with it is written with its tensors inline,
    if that fits protobuf's 2 GB.

    Example::

        >>> consolidate_onnx("upload.zip", "store/model.onnx")   # model.onnx + model.onnx.data inside
        PosixPath('store/model.onnx')
    """
    source, target = Path(source), Path(target)
    if max_entries is not None:
        limits = replace(limits, max_zip_entries=int(max_entries))
    if max_bytes is not None:
        limits = replace(limits, max_unpacked_bytes=int(max_bytes))
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        return consolidate_onnx(_single_onnx_in(source), target, external_data_dir=source, limits=limits)
    if zipfile.is_zipfile(source):
        with tempfile.TemporaryDirectory(prefix="condense-onnx-zip-") as tmp:
            model_path = unpack_onnx_zip(source, tmp, limits=limits)
            return consolidate_onnx(model_path, target, external_data_dir=model_path.parent, limits=limits)
    name = display_name(source)
    proto = _parse_onnx(source, limits, external_data_dir)
    if not external_tensors(proto):
        check_onnx(proto, name)
        shutil.copyfile(source, target)
        return target
    if external_data_dir is None:
        raise ModelFormatError(lone_external_data_message(name, external_locations(proto)))
    check_onnx(inline_external_data(proto, external_data_dir, name), name)
    try:
        data = proto.SerializeToString()
    except ValueError as exc:  # protobuf's 2 GB limit, should inline_external_data's estimate have missed it
        raise ModelFormatError(f"{name} is too large for one ONNX file (protobuf's 2 GB limit).") from exc
    target.write_bytes(data)
    return target


def _single_onnx_in(folder: Path) -> Path:
    models = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".onnx" and p.is_file())
    if len(models) != 1:
        found = f"{len(models)} .onnx files" if models else "no .onnx file"
        raise ModelFormatError(f"the folder {folder.name!r} holds {found}; it must hold exactly one .onnx model.")
    return models[0]


def _parse_onnx(path: PathLike, limits: IntakeLimits = IntakeLimits(),
                external_data_dir: Optional[PathLike] = None) -> ModelProto:
    """Parse the file (tensors in external files are not read) and check its structure against ``limits``."""
    name = display_name(path)
    check_onnx_file_size(path, name)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        model = onnx.load_model_from_string(raw)
    except Exception as exc:  # noqa: BLE001 - DecodeError and friends
        raise ModelFormatError(f"{name} is not a valid ONNX model: {short_error(exc)}") from exc
    if not model.HasField("graph") or (len(model.graph.node) == 0 and len(model.graph.output) == 0):
        raise ModelFormatError(f"{name} is not a valid ONNX model: it has no graph")
    if not model.opset_import:
        raise ModelFormatError(f"{name} is not a valid ONNX model: it declares no opset")
    check_onnx_structure(model, name, limits, external_data_dir)
    return model


def check_onnx(model: ModelProto, name: str = "model") -> None:
    """Run ``onnx.checker`` and strict shape inference; raise :class:`ModelFormatError` on failure.

    Both run on a copy without the large weights (:func:`weightless_copy`),
    whose byte sizes are checked here instead, so a model of any size is
    checked in a fraction of a second.

    Example::

        >>> check_onnx(onnx.load("model.onnx"), "model.onnx")   # None when valid
    """
    _check_tensor_sizes(model, name)
    lite = weightless_copy(model)
    try:
        onnx.checker.check_model(lite)
    except Exception as exc:  # noqa: BLE001 - ValidationError, C++ errors
        raise ModelFormatError(f"{name} is not a valid ONNX model: {short_error(exc)}") from exc
    try:
        onnx.shape_inference.infer_shapes(lite, check_type=False, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - InferenceError
        raise ModelFormatError(
            f"{name} is not a valid ONNX model: shape inference failed: {short_error(exc)}"
        ) from exc


def _is_repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == field.LABEL_REPEATED


def _copy_fields(target, source, skip: str) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if _is_repeated(field):
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def weightless_copy(model: ModelProto) -> ModelProto:
    """Copy of an ``onnx.ModelProto`` whose large initializers are graph inputs of the same type and shape.

    The ONNX checker and shape inference need the weights' shapes, not their
    values; on the copy they do not serialise hundreds of megabytes each time.

    Example::

        >>> weightless_copy(onnx.load("vgg11.onnx")).ByteSize() < 1_000_000
        True
    """
    lite = ModelProto()
    _copy_fields(lite, model, skip="graph")
    graph = model.graph
    _copy_fields(lite.graph, graph, skip="initializer")
    inputs = {value.name for value in graph.input}
    for tensor in graph.initializer:
        if numel(tensor.dims) >= _WEIGHTLESS_MIN_ELEMENTS and tensor.data_type != TensorProto.STRING:
            if tensor.name not in inputs:
                lite.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
                inputs.add(tensor.name)
        else:
            lite.graph.initializer.add().CopyFrom(tensor)
    return lite


def _check_tensor_sizes(model: ModelProto, name: str) -> None:
    """What ``onnx.checker`` verifies of an initializer's data, for those :func:`weightless_copy` drops.

    One value field, and as many typed values as the shape says (the length of
    ``raw_data`` is checked when the tensor is read, without copying it here).
    """
    for tensor in model.graph.initializer:
        count = numel(tensor.dims)
        if count < _WEIGHTLESS_MIN_ELEMENTS or tensor.data_type == TensorProto.STRING:
            continue
        if tensor.data_location == TensorProto.EXTERNAL:
            continue
        typed = [field for field in _TYPED_FIELDS if len(getattr(tensor, field))]
        has_raw = tensor.HasField("raw_data")
        if has_raw + len(typed) != 1:
            raise ModelFormatError(
                f"{name} is not a valid ONNX model: initializer {tensor.name!r} must hold its values "
                f"in exactly one field (raw_data or a typed field)"
            )
        if typed and tensor.data_type not in _PACKED_TYPES:
            held = len(getattr(tensor, typed[0]))
            expected = count * (2 if tensor.data_type in _COMPLEX_TYPES else 1)
            if held != expected:
                raise ModelFormatError(
                    f"{name} is not a valid ONNX model: initializer {tensor.name!r} of shape {list(tensor.dims)} "
                    f"holds {held} values"
                )


# ---------------------------------------------------------------------------
# Inputs


def _model_of(path_or_model) -> ModelProto:
    return path_or_model if hasattr(path_or_model, "graph") else _parse_onnx(path_or_model)


def _graph_inputs(model: ModelProto):
    initializer_names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializer_names]


def _dims(value) -> List[Optional[int]]:
    return [
        dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
        for dim in value.type.tensor_type.shape.dim
    ]


def onnx_input_shapes(path_or_model: Union[PathLike, ModelProto]) -> List[List[Optional[int]]]:
    """Input shapes declared by an ONNX graph (a file or an ``onnx.ModelProto``); dynamic dimensions are ``None``.

    Initializers listed as graph inputs (old opsets) are not inputs.

    Example::

        >>> onnx_input_shapes("resnet18.onnx")
        [[None, 3, 224, 224]]
    """
    shapes = []
    for value in _graph_inputs(_model_of(path_or_model)):
        shapes.append(_dims(value) if value.type.tensor_type.HasField("shape") else [])
    return shapes


def random_onnx_inputs(path_or_model, *, batch_size: int = 1, seed: int = 0) -> List[np.ndarray]:
    """Random numpy inputs matching an ONNX graph's inputs (dynamic first dim -> ``batch_size``).

    Example::

        >>> [x.shape for x in random_onnx_inputs("resnet18.onnx", batch_size=2)]
        [(2, 3, 224, 224)]
    """
    model = _model_of(path_or_model)
    rng = np.random.default_rng(seed)
    arrays = []
    for value in _graph_inputs(model):
        shape = []
        for index, dim in enumerate(_dims(value)):
            if dim is None:
                if index != 0:
                    raise ValueError(
                        f"ONNX input {value.name!r} has dynamic dimension {index}; pass inputs= explicitly"
                    )
                dim = batch_size
            shape.append(dim)
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(np.bool_))
        else:
            arrays.append(rng.integers(0, 10, size=shape).astype(dtype))
    return arrays
