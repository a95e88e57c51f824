"""How close a compressed model's outputs are to the original's.

Example::

    >>> import torch
    >>> ref = torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    >>> out = output_fidelity(ref, ref + 0.1)
    >>> out["top1_agreement"], round(out["max_abs_diff"], 3)
    (1.0, 0.1)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def output_fidelity(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, Any]:
    """Compare two output tensors of the same shape.

    Returns ``{"cosine_similarity"`` (mean over samples of the cosine
    similarity of each flattened row), ``"max_abs_diff"``, ``"mean_abs_diff"``,
    ``"top1_agreement"`` (fraction of rows with the same argmax, for 2-D
    outputs; ``None`` otherwise)``}``.
    """
    if not isinstance(reference, torch.Tensor) or not isinstance(candidate, torch.Tensor):
        raise ValueError("output_fidelity compares two tensors")
    if reference.shape != candidate.shape:
        raise ValueError(f"outputs differ in shape: {tuple(reference.shape)} vs {tuple(candidate.shape)}")
    ref = reference.detach().to(torch.float64).cpu()
    cand = candidate.detach().to(torch.float64).cpu()
    if ref.numel() == 0:
        return {"cosine_similarity": None, "max_abs_diff": 0.0, "mean_abs_diff": 0.0, "top1_agreement": None}
    rows_ref = ref.reshape(ref.shape[0], -1) if ref.dim() > 1 else ref.reshape(1, -1)
    rows_cand = cand.reshape(rows_ref.shape)
    cosine = F.cosine_similarity(rows_ref, rows_cand, dim=1, eps=1e-12)
    both_zero = (rows_ref.abs().sum(dim=1) == 0) & (rows_cand.abs().sum(dim=1) == 0)
    cosine = torch.where(both_zero, torch.ones_like(cosine), cosine)
    diff = (ref - cand).abs()
    top1 = None
    if ref.dim() == 2:
        top1 = float((ref.argmax(dim=1) == cand.argmax(dim=1)).to(torch.float64).mean())
    return {
        "cosine_similarity": float(cosine.mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": top1,
    }
