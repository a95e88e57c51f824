"""Speedup: turn pruning masks into a physically smaller model.

Typical use (NNI 3.0 style)::

    from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

    config_list = auto_set_dependency_group_ids(model, config_list, dummy_input)
    ...                                   # prune, get masks, unwrap the pruner
    ModelSpeedup(model, dummy_input, masks).speedup_model()

What it handles: Conv1d/2d/3d and ConvTranspose1d/2d/3d (plain, depthwise
and grouped: grouped ones keep the same channel count in every group),
Linear, MultiheadAttention (heads and embedding channels), BatchNorm,
InstanceNorm, LayerNorm (including torchvision's channels-first LayerNorm2d),
GroupNorm, PReLU, Embedding; residual add/sub/mul, concat, ``chunk`` /
``split`` / ``tensor_split`` on the channel dim (below), channel shuffle
(``view(N, g, C/g, ...)`` + transpose), flatten/reshape into a Linear,
permutes, reductions and the usual activations; parameters and buffers
indexed by channels (a class token concatenated to the tokens, a positional
embedding added to them) are cut with them. A reshape to a fixed channel
count, ``x.reshape(n, self.hidden_dim, -1)`` (traced as a literal), follows
the kept channels when the count comes from an attribute of the calling
module (found the same way as split sizes, below): speedup sets it to the
kept count and records it in the plan. A split on the channel dim
gives each piece the kept channels of its slice: ``chunk(n)``,
``tensor_split(x, n)`` and ``split(x, s)`` keep equal pieces (``s`` becomes
the kept count per piece), ``split(x, self.sizes)`` and ``tensor_split(x,
self.indices)`` take uneven pieces; sizes that change must come from a plain
attribute of the calling module, which speedup finds by tracing again with a
probe value (:mod:`compression_core.dependency.literals`), sets and records in the plan; sizes written
in ``forward`` keep their channels, with a warning that says so. Channels
that reach an op it does not understand are kept and reported (``ModelSpeedup.warnings``,
:func:`prunability_report`); ``ModelSpeedup(..., strict=True)`` makes that an
error naming the op and node. A submodule torch.fx cannot trace is kept whole
as one opaque call. ``nn.MultiheadAttention`` (every option: ``kdim`` /
``vdim``, ``add_bias_kv``, ``add_zero_attn``, batch_first or not, with or
without bias) loses whole heads when selected with ``op_types:
["MultiheadAttention"]``, and its input and output channels with the groups
they belong to: selecting ``Conv2d`` (or the Linear layers writing into the
residual stream) of a ViT prunes the embedding width, the attention layers'
``out_proj`` joining that dependency group. Speedup replaces it by an
:class:`~compression_core.models.attention.PrunedMultiheadAttention` (same call and return
convention, same state_dict keys). The MLP blocks around it lose hidden
channels as usual. On torchvision's ``vit_b_16`` at 50 %: width 384, 6 of 12
heads, MLP hidden 1536. LayerNorm over pruned channels renormalises over the
kept ones, so such a model is close to, not exactly, the masked one.

Exactness: :func:`masked_reference` builds the model speedup must reproduce
(masks applied, every removed channel zero through its whole group).

Limit, ShuffleNetV2's main path: speedup keeps the channels of every pruned
tensor in their original order and removes channel classes whole. After
``channel_shuffle`` (``out[2j + h] = cat[h * C/2 + j]``) the pruned output is
the kept part of the original only if both halves keep matching channels, so
speedup ties channel j of both halves into one class. The next block's
``chunk`` passes ``out[:C/2]``, where those classes sit at positions 2j and
2j+1, to its own shuffle, which ties them to that block's branch outputs 2j
and 2j+1: in block k of a stage the branch outputs are tied in runs of
2^(k-1) to the first block's channels, and the last blocks of a long stage
(``stage3.4`` to ``stage3.7`` of ``shufflenet_v2_x0_5``) have one to three
classes, none of which can go without emptying the layer. Pruning every branch
independently and exactly needs pruned channels that leave the shuffle in
another order than the original (each branch's kept outputs reordered within
the runs of channels that one later block consumes, with equal kept counts
per run) and layers that read their inputs in that order; this engine keeps
no channel order per tensor, and one dependency group id per layer cannot
describe those runs to a pruner. ``shufflenet_v2_x0_5`` keeps about half of
its parameters at 50 %.

Extension point: say how a custom module, function or Tensor method
(``torch.Tensor.roll``) treats channels, and how to resize the module::

    from compression_core.speedup import register_channel_rule, register_module_cutter
    from compression_core.speedup.replace import shallow_copy, cut_tensor

    def cut_scale(module, kept_out, kept_in, mask):   # returns a new module
        new = shallow_copy(module)
        new.gain = cut_tensor(module.gain, 0, kept_out)
        return new

    register_channel_rule(MyScale, "channelwise")   # or "passthrough", "producer", "pin", a callable
    register_module_cutter(MyScale, cut_scale)

Weights pruned elsewhere (only their shapes known) take the same road:
:func:`plan_from_state_dict` writes the plan that gives each layer the shapes
of its weights, and :func:`apply_pruning_plan` replays it.

Modules: ``speedup`` (``ModelSpeedup``), ``plan`` (``apply_pruning_plan``,
``plan_from_state_dict``), ``replace`` (building smaller layers, cutter
registry), ``attention`` (cutting attention layers: ``cut_attention``,
``speedup_attention``), ``reference`` (``masked_reference``), ``report``
(``prunability_report``). Tracing, the channel rules and the dependency
groups are in :mod:`compression_core.dependency` (``graph``, ``channels``,
``rule_table``, ``builtin_rules``, ``rules``, ``shape_rules``,
``layer_rules``, ``splits``, ``literals``, ``attention``, ``groups``); the
heads' geometry and ``PrunedMultiheadAttention`` in
:mod:`compression_core.models.attention`, head scores in
:mod:`compression_core.pruning.heads`.
"""

from ..dependency import (
    ChannelAnalysis,
    SpeedupError,
    analyze_channels,
    auto_set_dependency_group_ids,
    register_channel_rule,
)
from ..models.attention import PrunedMultiheadAttention
from .plan import apply_pruning_plan, plan_from_state_dict
from .reference import MaskedReference, masked_reference
from .replace import register_module_cutter
from .report import prunability_report
from .speedup import ModelSpeedup

__all__ = [
    "ChannelAnalysis",
    "MaskedReference",
    "ModelSpeedup",
    "PrunedMultiheadAttention",
    "SpeedupError",
    "analyze_channels",
    "apply_pruning_plan",
    "auto_set_dependency_group_ids",
    "masked_reference",
    "plan_from_state_dict",
    "prunability_report",
    "register_channel_rule",
    "register_module_cutter",
]
