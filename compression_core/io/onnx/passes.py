"""Graph rewrites that make an ONNX model ready for onnx2torch: :func:`preprocess_onnx`.

In order:

1. onnx_ir's ``RemoveInitializersFromInputsPass``: old exporters (IR < 4) list every
   initializer as a graph input too; they are constants.
2. onnx_ir's ``LiftConstantsToInitializersPass``: weights stored as ``Constant`` nodes
   (TensorFlow, Keras and others) become initializers, which onnx2torch needs to build
   ``nn.Conv2d`` / ``nn.Linear`` with parameters.
3. :func:`_fold_constant_chains`: cheap ops whose inputs are all initializers (a weight
   through ``Identity`` / ``Transpose`` / ``Cast``) are evaluated. Not onnxscript's
   ``fold_constants``: it also rewrites ops that do not compute on constants (``Shape`` of a
   static input becomes a constant, which freezes the batch size into the converted model;
   ``Cast`` / ``Concat`` / ``Dropout`` become ``Identity``) and renames unnamed nodes
   (``node``, ``node_1``, ...), whose names become torch module names.
   Then :func:`~.fold_if.fold_constant_ifs`: ``If`` nodes whose condition the declared input
   shapes and fixed inputs (:mod:`.fixed_inputs`) decide are replaced by their branch (with a
   ``UserWarning`` saying so); constant folding and If folding repeat while an If folds.
4. :func:`_drop_irrelevant_allowzero`: no library pass does it; then
   :func:`~.literal_shapes.free_literal_reshapes` (a batch or channel count written as a
   ``Reshape`` literal).
5. :func:`_matmul_add_to_gemm`: Keras-style dense layers -> ``Gemm``. Not onnxscript's
   ``MatMulAddToGemm`` rule: it does not match ``Add(bias, MatMul)``, and it names the
   ``Gemm`` ``node_Gemm_0`` (and every unnamed node ``node``, ``node_1``, ...) instead of
   after the ``MatMul``.
6. :func:`_remove_unused_initializers`: onnx_ir's ``RemoveUnusedNodesPass`` would need a
   second IR round trip after steps 3-5 (another copy of every weight: 0.3 s and 0.5 GB
   more for VGG-11) and also drops unused optional outputs and BatchNormalization's
   ``training_mode``.
7. :func:`~.names.friendly_node_names`: readable, unique node names, which onnx2torch turns into
   torch module names (onnx_ir's ``NameFixPass`` only makes names unique).

Steps 1-2 run on an ``onnx_ir`` model, the rest on the ``onnx.ModelProto`` it serialises to.

Example::

    >>> ready = preprocess_onnx(onnx.load("keras_export.onnx"))
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Dict, Optional, Set

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from .fold_if import fold_constant_ifs
from .literal_shapes import free_literal_reshapes
from .names import ONNX_OP_KEY, friendly_node_names
from .read import numel, weightless_copy

if TYPE_CHECKING:
    import onnx_ir as ir

__all__ = ["preprocess_onnx", "constants_to_initializers"]

# Ops folded away when all their inputs are constants (e.g. a weight that goes
# through Identity / Transpose / Cast before a Conv), so that onnx2torch sees
# initializers and builds real nn.Conv2d / nn.Linear modules.
_FOLDABLE_OPS = {
    "Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Concat",
    "Mul", "Add", "Sub", "Div", "Neg", "Sqrt", "Reciprocal",
    # shape arithmetic that exporters leave behind on constants (class tokens, head splits)
    "Mod", "ConstantOfShape", "Equal", "Where", "Expand", "Gather", "Slice", "Range", "Shape", "Size",
    "Less", "Greater", "Not", "Abs", "Floor", "Ceil", "Min", "Max", "Pow",
}
# Rounds of If folding and constant folding at most (silero-vad needs 2: sample rate, then lengths).
_MAX_IF_ROUNDS = 4
# A folded constant may not be larger than this (Expand / ConstantOfShape / Range can blow up).
_FOLD_MAX_NEW_ELEMENTS = 1 << 16
# Constants of every size (the pass keeps those under 16 elements as nodes by default) and of
# every value_* attribute (by default only ``value``): onnx2torch wants initializers.
_LIFT_EVERY_CONSTANT = {"lift_all_constants": True, "size_limit": 0}


def preprocess_onnx(model: ModelProto, *, rename_nodes: bool = True) -> ModelProto:
    """Return a copy of ``model`` ready for onnx2torch (``model`` is left as it is).

    Constant nodes become initializers, cheap constant-only chains (e.g.
    ``Identity``/``Transpose`` on weights) are folded, dense layers written as
    ``MatMul`` [+ ``Add``] on 2-D inputs become ``Gemm``, unused initializers
    are dropped and, with ``rename_nodes``, nodes get readable names that
    become the torch module names. Raises ``onnx_ir.serde.SerdeError`` for
    graphs onnx_ir cannot represent (sparse tensors).

    Example::

        >>> ready = preprocess_onnx(onnx.load("keras_export.onnx"))
    """
    # onnx_ir takes half a second to import (it loads sympy): only when a model is converted
    import onnx_ir as ir
    from onnx_ir.passes import common as ir_passes

    with _constant_tensor_names_kept(model):
        ir_model = ir.serde.deserialize_model(model)
        ir_passes.RemoveInitializersFromInputsPass()(ir_model)
        ir_model.ir_version = max(ir_model.ir_version, 4)  # initializers are no longer inputs
        ir_passes.LiftConstantsToInitializersPass(**_LIFT_EVERY_CONSTANT)(ir_model)
        result = ir.serde.serialize_model(ir_model)
    _fold_constant_chains(result)
    for _ in range(_MAX_IF_ROUNDS):
        folded_ifs = fold_constant_ifs(result)
        for folded in folded_ifs:
            warnings.warn(f"{folded}; the other branch was dropped at import", UserWarning, stacklevel=2)
        if not folded_ifs:
            break
        _fold_constant_chains(result)  # the inlined branches' constant chains, which may decide further Ifs
    _drop_irrelevant_allowzero(result)
    free_literal_reshapes(result)
    _matmul_add_to_gemm(result)
    _remove_unused_initializers(result)
    if rename_nodes:
        friendly_node_names(result)
    return result


@contextlib.contextmanager
def _constant_tensor_names_kept(model: ModelProto):
    """Put back the names of ``model``'s ``Constant`` tensors on the way out.

    onnx_ir's tensors are views of the ``ModelProto``'s, and lifting a ``Constant``
    names its tensor after the initializer; copying the model first would cost a
    copy of every weight.
    """
    tensors = list(_constant_tensors(model.graph))
    names = [tensor.name if tensor.HasField("name") else None for tensor in tensors]
    try:
        yield
    finally:
        for tensor, name in zip(tensors, names):
            if name is None:
                tensor.ClearField("name")
            else:
                tensor.name = name


def _constant_tensors(graph):
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.HasField("t"):
                yield attr.t
            if attr.HasField("g"):
                yield from _constant_tensors(attr.g)
            for sub in attr.graphs:
                yield from _constant_tensors(sub)


def constants_to_initializers(model: ModelProto) -> int:
    """Move ``Constant`` node values into graph initializers (in place).

    Frameworks other than PyTorch often store weights as ``Constant`` nodes;
    onnx2torch only builds ``nn.Conv2d`` / ``nn.Linear`` with parameters when
    the weights are initializers. A ``Constant`` that is a graph output stays a
    node. Returns the number of nodes moved.

    Example::

        >>> proto = onnx.load("tf_model.onnx")
        >>> constants_to_initializers(proto)
        14
    """
    # onnx_ir takes half a second to import (it loads sympy): only when used
    import onnx_ir as ir
    from onnx_ir.passes import common as ir_passes

    ir_model = ir.serde.deserialize_model(model)
    before = _count_constants(ir_model)
    ir_passes.LiftConstantsToInitializersPass(**_LIFT_EVERY_CONSTANT)(ir_model)
    moved = before - _count_constants(ir_model)
    if moved:
        if ir_model.ir_version < 4:  # initializers had to be graph inputs before IR 4
            ir_passes.AddInitializersToInputsPass()(ir_model)
        model.CopyFrom(ir.serde.serialize_model(ir_model))
    return moved


def _count_constants(ir_model: ir.Model) -> int:
    return sum(1 for graph in ir_model.graphs() for node in graph if node.op_type == "Constant" and node.domain == "")


def _add_initializer(model: ModelProto, tensor) -> None:
    model.graph.initializer.append(tensor)
    if model.ir_version < 4:  # initializers had to be graph inputs before IR 4
        model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))


def _fold_constant_chains(model: ModelProto) -> int:
    """Evaluate cheap nodes whose inputs are all initializers (in place)."""
    graph = model.graph
    graph_outputs = {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input}
    initializers = {t.name: t for t in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    kept = []
    folded = 0
    for node in graph.node:
        inputs = [name for name in node.input if name]
        foldable = (
            opset is not None
            and node.domain in ("", "ai.onnx")
            and node.op_type in _FOLDABLE_OPS
            and inputs
            and all(name in initializers and name not in graph_inputs for name in inputs)
            and not any(out in graph_outputs for out in node.output)
        )
        if foldable:
            try:
                if node.op_type == "Identity":
                    outputs = [numpy_helper.to_array(initializers[inputs[0]])]
                else:
                    one = helper.make_model(
                        helper.make_graph(
                            [node], "fold",
                            [],
                            [helper.make_empty_tensor_value_info(o) for o in node.output],
                            [initializers[name] for name in inputs],
                        ),
                        opset_imports=[helper.make_opsetid("", opset)],
                    )
                    outputs = ReferenceEvaluator(one).run(None, {})
                largest_input = max(numel(initializers[name].dims) for name in inputs)
                if any(np.asarray(v).size > max(largest_input, _FOLD_MAX_NEW_ELEMENTS) for v in outputs):
                    kept.append(node)
                    continue
            except Exception:  # noqa: BLE001 - leave the node for the converter
                kept.append(node)
                continue
            for out_name, value in zip(node.output, outputs):
                tensor = numpy_helper.from_array(np.asarray(value), name=out_name)
                _add_initializer(model, tensor)
                initializers[out_name] = tensor
            folded += 1
            continue
        kept.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
    return folded


def _drop_irrelevant_allowzero(model: ModelProto) -> None:
    """``Reshape(allowzero=1)`` equals ``allowzero=0`` when the constant shape holds no 0.

    Also drops an empty ``axes`` attribute (the TorchScript exporter writes one for a
    reduction over every axis, which is what no ``axes`` means; onnx2torch cannot read it).
    """
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        empty = [a for a in node.attribute if a.name == "axes" and a.type == onnx.AttributeProto.INTS and not a.ints]
        if empty and node.op_type.startswith("Reduce"):
            keep = [a for a in node.attribute if a.name != "axes"]
            del node.attribute[:]
            node.attribute.extend(keep)
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        shape = initializers.get(node.input[1])
        if shape is None or np.any(numpy_helper.to_array(shape) == 0):
            continue
        keep = [a for a in node.attribute if a.name != "allowzero"]
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)


def _matmul_add_to_gemm(model: ModelProto) -> int:
    """``MatMul(x, W) [+ b]`` on a 2-D ``x`` with constant ``W``/``b`` -> ``Gemm`` (becomes ``nn.Linear``).

    Dense layers from TensorFlow/Keras exporters arrive in this form.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    if not any(n.op_type == "MatMul" for n in graph.node):
        return 0
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_copy(model), check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001
        return 0
    ranks = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            ranks[value.name] = len(tensor_type.shape.dim)
    all_nodes = list(graph.node)
    consumers: Dict[str, list] = {}
    for position, node in enumerate(all_nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(position)
    graph_outputs = {o.name for o in graph.output}

    replaced: Dict[int, Optional[onnx.NodeProto]] = {}
    for index, node in enumerate(all_nodes):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        a_name, w_name = node.input
        weight = initializers.get(w_name)
        if weight is None or len(weight.dims) != 2 or ranks.get(a_name) != 2:
            continue
        if weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            continue
        out = node.output[0]
        inputs = [a_name, w_name]
        outputs = [out]
        users = consumers.get(out, [])
        add = all_nodes[users[0]] if len(users) == 1 else None
        if add is not None and out not in graph_outputs and add.op_type == "Add" and len(add.input) == 2:
            other = add.input[1] if add.input[0] == out else add.input[0]
            bias = initializers.get(other)
            if bias is not None and list(bias.dims) in ([weight.dims[1]], [1, weight.dims[1]]):
                if len(bias.dims) == 2:
                    flat = numpy_helper.from_array(numpy_helper.to_array(bias).reshape(-1), name=other + "_flat")
                    _add_initializer(model, flat)
                    initializers[flat.name] = flat
                    other = flat.name
                inputs.append(other)
                outputs = list(add.output)
                replaced[users[0]] = None
        gemm = helper.make_node("Gemm", inputs, outputs, name=node.name)
        gemm.metadata_props.add(key=ONNX_OP_KEY, value="MatMul")
        replaced[index] = gemm
    if not replaced:
        return 0
    nodes = []
    for position, node in enumerate(all_nodes):
        if position in replaced:
            if replaced[position] is not None:
                nodes.append(replaced[position])
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return sum(1 for v in replaced.values() if v is not None)


def _remove_unused_initializers(model: ModelProto) -> None:
    graph = model.graph
    used: Set[str] = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:  # subgraphs may capture outer values
            if attr.HasField("g"):
                used.update(_subgraph_inputs(attr.g))
            for sub in attr.graphs:
                used.update(_subgraph_inputs(sub))
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        dropped = {t.name for t in graph.initializer} - {t.name for t in keep}
        del graph.initializer[:]
        graph.initializer.extend(keep)
        inputs = [i for i in graph.input if i.name not in dropped]
        del graph.input[:]
        graph.input.extend(inputs)


def _subgraph_inputs(graph) -> Set[str]:
    names: Set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            if attr.HasField("g"):
                names.update(_subgraph_inputs(attr.g))
    return names
