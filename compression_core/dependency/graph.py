"""Tracing a model with torch.fx and recording the shape of every value.

``trace_model`` turns a model into a ``torch.fx.GraphModule`` whose
submodules are the model's own module objects (so the graph's ``call_module``
targets are the model's qualified module names). ``propagate_shapes`` runs the
graph once on a dummy input and records, for every node, a light summary of
its value (shape and dtype of tensors, small integer tensors themselves,
Python scalars), so the channel analysis can work without keeping
activations alive.

Example::

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> gm = trace_model(model)
    >>> info = propagate_shapes(gm, torch.zeros(1, 3, 8, 8))
    >>> [info[n].shape for n in gm.graph.nodes if n.op == "call_module"]
    [(1, 4, 6, 6), (1, 4, 6, 6)]
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..models.attention import ATTENTION_TYPES
from .errors import SpeedupError
from .rule_table import RULES

# The layers with per-channel weights: the layer rules resize them and speedup
# cuts them. The tracer keeps them whole even when the user subclassed them (a
# subclass of nn.Conv2d defined outside torch.nn would otherwise be traced
# through into F.conv2d on get_attr weights, which speedup cannot cut).
LAYER_TYPES: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.PReLU,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    *ATTENTION_TYPES,  # heads and embedding channels, see compression_core.speedup.attention
)

_TORCH_DIR = os.path.dirname(torch.__file__)


def _is_leaf_norm(m: nn.Module) -> bool:
    # nn.LayerNorm itself and torchvision's channels-first LayerNorm2d are cut whole;
    # other LayerNorm subclasses are traced through
    return type(m).forward is nn.LayerNorm.forward or type(m).__name__ == "LayerNorm2d"


class _Tracer(fx.Tracer):
    def __init__(self, extra_leaves: Iterable[str] = ()):
        super().__init__()
        self.extra_leaves = set(extra_leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.extra_leaves:
            return True
        if RULES.keeps_whole(m):  # a class given a rule with register_channel_rule
            return True
        if isinstance(m, nn.LayerNorm):
            return _is_leaf_norm(m)
        if isinstance(m, LAYER_TYPES):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:
            if getattr(exc, "_condense_culprit", None) is None:
                try:
                    exc._condense_culprit = self.path_of_module(m)  # innermost failing submodule
                except Exception:
                    pass
            raise


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch, as 'file:line in fn: code'."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not os.path.abspath(frame.filename).startswith(_TORCH_DIR) and frame.filename != __file__:
            code = (frame.line or "").strip()
            return f"{frame.filename}:{frame.lineno} in {frame.name} (`{code}`)"
    return ""


def trace_model(model: nn.Module, tolerant: bool = True) -> fx.GraphModule:
    """Trace ``model`` with torch.fx; a GraphModule is used as it is.

    With ``tolerant`` (the default), a submodule fx cannot trace (data
    dependent control flow, ...) is retried as a leaf: it becomes one opaque
    call in the graph, whose channels speedup keeps. The names of such
    submodules are in ``graph_module.meta["condense_leaves"]``. When the
    model's own ``forward`` cannot be traced, :class:`SpeedupError` names the
    user code fx stumbled on.
    """
    if isinstance(model, fx.GraphModule):
        model.meta.setdefault("condense_leaves", [])
        return model
    leaves: list[str] = []
    limit = sum(1 for _ in model.modules())
    while True:
        tracer = _Tracer(leaves)
        try:
            graph = tracer.trace(model)
            break
        except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
            culprit = getattr(exc, "_condense_culprit", None)
            if tolerant and culprit and culprit not in leaves and len(leaves) < limit:
                leaves.append(culprit)
                continue
            where = _user_frame(exc)
            where = f" at {where}" if where else ""
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpeedupError(
                f"torch.fx cannot trace {type(model).__name__}{where}: {type(exc).__name__}: {first_line}. "
                "Speedup needs a model whose forward fx can trace (no data-dependent Python control flow "
                "in the model's own forward; submodules that fx cannot trace are kept whole); "
                "wrap the offending code in a submodule or a torch.fx.wrap'ed function."
            ) from exc
    gm = fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)
    gm.meta["condense_leaves"] = leaves
    return gm


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of a tensor value; ``value`` holds small integer tensors."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    value: torch.Tensor | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)


class _Opaque:
    """Marker for values that are neither tensors nor plain Python data."""

    def __repr__(self) -> str:
        return "<opaque>"


OPAQUE = _Opaque()


def summarize(value: Any) -> Any:
    """Replace tensors in ``value`` by :class:`TensorInfo` (nested containers kept)."""
    if isinstance(value, torch.Tensor):
        small = None
        if value.numel() <= 64 and not value.is_floating_point() and not value.is_complex():
            small = value.detach().cpu().clone()
        return TensorInfo(tuple(value.shape), value.dtype, small)
    if isinstance(value, torch.Size):
        return tuple(int(v) for v in value)
    if isinstance(value, (tuple, list)):
        return tuple(summarize(v) for v in value) if isinstance(value, tuple) else [summarize(v) for v in value]
    if isinstance(value, dict):
        return {k: summarize(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, slice)):
        return value
    return OPAQUE


class _ShapeRecorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=True)
        self.info: dict[fx.Node, Any] = {}
        self.outputs: Any = None

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.info[n] = summarize(result)
        return result


def normalize_inputs(dummy_input: Any) -> tuple[tuple, dict]:
    """Positional and keyword arguments for ``model(...)`` from a dummy input."""
    if isinstance(dummy_input, torch.Tensor):
        return (dummy_input,), {}
    if isinstance(dummy_input, (tuple, list)):
        return tuple(dummy_input), {}
    if isinstance(dummy_input, dict):
        return (), dict(dummy_input)
    raise SpeedupError(
        f"dummy_input must be a tensor, a tuple of tensors or a dict of tensors, got {type(dummy_input).__name__}"
    )


def describe_input(dummy_input: Any) -> str:
    """Human readable shapes of a dummy input, e.g. '(1, 3, 224, 224)'."""
    if isinstance(dummy_input, torch.Tensor):
        return str(tuple(dummy_input.shape))
    if isinstance(dummy_input, (tuple, list)):
        return "(" + ", ".join(describe_input(v) for v in dummy_input) + ")"
    if isinstance(dummy_input, dict):
        return "{" + ", ".join(f"{k!r}: {describe_input(v)}" for k, v in dummy_input.items()) + "}"
    return repr(dummy_input)


def set_training_flags(model: nn.Module, flags: dict[nn.Module, bool] | None = None) -> dict[nn.Module, bool]:
    """Put every module in eval mode (``flags`` None) or restore saved flags; returns the old flags."""
    old = {m: m.training for m in model.modules()}
    if flags is None:
        for m in old:
            m.training = False
    else:
        for m, flag in flags.items():
            m.training = flag
    return old


def propagate_shapes(gm: fx.GraphModule, dummy_input: Any) -> dict[fx.Node, Any]:
    """Run ``gm`` once (eval mode, no grad) and summarise every node's value.

    The model's train/eval flags are restored afterwards. A dummy input the
    model rejects is a :class:`SpeedupError` that names its shape.
    """
    args, kwargs = normalize_inputs(dummy_input)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if kwargs:
        ordered = []
        for n in placeholders:
            if n.target in kwargs:
                ordered.append(kwargs[n.target])
            elif n.args:
                ordered.append(n.args[0])
            else:
                raise SpeedupError(f"dummy_input has no entry for the model's input {n.target!r}")
        args = tuple(ordered)
    recorder = _ShapeRecorder(gm)
    flags = set_training_flags(gm)
    try:
        with torch.no_grad():
            recorder.run(*args)
    except SpeedupError:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()
        detail = message[0] if message else type(exc).__name__
        raise SpeedupError(
            f"the model rejected dummy_input of shape {describe_input(dummy_input)}: {type(exc).__name__}: {detail}"
        ) from exc
    finally:
        set_training_flags(gm, flags)
    return recorder.info
