"""Condense's compression engine: pure PyTorch, usable without the web service.

See ``compression_core.pruning``, ``compression_core.speedup``,
``compression_core.io``, ``compression_core.analysis`` and
``compression_core.pipeline``.
"""

__version__ = "0.1.0"
