"""ONNX -> ``torch.fx.GraphModule`` through onnx2torch, and what is done to the fx graph after conversion.

- :func:`onnx_to_torch`: :func:`~.passes.preprocess_onnx`, a retry at opset 17 when a
  recent operator has no converter, onnx2torch (patched by :mod:`.compat`), then
  :func:`_fold_linear_biases` on the fx graph.
- :func:`load_onnx`: read, check, convert, optionally verify against onnxruntime.
- :func:`unsupported_operators`: the operators no converter handles.

Example::

    >>> module = load_onnx("resnet18.onnx", verify=True)
    >>> module(torch.randn(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import onnx
import torch
from onnx import ModelProto, version_converter
from torch import nn

from ...data.limits import IntakeLimits
from ..errors import ModelFormatError
from .fixed_inputs import (
    FIXED_INPUTS_OPTION, INPUT_SHAPES_OPTION, declared_dims, fix_input_shapes, fix_input_values,
)
from .fold_if import if_inputs
from .names import ONNX_NODE_KEY, ONNX_OP_KEY
from .passes import preprocess_onnx
from .read import display_name, onnx_input_shapes, read_onnx, short_error, weightless_copy
from .verify import verify_onnx_conversion

__all__ = ["onnx_to_torch", "load_onnx", "unsupported_operators"]

PathLike = Union[str, os.PathLike]
_DEFAULT_OPSET_DOWNGRADE = 17
# Input types a setting comes in (a sample rate, a mode flag), which fixed_inputs can fix; float inputs are data.
_SETTING_TYPES = {
    onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT64, onnx.TensorProto.UINT32, onnx.TensorProto.UINT16, onnx.TensorProto.UINT8,
    onnx.TensorProto.BOOL,
}


def _default_opset(model: ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def unsupported_operators(model: ModelProto) -> List[str]:
    """Sorted ``"<op_type>"`` (or ``"<domain>.<op_type>"``) names no converter handles.

    Example::

        >>> unsupported_operators(onnx.load("detector.onnx"))
        ['Loop', 'NonMaxSuppression']
    """
    from .compat import find_converter, install  # onnx2torch takes seconds to import: only when converting

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


def onnx_to_torch(model: ModelProto, name: str = "model") -> torch.fx.GraphModule:
    """Convert a (checked) ``onnx.ModelProto`` to an eval-mode ``torch.fx.GraphModule``.

    Applies :func:`preprocess_onnx`; if operators of a recent opset have no
    converter, retries after ``onnx.version_converter`` down to opset 17.
    Unsupported operators raise :class:`ModelFormatError` naming them.

    Example::

        >>> module = onnx_to_torch(onnx.load("resnet18.onnx"))
        >>> module(torch.randn(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    # onnx2torch (seconds) and onnx_ir (half a second) to import: only when converting
    from onnx2torch import convert
    from onnx_ir.serde import SerdeError

    from .compat import UnsupportedOperator, install, shapes_already_inferred

    install()
    try:
        ready = preprocess_onnx(model)
    except SerdeError as exc:  # e.g. sparse tensors, which onnx2torch cannot convert either
        raise ModelFormatError(f"{name} cannot be converted to PyTorch: {_first_sentence(exc)}") from exc
    missing = unsupported_operators(ready)
    opset = _default_opset(ready)
    if missing and opset > _DEFAULT_OPSET_DOWNGRADE:
        downgraded = _try_downgrade(ready, _DEFAULT_OPSET_DOWNGRADE)
        if downgraded is not None and not unsupported_operators(downgraded):
            ready, missing = downgraded, []
    if missing:
        why = _if_refusal(ready) if "If" in missing else ""
        raise ModelFormatError(
            f"{name} uses ONNX operators that Condense cannot convert to PyTorch: "
            f"{', '.join(missing)} (opset {opset}){why}."
        )

    _split_multi_output_results(ready)

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
            raise ModelFormatError(f"{name} cannot be converted to PyTorch: {short_error(exc)}") from exc
    except (NotImplementedError, KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"{name} cannot be converted to PyTorch: {short_error(exc)}") from exc
    _fold_linear_biases(module)
    module.onnx_nodes = _onnx_nodes(module, ready)
    module.eval()
    return module


def _if_refusal(ready: ModelProto) -> str:
    """The end of the refusal sentence for a model with ``If`` nodes left: which inputs decide them, and how
    to fix a setting input (an integer or boolean one, such as a sample rate) with ``fixed_inputs`` or a
    dynamic dim (a sequence length) with ``input_shapes``."""
    declared = {value.name: value for value in ready.graph.input}
    sources = if_inputs(ready)
    shapes = [i for i, how in sources.items() if how == "shape"]
    settings = [i for i, how in sources.items()
                if how == "value" and i in declared and declared[i].type.tensor_type.elem_type in _SETTING_TYPES]
    data = [i for i in sources if i not in shapes and i not in settings]
    parts = []
    if settings:
        example = ", ".join(f"{i!r}: <value>" for i in settings)
        parts.append(f"the value of input {', '.join(repr(i) for i in settings)}, which you can fix at import "
                     f"with load_model(..., {FIXED_INPUTS_OPTION}={{{example}}})")
    if shapes:
        example = ", ".join(f"{i!r}: {_shape_example(declared[i])}" for i in shapes)
        parts.append(f"the shape of input {', '.join(repr(i) for i in shapes)}, whose dynamic sizes you can fix "
                     f"at import with load_model(..., {INPUT_SHAPES_OPTION}={{{example}}})")
    if data:
        parts.append(f"the data of input {', '.join(repr(i) for i in data)}, which is decided only at run time")
    found = " and from ".join(parts) if parts else "values computed at run time"
    return f"; its If nodes choose a branch from {found}"


def _shape_example(value) -> str:
    """``[None, <size>]``: the declared shape, the batch left dynamic, a placeholder for the other dynamic dims."""
    dims = declared_dims(value) or []
    shown = ["None" if index == 0 and d is None else "<size>" if d is None else str(d) for index, d in enumerate(dims)]
    return "[" + ", ".join(shown) + "]"


def _onnx_nodes(module: torch.fx.GraphModule, ready: ModelProto) -> Dict[str, Dict[str, str]]:
    """``{module name: {"node": ONNX node name, "op": ONNX op_type}}`` for every module of ``module``.

    onnx2torch names each module after its (renamed) node; a module's submodules
    (an LSTM's ``rnn``) come from the same node.
    """
    by_name = {}
    for node in ready.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        by_name[node.name] = {"node": meta.get(ONNX_NODE_KEY, node.name), "op": meta.get(ONNX_OP_KEY, node.op_type)}
    table: Dict[str, Dict[str, str]] = {}
    for name, _ in module.named_modules():
        top = name.split(".")[0]
        if name and top in by_name:
            table[name] = dict(by_name[top])
    return table


def _split_multi_output_results(model: ModelProto) -> None:
    """Give every graph output made by a node of several outputs its own ``Identity`` (in place).

    onnx2torch returns a node's whole output tuple for such a graph output (silero-vad's
    LSTM gives ``hn`` and ``cn``: the model would return ``Y`` too).
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    extra = []
    for value in model.graph.output:
        node = producers.get(value.name)
        if node is None or sum(1 for out in node.output if out) < 2:
            continue
        inner = value.name + "_result"
        node.output[list(node.output).index(value.name)] = inner
        for other in model.graph.node:
            for k, name in enumerate(other.input):
                if name == value.name:
                    other.input[k] = inner
        extra.append(onnx.helper.make_node("Identity", [inner], [value.name], name=f"{node.name}_{value.name}"))
    model.graph.node.extend(extra)


def _first_sentence(exc: BaseException) -> str:
    """What onnx_ir says at the bottom of its chain of errors, without its call for contributions."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return short_error(exc).split(". ")[0].rstrip(".")


def _attach_inferred_shapes(model: ModelProto) -> bool:
    """Store ONNX shape inference results in ``model.graph.value_info`` (computed without the weights)."""
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


def _try_downgrade(model: ModelProto, target: int) -> Optional[ModelProto]:
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
        return preprocess_onnx(converted)
    except Exception:  # noqa: BLE001 - no adapter for some op
        return None


# ---------------------------------------------------------------------------
# The fx graph after conversion


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


# ---------------------------------------------------------------------------
# Files


def load_onnx(
    path: PathLike,
    *,
    verify: bool = False,
    atol: float = 1e-4,
    external_data: bool = False,
    fixed_inputs: Optional[Mapping[str, Any]] = None,
    input_shapes: Optional[Mapping[str, Sequence[Optional[int]]]] = None,
    limits: IntakeLimits = IntakeLimits(),
) -> torch.fx.GraphModule:
    """Load an ONNX file as an eval-mode ``torch.fx.GraphModule``.

    The file's structure is checked against ``limits``
    (:class:`~compression_core.data.limits.IntakeLimits`) before anything is built.

    With ``verify=True`` the result is run next to onnxruntime on random input
    (see :func:`verify_onnx_conversion`). The graph's input shapes are kept on
    the module as ``module.condense_input_shapes``. ``fixed_inputs`` gives some
    inputs a value for good (see :func:`~.fixed_inputs.fix_input_values`): the
    ``If`` nodes they decide are folded, the module no longer takes them, and
    ``module.condense_fixed_inputs`` records them (a ``UserWarning`` says so).
    ``input_shapes`` gives dynamic dims a size (see :func:`~.fixed_inputs.fix_input_shapes`),
    so ``If`` nodes that check a sequence length fold too.

    Example::

        >>> module = load_onnx("resnet18.onnx", verify=True)
        >>> vad = load_onnx("silero_vad.onnx", fixed_inputs={"sr": 16000},   # takes (input, state)
        ...                 input_shapes={"input": [None, 512]})
    """
    name = display_name(path)
    proto = read_onnx(path, external_data=external_data, limits=limits)
    if input_shapes:
        fix_input_shapes(proto, input_shapes, name)
    fixed = fix_input_values(proto, fixed_inputs, name) if fixed_inputs else {}
    for input_name, value in fixed.items():
        warnings.warn(f"input {input_name!r} of {name} is fixed to {value.tolist()!r} at import; "
                      "the converted model no longer takes it", UserWarning, stacklevel=2)
    module = onnx_to_torch(proto, name=name)
    module.condense_input_shapes = onnx_input_shapes(proto)
    module.condense_fixed_inputs = fixed
    if verify:
        verify_onnx_conversion(path, module, atol=atol)
    return module
