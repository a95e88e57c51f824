"""Head pruning of ``nn.MultiheadAttention``: masks, channel rule, the smaller module.

A head-pruned attention layer keeps its embedding width (the residual
stream's channels, coupled to LayerNorm and the class token, stay as they
are) and loses whole heads: head ``h`` owns rows ``h*d:(h+1)*d`` of each of
the q, k and v blocks of ``in_proj_weight`` / ``in_proj_bias`` and columns
``h*d:(h+1)*d`` of ``out_proj.weight``.

Mask format (what :class:`~compression_core.pruning.L1NormPruner` produces
for an attention layer; names are the layer's parameters, dotted for
``out_proj``)::

    {"encoder.layers.encoder_layer_0.self_attention": {
        "in_proj_weight": Tensor(3E, E), "in_proj_bias": Tensor(3E), "out_proj.weight": Tensor(E, E)}}

A head is removed when its ``out_proj`` columns are fully masked, or its v
rows (weight and effective bias) are: then it contributes exactly zero, so
speedup's :class:`PrunedMultiheadAttention` (the kept heads only) computes
the masked layer's output. The attention *weights* it returns
(``need_weights=True``) cover the kept heads only.

Supported: ``kdim == vdim == embed_dim`` (packed ``in_proj_weight``), with
or without bias, ``batch_first`` True or False, batched or unbatched inputs,
``key_padding_mask``, ``attn_mask`` (2-D, or 3-D per original head),
``is_causal``. Not pruned (kept whole, with a warning): ``add_bias_kv``,
``add_zero_attn``, separate ``kdim``/``vdim``, subclasses with their own
``forward``.

Example::

    >>> import torch, torch.nn as nn
    >>> mha = nn.MultiheadAttention(16, 4, batch_first=True)
    >>> small = cut_attention(mha, [0, 2])
    >>> small.num_heads, tuple(small.in_proj_weight.shape), tuple(small.out_proj.weight.shape)
    (2, (24, 16), (16, 8))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..tensors import masked_data
from .errors import SpeedupError


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with fewer heads: same math, same call, same return convention.

    ``in_proj_weight`` is ``(3 * num_heads * head_dim, embed_dim)`` (q, k, v
    blocks), ``out_proj`` maps ``num_heads * head_dim`` back to
    ``embed_dim``. ``kept_heads`` are the indices of the kept heads in the
    original layer of ``original_num_heads`` heads (a 3-D ``attn_mask`` given
    per original head is cut to them).

    ``forward(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` returns
    ``(output, weights or None)`` like ``nn.MultiheadAttention``; the weights
    cover the kept heads.
    """

    _qkv_same_embed_dim = True
    bias_k = None
    bias_v = None
    add_zero_attn = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
        kept_heads: Sequence[int] | None = None,
        original_num_heads: int | None = None,
        out_bias: bool | None = None,
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(f"PrunedMultiheadAttention needs at least one head of width >= 1, got {num_heads}x{head_dim}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = self.vdim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.batch_first = batch_first
        self.kept_heads = list(range(num_heads)) if kept_heads is None else [int(h) for h in kept_heads]
        self.original_num_heads = int(original_num_heads) if original_num_heads is not None else num_heads
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias if out_bias is None else out_bias, **factory)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"kept_heads={self.kept_heads} of {self.original_num_heads}, batch_first={self.batch_first}")

    @staticmethod
    def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        same = query is key and key is value
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)

        w, b = self.in_proj_weight, self.in_proj_bias
        if same:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
        else:
            wq, wk, wv = w.chunk(3)
            bq, bk, bv = b.chunk(3) if b is not None else (None, None, None)
            q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
        heads, hd = self.num_heads, self.head_dim
        q = q.unflatten(-1, (heads, hd)).transpose(1, 2)  # (N, H, L, d)
        k = k.unflatten(-1, (heads, hd)).transpose(1, 2)
        v = v.unflatten(-1, (heads, hd)).transpose(1, 2)

        if is_causal and attn_mask is None:
            raise RuntimeError(
                "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
                "`generate_square_subsequent_mask` to create this mask."
            )
        causal = bool(is_causal and key_padding_mask is None and not need_weights)
        mask = None
        if attn_mask is not None and not causal:
            mask = self._additive(attn_mask, q.dtype)
            if mask.dim() == 3:  # (N * heads, L, S), per original head
                n = q.shape[0]
                total = mask.shape[0]
                if total == n * self.original_num_heads and self.original_num_heads != heads:
                    index = torch.as_tensor(self.kept_heads, device=mask.device)
                    mask = mask.unflatten(0, (n, self.original_num_heads)).index_select(1, index)
                else:
                    mask = mask.unflatten(0, (n, heads))
        if key_padding_mask is not None:
            kpm = self._additive(key_padding_mask, q.dtype)[:, None, None, :]
            mask = kpm if mask is None else mask + kpm
        p = self.dropout if self.training else 0.0

        if need_weights:
            scores = torch.matmul(q * (float(hd) ** -0.5), k.transpose(-2, -1))
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            if p > 0.0:
                weights = F.dropout(weights, p=p)
            out = torch.matmul(weights, v)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)

        out = self.out_proj(out.transpose(1, 2).flatten(2))  # (N, L, E)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            out = out.squeeze(0)
            weights = weights.squeeze(0) if weights is not None else None
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


ATTENTION_TYPES: tuple[type, ...] = (nn.MultiheadAttention, PrunedMultiheadAttention)


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, ATTENTION_TYPES)


def unsupported_reason(module: nn.Module) -> str | None:
    """Why heads of this attention layer cannot be pruned (``None``: they can)."""
    if not is_attention(module):
        return "not an attention layer"
    if type(module).forward not in (nn.MultiheadAttention.forward, PrunedMultiheadAttention.forward):
        return "a MultiheadAttention subclass with its own forward"
    if not getattr(module, "_qkv_same_embed_dim", True) or getattr(module, "in_proj_weight", None) is None:
        return "kdim/vdim differ from embed_dim (separate q/k/v projections), which head pruning does not support yet"
    if getattr(module, "bias_k", None) is not None or getattr(module, "bias_v", None) is not None:
        return "add_bias_kv is not supported by head pruning"
    if getattr(module, "add_zero_attn", False):
        return "add_zero_attn is not supported by head pruning"
    return None


def attention_dims(module: nn.Module) -> tuple[int, int, int]:
    """``(embed_dim, num_heads, head_dim)`` of an attention layer."""
    return int(module.embed_dim), int(module.num_heads), int(module.head_dim)


def attention_sizes(module: nn.Module) -> dict[str, int]:
    e, h, d = attention_dims(module)
    return {"embed_dim": e, "num_heads": h, "head_dim": d}


def head_scores(module: nn.Module, p: float = 1.0) -> torch.Tensor:
    """Per head: the p-norm of its q, k, v rows of ``in_proj_weight`` and its ``out_proj`` columns."""
    e, h, d = attention_dims(module)
    w_in = module.in_proj_weight.detach().reshape(3, h, d, e).transpose(0, 1).reshape(h, -1)
    w_out = module.out_proj.weight.detach().reshape(e, h, d).transpose(0, 1).reshape(h, -1)
    return torch.cat([w_in, w_out], dim=1).float().norm(p=p, dim=1)


def head_mask(module: nn.Module, kept: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masks keeping the heads where ``kept`` (bool, one per head) is true."""
    e, h, d = attention_dims(module)
    dtype = module.in_proj_weight.dtype
    k = kept.to(dtype)
    mask = {
        "in_proj_weight": k.view(1, h, 1, 1).expand(3, h, d, e).reshape(3 * h * d, e).clone(),
        "out_proj.weight": k.view(1, h, 1).expand(e, h, d).reshape(e, h * d).clone(),
    }
    if module.in_proj_bias is not None:
        mask["in_proj_bias"] = k.view(1, h, 1).expand(3, h, d).reshape(-1).clone()
    return mask


def dead_heads(module: nn.Module, mask: Mapping[str, torch.Tensor] | None) -> list[bool]:
    """Per head: does it contribute exactly zero (out_proj columns masked, or v rows and v bias zero)?"""
    e, h, d = attention_dims(module)
    if not mask:
        return [False] * h
    dead = torch.zeros(h, dtype=torch.bool)
    out_mask = mask.get("out_proj.weight")
    if out_mask is not None:
        om = out_mask.expand(module.out_proj.weight.shape).reshape(e, h, d)
        dead |= (om == 0).all(dim=2).all(dim=0).cpu()
    in_mask = mask.get("in_proj_weight")
    if in_mask is not None:
        vm = in_mask.expand(module.in_proj_weight.shape).reshape(3, h, d, e)[2]
        v_dead = (vm == 0).flatten(1).all(dim=1).cpu()
        if module.in_proj_bias is not None:
            vb = masked_data(module.in_proj_bias, mask.get("in_proj_bias")).reshape(3, h, d)[2]
            v_dead &= (vb == 0).all(dim=1).cpu()
        dead |= v_dead
    return dead.tolist()


def cut_attention(
    module: nn.Module, kept_heads: Sequence[int], mask: Mapping[str, torch.Tensor] | None = None
) -> PrunedMultiheadAttention:
    """A new :class:`PrunedMultiheadAttention` keeping heads ``kept_heads`` (indices into ``module``'s heads).

    ``mask`` (parameter name -> mask, ``out_proj.weight`` / ``out_proj.bias``
    dotted) is multiplied into the weights first. ``module`` is not modified.
    """
    why = unsupported_reason(module)
    if why is not None:
        raise SpeedupError(f"cannot prune the heads of {type(module).__name__}: {why}")
    e, h, d = attention_dims(module)
    kept = sorted(int(i) for i in kept_heads)
    if not kept:
        raise SpeedupError(f"an attention layer must keep at least one of its {h} heads")
    if kept[0] < 0 or kept[-1] >= h or len(set(kept)) != len(kept):
        raise SpeedupError(f"kept heads {kept} do not fit an attention layer of {h} heads")
    mask = dict(mask or {})
    index = torch.as_tensor(kept, dtype=torch.long, device=module.in_proj_weight.device)
    w = masked_data(module.in_proj_weight, mask.get("in_proj_weight")).reshape(3, h, d, e)
    w = w.index_select(1, index).reshape(-1, e)
    b = None
    if module.in_proj_bias is not None:
        b = masked_data(module.in_proj_bias, mask.get("in_proj_bias")).reshape(3, h, d).index_select(1, index).reshape(-1)
    ow = masked_data(module.out_proj.weight, mask.get("out_proj.weight")).reshape(e, h, d).index_select(1, index)
    ow = ow.reshape(e, -1)
    ob = module.out_proj.bias
    if ob is not None:
        ob = masked_data(ob, mask.get("out_proj.bias"))
    if isinstance(module, PrunedMultiheadAttention):
        original, orig_kept = module.original_num_heads, [module.kept_heads[i] for i in kept]
    else:
        original, orig_kept = h, kept
    new = PrunedMultiheadAttention(
        e, len(kept), d, bias=b is not None, dropout=module.dropout, batch_first=module.batch_first,
        kept_heads=orig_kept, original_num_heads=original, out_bias=ob is not None,
        device=w.device, dtype=w.dtype,
    )
    grad = module.in_proj_weight.requires_grad
    new.in_proj_weight = nn.Parameter(w.clone().contiguous(), requires_grad=grad)
    if b is not None:
        new.in_proj_bias = nn.Parameter(b.clone().contiguous(), requires_grad=module.in_proj_bias.requires_grad)
    new.out_proj.weight = nn.Parameter(ow.clone().contiguous(), requires_grad=module.out_proj.weight.requires_grad)
    if ob is not None:
        new.out_proj.bias = nn.Parameter(ob.clone().contiguous(), requires_grad=module.out_proj.bias.requires_grad)
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


def speedup_attention(name: str, module: nn.Module, mask: Mapping[str, torch.Tensor]):
    """``(new module or None, plan entry or None)`` for one attention layer during speedup."""
    dead = dead_heads(module, mask)
    e, h, d = attention_dims(module)
    kept = [i for i, x in enumerate(dead) if not x]
    if not kept:
        raise SpeedupError(
            f"the mask for {name!r} would remove every head of attention layer {name!r} ({h} of {h}); "
            "keep at least one head"
        )
    if len(kept) == h:
        return None, None
    new = cut_attention(module, kept, mask)
    entry = {
        "type": type(module).__name__,
        "embed_dim": e,
        "num_heads": len(kept),
        "head_dim": d,
        "kept_heads": kept,
        "before": {"embed_dim": e, "num_heads": h},
    }
    return new, entry


def attention_channels(prop: Any, node: Any, name: str, m: nn.Module) -> Any:
    """Channel rule for an attention layer (used by :class:`~.rules.Propagator`).

    Its embedding channels (inputs and output) are kept: head pruning does
    not change them. The layer is recorded as kind ``"attention"``.
    """
    why = unsupported_reason(m)
    if why is not None:
        return prop.unknown(node, why)
    from .channels import Layout
    from .graph import TensorInfo

    reason = f"embedding channels of attention layer {name!r} (speedup removes its heads, not its embed_dim)"
    state = prop.module_state(name, "attention", m)
    prop.pin_args(node, reason)
    if state.out_ids is None:
        state.out_ids = prop.uf.new(m.embed_dim, pinned=True, reason=reason)
        state.in_ids = prop.uf.new(m.embed_dim, pinned=True, reason=reason)
    out = prop.info.get(node)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], TensorInfo) and out[0].shape[-1] == m.embed_dim:
        return type(out)([Layout(out[0].ndim - 1, state.out_ids)] + [None] * (len(out) - 1))
    return prop.unknown(node, "its output is not (attention output, weights)")


__all__ = [
    "ATTENTION_TYPES",
    "PrunedMultiheadAttention",
    "attention_channels",
    "attention_dims",
    "attention_sizes",
    "cut_attention",
    "dead_heads",
    "head_mask",
    "head_scores",
    "is_attention",
    "merged_mask",
    "speedup_attention",
    "unsupported_reason",
]
