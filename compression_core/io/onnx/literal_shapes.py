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
- the same ``Reshape`` with ``0`` ("copy this dim") for a leading literal equal to
  the input's leading dim when that is the traced batch of the model's input.

Whatever literal channel count is left, the converted module keeps as a plain list
(:class:`~.layers.OnnxStaticReshape`), which speedup sets to the kept channels.

Example::

    >>> ready = preprocess_onnx(onnx.load("resnet18_batch1_dynamo.onnx"))
    >>> [n.op_type for n in ready.graph.node if n.op_type in ("Reshape", "Flatten")]
    ['Flatten']
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper

from .read import weightless_copy

__all__ = ["free_literal_reshapes"]


def _static_shapes(model: ModelProto) -> Dict[str, List[Optional[int]]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_copy(model), check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - no shapes, no rewrite
        return {}
    shapes: Dict[str, List[Optional[int]]] = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return shapes


def _traced_batch(model: ModelProto, shapes: Dict[str, List[Optional[int]]]) -> Optional[int]:
    """The fixed leading dim of the model's first data input, or None when it is dynamic or unknown."""
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = shapes.get(value.name)
        if dims and len(dims) > 1 and dims[0] is not None:
            return dims[0]
        return None
    return None


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


def free_literal_reshapes(model: ModelProto) -> List[str]:
    """Rewrite ``Reshape`` nodes by literal shapes as described above (in place); return what was done.

    Example::

        >>> free_literal_reshapes(proto)
        ["Reshape '/Reshape' to [1, 512] became a Flatten"]
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    candidates = [
        n for n in graph.node
        if n.op_type == "Reshape" and n.domain in ("", "ai.onnx") and len(n.input) == 2 and n.input[1] in initializers
        and not any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
    ]
    if not candidates:
        return []
    shapes = _static_shapes(model)
    batch = _traced_batch(model, shapes)
    done: List[str] = []
    for node in candidates:
        in_shape = shapes.get(node.input[0])
        if not in_shape or any(d is None for d in in_shape):
            continue
        target = [int(v) for v in numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)]
        out = _resolved(target, in_shape)
        if out is None:
            continue
        shown = f"Reshape '{node.name}' to {target}"
        if out == in_shape:
            _become(node, "Identity", [node.input[0]])
            done.append(f"{shown} changes nothing and was removed")
        elif len(in_shape) > 2 and out == [in_shape[0], int(np.prod(in_shape[1:]))]:
            _become(node, "Flatten", [node.input[0]], axis=1)
            done.append(f"{shown} became a Flatten")
        elif batch is not None and target and target[0] == batch == in_shape[0] and target[0] > 0:
            freed = numpy_helper.from_array(np.array([0] + target[1:], dtype=np.int64), name=node.input[1] + "_any_batch")
            if freed.name not in initializers:
                graph.initializer.append(freed)
                initializers[freed.name] = freed
            node.input[1] = freed.name
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
