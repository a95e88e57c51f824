"""The sensitivity analysis's registry entry (kind ``analysis``: curves and a CSV, no compressed model)."""

from __future__ import annotations

from collections.abc import Callable

from ...config import canonicalize_config_list
from ...pruning import SensitivityAnalysis
from ..registry import AlgorithmKind, AlgorithmSpec
from .guidance import WHEN_TO_USE
from .pruners import DATA_FREE_BASES
from .schemas import pruning_schema


def register_analysis(register: Callable[[AlgorithmSpec], AlgorithmSpec]) -> None:
    register(AlgorithmSpec(
        name="SensitivityAnalysis", kind=AlgorithmKind.ANALYSIS, when_to_use=WHEN_TO_USE["SensitivityAnalysis"],
        description="Prunes one group of coupled layers at a time over a range of sparsities and records the "
        "metric: curves on the job page and a CSV, no compressed model (what to prune gently, what freely).",
        paper="Li et al., Pruning Filters for Efficient ConvNets (ICLR 2017), sensitivity analysis",
        paper_url="https://arxiv.org/abs/1608.08710", factory=SensitivityAnalysis, needs_data=True,
        granularity="out_channel", canonical_config=canonicalize_config_list,
        params_schema=pruning_schema({
            "sparsities": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                           "default": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                           "description": "Sparsities tried on each group"},
            "pruning_algorithm": {"type": "string", "enum": DATA_FREE_BASES, "default": "L1NormPruner",
                                  "description": "The pruner of each trial"},
            "early_stop_mode": {"type": "string", "enum": ["minimize", "maximize", "dropped", "raised"],
                                "description": "Stop a group's curve once the metric passes early_stop_value"},
            "early_stop_value": {"type": "number", "description": "Threshold of early_stop_mode"},
        }, quantize_after=False),
    ))
