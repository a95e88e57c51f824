"""Readable, unique ONNX node names (which onnx2torch turns into torch module names): :func:`friendly_node_names`.

Each renamed node keeps the exporter's name and op in its metadata
(:data:`ONNX_NODE_KEY`, :data:`ONNX_OP_KEY`), which :mod:`.convert` reads back as the
converted module's ``onnx_nodes``.

Example::

    >>> friendly_node_names(proto)
    >>> [n.name for n in proto.graph.node][:2]
    ['conv1', 'relu']
"""

from __future__ import annotations

import ast
import re
from typing import List, Set

import torch
from onnx import ModelProto

__all__ = ["friendly_node_names", "ONNX_NODE_KEY", "ONNX_OP_KEY"]

_RESERVED_MODULE_NAMES = {"initializers", "training", "meta", "graph", "code"} | set(dir(torch.fx.GraphModule))


def _torch_dynamo_scope(node):
    """Module path recorded by ``torch.onnx.export(dynamo=True)``, e.g. ``('layer1', '0', 'conv1')``."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                parts = [str(p) for p in ast.literal_eval(prop.value) if p]
            except (ValueError, SyntaxError):
                return None
            return tuple(parts[:-1])
    return None


def friendly_node_names(model: ModelProto) -> None:
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
        _remember_onnx_name(node)
        node.name = name


ONNX_NODE_KEY = "condense.onnx_node"
ONNX_OP_KEY = "condense.onnx_op"


def _remember_onnx_name(node) -> None:
    """Keep the exporter's node name and op in the node's metadata (read back as ``module.onnx_nodes``)."""
    keys = {p.key for p in node.metadata_props}
    for key, value in ((ONNX_NODE_KEY, node.name), (ONNX_OP_KEY, node.op_type)):
        if key not in keys:
            entry = node.metadata_props.add()
            entry.key, entry.value = key, value
