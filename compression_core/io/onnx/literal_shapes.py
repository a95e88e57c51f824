"""Literal ``Reshape`` targets that freeze the traced batch: :func:`free_literal_reshapes`.

``torch.onnx.export`` at batch 1 (the dynamo exporter always, the TorchScript
exporter without ``dynamic_axes``) and other frameworks write ``flatten`` and
``view`` as ``Reshape(x, [1, 512])``: the batch and the channel count are
numbers in an initializer. The converted model then fails on any other batch
(``shape '[1, 512]' is invalid for input of size 5120``) and, after pruning,
on any other channel count. With the input's shape known from ONNX shape
inference (weights left out), each ``Reshape`` by a constant becomes:

- nothing (``Identity``) when it does not change the shape (``Reshape(x, [1, 200])``
  of a ``[1, 200]`` tensor, as Keras exporters write before a dense layer);
- ``Flatten(axis=1)`` when it keeps the leading dim and merges all the others
  (``[N, C, H, W] -> [N, C*H*W]``), which follows any batch and channel count;
- the same ``Reshape`` with the batch's entry ``0`` ("copy this dim") or ``-1`` when
  the input's batch dim (found by ONNX shape inference with the model inputs' fixed
  leading dim made symbolic) comes out of the reshape unmerged, e.g.
  ``[61, 1, 1, 24] -> [61, 1, 24]`` after an LSTM at batch 1 becomes ``[61, -1, 24]``.

A target computed as ``Concat(Shape(x)[0:1], [200])`` (``x.view(x.size(0), 200)`` with a
dynamic batch) first becomes the constant ``[0, 200]`` (:func:`constant_computed_reshapes`).
Whatever literal channel count is left, the converted module keeps as a plain list
(:class:`~.layers.OnnxStaticReshape`), which speedup sets to the kept channels.

Example::

    >>> ready = preprocess_onnx(onnx.load("resnet18_batch1_dynamo.onnx"))
    >>> [n.op_type for n in ready.graph.node if n.op_type in ("Reshape", "Flatten")]
    ['Flatten']
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper

from .read import weightless_copy

__all__ = ["free_literal_reshapes", "constant_computed_reshapes"]


_BATCH = "condense_batch"  # the symbol the model's fixed input batch is replaced by for shape inference


def _shapes_with_batch(model: ModelProto) -> Tuple[Dict[str, List[Union[int, str, None]]], Optional[int]]:
    """Inferred shapes where the model inputs' fixed leading dim is the symbol :data:`_BATCH`, and that batch.

    ONNX shape inference carries the symbol through convolutions, transposes, recurrent
    layers...: it marks where the batch sits in each value; a literal reshape writes a number.
    """
    lite = weightless_copy(model)
    del lite.graph.value_info[:]  # the dynamo exporter writes every shape, at the traced batch
    for value in lite.graph.output:
        value.type.tensor_type.ClearField("shape")
    initializers = {t.name for t in model.graph.initializer}
    batch = None
    for value in lite.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in initializers or len(dims) < 2 or not dims[0].HasField("dim_value"):
            continue
        if batch is None:
            batch = dims[0].dim_value
        if dims[0].dim_value == batch:
            dims[0].dim_param = _BATCH
    try:
        inferred = onnx.shape_inference.infer_shapes(lite, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - no shapes, no rewrite
        return {}, None
    shapes: Dict[str, List[Union[int, str, None]]] = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = [
                d.dim_value if d.HasField("dim_value") else (_BATCH if d.dim_param == _BATCH else None)
                for d in tensor_type.shape.dim
            ]
    return shapes, batch


def _resolved(target: List[int], in_shape: List[int]) -> Optional[List[int]]:
    """The output shape of ``Reshape(x, target)`` (allowzero=0) for a fully known input shape."""
    out = [in_shape[i] if v == 0 and i < len(in_shape) else v for i, v in enumerate(target)]
    total = int(np.prod(in_shape)) if in_shape else 1
    if out.count(-1) > 1:
        return None
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1])) if len(out) > 1 else 1
        if known <= 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return out if int(np.prod(out)) == total else None


def _batch_position(in_shape: List[int], out: List[int], b: int) -> Optional[int]:
    """The output dim that is input dim ``b`` (the batch) unmerged, or None when the reshape merges it."""
    before = int(np.prod(in_shape[:b]))
    for p, size in enumerate(out):
        if size == in_shape[b] and int(np.prod(out[:p])) == before:
            return p
    return None


_PRODUCT = ("product", -1)  # a shape entry computed as a product of others


def _shape_parts(name: str, producers: Dict[str, onnx.NodeProto], initializers: Dict) -> Optional[List]:
    """Entries of a computed shape: ints, ``(T, k)`` for ``Shape(T)[k]``, :data:`_PRODUCT` for a product of
    two entries; None when it is anything else."""
    if name in initializers:
        return [int(v) for v in numpy_helper.to_array(initializers[name]).reshape(-1)]
    node = producers.get(name)
    if node is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in ("Cast", "Identity") or (node.op_type in ("Squeeze", "Unsqueeze") and len(node.input) <= 2):
        return _shape_parts(node.input[0], producers, initializers)
    if node.op_type == "Reshape" and node.input[1] in initializers and \
            numpy_helper.to_array(initializers[node.input[1]]).reshape(-1).tolist() in ([1], [-1]):
        entries = _shape_parts(node.input[0], producers, initializers)  # a one-entry part reshaped to [1]
        return entries if entries is not None and len(entries) == 1 else None
    if node.op_type == "Shape" and not attrs:
        return None  # the whole shape: rank unknown here
    if node.op_type == "Mul" and len(node.input) == 2:
        factors = [_shape_parts(name, producers, initializers) for name in node.input]
        if all(f is not None and len(f) == 1 for f in factors):
            return [_PRODUCT]  # one entry, known only at run time
        return None
    if node.op_type == "Concat":
        parts: List = []
        for part in node.input:
            entries = _shape_parts(part, producers, initializers)
            if entries is None:
                return None
            parts.extend(entries)
        return parts
    source = producers.get(node.input[0]) if node.input else None
    if source is None or source.op_type != "Shape" or len(source.input) != 1:
        source_cast = source
        while source_cast is not None and source_cast.op_type == "Cast":
            source_cast = producers.get(source_cast.input[0])
        source = source_cast
    if source is None or source.op_type != "Shape" or \
            any(a.name == "end" or (a.name == "start" and a.i != 0) for a in source.attribute):
        return None
    if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in initializers:
        index = numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)
        return [(source.input[0], int(k)) for k in index] if index.size == 1 else None
    if node.op_type == "Slice" and len(node.input) >= 3 and all(n in initializers for n in node.input[1:] if n):
        starts, ends = (numpy_helper.to_array(initializers[n]).reshape(-1) for n in node.input[1:3])
        steps = node.input[4] if len(node.input) > 4 and node.input[4] else None
        if steps is not None and np.any(numpy_helper.to_array(initializers[steps]) != 1):
            return None
        if starts.size == 1 and ends.size == 1 and 0 <= starts[0] < ends[0] <= starts[0] + 8:
            return [(source.input[0], int(k)) for k in range(int(starts[0]), int(ends[0]))]
    return None


def constant_computed_reshapes(model: ModelProto) -> List[str]:
    """``Reshape(x, Concat(Shape(x)[0:1], [200]))`` -> ``Reshape(x, [0, 200])`` (in place); return what was done.

    ``x.view(x.size(0), 200)`` exported with a dynamic batch: the batch is read from
    the shape at run time, the rest is a literal. An entry copied from dim ``k`` of a
    shape at position ``k`` (dim 0 of any tensor: the batch) becomes ``0``, so the
    target is a constant that :func:`free_literal_reshapes` and speedup can follow.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    done: List[str] = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) != 2 or node.input[1] in initializers:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        parts = _shape_parts(node.input[1], producers, initializers)
        if not parts or all(isinstance(p, int) for p in parts):
            continue
        target = []
        for position, part in enumerate(parts):
            if isinstance(part, int):
                target.append(part)
            elif part == _PRODUCT:
                target.append(-1)  # the one entry a valid reshape leaves unknown is what -1 infers
            elif part[1] == position and (part[1] == 0 or part[0] == node.input[0]):
                target.append(0)
            else:
                break
        if len(target) != len(parts) or target.count(-1) > 1 or 0 in [p for p in parts if isinstance(p, int)]:
            continue
        tensor = numpy_helper.from_array(np.array(target, dtype=np.int64), name=f"{node.name}_constant_shape")
        graph.initializer.append(tensor)
        initializers[tensor.name] = tensor
        node.input[1] = tensor.name
        done.append(f"Reshape '{node.name}' to a shape computed from the input's now reads {target}")
    return done


def free_literal_reshapes(model: ModelProto) -> List[str]:
    """Rewrite ``Reshape`` nodes by literal shapes as described above (in place); return what was done.

    Example::

        >>> free_literal_reshapes(proto)
        ["Reshape '/Reshape' to [1, 512] became a Flatten"]
    """
    done = constant_computed_reshapes(model)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    candidates = [
        n for n in graph.node
        if n.op_type == "Reshape" and n.domain in ("", "ai.onnx") and len(n.input) == 2 and n.input[1] in initializers
        and not any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
    ]
    if not candidates:
        return done
    shapes, batch = _shapes_with_batch(model)
    for node in candidates:
        marked = shapes.get(node.input[0])
        if not marked or any(d is None for d in marked):
            continue
        b = marked.index(_BATCH) if _BATCH in marked else None
        in_shape = [batch if d == _BATCH else d for d in marked]
        target = [int(v) for v in numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)]
        out = _resolved(target, in_shape)
        if out is None:
            continue
        shown = f"Reshape '{node.name}' to {target}"
        if out == in_shape:
            _become(node, "Identity", [node.input[0]])
            done.append(f"{shown} changes nothing and was removed")
            continue
        if b is None:
            continue  # the batch is not in it (or ONNX cannot tell where): the literal stays
        if b == 0 and len(in_shape) > 2 and out == [in_shape[0], int(np.prod(in_shape[1:]))]:
            _become(node, "Flatten", [node.input[0]], axis=1)
            done.append(f"{shown} became a Flatten")
            continue
        p = _batch_position(in_shape, out, b)
        if p is None:
            continue
        freed = list(out) if -1 in target and target.index(-1) != p else list(target)
        freed = [out[k] if v == 0 else v for k, v in enumerate(freed)]  # no 0 may copy a dim that moved
        freed[p] = 0 if p == b else -1
        tensor = numpy_helper.from_array(np.array(freed, dtype=np.int64), name=f"{node.input[1]}_{node.name}_any_batch")
        graph.initializer.append(tensor)
        initializers[tensor.name] = tensor
        node.input[1] = tensor.name
        done.append(f"{shown} now follows the batch")
    return done


def _become(node: onnx.NodeProto, op_type: str, inputs: List[str], **attributes) -> None:
    entry = node.metadata_props.add()  # the layer table names the node by the op it had in the file
    entry.key, entry.value = "condense.onnx_op", node.op_type
    node.op_type = op_type
    del node.input[:]
    node.input.extend(inputs)
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
