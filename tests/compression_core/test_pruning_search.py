"""Simulated annealing, NetAdapt and AutoCompress: budgets met, searches that search."""

import math

import pytest

from compression_core.pruning import AutoCompressPruner, NetAdaptPruner, SimulatedAnnealingPruner
from tests.compression_core.pruning_fixtures import loop_evaluator, small_cnn

CONFIG = [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5}]


def _trained():
    model = small_cnn()
    evaluator = loop_evaluator(lr=0.1)
    evaluator.train(model, max_steps=40)
    return model, evaluator


def _overall(pruner, masks):
    kept = sum(float(masks[n]["weight"].sum()) for n in pruner.targets)
    return 1 - kept / sum(pruner.sizes.values())


def test_simulated_annealing_meets_the_overall_ratio_and_keeps_the_best_candidate():
    model, evaluator = _trained()
    pruner = SimulatedAnnealingPruner(model, CONFIG, evaluator, start_temperature=100, stop_temperature=30,
                                      cool_down_rate=0.8, seed=1)
    _, masks = pruner.compress()
    temperatures = [h["temperature"] for h in pruner.history]
    assert len(temperatures) == math.ceil(math.log(30 / 100) / math.log(0.8))
    assert temperatures == sorted(temperatures, reverse=True)
    assert pruner.overall_ratio(pruner.best_ratios) == pytest.approx(0.5, abs=1e-3)
    assert _overall(pruner, masks) == pytest.approx(0.5, abs=0.01)
    assert pruner.best_metric == max([h["metric"] for h in pruner.history] + [pruner.best_metric])
    # layers get different ratios: that is the point of the search
    assert len({round(r, 3) for r in pruner.best_ratios.values()}) > 1


def test_netadapt_stops_as_soon_as_the_budget_is_met():
    model, evaluator = _trained()
    pruner = NetAdaptPruner(model, CONFIG, evaluator, sparsity_per_iteration=0.15, training_steps=3)
    _, masks = pruner.compress()
    overall = [h["overall"] for h in pruner.history]
    # every iteration removes at least its share (whole filters: a little more), the last one reaches the budget
    steps = [b - a for a, b in zip([0.0] + overall, overall)]
    assert all(step >= 0.15 - 1e-9 for step in steps[:-1])
    assert all(o < 0.5 for o in overall[:-1]) and 0.5 <= overall[-1] < 0.5 + 0.15
    assert len(overall) <= math.ceil(0.5 / 0.15)
    assert _overall(pruner, masks) == pytest.approx(overall[-1], abs=1e-6)  # the ratios are what the masks remove
    # each iteration tried every layer that could still lose weights and kept the best
    for record in pruner.history:
        assert record["metric"] == max(record["candidates"].values())


def test_autocompress_rounds_follow_the_schedule():
    model, evaluator = _trained()
    pruner = AutoCompressPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.75}], evaluator,
                                total_iteration=2, admm_iterations=2, training_steps=3, stop_temperature=60)
    _, masks = pruner.compress()
    assert [round(r["target"], 4) for r in pruner.rounds] == [0.5, 0.75]
    assert _overall(pruner, masks) == pytest.approx(0.75, abs=0.01)


@pytest.mark.parametrize("cls", [SimulatedAnnealingPruner, NetAdaptPruner, AutoCompressPruner])
def test_search_pruners_bad_input(cls):
    evaluator = loop_evaluator()
    with pytest.raises(ValueError, match="needs data"):
        cls(small_cnn(), CONFIG)
    with pytest.raises(ValueError, match="cannot be reached"):
        cls(small_cnn(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.97}], evaluator)
    with pytest.raises(ValueError, match="one overall sparse_ratio"):
        cls(small_cnn(), [{"op_names": ["0"], "sparse_ratio": 0.5}, {"op_names": ["3"], "sparse_ratio": 0.3}],
            evaluator)
    with pytest.raises(ValueError, match="data-free base pruner"):
        cls(small_cnn(), CONFIG, evaluator, pruning_algorithm="TaylorFOWeightPruner")
