"""Where a resized model fails: the op, the graph node and (for an imported ONNX model) the ONNX node.

Speedup runs the resized model once; when that fails it is a case speedup
cannot handle, and the message must say where, so that the user can exclude
that layer or report it. :func:`failing_op` runs the model again and names the
innermost failing operation: the fx node of a ``GraphModule`` (an imported
ONNX model), or the innermost module of any other model.

Example::

    >>> failing_op(gm, (torch.randn(1, 3, 8, 8),), {})
    "module 'flatten' (OnnxStaticReshape) at node 'flatten' (ONNX Reshape '/Reshape')"
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
import torch.nn as nn

from ..dependency.graph import set_training_flags


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        return super().run_node(n)


def _onnx_suffix(model: nn.Module, module_name: str | None) -> str:
    entry = (getattr(model, "onnx_nodes", None) or {}).get(module_name or "")
    if not entry:
        return ""
    return f" (ONNX {entry.get('op', '')} '{entry.get('node', '')}')"


def _describe_node(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        try:
            kind = type(gm.get_submodule(node.target)).__name__
        except AttributeError:
            kind = "module"
        return f"module '{node.target}' ({kind}) at node '{node.name}'{_onnx_suffix(gm, str(node.target))}"
    if node.op == "call_method":
        return f"Tensor.{node.target} at node '{node.name}'"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{target} at node '{node.name}'"


def failing_op(model: nn.Module, args: tuple, kwargs: dict) -> str | None:
    """Run ``model`` (eval mode, flags restored) and name the operation that raises; None when it runs."""
    flags = set_training_flags(model)
    try:
        if isinstance(model, fx.GraphModule) and not kwargs:
            recorder = _Recorder(model)
            try:
                recorder.run(*args)
            except Exception:  # noqa: BLE001 - any failure is what we are looking for
                return _describe_node(model, recorder.current) if recorder.current is not None else None
            return None
        return _innermost_failing_module(model, args, kwargs)
    finally:
        set_training_flags(model, flags)


def _innermost_failing_module(model: nn.Module, args: tuple, kwargs: dict) -> str | None:
    names = {id(m): name for name, m in model.named_modules()}
    stack: list[nn.Module] = []
    failed: list[nn.Module] = []
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(lambda mod, _inputs: stack.append(mod)))
        handles.append(m.register_forward_hook(lambda mod, _inputs, _out: stack.pop()))
    try:
        model(*args, **kwargs)
    except Exception:  # noqa: BLE001 - any failure is what we are looking for
        failed = stack[-1:]
    finally:
        for handle in handles:
            handle.remove()
    if not failed:
        return None
    name = names.get(id(failed[0]), "")
    return f"module '{name}' ({type(failed[0]).__name__}){_onnx_suffix(model, name)}" if name else None
