"""Pruning plans: the per-layer shapes of a pruned model, and their one replay.

:attr:`~.speedup.ModelSpeedup.plan` records what speedup did (new sizes and
kept indices per layer, cut parameters, new int attributes);
:func:`apply_pruning_plan` replays it on a fresh instance of the original
architecture so that the pruned state_dict loads. Weights pruned elsewhere
come with their shapes only: :func:`plan_from_state_dict` writes the plan
that gives each layer the shapes of its weights, for the same replay.

Example::

    >>> import torch, torch.nn as nn
    >>> pruned = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3))
    >>> fresh = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 3))
    >>> plan = plan_from_state_dict(fresh, pruned.state_dict())
    >>> sorted(plan), plan["0"]["out_channels"]
    (['0', '1', '2'], 4)
    >>> apply_pruning_plan(fresh, plan).load_state_dict(pruned.state_dict())
    <All keys matched successfully>
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..dependency import SpeedupError
from ..dependency.literals import plain_sizes, sizes_like
from ..models.attention import ATTENTION_TYPES, attention_sizes, input_dims, is_attention, projection_weights
from .attention import cut_attention
from .replace import cut_module, cut_tensor, is_cuttable, module_references, module_sizes, set_attr_tensor

Plan = dict[str, dict[str, Any]]


def _owner_and_attr(model: nn.Module, target: str) -> tuple[nn.Module, str]:
    owner_name, _, attr = target.rpartition(".")
    try:
        return (model.get_submodule(owner_name) if owner_name else model), attr
    except AttributeError as exc:
        raise SpeedupError(f"{target!r} names no module of the model") from exc


def resolve_attr(model: nn.Module, target: str) -> tuple[nn.Module, str]:
    owner, attr = _owner_and_attr(model, target)
    if not isinstance(getattr(owner, attr, None), torch.Tensor):
        raise SpeedupError(f"{target!r} names no parameter or buffer of the model")
    return owner, attr


def _resolve_size_attr(model: nn.Module, target: str) -> tuple[nn.Module, str]:
    owner, attr = _owner_and_attr(model, target)
    if plain_sizes(getattr(owner, attr, None)) is None:
        raise SpeedupError(f"{target!r} names no int (or int list) attribute of the model")
    return owner, attr


def swap_in(
    model: nn.Module,
    replacements: dict[str, nn.Module],
    tensors: dict[str, torch.Tensor],
    sizes: Mapping[str, Any] | None = None,
):
    """Put new modules / tensors / int attribute values into ``model``; returns a function that undoes it."""
    refs = module_references(model)
    done_modules: list[tuple[nn.Module, str, nn.Module]] = []
    done_tensors: list[tuple[nn.Module, str, Any]] = []
    done_sizes: list[tuple[nn.Module, str, Any]] = []

    def undo() -> None:
        for parent, attr, old in reversed(done_modules):
            parent._modules[attr] = old
        for owner, attr, old in reversed(done_tensors):
            set_attr_tensor(owner, attr, old)
        for owner, attr, old in reversed(done_sizes):
            setattr(owner, attr, old)

    try:
        resolved = []
        for name, new in replacements.items():
            old = model.get_submodule(name)
            resolved.append((old, new))
        for old, new in resolved:
            for parent, attr in refs.get(id(old), []):
                done_modules.append((parent, attr, old))
                setattr(parent, attr, new)
        for target, value in tensors.items():
            owner, attr = resolve_attr(model, target)
            done_tensors.append((owner, attr, getattr(owner, attr)))
            set_attr_tensor(owner, attr, value)
        for target, value in (sizes or {}).items():
            owner, attr = _resolve_size_attr(model, target)
            done_sizes.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, value)
    except Exception:
        undo()
        raise
    return undo


def _plan_attention(name: str, module: nn.Module, entry: Mapping[str, Any]) -> nn.Module:
    if type(module).__name__ != entry["type"]:
        raise SpeedupError(
            f"pruning plan entry {name!r} is a {entry['type']}, but the model's {name!r} is a {type(module).__name__}"
        )
    before = attention_sizes(module)
    wanted = dict(entry.get("before", {}))
    if {k: before.get(k) for k in wanted} != wanted:
        raise SpeedupError(f"pruning plan entry {name!r} was made for {wanted}, the model's layer has {before}")
    def indices(key: str) -> list[int] | None:
        return [int(i) for i in entry[key]] if entry.get(key) is not None else None

    new = cut_attention(module, indices("kept_heads"), kept_out=indices("kept_out"), kept_in=indices("kept_in"),
                        kept_key=indices("kept_key"), kept_value=indices("kept_value"))
    after = attention_sizes(new)
    asked = {k: entry[k] for k in after if k in entry}
    if {k: after[k] for k in asked} != asked:
        raise SpeedupError(f"pruning plan entry {name!r} asks for {asked}, its kept heads and channels give {after}")
    return new


def apply_pruning_plan(model: nn.Module, plan: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Give a fresh instance of the original architecture the pruned shapes.

    ``plan`` is :attr:`~.speedup.ModelSpeedup.plan` (possibly after a JSON
    round trip) or a plan from :func:`plan_from_state_dict`.
    Every layer it names is replaced by a smaller module of the same class
    (an attention layer by a ``PrunedMultiheadAttention``; its weights are the
    kept slices of the fresh ones, to be overwritten by ``load_state_dict``),
    parameters and buffers it names are cut, and int attributes it names
    (``"type": "int"``) take their new values, so the pruned model's
    state_dict loads with ``strict=True`` and its forward runs. Returns
    ``model`` (modified in place); on a plan that does not fit the model a
    :class:`SpeedupError` is raised and the model is unchanged.

    Example::

        >>> import json, torch, torchvision
        >>> from compression_core.speedup import ModelSpeedup
        >>> pruned = torchvision.models.resnet18()
        >>> w = pruned.layer1[0].conv1.weight
        >>> keep = (torch.arange(64) < 40).float().view(-1, 1, 1, 1)
        >>> s = ModelSpeedup(pruned, torch.rand(1, 3, 64, 64), {"layer1.0.conv1": {"weight": keep.expand_as(w)}})
        >>> _ = s.speedup_model()
        >>> fresh = apply_pruning_plan(torchvision.models.resnet18(), json.loads(json.dumps(s.plan)))
        >>> fresh.load_state_dict(pruned.state_dict(), strict=True)
        <All keys matched successfully>
    """
    if not isinstance(plan, Mapping):
        raise SpeedupError(f"a pruning plan must be a dict {{module_name: {{...}}}}, got {type(plan).__name__}")
    replacements: dict[str, nn.Module] = {}
    tensors: dict[str, torch.Tensor] = {}
    sizes: dict[str, Any] = {}
    with torch.no_grad():
        for name, entry in plan.items():
            if not isinstance(entry, Mapping) or "type" not in entry:
                raise SpeedupError(f"pruning plan entry {name!r} must be a dict with a 'type'")
            kind = entry["type"]
            if kind in ("int", "list", "tuple"):
                owner, attr = _resolve_size_attr(model, name)
                if plain_sizes(getattr(owner, attr)) != entry["before"]["value"]:
                    raise SpeedupError(
                        f"pruning plan entry {name!r} expects {entry['before']['value']}, the model has "
                        f"{getattr(owner, attr)}"
                    )
                sizes[name] = sizes_like(getattr(owner, attr), entry["value"])
                continue
            if kind in ("Parameter", "Buffer"):
                owner, attr = resolve_attr(model, name)
                old = getattr(owner, attr)
                if list(old.shape) != list(entry["before"]["shape"]):
                    raise SpeedupError(
                        f"pruning plan entry {name!r} expects shape {entry['before']['shape']}, "
                        f"the model has {list(old.shape)}"
                    )
                tensors[name] = cut_tensor(old, int(entry["dim"]), [int(i) for i in entry["kept"]])
                continue
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise SpeedupError(f"pruning plan names module {name!r}, which the model does not have") from None
            if isinstance(module, ATTENTION_TYPES) and "kept_heads" in entry:
                replacements[name] = _plan_attention(name, module, entry)
                continue
            if type(module).__name__ != kind or not is_cuttable(module):
                raise SpeedupError(
                    f"pruning plan entry {name!r} is a {kind}, but the model's {name!r} is a {type(module).__name__}"
                )
            before = module_sizes(module)
            if {k: before.get(k) for k in entry.get("before", {})} != dict(entry.get("before", {})):
                raise SpeedupError(
                    f"pruning plan entry {name!r} was made for {dict(entry['before'])}, the model's layer has {before}"
                )
            kept_out = [int(i) for i in entry["kept_out"]] if entry.get("kept_out") is not None else None
            kept_in = [int(i) for i in entry["kept_in"]] if entry.get("kept_in") is not None else None
            new = cut_module(module, kept_out, kept_in)
            after = module_sizes(new)
            wanted = {k: entry[k] for k in after if k in entry}
            if {k: after[k] for k in wanted} != wanted:
                raise SpeedupError(f"pruning plan entry {name!r} asks for {wanted}, its kept indices give {after}")
            replacements[name] = new
        swap_in(model, replacements, tensors, sizes)
    return model


# --------------------------------------------------------------------------
# plans from the shapes of pruned weights


def plan_from_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], names: Iterable[str] | None = None
) -> Plan:
    """A pruning plan giving ``model``'s layers the (smaller) shapes of their weights in ``state_dict``.

    For weights pruned elsewhere, which say how many channels a layer kept
    but not which: every layer keeps its first channels (the first heads of
    an attention layer, at their width), to be overwritten when the
    state_dict is loaded. Only the layers named in ``names`` (every layer
    when ``None``) may change; Conv1d/2d/3d (plain, grouped: the first
    channels of every group, depthwise), Linear, BatchNorm, LayerNorm over
    one dim and attention layers are understood. A layer whose weights have
    its own shapes, or shapes it cannot be cut to, is left out of the plan
    (loading the state_dict then names the mismatch). Replay the plan with
    :func:`apply_pruning_plan`.

    Example::

        >>> import torch.nn as nn
        >>> plan = plan_from_state_dict(nn.Sequential(nn.Linear(4, 8)), nn.Sequential(nn.Linear(4, 3)).state_dict())
        >>> plan["0"]["out_features"], plan["0"]["kept_out"]
        (3, [0, 1, 2])
    """
    allowed = None if names is None else set(names)
    plan: Plan = {}
    for name, module in model.named_modules():
        if not name or (allowed is not None and name not in allowed):
            continue
        if any(name.startswith(done + ".") for done in plan):
            continue  # a child of a planned layer (an attention layer's out_proj): cut with it
        entry = _entry_for(module, name + ".", state_dict)
        if entry is not None:
            plan[name] = entry
    return plan


def _first(count: int, total: int, groups: int = 1) -> list[int] | None:
    """The first ``count / groups`` indices of each of ``groups`` equal slices of ``total`` (None: none fits)."""
    if count > total or count % groups or total % groups:
        return None
    per, kept = total // groups, count // groups
    return [g * per + j for g in range(groups) for j in range(kept)]


def _entry(module: nn.Module, kept_out: list[int] | None, kept_in: list[int] | None, **after: Any) -> dict:
    return {"type": type(module).__name__, **after, "kept_out": kept_out, "kept_in": kept_in,
            "before": module_sizes(module)}


def _entry_for(module: nn.Module, prefix: str, state_dict: Mapping[str, torch.Tensor]) -> dict | None:
    weight = state_dict.get(prefix + "weight")
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if weight is None or weight.shape == module.weight.shape or weight.shape[2:] != module.weight.shape[2:]:
            return None
        out_channels, per_group = int(weight.shape[0]), int(weight.shape[1])
        groups = module.groups
        if groups > 1 and groups == module.in_channels == module.out_channels and per_group == 1:  # depthwise
            kept = _first(out_channels, module.out_channels)
            return None if kept is None else _entry(module, kept, None, in_channels=len(kept),
                                                    out_channels=len(kept), groups=len(kept))
        kept_out = _first(out_channels, module.out_channels, groups)
        kept_in = _first(per_group * groups, module.in_channels, groups)
        if kept_out is None or kept_in is None:
            return None
        return _entry(module, kept_out, kept_in, in_channels=len(kept_in), out_channels=len(kept_out), groups=groups)
    if isinstance(module, nn.Linear):
        if weight is None or weight.dim() != 2 or weight.shape == module.weight.shape:
            return None
        kept_out, kept_in = _first(int(weight.shape[0]), module.out_features), _first(int(weight.shape[1]),
                                                                                     module.in_features)
        if kept_out is None or kept_in is None:
            return None
        return _entry(module, kept_out, kept_in, in_features=len(kept_in), out_features=len(kept_out))
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        ref = weight if weight is not None else state_dict.get(prefix + "running_mean")
        if ref is None or ref.dim() != 1 or ref.shape[0] == module.num_features:
            return None
        kept = _first(int(ref.shape[0]), module.num_features)
        return None if kept is None else _entry(module, kept, None, num_features=len(kept))
    if isinstance(module, nn.LayerNorm):
        if weight is None or tuple(weight.shape) == module.normalized_shape or weight.dim() != 1 \
                or len(module.normalized_shape) != 1:
            return None
        kept = _first(int(weight.shape[0]), module.normalized_shape[0])
        return None if kept is None else _entry(module, kept, None, normalized_shape=[len(kept)])
    if is_attention(module):
        return _attention_entry(module, prefix, state_dict)
    return None


def _attention_entry(module: nn.Module, prefix: str, state_dict: Mapping[str, torch.Tensor]) -> dict | None:
    """The first heads (speedup keeps the head width) and the first channels of each side."""
    names = list(projection_weights(module))
    found = [state_dict.get(prefix + name) for name in names + ["out_proj.weight"]]
    if any(w is None or w.dim() != 2 for w in found):
        return None
    current = [getattr(module, name).shape for name in names] + [module.out_proj.weight.shape]
    if [w.shape for w in found] == current:
        return None
    sizes = attention_sizes(module)
    head_dim, out_weight = sizes["head_dim"], found[-1]
    inner = int(out_weight.shape[1])
    if inner % head_dim:
        return None
    packed = module._qkv_same_embed_dim
    widths = [int(w.shape[1]) for w in found[:-1]]
    qdim, kdim, vdim = widths * 3 if packed else widths
    old_qdim, old_kdim, old_vdim = input_dims(module)
    kept = {
        "kept_heads": _first(inner // head_dim, sizes["num_heads"]),
        "kept_out": _first(int(out_weight.shape[0]), sizes["embed_dim"]),
        "kept_in": _first(qdim, old_qdim),
    }
    if not packed:
        kept.update(kept_key=_first(kdim, old_kdim), kept_value=_first(vdim, old_vdim))
    if any(v is None for v in kept.values()):
        return None
    return {"type": type(module).__name__, "embed_dim": len(kept["kept_out"]), "num_heads": len(kept["kept_heads"]),
            "head_dim": head_dim, "kdim": kdim, "vdim": vdim, **kept,
            "before": {"embed_dim": sizes["embed_dim"], "num_heads": sizes["num_heads"]}}
