"""Literal sizes in an ONNX graph's Reshape targets: the numbers that pin the batch or a channel count.

An exporter that traced the model at batch 1 with static shapes writes
``x.flatten(1)`` or ``x.view(1, -1)`` as ``Reshape(x, [1, 256])``: that graph
runs at batch 1 only, and its ``256`` (channels x height x width) no longer
holds once the layer before it loses channels.

Example::

    >>> literal_reshapes(onnx.load("static.onnx"))
    [{'node': 'node_view', 'op': 'Reshape', 'shape': [1, 256], 'pins_batch': True, 'pins_channels': True}]
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from onnx import ModelProto, numpy_helper

__all__ = ["literal_reshapes"]


def _constant_values(model: ModelProto) -> Dict[str, List[int]]:
    """Integer tensors of at most 8 values given by initializers or Constant nodes, by name."""
    values: Dict[str, List[int]] = {}

    def keep(name: str, tensor) -> None:
        if len(tensor.dims) == 1 and 0 < tensor.dims[0] <= 8:
            array = numpy_helper.to_array(tensor)
            if array.dtype.kind in "iu":
                values[name] = [int(v) for v in array.tolist()]

    for tensor in model.graph.initializer:
        keep(tensor.name, tensor)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
            if value is not None:
                keep(node.output[0], value)
            ints = next((list(a.ints) for a in node.attribute if a.name == "value_ints"), None)
            if ints:
                values[node.output[0]] = [int(v) for v in ints]
    return values


def literal_reshapes(model: ModelProto) -> List[Dict[str, Any]]:
    """The main graph's Reshape nodes whose target shape is a constant: node name, shape and what it pins.

    ``pins_batch``: the first size is a literal (not ``0``, copy, or ``-1``,
    inferred), so the node runs at that batch size only. ``pins_channels``: a
    later size is a literal, a count that pruning the layers before the node
    changes.

    Example::

        >>> [r["shape"] for r in literal_reshapes(onnx.load("static.onnx"))]
        [[1, 256]]
    """
    constants = _constant_values(model)
    found: List[Dict[str, Any]] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape: Optional[List[int]] = constants.get(node.input[1])
        if shape is None:
            continue
        pins_batch = shape[0] > 0
        pins_channels = any(size > 0 for size in shape[1:])
        if pins_batch or pins_channels:
            found.append({"node": node.name or f"Reshape #{index}", "op": "Reshape", "shape": shape,
                          "pins_batch": pins_batch, "pins_channels": pins_channels})
    return found
