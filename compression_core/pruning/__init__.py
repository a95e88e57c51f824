"""Pruners with NNI 3.0's API: ``compress()`` returns ``(model, masks)``.

Example::

    from compression_core.pruning import L1NormPruner
    pruner = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
"""

from .base import Masks, Pruner
from .norm import L1NormPruner, LevelPruner

__all__ = ["L1NormPruner", "LevelPruner", "Masks", "Pruner"]
