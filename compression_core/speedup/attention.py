"""Attention layers in speedup: fewer heads, narrower embedding channels, or both.

An ``nn.MultiheadAttention`` is cut two ways, together or apart:

- *heads*: a head is removed when its ``out_proj`` columns are fully
  masked, or its v projection rows are (weight, effective ``in_proj_bias``
  and ``bias_v``): then it contributes exactly zero. Pruners mask heads
  with :func:`~compression_core.models.attention.head_mask` (the geometry
  of heads lives in :mod:`compression_core.models.attention`).
- *channels*: the layer reads query channels (``in_proj_weight`` columns;
  with ``kdim``/``vdim`` different from ``embed_dim``, the columns of
  ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``) and writes
  output channels (``out_proj`` rows). They belong to the channel groups
  of the values around the layer (a transformer's residual stream), found
  by the channel analysis (:mod:`compression_core.dependency.attention`):
  a removed channel loses its columns / rows. The output channels are
  produced by ``out_proj``, so they are removed only when its rows are
  masked: :func:`~compression_core.speedup.auto_set_dependency_group_ids`
  puts ``<layer>.out_proj`` into the residual stream's dependency group
  (next to the patch embedding and the MLP outputs), and the pruner masks
  its rows there.

Speedup replaces the layer by a :class:`PrunedMultiheadAttention` (same
call and return convention, same state_dict key names) keeping the
remaining heads at their width and the kept channels. Every
``nn.MultiheadAttention`` option is supported: ``batch_first``, ``bias``,
``kdim``/``vdim`` (separate projections), ``add_bias_kv`` (``bias_k`` /
``bias_v`` follow the kept heads), ``add_zero_attn``, batched or unbatched
inputs, ``key_padding_mask``, ``attn_mask`` (2-D, or 3-D per original
head), ``is_causal``. The attention weights it returns
(``need_weights=True``) cover the kept heads. Not pruned (kept whole, with
a warning): subclasses with their own ``forward``.

Example::

    >>> import torch.nn as nn
    >>> mha = nn.MultiheadAttention(16, 4, batch_first=True)
    >>> small = cut_attention(mha, [0, 2], kept_out=list(range(12)), kept_in=list(range(12)))
    >>> small.num_heads, tuple(small.in_proj_weight.shape), tuple(small.out_proj.weight.shape)
    (2, (24, 12), (12, 8))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from ..dependency import SpeedupError
from ..models.attention import (
    PROJECTIONS,
    PrunedMultiheadAttention,
    attention_dims,
    attention_sizes,
    input_dims,
    projection_weights,
    unsupported_reason,
)
from ..tensors import masked_data


def _take(tensor: torch.Tensor, dim: int, kept: Sequence[int] | None) -> torch.Tensor:
    if kept is None:
        return tensor
    return tensor.index_select(dim, torch.as_tensor(list(kept), dtype=torch.long, device=tensor.device))


def dead_heads(module: nn.Module, mask: Mapping[str, torch.Tensor] | None) -> list[bool]:
    """Per head: does it contribute exactly zero (out_proj columns masked, or v rows and v biases zero)?"""
    _, h, d = attention_dims(module)
    if not mask:
        return [False] * h
    dead = torch.zeros(h, dtype=torch.bool)
    out_mask = mask.get("out_proj.weight")
    if out_mask is not None:
        om = out_mask.expand(module.out_proj.weight.shape).reshape(-1, h, d)
        dead |= (om == 0).all(dim=2).all(dim=0).cpu()
    packed = module._qkv_same_embed_dim
    v_name = "in_proj_weight" if packed else "v_proj_weight"
    v_mask = mask.get(v_name)
    if v_mask is not None:
        vm = v_mask.expand(getattr(module, v_name).shape)
        if packed:
            vm = vm.chunk(3)[2]
        v_dead = (vm.reshape(h, -1) == 0).all(dim=1).cpu()
        if module.in_proj_bias is not None:
            vb = masked_data(module.in_proj_bias, mask.get("in_proj_bias")).chunk(3)[2].reshape(h, d)
            v_dead &= (vb == 0).all(dim=1).cpu()
        if module.bias_v is not None:
            bv = masked_data(module.bias_v, mask.get("bias_v")).reshape(h, d)
            v_dead &= (bv == 0).all(dim=1).cpu()
        dead |= v_dead
    return dead.tolist()


def cut_attention(
    module: nn.Module,
    kept_heads: Sequence[int],
    mask: Mapping[str, torch.Tensor] | None = None,
    kept_out: Sequence[int] | None = None,
    kept_in: Sequence[int] | None = None,
    kept_key: Sequence[int] | None = None,
    kept_value: Sequence[int] | None = None,
) -> PrunedMultiheadAttention:
    """A new :class:`PrunedMultiheadAttention` keeping heads ``kept_heads`` and the given channels.

    ``kept_heads`` index ``module``'s heads. ``kept_out`` are the kept output
    channels (``out_proj`` rows), ``kept_in`` the kept query channels (with
    packed projections also the key and value channels), ``kept_key`` /
    ``kept_value`` those of separate key / value projections; ``None``
    keeps all. ``mask`` (parameter name -> mask, ``out_proj.weight`` /
    ``out_proj.bias`` dotted) is multiplied into the weights first.
    ``module`` is not modified.
    """
    why = unsupported_reason(module)
    if why is not None:
        raise SpeedupError(f"cannot prune {type(module).__name__}: {why}")
    e, h, d = attention_dims(module)
    kept = sorted(int(i) for i in kept_heads)
    if not kept:
        raise SpeedupError(f"an attention layer must keep at least one of its {h} heads")
    if kept[0] < 0 or kept[-1] >= h or len(set(kept)) != len(kept):
        raise SpeedupError(f"kept heads {kept} do not fit an attention layer of {h} heads")
    qdim, kdim, vdim = input_dims(module)
    for what, channels, width in (("output", kept_out, e), ("query", kept_in, qdim), ("key", kept_key, kdim),
                                  ("value", kept_value, vdim)):
        if channels is not None and (not channels or min(channels) < 0 or max(channels) >= width):
            raise SpeedupError(f"kept {what} channels {list(channels)} do not fit an attention layer of width {width}")
    mask = dict(mask or {})
    packed = module._qkv_same_embed_dim
    heads = torch.as_tensor(kept, dtype=torch.long, device=module.out_proj.weight.device)

    def kept_rows(tensor: torch.Tensor) -> torch.Tensor:
        """The kept heads' rows of stacked per-head blocks (q, k, v of packed weights and biases)."""
        rest = tuple(tensor.shape[1:])
        return tensor.reshape(-1, h, d, *rest).index_select(1, heads).reshape(-1, *rest)

    columns = {"in_proj_weight": kept_in, "q_proj_weight": kept_in, "k_proj_weight": kept_key,
               "v_proj_weight": kept_value}
    weights = {name: _take(kept_rows(masked_data(w, mask.get(name))), 1, columns[name])
               for name, w in projection_weights(module).items()}
    bias = None
    if module.in_proj_bias is not None:
        bias = kept_rows(masked_data(module.in_proj_bias, mask.get("in_proj_bias")))
    out_weight = masked_data(module.out_proj.weight, mask.get("out_proj.weight")).reshape(e, h, d)
    out_weight = _take(out_weight.index_select(1, heads).reshape(e, -1), 0, kept_out)
    out_bias = module.out_proj.bias
    if out_bias is not None:
        out_bias = _take(masked_data(out_bias, mask.get("out_proj.bias")), 0, kept_out)
    kv_biases = {}
    for name in ("bias_k", "bias_v"):
        value = getattr(module, name)
        if value is not None:
            kv_biases[name] = kept_rows(masked_data(value, mask.get(name)).reshape(-1)).reshape(1, 1, -1)

    if isinstance(module, PrunedMultiheadAttention):
        original, orig_kept = module.original_num_heads, [module.kept_heads[i] for i in kept]
    else:
        original, orig_kept = h, kept
    if packed:
        new_qdim = new_kdim = new_vdim = weights["in_proj_weight"].shape[1]
    else:
        new_qdim, new_kdim, new_vdim = (weights[name].shape[1] for name in PROJECTIONS)
    new = PrunedMultiheadAttention(
        out_weight.shape[0], len(kept), d, bias=bias is not None, dropout=module.dropout,
        batch_first=module.batch_first, kept_heads=orig_kept, original_num_heads=original,
        out_bias=out_bias is not None, qdim=new_qdim, kdim=new_kdim, vdim=new_vdim, qkv_packed=packed,
        add_bias_kv=bool(kv_biases), add_zero_attn=bool(module.add_zero_attn),
        device=out_weight.device, dtype=out_weight.dtype,
    )

    def put(owner: nn.Module, name: str, value: torch.Tensor, like: torch.Tensor) -> None:
        setattr(owner, name, nn.Parameter(value.clone().contiguous(), requires_grad=like.requires_grad))

    for name, value in weights.items():
        put(new, name, value, getattr(module, name))
    if bias is not None:
        put(new, "in_proj_bias", bias, module.in_proj_bias)
    put(new.out_proj, "weight", out_weight, module.out_proj.weight)
    if out_bias is not None:
        put(new.out_proj, "bias", out_bias, module.out_proj.bias)
    for name, value in kv_biases.items():
        put(new, name, value, getattr(module, name))
    new.train(module.training)
    return new


def merged_mask(name: str, masks: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mask of attention layer ``name`` with its ``out_proj`` child's own mask folded in."""
    mask = dict(masks.get(name) or {})
    child = masks.get(f"{name}.out_proj") or {}
    for pname, pmask in child.items():
        key = f"out_proj.{pname}"
        mask[key] = pmask if key not in mask else mask[key] * pmask
    return mask


def speedup_attention(
    name: str,
    module: nn.Module,
    mask: Mapping[str, torch.Tensor],
    kept_out: list[int] | None = None,
    kept_in: list[int] | None = None,
    kept_key: list[int] | None = None,
    kept_value: list[int] | None = None,
):
    """``(new module or None, plan entry or None)`` for one attention layer during speedup.

    The kept heads come from ``mask`` (see :func:`dead_heads`), the kept
    channels from the channel analysis (``None``: all).
    """
    dead = dead_heads(module, mask)
    e, h, _ = attention_dims(module)
    kept = [i for i, x in enumerate(dead) if not x]
    if not kept:
        raise SpeedupError(
            f"the mask for {name!r} would remove every head of attention layer {name!r} ({h} of {h}); "
            "keep at least one head"
        )
    qdim, kdim, vdim = input_dims(module)
    sides = {"output": (kept_out, e), "query": (kept_in, qdim), "key": (kept_key, kdim), "value": (kept_value, vdim)}
    for what, (channels, width) in sides.items():
        if channels is not None and not channels:
            raise SpeedupError(
                f"the masks would remove every {what} channel of attention layer {name!r} ({width} of {width}); "
                "keep at least one channel"
            )
    if len(kept) == h and all(c is None or len(c) == width for c, width in sides.values()):
        return None, None
    new = cut_attention(module, kept, mask, kept_out, kept_in, kept_key, kept_value)
    entry = {
        "type": type(module).__name__,
        **attention_sizes(new),
        "kept_heads": kept,
        "kept_out": kept_out,
        "kept_in": kept_in,
        "before": {"embed_dim": e, "num_heads": h},
    }
    if not module._qkv_same_embed_dim:
        entry.update(kept_key=kept_key, kept_value=kept_value)
    return new, entry


__all__ = [
    "cut_attention",
    "dead_heads",
    "merged_mask",
    "speedup_attention",
]
