"""Condense's built-in algorithms, registered the way a third-party package registers its own.

``pyproject.toml`` declares :func:`register_builtins` in the
``condense.algorithms`` entry point group; the registry calls it with its
``register`` function the first time an algorithm is looked up.
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import AlgorithmSpec
from .analysis import register_analysis
from .pruners import register_pruners
from .quantizers import register_quantizers


def register_builtins(register: Callable[[AlgorithmSpec], AlgorithmSpec]) -> None:
    """Register every built-in pruner, quantizer and analysis."""
    register_pruners(register)
    register_analysis(register)
    register_quantizers(register)
