"""Speedup: turn pruning masks into a physically smaller model.

Typical use (NNI 3.0 style)::

    from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids

    config_list = auto_set_dependency_group_ids(model, config_list, dummy_input)
    ...                                   # prune, get masks, unwrap the pruner
    ModelSpeedup(model, dummy_input, masks).speedup_model()

Modules: ``graph`` (fx tracing and shape propagation), ``dependency``
(channel layouts, coupled-channel classes, dependency groups), ``replace``
(building smaller layers), ``speedup`` (``ModelSpeedup`` and
``apply_pruning_plan``).
"""

from .dependency import ChannelAnalysis, analyze_channels, auto_set_dependency_group_ids
from .errors import SpeedupError
from .speedup import ModelSpeedup, apply_pruning_plan

__all__ = [
    "ChannelAnalysis",
    "ModelSpeedup",
    "SpeedupError",
    "analyze_channels",
    "apply_pruning_plan",
    "auto_set_dependency_group_ids",
]
