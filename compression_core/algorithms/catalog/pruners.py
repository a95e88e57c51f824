"""The built-in pruners' registry entries: names, papers, parameter schemas, capabilities.

Parameters shared by several pruners keep one meaning and one default
everywhere. :func:`register_pruners` is called by the ``condense.algorithms``
entry point (see :mod:`compression_core.algorithms.catalog`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...config import canonicalize_config_list
from ...pruning import (
    ADMMPruner,
    AGPPruner,
    ActivationAPoZRankPruner,
    ActivationMeanRankPruner,
    AutoCompressPruner,
    AutoTargetPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LevelPruner,
    LotteryTicketPruner,
    NetAdaptPruner,
    SimulatedAnnealingPruner,
    SlimPruner,
    TaylorFOWeightPruner,
)
from ..registry import AlgorithmKind, AlgorithmSpec
from .guidance import WHEN_TO_USE
from .schemas import pruning_schema

DATA_FREE_BASES = ["LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner"]
SCHEDULABLE_BASES = DATA_FREE_BASES + ["ActivationAPoZRankPruner", "ActivationMeanRankPruner", "TaylorFOWeightPruner"]


def _int(default: int, description: str, minimum: int = 1, maximum: int = 1000) -> dict[str, Any]:
    # A maximum on every count: a request must not buy days of worker time by typing zeros.
    return {"type": "integer", "minimum": minimum, "maximum": maximum, "default": default, "description": description}


def _number(default: float, description: str, **bounds: float) -> dict[str, Any]:
    return {"type": "number", "default": default, "description": description, **bounds}


TRAINING_STEPS = _int(100, "Optimizer steps of the evaluator's training loop the pruner runs (per round)",
                      maximum=100_000)
PRUNING_PARAMS = {"type": "object", "default": {}, "description": "Keyword arguments for the base pruner"}
SEED = _int(0, "Random seed of the search", minimum=0, maximum=2**31 - 1)
ANNEALING = {
    "start_temperature": _number(100.0, "Initial temperature of simulated annealing", minimum=0),
    "stop_temperature": _number(20.0, "Annealing stops below this temperature", minimum=0),
    "cool_down_rate": _number(0.9, "Temperature factor per step", minimum=0, exclusiveMaximum=1),
    "perturbation_magnitude": _number(0.35, "Largest change of a layer's ratio per step (at the start "
                                            "temperature)", minimum=0, exclusiveMaximum=1),
}


def _base(default: str, choices: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": choices, "default": default,
            "description": "The pruner that makes each step's masks"}


def register_pruners(register: Callable[[AlgorithmSpec], AlgorithmSpec]) -> None:
    def spec(name, factory, description, paper, url, extra=None, needs_data=False, granularity="out_channel",
             **capabilities):
        register(AlgorithmSpec(
            name=name, kind=AlgorithmKind.PRUNING, description=description, paper=paper, paper_url=url,
            factory=factory, params_schema=pruning_schema(extra), needs_data=needs_data, granularity=granularity,
            uses_dependency_groups=factory.uses_dependency_groups, supported_types=factory.supported_types,
            canonical_config=canonicalize_config_list, when_to_use=WHEN_TO_USE[name], **capabilities,
        ))

    spec("LevelPruner", LevelPruner,
         "Zeroes the individual weights (or blocks) of smallest magnitude in each selected layer; balanced mode "
         "prunes every block of balance_gran equally (fine-grained: speedup cannot remove channels).",
         "Zhu & Gupta, To prune, or not to prune (2017)", "https://arxiv.org/abs/1710.01878",
         {"mode": {"type": "string", "enum": ["normal", "balance"], "default": "normal",
                   "description": "balance: the same sparsity in every block of balance_gran"},
          "balance_gran": {"type": "array", "items": {"type": "integer", "minimum": 1},
                           "description": "Block sizes over the weight's last dims, e.g. [4]"}},
         granularity="fine_grained")
    spec("L1NormPruner", L1NormPruner,
         "Removes the output channels (filters, rows, attention heads) whose weights have the smallest L1 norm; "
         "dependency-aware by default.",
         "Li et al., Pruning Filters for Efficient ConvNets (ICLR 2017)", "https://arxiv.org/abs/1608.08710")
    spec("L2NormPruner", L2NormPruner,
         "Removes the output channels (filters, rows, attention heads) whose weights have the smallest L2 norm.",
         "Li et al., Pruning Filters for Efficient ConvNets (ICLR 2017)", "https://arxiv.org/abs/1608.08710")
    spec("FPGMPruner", FPGMPruner,
         "Removes the filters nearest the geometric median of their layer (smallest summed distance to the "
         "others): the most replaceable ones, whatever their norm.",
         "He et al., Filter Pruning via Geometric Median (CVPR 2019)", "https://arxiv.org/abs/1811.00250")
    activation = {"training_steps": TRAINING_STEPS,
                  "activation": {"type": "string", "enum": ["relu", "relu6", "gelu", "identity"], "default": "relu",
                                 "description": "Applied to each layer's output before the statistic"}}
    spec("ActivationAPoZRankPruner", ActivationAPoZRankPruner,
         "Removes the output channels whose activations are most often zero on the data (highest Average "
         "Percentage of Zeros).",
         "Hu et al., Network Trimming (2016)", "https://arxiv.org/abs/1607.03250", activation, needs_data=True)
    spec("ActivationMeanRankPruner", ActivationMeanRankPruner,
         "Removes the output channels with the smallest mean activation on the data.",
         "Molchanov et al., Pruning CNNs for Resource Efficient Inference (ICLR 2017)",
         "https://arxiv.org/abs/1611.06440", activation, needs_data=True)
    spec("TaylorFOWeightPruner", TaylorFOWeightPruner,
         "Removes the channels of smallest first-order Taylor importance, the sum of (weight x gradient)^2 "
         "accumulated over training steps.",
         "Molchanov et al., Importance Estimation for Neural Network Pruning (CVPR 2019)",
         "https://arxiv.org/abs/1906.10771", {"training_steps": TRAINING_STEPS}, needs_data=True)
    spec("SlimPruner", SlimPruner,
         "Trains with an L1 penalty on the batch-norm scales (select BatchNorm2d layers), then removes the "
         "channels of smallest scale, ranked over all selected layers, with the convolutions that produce them.",
         "Liu et al., Learning Efficient Convolutional Networks through Network Slimming (ICCV 2017)",
         "https://arxiv.org/abs/1708.06519",
         {"training_steps": TRAINING_STEPS,
          "regular_scale": _number(1e-4, "Weight of the L1 penalty on the batch-norm scales", minimum=0),
          "mode": {"type": "string", "enum": ["global", "normal"], "default": "global",
                   "description": "global: rank the scales of all selected layers together"}},
         needs_data=True)
    spec("ADMMPruner", ADMMPruner,
         "Alternates training with an ADMM penalty that pulls the weights toward a sparse copy and projecting "
         "that copy onto the sparsity constraint; prunes to the copy's support.",
         "Zhang et al., A Systematic DNN Weight Pruning Framework using ADMM (ECCV 2018)",
         "https://arxiv.org/abs/1804.03294",
         {"iterations": _int(10, "ADMM rounds"), "training_steps": TRAINING_STEPS,
          "rho": _number(1e-4, "Penalty weight of the ADMM term", exclusiveMinimum=0)},
         needs_data=True, granularity="fine_grained")
    stepped = {"total_iteration": _int(10, "Pruning steps"), "training_steps": TRAINING_STEPS,
               "pruning_params": PRUNING_PARAMS}
    spec("AGPPruner", AGPPruner,
         "Automated gradual pruning: raises the sparsity along a cubic schedule over total_iteration steps, "
         "training between steps; a base pruner chooses what goes at each step.",
         "Zhu & Gupta, To prune, or not to prune (2017)", "https://arxiv.org/abs/1710.01878",
         {**stepped, "pruning_algorithm": _base("L1NormPruner", SCHEDULABLE_BASES)}, needs_data=True)
    spec("LotteryTicketPruner", LotteryTicketPruner,
         "Iterative pruning: train, prune the same fraction of the survivors each round, rewind the survivors "
         "to their initial values (the winning ticket).",
         "Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019)", "https://arxiv.org/abs/1803.03635",
         {**stepped, "total_iteration": _int(5, "Pruning rounds"),
          "reset_weights": {"type": "boolean", "default": True,
                            "description": "Rewind the surviving weights to their initial values after each round"},
          "pruning_algorithm": _base("LevelPruner", DATA_FREE_BASES)},
         needs_data=True, granularity="fine_grained")
    search = {"pruning_algorithm": _base("LevelPruner", DATA_FREE_BASES), "pruning_params": PRUNING_PARAMS}
    spec("SimulatedAnnealingPruner", SimulatedAnnealingPruner,
         "Searches per-layer sparsities meeting one overall sparsity by simulated annealing on the metric.",
         "Liu et al., AutoCompress (AAAI 2020)", "https://arxiv.org/abs/1907.03141",
         {**ANNEALING, **search, "seed": SEED}, needs_data=True, granularity="fine_grained",
         check_config=SimulatedAnnealingPruner.check_config)
    spec("NetAdaptPruner", NetAdaptPruner,
         "Prunes step by step until the overall sparsity is met: each step tries every layer, fine-tunes "
         "briefly and keeps the best.",
         "Yang et al., NetAdapt (ECCV 2018)", "https://arxiv.org/abs/1804.03230",
         {"sparsity_per_iteration": _number(0.05, "Share of the weights each step removes", exclusiveMinimum=0,
                                            exclusiveMaximum=1),
          "training_steps": TRAINING_STEPS, **search, "pruning_algorithm": _base("L1NormPruner", DATA_FREE_BASES)},
         needs_data=True,
         check_config=NetAdaptPruner.check_config)
    spec("AutoCompressPruner", AutoCompressPruner,
         "Rounds of simulated annealing (per-layer sparsities) then ADMM (pruning to them), each round closer "
         "to the overall sparsity.",
         "Liu et al., AutoCompress (AAAI 2020)", "https://arxiv.org/abs/1907.03141",
         {"total_iteration": _int(3, "Rounds"), "admm_iterations": _int(5, "ADMM rounds per round"),
          "training_steps": TRAINING_STEPS, "rho": _number(1e-4, "Penalty weight of the ADMM term",
                                                           exclusiveMinimum=0),
          **ANNEALING, **search, "seed": SEED},
         needs_data=True, granularity="fine_grained",
         check_config=AutoCompressPruner.check_config)
    spec("AutoTargetPruner", AutoTargetPruner,
         "Automatic compression: give a target (FLOPs, parameters or measured latency, as a fraction of the "
         "original) and an accuracy floor; a sensitivity analysis of each group of coupled layers guides the "
         "per-group sparsities, searched until the sped-up model meets the target.",
         "He et al., AMC: AutoML for Model Compression (ECCV 2018); NNI's sensitivity pruner",
         "https://arxiv.org/abs/1802.03494",
         {"target": {"type": "string", "enum": ["flops", "params", "latency"], "default": "flops",
                     "description": "What must shrink"},
          "target_ratio": _number(0.5, "Fraction of the original's FLOPs / parameters / batch-1 latency to keep",
                                  exclusiveMinimum=0, exclusiveMaximum=1),
          "accuracy_floor": {"type": "number", "minimum": 0, "maximum": 1,
                             "description": "Lowest acceptable metric (accuracy, or agreement with the original "
                                            "on unlabelled data) after fine-tuning; the job says whether it holds"},
          "sparsities": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                         "default": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                         "description": "Sparsity grid of the sensitivity analysis"},
          "pruning_algorithm": _base("L1NormPruner", ["L1NormPruner", "L2NormPruner", "FPGMPruner"])},
         needs_data=True,
         searches_target=True)
