"""Channel dependency analysis and groups: which channels of which layers are coupled.

Every tensor value in the traced graph gets a *channel layout*: the dimension
that holds its channels and, for every index along it, a channel id. Channel
ids live in a union-find; two ids in the same class must be kept or removed
together (the outputs of convolutions feeding one residual add, a conv's
output and the batch norm after it, ...).

- Conv / Linear / ConvTranspose outputs get fresh ids (they *produce*
  channels); their inputs are *consumed* (their in-channels are cut to match).
- Depthwise convolutions and normalisation layers pass channels through.
- Elementwise ops between tensors union the ids index by index; ``cat`` along
  the channel dim concatenates layouts; ``flatten`` repeats each id once per
  spatial position, so the following Linear loses whole blocks of inputs.
- Anything the analysis does not understand pins the channels it touches
  (they are never removed) and is reported in ``warnings``. The model's
  inputs and outputs are pinned too: speedup never changes their shapes.

Example::

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> analysis = analyze_channels(model, torch.zeros(1, 3, 8, 8))
    >>> analysis.modules["0"].kind, analysis.modules["1"].kind
    ('conv', 'norm')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch.fx as fx
import torch.nn as nn

from ..config import canonicalize_config_list, select_modules
from ..models.attention import ATTENTION_TYPES
from ..tensors import module_device, to_device
from .channels import ChannelAnalysis
from .graph import propagate_shapes, trace_model
from .literals import bind_literal_uses
from .rules import Propagator


def analyze_channels(model: nn.Module, dummy_input: Any, graph_module: fx.GraphModule | None = None) -> ChannelAnalysis:
    """Trace ``model``, run it on ``dummy_input`` and build its channel classes.

    ``graph_module`` may be a GraphModule already traced from ``model`` (its
    ``call_module`` targets must be the model's module names). ``dummy_input``
    is moved to the model's device (an evaluator's example batch is on the CPU).
    """
    dummy_input = to_device(dummy_input, module_device(model))
    gm = graph_module if graph_module is not None else trace_model(model)
    leaves = list(gm.meta.get("condense_leaves", []))
    info = propagate_shapes(gm, dummy_input)
    prop = Propagator(gm, info, leaves, root=model)
    prop.run()
    bind_literal_uses(prop)
    return ChannelAnalysis(
        graph_module=gm,
        uf=prop.uf,
        modules=prop.modules,
        attr_ties=prop.attr_ties,
        warnings=prop.warnings,
        info=info,
        output_info=prop.output_info,
        layouts=prop.lay,
        unknown_ops=prop.unknown_ops,
        uniform=prop.uniform,
        leaves=leaves,
        size_attrs=prop.size_attrs,
    )


# --------------------------------------------------------------------------
# dependency groups for pruners

DEPENDENCY_LAYER_TYPES: tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
    *ATTENTION_TYPES,  # each attention layer is its own group (its heads are internal)
)


def produced_ids(analysis: ChannelAnalysis, name: str) -> list[int] | None:
    """Ids of the channels layer ``name`` produces (``None`` if it produces none).

    An attention layer's output channels are produced by its ``out_proj``
    and listed under that name: the attention layer's own name stands for
    its heads.
    """
    state = analysis.modules.get(name)
    if state is not None:
        return state.out_ids if state.produces else None
    owner, _, child = name.rpartition(".")
    attention = analysis.modules.get(owner)
    if child == "out_proj" and attention is not None and attention.kind == "attention":
        return attention.out_ids
    return None


def producers(analysis: ChannelAnalysis) -> dict[str, list[int]]:
    """Every layer that produces channels, with their ids (attention layers as ``<name>.out_proj``)."""
    result: dict[str, list[int]] = {}
    for name, state in analysis.modules.items():
        if state.kind == "attention" and state.out_ids is not None:
            result[f"{name}.out_proj"] = state.out_ids
        elif state.produces and state.out_ids is not None:
            result[name] = state.out_ids
    return result


def channel_groups(analysis: ChannelAnalysis, names: Iterable[str]) -> dict[str, int]:
    """Group ids for ``names``: layers whose output channels are coupled share one."""
    keys: dict[Any, int] = {}
    groups: dict[str, int] = {}
    for name in names:
        state = analysis.modules.get(name)
        ids = produced_ids(analysis, name) if state is None else state.out_ids
        if ids is None or (state is not None and state.kind == "attention"):
            key: Any = ("alone", name)  # an attention layer loses heads, which nothing else shares
        else:
            key = tuple(analysis.uf.find(x) for x in ids)
        if key not in keys:
            keys[key] = len(keys)
        groups[name] = keys[key]
    return groups


def auto_set_dependency_group_ids(
    model: nn.Module, config_list: Iterable[Mapping[str, Any]], dummy_input: Any
) -> list[dict[str, Any]]:
    """Expand ``config_list`` to one entry per layer with a ``dependency_group_id``.

    NNI 3.0 semantics: every layer selected by ``config_list`` gets its own
    entry ``{"op_names": [name], ...other keys of its entry...,
    "dependency_group_id": gid}``; layers whose output channels are coupled
    (the convolutions feeding one residual add, a conv and the depthwise conv
    after it) share ``gid``, so a pruner masks the same channels in all of
    them and speedup can remove those channels. Layers the config does not
    select but that produce channels of such a group (the Linear layers
    writing into ConvNeXt's residual stream when only ``Conv2d`` is selected)
    join it with the same settings, unless an entry excludes them; an
    attention layer's output channels join as its ``out_proj`` (a ViT's
    residual stream: patch embedding, MLP outputs, attention outputs), while
    the attention layer itself, when selected, is its own group (its heads). Selected
    layers none of whose channels speedup could remove (the classifier that
    produces the model's output) are left out: masking them would only
    damage the output.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18()
        >>> cfg = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
        ...                                     torch.rand(1, 3, 64, 64))
        >>> by_name = {e["op_names"][0]: e["dependency_group_id"] for e in cfg}
        >>> by_name["conv1"] == by_name["layer1.0.conv2"] == by_name["layer1.1.conv2"]
        True
    """
    config_list = list(config_list)
    selected = select_modules(model, config_list, supported_types=DEPENDENCY_LAYER_TYPES)
    analysis = analyze_channels(model, dummy_input)
    order = [name for name, _ in model.named_modules()]
    names = [name for name in order if name in selected]
    coupled = _coupled_producers(model, analysis, names, config_list)
    for name, member in coupled.items():
        selected[name] = selected[member]
    # Masks on channels speedup can never remove (they reach the model's
    # output, or a shape constraint holds them) would only zero outputs.
    names = [name for name in order if name in selected and not _all_channels_kept(analysis, name)
             and not _grouped_transposed_passthrough(analysis, name)]
    groups = channel_groups(analysis, names)
    result = []
    for name in names:
        entry = {"op_names": [name]}
        entry.update({k: v for k, v in selected[name].items() if k != "dependency_group_id"})
        entry["dependency_group_id"] = groups[name]
        result.append(entry)
    return result


def _grouped_transposed_passthrough(analysis: ChannelAnalysis, name: str) -> bool:
    """Is ``name`` a depthwise or grouped ConvTranspose whose channels pass through (in == out)?

    It loses the channels of the layers feeding it, but cannot share their
    group: pruners index a ConvTranspose's output channels by its weight's
    columns, out/groups of them for a grouped one.
    """
    state = analysis.modules.get(name)
    return state is not None and state.kind in ("depthwise", "grouped") \
        and isinstance(state.module, nn.modules.conv._ConvTransposeNd)


def _all_channels_kept(analysis: ChannelAnalysis, name: str) -> bool:
    ids = produced_ids(analysis, name)
    if ids is None:
        return False
    uf = analysis.uf
    return all(uf.pinned[r] or uf.soft[r] for r in (uf.find(x) for x in ids))


def _coupled_producers(
    model: nn.Module, analysis: ChannelAnalysis, names: list[str], config_list: list
) -> dict[str, str]:
    """Layers the config does not select that produce channels of a selected
    layer's group, mapped to that selected layer.

    A channel is removed only if every layer producing it loses it, so
    "prune the Conv2d layers" of a ConvNeXt must also cut the Linear layers
    writing into the same residual stream. Layers a config entry excludes by
    name or with ``exclude: true`` stay out, and so do groups whose channels
    cannot be removed (e.g. they reach the model output)."""
    excluded: set[str] = set()
    for entry in canonicalize_config_list(config_list):
        excluded.update(entry.get("exclude_op_names", ()))
        if entry.get("exclude"):
            probe = {k: v for k, v in entry.items() if k != "exclude"}
            probe["sparse_ratio"] = 0.0
            excluded.update(select_modules(model, [probe], supported_types=DEPENDENCY_LAYER_TYPES, strict_names=False))

    def key_of(name: str):
        ids = produced_ids(analysis, name)
        return None if ids is None else tuple(analysis.uf.find(x) for x in ids)

    members: dict[Any, str] = {}
    for name in names:
        key = key_of(name)
        if key is not None and not any(analysis.uf.is_pinned(x) for x in key):
            members.setdefault(key, name)
    coupled: dict[str, str] = {}
    chosen = set(names)
    for name, module in model.named_modules():
        if name in chosen or name in excluded or not isinstance(module, DEPENDENCY_LAYER_TYPES):
            continue
        key = key_of(name)
        if key in members:
            coupled[name] = members[key]
    return coupled


__all__ = [
    "DEPENDENCY_LAYER_TYPES",
    "analyze_channels",
    "auto_set_dependency_group_ids",
    "channel_groups",
    "produced_ids",
    "producers",
]
