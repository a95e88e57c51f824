"""Measuring models: FLOPs/params, per-layer summary, latency (paired before/after timing and the
machine it ran on), output fidelity. It measures and never prunes
(sensitivity analysis, which prunes, lives in :mod:`compression_core.pruning`).

Example::

    >>> import torch, torchvision
    >>> from compression_core.analysis import count_flops_params
    >>> flops, params, layers = count_flops_params(torchvision.models.resnet18(), torch.rand(1, 3, 224, 224))
"""

from .fidelity import output_fidelity
from .flops import count_flops_params, model_summary
from .latency import measure_latency
from .machine import machine_info, worker_report
from .timing import PairedTiming, TimingStats, fixed_threads, judge, median_interval, time_paired

__all__ = [
    "PairedTiming",
    "TimingStats",
    "count_flops_params",
    "fixed_threads",
    "judge",
    "machine_info",
    "measure_latency",
    "median_interval",
    "model_summary",
    "output_fidelity",
    "time_paired",
    "worker_report",
]
