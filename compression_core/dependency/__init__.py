"""Dependency: trace a model, follow its channels, group the layers that must lose the same ones.

Every tensor value of the traced graph gets a channel layout (which dim holds
its channels, a channel id per index); ids that must be kept or removed
together share a class of a union-find. Pruners use the resulting dependency
groups (:func:`auto_set_dependency_group_ids`); speedup
(:mod:`compression_core.speedup`) removes the classes whose producers are all
masked.

Modules: ``graph`` (fx tracing, tolerant of untraceable submodules, shape
propagation; the layer types the tracer keeps whole), ``channels``
(union-find, layouts, the analysis' records), ``rule_table`` (the one table
from operations to channel rules, and :func:`register_channel_rule`),
``builtin_rules`` (the built-in entries of that table), ``rules`` (the
``Propagator``: its helpers, the elementwise and named rules, the dispatch
through the table), ``shape_rules`` (reshape, cat, indexing, permute and
reduction rules), ``layer_rules`` (conv, linear, embedding and norm rules),
``splits`` (the split/chunk rule), ``literals`` (sizes in the graph read from
module attributes), ``attention`` (the attention layers' channel rule),
``groups`` (:func:`analyze_channels`, :func:`auto_set_dependency_group_ids`),
``errors`` (:class:`SpeedupError`).

Example::

    >>> import torch, torchvision
    >>> from compression_core.dependency import auto_set_dependency_group_ids
    >>> cfg = auto_set_dependency_group_ids(torchvision.models.resnet18(),
    ...                                     [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], torch.rand(1, 3, 64, 64))
    >>> len({e["dependency_group_id"] for e in cfg}) < len(cfg)
    True
"""

from .channels import ChannelAnalysis
from .errors import SpeedupError
from .groups import analyze_channels, auto_set_dependency_group_ids, channel_groups, produced_ids, producers
from .rule_table import RULE_NAMES, register_channel_rule

__all__ = [
    "ChannelAnalysis",
    "RULE_NAMES",
    "SpeedupError",
    "analyze_channels",
    "auto_set_dependency_group_ids",
    "channel_groups",
    "produced_ids",
    "producers",
    "register_channel_rule",
]
