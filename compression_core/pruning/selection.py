"""From importance scores to masks: granularity, dependency groups, global ranking.

Every scored pruner (L1/L2, FPGM, activation, Taylor, Slim, ...) only says
how important each *block* of a layer's weight is; this module decides what
goes, the same way for all of them (Torch-Pruning keeps importance and
selection apart for the same reason):

- **Granularity** fixes the block: ``"out_channel"`` (a filter / a row: one
  score per output channel), ``"in_channel"`` (one per input channel),
  ``"fine_grained"`` (one per weight) or a block shape such as ``[4, 4]``
  (``-1`` = the whole dimension; ``[1, -1, -1, -1]`` is out_channel on a
  Conv2d).
- **Normal mode**: each layer loses ``sparse_ratio`` of its blocks.
- **Dependency-aware mode**: layers sharing a ``dependency_group_id`` are
  scored together (their scores summed) and lose the same channels, so
  speedup can remove them; a grouped convolution among them keeps the same
  count in every convolution group.
- **Global mode**: layers sharing a ``global_group_id`` are ranked together:
  their blocks' scores, divided by the weights per block so large and small
  blocks compare fairly, compete for one budget (``sparse_ratio`` of all
  their weights), each layer capped by ``max_sparse_ratio`` and floored by
  ``min_sparse_ratio``.

Example::

    >>> import torch, torch.nn as nn
    >>> conv = nn.Conv2d(2, 4, 1)
    >>> scores = {"c": torch.tensor([4.0, 1.0, 3.0, 2.0])}
    >>> kept = select_blocks(scores, {"c": {"sparse_ratio": 0.5}}, {"c": conv})
    >>> kept["c"].tolist()
    [True, False, True, False]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def out_channel_dim(module: nn.Module) -> int:
    """The weight dimension that indexes output channels (1 for ConvTranspose, else 0)."""
    return 1 if isinstance(module, _CONV_TRANSPOSE) else 0


def in_channel_dim(module: nn.Module) -> int:
    """The weight dimension that indexes input channels."""
    return 0 if isinstance(module, _CONV_TRANSPOSE) else 1


def block_shape(module: nn.Module, granularity: Any, weight_shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """The block (elements per score, per weight dim) a granularity means for ``module``'s weight."""
    shape = tuple(weight_shape if weight_shape is not None else module.weight.shape)
    if granularity in (None, "default", "out_channel", "in_channel"):
        keep_dim = in_channel_dim(module) if granularity == "in_channel" else out_channel_dim(module)
        return tuple(1 if d == keep_dim else size for d, size in enumerate(shape))
    if granularity == "fine_grained":
        return (1,) * len(shape)
    if isinstance(granularity, (list, tuple)):
        if len(granularity) > len(shape) or not all(isinstance(b, int) and (b == -1 or b >= 1) for b in granularity):
            raise ValueError(f"granularity {list(granularity)} is not a block shape for a weight of shape {list(shape)}")
        # A shorter block shape covers the leading dims; the rest are whole.
        padded = list(granularity) + [-1] * (len(shape) - len(granularity))
        block = tuple(size if b == -1 else b for b, size in zip(padded, shape))
        bad = [d for d, (b, size) in enumerate(zip(block, shape)) if size % b]
        if bad:
            raise ValueError(f"block {list(block)} does not divide weight shape {list(shape)} (dim {bad[0]})")
        return block
    raise ValueError(f"unknown granularity {granularity!r}")


def block_grid(weight: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """``weight`` viewed as ``(*grid, *block)``: one leading index per block."""
    split = []
    for size, b in zip(weight.shape, block):
        split += [size // b, b]
    viewed = weight.reshape(split)
    n = weight.dim()
    order = [2 * d for d in range(n)] + [2 * d + 1 for d in range(n)]
    return viewed.permute(order)


def block_norms(weight: torch.Tensor, block: Sequence[int], p: float = 1.0) -> torch.Tensor:
    """The ``p``-norm of every block (shape: the block grid)."""
    grid = block_grid(weight.detach().float(), block)
    n = weight.dim()
    return grid.flatten(n).norm(p=p, dim=n)


def expand_blocks(kept: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """A per-block boolean grid blown up to the weight's shape."""
    out = kept
    for dim, b in enumerate(block):
        if b > 1:
            out = out.repeat_interleave(b, dim=dim)
    return out


def layer_mask(module: nn.Module, kept: torch.Tensor, block: Sequence[int], param: str = "weight"
               ) -> dict[str, torch.Tensor]:
    """NNI mask dict for one layer: the weight's mask, and the bias's when whole output channels go."""
    weight = getattr(module, param)
    mask = {param: expand_blocks(kept, block).to(weight.dtype).reshape(weight.shape).clone()}
    bias = getattr(module, "bias", None)
    out_dim = out_channel_dim(module)
    whole_rows = all(b == size for d, (b, size) in enumerate(zip(block, weight.shape)) if d != out_dim)
    if param == "weight" and isinstance(bias, torch.Tensor) and whole_rows and block[out_dim] == 1:
        per_column = kept.reshape(-1)
        # a grouped ConvTranspose's weight has out/groups columns, column j feeding output j of every group
        mask["bias"] = per_column.repeat(bias.numel() // per_column.numel()).to(bias.dtype).clone()
    return mask


def kept_count(total: int, sparse_ratio: float) -> int:
    """Blocks kept when ``sparse_ratio`` of ``total`` go: NNI rounds the pruned count down, never removes all."""
    return max(total - int(total * sparse_ratio), 1)


def keep_largest(scores: torch.Tensor, keep: int, groups: int = 1) -> torch.Tensor:
    """Boolean mask over ``scores.flatten()`` keeping the ``keep`` largest, ``keep / groups`` in each equal slice."""
    flat = scores.reshape(-1).float()
    if groups > 1 and flat.numel() % groups == 0 and keep % groups == 0:
        per_group = flat.view(groups, -1)
        order = per_group.argsort(dim=1, descending=True, stable=True)[:, : keep // groups]
        kept = torch.zeros_like(per_group, dtype=torch.bool)
        kept.scatter_(1, order, True)
        return kept.view(scores.shape)
    order = flat.argsort(descending=True, stable=True)[:keep]
    kept = torch.zeros_like(flat, dtype=torch.bool)
    kept[order] = True
    return kept.view(scores.shape)


def conv_channel_groups(modules: Sequence[nn.Module]) -> int:
    """Least common multiple of the group counts of the grouped (not depthwise) convolutions in ``modules``."""
    groups = 1
    for m in modules:
        g = getattr(m, "groups", 1)
        if isinstance(m, nn.modules.conv._ConvNd) and g > 1 and not (g == m.in_channels == m.out_channels):
            groups = math.lcm(groups, g)
    return groups


def _unit_key(name: str, settings: Mapping[str, Any]) -> tuple:
    group = settings.get("dependency_group_id")
    return ("group", group) if group is not None else ("layer", name)


def select_blocks(
    scores: Mapping[str, torch.Tensor],
    targets: Mapping[str, Mapping[str, Any]],
    modules: Mapping[str, nn.Module],
    block_sizes: Mapping[str, int] | None = None,
    channel_groups: bool = True,
) -> dict[str, torch.Tensor]:
    """Boolean "kept" grid per layer from its block scores (higher = more important).

    ``targets[name]`` holds the layer's config settings (``sparse_ratio``,
    ``dependency_group_id``, ``global_group_id``, ``max_sparse_ratio``,
    ``min_sparse_ratio``); ``block_sizes[name]`` the weights per block
    (global mode weighs blocks by it; default 1). With ``channel_groups``
    (channel granularities), a unit containing a grouped convolution keeps
    the same count in every convolution group.
    """
    units: dict[tuple, list[str]] = defaultdict(list)
    for name in scores:
        units[_unit_key(name, targets[name])].append(name)
    unit_scores: dict[tuple, torch.Tensor] = {}
    for key, members in units.items():
        counts = {scores[n].numel() for n in members}
        if len(counts) != 1:
            raise ValueError(
                f"layers {', '.join(members)} share a dependency_group_id but have different numbers "
                f"of channels ({sorted(counts)})"
            )
        # Flat: a Conv2d's (C, 1, 1, 1) grid and a Linear's (C, 1) grid index the same channels.
        unit_scores[key] = sum(scores[n].float().reshape(-1) for n in members)

    sizes = block_sizes or {}
    unit_block = {key: sum(sizes.get(n, 1) for n in members) for key, members in units.items()}
    pruned = {key: int(unit_scores[key].numel() * max(targets[n]["sparse_ratio"] for n in members))
              for key, members in units.items()}

    global_groups: dict[Any, list[tuple]] = defaultdict(list)
    for key, members in units.items():
        gid = targets[members[0]].get("global_group_id")
        if gid is not None:
            global_groups[gid].append(key)
    for gid, keys in global_groups.items():
        pruned.update(_global_allocation(keys, units, unit_scores, unit_block, targets))

    kept: dict[str, torch.Tensor] = {}
    for key, members in units.items():
        total = unit_scores[key].numel()
        keep = max(total - pruned[key], 1)
        groups = conv_channel_groups([modules[n] for n in members]) if channel_groups else 1
        if groups > 1 and total % groups == 0:
            # Round to a multiple of the groups, pruning no more than asked.
            keep = max(groups, math.ceil(keep / groups) * groups)
        grid = keep_largest(unit_scores[key], keep, groups)
        for name in members:
            kept[name] = grid.reshape(scores[name].shape)
    return kept


def _global_allocation(keys: list[tuple], units, unit_scores, unit_block, targets) -> dict[tuple, int]:
    """How many blocks each unit of one global group loses (see the module docstring)."""
    first = targets[units[keys[0]][0]]
    ratio = first["sparse_ratio"]
    total_weights = sum(unit_scores[k].numel() * unit_block[k] for k in keys)
    budget = ratio * total_weights
    forced: dict[tuple, int] = {}
    candidates_score, candidates_unit, candidates_size = [], [], []
    for index, key in enumerate(keys):
        settings = targets[units[key][0]]
        n = unit_scores[key].numel()
        cap = int(n * settings.get("max_sparse_ratio", 1.0))
        cap = min(cap, n - 1)
        floor = min(int(n * settings.get("min_sparse_ratio", 0.0)), cap)
        forced[key] = floor
        budget -= floor * unit_block[key]
        normalized = unit_scores[key].reshape(-1) / unit_block[key]
        order = normalized.argsort(stable=True)
        eligible = normalized[order[floor:cap]]
        candidates_score.append(eligible)
        # On the scores' device (a GPU job's): they are indexed by the scores' order below.
        candidates_unit.append(torch.full((len(eligible),), index, dtype=torch.long, device=eligible.device))
        candidates_size.append(torch.full((len(eligible),), unit_block[key], dtype=torch.float64,
                                          device=eligible.device))
    result = dict(forced)
    if budget <= 0 or not candidates_score:
        return result
    score = torch.cat(candidates_score)
    unit = torch.cat(candidates_unit)
    size = torch.cat(candidates_size)
    order = score.argsort(stable=True)
    cumulative = size[order].cumsum(0)
    take = int((cumulative <= budget + 1e-9).sum())
    counts = torch.bincount(unit[order[:take]], minlength=len(keys))
    for index, key in enumerate(keys):
        result[key] += int(counts[index])
    return result
