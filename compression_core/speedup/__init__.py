"""Speedup: turn pruning masks into a physically smaller model.

Typical use (NNI 3.0 style)::

    from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

    config_list = auto_set_dependency_group_ids(model, config_list, dummy_input)
    ...                                   # prune, get masks, unwrap the pruner
    ModelSpeedup(model, dummy_input, masks).speedup_model()

What it handles: Conv1d/2d/3d (plain, depthwise and grouped: grouped
convolutions keep the same channel count in every group), ConvTranspose,
Linear, MultiheadAttention (by heads), BatchNorm, InstanceNorm, LayerNorm (including torchvision's
channels-first LayerNorm2d), GroupNorm, PReLU, Embedding; residual
add/sub/mul, concat, ``chunk`` on the channel dim, channel shuffle
(``view(N, g, C/g, ...)`` + transpose), flatten/reshape into a Linear,
permutes, reductions and the usual activations. Channels that reach an op it
does not understand are kept and reported (``ModelSpeedup.warnings``,
:func:`prunability_report`); ``ModelSpeedup(..., strict=True)`` makes that an
error naming the op and node. A submodule torch.fx cannot trace is kept whole
as one opaque call. ``nn.MultiheadAttention`` (``kdim == vdim == embed_dim``,
batch_first or not, with or without bias) is pruned by whole heads: select it
with ``op_types: ["MultiheadAttention"]``; speedup replaces it by an
:class:`~.attention.PrunedMultiheadAttention` with the kept heads (same call
and return convention; its embedding width, the residual stream's channels,
stays). The MLP blocks around it lose hidden channels as usual.

Exactness: :func:`masked_reference` builds the model speedup must reproduce
(masks applied, every removed channel zero through its whole group).

Extension point: say how a custom module or function treats channels, and
how to resize the module::

    from compression_core.speedup import register_channel_rule, register_module_cutter
    from compression_core.speedup.replace import shallow_copy, cut_tensor

    def cut_scale(module, kept_out, kept_in, mask):   # returns a new module
        new = shallow_copy(module)
        new.gain = cut_tensor(module.gain, 0, kept_out)
        return new

    register_channel_rule(MyScale, "channelwise")   # or "passthrough", "producer", "pin", a callable
    register_module_cutter(MyScale, cut_scale)

Modules: ``graph`` (fx tracing, tolerant of untraceable submodules, and shape
propagation), ``channels`` (union-find, layouts), ``rules`` (the per-op
rules and the rule registry), ``dependency`` (``analyze_channels``,
``auto_set_dependency_group_ids``), ``replace`` (building smaller layers,
cutter registry), ``speedup`` (``ModelSpeedup``, ``apply_pruning_plan``),
``reference`` (``masked_reference``), ``report`` (``prunability_report``),
``attention`` (head pruning: masks, ``PrunedMultiheadAttention``).
"""

from .attention import PrunedMultiheadAttention
from .dependency import ChannelAnalysis, analyze_channels, auto_set_dependency_group_ids
from .errors import SpeedupError
from .reference import MaskedReference, masked_reference
from .replace import register_module_cutter
from .report import prunability_report
from .rules import register_channel_rule
from .speedup import ModelSpeedup, apply_pruning_plan

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
    "prunability_report",
    "register_channel_rule",
    "register_module_cutter",
]
