"""Which parts of a model torch.fx can trace, for FX graph-mode quantization.

FX quantization traces the model with ``torch.fx``; data-dependent control
flow (``if x.sum() > 0``), ``len()`` of a traced tensor, calls into
non-torch code and the like stop it, and PyTorch's error names no layer.
:func:`plan_regions` finds the layer whose ``forward`` fails (a tracer that
remembers which module it is inside), treats it as an opaque leaf and tries
again. The result: the *regions* (submodules) to quantize with
``prepare_fx`` each, and the *untraceable* modules whose own code stays float
(their traceable children become regions of their own).

Example::

    >>> import torch, torch.nn as nn
    >>> class Gate(nn.Module):
    ...     def forward(self, x):
    ...         return x if x.sum() > 0 else -x
    >>> model = nn.Sequential(nn.Linear(4, 4), Gate(), nn.Linear(4, 2))
    >>> regions, untraceable = plan_regions(model)
    >>> regions, sorted(untraceable)
    ({'': ['1']}, ['1'])
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch.ao.quantization.fx.tracer import QuantizationTracer


class _LocatingTracer(QuantizationTracer):
    """FX's quantization tracer that keeps the stack of modules being traced."""

    def __init__(self, leaves: list[str]):
        super().__init__(skipped_module_names=list(leaves), skipped_module_classes=[])
        self.stack: list[str] = []

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        self.stack.append(self.path_of_module(m))
        result = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def find_untraceable(module: nn.Module, *, max_tries: int = 100) -> tuple[bool, dict[str, str]]:
    """Trace ``module``; return ``(root_traceable, {submodule: error})``.

    The dict names the submodules that had to become opaque leaves for the
    trace to succeed. ``root_traceable`` is False when ``module``'s own
    ``forward`` cannot be traced (the dict then holds ``""``).
    """
    leaves: dict[str, str] = {}
    for _ in range(max_tries):
        tracer = _LocatingTracer(list(leaves))
        try:
            tracer.trace(module)
            return True, leaves
        except Exception as exc:  # noqa: BLE001 - any trace failure is located and reported
            culprit = tracer.stack[-1] if tracer.stack else ""
            if culprit == "" or culprit in leaves:
                return False, {**leaves, "": _first_line(exc)}
            leaves[culprit] = _first_line(exc)
    return False, {**leaves, "": "too many untraceable submodules"}


def plan_regions(model: nn.Module, wanted: set[str] | None = None) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The regions to quantize with ``prepare_fx`` and the modules that cannot be traced.

    Returns ``({region_name: [untraceable names inside it, relative]}, {untraceable_name: error})``.
    ``""`` is the whole model. ``wanted`` (layer names) limits the regions
    planned inside untraceable modules to those holding a wanted layer.
    """
    regions: dict[str, list[str]] = {}
    untraceable: dict[str, str] = {}

    def holds_wanted(prefix: str) -> bool:
        if wanted is None or prefix == "":
            return True
        return any(w == prefix or w.startswith(prefix + ".") for w in wanted)

    def visit(module: nn.Module, prefix: str) -> None:
        ok, bad = find_untraceable(module)
        if ok:
            regions[prefix] = list(bad)
            opaque = bad
        else:
            untraceable[prefix] = bad.pop("")
            opaque = {"": ""}
        for name, error in bad.items():
            untraceable[_join(prefix, name)] = error
        for name in opaque:
            inner = module.get_submodule(name) if name else module
            inner_prefix = _join(prefix, name)
            for child_name, child in inner.named_children():
                full = _join(inner_prefix, child_name)
                if holds_wanted(full):
                    visit(child, full)

    visit(model, "")
    return regions, untraceable


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name
