"""AutoTargetPruner: meets FLOPs/parameter targets, guided by sensitivity; unreachable targets fail early."""

import pytest
import torch
import torch.nn as nn

from compression_core.analysis import count_flops_params
from compression_core.pruning import AutoTargetPruner
from compression_core.speedup import ModelSpeedup, auto_set_dependency_group_ids
from tests.compression_core.pruning_fixtures import loop_evaluator, small_cnn

CONFIG = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
GRID = [0.25, 0.5, 0.75]


def _setup():
    model = small_cnn()
    evaluator = loop_evaluator(lr=0.1)
    evaluator.train(model, max_steps=40)
    return model, evaluator


@pytest.mark.parametrize("target", ["flops", "params"])
def test_the_sped_up_model_meets_the_target(target):
    model, evaluator = _setup()
    dummy = evaluator.dummy_input
    flops0, params0, _ = count_flops_params(model, dummy)
    config = auto_set_dependency_group_ids(model, CONFIG, dummy)
    pruner = AutoTargetPruner(model, config, evaluator, target=target, target_ratio=0.5, sparsities=GRID)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(model, dummy, masks).speedup_model()
    flops, params, _ = count_flops_params(model, dummy)
    reached = (flops / flops0) if target == "flops" else (params / params0)
    report = pruner.report
    assert reached <= 0.5 and report["reached_ratio"] == pytest.approx(reached)
    assert set(report["ratios"]) == {"0", "3"} and set(report["ratios"].values()) <= {0.0, *GRID}
    assert report["sparsities"] == GRID and all(len(curve) == 3 for curve in report["sensitivity"].values())


def test_the_least_sensitive_group_is_pruned_first():
    model, evaluator = _setup()
    dummy = evaluator.dummy_input
    config = auto_set_dependency_group_ids(model, CONFIG, dummy)
    pruner = AutoTargetPruner(model, config, evaluator, target="params", target_ratio=0.9, sparsities=GRID)
    pruner.compress()
    report = pruner.report
    drops = {label: report["baseline_metric"] - curve[0] for label, curve in report["sensitivity"].items()}
    # a loose target needs little: the chosen tolerance admits the smallest first-step drop, and every group
    # pruned at all has a drop within that tolerance
    pruned = [label for label, ratio in report["ratios"].items() if ratio > 0]
    assert pruned and all(drops[label] <= report["tolerated_drop"] + 1e-9 for label in pruned)


def test_unreachable_target_fails_before_the_sensitivity_analysis():
    model, evaluator = _setup()
    calls = []
    original = evaluator.evaluate
    evaluator.evaluate = lambda m: calls.append(1) or original(m)
    config = [{"op_names": ["0"], "sparse_ratio": 0.5}]  # one small layer cannot remove 95% of the FLOPs
    pruner = AutoTargetPruner(model, config, evaluator, target="flops", target_ratio=0.05, sparsities=GRID)
    with pytest.raises(ValueError, match="cannot be reached"):
        pruner.compress()
    assert calls == []


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "energy"}, "target must be one of"),
    ({"target_ratio": 1.5}, "target_ratio"),
    ({"sparsities": [0.0, 0.5]}, "sparsities"),
    ({"pruning_algorithm": "TaylorFOWeightPruner"}, "data-free base pruner"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoTargetPruner(small_cnn(), CONFIG, loop_evaluator(), **kwargs)


def test_no_data_is_refused():
    with pytest.raises(ValueError, match="needs data"):
        AutoTargetPruner(small_cnn(), CONFIG)


def test_latency_target_is_measured_on_the_sped_up_candidates():
    # wide enough that pruning, not timer noise, decides the latency
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4))
    x = torch.rand(32, 3, 48, 48)
    evaluator = loop_evaluator((x, torch.arange(32) % 4))
    config = auto_set_dependency_group_ids(model, CONFIG, evaluator.dummy_input)
    pruner = AutoTargetPruner(model, config, evaluator, target="latency", target_ratio=0.8, sparsities=GRID,
                              latency_runs=5)
    pruner.compress()
    report = pruner.report
    # candidates are pruned, sped up and timed (the original and the deepest at least); the choice is one
    # whose measured latency met the budget
    assert report["candidates_measured"] >= 2
    assert report["reached"] <= 0.8 * report["original"]
    assert report["reached_ratio"] == pytest.approx(report["reached"] / report["original"])
