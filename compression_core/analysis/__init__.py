"""Measuring models: FLOPs/params, per-layer summary, latency, output fidelity. It measures and never prunes
(sensitivity analysis, which prunes, lives in :mod:`compression_core.pruning`).

Example::

    >>> import torch, torchvision
    >>> from compression_core.analysis import count_flops_params
    >>> flops, params, layers = count_flops_params(torchvision.models.resnet18(), torch.rand(1, 3, 224, 224))
"""

from .fidelity import output_fidelity
from .flops import count_flops_params, model_summary
from .latency import measure_latency

__all__ = [
    "count_flops_params",
    "measure_latency",
    "model_summary",
    "output_fidelity",
]
