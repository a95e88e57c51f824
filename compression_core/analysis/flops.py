"""FLOPs (MACs) and parameter counting, compatible with NNI's ``count_flops_params``.

Counts are for **one sample** (the dummy input's batch size is divided out),
as NNI does for convolutions:

- Conv: ``out_elements * in_channels / groups * kernel_elements`` MACs;
  ConvTranspose: ``in_elements * out_channels / groups * kernel_elements``.
- Linear: ``in_features * out_features`` per row (rows = all leading dims
  but the batch, so a (N, L, F) input counts L rows).
- BatchNorm / InstanceNorm / LayerNorm / GroupNorm: one MAC per element.
- Average/max pools: one op per input element.
- MultiheadAttention: projections plus the two attention matmuls.
- Bias additions only with ``count_bias=True`` (NNI's default mode leaves
  them out); activations count zero.

Pruning masks attached as hooks are ignored: the layers are counted at their
full shapes (run speedup first to count a pruned model).

Example::

    >>> import torch, torchvision
    >>> flops, params, layers = count_flops_params(torchvision.models.resnet18(), torch.rand(1, 3, 224, 224))
    >>> round(flops / 1e9, 2), round(params / 1e6, 2)
    (1.82, 11.69)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..tensors import first_tensor

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm, nn.GroupNorm)
_POOLS = (
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)


def _as_inputs(dummy_input: Any, device: torch.device | None) -> tuple[tuple, dict]:
    if isinstance(dummy_input, torch.Tensor):
        return (dummy_input.to(device) if device else dummy_input,), {}
    if isinstance(dummy_input, (tuple, list)) and dummy_input and all(isinstance(v, int) for v in dummy_input):
        return (torch.zeros(*dummy_input, device=device),), {}  # NNI: a shape
    if isinstance(dummy_input, (tuple, list)):
        return tuple(v.to(device) if isinstance(v, torch.Tensor) and device else v for v in dummy_input), {}
    if isinstance(dummy_input, dict):
        return (), {k: v.to(device) if isinstance(v, torch.Tensor) and device else v for k, v in dummy_input.items()}
    raise ValueError(f"dummy_input must be a tensor, a tuple of tensors or a shape, got {type(dummy_input).__name__}")


def shapes_of(value: Any) -> Any:
    """JSON-friendly shapes of a (nested) value: lists of ints for tensors."""
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, (tuple, list)):
        return [shapes_of(v) for v in value]
    if isinstance(value, dict):
        return {str(k): shapes_of(v) for k, v in value.items()}
    return None


def _module_macs(m: nn.Module, inputs: tuple, output: Any, count_bias: bool) -> int:
    x = first_tensor(inputs)
    y = first_tensor(output)
    if x is None or y is None:
        return 0
    if isinstance(m, nn.modules.conv._ConvNd):
        kernel = math.prod(m.kernel_size)
        if m.transposed:
            macs = x.numel() * (m.out_channels // m.groups) * kernel
        else:
            macs = y.numel() * (m.in_channels // m.groups) * kernel
        if count_bias and m.bias is not None:
            macs += y.numel()
        return macs
    if isinstance(m, nn.Linear):
        rows = x.numel() // max(m.in_features, 1)
        macs = rows * m.in_features * m.out_features
        if count_bias and m.bias is not None:
            macs += rows * m.out_features
        return macs
    if isinstance(m, _NORMS):
        return x.numel()
    if isinstance(m, _POOLS):
        return x.numel()
    if _is_attention(m):
        q = x
        k = first_tensor(inputs[1:]) if len(inputs) > 1 else q
        e = m.embed_dim
        qdim = getattr(m, "qdim", e)  # query width: embed_dim, unless speedup cut the inputs apart from the output
        # Width of the projections: embed_dim, or fewer after head pruning.
        inner = getattr(m, "num_heads", 1) * getattr(m, "head_dim", e // max(getattr(m, "num_heads", 1), 1))
        lq = q.numel() // qdim
        lk = k.numel() // m.kdim if k is not None else lq
        seq = q.shape[1] if m.batch_first and q.dim() == 3 else q.shape[0]
        seq_k = (k.shape[1] if m.batch_first and k.dim() == 3 else k.shape[0]) if k is not None else seq
        return lq * qdim * inner + lk * (m.kdim + m.vdim) * inner + lq * seq_k * inner * 2 + lq * inner * e
    return 0


def _is_attention(m: nn.Module) -> bool:
    """nn.MultiheadAttention, or a module of the same shape (speedup's head-pruned one)."""
    return isinstance(m, nn.MultiheadAttention) or all(
        hasattr(m, attr) for attr in ("in_proj_weight", "out_proj", "num_heads", "embed_dim", "kdim", "vdim")
    )


def _own_params(m: nn.Module) -> int:
    recurse = _is_attention(m)
    return sum(p.numel() for p in m.parameters(recurse=recurse))


def _is_counted_leaf(m: nn.Module) -> bool:
    return not any(True for _ in m.children()) or _is_attention(m)


def onnx_source(onnx_nodes: dict[str, dict], name: str) -> dict[str, str]:
    """``{"onnx": "ONNX Conv '/layer1/layer1.0/conv1/Conv'"}`` for a layer of an imported ONNX model, else ``{}``.

    ``onnx_nodes`` is the imported model's ``onnx_nodes`` (module name -> ONNX node name and op).

    Example::

        >>> onnx_source({"conv": {"node": "/conv/Conv", "op": "Conv"}}, "conv")
        {'onnx': "ONNX Conv '/conv/Conv'"}
    """
    entry = onnx_nodes.get(name)
    if not entry:
        return {}
    node = f" '{entry['node']}'" if entry.get("node") else ""
    return {"onnx": f"ONNX {entry.get('op', '')}{node}".replace("ONNX  ", "ONNX ")}


def profile(model: nn.Module, dummy_input: Any, *, count_bias: bool = False) -> tuple[int, int, list[dict], Any]:
    """Run ``model`` once and return ``(flops, params, layers, output)``; see :func:`count_flops_params`."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = None
    args, kwargs = _as_inputs(dummy_input, device)
    first = first_tensor((args, kwargs))
    batch = first.shape[0] if first is not None and first.dim() > 0 and first.shape[0] > 0 else 1

    records: list[dict] = []
    onnx_nodes = getattr(model, "onnx_nodes", None) or {}
    called: set[int] = set()
    handles = []
    skip: set[int] = set()
    for m in model.modules():
        if _is_attention(m):
            skip.update(id(c) for c in m.modules() if c is not m)

    def make_hook(name: str):
        def hook(m: nn.Module, inputs: tuple, output: Any) -> None:
            called.add(id(m))
            macs = _module_macs(m, inputs, output, count_bias)
            params = _own_params(m)
            if not macs and not params:
                return
            weight = getattr(m, "weight", None)
            records.append({
                "name": name,
                "type": type(m).__name__,
                "input_shape": shapes_of(first_tensor(inputs)),
                "output_shape": shapes_of(first_tensor(output)),
                "weight_shape": list(weight.shape) if isinstance(weight, torch.Tensor) else None,
                "params": params,
                "flops": int(round(macs / batch)),
                **onnx_source(onnx_nodes, name),
            })
        return hook

    named = [(n, m) for n, m in model.named_modules() if n and _is_counted_leaf(m) and id(m) not in skip]
    if not named and _is_counted_leaf(model):
        named = [("", model)]
    for name, m in named:
        handles.append(m.register_forward_hook(make_hook(name)))
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            output = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    for name, m in named:
        if id(m) not in called and _own_params(m):
            weight = getattr(m, "weight", None)
            records.append({
                "name": name, "type": type(m).__name__, "input_shape": None, "output_shape": None,
                "weight_shape": list(weight.shape) if isinstance(weight, torch.Tensor) else None,
                "params": _own_params(m), "flops": 0, **onnx_source(onnx_nodes, name),
            })
    flops = sum(r["flops"] for r in records)
    params = sum(p.numel() for p in model.parameters())
    return flops, params, records, output


def count_flops_params(model: nn.Module, dummy_input: Any, *, count_bias: bool = False,
                       verbose: bool = False) -> tuple[int, int, list[dict]]:
    """Count MACs (per sample) and parameters of ``model`` on ``dummy_input``.

    ``dummy_input`` is a tensor, a tuple of tensors, or (as in NNI) a tuple of
    ints giving an input shape. Returns ``(flops, params, layers)``: ``params``
    is the model's total parameter count, ``layers`` a list with one dict
    ``{"name", "type", "input_shape", "output_shape", "weight_shape",
    "params", "flops"}`` per call of a leaf module that has parameters or
    FLOPs, plus ``"onnx"`` (see :func:`onnx_source`) for a model imported from ONNX. The model's train/eval mode is restored afterwards.

    Example::

        >>> import torch, torch.nn as nn
        >>> flops, params, layers = count_flops_params(nn.Conv2d(3, 8, 3), torch.rand(1, 3, 10, 10))
        >>> flops, params  # 8 * 8 * 8 outputs * 27 MACs; 8 * 27 weights + 8 biases
        (13824, 224)
    """
    flops, params, layers, _ = profile(model, dummy_input, count_bias=count_bias)
    if verbose:
        for r in layers:
            print(f"{r['name']:40s} {r['type']:20s} {str(r['weight_shape']):24s} {r['flops']:>14d} {r['params']:>10d}")
        print(f"FLOPs total: {flops}\n#Params total: {params}")
    return flops, params, layers


def model_summary(model: nn.Module, dummy_input: Any) -> dict[str, Any]:
    """A JSON-serialisable summary: shapes, parameter and FLOP counts, layers.

    Example::

        >>> import torch, torch.nn as nn
        >>> s = model_summary(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.rand(4, 3, 4))
        >>> s["input_shape"], s["output_shape"], s["params"], s["flops"], s["layer_count"]
        ([4, 3, 4], [4, 2], 26, 24, 1)
    """
    flops, params, layers, output = profile(model, dummy_input)
    args, kwargs = _as_inputs(dummy_input, None)
    inputs = args[0] if len(args) == 1 and not kwargs else (list(args) if not kwargs else kwargs)
    return {
        "input_shape": shapes_of(inputs),
        "output_shape": shapes_of(output),
        "params": int(params),
        "flops": int(flops),
        "layers": layers,
        "layer_count": len(layers),
    }
