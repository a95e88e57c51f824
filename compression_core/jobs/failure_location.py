"""Where a failure happened: the layer of the job's model (and its ONNX node), or the function.

The exception's traceback is walked for the innermost frame whose ``self`` is
an ``nn.Module``; the module is named through the job's model's
``named_modules()`` (or, for a copy of it being worked on, the outermost module
of the traceback). fx GraphModules, onnx2torch's included, call their
submodules by name from generated code, so the same walk finds their layers (fx
drops the frames of a failure in the generated code itself: that names the
model's forward only). A model imported from ONNX
carries ``onnx_nodes`` (module qualified name -> ``{"node": ..., "op": ...}``),
which adds the ONNX node to the layer's name.
"""

from __future__ import annotations

import linecache
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch.nn as nn

__all__ = ["Location", "locate_failure"]

_PACKAGE_DIR = str(Path(__file__).parents[1])  # compression_core/: "our" code, named in internal errors
_TORCH_DIR = str(Path(nn.__file__).parents[1])


@dataclass
class Location:
    """The innermost place in the traceback worth naming."""

    layer: str | None = None         # qualified name in its model ("" for the model itself), None outside modules
    module: nn.Module | None = None
    onnx: dict[str, str] | None = None  # {"node": ..., "op": ...} of a model imported from ONNX
    source: str = ""                 # the line of code that failed (the model's own forward, fx generated code)
    function: str = ""               # the innermost function of ours (or the innermost at all) outside modules

    def describe(self) -> str:
        """``layer `conv1` (Conv2d)``, ``layer `x` (ONNX Conv node '/conv/Conv')``, or the function."""
        if self.layer:
            if self.onnx:
                return f"layer `{self.layer}` (ONNX {self.onnx.get('op', '?')} node '{self.onnx.get('node', '?')}')"
            return f"layer `{self.layer}` ({type(self.module).__name__})"
        if self.layer == "":
            line = f" at `{self.source}`" if self.source else ""
            return f"the model's forward (`{type(self.module).__name__}.forward`{line})"
        return f"`{self.function}`" if self.function else ""

    @property
    def is_onnx(self) -> bool:
        """Imported from ONNX: the layer has its node, or is one of onnx2torch's modules."""
        return self.onnx is not None or type(self.module).__module__.startswith("onnx2torch")


def locate_failure(exc: BaseException, model: nn.Module | None = None) -> Location:
    """Where in ``model`` (or in the code) ``exc`` was raised; see the module's docstring.

    Example::

        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(8, 4, 3))
        >>> try:
        ...     model(torch.zeros(1, 1, 8, 8))
        ... except RuntimeError as exc:
        ...     print(locate_failure(exc, model).describe())
        layer `1` (Conv2d)
    """
    frames = [(frame, lineno) for frame, lineno in traceback.walk_tb(exc.__traceback__)]
    module_frames = [(frame, lineno, owner) for frame, lineno in frames
                     if isinstance(owner := _frame_self(frame), nn.Module)]
    if not module_frames:
        return Location(function=_function_name(frames))
    frame, lineno, innermost = module_frames[-1]
    # The job's model first; a copy of it (speedup, quantization) is the outermost module of the traceback.
    roots = [root for root in (model, module_frames[0][2]) if root is not None]
    for root in roots:
        name = next((name for name, sub in root.named_modules() if sub is innermost), None)
        if name is None or (name == "" and model is not None and root is not model):
            continue  # a module outside the job's model (a loss, say) is no "model's forward"
        nodes = getattr(root, "onnx_nodes", None) or getattr(model, "onnx_nodes", None) or {}
        onnx = nodes.get(name) if isinstance(nodes, dict) else None
        source = _source_line(frame, lineno) if name == "" and not _in_torch(frame) else ""
        return Location(layer=name, module=innermost, onnx=onnx, source=source)
    # A replacement being tried out (speedup swaps its new layers in, then back out on failure) is in no
    # model any more; the code that built it keeps it in a name -> module mapping.
    name = _name_in_mappings(innermost, [frame for frame, _ in frames])
    return Location(layer=name or type(innermost).__name__, module=innermost)


def _name_in_mappings(module: nn.Module, frames: list[FrameType]) -> str | None:
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, dict) and len(value) < 100_000:
                name = next((key for key, item in value.items() if item is module and isinstance(key, str)), None)
                if name:
                    return name
    return None


def _frame_self(frame: FrameType) -> Any:
    """The method's first argument (whatever its name), or a closure's ``self``."""
    code = frame.f_code
    try:
        first = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
        return first if isinstance(first, nn.Module) else frame.f_locals.get("self")
    except Exception:  # noqa: BLE001 - a frame whose locals cannot be read names nothing
        return None


def _in_torch(frame: FrameType) -> bool:
    # fx drops the traceback of an error raised in its generated code itself, leaving torch's own call line
    return frame.f_code.co_filename.startswith(_TORCH_DIR)


def _source_line(frame: FrameType, lineno: int) -> str:
    """The failing line, fx's generated code included (fx registers it with linecache)."""
    line = linecache.getline(frame.f_code.co_filename, lineno, frame.f_globals).strip()
    return line.split(";")[0].strip()[:120]


def _function_name(frames: list[tuple[FrameType, int]]) -> str:
    """The innermost frame in Condense's own code (else the innermost at all), as ``Class.method``."""
    ours = [frame for frame, _ in frames if frame.f_code.co_filename.startswith(_PACKAGE_DIR)]
    chosen = (ours or [frame for frame, _ in frames] or [None])[-1]
    if chosen is None:
        return ""
    return getattr(chosen.f_code, "co_qualname", chosen.f_code.co_name)
