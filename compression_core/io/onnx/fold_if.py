"""``If`` nodes whose condition is known before the model runs: :func:`fold_constant_ifs`.

Exporters of scripted models write checks such as ``if x.shape[1] != 512`` or a
sample-rate check as ``If`` nodes, which onnx2torch cannot convert. Their
condition is often a constant once the initializers and the input's declared
shape are known. This pass evaluates, in graph order, every cheap node whose
inputs are known (``Shape`` of a value with a known shape counts as known, except
the entries of the batch dim, which the model's inputs declare but a caller may
change), and replaces each ``If`` with a known condition by the nodes of the
branch it takes; inputs fixed at import (:mod:`.fixed_inputs`) are initializers by
then, so a sample-rate check folds too. Passes repeat while one folds, and the
conditions nothing reads any more are dropped. Each fold is returned as a sentence
for a warning.

Example::

    >>> fold_constant_ifs(proto)
    ["If 'If_0' always takes its then_branch (condition 'cond' is True)"]
"""

from __future__ import annotations

from collections import deque
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from .read import weightless_copy

__all__ = ["fold_constant_ifs"]

# Folding passes at most (each may decide Ifs that read an earlier fold's output shape).
_MAX_PASSES = 8

_EVALUATED = {
    "Identity", "Cast", "Gather", "Slice", "Squeeze", "Unsqueeze", "Concat", "Equal", "Not", "And", "Or",
    "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Add", "Sub", "Mul", "Div", "Mod", "Size", "Reshape",
    "ReduceProd", "ReduceSum", "Min", "Max", "Abs", "Neg", "Xor",
}


def _input_shapes(model: ModelProto) -> Dict[str, List[Optional[int]]]:
    """Inferred shapes, with the batch unknown: the first data input's leading dim and the leading dims
    of the other inputs that are fixed to the same size."""
    lite = weightless_copy(model)
    initializers = {t.name for t in model.graph.initializer}
    batch = None
    for value in lite.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in initializers or len(dims) < 2:
            continue
        if batch is None:  # the first data input's leading dim is the batch (fixed or not)
            batch = dims[0].dim_value if dims[0].HasField("dim_value") else -1
        if dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = "batch"
    try:
        # data_prop: sizes computed with Shape / Gather / Concat reach the Reshape / Pad that use them
        inferred = onnx.shape_inference.infer_shapes(lite, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001
        return {}
    shapes = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return shapes


def _shape_dims(node: onnx.NodeProto, dims: List[Optional[int]]) -> List[Optional[int]]:
    """What ``Shape`` gives (with its start/end), None where the dim is not fixed."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return list(dims[slice(attrs.get("start", 0), attrs.get("end", len(dims)))])


def _evaluate(node: onnx.NodeProto, known: Dict[str, np.ndarray], opset: int) -> Optional[List[np.ndarray]]:
    try:
        one = helper.make_model(
            helper.make_graph(
                [node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output],
                [numpy_helper.from_array(np.asarray(known[name]), name) for name in node.input if name],
            ),
            opset_imports=[helper.make_opsetid("", opset)],
        )
        return [np.asarray(v) for v in ReferenceEvaluator(one).run(None, {})]
    except Exception:  # noqa: BLE001 - leave it to the converter
        return None


def fold_constant_ifs(model: ModelProto) -> List[str]:
    """Inline every top-level ``If`` whose condition is known (in place); return what was folded.

    Repeats while a pass folds something (an inlined branch's output shape can decide a later
    ``If``), then drops the nodes nothing reads any more (the folded conditions).
    """
    folded: List[str] = []
    for _ in range(_MAX_PASSES):
        done = _fold_pass(model)
        folded += done
        if not done:
            break
    if folded:
        _drop_dead_nodes(model.graph)
    return folded


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove the nodes none of whose outputs is read (by a node, a subgraph or the graph's outputs)."""
    nodes = list(graph.node)
    while True:
        read = {o.name for o in graph.output}
        for node in nodes:
            read.update(node.input)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    read.update(name for inner in sub.node for name in inner.input)
        kept = [n for n in nodes if any(out in read for out in n.output if out)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    if len(nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(nodes)


def _fold_pass(model: ModelProto) -> List[str]:
    graph = model.graph
    if not any(n.op_type == "If" for n in graph.node):
        return []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    shapes = _input_shapes(model)
    known: Dict[str, np.ndarray] = {
        t.name: numpy_helper.to_array(t) for t in graph.initializer if int(np.prod(t.dims)) <= 64
    }
    partial: Dict[str, List[Optional[int]]] = {}  # Shape outputs, None for the batch and unknown dims
    folded: List[str] = []
    nodes: List[onnx.NodeProto] = []
    pending = deque(graph.node)
    while pending:
        node = pending.popleft()
        if node.op_type == "If" and node.input[0] in known:
            taken = "then_branch" if bool(np.asarray(known[node.input[0]]).reshape(-1)[0]) else "else_branch"
            branch = next(a.g for a in node.attribute if a.name == taken)
            graph.initializer.extend(branch.initializer)
            known.update((t.name, numpy_helper.to_array(t)) for t in branch.initializer if int(np.prod(t.dims)) <= 64)
            outputs = [helper.make_node("Identity", [inner.name], [outer], name=f"{node.name}_{outer}")
                       for inner, outer in zip(branch.output, node.output)]
            pending.extendleft(reversed(list(branch.node) + outputs))  # its own Ifs may be decided too
            folded.append(f"If '{node.name}' always takes its {taken} (condition '{node.input[0]}' is "
                          f"{taken == 'then_branch'} for the model's declared input shapes and fixed input values)")
            continue
        nodes.append(node)
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Shape" and shapes.get(node.input[0]) is not None:
            partial[node.output[0]] = _shape_dims(node, shapes[node.input[0]])
            if None not in partial[node.output[0]]:
                known[node.output[0]] = np.array(partial[node.output[0]], dtype=np.int64)
        elif node.op_type == "Size" and node.input[0] in partial:  # a Shape's size is the rank, known or not
            known[node.output[0]] = np.array(len(partial[node.input[0]]), dtype=np.int64)
        elif node.op_type == "Gather" and node.input[0] in partial and node.input[1] in known:
            index = np.asarray(known[node.input[1]])
            dims = partial[node.input[0]]
            picked = [dims[int(i)] for i in index.reshape(-1)] if index.size else []
            if None not in picked:
                known[node.output[0]] = np.array(picked, dtype=np.int64).reshape(index.shape)
        elif node.op_type in _EVALUATED and node.input and all(not n or n in known for n in node.input):
            values = _evaluate(node, known, opset)
            if values is not None and all(v.size <= 64 for v in values):
                known.update(zip(node.output, values))
    if folded:
        del graph.node[:]
        graph.node.extend(nodes)
    return folded


def if_inputs(model: ModelProto) -> Dict[str, str]:
    """The model inputs the conditions of the remaining top-level ``If`` nodes are computed from, each with
    ``"value"`` when its values are read or ``"shape"`` when only its shape is (through ``Shape``).

    Example::

        >>> if_inputs(onnx.load("silero_vad.onnx"))
        {'sr': 'value'}
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    inputs = {value.name for value in graph.input} - {t.name for t in graph.initializer}
    found: Dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "If":
            continue
        seen, stack = set(), [(node.input[0], "value")]
        while stack:
            name, how = stack.pop()
            if (name, how) in seen:
                continue
            seen.add((name, how))
            if name in inputs:
                found[name] = "value" if "value" in (how, found.get(name)) else "shape"
            elif name in producers:
                producer = producers[name]
                read = "shape" if producer.op_type in ("Shape", "Size") else how
                stack.extend((n, read) for n in producer.input if n)
    return found
