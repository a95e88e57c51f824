"""Attention geometry: which layers have heads, where each head's weights sit, the smaller layer.

An ``nn.MultiheadAttention`` of ``H`` heads of width ``d`` projects its
inputs to ``H * d`` features per q, k and v (the packed ``in_proj_weight``
``(3*H*d, E)``, or ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``
when ``kdim`` or ``vdim`` differ from ``embed_dim``): head ``h`` owns rows
``h*d:(h+1)*d`` of each projection (and of ``in_proj_bias``, ``bias_k``,
``bias_v``) and columns ``h*d:(h+1)*d`` of ``out_proj.weight``. Pruners
score heads (:func:`compression_core.pruning.heads.head_scores`) and mask
them with :func:`head_mask`; speedup (:mod:`compression_core.speedup.attention`)
replaces a pruned layer by a :class:`PrunedMultiheadAttention`.

Mask format (parameter names of the layer, dotted for ``out_proj``)::

    {"encoder.layers.encoder_layer_0.self_attention": {
        "in_proj_weight": Tensor(3E, E), "in_proj_bias": Tensor(3E), "out_proj.weight": Tensor(E, E)}}

Example::

    >>> import torch, torch.nn as nn
    >>> mha = nn.MultiheadAttention(16, 4)
    >>> mask = head_mask(mha, torch.tensor([True, False, True, True]))
    >>> sorted(mask), int(mask["out_proj.weight"][0].sum())
    (['in_proj_bias', 'in_proj_weight', 'out_proj.weight'], 12)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

PROJECTIONS = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with fewer heads and/or narrower inputs and output: same math, same call.

    The layer reads queries of width ``qdim`` (default ``embed_dim``), keys
    of width ``kdim`` and values of width ``vdim`` (default ``qdim``),
    projects each to ``num_heads * head_dim`` features and writes
    ``embed_dim`` output channels. With ``qkv_packed`` (``nn.MultiheadAttention``'s
    layout when ``kdim == vdim == embed_dim``) the projections are one
    ``in_proj_weight`` ``(3 * num_heads * head_dim, qdim)``; otherwise
    ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``, named as in
    ``nn.MultiheadAttention`` so state_dict keys match. ``add_bias_kv``
    gives ``bias_k`` / ``bias_v`` of ``(1, 1, num_heads * head_dim)``.
    ``kept_heads`` are the indices of the kept heads in the original layer
    of ``original_num_heads`` heads (a 3-D ``attn_mask`` given per original
    head is cut to them).

    ``forward(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` returns
    ``(output, weights or None)`` like ``nn.MultiheadAttention``; the weights
    cover the kept heads.

    Example::

        >>> import torch
        >>> attn = PrunedMultiheadAttention(embed_dim=6, num_heads=2, head_dim=4, batch_first=True)
        >>> x = torch.randn(1, 5, 6)
        >>> attn(x, x, x)[0].shape
        torch.Size([1, 5, 6])
    """

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
        qdim: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        qkv_packed: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(
                f"PrunedMultiheadAttention needs at least one head of width >= 1, got {num_heads}x{head_dim}"
            )
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.qdim = embed_dim if qdim is None else qdim
        self.kdim = self.qdim if kdim is None else kdim
        self.vdim = self.qdim if vdim is None else vdim
        if qkv_packed and not self.qdim == self.kdim == self.vdim:
            raise ValueError(
                f"packed q/k/v projections need qdim == kdim == vdim, got {self.qdim}, {self.kdim}, {self.vdim}"
            )
        self._qkv_same_embed_dim = qkv_packed
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.batch_first = batch_first
        self.add_zero_attn = add_zero_attn
        self.kept_heads = list(range(num_heads)) if kept_heads is None else [int(h) for h in kept_heads]
        self.original_num_heads = int(original_num_heads) if original_num_heads is not None else num_heads
        inner = num_heads * head_dim
        if qkv_packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, self.qdim, **factory))
            for name in PROJECTIONS:
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            for name, width in zip(PROJECTIONS, (self.qdim, self.kdim, self.vdim)):
                self.register_parameter(name, nn.Parameter(torch.empty(inner, width, **factory)))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias if out_bias is None else out_bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, inner, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, inner, **factory))
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        else:
            self.bias_k = self.bias_v = None
        for weight in projection_weights(self).values():
            nn.init.xavier_uniform_(weight)

    def extra_repr(self) -> str:
        widths = ""
        if not self.qdim == self.kdim == self.vdim == self.embed_dim:
            widths = f"qdim={self.qdim}, kdim={self.kdim}, vdim={self.vdim}, "
        return (f"embed_dim={self.embed_dim}, {widths}num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"kept_heads={self.kept_heads} of {self.original_num_heads}, batch_first={self.batch_first}")

    @staticmethod
    def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    def _project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, same: bool):
        b = self.in_proj_bias
        bq, bk, bv = b.chunk(3) if b is not None else (None, None, None)
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if same:  # self-attention: one matmul, as nn.MultiheadAttention does
                return F.linear(query, w, b).chunk(3, dim=-1)
            wq, wk, wv = w.chunk(3)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

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

        q, k, v = self._project(query, key, value, same)  # (N, L or S, H * d)
        n = q.shape[0]
        extra_keys = 0  # key positions appended after the real ones (bias_k/bias_v, zero attention)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(n, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(n, 1, -1)], dim=1)
            extra_keys += 1
        heads, hd = self.num_heads, self.head_dim
        q = q.unflatten(-1, (heads, hd)).transpose(1, 2)  # (N, H, L, d)
        k = k.unflatten(-1, (heads, hd)).transpose(1, 2)
        v = v.unflatten(-1, (heads, hd)).transpose(1, 2)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(n, heads, 1, hd)], dim=2)
            v = torch.cat([v, v.new_zeros(n, heads, 1, hd)], dim=2)
            extra_keys += 1

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
                total = mask.shape[0]
                if total == n * self.original_num_heads and self.original_num_heads != heads:
                    index = torch.as_tensor(self.kept_heads, device=mask.device)
                    mask = mask.unflatten(0, (n, self.original_num_heads)).index_select(1, index)
                else:
                    mask = mask.unflatten(0, (n, heads))
            if extra_keys:
                mask = F.pad(mask, (0, extra_keys))
        if key_padding_mask is not None:
            kpm = self._additive(key_padding_mask, q.dtype)
            if extra_keys:
                kpm = F.pad(kpm, (0, extra_keys))
            kpm = kpm[:, None, None, :]
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


def is_attention(module: Any) -> bool:
    return isinstance(module, ATTENTION_TYPES)


def unsupported_reason(module: nn.Module) -> str | None:
    """Why this attention layer cannot be pruned (``None``: it can)."""
    if not is_attention(module):
        return "not an attention layer"
    if type(module).forward not in (nn.MultiheadAttention.forward, PrunedMultiheadAttention.forward):
        return "a MultiheadAttention subclass with its own forward"
    return None


def attention_dims(module: nn.Module) -> tuple[int, int, int]:
    """``(embed_dim, num_heads, head_dim)`` of an attention layer (``embed_dim``: its output width)."""
    return int(module.embed_dim), int(module.num_heads), int(module.head_dim)


def attention_sizes(module: nn.Module) -> dict[str, int]:
    """The sizes a pruning plan records for an attention layer."""
    e, h, d = attention_dims(module)
    return {"embed_dim": e, "num_heads": h, "head_dim": d, "kdim": int(module.kdim), "vdim": int(module.vdim)}


def input_dims(module: nn.Module) -> tuple[int, int, int]:
    """Widths of the query, key and value inputs an attention layer reads."""
    return int(getattr(module, "qdim", module.embed_dim)), int(module.kdim), int(module.vdim)


def projection_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The q/k/v projection weights by parameter name: ``in_proj_weight``, or the three separate ones."""
    if module._qkv_same_embed_dim:
        return {"in_proj_weight": module.in_proj_weight}
    return {name: getattr(module, name) for name in PROJECTIONS}


def qkv_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The q, k and v projection weights, each ``(num_heads * head_dim, input width)``."""
    if module._qkv_same_embed_dim:
        return tuple(module.in_proj_weight.chunk(3))
    return tuple(getattr(module, name) for name in PROJECTIONS)


def head_mask(module: nn.Module, kept: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masks keeping the heads where ``kept`` (bool, one per head) is true."""
    _, h, d = attention_dims(module)
    weights = projection_weights(module)
    rows = kept.to(next(iter(weights.values())).dtype).repeat_interleave(d)  # one entry per projected feature
    mask: dict[str, torch.Tensor] = {}
    for name, weight in weights.items():
        per_row = rows.repeat(weight.shape[0] // rows.numel())  # packed: q, k and v blocks
        mask[name] = per_row[:, None].expand_as(weight).clone()
    if module.in_proj_bias is not None:
        mask["in_proj_bias"] = rows.repeat(3)
    mask["out_proj.weight"] = rows[None, :].expand_as(module.out_proj.weight).clone()
    if module.bias_k is not None:
        mask["bias_k"] = rows.view(1, 1, -1).clone()
    if module.bias_v is not None:
        mask["bias_v"] = rows.view(1, 1, -1).clone()
    return mask


__all__ = [
    "ATTENTION_TYPES",
    "PROJECTIONS",
    "PrunedMultiheadAttention",
    "attention_dims",
    "attention_sizes",
    "head_mask",
    "input_dims",
    "is_attention",
    "projection_weights",
    "qkv_weights",
    "unsupported_reason",
]
