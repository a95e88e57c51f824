"""Condense's compression engine: pure PyTorch, usable without the web service.

See ``compression_core.pruning``, ``compression_core.quantization``,
``compression_core.speedup``, ``compression_core.evaluation``,
``compression_core.io``, ``compression_core.analysis`` and
``compression_core.jobs``; ``docs/architecture.md`` shows the layers.
"""

from .evaluation import TorchEvaluator

__version__ = "0.1.0"
__all__ = ["TorchEvaluator"]
