"""Pruners with NNI 3.0's API: ``compress()`` returns ``(model, masks)``; and sensitivity analysis.

Example::

    from compression_core.pruning import L1NormPruner
    pruner = L1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
"""

from .activation import ActivationAPoZRankPruner, ActivationMeanRankPruner
from .admm import ADMMPruner
from .auto_target import AutoTargetPruner
from .base import Masks, Pruner
from .iterative import AGPPruner, LotteryTicketPruner
from .norm import FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner
from .search import AutoCompressPruner, NetAdaptPruner, SimulatedAnnealingPruner
from .sensitivity import SensitivityAnalysis, analysis_units, sensitivity_csv
from .slim import SlimPruner
from .taylor import TaylorFOWeightPruner

__all__ = [
    "ADMMPruner",
    "AGPPruner",
    "ActivationAPoZRankPruner",
    "ActivationMeanRankPruner",
    "AutoCompressPruner",
    "AutoTargetPruner",
    "FPGMPruner",
    "L1NormPruner",
    "L2NormPruner",
    "LevelPruner",
    "LotteryTicketPruner",
    "Masks",
    "NetAdaptPruner",
    "Pruner",
    "SensitivityAnalysis",
    "SimulatedAnnealingPruner",
    "SlimPruner",
    "TaylorFOWeightPruner",
    "analysis_units",
    "sensitivity_csv",
]
