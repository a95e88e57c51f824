"""Pruning plans: the per-layer shapes of a pruned model, and their replay.

:attr:`~.speedup.ModelSpeedup.plan` records what speedup did (new sizes and
kept indices per layer, cut parameters, new int attributes);
:func:`apply_pruning_plan` replays it on a fresh instance of the original
architecture so that the pruned state_dict loads (example there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..dependency import SpeedupError
from ..dependency.literals import plain_sizes, sizes_like
from ..models.attention import ATTENTION_TYPES, attention_sizes
from .attention import cut_attention
from .replace import cut_module, cut_tensor, is_cuttable, module_references, module_sizes, set_attr_tensor

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
    round trip).
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
