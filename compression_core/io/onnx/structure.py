"""What an ONNX file declares, checked before anything it declares is built: :func:`onnx_structure_check`.

A file of a few hundred bytes can declare a tensor of 10^15 elements, a
``ConstantOfShape`` of 20000 x 20000, or tens of thousands of nodes that take
minutes to convert. Here the protobuf is parsed without its external data and
without shape inference, and every figure is compared with
:class:`~compression_core.data.limits.IntakeLimits` (the message names the
``CONDENSE_*`` setting that raises it):

- nodes, those of ``If`` / ``Loop`` / ``Scan`` bodies and of local functions
  (as often as they are called) included, and how deeply subgraphs nest;
- every tensor the file stores (initializers, ``Constant`` values, sparse
  tensors): its declared elements, and its declared bytes against the bytes
  actually present (``raw_data``, the typed fields, or the external file's span);
  the declared bytes of all of them;
- graph inputs, outputs and ``value_info`` with static dims;
- what ``ConstantOfShape``, ``Expand``, ``Tile`` and ``Range`` build from
  constant operands (initializers, ``Constant`` nodes, and Identity / Cast /
  Concat / Unsqueeze / Squeeze / Reshape of them).

Example::

    >>> structure = onnx_structure_check("resnet18.onnx")      # torch.onnx.export(..., dynamo=False)
    >>> structure.nodes, structure.ops["Conv"], structure.initializer_bytes
    (65, 20, 46723488)
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

import numpy as np
import onnx
from onnx import ModelProto, TensorProto

from ...data.limits import IntakeLimits
from ..errors import ModelFormatError
from .external import PROTOBUF_LIMIT_BYTES, resolve_location

__all__ = ["OnnxStructure", "check_onnx_structure", "onnx_structure_check"]

PathLike = Union[str, os.PathLike]

_BITS = {
    TensorProto.FLOAT: 32, TensorProto.UINT8: 8, TensorProto.INT8: 8, TensorProto.UINT16: 16,
    TensorProto.INT16: 16, TensorProto.INT32: 32, TensorProto.INT64: 64, TensorProto.BOOL: 8,
    TensorProto.FLOAT16: 16, TensorProto.DOUBLE: 64, TensorProto.UINT32: 32, TensorProto.UINT64: 64,
    TensorProto.COMPLEX64: 64, TensorProto.COMPLEX128: 128, TensorProto.BFLOAT16: 16,
}
for _name, _bits in (("UINT4", 4), ("INT4", 4), ("FLOAT4E2M1", 4), ("UINT2", 2), ("INT2", 2),
                     ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6)):
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = _bits
_COMPLEX = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
# Constant operands small enough to read (shape vectors, Range bounds); anything larger is not a shape.
_MAX_CONSTANT_VALUES = 64
_PASS_THROUGH = {"Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten"}


@dataclass
class OnnxStructure:
    """The small summary :func:`onnx_structure_check` returns: counts, not contents.

    ``nodes`` counts subgraph nodes and local functions as often as they are
    called; ``ops`` is the op histogram over the same nodes; ``initializer_bytes``
    the declared bytes of every stored tensor; ``external_bytes`` the part kept
    in external files; ``max_subgraph_depth`` how deeply subgraphs nest (0: none).
    """

    nodes: int = 0
    ops: Dict[str, int] = field(default_factory=dict)
    initializers: int = 0
    initializer_bytes: int = 0
    external_bytes: int = 0
    max_subgraph_depth: int = 0


def onnx_structure_check(
    path: PathLike, limits: IntakeLimits = IntakeLimits(), external_data_dir: Optional[PathLike] = None
) -> OnnxStructure:
    """Parse an ONNX file without its external data and check what it declares against ``limits``.

    Nothing the file declares is built: no external data is read, no shape
    inference runs, no tensor is converted. A file over protobuf's 2 GB is
    refused before it is read. ``external_data_dir``, when given, is where the
    external-data files are (their sizes are checked against the spans the
    tensors name; locations leaving that folder are refused). Raises
    :class:`~compression_core.io.errors.ModelFormatError` with one sentence:
    what is wrong, the figure, the limit and the ``CONDENSE_*`` setting.

    Example::

        >>> onnx_structure_check("relu_chain.onnx", IntakeLimits(max_onnx_nodes=10_000))
        Traceback (most recent call last):
        ModelFormatError: relu_chain.onnx has 20,000 ONNX nodes (subgraphs and functions included), more than
        the limit of 10,000 (CONDENSE_ONNX_MAX_NODES)
        >>> onnx_structure_check("resnet18.onnx").ops["Conv"]
        20
    """
    path = Path(path)
    name = path.name or str(path)
    check_onnx_file_size(path, name)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - DecodeError, RecursionError of deep nesting, and friends
        raise ModelFormatError(f"{name} is not a valid ONNX model: {_short(exc)}") from exc
    return check_onnx_structure(model, name, limits, external_data_dir)


def check_onnx_structure(
    model: ModelProto, name: str = "model", limits: IntakeLimits = IntakeLimits(),
    external_data_dir: Optional[PathLike] = None,
) -> OnnxStructure:
    """:func:`onnx_structure_check` on a parsed ``onnx.ModelProto`` (external tensors not yet read).

    Example::

        >>> check_onnx_structure(onnx.load("m.onnx", load_external_data=False), "m.onnx").nodes
        65
    """
    return _Walk(model, name, limits, external_data_dir).run()


def check_onnx_file_size(path: Union[str, os.PathLike], name: str) -> int:
    """The file's size; ``ModelFormatError`` when it cannot be read or is over protobuf's 2 GB (before a byte
    of it is parsed)."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ModelFormatError(f"{name} cannot be read ({exc.strerror or exc})") from exc
    if size > PROTOBUF_LIMIT_BYTES:
        raise ModelFormatError(
            f"{name} is {size / 1e9:.2f} GB, above protobuf's 2 GB limit for one ONNX file; keep the weights in "
            "external-data files and upload a .zip of the .onnx and those files"
        )
    return size


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _numel(dims: Iterable[int]) -> int:
    return math.prod(int(d) for d in dims)


class _Walk:
    """One pass over the model: nodes counted first (cheapest refusal), then tensors, then shape producers."""

    def __init__(self, model: ModelProto, name: str, limits: IntakeLimits, external_data_dir):
        self.model, self.name, self.limits = model, name, limits
        self.base = Path(external_data_dir) if external_data_dir is not None else None
        self.structure = OnnxStructure()
        self.ops: Counter = Counter()
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.function_nodes: Dict[tuple, int] = {}

    def refuse(self, text: str) -> None:
        raise ModelFormatError(f"{self.name}: {text}")

    def over(self, what: str, figure: int, unit: str, field_name: str) -> None:
        raise ModelFormatError(self.limits.over(f"{self.name} {what}", figure, unit, field_name))

    def run(self) -> OnnxStructure:
        graph = self.model.graph
        try:
            nodes = self._count_graph(graph, depth=0)
        except UnicodeDecodeError:
            nodes = None
        if nodes is None or not _text_is_utf8(self.model):
            self.refuse("a name or text field is not UTF-8; the file is damaged")
        if nodes > self.limits.max_onnx_nodes:
            self.over("has", nodes, "ONNX nodes (subgraphs and functions included)", "max_onnx_nodes")
        self.structure.nodes = nodes
        self.structure.ops = dict(self.ops.most_common())
        self._check_tensors_of(graph, depth=0)
        for function in self.model.functions:
            for node in function.node:
                self._check_node_tensors(node, depth=1)
        self._check_shape_producers(graph, {}, {}, depth=0)
        return self.structure

    # -- nodes ---------------------------------------------------------------

    def _count_graph(self, graph, depth: int) -> int:
        if depth > self.limits.max_subgraph_depth:
            self.over("nests subgraphs (If / Loop / Scan bodies)", depth, "levels deep", "max_subgraph_depth")
        self.structure.max_subgraph_depth = max(self.structure.max_subgraph_depth, depth)
        return self._count_nodes(graph.node, depth, stack=())

    def _count_nodes(self, nodes, depth: int, stack: tuple) -> int:
        total = 0
        for node in nodes:
            self.ops[node.op_type] += 1
            key = (node.domain, node.op_type)
            total += self._function_size(key, depth, stack) if key in self.functions else 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    total += self._count_graph(attr.g, depth + 1)
                for sub in attr.graphs:
                    total += self._count_graph(sub, depth + 1)
        return total

    def _function_size(self, key: tuple, depth: int, stack: tuple) -> int:
        if key in stack:
            self.refuse(f"the local function {key[1]!r} calls itself; ONNX functions cannot recurse")
        if len(stack) >= self.limits.max_subgraph_depth:
            self.over("nests function calls", len(stack) + 1, "levels deep", "max_subgraph_depth")
        if key not in self.function_nodes:
            self.function_nodes[key] = self._count_nodes(self.functions[key].node, depth, stack + (key,))
        return self.function_nodes[key]

    # -- stored tensors ------------------------------------------------------

    def _check_tensors_of(self, graph, depth: int) -> None:
        for tensor in graph.initializer:
            self._check_tensor(tensor, "initializer")
        for sparse in graph.sparse_initializer:
            self._check_sparse(sparse)
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            self._check_value_info(value)
        for node in graph.node:
            self._check_node_tensors(node, depth)

    def _check_node_tensors(self, node, depth: int) -> None:
        for attr in node.attribute:
            if attr.HasField("t"):
                self._check_tensor(attr.t, "the tensor", f" of its {_node_label(node)}")
            for tensor in attr.tensors:
                self._check_tensor(tensor, "the tensor", f" of its {_node_label(node)}")
            if attr.HasField("sparse_tensor"):
                self._check_sparse(attr.sparse_tensor)
            for sparse in attr.sparse_tensors:
                self._check_sparse(sparse)
            if attr.HasField("g"):
                self._check_tensors_of(attr.g, depth + 1)
            for sub in attr.graphs:
                self._check_tensors_of(sub, depth + 1)

    def _elements(self, dims, label: str) -> int:
        if any(int(d) < 0 for d in dims):
            self.refuse(f"{label} declares the negative shape {list(dims)[:8]}")
        count = _numel(dims)
        if count > self.limits.max_tensor_elements:
            self.over(f"declares {label} of shape {list(dims)[:8]}, that is", count, "elements", "max_tensor_elements")
        return count

    def _check_tensor(self, tensor: TensorProto, kind: str, where: str = "") -> None:
        label = f"{kind} {tensor.name[:100]!r}{where}"
        count = self._elements(tensor.dims, label)
        self.structure.initializers += 1
        if tensor.data_type == TensorProto.STRING:
            held = len(tensor.string_data)
            if held < count:
                self.refuse(f"{label} declares {count:,} strings but holds {held:,}")
            return
        bits = _BITS.get(tensor.data_type, 8)
        declared = (count * bits + 7) // 8
        self.structure.initializer_bytes += declared
        if self.structure.initializer_bytes > self.limits.max_unpacked_bytes:
            self.over("declares weights of more than", self.structure.initializer_bytes, "bytes", "max_unpacked_bytes")
        present = self._present_bytes(tensor, label, bits)
        if present is not None and declared > present:
            self.refuse(
                f"{label} of shape {list(tensor.dims)[:8]} declares {declared:,} bytes but the file holds "
                f"{present:,} for it; the model is damaged (or built to look small)"
            )

    def _present_bytes(self, tensor: TensorProto, label: str, bits: int) -> Optional[int]:
        """Bytes the file holds for ``tensor``; ``None`` when they cannot be known yet (external, no folder)."""
        if tensor.data_location == TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            try:
                offset = int(info.get("offset") or 0)
                length = int(info["length"]) if info.get("length") else None
            except ValueError:
                self.refuse(f"{label} has an unreadable external-data offset or length")
            if offset < 0 or (length is not None and length < 0):
                self.refuse(f"{label} has a negative external-data offset or length")
            if self.base is None:
                if length is not None:
                    self.structure.external_bytes += length
                return length
            path = resolve_location(self.base, info.get("location", ""), self.name)
            size = path.stat().st_size
            available = max(size - offset, 0)
            if length is not None and offset + length > size:
                self.refuse(f"{label} reads bytes {offset:,}..{offset + length:,} of {info.get('location')!r}, "
                            f"which holds only {size:,} bytes")
            span = length if length is not None else available
            self.structure.external_bytes += span
            return span
        if tensor.HasField("raw_data"):
            return len(tensor.raw_data)
        values = sum(len(getattr(tensor, name)) for name in _TYPED_FIELDS)
        if tensor.data_type in _COMPLEX:
            return values * bits // 16
        # One typed value per element (packed sub-byte types: several per value, at most 8).
        return values * max(bits, 8) // 8 * (8 if bits < 8 else 1)

    def _check_sparse(self, sparse) -> None:
        self._elements(sparse.dims, f"a sparse tensor {sparse.values.name[:100]!r}")
        self._check_tensor(sparse.values, "a sparse tensor's values")
        self._check_tensor(sparse.indices, "a sparse tensor's indices")

    def _check_value_info(self, value) -> None:
        tensor_type = value.type.tensor_type if value.type.HasField("tensor_type") else None
        if tensor_type is None or not tensor_type.HasField("shape"):
            return
        static = [d.dim_value for d in tensor_type.shape.dim if d.HasField("dim_value") and d.dim_value > 0]
        count = _numel(static)
        if count > self.limits.max_tensor_elements:
            self.over(f"declares the tensor {value.name[:100]!r} with static dims {static[:8]}, that is", count,
                      "elements", "max_tensor_elements")

    # -- what ConstantOfShape / Expand / Tile / Range build --------------------

    def _check_shape_producers(self, graph, outer_values: dict, outer_sizes: dict, depth: int) -> None:
        values = dict(outer_values)
        sizes = dict(outer_sizes)  # name -> elements, where static
        for tensor in graph.initializer:
            sizes[tensor.name] = _numel(tensor.dims)
            small = _small_value(tensor)
            if small is not None:
                values[tensor.name] = small
        for value in list(graph.input) + list(graph.value_info):
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                dims = value.type.tensor_type.shape.dim
                if all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
                    sizes.setdefault(value.name, _numel(d.dim_value for d in dims))
        for node in graph.node:
            self._produced(node, values, sizes)
            for attr in node.attribute:
                if attr.HasField("g"):
                    self._check_shape_producers(attr.g, values, sizes, depth + 1)
                for sub in attr.graphs:
                    self._check_shape_producers(sub, values, sizes, depth + 1)

    def _produced(self, node, values: dict, sizes: dict) -> None:
        op, inputs = node.op_type, list(node.input)

        def operand(index: int):
            return values.get(inputs[index]) if len(inputs) > index and inputs[index] else None

        built = None
        if op == "Constant":
            for attr in node.attribute:
                small = _constant_attribute(attr)
                if small is not None and node.output:
                    values[node.output[0]] = small
            return
        if op in _PASS_THROUGH and operand(0) is not None and node.output:
            values[node.output[0]] = operand(0).reshape(-1)
            return
        if op == "Concat" and inputs and all(operand(i) is not None for i in range(len(inputs))) and node.output:
            joined = np.concatenate([operand(i).reshape(-1) for i in range(len(inputs))])
            if joined.size <= _MAX_CONSTANT_VALUES:
                values[node.output[0]] = joined
            return
        if op == "ConstantOfShape" and operand(0) is not None:
            built = _shape_elements(operand(0))
        elif op == "Expand" and operand(1) is not None:
            built = _shape_elements(operand(1))
        elif op == "Tile" and operand(1) is not None:
            repeats = _shape_elements(operand(1))
            source = sizes.get(inputs[0], 1) if inputs else 1
            built = None if repeats is None else repeats * max(int(source), 1)
        elif op == "Range" and all(operand(i) is not None and operand(i).size == 1 for i in range(3)):
            start, limit, delta = (float(operand(i).reshape(-1)[0]) for i in range(3))
            if delta != 0 and all(math.isfinite(v) for v in (start, limit, delta)):
                built = max(math.ceil((limit - start) / delta), 0)
        if built is not None:
            if built > self.limits.max_tensor_elements:
                self.over(f"builds, in its {_node_label(node)}, a tensor of", built, "elements", "max_tensor_elements")
            if node.output:
                sizes[node.output[0]] = built


def _text_is_utf8(message) -> bool:
    """Whether every text field decodes: protobuf parses them as bytes and fails later, on first use."""
    stack = [message]
    try:
        while stack:
            current = stack.pop()
            for descriptor, value in current.ListFields():
                if descriptor.message_type is not None:
                    if _is_repeated(descriptor):
                        stack.extend(value)
                    else:
                        stack.append(value)
                elif descriptor.type == descriptor.TYPE_STRING:
                    # Invalid UTF-8 comes back as bytes here, and raises where it is set or read as text.
                    if any(isinstance(item, bytes) for item in (value if _is_repeated(descriptor) else (value,))):
                        return False
    except UnicodeDecodeError:
        return False
    return True


def _is_repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _node_label(node) -> str:
    if node.name:
        return f"{node.op_type} node {node.name[:100]!r}"
    return f"{node.op_type} node (output {node.output[0][:100]!r})" if node.output else f"{node.op_type} node"


def _shape_elements(shape: np.ndarray) -> Optional[int]:
    try:
        dims = [int(d) for d in shape.reshape(-1)]
    except (TypeError, ValueError, OverflowError):
        return None
    if any(d < 0 for d in dims):  # -1 and friends: decided at run time
        return None
    return _numel(dims)


def _small_value(tensor: TensorProto) -> Optional[np.ndarray]:
    """The values of a small inline numeric tensor (a shape, a bound); ``None`` for anything else."""
    if tensor.data_location == TensorProto.EXTERNAL or tensor.data_type == TensorProto.STRING:
        return None
    if any(int(d) < 0 for d in tensor.dims) or _numel(tensor.dims) > _MAX_CONSTANT_VALUES:
        return None
    try:
        array = onnx.numpy_helper.to_array(tensor)
    except Exception:  # noqa: BLE001 - a damaged small tensor is the checker's to report, not a shape
        return None
    if array.dtype.kind not in "iufb":
        return None
    return np.asarray(array).reshape(-1)


def _constant_attribute(attr) -> Optional[np.ndarray]:
    if attr.name == "value" and attr.HasField("t"):
        return _small_value(attr.t)
    if attr.name == "value_int":
        return np.array([attr.i], dtype=np.int64)
    if attr.name == "value_ints" and len(attr.ints) <= _MAX_CONSTANT_VALUES:
        return np.array(list(attr.ints), dtype=np.int64)
    if attr.name == "value_float":
        return np.array([attr.f], dtype=np.float64)
    if attr.name == "value_floats" and len(attr.floats) <= _MAX_CONSTANT_VALUES:
        return np.array(list(attr.floats), dtype=np.float64)
    return None
