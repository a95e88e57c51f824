"""Prunability report: which channels of a model speedup can remove, and why not.

Example::

    >>> import torch, torchvision
    >>> report = prunability_report(torchvision.models.resnet18(), torch.rand(1, 3, 64, 64))
    >>> group = next(g for g in report["groups"] if "conv1" in g["layers"])
    >>> group["prunable"], "layer1.0.conv2" in group["layers"]
    (True, True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..dependency import analyze_channels, producers
from ..models.attention import ATTENTION_TYPES, attention_dims, unsupported_reason


def _owner(node: fx.Node | None) -> str | None:
    if node is None:
        return None
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        return str(next(reversed(stack.values()))[0])
    return None


def prunability_report(model: nn.Module, dummy_input: Any) -> dict[str, Any]:
    """A JSON-serialisable summary of the model's dependency groups.

    Returns ``{"groups": [...], "attention": [...], "unprunable": [...],
    "warnings": [...]}``:

    - ``groups``: one entry per set of layers whose output channels are
      coupled (they must lose the same channels): ``{"id", "layers"
      (module names producing these channels), "channels", "prunable"
      (can speedup remove any of them), "prunable_channels", "reason" (why
      not, when some are kept)}``;
    - ``attention``: one entry per ``nn.MultiheadAttention`` layer, pruned by
      whole heads: ``{"layer", "heads", "head_dim", "embed_dim", "prunable",
      "reason" (why not, if not)}``; its output channels are in ``groups``
      as ``<layer>.out_proj``, its input channels in the group of the
      layers feeding it;
    - ``unprunable``: every operation that keeps channels because speedup
      does not understand it: ``{"layer" (the module it belongs to, if any),
      "reason", "op", "node"}``;
    - ``warnings``: the messages ``ModelSpeedup`` would log.

    The model is not modified.
    """
    with torch.no_grad():
        analysis = analyze_channels(model, dummy_input)
    uf = analysis.uf
    nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}

    by_key: dict[tuple[int, ...], list[str]] = {}
    for name, ids in sorted(producers(analysis).items(), key=lambda item: order.get(item[0], 1 << 30)):
        if not ids:
            continue
        key = tuple(uf.find(x) for x in ids)
        by_key.setdefault(key, []).append(name)

    groups = []
    for gid, (key, layers) in enumerate(by_key.items()):
        free = sum(1 for r in key if not (uf.pinned[r] or uf.soft[r]))
        reason = None
        if free < len(key):
            pinned = next(r for r in key if uf.pinned[r] or uf.soft[r])
            reason = uf.reason.get(pinned) or "kept by a shape constraint"
        groups.append({
            "id": gid,
            "layers": layers,
            "channels": len(key),
            "prunable": free > 0,
            "prunable_channels": free,
            "reason": reason,
        })

    unprunable = []
    seen = set()
    for op in analysis.unknown_ops:
        key = (op.node, op.reason)
        if key in seen:
            continue
        seen.add(key)
        unprunable.append({"layer": _owner(nodes.get(op.node)), "reason": op.reason, "op": op.op, "node": op.node})
    for name in analysis.leaves:
        if not any(u["layer"] == name for u in unprunable):
            unprunable.append({"layer": name, "reason": "torch.fx could not trace into it", "op": "module",
                               "node": None})
    attention = []
    for name, module in model.named_modules():
        if not isinstance(module, ATTENTION_TYPES):
            continue
        embed_dim, heads, head_dim = attention_dims(module)
        state = analysis.modules.get(name)
        reason = unsupported_reason(module)
        if reason is None and (state is None or state.kind != "attention"):
            reason = "torch.fx could not trace into it" if name in analysis.leaves else "not reached by the traced graph"
        attention.append({"layer": name, "heads": heads, "head_dim": head_dim, "embed_dim": embed_dim,
                          "prunable": reason is None and heads > 1, "reason": reason if reason or heads > 1
                          else "it has a single head"})
    return {"groups": groups, "attention": attention, "unprunable": unprunable, "warnings": list(analysis.warnings)}
