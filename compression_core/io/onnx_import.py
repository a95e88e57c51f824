"""ONNX -> ``torch.fx.GraphModule`` (through onnx2torch), checked against onnxruntime."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Union

import numpy as np
import torch
from torch import nn

from .errors import ModelFormatError
from ..tensors import flatten_tensors

__all__ = [
    "read_onnx",
    "preprocess_onnx",
    "constants_to_initializers",
    "unsupported_operators",
    "onnx_to_torch",
    "load_onnx",
    "onnx_input_shapes",
    "verify_onnx_conversion",
    "random_onnx_inputs",
    "check_onnx",
    "weightless_copy",
]

PathLike = Union[str, os.PathLike]

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
# A folded constant may not be larger than this (Expand / ConstantOfShape / Range can blow up).
_FOLD_MAX_NEW_ELEMENTS = 1 << 16
_RESERVED_MODULE_NAMES = {"initializers", "training", "meta", "graph", "code"} | set(dir(torch.fx.GraphModule))
_DEFAULT_OPSET_DOWNGRADE = 17


def _display_name(path: PathLike) -> str:
    return Path(path).name or str(path)


# ---------------------------------------------------------------------------
# Reading and checking


def read_onnx(path: PathLike, *, external_data: bool = False, check: bool = True):
    """Read and validate an ONNX file; return its ``onnx.ModelProto``.

    Raises :class:`ModelFormatError` ("<file> is not a valid ONNX model: ...")
    for a truncated, corrupt or invalid file. Files whose tensors live in
    external data files are refused unless ``external_data=True``.

    Example::

        >>> proto = read_onnx("resnet18.onnx")
        >>> proto.opset_import[0].version
        17
    """
    from onnx import TensorProto

    name = _display_name(path)
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
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(Path(path).resolve().parent))
        except Exception as exc:  # noqa: BLE001
            raise ModelFormatError(f"{name}: cannot read its external data: {_short(exc)}") from exc

    if check:
        check_onnx(model, name)
    return model


def _parse_onnx(path: PathLike):
    """Parse the file (tensors in external files are not read)."""
    import onnx

    name = _display_name(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        model = onnx.load_model_from_string(raw)
    except Exception as exc:  # noqa: BLE001 - DecodeError and friends
        raise ModelFormatError(f"{name} is not a valid ONNX model: {_short(exc)}") from exc
    if not model.HasField("graph") or (len(model.graph.node) == 0 and len(model.graph.output) == 0):
        raise ModelFormatError(f"{name} is not a valid ONNX model: it has no graph")
    if not model.opset_import:
        raise ModelFormatError(f"{name} is not a valid ONNX model: it declares no opset")
    return model


def check_onnx(model, name: str = "model") -> None:
    """Run ``onnx.checker`` and strict shape inference; raise :class:`ModelFormatError` on failure.

    Both run on a copy without the large weights (:func:`weightless_copy`),
    whose byte sizes are checked here instead, so a model of any size is
    checked in a fraction of a second.

    Example::

        >>> check_onnx(onnx.load("model.onnx"), "model.onnx")   # None when valid
    """
    import onnx

    _check_tensor_sizes(model, name)
    lite = weightless_copy(model)
    try:
        onnx.checker.check_model(lite)
    except Exception as exc:  # noqa: BLE001 - ValidationError, C++ errors
        raise ModelFormatError(f"{name} is not a valid ONNX model: {_short(exc)}") from exc
    try:
        onnx.shape_inference.infer_shapes(lite, check_type=False, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - InferenceError
        raise ModelFormatError(f"{name} is not a valid ONNX model: shape inference failed: {_short(exc)}") from exc


# Initializers at least this large are never shape data (Reshape targets, Slice bounds, ...).
_WEIGHTLESS_MIN_ELEMENTS = 1024


def _numel(dims) -> int:
    total = 1
    for d in dims:
        total *= int(d)
    return total


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


def weightless_copy(model):
    """Copy of an ``onnx.ModelProto`` whose large initializers are graph inputs of the same type and shape.

    The ONNX checker and shape inference need the weights' shapes, not their
    values; on the copy they do not serialise hundreds of megabytes each time.

    Example::

        >>> weightless_copy(onnx.load("vgg11.onnx")).ByteSize() < 1_000_000
        True
    """
    from onnx import ModelProto, TensorProto, helper

    lite = ModelProto()
    _copy_fields(lite, model, skip="graph")
    graph = model.graph
    _copy_fields(lite.graph, graph, skip="initializer")
    inputs = {value.name for value in graph.input}
    for tensor in graph.initializer:
        if _numel(tensor.dims) >= _WEIGHTLESS_MIN_ELEMENTS and tensor.data_type != TensorProto.STRING:
            if tensor.name not in inputs:
                lite.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
                inputs.add(tensor.name)
        else:
            lite.graph.initializer.add().CopyFrom(tensor)
    return lite


_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _check_tensor_sizes(model, name: str) -> None:
    """What ``onnx.checker`` verifies of an initializer's data, for those :func:`weightless_copy` drops.

    One value field, and as many typed values as the shape says (the length of
    ``raw_data`` is checked when the tensor is read, without copying it here).
    """
    from onnx import TensorProto

    for tensor in model.graph.initializer:
        count = _numel(tensor.dims)
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


def _type_set(*names: str) -> Set[int]:
    from onnx import TensorProto

    return {getattr(TensorProto, n) for n in names if hasattr(TensorProto, n)}


# Types stored several to a typed value (sub-byte types), or as pairs of values (complex numbers).
_PACKED_TYPES = _type_set("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
_COMPLEX_TYPES = _type_set("COMPLEX64", "COMPLEX128")


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


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# Preprocessing


def _constant_node_tensor(node):
    """TensorProto held by a ``Constant`` node, or None for string / sparse constants."""
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            tensor = type(value)()
            tensor.CopyFrom(value)
            return tensor
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(value, dtype=np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(value), dtype=np.float32))
        if attr.name == "value_int":
            return numpy_helper.from_array(np.array(value, dtype=np.int64))
        if attr.name == "value_ints":
            return numpy_helper.from_array(np.array(list(value), dtype=np.int64))
    return None


def _add_initializer(model, tensor) -> None:
    model.graph.initializer.append(tensor)
    if model.ir_version < 4:  # initializers had to be graph inputs before IR 4
        from onnx import helper

        model.graph.input.append(
            helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
        )


def constants_to_initializers(model) -> int:
    """Move top-level ``Constant`` node values into graph initializers (in place).

    Frameworks other than PyTorch often store weights as ``Constant`` nodes;
    onnx2torch only builds ``nn.Conv2d`` / ``nn.Linear`` with parameters when
    the weights are initializers. Returns the number of nodes moved.

    Example::

        >>> proto = onnx.load("tf_model.onnx")
        >>> constants_to_initializers(proto)
        14
    """
    graph_outputs = {o.name for o in model.graph.output}
    kept = []
    moved = 0
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            out = node.output[0]
            tensor = _constant_node_tensor(node) if out not in graph_outputs else None
            if tensor is not None:
                tensor.name = out
                _add_initializer(model, tensor)
                moved += 1
                continue
        kept.append(node)
    if moved:
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return moved


def _fold_constant_chains(model) -> int:
    """Evaluate cheap nodes whose inputs are all initializers (in place)."""
    from onnx import helper, numpy_helper

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
                    from onnx.reference import ReferenceEvaluator

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
                largest_input = max(_numel(initializers[name].dims) for name in inputs)
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


def _drop_irrelevant_allowzero(model) -> None:
    """``Reshape(allowzero=1)`` equals ``allowzero=0`` when the constant shape holds no 0."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        shape = initializers.get(node.input[1])
        if shape is None or np.any(numpy_helper.to_array(shape) == 0):
            continue
        keep = [a for a in node.attribute if a.name != "allowzero"]
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)


def _initializers_not_inputs(model) -> None:
    """Old exporters list every initializer as a graph input too (IR < 4); treat them as constants."""
    names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in names]
    if len(inputs) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    if model.ir_version < 4:
        model.ir_version = 4


def _matmul_add_to_gemm(model) -> int:
    """``MatMul(x, W) [+ b]`` on a 2-D ``x`` with constant ``W``/``b`` -> ``Gemm`` (becomes ``nn.Linear``).

    Dense layers from TensorFlow/Keras exporters arrive in this form.
    """
    import onnx
    from onnx import helper

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
                    from onnx import numpy_helper

                    flat = numpy_helper.from_array(numpy_helper.to_array(bias).reshape(-1), name=other + "_flat")
                    _add_initializer(model, flat)
                    initializers[flat.name] = flat
                    other = flat.name
                inputs.append(other)
                outputs = list(add.output)
                replaced[users[0]] = None
        replaced[index] = helper.make_node("Gemm", inputs, outputs, name=node.name)
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


def _remove_unused_initializers(model) -> None:
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


def _torch_dynamo_scope(node):
    """Module path recorded by ``torch.onnx.export(dynamo=True)``, e.g. ``('layer1', '0', 'conv1')``."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                parts = [str(p) for p in ast.literal_eval(prop.value) if p]
            except (ValueError, SyntaxError):
                return None
            return tuple(parts[:-1])
    return None


def _friendly_node_names(model) -> None:
    """Rename nodes so the torch modules get readable, unique, dot-free names.

    ``/layer1/layer1.0/conv1/Conv`` (torch.onnx scope names) becomes
    ``layer1_0_conv1``; an op called inside a container scope keeps its op type
    (``/layer1/layer1.0/Add`` -> ``layer1_0_Add``); unnamed nodes are named
    after their op type.
    """
    scopes = []
    for node in model.graph.node:
        parts = _torch_dynamo_scope(node)
        if parts is None:
            parts = [p for p in re.split(r"/+", node.name) if p]
            if parts and len(parts) > 1 and parts[-1].split("_")[0] == node.op_type:
                parts = parts[:-1]
            elif parts and len(parts) == 1 and parts[0].split("_")[0] == node.op_type and node.name.startswith("/"):
                parts = []
        collapsed: List[str] = []
        for part in parts:
            if collapsed and part.startswith(collapsed[-1] + "."):
                collapsed[-1] = part
            else:
                collapsed.append(part)
        scopes.append(tuple(piece for piece in ".".join(collapsed).split(".") if piece))
    containers = {scope[:cut] for scope in scopes for cut in range(1, len(scope))}

    used: Set[str] = set()
    for node, scope in zip(model.graph.node, scopes):
        if not scope:
            base = node.op_type
        elif scope in containers:
            base = "_".join(scope) + "_" + node.op_type
        else:
            base = "_".join(scope)
        base = re.sub(r"[^0-9A-Za-z_]+", "_", base).strip("_") or "node"
        if base[0].isdigit():
            base = "n_" + base
        if base in _RESERVED_MODULE_NAMES:
            base = base + "_op"
        name, counter = base, 1
        while name in used:
            name = f"{base}_{counter}"
            counter += 1
        used.add(name)
        node.name = name


def preprocess_onnx(model, *, rename_nodes: bool = True):
    """Return a copy of ``model`` ready for onnx2torch.

    Constant nodes become initializers, cheap constant-only chains (e.g.
    ``Identity``/``Transpose`` on weights) are folded, unused initializers are
    dropped and, with ``rename_nodes``, nodes get readable names that become
    the torch module names.

    Example::

        >>> ready = preprocess_onnx(onnx.load("keras_export.onnx"))
    """
    import onnx

    result = onnx.ModelProto()
    result.CopyFrom(model)
    _initializers_not_inputs(result)
    constants_to_initializers(result)
    _fold_constant_chains(result)
    _drop_irrelevant_allowzero(result)
    _matmul_add_to_gemm(result)
    _remove_unused_initializers(result)
    if rename_nodes:
        _friendly_node_names(result)
    return result


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def unsupported_operators(model) -> List[str]:
    """Sorted ``"<op_type>"`` (or ``"<domain>.<op_type>"``) names no converter handles.

    Example::

        >>> unsupported_operators(onnx.load("detector.onnx"))
        ['Loop', 'NonMaxSuppression']
    """
    from ._onnx2torch_compat import find_converter, install

    install()
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    missing = set()
    for node in model.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        version = opsets.get(domain)
        converter = None
        if version is not None:
            converter, _ = find_converter(node.op_type, version, domain)
        if converter is None:
            missing.add(f"{domain}.{node.op_type}" if domain else node.op_type)
    return sorted(missing)


# ---------------------------------------------------------------------------
# Conversion


def onnx_to_torch(model, name: str = "model") -> torch.fx.GraphModule:
    """Convert a (checked) ``onnx.ModelProto`` to an eval-mode ``torch.fx.GraphModule``.

    Applies :func:`preprocess_onnx`; if operators of a recent opset have no
    converter, retries after ``onnx.version_converter`` down to opset 17.
    Unsupported operators raise :class:`ModelFormatError` naming them.

    Example::

        >>> module = onnx_to_torch(onnx.load("resnet18.onnx"))
        >>> module(torch.randn(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    from onnx2torch import convert

    from ._onnx2torch_compat import UnsupportedOperator, install, shapes_already_inferred

    install()
    ready = preprocess_onnx(model)
    missing = unsupported_operators(ready)
    opset = _default_opset(ready)
    if missing and opset > _DEFAULT_OPSET_DOWNGRADE:
        downgraded = _try_downgrade(ready, _DEFAULT_OPSET_DOWNGRADE)
        if downgraded is not None and not unsupported_operators(downgraded):
            ready, missing = downgraded, []
    if missing:
        raise ModelFormatError(
            f"{name} uses ONNX operators that Condense cannot convert to PyTorch: "
            f"{', '.join(missing)} (opset {opset})."
        )

    def _convert(proto):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _attach_inferred_shapes(proto):
                with shapes_already_inferred():
                    return convert(proto)
            return convert(proto)

    try:
        module = _convert(ready)
    except UnsupportedOperator as exc:
        downgraded = _try_downgrade(ready, _DEFAULT_OPSET_DOWNGRADE) if opset > _DEFAULT_OPSET_DOWNGRADE else None
        module = None
        if downgraded is not None:
            try:
                module = _convert(downgraded)
            except Exception:  # noqa: BLE001
                module = None
        if module is None:
            raise ModelFormatError(f"{name} cannot be converted to PyTorch: {_short(exc)}") from exc
    except (NotImplementedError, KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"{name} cannot be converted to PyTorch: {_short(exc)}") from exc
    _fold_linear_biases(module)
    module.eval()
    return module


def _attach_inferred_shapes(model) -> bool:
    """Store ONNX shape inference results in ``model.graph.value_info`` (computed without the weights)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_copy(model), check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - let onnx2torch try its own way
        return False
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    if len(inferred.graph.output) == len(model.graph.output):
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
    return True


def _is_onnx_add(module: nn.Module) -> bool:
    return (
        type(module).__name__ == "OnnxBinaryMathOperation"
        and getattr(module, "math_op_function", None) is torch.add
        and getattr(module, "broadcast", None) != 1
    )


def _fold_linear_biases(module: torch.fx.GraphModule) -> int:
    """``Linear(bias=False)`` followed by ``Add`` of a constant 1-D vector -> one ``Linear`` with a bias (in place).

    ``torch.onnx`` writes ``nn.Linear`` on 3-D/4-D inputs (transformer MLPs and
    projections, ConvNeXt's pointwise layers) as ``MatMul`` + ``Add``; the
    ``MatMul`` becomes a bias-free ``nn.Linear`` and here the ``Add`` is folded
    into it, so the layer's bias is a parameter that pruning cuts with its rows.
    Returns the number of layers folded.
    """
    graph = module.graph
    modules = dict(module.named_modules())
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Linear):
            continue
        linear = modules[node.target]
        if linear.bias is not None or len(node.users) != 1:
            continue
        add = next(iter(node.users))
        if add.op != "call_module" or not _is_onnx_add(modules.get(add.target)) or len(add.args) != 2 or add.kwargs:
            continue
        other = add.args[1] if add.args[0] is node else add.args[0]
        if add.args[0] is add.args[1] or not isinstance(other, torch.fx.Node) or other.op != "get_attr":
            continue
        try:
            bias = module.get_buffer(other.target)
        except AttributeError:
            continue
        if bias.dim() != 1 or bias.shape[0] != linear.out_features or bias.dtype != linear.weight.dtype:
            continue
        linear.bias = nn.Parameter(bias.detach().clone())
        add.replace_all_uses_with(node)
        graph.erase_node(add)
        _delete_submodule(module, add.target)
        if not other.users:
            graph.erase_node(other)
            if not any(n.op == "get_attr" and n.target == other.target for n in graph.nodes):
                owner, _, attr = other.target.rpartition(".")
                holder = module.get_submodule(owner) if owner else module
                if attr in holder._buffers:  # pylint: disable=protected-access
                    del holder._buffers[attr]  # pylint: disable=protected-access
        folded += 1
    if folded:
        graph.lint()
        module.recompile()
    return folded


def _delete_submodule(module: nn.Module, target: str) -> None:
    owner, _, attr = target.rpartition(".")
    holder = module.get_submodule(owner) if owner else module
    if hasattr(holder, attr):
        delattr(holder, attr)


def _try_downgrade(model, target: int):
    import onnx
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
        return preprocess_onnx(converted)
    except Exception:  # noqa: BLE001 - no adapter for some op
        return None


def load_onnx(
    path: PathLike,
    *,
    verify: bool = False,
    atol: float = 1e-4,
    external_data: bool = False,
) -> torch.fx.GraphModule:
    """Load an ONNX file as an eval-mode ``torch.fx.GraphModule``.

    With ``verify=True`` the result is run next to onnxruntime on random input
    (see :func:`verify_onnx_conversion`). The graph's input shapes are kept on
    the module as ``module.condense_input_shapes``.

    Example::

        >>> module = load_onnx("resnet18.onnx", verify=True)
    """
    name = _display_name(path)
    proto = read_onnx(path, external_data=external_data)
    module = onnx_to_torch(proto, name=name)
    module.condense_input_shapes = _input_shapes_of(proto)
    if verify:
        verify_onnx_conversion(path, module, atol=atol)
    return module


# ---------------------------------------------------------------------------
# Shapes and verification


def _graph_inputs(model):
    initializer_names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializer_names]


def _input_shapes_of(model) -> List[List[Optional[int]]]:
    shapes = []
    for value in _graph_inputs(model):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            shapes.append([])
            continue
        shapes.append(
            [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor_type.shape.dim]
        )
    return shapes


def onnx_input_shapes(path: PathLike) -> List[List[Optional[int]]]:
    """Input shapes declared by an ONNX graph; dynamic dimensions are ``None``.

    Initializers listed as graph inputs (old opsets) are not inputs.

    Example::

        >>> onnx_input_shapes("resnet18.onnx")
        [[None, 3, 224, 224]]
    """
    return _input_shapes_of(_parse_onnx(path))


def random_onnx_inputs(path_or_model, *, batch_size: int = 1, seed: int = 0) -> List[np.ndarray]:
    """Random numpy inputs matching an ONNX graph's inputs (dynamic first dim -> ``batch_size``).

    Example::

        >>> [x.shape for x in random_onnx_inputs("resnet18.onnx", batch_size=2)]
        [(2, 3, 224, 224)]
    """
    from onnx import helper

    model = path_or_model if hasattr(path_or_model, "graph") else _parse_onnx(path_or_model)
    rng = np.random.default_rng(seed)
    arrays = []
    for value in _graph_inputs(model):
        tensor_type = value.type.tensor_type
        dims = [
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor_type.shape.dim
        ]
        shape = []
        for index, dim in enumerate(dims):
            if dim is None:
                if index != 0:
                    raise ValueError(
                        f"ONNX input {value.name!r} has dynamic dimension {index}; pass inputs= explicitly"
                    )
                dim = batch_size
            shape.append(dim)
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(np.bool_))
        else:
            arrays.append(rng.integers(0, 10, size=shape).astype(dtype))
    return arrays


def verify_onnx_conversion(
    onnx_path: PathLike,
    module: nn.Module,
    atol: float = 1e-4,
    *,
    rtol: float = 0.0,
    inputs: Optional[Sequence[Union[np.ndarray, torch.Tensor]]] = None,
    batch_size: int = 1,
    seed: int = 0,
) -> float:
    """Run ``module`` and onnxruntime on the same random input; return the max abs difference.

    Raises :class:`ModelFormatError` when any output differs by more than
    ``atol + rtol * |onnxruntime output|`` or the output counts/shapes differ.

    Example::

        >>> module = load_model("resnet18.onnx")
        >>> verify_onnx_conversion("resnet18.onnx", module, atol=1e-4)
        3.1e-06
    """
    import onnxruntime as ort

    name = _display_name(onnx_path)
    if inputs is None:
        arrays = random_onnx_inputs(onnx_path, batch_size=batch_size, seed=seed)
    else:
        arrays = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT's own error types
        raise ModelFormatError(f"{name} does not run in onnxruntime: {_short(exc)}") from exc
    feed = {meta.name: array for meta, array in zip(session.get_inputs(), arrays)}
    expected = session.run(None, feed)

    try:
        device = next(iter(module.parameters())).device
    except StopIteration:
        try:
            device = next(iter(module.buffers())).device
        except StopIteration:
            device = torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            got = flatten_tensors(module(*[torch.from_numpy(np.array(a)).to(device) for a in arrays]))
    finally:
        module.train(was_training)

    if len(got) != len(expected):
        raise ModelFormatError(
            f"{name}: the converted model returns {len(got)} outputs, onnxruntime {len(expected)}"
        )
    worst = 0.0
    for index, (mine, ref) in enumerate(zip(got, expected)):
        mine = mine.detach().cpu().numpy()
        ref = np.asarray(ref)
        if mine.shape != ref.shape:
            raise ModelFormatError(
                f"{name}: output {index} has shape {list(mine.shape)} after conversion, "
                f"{list(ref.shape)} in onnxruntime"
            )
        if mine.size == 0:
            continue
        mine64, ref64 = mine.astype(np.float64), ref.astype(np.float64)
        same_nan = np.array_equal(np.isnan(mine64), np.isnan(ref64))
        diff = np.where(np.isnan(ref64) & np.isnan(mine64), 0.0, np.abs(mine64 - ref64))
        largest = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf")
        worst = max(worst, largest)
        if not same_nan or np.any(diff > atol + rtol * np.abs(np.nan_to_num(ref64))):
            raise ModelFormatError(
                f"{name}: the converted PyTorch model does not reproduce onnxruntime's output {index} "
                f"(max abs difference {largest:.3g} > {atol:g})"
            )
    return worst
