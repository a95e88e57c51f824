"""Head scores: how much each attention head weighs, for the norm pruners.

The geometry (which rows and columns a head owns, the mask format) is in
:mod:`compression_core.models.attention`.

Example::

    >>> import torch.nn as nn
    >>> head_scores(nn.MultiheadAttention(16, 4)).shape
    torch.Size([4])
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..models.attention import attention_dims, qkv_weights


def head_scores(module: nn.Module, p: float = 1.0) -> torch.Tensor:
    """Per head: the p-norm of its q, k, v projection rows and its ``out_proj`` columns."""
    _, h, d = attention_dims(module)
    rows = [w.detach().reshape(h, -1) for w in qkv_weights(module)]
    out = module.out_proj.weight.detach()
    cols = out.reshape(out.shape[0], h, d).transpose(0, 1).reshape(h, -1)
    return torch.cat([*rows, cols], dim=1).float().norm(p=p, dim=1)


__all__ = ["head_scores"]
