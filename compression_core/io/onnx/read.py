"""Reading ONNX files: parse, validate (checker and shape inference without the weights), input shapes.

- :func:`read_onnx`: parse and check a file, refuse external data unless asked.
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
from pathlib import Path
from typing import List, Optional, Set, Union

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper
from onnx.external_data_helper import load_external_data_for_model

from ..errors import ModelFormatError

__all__ = [
    "read_onnx",
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


def read_onnx(path: PathLike, *, external_data: bool = False, check: bool = True) -> ModelProto:
    """Read and validate an ONNX file; return its ``onnx.ModelProto``.

    Raises :class:`ModelFormatError` ("<file> is not a valid ONNX model: ...")
    for a truncated, corrupt or invalid file. Files whose tensors live in
    external data files are refused unless ``external_data=True``.

    Example::

        >>> proto = read_onnx("resnet18.onnx")
        >>> proto.opset_import[0].version
        17
    """
    name = display_name(path)
    model = _parse_onnx(path)
    uses_external = any(
        t.data_location == TensorProto.EXTERNAL for t in _all_graph_tensors(model.graph)
    )
    if uses_external:
        if not external_data:
            raise ModelFormatError(
                f"{name} keeps its weights in separate external-data files; upload a single-file ONNX "
                "model (onnx.save(model, path, save_as_external_data=False))."
            )
        try:
            load_external_data_for_model(model, str(Path(path).resolve().parent))
        except Exception as exc:  # noqa: BLE001
            raise ModelFormatError(f"{name}: cannot read its external data: {short_error(exc)}") from exc

    if check:
        check_onnx(model, name)
    return model


def _parse_onnx(path: PathLike) -> ModelProto:
    """Parse the file (tensors in external files are not read)."""
    name = display_name(path)
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


def _all_graph_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_graph_tensors(sub)


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
